package auth

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// levelKind says how one level of an ACL filter matches.
type levelKind byte

const (
	levelLiteral levelKind = iota // the level must equal lit
	levelPlus                     // '+': any one level
	levelHash                     // '#': this level and all below, or none
	levelPattern                  // literal text with %c / %u substituted (pattern lines only)
)

// partKind is one piece of a levelPattern.
type partKind byte

const (
	partLiteral partKind = iota
	partClientID
	partUsername
)

type part struct {
	kind partKind
	lit  string // partLiteral only
}

// level is one '/'-separated level of a compiled ACL filter.
type level struct {
	kind  levelKind
	lit   string // levelLiteral
	parts []part // levelPattern
}

// rule is one compiled `topic` or `pattern` line.
type rule struct {
	filter string  // as written, for messages
	access Access  // rights granted; 0 for deny
	levels []level // the filter split at '/'
	// usesClientID and usesUsername say whether a pattern substitutes %c / %u; leadingSub whether
	// the first level starts with a substitution, where a value starting with '$' would reach the
	// server's own topics.
	usesClientID, usesUsername, leadingSub bool
}

// ruleList is the rules that apply to one user (or to anonymous clients), denies apart so that
// they are checked first.
type ruleList struct {
	deny, allow []rule
}

func (l *ruleList) len() int { return len(l.deny) + len(l.allow) }

// aclSet is a parsed ACL file. It is immutable once built, so checks need no lock.
type aclSet struct {
	anon     ruleList             // `topic` lines before the first `user` line
	users    map[string]*ruleList // `topic` lines after `user <name>`
	patterns ruleList             // `pattern` lines, for every client
	// patternsUseClientID says whether any pattern depends on the client id; when none does,
	// decisions are cached per username only.
	patternsUseClientID bool
	warnings            []string
}

// validFilter checks an ACL filter like a SUBSCRIBE filter ([MQTT-4.7.1-2], [MQTT-4.7.1-3],
// [MQTT-4.7.3-1], [MQTT-4.7.3-2], [MQTT-4.7.3-3]), since rules are matched against both topic
// names and subscription filters.
func validFilter(f string) error {
	switch {
	case f == "":
		return errors.New("empty topic filter")
	case len(f) > 65535:
		return errors.New("topic filter longer than 65535 bytes")
	case !utf8.ValidString(f):
		return errors.New("topic filter is not valid UTF-8")
	case strings.IndexByte(f, 0) >= 0:
		return errors.New("topic filter contains U+0000")
	}
	for rest := f; ; {
		lv, after, more := strings.Cut(rest, "/")
		if lv != "+" && lv != "#" && strings.ContainsAny(lv, "+#") {
			return fmt.Errorf("topic filter %q: a wildcard must fill its whole level", f)
		}
		if lv == "#" && more {
			return fmt.Errorf("topic filter %q: '#' must be the last level", f)
		}
		if !more {
			return nil
		}
		rest = after
	}
}

// compileRule splits filter into levels; for a pattern it also finds the %c and %u substitutions.
// Like Mosquitto, a '%' not followed by 'c' or 'u' is literal text.
func compileRule(filter string, access Access, pattern bool) rule {
	r := rule{filter: filter, access: access}
	for i, lv := range strings.Split(filter, "/") {
		switch {
		case lv == "+":
			r.levels = append(r.levels, level{kind: levelPlus})
		case lv == "#":
			r.levels = append(r.levels, level{kind: levelHash})
		case pattern && (strings.Contains(lv, "%c") || strings.Contains(lv, "%u")):
			var parts []part
			lit := 0
			for j := 0; j < len(lv); j++ {
				if lv[j] != '%' || j+1 == len(lv) || (lv[j+1] != 'c' && lv[j+1] != 'u') {
					continue
				}
				if lit < j {
					parts = append(parts, part{kind: partLiteral, lit: lv[lit:j]})
				}
				if lv[j+1] == 'c' {
					parts = append(parts, part{kind: partClientID})
					r.usesClientID = true
				} else {
					parts = append(parts, part{kind: partUsername})
					r.usesUsername = true
				}
				if i == 0 && j == 0 {
					r.leadingSub = true
				}
				j++
				lit = j + 1
			}
			if lit < len(lv) {
				parts = append(parts, part{kind: partLiteral, lit: lv[lit:]})
			}
			r.levels = append(r.levels, level{kind: levelPattern, parts: parts})
		default:
			r.levels = append(r.levels, level{kind: levelLiteral, lit: lv})
		}
	}
	return r
}

