package auth

import (
	"errors"
	"strings"
	"testing"
)

// check is one Authorize question and its expected answer.
type check struct {
	name     string
	user, id string
	access   Access
	topic    string
	want     bool
}

func runChecks(t *testing.T, aclText string, checks []check) {
	t.Helper()
	s, err := parseACL("acl", []byte(aclText))
	if err != nil {
		t.Fatalf("parseACL: %v", err)
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			id := c.id
			if id == "" {
				id = "client-1"
			}
			cl := &Client{ClientID: id, Username: c.user}
			if got := s.decide(cl, c.access, c.topic); got != c.want {
				t.Fatalf("user %q client %q %s %q = %v, want %v", c.user, id, c.access, c.topic, got, c.want)
			}
		})
	}
}

func TestACLTopicRules(t *testing.T) {
	const acl = `# anonymous clients
topic read public/#
topic deny public/secret

user alice
topic readwrite alice/#
topic read sensors/#
topic deny sensors/private/#
topic write cmd/+/set
topic $SYS/broker/uptime

user bob
topic read #

user carol
topic read a/+
topic read my topic/with spaces
topic write  	 tabbed/topic

# a second section for alice adds to the first
user alice
topic read extra
`
	runChecks(t, acl, []check{
		{"anonymous read granted", "", "", Read, "public/news", true},
		{"anonymous parent of #", "", "", Read, "public", true},
		{"anonymous deny wins", "", "", Read, "public/secret", false},
		{"anonymous write not granted", "", "", Write, "public/news", false},
		{"anonymous gets no user rules", "", "", Read, "alice/x", false},
		{"user gets no anonymous rules", "alice", "", Read, "public/news", false},
		{"unknown user gets nothing", "mallory", "", Read, "public/news", false},
		{"readwrite read", "alice", "", Read, "alice/a/b", true},
		{"readwrite write", "alice", "", Write, "alice/a", true},
		{"read rule denies write", "alice", "", Write, "sensors/t", false},
		{"deny subtree", "alice", "", Read, "sensors/private/x", false},
		{"deny subtree parent", "alice", "", Read, "sensors/private", false},
		{"plus one level", "alice", "", Write, "cmd/lamp/set", true},
		{"plus not two levels", "alice", "", Write, "cmd/a/b/set", false},
		{"plus not zero levels", "alice", "", Write, "cmd/set", false},
		{"write rule denies read", "alice", "", Read, "cmd/lamp/set", false},
		{"bare filter is readwrite", "alice", "", Write, "$SYS/broker/uptime", true},
		{"merged user section", "alice", "", Read, "extra", true},
		{"empty level", "alice", "", Read, "alice//x", true},
		{"MQTT-4.7.2-1 hash rule skips $SYS", "bob", "", Read, "$SYS/broker/uptime", false},
		{"MQTT-4.7.2-1 hash rule skips $ topics", "bob", "", Read, "$share", false},
		{"hash rule matches others", "bob", "", Read, "x/y/z", true},
		{"topic with spaces", "carol", "", Read, "my topic/with spaces", true},
		{"tab separated", "carol", "", Write, "tabbed/topic", true},
		{"case sensitive", "Alice", "", Read, "alice/x", false},
	})
}

