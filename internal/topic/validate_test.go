package topic

import (
	"errors"
	"strings"
	"testing"
)

// refMatch is an independent, allocation-heavy matcher used as the oracle in
// randomized and fuzz tests.
func refMatch(filter, name string) bool {
	if filter == "" || name == "" {
		return false
	}
	if name[0] == '$' && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	fl, nl := strings.Split(filter, "/"), strings.Split(name, "/")
	for i, f := range fl {
		if f == "#" {
			return true
		}
		if i >= len(nl) || (f != "+" && f != nl[i]) {
			return false
		}
	}
	return len(fl) == len(nl)
}

// refValidFilter is an independent statement of the filter rules.
func refValidFilter(filter string) bool {
	if filter == "" || len(filter) > MaxLen || strings.IndexByte(filter, 0) >= 0 {
		return false
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return false
		}
		if strings.Contains(l, "+") && l != "+" {
			return false
		}
	}
	return true
}

func TestValidateName(t *testing.T) {
	tests := []struct {
		name  string
		topic string
		want  error
	}{
		{"plain", "sport/tennis/player1", nil},
		{"single level", "sport", nil},
		{"MQTT-4.7.3-1 single slash is valid", "/", nil},
		{"leading slash", "/finance", nil},
		{"trailing slash", "finance/", nil},
		{"empty levels", "a//b", nil},
		{"space is allowed", "Accounts payable", nil},
		{"dollar topic", "$SYS/broker/load", nil},
		{"non-ASCII UTF-8", "café/😀", nil},
		{"MQTT-4.7.3-3 65535 bytes", strings.Repeat("a", MaxLen), nil},
		{"MQTT-4.7.3-1 empty name", "", ErrEmpty},
		{"MQTT-4.7.3-2 null character", "a\x00b", ErrNullChar},
		{"MQTT-4.7.3-2 null character alone", "\x00", ErrNullChar},
		{"MQTT-4.7.3-3 65536 bytes", strings.Repeat("a", MaxLen+1), ErrTooLong},
		{"MQTT-3.3.2-2 plus in name", "sport/+/player1", ErrWildcardInName},
		{"MQTT-4.7.1-1 hash in name", "sport/#", ErrWildcardInName},
		{"MQTT-4.7.1-1 plus inside level", "sport+", ErrWildcardInName},
		{"MQTT-4.7.1-1 hash alone", "#", ErrWildcardInName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidateName([]byte(tt.topic)); !errors.Is(got, tt.want) {
				t.Fatalf("ValidateName(%.40q) = %v, want %v", tt.topic, got, tt.want)
			}
		})
	}
}

func TestValidateFilter(t *testing.T) {
	tests := []struct {
		name   string
		filter string
		want   error
	}{
		{"literal", "sport/tennis/player1", nil},
		{"MQTT-4.7.1-2 multi-level after levels", "sport/tennis/player1/#", nil},
		{"MQTT-4.7.1-2 multi-level after one level", "sport/#", nil},
		{"MQTT-4.7.1-2 multi-level alone", "#", nil},
		{"MQTT-4.7.1-2 multi-level after empty level", "/#", nil},
		{"MQTT-4.7.1-3 single-level alone", "+", nil},
		{"MQTT-4.7.1-3 single-level twice", "+/+", nil},
		{"MQTT-4.7.1-3 single-level after empty level", "/+", nil},
		{"MQTT-4.7.1-3 single-level then multi-level", "+/tennis/#", nil},
		{"MQTT-4.7.1-3 single-level in the middle", "sport/+/player1", nil},
		{"MQTT-4.7.1-3 single-level at the end", "sport/tennis/+", nil},
		{"MQTT-4.7.1-3 single-level first", "+/monitor/Clients", nil},
		{"dollar filter", "$SYS/#", nil},
		{"MQTT-4.7.3-1 single slash is valid", "/", nil},
		{"MQTT-4.7.3-3 65535 bytes", strings.Repeat("a", MaxLen), nil},
		{"MQTT-4.7.3-1 empty filter", "", ErrEmpty},
		{"MQTT-4.7.3-2 null character", "a/\x00", ErrNullChar},
		{"MQTT-4.7.3-3 65536 bytes", strings.Repeat("a", MaxLen+1), ErrTooLong},
		{"MQTT-4.7.1-2 multi-level glued to level", "sport/tennis#", ErrMultiLevelWildcard},
		{"MQTT-4.7.1-2 multi-level not last", "sport/tennis/#/ranking", ErrMultiLevelWildcard},
		{"MQTT-4.7.1-2 multi-level followed by slash", "#/", ErrMultiLevelWildcard},
		{"MQTT-4.7.1-2 double multi-level", "##", ErrMultiLevelWildcard},
		{"MQTT-4.7.1-2 multi-level before level", "#a", ErrMultiLevelWildcard},
		{"MQTT-4.7.1-3 single-level glued before", "sport+", ErrSingleLevelWildcard},
		{"MQTT-4.7.1-3 single-level glued after", "+sport", ErrSingleLevelWildcard},
		{"MQTT-4.7.1-3 single-level inside level", "a/b+c/d", ErrSingleLevelWildcard},
		{"MQTT-4.7.1-3 double single-level", "++", ErrSingleLevelWildcard},
		{"MQTT-4.7.1-3 single-level glued to multi-level", "+#", ErrSingleLevelWildcard},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidateFilter(tt.filter); !errors.Is(got, tt.want) {
				t.Fatalf("ValidateFilter(%.40q) = %v, want %v", tt.filter, got, tt.want)
			}
			if got, want := ValidateFilter(tt.filter) == nil, refValidFilter(tt.filter); got != want {
				t.Fatalf("ValidateFilter(%.40q) valid = %v, reference says %v", tt.filter, got, want)
			}
		})
	}
}

