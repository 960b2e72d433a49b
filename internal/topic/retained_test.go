package topic

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

func matchRetained[V any](t *testing.T, r *Retained[V], filter string) map[string]V {
	t.Helper()
	got := map[string]V{}
	r.Match(filter, func(name string, v V) bool {
		if _, dup := got[name]; dup {
			t.Fatalf("Match(%q) visited %q twice", filter, name)
		}
		got[name] = v
		return true
	})
	return got
}

func TestRetainedSetGetDelete(t *testing.T) {
	r := NewRetained[int]()
	steps := []struct {
		name string
		op   func() bool
		want bool
		len  int
	}{
		{"MQTT-3.3.1-5 set new", func() bool { return r.Set("a/b", 1) }, false, 1},
		{"MQTT-3.3.1-5 set replaces", func() bool { return r.Set("a/b", 2) }, true, 1},
		{"MQTT-3.3.1-5 get replaced value", func() bool { v, ok := r.Get("a/b"); return ok && v == 2 }, true, 1},
		{"set parent", func() bool { return r.Set("a", 3) }, false, 2},
		{"set child", func() bool { return r.Set("a/b/c", 4) }, false, 3},
		{"get missing leaf", func() bool { _, ok := r.Get("a/b/c/d"); return ok }, false, 3},
		{"get unset inner", func() bool { r.Set("x/y", 5); _, ok := r.Get("x"); return ok }, false, 4},
		{"MQTT-3.3.1-10 delete clears", func() bool { return r.Delete("a/b") }, true, 3},
		{"MQTT-3.3.1-11 deleted value is gone", func() bool { _, ok := r.Get("a/b"); return ok }, false, 3},
		{"child survives parent delete", func() bool { v, ok := r.Get("a/b/c"); return ok && v == 4 }, true, 3},
		{"delete twice", func() bool { return r.Delete("a/b") }, false, 3},
		{"delete unset inner", func() bool { return r.Delete("x") }, false, 3},
		{"delete unknown", func() bool { return r.Delete("q/r") }, false, 3},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if got := s.op(); got != s.want {
				t.Fatalf("got %v, want %v", got, s.want)
			}
			if got := r.Len(); got != s.len {
				t.Fatalf("Len() = %d, want %d", got, s.len)
			}
		})
	}
}

func TestRetainedMatch(t *testing.T) {
	names := []string{
		"sport", "sport/", "sport/tennis", "sport/tennis/player1", "sport/tennis/player1/ranking",
		"sport/tennis/player2", "sports", "/finance", "finance", "/", "$SYS", "$SYS/monitor/Clients",
		"a/$b", "Accounts",
	}
	tests := []struct {
		name   string
		filter string
		want   []string
	}{
		{"literal", "sport/tennis", []string{"sport/tennis"}},
		{"literal miss", "sport/golf", nil},
		{"literal prefix is not a match", "sport/tennis/player1/ranking/x", nil},
		{"MQTT-4.7.1-2 sport/# includes sport", "sport/#", []string{"sport", "sport/", "sport/tennis", "sport/tennis/player1", "sport/tennis/player1/ranking", "sport/tennis/player2"}},
		{"MQTT-4.7.1-2 sport/tennis/player1/#", "sport/tennis/player1/#", []string{"sport/tennis/player1", "sport/tennis/player1/ranking"}},
		{"MQTT-4.7.1-2 # skips $ names", "#", []string{"sport", "sport/", "sport/tennis", "sport/tennis/player1", "sport/tennis/player1/ranking", "sport/tennis/player2", "sports", "/finance", "finance", "/", "a/$b", "Accounts"}},
		{"MQTT-4.7.1-3 sport/tennis/+", "sport/tennis/+", []string{"sport/tennis/player1", "sport/tennis/player2"}},
		{"MQTT-4.7.1-3 sport/+ matches sport/", "sport/+", []string{"sport/", "sport/tennis"}},
		{"MQTT-4.7.1-3 + matches one level", "+", []string{"sport", "sports", "finance", "Accounts"}},
		{"MQTT-4.7.1-3 +/+ matches /finance", "+/+", []string{"sport/", "sport/tennis", "/finance", "/", "a/$b"}},
		{"MQTT-4.7.1-3 /+", "/+", []string{"/finance", "/"}},
		{"MQTT-4.7.1-3 +/tennis/#", "+/tennis/#", []string{"sport/tennis", "sport/tennis/player1", "sport/tennis/player1/ranking", "sport/tennis/player2"}},
		{"MQTT-4.7.2-1 +/monitor/Clients skips $SYS", "+/monitor/Clients", nil},
		{"MQTT-4.7.2-1 $SYS/# includes $SYS", "$SYS/#", []string{"$SYS", "$SYS/monitor/Clients"}},
		{"MQTT-4.7.2-1 $SYS/monitor/+", "$SYS/monitor/+", []string{"$SYS/monitor/Clients"}},
		{"MQTT-4.7.2-1 $ below first level is ordinary", "a/+", []string{"a/$b"}},
		{"MQTT-4.7.3-4 case sensitive", "ACCOUNTS", nil},
	}
	r := NewRetained[string]()
	for _, n := range names {
		r.Set(n, "v:"+n)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := matchRetained(t, r, tt.filter)
			for n, v := range got {
				if v != "v:"+n {
					t.Fatalf("value for %q = %q, want %q", n, v, "v:"+n)
				}
			}
			gotNames := slices.Sorted(maps.Keys(got))
			want := slices.Sorted(slices.Values(tt.want))
			if !slices.Equal(gotNames, want) {
				t.Fatalf("Match(%q) = %q, want %q", tt.filter, gotNames, want)
			}
			for _, n := range gotNames {
				if !Match(tt.filter, []byte(n)) {
					t.Fatalf("Match(%q) returned %q, which topic.Match rejects", tt.filter, n)
				}
			}
		})
	}
}

