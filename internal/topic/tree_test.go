package topic

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// client stands in for the broker's subscriber pointer type.
type client struct{ id int }

// resultMap turns a match result into subscriber → QoS, failing on duplicates.
func resultMap[S comparable](t *testing.T, subs []Subscriber[S]) map[S]byte {
	t.Helper()
	got := make(map[S]byte, len(subs))
	for _, s := range subs {
		if _, dup := got[s.Sub]; dup {
			t.Fatalf("subscriber %v appears twice in %v", s.Sub, subs)
		}
		got[s.Sub] = s.QoS
	}
	return got
}

func matchTree[S comparable](t *testing.T, tr *Tree[S], name string) map[S]byte {
	t.Helper()
	var m Matches[S]
	tr.Match([]byte(name), &m)
	return resultMap(t, m.Subscribers())
}

func TestTreeSubscribeUnsubscribe(t *testing.T) {
	tests := []struct {
		name   string
		subs   []string // "filter subscriber qos", applied in order
		unsubs []string // "filter subscriber", applied in order
		topic  string
		want   map[string]byte
		len    int
	}{
		{
			name:  "single subscription",
			subs:  []string{"a/b c1 1"},
			topic: "a/b",
			want:  map[string]byte{"c1": 1},
			len:   1,
		},
		{
			name:  "MQTT-3.8.4-3 resubscribe replaces QoS",
			subs:  []string{"a/b c1 1", "a/b c1 2"},
			topic: "a/b",
			want:  map[string]byte{"c1": 2},
			len:   1,
		},
		{
			name:  "MQTT-3.8.4-3 resubscribe may lower QoS",
			subs:  []string{"a/+ c1 2", "a/+ c1 0"},
			topic: "a/b",
			want:  map[string]byte{"c1": 0},
			len:   1,
		},
		{
			name:  "MQTT-3.3.5-1 overlapping filters deduplicated at max QoS",
			subs:  []string{"a/b c1 0", "a/+ c1 2", "# c1 1", "a/# c2 1", "+/b c2 0"},
			topic: "a/b",
			want:  map[string]byte{"c1": 2, "c2": 1},
			len:   5,
		},
		{
			name:   "unsubscribe one of overlapping filters",
			subs:   []string{"a/b c1 0", "a/+ c1 2"},
			unsubs: []string{"a/+ c1"},
			topic:  "a/b",
			want:   map[string]byte{"c1": 0},
			len:    1,
		},
		{
			name:   "unsubscribe other subscriber keeps mine",
			subs:   []string{"a/b c1 1", "a/b c2 2"},
			unsubs: []string{"a/b c2", "a/b c3", "a/c c1", "x/y/z c1"},
			topic:  "a/b",
			want:   map[string]byte{"c1": 1},
			len:    1,
		},
		{
			name:  "MQTT-4.7.2-1 wildcards at root skip $ names",
			subs:  []string{"# c1 0", "+/x c2 0", "$SYS/x c3 1", "$SYS/# c4 2", "$SYS/+ c5 1"},
			topic: "$SYS/x",
			want:  map[string]byte{"c3": 1, "c4": 2, "c5": 1},
			len:   5,
		},
		{
			name:  "MQTT-4.7.1-2 multi-level includes parent",
			subs:  []string{"sport/# c1 1", "sport/+ c2 1"},
			topic: "sport",
			want:  map[string]byte{"c1": 1},
			len:   2,
		},
		{
			name:  "MQTT-4.7.1-3 plus matches empty level",
			subs:  []string{"+/+ c1 1", "/+ c2 0", "+ c3 2"},
			topic: "/finance",
			want:  map[string]byte{"c1": 1, "c2": 0},
			len:   3,
		},
		{
			name:  "no match",
			subs:  []string{"a/b c1 1", "a/+/c c2 1"},
			topic: "a/c",
			want:  map[string]byte{},
			len:   2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTree[string]()
			for _, s := range tt.subs {
				var f, c string
				var q byte
				if _, err := fmt.Sscan(s, &f, &c, &q); err != nil {
					t.Fatal(err)
				}
				tr.Subscribe(f, c, q)
			}
			for _, s := range tt.unsubs {
				var f, c string
				if _, err := fmt.Sscan(s, &f, &c); err != nil {
					t.Fatal(err)
				}
				tr.Unsubscribe(f, c)
			}
			if got := matchTree(t, tr, tt.topic); !maps.Equal(got, tt.want) {
				t.Fatalf("Match(%q) = %v, want %v", tt.topic, got, tt.want)
			}
			if got := tr.Len(); got != tt.len {
				t.Fatalf("Len() = %d, want %d", got, tt.len)
			}
		})
	}
}