// cutField splits s at its first space or tab into a word and the trimmed rest; ok is false when
// s is one word.
func cutField(s string) (word, rest string, ok bool) {
	i := strings.IndexAny(s, " \t")
	if i < 0 {
		return s, "", false
	}
	return s[:i], strings.TrimSpace(s[i+1:]), true
}

// parseACL reads a Mosquitto acl_file:
//
//	topic [read|write|readwrite|deny] <filter>   anonymous clients before any `user` line, else that user
//	user <username>
//	pattern [read|write|readwrite|deny] <filter> every client, %c = client id, %u = username
//
// As in Mosquitto, the filter is the rest of the line (so it may contain spaces once an access
// word is given), a lone word after `topic` is the filter with readwrite access, and lines that
// start with '#' are comments. Every other line is an error naming name and the line number.
func parseACL(name string, data []byte) (*aclSet, error) {
	s := &aclSet{users: make(map[string]*ruleList)}
	cur := &s.anon
	err := lines(name, data, func(line string) error {
		keyword, rest, _ := cutField(line)
		switch keyword {
		case "user":
			if rest == "" {
				return errors.New("missing username after `user`")
			}
			l := s.users[rest]
			if l == nil {
				l = &ruleList{}
				s.users[rest] = l
			}
			cur = l
			return nil
		case "topic", "pattern":
		default:
			return fmt.Errorf("unknown keyword %q: want topic, user or pattern", keyword)
		}
		if rest == "" {
			return fmt.Errorf("missing topic filter after `%s`", keyword)
		}
		access := Read | Write
		word, filter, ok := cutField(rest)
		if ok {
			switch word {
			case "read":
				access = Read
			case "write":
				access = Write
			case "readwrite":
			case "deny":
				access = 0
			default:
				return fmt.Errorf("unknown access %q: want read, write, readwrite or deny", word)
			}
		} else {
			filter = rest
			if filter == "read" || filter == "write" || filter == "readwrite" || filter == "deny" {
				s.warnings = append(s.warnings, fmt.Sprintf("`%s %s` grants readwrite on the topic %q; a filter is missing", keyword, filter, filter))
			}
		}
		if err := validFilter(filter); err != nil {
			return err
		}
		pattern := keyword == "pattern"
		r := compileRule(filter, access, pattern)
		list := cur
		if pattern {
			list = &s.patterns
			if !r.usesClientID && !r.usesUsername {
				s.warnings = append(s.warnings, fmt.Sprintf("pattern %q has no %%c or %%u", filter))
			}
			s.patternsUseClientID = s.patternsUseClientID || r.usesClientID
		}
		if access == 0 {
			list.deny = append(list.deny, r)
		} else {
			list.allow = append(list.allow, r)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// unsafeValue reports whether substituting v into a pattern could match more than the one level
// the rule's author meant: a '/' adds levels, '+' or '#' would act as wildcards when the topic is a
// subscription filter, and an empty value would make "%c" match an empty level. A leading '$'
// matters only where the substitution starts the filter, where it would reach $SYS topics.
func unsafeValue(v string, leading bool) bool {
	return v == "" || strings.ContainsAny(v, "/+#") || (leading && v[0] == '$')
}

// applies reports whether the pattern r can be evaluated for c; unsafe is set when it cannot
// because a substituted value is unsafe (then a deny pattern denies everything, see decide).
// Anonymous clients are never matched by %u patterns.
func (r *rule) applies(c *Client) (ok, unsafe bool) {
	if r.usesUsername {
		if c.Username == "" {
			return false, false
		}
		if unsafeValue(c.Username, r.leadingSub) {
			return false, true
		}
	}
	if r.usesClientID && unsafeValue(c.ClientID, r.leadingSub) {
		return false, true
	}
	return true, false
}

// matchPattern reports whether the topic level seg equals the pattern level parts with the
// client's id and username substituted, without building the substituted string.
func matchPattern(parts []part, seg string, c *Client) bool {
	for _, p := range parts {
		var want string
		switch p.kind {
		case partLiteral:
			want = p.lit
		case partClientID:
			want = c.ClientID
		default:
			want = c.Username
		}
		if !strings.HasPrefix(seg, want) {
			return false
		}
		seg = seg[len(want):]
	}
	return seg == ""
}

// covers reports whether every topic that t matches is also matched by the rule: for a topic name
// (no wildcards) that is ordinary MQTT matching; for a subscription filter it means the filter
// asks for nothing outside the rule, so `sensors/+/t` is covered by `sensors/#`, `sensors/#` is not
// covered by `sensors/+` (it also matches `sensors` and `sensors/a/b`) and `#` is covered only by
// `#`. A filter level '+' is covered by a rule's '+' or '#', a filter '#' only by a rule '#'.
func (r *rule) covers(t string, c *Client) bool {
	// [MQTT-4.7.2-1]: a rule starting with a wildcard does not match topics starting with '$',
	// so `$SYS/#` is reachable only through a rule that names it.
	if t != "" && t[0] == '$' && r.levels[0].kind != levelLiteral && r.levels[0].kind != levelPattern {
		return false
	}
	more := true // t has a level left to match
	for i := range r.levels {
		lv := &r.levels[i]
		if lv.kind == levelHash {
			return true // '#' matches the rest, including no level at all (the parent)
		}
		if !more {
			return false
		}
		var seg string
		if j := strings.IndexByte(t, '/'); j >= 0 {
			seg, t = t[:j], t[j+1:]
		} else {
			seg, more = t, false
		}
		switch lv.kind {
		case levelPlus:
			if seg == "#" {
				return false // the filter spans any number of levels; '+' spans one
			}
		case levelLiteral:
			if seg != lv.lit {
				return false // also when seg is a wildcard: a literal covers one name only
			}
		default:
			if !matchPattern(lv.parts, seg, c) {
				return false
			}
		}
	}
	return !more
}

// decide applies the rule set: access is granted when a rule applicable to c grants it on topic
// and no applicable deny rule matches. Denies win whatever their order in the file (Mosquitto
// checks a user's denies before its grants, but a pattern deny only after the user's grants; here
// a pattern deny also overrides a user grant).
func (s *aclSet) decide(c *Client, a Access, topic string) bool {
	var own *ruleList
	if c.Username == "" {
		own = &s.anon
	} else {
		own = s.users[c.Username]
	}
	if own != nil {
		for i := range own.deny {
			if own.deny[i].covers(topic, c) {
				return false
			}
		}
	}
	for i := range s.patterns.deny {
		r := &s.patterns.deny[i]
		ok, unsafe := r.applies(c)
		if unsafe {
			// The deny cannot be evaluated for this client; failing closed keeps a crafted client
			// id or username from escaping it.
			return false
		}
		if ok && r.covers(topic, c) {
			return false
		}
	}
	if own != nil {
		for i := range own.allow {
			if r := &own.allow[i]; r.access&a == a && r.covers(topic, c) {
				return true
			}
		}
	}
	for i := range s.patterns.allow {
		r := &s.patterns.allow[i]
		if r.access&a != a {
			continue
		}
		if ok, _ := r.applies(c); ok && r.covers(topic, c) {
			return true
		}
	}
	return false
}

// maxCost is the largest number of rules decide examines for any client. When it is small,
// matching the rules directly is as fast as a cache lookup.
func (s *aclSet) maxCost() int {
	n := s.anon.len()
	for _, l := range s.users {
		n = max(n, l.len())
	}
	return n + s.patterns.len()
}
