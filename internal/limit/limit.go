// Package limit protects the broker's accept path and its login check from floods: a token
// bucket per source address and one for all sources bound the rate of new connections, and a
// delay that doubles with each consecutive failed login slows down password guessing.
//
// Sources are tracked in a sharded map whose size is capped, and idle sources are dropped by
// Prune, so a flood of distinct addresses costs bounded memory. Every method takes the current
// time as a parameter, which keeps the package free of clocks and its tests free of sleeps.
package limit

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Defaults for the zero values of Options.
const (
	DefaultFailMax     = 30 * time.Second // longest login delay when FailMax is zero
	DefaultMaxSources  = 65536            // sources tracked at most when MaxSources is zero (about 17 MiB at ~270 B each)
	DefaultIdleTimeout = 10 * time.Minute // time after which an idle source is forgotten when IdleTimeout is zero
)

// Options configure a Limiter. Rates are connections per second; a rate of zero (or less) means
// unlimited, and a burst of zero means the rate rounded up, at least 1.
type Options struct {
	PerIPRate  float64 // new connections per second from one source address
	PerIPBurst int     // connections one source may open at once
	TotalRate  float64 // new connections per second from all sources together
	TotalBurst int     // connections all sources may open at once

	FailBase time.Duration // login delay after the first failure, doubling with each further one; 0 disables delays
	FailMax  time.Duration // upper bound of the login delay; 0 means DefaultFailMax (or FailBase, if larger)

	MaxSources  int           // cap on tracked source addresses, rounded up to a multiple of 64; 0 means DefaultMaxSources
	IdleTimeout time.Duration // failures are forgotten this long after the last one, and a source idle this long is dropped; 0 means DefaultIdleTimeout; never less than 2×FailMax
	IPv6Prefix  int           // IPv6 sources are grouped by this prefix length (e.g. 64); 0 means 128, one address each
}

// shardCount spreads sources over independently locked maps so that accepts on several
// listeners rarely contend. A power of two, so a shard is picked by the top bits of a hash.
const (
	shardBits  = 6
	shardCount = 1 << shardBits
)

// sampleSize is how many entries a full shard looks at to choose one to evict.
const sampleSize = 8

// Limiter decides whether to accept a connection and how long to delay a login answer. It is
// safe for concurrent use.
type Limiter struct {
	perIPRate  rate.Limit // 0 when per-source limiting is off
	perIPBurst int
	total      *rate.Limiter // nil when the total rate is unlimited
	failBase   time.Duration
	failMax    time.Duration
	idle       int64 // IdleTimeout in nanoseconds
	v6Bits     int
	perShard   int // entries one shard holds at most
	seed       uint64
	shards     [shardCount]shard
}

// shard is one lock and the sources that hash to it.
type shard struct {
	mu sync.Mutex
	m  map[netip.Addr]*entry // guarded by mu
	_  [48]byte              // pads a shard to 64 bytes, so neighbouring shards' locks share no cache line
}

// entry is what the Limiter knows about one source. Guarded by its shard's mu.
type entry struct {
	lim      *rate.Limiter // per-source bucket; nil while per-source limiting is off
	lastSeen int64         // Unix nanoseconds of the last connection attempt or failure
	lastFail int64         // Unix nanoseconds of the last failed login
	failures uint32        // consecutive failed logins since the last success
}

// New returns a Limiter for opts; out-of-range values are replaced by the documented defaults.
func New(opts Options) *Limiter {
	l := &Limiter{
		failBase: max(opts.FailBase, 0),
		v6Bits:   128,
		seed:     rand.Uint64(),
	}
	if opts.PerIPRate > 0 {
		l.perIPRate = rate.Limit(opts.PerIPRate)
		l.perIPBurst = burst(opts.PerIPRate, opts.PerIPBurst)
	}
	if opts.TotalRate > 0 {
		l.total = rate.NewLimiter(rate.Limit(opts.TotalRate), burst(opts.TotalRate, opts.TotalBurst))
	}
	l.failMax = opts.FailMax
	if l.failMax <= 0 {
		l.failMax = DefaultFailMax
	}
	l.failMax = max(l.failMax, l.failBase)
	idle := opts.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	// A client waits out its delay before it can fail again; forgetting it sooner would cap
	// the backoff below FailMax.
	l.idle = int64(max(idle, 2*l.failMax))
	if opts.IPv6Prefix > 0 && opts.IPv6Prefix < 128 {
		l.v6Bits = opts.IPv6Prefix
	}
	maxSources := opts.MaxSources
	if maxSources <= 0 {
		maxSources = DefaultMaxSources
	}
	l.perShard = max(1, (maxSources+shardCount-1)/shardCount)
	for i := range l.shards {
		l.shards[i].m = make(map[netip.Addr]*entry)
	}
	return l
}

// burst is b, or the rate rounded up when b is not positive.
func burst(r float64, b int) int {
	if b > 0 {
		return b
	}
	return int(max(1, min(math.Ceil(r), math.MaxInt32)))
}