func TestTreeReportsAddedRemoved(t *testing.T) {
	tr := NewTree[int]()
	steps := []struct {
		name string
		op   func() bool
		want bool
	}{
		{"first subscribe is new", func() bool { return tr.Subscribe("a/#", 1, 0) }, true},
		{"MQTT-3.8.4-3 same filter replaces", func() bool { return tr.Subscribe("a/#", 1, 2) }, false},
		{"other subscriber is new", func() bool { return tr.Subscribe("a/#", 2, 2) }, true},
		{"unsubscribe existing", func() bool { return tr.Unsubscribe("a/#", 1) }, true},
		{"unsubscribe twice", func() bool { return tr.Unsubscribe("a/#", 1) }, false},
		{"unsubscribe unknown filter", func() bool { return tr.Unsubscribe("a/+", 2) }, false},
		{"unsubscribe unknown hash", func() bool { return tr.Unsubscribe("b/#", 2) }, false},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if got := s.op(); got != s.want {
				t.Fatalf("got %v, want %v", got, s.want)
			}
		})
	}
}

// TestTreeMatchTable runs the shared match examples through a Tree.
func TestTreeMatchTable(t *testing.T) {
	for _, tt := range matchTests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTree[int]()
			tr.Subscribe(tt.filter, 1, 1)
			got := len(matchTree(t, tr, tt.topic)) == 1
			if got != tt.want {
				t.Fatalf("Tree with %q matches %q = %v, want %v", tt.filter, tt.topic, got, tt.want)
			}
		})
	}
}

func TestTreePrune(t *testing.T) {
	filters := []string{"a", "a/b", "a/b/c", "a/+/c", "a/#", "+", "#", "+/+/#", "/", "//", "$SYS/#", "x/y/z/w"}
	tests := []struct {
		name  string
		order func([]string) []string
	}{
		{"in order", func(f []string) []string { return f }},
		{"reversed", func(f []string) []string { f = slices.Clone(f); slices.Reverse(f); return f }},
		{"shuffled", func(f []string) []string {
			f = slices.Clone(f)
			rand.New(rand.NewPCG(1, 2)).Shuffle(len(f), func(i, j int) { f[i], f[j] = f[j], f[i] })
			return f
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTree[int]()
			for i, f := range filters {
				for s := range 3 {
					tr.Subscribe(f, i*10+s, 1)
				}
			}
			if tr.nodes == 0 {
				t.Fatal("no nodes after Subscribe")
			}
			for _, f := range tt.order(filters) {
				i := slices.Index(filters, f)
				for s := range 3 {
					if !tr.Unsubscribe(f, i*10+s) {
						t.Fatalf("Unsubscribe(%q, %d) = false, want true", f, i*10+s)
					}
				}
			}
			if tr.nodes != 0 || !tr.root.empty() || tr.root.literal != nil || tr.Len() != 0 {
				t.Fatalf("after removing everything: nodes=%d root empty=%v literal=%v len=%d, want 0 nodes",
					tr.nodes, tr.root.empty(), tr.root.literal, tr.Len())
			}
		})
	}
}