// TestACLSubscribe checks SUBSCRIBE filters: granted when the rule covers the whole filter.
func TestACLSubscribe(t *testing.T) {
	const acl = `user alice
topic read sensors/#
topic deny sensors/private/#
topic read a/+
topic read b/+/#
topic read $SYS/broker/#
user bob
topic read #
user admin
topic read $SYS/#
topic read #
`
	runChecks(t, acl, []check{
		{"plus filter inside hash rule", "alice", "", Read, "sensors/+/t", true},
		{"hash filter equal to rule", "alice", "", Read, "sensors/#", true},
		{"deny only when it covers the filter", "alice", "", Read, "sensors/+", true},
		{"filter inside deny", "alice", "", Read, "sensors/private/+", false},
		{"hash filter inside deny", "alice", "", Read, "sensors/private/#", false},
		{"hash filter wider than rule", "alice", "", Read, "#", false},
		{"plus filter wider than rule", "alice", "", Read, "+/t", false},
		{"hash filter not covered by plus", "alice", "", Read, "a/#", false},
		{"plus covered by plus", "alice", "", Read, "a/+", true},
		{"literal covered by plus", "alice", "", Read, "a/x", true},
		{"parent not covered by plus", "alice", "", Read, "a", false},
		{"plus then hash rule covers plus", "alice", "", Read, "b/+", true},
		{"plus then hash rule not hash", "alice", "", Read, "b/#", false},
		{"named $SYS subtree", "alice", "", Read, "$SYS/broker/+", true},
		{"MQTT-4.7.2-1 hash filter not covered by hash rule for $", "bob", "", Read, "$SYS/#", false},
		{"hash filter covered by hash rule", "bob", "", Read, "#", true},
		{"MQTT-4.7.2-1 $SYS filter needs a $SYS rule", "admin", "", Read, "$SYS/#", true},
		{"plus filter covered by hash rule", "admin", "", Read, "+", true},
	})
}

func TestACLPatterns(t *testing.T) {
	const acl = `topic read anon/#
user bob
topic read #
user x/y
topic read #
pattern readwrite clients/%c/#
pattern read users/%u/inbox
pattern deny users/%u/blocked
pattern write devices/%u-%c/out
pattern read lit/%x/%%c
pattern read %c/own
pattern read static/all
`
	runChecks(t, acl, []check{
		{"client id pattern", "", "dev1", Write, "clients/dev1/status", true},
		{"client id pattern parent", "", "dev1", Read, "clients/dev1", true},
		{"other client's topic", "", "dev1", Read, "clients/dev2/status", false},
		{"client id prefix is not a match", "", "dev", Read, "clients/dev1/status", false},
		{"client id with slash", "", "a/b", Read, "clients/a/b/x", false},
		{"client id with plus", "", "+", Read, "clients/+/x", false},
		{"client id with hash", "", "#", Read, "clients/#", false},
		{"client id with plus as a name", "", "+", Read, "clients/x/y", false},
		{"username pattern", "alice", "", Read, "users/alice/inbox", true},
		{"username pattern other user", "alice", "", Read, "users/bob/inbox", false},
		{"anonymous never gets username patterns", "", "", Read, "users//inbox", false},
		{"anonymous gets client id patterns", "", "c9", Read, "clients/c9/x", true},
		{"username with plus", "+", "", Read, "users/+/inbox", false},
		{"two substitutions in one level", "alice", "c1", Write, "devices/alice-c1/out", true},
		{"two substitutions wrong client", "alice", "c2", Write, "devices/alice-c1/out", false},
		{"two substitutions read not granted", "alice", "c1", Read, "devices/alice-c1/out", false},
		{"percent without c or u is literal", "", "c1", Read, "lit/%x/%c1", true},
		{"pattern without substitution", "", "", Read, "static/all", true},
		{"deny pattern beats a user grant", "bob", "", Read, "users/bob/blocked", false},
		{"deny pattern other user", "bob", "", Read, "users/alice/blocked", true},
		{"unsafe username fails closed under a deny pattern", "x/y", "", Read, "anything", false},
		{"leading substitution", "", "dev1", Read, "dev1/own", true},
		{"MQTT-4.7.2-1 client id starting with $ at the start", "", "$SYS", Read, "$SYS/own", false},
		{"subscribe inside own subtree", "", "dev1", Read, "clients/dev1/+", true},
		{"subscribe with wildcard in place of id", "", "dev1", Read, "clients/+/status", false},
	})
}

func TestACLEmptyDeniesAll(t *testing.T) {
	runChecks(t, "# nothing\n", []check{
		{"anonymous", "", "", Read, "a", false},
		{"user", "alice", "", Write, "a", false},
	})
}

