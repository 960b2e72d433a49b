package topic

import (
	"fmt"
	"strconv"
	"testing"
)

const benchSubs = 100_000

// benchFilter returns the i-th benchmark filter: a mix of per-device literal
// filters, per-device '+' filters, per-device '#' filters and site-wide '#'
// filters shared by many subscribers.
func benchFilter(i int) string {
	switch i % 4 {
	case 0:
		return "devices/" + strconv.Itoa(i) + "/+/state"
	case 1:
		return "site/" + strconv.Itoa(i%100) + "/#"
	case 2:
		return "devices/" + strconv.Itoa(i) + "/telemetry"
	default:
		return "devices/" + strconv.Itoa(i) + "/#"
	}
}

func benchTree(b *testing.B) (*Tree[*client], []*client) {
	b.Helper()
	tr := NewTree[*client]()
	clients := make([]*client, benchSubs)
	for i := range clients {
		clients[i] = &client{id: i}
		tr.Subscribe(benchFilter(i), clients[i], byte(i%3))
	}
	return tr, clients
}

func BenchmarkMatch(b *testing.B) {
	tr, _ := benchTree(b)
	tests := []struct {
		name  string
		topic string
		n     int
	}{
		{"literal hit", "devices/42/telemetry", 1},                     // devices/42/telemetry
		{"wildcard hit", "devices/40/kitchen/state", 1},                // devices/40/+/state
		{"hash hit", "devices/43/a/b/c", 1},                            // devices/43/#
		{"fan-out 1000 via site/#", "site/1/floor/2", benchSubs / 100}, // site/1/# has 1000 subscribers
		{"miss", "devices/99999999/telemetry", 0},
		{"dollar miss", "$SYS/broker/load", 0},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			var m Matches[*client]
			name := []byte(tt.topic)
			tr.Match(name, &m)
			if got := len(m.Subscribers()); got != tt.n {
				b.Fatalf("got %d subscribers, want %d", got, tt.n)
			}
			b.ReportAllocs()
			for b.Loop() {
				tr.Match(name, &m)
			}
		})
	}
	b.Run("parallel literal hit", func(b *testing.B) {
		name := []byte("devices/42/telemetry")
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			var m Matches[*client]
			for pb.Next() {
				tr.Match(name, &m)
			}
		})
	})
}

func BenchmarkSubscribe(b *testing.B) {
	filters := make([]string, benchSubs)
	for i := range filters {
		filters[i] = benchFilter(i)
	}
	b.Run("new into 100k", func(b *testing.B) {
		tr, _ := benchTree(b)
		extras := make([]*client, 1000)
		for i := range extras {
			extras[i] = &client{id: -1 - i}
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			// A new subscriber on an existing filter path each time; the tree
			// grows from 100k by b.N subscriptions.
			tr.Subscribe(filters[i%benchSubs], extras[(i/benchSubs)%len(extras)], 1)
			i++
		}
	})
	b.Run("subscribe unsubscribe churn in 100k", func(b *testing.B) {
		tr, _ := benchTree(b)
		extra := &client{id: -1}
		churn := make([]string, 1000)
		for i := range churn {
			churn[i] = fmt.Sprintf("churn/%d/+/x", i) // new path: nodes are created and pruned
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			tr.Subscribe(churn[i%len(churn)], extra, 1)
			tr.Unsubscribe(churn[i%len(churn)], extra)
			i++
		}
	})
	b.Run("MQTT-3.8.4-3 replace in 100k", func(b *testing.B) {
		tr, clients := benchTree(b)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			tr.Subscribe(filters[i%benchSubs], clients[i%benchSubs], byte(i%3))
			i++
		}
	})
}

// BenchmarkDedup compares the two ways Matches merges overlapping results, to
// choose linearDedupMax: two matching nodes, each with half the subscribers,
// half of which overlap.
func BenchmarkDedup(b *testing.B) {
	for _, total := range []int{8, 16, 32, 64, 128} {
		a, c := &node[*client]{}, &node[*client]{}
		for i := range total / 2 {
			a.subs = append(a.subs, Subscriber[*client]{Sub: &client{id: i}})
		}
		for i := range total / 2 {
			s := &client{id: i}
			if i%2 == 0 {
				s = a.subs[i].Sub
			}
			c.subs = append(c.subs, Subscriber[*client]{Sub: s})
		}
		for _, strategy := range []struct {
			name  string
			merge func(*Matches[*client])
		}{
			{"linear", (*Matches[*client]).mergeLinear},
			{"indexed", (*Matches[*client]).mergeIndexed},
		} {
			b.Run(fmt.Sprintf("%s %d", strategy.name, total), func(b *testing.B) {
				var m Matches[*client]
				b.ReportAllocs()
				for b.Loop() {
					m.nodes = append(m.nodes[:0], a, c)
					m.subs = append(m.subs[:0], a.subs...)
					strategy.merge(&m)
				}
			})
		}
	}
}

func BenchmarkRetainedMatch(b *testing.B) {
	r := NewRetained[int]()
	for i := range benchSubs {
		switch i % 2 {
		case 0:
			r.Set("devices/"+strconv.Itoa(i)+"/telemetry", i)
		default:
			r.Set("site/"+strconv.Itoa(i%100)+"/dev/"+strconv.Itoa(i), i)
		}
	}
	r.Set("$SYS/broker/uptime", 0)
	tests := []struct {
		name   string
		filter string
		n      int
	}{
		{"literal", "devices/42/telemetry", 1},
		{"plus one branch", "devices/42/+", 1},
		{"site/7/#", "site/7/#", benchSubs / 100},
		{"miss", "nothing/here/#", 0},
		{"devices/+/telemetry", "devices/+/telemetry", benchSubs / 2},
		{"#", "#", benchSubs},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			count := 0
			fn := func(string, int) bool { count++; return true }
			r.Match(tt.filter, fn)
			if count != tt.n {
				b.Fatalf("got %d names, want %d", count, tt.n)
			}
			b.ReportAllocs()
			for b.Loop() {
				r.Match(tt.filter, fn)
			}
		})
	}
}

func BenchmarkRetainedSet(b *testing.B) {
	names := make([]string, benchSubs)
	for i := range names {
		names[i] = "devices/" + strconv.Itoa(i) + "/telemetry"
	}
	r := NewRetained[int]()
	for i, n := range names {
		r.Set(n, i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r.Set(names[i%benchSubs], i)
		i++
	}
}

func BenchmarkValidateAndMatch(b *testing.B) {
	name := []byte("sport/tennis/player1/ranking")
	b.Run("ValidateName", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = ValidateName(name)
		}
	})
	b.Run("ValidateFilter", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = ValidateFilter("sport/+/player1/#")
		}
	})
	b.Run("Match", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = Match("sport/+/player1/#", name)
		}
	})
}
