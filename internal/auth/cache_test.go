package auth

import "testing"

// keys returns every key in c, expired ones included.
func (c *ttlCache[K, V]) keys() []K {
	var out []K
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		for k := range s.m {
			out = append(out, k)
		}
		s.mu.RUnlock()
	}
	return out
}

// values returns every value in c, expired ones included.
func (c *ttlCache[K, V]) values() []V {
	var out []V
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		for _, e := range s.m {
			out = append(out, e.v)
		}
		s.mu.RUnlock()
	}
	return out
}

func TestTTLCache(t *testing.T) {
	t.Run("disabled", func(t *testing.T) {
		for _, c := range []*ttlCache[string, int]{newTTLCache[string, int](0, 10), newTTLCache[string, int](10, 0)} {
			c.put(1, "a", 1, 0)
			if _, ok := c.get(1, "a", 0); ok || c.len() != 0 {
				t.Fatal("a disabled cache kept an entry")
			}
		}
	})
	t.Run("expiry", func(t *testing.T) {
		c := newTTLCache[string, int](100, 10)
		c.put(5, "a", 7, 100)
		if v, ok := c.get(5, "a", 109); !ok || v != 7 {
			t.Fatalf("get before expiry = %v, %v; want 7, true", v, ok)
		}
		if _, ok := c.get(5, "a", 110); ok {
			t.Fatal("get at expiry hit")
		}
		c.put(5, "a", 8, 110) // refresh in place
		if v, ok := c.get(5, "a", 111); !ok || v != 8 || c.len() != 1 {
			t.Fatalf("refreshed entry = %v, %v, len %d", v, ok, c.len())
		}
	})
	t.Run("bounded per shard", func(t *testing.T) {
		c := newTTLCache[int, int](cacheShards*2, 10)
		for i := range 1000 {
			c.put(uint64(i), i, i, 0)
		}
		if n := c.len(); n != cacheShards*2 {
			t.Fatalf("len = %d, want %d", n, cacheShards*2)
		}
		for i := 990; i < 1000; i++ { // the newest entries survive
			if _, ok := c.get(uint64(i), i, 0); !ok {
				t.Errorf("newest entry %d evicted", i)
			}
		}
	})
}