func TestParseACLErrors(t *testing.T) {
	tests := []struct {
		name, data string
		line       int
		want       string
	}{
		{"unknown keyword", "topic read a\nfoo bar", 2, `unknown keyword "foo"`},
		{"missing filter", "topic", 1, "missing topic filter"},
		{"pattern missing filter", "\npattern   ", 2, "missing topic filter"},
		{"bad access", "topic rw a/b", 1, `unknown access "rw"`},
		{"missing username", "user", 1, "missing username"},
		{"MQTT-4.7.1-2 hash not last", "topic read a/#/b", 1, "'#' must be the last level"},
		{"MQTT-4.7.1-2 hash inside a level", "topic read a/b#", 1, "whole level"},
		{"MQTT-4.7.1-3 plus inside a level", "topic read a+/b", 1, "whole level"},
		{"inline comment", "topic read a/# # everything", 1, "whole level"},
		{"MQTT-4.7.3-2 NUL", "topic read a\x00b", 1, "U+0000"},
		{"invalid UTF-8", "topic read a\xff", 1, "UTF-8"},
		{"MQTT-4.7.3-3 too long", "topic read " + strings.Repeat("a", 65536), 1, "longer than 65535"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseACL("acl.conf", []byte(tt.data))
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Line != tt.line || pe.File != "acl.conf" || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want acl.conf:%d: ...%s...", err, tt.line, tt.want)
			}
		})
	}
}

func TestParseACLWarnings(t *testing.T) {
	s, err := parseACL("acl", []byte("topic read\npattern read no/subst\npattern read %u/x\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.warnings) != 2 {
		t.Fatalf("warnings = %q, want two", s.warnings)
	}
	if !strings.Contains(s.warnings[0], "a filter is missing") || !strings.Contains(s.warnings[1], "no %c or %u") {
		t.Errorf("warnings = %q", s.warnings)
	}
	if s.patternsUseClientID {
		t.Error("patternsUseClientID = true without a client id pattern")
	}
}

func TestValidFilter(t *testing.T) {
	for _, f := range []string{"#", "+", "a/+/#", "/", "a//b", "$SYS/#", "+/+", "%c/%u"} {
		if err := validFilter(f); err != nil {
			t.Errorf("validFilter(%q) = %v, want nil", f, err)
		}
	}
	for _, f := range []string{"", "a#", "#/a", "a/+b", "++"} {
		if validFilter(f) == nil {
			t.Errorf("validFilter(%q) = nil, want an error", f)
		}
	}
}

// FuzzParseACL feeds arbitrary files to the parser and asks the result questions: neither may
// panic, and every rule that parsed must hold a valid filter.
func FuzzParseACL(f *testing.F) {
	for _, seed := range []string{
		"topic read a/#\nuser u\ntopic deny a/b\npattern write c/%c/%u/+\n",
		"# c\n\ntopic\tsensors/+\nuser  spaced name \npattern deny %c%u/#",
		"topic readwrite $SYS/#\nuser\nfoo",
		"pattern read %",
		"pattern read a/%c%\n",
		"topic deny #",
	} {
		f.Add([]byte(seed), "a/b", "dev1", "u")
	}
	f.Fuzz(func(t *testing.T, data []byte, topic, id, user string) {
		s, err := parseACL("fuzz", data)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Line < 1 {
				t.Fatalf("error %v is not a *ParseError with a line", err)
			}
			return
		}
		for _, l := range append([]*ruleList{&s.anon, &s.patterns}, mapValues(s.users)...) {
			for _, r := range append(l.deny, l.allow...) {
				if err := validFilter(r.filter); err != nil || len(r.levels) == 0 {
					t.Fatalf("rule %q parsed but is invalid: %v", r.filter, err)
				}
			}
		}
		for _, c := range []*Client{{ClientID: id, Username: user}, {ClientID: id}, {ClientID: "x", Username: "u"}} {
			for _, tp := range []string{topic, "a/b", "#", "$SYS/x", ""} {
				s.decide(c, Read, tp)
				s.decide(c, Write, tp)
			}
		}
	})
}

func mapValues(m map[string]*ruleList) []*ruleList {
	var out []*ruleList
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