// matchTests holds the examples of sections 4.7.1.2, 4.7.1.3, 4.7.2 and 4.7.3
// of the standard, and edge cases. Tree and Retained tests run them too.
var matchTests = []struct {
	name   string
	filter string
	topic  string
	want   bool
}{
	{"exact", "sport/tennis/player1", "sport/tennis/player1", true},
	{"exact differs", "sport/tennis/player1", "sport/tennis/player2", false},
	{"longer name", "sport/tennis", "sport/tennis/player1", false},
	{"shorter name", "sport/tennis/player1", "sport/tennis", false},
	{"MQTT-4.7.1-2 multi-level matches parent", "sport/tennis/player1/#", "sport/tennis/player1", true},
	{"MQTT-4.7.1-2 multi-level matches child", "sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
	{"MQTT-4.7.1-2 multi-level matches grandchild", "sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
	{"MQTT-4.7.1-2 multi-level not sibling", "sport/tennis/player1/#", "sport/tennis/player2", false},
	{"MQTT-4.7.1-2 multi-level not grandparent", "sport/tennis/player1/#", "sport/tennis", false},
	{"MQTT-4.7.1-2 sport/# matches sport", "sport/#", "sport", true},
	{"MQTT-4.7.1-2 sport/# matches sport/", "sport/#", "sport/", true},
	{"MQTT-4.7.1-2 sport/# not sports", "sport/#", "sports", false},
	{"MQTT-4.7.1-2 hash matches everything", "#", "sport/tennis/player1", true},
	{"MQTT-4.7.1-2 hash matches slash", "#", "/", true},
	{"MQTT-4.7.1-2 hash after empty level", "/#", "/finance", true},
	{"MQTT-4.7.1-2 hash after empty level not finance", "/#", "finance", false},
	{"MQTT-4.7.1-3 plus matches one level", "sport/tennis/+", "sport/tennis/player1", true},
	{"MQTT-4.7.1-3 plus matches other level", "sport/tennis/+", "sport/tennis/player2", true},
	{"MQTT-4.7.1-3 plus not two levels", "sport/tennis/+", "sport/tennis/player1/ranking", false},
	{"MQTT-4.7.1-3 sport/+ not sport", "sport/+", "sport", false},
	{"MQTT-4.7.1-3 sport/+ matches sport/", "sport/+", "sport/", true},
	{"MQTT-4.7.1-3 plus in the middle", "sport/+/player1", "sport/tennis/player1", true},
	{"MQTT-4.7.1-3 plus then hash", "+/tennis/#", "sport/tennis/player1", true},
	{"MQTT-4.7.1-3 +/+ matches /finance", "+/+", "/finance", true},
	{"MQTT-4.7.1-3 /+ matches /finance", "/+", "/finance", true},
	{"MQTT-4.7.1-3 + not /finance", "+", "/finance", false},
	{"MQTT-4.7.1-3 + matches finance", "+", "finance", true},
	{"MQTT-4.7.1-3 + not finance/", "+", "finance/", false},
	{"MQTT-4.7.1-3 +/+ matches /", "+/+", "/", true},
	{"MQTT-4.7.2-1 hash not $SYS", "#", "$SYS/monitor/Clients", false},
	{"MQTT-4.7.2-1 hash not $", "#", "$", false},
	{"MQTT-4.7.2-1 +/monitor/Clients not $SYS", "+/monitor/Clients", "$SYS/monitor/Clients", false},
	{"MQTT-4.7.2-1 +/monitor/Clients matches other", "+/monitor/Clients", "SYS/monitor/Clients", true},
	{"MQTT-4.7.2-1 plus alone not $SYS", "+", "$SYS", false},
	{"MQTT-4.7.2-1 $SYS/# matches $SYS/monitor/Clients", "$SYS/#", "$SYS/monitor/Clients", true},
	{"MQTT-4.7.2-1 $SYS/# matches $SYS", "$SYS/#", "$SYS", true},
	{"MQTT-4.7.2-1 $SYS/monitor/+ matches", "$SYS/monitor/+", "$SYS/monitor/Clients", true},
	{"MQTT-4.7.2-1 dollar only special in first level", "a/+", "a/$b", true},
	{"MQTT-4.7.2-1 hash matches dollar below first level", "a/#", "a/$b", true},
	{"MQTT-4.7.3-4 case sensitive", "ACCOUNTS", "Accounts", false},
	{"MQTT-4.7.3-4 space kept", "Accounts payable", "Accounts payable", true},
	{"MQTT-4.7.3-4 leading slash is distinct", "/finance", "finance", false},
	{"MQTT-4.7.3-4 no unicode normalisation", "caf\u00e9", "cafe\u0301", false},
	{"MQTT-4.7.3-4 no trailing slash folding", "finance", "finance/", false},
	{"empty levels", "a//b", "a//b", true},
	{"plus matches empty level", "a/+/b", "a//b", true},
}

func TestMatch(t *testing.T) {
	for _, tt := range matchTests {
		t.Run(tt.name, func(t *testing.T) {
			if err := ValidateFilter(tt.filter); err != nil {
				t.Fatalf("bad test filter %q: %v", tt.filter, err)
			}
			if err := ValidateName([]byte(tt.topic)); err != nil {
				t.Fatalf("bad test name %q: %v", tt.topic, err)
			}
			if got := Match(tt.filter, []byte(tt.topic)); got != tt.want {
				t.Fatalf("Match(%q, %q) = %v, want %v", tt.filter, tt.topic, got, tt.want)
			}
			if got := refMatch(tt.filter, tt.topic); got != tt.want {
				t.Fatalf("refMatch(%q, %q) = %v, want %v", tt.filter, tt.topic, got, tt.want)
			}
		})
	}
	t.Run("MQTT-4.7.3-1 empty operands never match", func(t *testing.T) {
		if Match("", []byte("a")) || Match("#", nil) {
			t.Fatal("got a match with an empty filter or name, want none")
		}
	})
}

func TestValidateAndMatchAllocs(t *testing.T) {
	name := []byte("sport/tennis/player1/ranking")
	tests := []struct {
		name string
		fn   func()
	}{
		{"ValidateName", func() { _ = ValidateName(name) }},
		{"ValidateName error", func() { _ = ValidateName([]byte("a/+")) }},
		{"ValidateFilter", func() { _ = ValidateFilter("sport/+/player1/#") }},
		{"Match", func() { _ = Match("sport/+/player1/#", name) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := testing.AllocsPerRun(100, tt.fn); got != 0 {
				t.Fatalf("got %v allocs per run, want 0", got)
			}
		})
	}
}

func FuzzValidateFilter(f *testing.F) {
	for _, tt := range matchTests {
		f.Add(tt.filter)
	}
	for _, s := range []string{"", "#/", "++", "a+/b", "a/#/b", "\x00", "/+/", "+#"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, filter string) {
		if got, want := ValidateFilter(filter) == nil, refValidFilter(filter); got != want {
			t.Fatalf("ValidateFilter(%q) valid = %v, reference says %v", filter, got, want)
		}
		wantName := filter != "" && len(filter) <= MaxLen && !strings.ContainsAny(filter, "+#\x00")
		if got := ValidateName([]byte(filter)) == nil; got != wantName {
			t.Fatalf("ValidateName(%q) valid = %v, want %v", filter, got, wantName)
		}
	})
}

func FuzzMatch(f *testing.F) {
	for _, tt := range matchTests {
		f.Add(tt.filter, tt.topic)
	}
	f.Fuzz(func(t *testing.T, filter, name string) {
		if ValidateFilter(filter) != nil || ValidateName([]byte(name)) != nil {
			return
		}
		if got, want := Match(filter, []byte(name)), refMatch(filter, name); got != want {
			t.Fatalf("Match(%q, %q) = %v, reference says %v", filter, name, got, want)
		}
	})
}