// key is the address a source is tracked under: IPv4-mapped IPv6 addresses count as their IPv4
// address, zones are dropped, and IPv6 addresses are cut to the configured prefix. It reports
// false for an invalid address (a Unix socket peer, for example), which is not tracked.
func (l *Limiter) key(ip netip.Addr) (netip.Addr, bool) {
	if !ip.IsValid() {
		return ip, false
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() && l.v6Bits < 128 {
		ip = netip.PrefixFrom(ip, l.v6Bits).Masked().Addr()
	}
	return ip, true
}

// shard picks the shard of a normalised address with a seeded multiplicative hash, so that
// nobody can aim a flood at one shard without knowing the seed.
func (l *Limiter) shard(k netip.Addr) *shard {
	b := k.As16()
	x := binary.LittleEndian.Uint64(b[:8])*0x9E3779B97F4A7C15 ^ binary.LittleEndian.Uint64(b[8:]) ^ l.seed
	x ^= x >> 31
	x *= 0xBF58476D1CE4E5B9
	return &l.shards[x>>(64-shardBits)]
}

// Allow reports whether a connection from ip may be accepted at now. It takes a token from the
// source's bucket and then one from the total bucket; a connection refused by the total bucket
// has still used its source's token, since the source did try. Connections without an IP
// address count against the total only. For a source already tracked it does not allocate.
func (l *Limiter) Allow(ip netip.Addr, now time.Time) bool {
	if l.perIPRate > 0 {
		if k, ok := l.key(ip); ok {
			s := l.shard(k)
			s.mu.Lock()
			e := l.getLocked(s, k, now)
			if e.lim == nil {
				e.lim = rate.NewLimiter(l.perIPRate, l.perIPBurst)
			}
			allowed := e.lim.AllowN(now, 1)
			s.mu.Unlock()
			if !allowed {
				return false
			}
		}
	}
	return l.total == nil || l.total.AllowN(now, 1)
}

// getLocked returns the entry of k, creating it, and evicting another when the shard is full;
// it marks the entry as seen at now. s.mu must be held.
func (l *Limiter) getLocked(s *shard, k netip.Addr, now time.Time) *entry {
	e := s.m[k]
	if e == nil {
		if len(s.m) >= l.perShard {
			l.evictLocked(s, now)
		}
		e = &entry{}
		s.m[k] = e
	}
	e.lastSeen = now.UnixNano()
	return e
}

// evictLocked removes one entry of a full shard, chosen among a few sampled (map iteration
// starts at a random place) to lose the least: a source without failures before one with,
// a full bucket (forgetting it changes nothing) before a drained one, and then the least
// recently seen. Keeping sources with failures makes it harder to wipe one's own backoff by
// flooding from other addresses (the total bucket bounds such a flood). s.mu must be held.
func (l *Limiter) evictLocked(s *shard, now time.Time) {
	var (
		victim   netip.Addr
		best     evictRank
		n        int
		haveBest bool
	)
	for k, e := range s.m {
		r := evictRank{failures: e.failures != 0, lastSeen: e.lastSeen}
		r.drained = e.lim != nil && e.lim.TokensAt(now) < float64(e.lim.Burst())
		if !haveBest || r.before(best) {
			victim, best, haveBest = k, r, true
		}
		if n++; n == sampleSize {
			break
		}
	}
	delete(s.m, victim)
}

// evictRank orders eviction candidates; see evictLocked.
type evictRank struct {
	failures, drained bool
	lastSeen          int64
}

// before reports whether r is a better victim than o.
func (r evictRank) before(o evictRank) bool {
	if r.failures != o.failures {
		return !r.failures
	}
	if r.drained != o.drained {
		return !r.drained
	}
	return r.lastSeen < o.lastSeen
}

// LoginDelay returns how long to wait before answering a CONNECT from ip at now: zero without
// recent failures, FailBase after one, doubling with each further consecutive failure up to
// FailMax. Failures are forgotten after IdleTimeout without a new one.
func (l *Limiter) LoginDelay(ip netip.Addr, now time.Time) time.Duration {
	if l.failBase == 0 {
		return 0
	}
	k, ok := l.key(ip)
	if !ok {
		return 0
	}
	s := l.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[k]
	if e == nil || e.failures == 0 || now.UnixNano()-e.lastFail >= l.idle {
		return 0
	}
	d := l.failBase
	for i := uint32(1); i < e.failures && d < l.failMax; i++ {
		d *= 2
	}
	return min(d, l.failMax)
}

// Failed records a failed login from ip at now.
func (l *Limiter) Failed(ip netip.Addr, now time.Time) {
	if l.failBase == 0 {
		return
	}
	k, ok := l.key(ip)
	if !ok {
		return
	}
	s := l.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := l.getLocked(s, k, now)
	if now.UnixNano()-e.lastFail >= l.idle {
		e.failures = 0
	}
	if e.failures < math.MaxUint32 {
		e.failures++
	}
	e.lastFail = now.UnixNano()
}

// Succeeded records a successful login from ip, which ends its run of failures.
func (l *Limiter) Succeeded(ip netip.Addr) {
	k, ok := l.key(ip)
	if !ok {
		return
	}
	s := l.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[k]
	if e == nil {
		return
	}
	e.failures = 0
	if e.lim == nil {
		// Tracked only for its failures, of which there are none now.
		delete(s.m, k)
	}
}

// Prune forgets sources idle for IdleTimeout whose buckets are full again, so forgetting them
// changes no decision, and returns how many it removed. The owner calls it from a housekeeping
// tick, e.g. once a minute; the cap on tracked sources holds without it.
func (l *Limiter) Prune(now time.Time) int {
	removed := 0
	ns := now.UnixNano()
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for k, e := range s.m {
			if ns-e.lastSeen >= l.idle && (e.lim == nil || e.lim.TokensAt(now) >= float64(e.lim.Burst())) {
				delete(s.m, k)
				removed++
			}
		}
		s.mu.Unlock()
	}
	return removed
}

// Len returns the number of tracked sources, for metrics and tests.
func (l *Limiter) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
