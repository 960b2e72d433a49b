package limit_test

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotd/iotd/internal/limit"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// nthAddr returns a distinct IPv4 or IPv6 address for each n.
func nthAddr(n uint32, v6 bool) netip.Addr {
	if v6 {
		var b [16]byte
		b[0] = 0x20
		b[1] = 0x01
		binary.BigEndian.PutUint32(b[12:], n)
		return netip.AddrFrom16(b)
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], n+1<<24)
	return netip.AddrFrom4(b)
}

// step is one call of Allow at t0+at and the answer it must give.
type step struct {
	ip   string // "" for an invalid address, as a Unix socket peer has
	at   time.Duration
	want bool
}

func TestAllow(t *testing.T) {
	tests := []struct {
		name  string
		opts  limit.Options
		steps []step
	}{
		{"unlimited", limit.Options{}, []step{
			{"10.0.0.1", 0, true}, {"10.0.0.1", 0, true}, {"10.0.0.1", 0, true}, {"", 0, true},
		}},
		{"per source burst then refill", limit.Options{PerIPRate: 1, PerIPBurst: 2}, []step{
			{"10.0.0.1", 0, true}, {"10.0.0.1", 0, true}, {"10.0.0.1", 0, false},
			{"10.0.0.1", 999 * time.Millisecond, false}, {"10.0.0.1", time.Second, true}, {"10.0.0.1", time.Second, false},
		}},
		{"sources are independent", limit.Options{PerIPRate: 1, PerIPBurst: 1}, []step{
			{"10.0.0.1", 0, true}, {"10.0.0.1", 0, false}, {"10.0.0.2", 0, true}, {"2001:db8::1", 0, true},
		}},
		{"burst defaults to the rate rounded up", limit.Options{PerIPRate: 2.5}, []step{
			{"10.0.0.1", 0, true}, {"10.0.0.1", 0, true}, {"10.0.0.1", 0, true}, {"10.0.0.1", 0, false},
		}},
		{"burst is at least one", limit.Options{PerIPRate: 0.1}, []step{
			{"10.0.0.1", 0, true}, {"10.0.0.1", 0, false}, {"10.0.0.1", 10 * time.Second, true},
		}},
		{"IPv4-mapped IPv6 counts as IPv4", limit.Options{PerIPRate: 1, PerIPBurst: 1}, []step{
			{"10.0.0.1", 0, true}, {"::ffff:10.0.0.1", 0, false}, {"::ffff:10.0.0.2", 0, true}, {"10.0.0.2", 0, false},
		}},
		{"zones are ignored", limit.Options{PerIPRate: 1, PerIPBurst: 1}, []step{
			{"fe80::1%eth0", 0, true}, {"fe80::1%eth1", 0, false}, {"fe80::1", 0, false},
		}},
		{"IPv6 addresses are separate by default", limit.Options{PerIPRate: 1, PerIPBurst: 1}, []step{
			{"2001:db8::1", 0, true}, {"2001:db8::2", 0, true},
		}},
		{"IPv6 grouped by prefix", limit.Options{PerIPRate: 1, PerIPBurst: 1, IPv6Prefix: 64}, []step{
			{"2001:db8::1", 0, true}, {"2001:db8::ffff:2", 0, false}, {"2001:db8:0:1::1", 0, true}, {"10.0.0.1", 0, true},
		}},
		{"invalid address counts against the total only", limit.Options{PerIPRate: 1, PerIPBurst: 1, TotalRate: 10, TotalBurst: 2}, []step{
			{"", 0, true}, {"", 0, true}, {"", 0, false},
		}},
		{"total across sources", limit.Options{TotalRate: 1, TotalBurst: 2}, []step{
			{"10.0.0.1", 0, true}, {"10.0.0.2", 0, true}, {"10.0.0.3", 0, false}, {"10.0.0.3", time.Second, true},
		}},
		{"a refused source takes no total token", limit.Options{PerIPRate: 1, PerIPBurst: 1, TotalRate: 1, TotalBurst: 2}, []step{
			{"10.0.0.1", 0, true}, {"10.0.0.1", 0, false}, {"10.0.0.1", 0, false}, {"10.0.0.2", 0, true}, {"10.0.0.3", 0, false},
		}},
		{"negative rates mean unlimited", limit.Options{PerIPRate: -1, TotalRate: -1}, []step{
			{"10.0.0.1", 0, true}, {"10.0.0.1", 0, true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := limit.New(tt.opts)
			for i, s := range tt.steps {
				var ip netip.Addr
				if s.ip != "" {
					ip = addr(s.ip)
				}
				if got := l.Allow(ip, t0.Add(s.at)); got != s.want {
					t.Fatalf("step %d: Allow(%q, +%v): got %v, want %v", i, s.ip, s.at, got, s.want)
				}
			}
		})
	}
}

func TestLoginDelay(t *testing.T) {
	const (
		base = 100 * time.Millisecond
		max  = time.Second
	)
	ip := addr("192.0.2.7")
	l := limit.New(limit.Options{FailBase: base, FailMax: max, IdleTimeout: time.Hour})
	var now time.Time

	t.Run("none without failures", func(t *testing.T) {
		if d := l.LoginDelay(ip, t0); d != 0 {
			t.Errorf("got %v, want 0", d)
		}
	})
	t.Run("doubles per failure up to the cap", func(t *testing.T) {
		want := []time.Duration{base, 2 * base, 4 * base, 8 * base, max, max, max}
		now = t0
		for i, w := range want {
			l.Failed(ip, now)
			now = now.Add(time.Second)
			if d := l.LoginDelay(ip, now); d != w {
				t.Fatalf("after %d failures: got %v, want %v", i+1, d, w)
			}
		}
		for range 100 {
			l.Failed(ip, now)
		}
		if d := l.LoginDelay(ip, now); d != max {
			t.Errorf("after many failures: got %v, want %v", d, max)
		}
	})
	t.Run("mapped address shares the count", func(t *testing.T) {
		if d := l.LoginDelay(addr("::ffff:192.0.2.7"), now); d != max {
			t.Errorf("got %v, want %v", d, max)
		}
		if d := l.LoginDelay(addr("192.0.2.8"), now); d != 0 {
			t.Errorf("other source: got %v, want 0", d)
		}
	})
	t.Run("success resets", func(t *testing.T) {
		l.Succeeded(addr("::ffff:192.0.2.7"))
		if d := l.LoginDelay(ip, now); d != 0 {
			t.Errorf("got %v, want 0", d)
		}
		l.Failed(ip, now)
		if d := l.LoginDelay(ip, now); d != base {
			t.Errorf("first failure after a success: got %v, want %v", d, base)
		}
	})
	t.Run("forgotten after the idle timeout", func(t *testing.T) {
		l.Failed(ip, now)
		if d := l.LoginDelay(ip, now.Add(time.Hour-1)); d != 2*base {
			t.Errorf("just before: got %v, want %v", d, 2*base)
		}
		if d := l.LoginDelay(ip, now.Add(time.Hour)); d != 0 {
			t.Errorf("after: got %v, want 0", d)
		}
		now = now.Add(time.Hour)
		l.Failed(ip, now)
		if d := l.LoginDelay(ip, now); d != base {
			t.Errorf("next failure starts over: got %v, want %v", d, base)
		}
	})
	t.Run("invalid and unknown addresses", func(t *testing.T) {
		l.Failed(netip.Addr{}, now)
		l.Succeeded(netip.Addr{})
		l.Succeeded(addr("198.51.100.1"))
		if d := l.LoginDelay(netip.Addr{}, now); d != 0 {
			t.Errorf("got %v, want 0", d)
		}
	})
	t.Run("disabled without FailBase", func(t *testing.T) {
		l := limit.New(limit.Options{PerIPRate: 1})
		l.Failed(ip, t0)
		if d := l.LoginDelay(ip, t0); d != 0 {
			t.Errorf("got %v, want 0", d)
		}
		if n := l.Len(); n != 0 {
			t.Errorf("tracked %d sources, want 0", n)
		}
	})
}

func TestDefaults(t *testing.T) {
	ip := addr("192.0.2.1")
	failures := func(l *limit.Limiter, n int) time.Duration {
		for range n {
			l.Failed(ip, t0)
		}
		return l.LoginDelay(ip, t0)
	}
	tests := []struct {
		name string
		opts limit.Options
		n    int
		want time.Duration
	}{
		{"FailMax defaults", limit.Options{FailBase: time.Second}, 20, limit.DefaultFailMax},
		{"FailMax below FailBase", limit.Options{FailBase: time.Minute, FailMax: time.Second}, 3, time.Minute},
		{"FailBase above the default cap", limit.Options{FailBase: time.Hour}, 3, time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := failures(limit.New(tt.opts), tt.n); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("idle timeout is at least twice FailMax", func(t *testing.T) {
		l := limit.New(limit.Options{FailBase: time.Minute, FailMax: time.Hour, IdleTimeout: time.Minute})
		l.Failed(ip, t0)
		if d := l.LoginDelay(ip, t0.Add(2*time.Hour-1)); d != time.Minute {
			t.Errorf("got %v, want %v", d, time.Minute)
		}
		if d := l.LoginDelay(ip, t0.Add(2*time.Hour)); d != 0 {
			t.Errorf("got %v, want 0", d)
		}
	})
	t.Run("idle timeout defaults", func(t *testing.T) {
		l := limit.New(limit.Options{FailBase: time.Second, FailMax: time.Second})
		l.Failed(ip, t0)
		if d := l.LoginDelay(ip, t0.Add(limit.DefaultIdleTimeout-1)); d != time.Second {
			t.Errorf("got %v, want 1s", d)
		}
		if n := l.Prune(t0.Add(limit.DefaultIdleTimeout)); n != 1 {
			t.Errorf("pruned %d, want 1", n)
		}
	})
}

func TestBoundedMemory(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		name := "IPv4 flood"
		if v6 {
			name = "IPv6 flood"
		}
		t.Run(name, func(t *testing.T) {
			const maxSources = 1024 // 16 per shard
			l := limit.New(limit.Options{PerIPRate: 1, PerIPBurst: 1, FailBase: time.Second, MaxSources: maxSources})
			attacker := addr("198.51.100.9")
			l.Failed(attacker, t0)
			for i := range uint32(20_000) {
				l.Allow(nthAddr(i, v6), t0)
				l.Failed(nthAddr(i+1<<20, v6), t0)
				l.Succeeded(nthAddr(i+1<<20, v6))
			}
			if n := l.Len(); n > maxSources {
				t.Errorf("tracking %d sources, want at most %d", n, maxSources)
			}
			// Sources with failures are evicted last, so a flood does not wipe the backoff.
			if d := l.LoginDelay(attacker, t0); d != time.Second {
				t.Errorf("attacker's delay after the flood: got %v, want 1s", d)
			}
		})
	}
	t.Run("one per shard", func(t *testing.T) {
		l := limit.New(limit.Options{PerIPRate: 1, MaxSources: 1})
		for i := range uint32(10_000) {
			l.Allow(nthAddr(i, false), t0)
		}
		if n := l.Len(); n > 64 {
			t.Errorf("tracking %d sources, want at most 64", n)
		}
	})
}

func TestPrune(t *testing.T) {
	const idle = 10 * time.Minute
	l := limit.New(limit.Options{PerIPRate: 0.001, PerIPBurst: 1, FailBase: time.Second, IdleTimeout: idle})
	slow := addr("10.0.0.1")    // bucket drained at t0, full again at 1000 s
	failing := addr("10.0.0.2") // failures only, last at t0
	late := addr("10.0.0.3")    // failures only, last at 5 min
	l.Allow(slow, t0)
	l.Allow(slow, t0) // refused
	l.Failed(failing, t0)
	l.Failed(late, t0.Add(5*time.Minute))

	tests := []struct {
		name    string
		at      time.Duration
		removed int
		left    int
	}{
		{"nothing idle yet", idle - 1, 0, 3},
		{"idle failures go", idle, 1, 2},
		{"a drained bucket stays until full", 15*time.Minute - 1, 0, 2},
		{"later failures go once idle", 15 * time.Minute, 1, 1},
		{"drained bucket goes once full", 1000 * time.Second, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := l.Prune(t0.Add(tt.at)); n != tt.removed {
				t.Errorf("removed %d, want %d", n, tt.removed)
			}
			if n := l.Len(); n != tt.left {
				t.Errorf("left %d, want %d", n, tt.left)
			}
		})
	}
	t.Run("success drops a source tracked for failures only", func(t *testing.T) {
		l := limit.New(limit.Options{FailBase: time.Second})
		l.Failed(failing, t0)
		l.Succeeded(failing)
		if n := l.Len(); n != 0 {
			t.Errorf("left %d, want 0", n)
		}
	})
	t.Run("success keeps a rate-limited source", func(t *testing.T) {
		l := limit.New(limit.Options{PerIPRate: 1, FailBase: time.Second})
		l.Allow(failing, t0)
		l.Failed(failing, t0)
		l.Succeeded(failing)
		if n := l.Len(); n != 1 {
			t.Errorf("left %d, want 1", n)
		}
		if !l.Allow(failing, t0.Add(time.Second)) {
			t.Error("Allow after a success refused")
		}
	})
}

func TestConcurrent(t *testing.T) {
	const burst = 100
	// The default MaxSources holds every address used here, so no eviction refills the shared bucket.
	l := limit.New(limit.Options{PerIPRate: 1, PerIPBurst: burst, FailBase: time.Millisecond})
	shared := addr("203.0.113.1")
	var (
		wg      sync.WaitGroup
		allowed atomic.Int64
	)
	for g := range 8 {
		wg.Go(func() {
			for i := range uint32(1000) {
				if l.Allow(shared, t0) {
					allowed.Add(1)
				}
				other := nthAddr(uint32(g)<<16|i, g%2 == 0)
				l.Allow(other, t0)
				l.Failed(other, t0)
				l.LoginDelay(other, t0)
				if i%100 == 0 {
					l.Succeeded(other)
					l.Prune(t0) // at a later time it could drop the shared source and refill its bucket
					l.Len()
				}
			}
		})
	}
	wg.Wait()
	if n := allowed.Load(); n != burst {
		t.Errorf("allowed %d connections from one source at one instant, want the burst %d", n, burst)
	}
}

func TestAllowDoesNotAllocate(t *testing.T) {
	l := limit.New(limit.Options{PerIPRate: 1e9, PerIPBurst: 1e9, TotalRate: 1e9, TotalBurst: 1e9, FailBase: time.Second, IPv6Prefix: 64})
	for _, s := range []string{"192.0.2.1", "::ffff:192.0.2.1", "2001:db8::1", "fe80::1%eth0"} {
		ip := addr(s)
		l.Allow(ip, t0)
		l.Failed(ip, t0)
		t.Run(s, func(t *testing.T) {
			if n := testing.AllocsPerRun(100, func() { l.Allow(ip, t0) }); n != 0 {
				t.Errorf("Allow: %v allocations, want 0", n)
			}
			if n := testing.AllocsPerRun(100, func() { l.LoginDelay(ip, t0) }); n != 0 {
				t.Errorf("LoginDelay: %v allocations, want 0", n)
			}
		})
	}
}

func BenchmarkAllowKnown(b *testing.B) {
	l := limit.New(limit.Options{PerIPRate: 1e9, PerIPBurst: 1e9, TotalRate: 1e9, TotalBurst: 1e9})
	ip := addr("192.0.2.1")
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		l.Allow(ip, now)
	}
}

func BenchmarkAllowKnownParallel(b *testing.B) {
	l := limit.New(limit.Options{PerIPRate: 1e9, PerIPBurst: 1e9})
	var next atomic.Uint32
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ip := nthAddr(next.Add(1), false)
		for pb.Next() {
			l.Allow(ip, now)
		}
	})
}

func BenchmarkAllowNewSources(b *testing.B) {
	l := limit.New(limit.Options{PerIPRate: 1, PerIPBurst: 1, MaxSources: 4096})
	now := time.Now()
	b.ReportAllocs()
	i := uint32(0)
	for b.Loop() {
		l.Allow(nthAddr(i, true), now)
		i++
	}
}

func BenchmarkLoginDelay(b *testing.B) {
	l := limit.New(limit.Options{FailBase: time.Second})
	ip := addr("192.0.2.1")
	now := time.Now()
	l.Failed(ip, now)
	b.ReportAllocs()
	for b.Loop() {
		l.LoginDelay(ip, now)
	}
}