// TestTreeManySubscribersOneFilter exercises the per-node index and the
// indexed de-duplication in Matches.
func TestTreeManySubscribersOneFilter(t *testing.T) {
	const n = 1000
	tr := NewTree[*client]()
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = &client{id: i}
		tr.Subscribe("a/b", clients[i], 0)
		if i%2 == 0 {
			tr.Subscribe("a/+", clients[i], 2) // overlaps, higher QoS
		}
		if i%3 == 0 {
			tr.Subscribe("#", clients[i], 1)
		}
	}
	check := func(t *testing.T, alive func(i int) bool) {
		t.Helper()
		got := matchTree(t, tr, "a/b")
		want := map[*client]byte{}
		for i, c := range clients {
			if !alive(i) {
				continue
			}
			switch {
			case i%2 == 0:
				want[c] = 2
			case i%3 == 0:
				want[c] = 1
			default:
				want[c] = 0
			}
		}
		if !maps.Equal(got, want) {
			t.Fatalf("got %d subscribers, want %d (or wrong QoS)", len(got), len(want))
		}
	}
	t.Run("MQTT-3.3.5-1 all subscribed", func(t *testing.T) { check(t, func(int) bool { return true }) })
	t.Run("MQTT-3.8.4-3 resubscribe in large node", func(t *testing.T) {
		if tr.Subscribe("a/b", clients[501], 0) {
			t.Fatal("resubscribe reported new")
		}
		if got := tr.Len(); got != n+n/2+n/3+1 {
			t.Fatalf("Len() = %d, want %d", got, n+n/2+n/3+1)
		}
	})
	t.Run("remove most", func(t *testing.T) {
		for i, c := range clients {
			if i%10 != 0 {
				tr.Unsubscribe("a/b", c)
				tr.Unsubscribe("a/+", c)
				tr.Unsubscribe("#", c)
			}
		}
		check(t, func(i int) bool { return i%10 == 0 })
	})
	t.Run("remove all", func(t *testing.T) {
		for _, c := range clients {
			tr.Unsubscribe("a/b", c)
			tr.Unsubscribe("a/+", c)
			tr.Unsubscribe("#", c)
		}
		if tr.Len() != 0 || tr.nodes != 0 {
			t.Fatalf("Len() = %d, nodes = %d, want 0, 0", tr.Len(), tr.nodes)
		}
	})
}

// randomLevels gives random filters and names a small alphabet so that they
// overlap often, including empty levels and '$' first levels.
var randomLevels = []string{"a", "b", "", "$s", "c"}

func randomName(r *rand.Rand) string {
	n := 1 + r.IntN(4)
	b := make([]byte, 0, 16)
	for i := range n {
		if i > 0 {
			b = append(b, '/')
		}
		b = append(b, randomLevels[r.IntN(len(randomLevels))]...)
	}
	if len(b) == 0 {
		return "a" // a single empty level is the empty string, which is invalid [MQTT-4.7.3-1]
	}
	return string(b)
}

func randomFilter(r *rand.Rand) string {
	n := 1 + r.IntN(4)
	b := make([]byte, 0, 16)
	for i := range n {
		if i > 0 {
			b = append(b, '/')
		}
		switch x := r.IntN(10); {
		case x < 2:
			b = append(b, '+')
		case x < 3 && i == n-1:
			b = append(b, '#')
		default:
			b = append(b, randomLevels[r.IntN(len(randomLevels))]...)
		}
	}
	if len(b) == 0 {
		return "b" // a single empty level is the empty string, which is invalid [MQTT-4.7.3-1]
	}
	return string(b)
}

