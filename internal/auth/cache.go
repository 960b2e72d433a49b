package auth

import "sync"

// cacheShards is the number of independently locked parts of a cache. Deliveries check the ACL
// from several event loops at once; spreading keys over shards keeps them from contending on one
// lock word.
const cacheShards = 32

// cacheEntry is a cached value and the time (nanoseconds on the File's clock) it stops counting.
type cacheEntry[V any] struct {
	v       V
	expires int64
}

type cacheShard[K comparable, V any] struct {
	mu sync.RWMutex
	m  map[K]cacheEntry[V] // guarded by mu
	_  [64]byte            // keeps neighbouring shards' locks off one cache line
}

// ttlCache is a bounded map whose entries expire. A hit takes a read lock and allocates nothing.
// When a shard is full, inserting removes an arbitrary entry (Go's map iteration order is random),
// which is cheap and good enough for a cache of pure functions of the loaded files: a wrong
// eviction costs one recomputation. The caller picks the shard with a hash of the key so that the
// cache needs no hash function of its own.
type ttlCache[K comparable, V any] struct {
	shards   [cacheShards]cacheShard[K, V]
	perShard int
	ttl      int64
}

// newTTLCache returns a cache of about size entries kept for ttl nanoseconds, or nil (a cache
// that keeps nothing) when size or ttl is not positive.
func newTTLCache[K comparable, V any](size int, ttl int64) *ttlCache[K, V] {
	if size <= 0 || ttl <= 0 {
		return nil
	}
	c := &ttlCache[K, V]{perShard: max(1, (size+cacheShards-1)/cacheShards), ttl: ttl}
	for i := range c.shards {
		c.shards[i].m = make(map[K]cacheEntry[V])
	}
	return c
}

// get returns the value cached for k if it has not expired at now.
func (c *ttlCache[K, V]) get(h uint64, k K, now int64) (V, bool) {
	if c == nil {
		var zero V
		return zero, false
	}
	s := &c.shards[h%cacheShards]
	s.mu.RLock()
	e, ok := s.m[k]
	s.mu.RUnlock()
	if !ok || now >= e.expires {
		var zero V
		return zero, false
	}
	return e.v, true
}

// put caches v for k from now until now plus the TTL.
func (c *ttlCache[K, V]) put(h uint64, k K, v V, now int64) {
	if c == nil {
		return
	}
	s := &c.shards[h%cacheShards]
	s.mu.Lock()
	if _, ok := s.m[k]; !ok && len(s.m) >= c.perShard {
		for old := range s.m {
			delete(s.m, old)
			break
		}
	}
	s.m[k] = cacheEntry[V]{v: v, expires: now + c.ttl}
	s.mu.Unlock()
}

// len returns the number of entries, expired ones included.
func (c *ttlCache[K, V]) len() int {
	if c == nil {
		return 0
	}
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