// TestRetainedMatchTable runs the shared match examples through a Retained.
func TestRetainedMatchTable(t *testing.T) {
	for _, tt := range matchTests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRetained[int]()
			r.Set(tt.topic, 1)
			if got := len(matchRetained(t, r, tt.filter)) == 1; got != tt.want {
				t.Fatalf("Retained with %q matched by %q = %v, want %v", tt.topic, tt.filter, got, tt.want)
			}
		})
	}
}

func TestRetainedMatchStops(t *testing.T) {
	r := NewRetained[int]()
	for i := range 50 {
		r.Set(fmt.Sprintf("a/%d/x", i), i)
		r.Set(fmt.Sprintf("a/%d", i), i)
	}
	r.Set("a", 0)
	tests := []struct {
		name   string
		filter string
		stop   int
	}{
		{"hash stops at parent", "a/#", 1},
		{"hash stops in subtree", "a/#", 30},
		{"hash at root stops", "#", 7},
		{"plus last level stops", "a/+", 10},
		{"plus inner level stops", "a/+/x", 10},
		{"literal stops", "a/3/x", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			r.Match(tt.filter, func(string, int) bool {
				calls++
				return calls < tt.stop
			})
			if calls != tt.stop {
				t.Fatalf("fn called %d times, want %d (it returned false on call %d)", calls, tt.stop, tt.stop)
			}
		})
	}
}

func TestRetainedPrune(t *testing.T) {
	names := []string{"a", "a/b", "a/b/c", "a/b/c/d", "/", "//", "$SYS/x", "x/y/z", "x/y/w"}
	tests := []struct {
		name  string
		order []int
	}{
		{"in order", []int{0, 1, 2, 3, 4, 5, 6, 7, 8}},
		{"reversed", []int{8, 7, 6, 5, 4, 3, 2, 1, 0}},
		{"mixed", []int{2, 0, 7, 4, 3, 8, 1, 6, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRetained[int]()
			for i, n := range names {
				r.Set(n, i)
			}
			for _, i := range tt.order {
				if !r.Delete(names[i]) {
					t.Fatalf("Delete(%q) = false, want true", names[i])
				}
			}
			if r.nodes != 0 || r.root.children != nil || r.Len() != 0 {
				t.Fatalf("after deleting everything: nodes=%d children=%v len=%d, want none", r.nodes, r.root.children, r.Len())
			}
		})
	}
}

// TestRetainedRandomized compares Retained.Match with brute-force Match over
// every stored name, through random sets and deletes.
func TestRetainedRandomized(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprintf("MQTT-4.7.2-1 seed %d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			r := NewRetained[int]()
			model := map[string]int{}
			for step := range 1000 {
				name := randomName(rng)
				if rng.IntN(3) == 0 {
					_, had := model[name]
					delete(model, name)
					if got := r.Delete(name); got != had {
						t.Fatalf("step %d: Delete(%q) = %v, want %v", step, name, got, had)
					}
				} else {
					_, had := model[name]
					model[name] = step
					if got := r.Set(name, step); got != had {
						t.Fatalf("step %d: Set(%q) = %v, want %v", step, name, got, had)
					}
				}
				if r.Len() != len(model) {
					t.Fatalf("step %d: Len() = %d, want %d", step, r.Len(), len(model))
				}
				filter := randomFilter(rng)
				want := map[string]int{}
				for n, v := range model {
					if Match(filter, []byte(n)) {
						want[n] = v
					}
				}
				if got := matchRetained(t, r, filter); !maps.Equal(got, want) {
					t.Fatalf("step %d: Match(%q) = %v, want %v", step, filter, got, want)
				}
			}
			for n := range model {
				r.Delete(n)
			}
			if r.nodes != 0 || r.Len() != 0 {
				t.Fatalf("after deleting all: nodes=%d Len=%d, want 0", r.nodes, r.Len())
			}
		})
	}
}

func TestRetainedConcurrent(t *testing.T) {
	r := NewRetained[int]()
	r.Set("dev/0/state", -1)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 500 {
				n := fmt.Sprintf("dev/%d/w%d", i%20, w)
				r.Set(n, i)
				if _, ok := r.Get(n); !ok {
					t.Errorf("Get(%q) after Set found nothing", n)
					return
				}
				r.Delete(n)
			}
		})
		wg.Go(func() {
			for range 500 {
				found := false
				r.Match("dev/+/#", func(n string, v int) bool {
					found = found || v == -1
					return true
				})
				if !found {
					t.Error("permanent retained message missing")
					return
				}
			}
		})
	}
	wg.Wait()
	if r.Len() != 1 {
		t.Fatalf("Len() = %d, want 1", r.Len())
	}
}