// TestTreeRandomized compares Tree.Match with brute-force Match over every
// subscription, through random subscribes, resubscribes and unsubscribes.
func TestTreeRandomized(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprintf("MQTT-3.3.5-1 seed %d", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 99))
			tr := NewTree[int]()
			type key struct {
				filter string
				sub    int
			}
			model := map[key]byte{}
			var m Matches[int]
			for step := range 1000 {
				k := key{randomFilter(r), r.IntN(8)}
				if err := ValidateFilter(k.filter); err != nil {
					t.Fatalf("generator made invalid filter %q: %v", k.filter, err)
				}
				if r.IntN(3) == 0 {
					_, had := model[k]
					delete(model, k)
					if got := tr.Unsubscribe(k.filter, k.sub); got != had {
						t.Fatalf("step %d: Unsubscribe(%q, %d) = %v, want %v", step, k.filter, k.sub, got, had)
					}
				} else {
					q := byte(r.IntN(3))
					_, had := model[k]
					model[k] = q
					if got := tr.Subscribe(k.filter, k.sub, q); got == had {
						t.Fatalf("step %d: Subscribe(%q, %d) = %v, want %v", step, k.filter, k.sub, got, !had)
					}
				}
				if tr.Len() != len(model) {
					t.Fatalf("step %d: Len() = %d, want %d", step, tr.Len(), len(model))
				}
				name := randomName(r)
				want := map[int]byte{}
				for k, q := range model {
					if Match(k.filter, []byte(name)) {
						if old, ok := want[k.sub]; !ok || q > old {
							want[k.sub] = q
						}
					}
				}
				tr.Match([]byte(name), &m)
				if got := resultMap(t, m.Subscribers()); !maps.Equal(got, want) {
					t.Fatalf("step %d: Match(%q) = %v, want %v", step, name, got, want)
				}
			}
			for k := range model {
				tr.Unsubscribe(k.filter, k.sub)
			}
			if tr.nodes != 0 || tr.Len() != 0 {
				t.Fatalf("after unsubscribing all: nodes=%d Len=%d, want 0", tr.nodes, tr.Len())
			}
		})
	}
}

func TestTreeConcurrent(t *testing.T) {
	tr := NewTree[int]()
	tr.Subscribe("dev/+/state", -1, 1) // always present, so every match must find it
	const workers = 4
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range 500 {
				f := fmt.Sprintf("dev/%d/#", i%20)
				tr.Subscribe(f, w, byte(i%3))
				tr.Subscribe("dev/+/state", w, 0)
				tr.Unsubscribe(f, w)
			}
		})
		wg.Go(func() {
			var m Matches[int]
			for i := range 500 {
				tr.Match(fmt.Appendf(nil, "dev/%d/state", i%20), &m)
				if _, ok := resultMap(t, m.Subscribers())[-1]; !ok {
					t.Errorf("permanent subscriber missing from %v", m.Subscribers())
					return
				}
			}
		})
	}
	wg.Wait()
	if got, want := tr.Len(), 1+workers; got != want {
		t.Fatalf("Len() = %d, want %d", got, want)
	}
}

func TestTreeMatchAllocs(t *testing.T) {
	tr := NewTree[*client]()
	clients := make([]*client, 100)
	for i := range clients {
		clients[i] = &client{id: i}
		tr.Subscribe(fmt.Sprintf("devices/%d/telemetry", i), clients[i], 1)
		tr.Subscribe(fmt.Sprintf("devices/%d/+", i), clients[i], 0)
		tr.Subscribe("devices/#", clients[i], 2)
	}
	tr.Subscribe("devices/7/telemetry", clients[8], 2)
	tr.Subscribe("/", clients[9], 2) // an empty first level, so the empty name could reach it if not rejected
	tests := []struct {
		name  string
		topic string
		n     int
	}{
		{"literal and wildcard overlap, indexed dedup", "devices/7/telemetry", 101},
		{"small linear dedup", "devices/7/x", 100},
		{"miss", "other/thing", 0},
		{"dollar", "$SYS/x", 0},
		{"MQTT-4.7.3-1 empty name matches nothing", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Matches[*client]
			name := []byte(tt.topic)
			tr.Match(name, &m) // grow m
			if got := len(m.Subscribers()); got != min(tt.n, 100) {
				t.Fatalf("got %d subscribers, want %d", got, min(tt.n, 100))
			}
			if got := testing.AllocsPerRun(100, func() { tr.Match(name, &m) }); got != 0 {
				t.Fatalf("Tree.Match allocates %v per run, want 0", got)
			}
		})
	}
}
