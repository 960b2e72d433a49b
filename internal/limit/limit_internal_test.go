package limit

import "testing"

func TestEvictRank(t *testing.T) {
	quietFull := evictRank{lastSeen: 1}
	quietDrained := evictRank{drained: true, lastSeen: 1}
	failing := evictRank{failures: true, lastSeen: 1}
	tests := []struct {
		name string
		a, b evictRank
		want bool
	}{
		{"no failures before failures", evictRank{drained: true, lastSeen: 9}, failing, true},
		{"failures after no failures", failing, quietDrained, false},
		{"full before drained", evictRank{lastSeen: 9}, quietDrained, true},
		{"drained after full", quietDrained, evictRank{lastSeen: 9}, false},
		{"older before newer", quietFull, evictRank{lastSeen: 2}, true},
		{"newer after older", evictRank{lastSeen: 2}, quietFull, false},
		{"equal is not before", quietFull, quietFull, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.a.before(tt.b); got != tt.want {
				t.Errorf("%+v before %+v: got %v, want %v", tt.a, tt.b, got, tt.want)
			}
		})
	}
}
