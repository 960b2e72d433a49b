package auth

import "testing"

func TestAccessString(t *testing.T) {
	for _, tc := range []struct {
		a    Access
		want string
	}{{Read, "read"}, {Write, "write"}, {0, "unknown"}} {
		if got := tc.a.String(); got != tc.want {
			t.Errorf("Access(%d).String() = %q, want %q", tc.a, got, tc.want)
		}
	}
}
