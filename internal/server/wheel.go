package server

import (
	"sync"
	"time"
)

const wheelSlots = 4096

// wheel is a hashed timer wheel that enforces connect timeouts and keep-alive for every connection
// with one goroutine and no timer per connection. A connection sits in the slot of the tick when
// it would expire if nothing arrived; reading a packet only stores a timestamp (conn.lastActive).
// When its slot comes round the wheel recomputes the deadline from that timestamp and either
// closes the connection or moves it to the slot of its new deadline.
type wheel struct {
	srv    *Server
	tick   int64 // ms
	start  time.Time
	stopCh chan struct{}

	mu    sync.Mutex
	slots [wheelSlots]*conn // guarded by mu
	cur   int64             // guarded by mu: the last tick processed
}

func newWheel(s *Server, tick time.Duration) *wheel {
	return &wheel{srv: s, tick: max(tick.Milliseconds(), 1), start: time.Now(), stopCh: make(chan struct{})}
}

// now returns the wheel's clock in milliseconds since it started (monotonic).
func (w *wheel) now() int64 { return time.Since(w.start).Milliseconds() }

func (w *wheel) slotFor(deadline int64) int32 {
	t := deadline / w.tick
	if t <= w.cur {
		t = w.cur + 1
	}
	return int32(t % wheelSlots)
}

// add puts c in the wheel according to its lastActive and timeout; no-op for timeout 0.
func (w *wheel) add(c *conn) {
	w.mu.Lock()
	w.addLocked(c)
	w.mu.Unlock()
}

func (w *wheel) addLocked(c *conn) {
	to := int64(c.timeout.Load())
	if to <= 0 {
		c.wslot = -1
		return
	}
	s := w.slotFor(c.lastActive.Load() + to)
	c.wslot = s
	c.wprev = nil
	c.wnext = w.slots[s]
	if c.wnext != nil {
		c.wnext.wprev = c
	}
	w.slots[s] = c
}

func (w *wheel) removeLocked(c *conn) {
	if c.wslot < 0 {
		return
	}
	if c.wprev != nil {
		c.wprev.wnext = c.wnext
	} else if w.slots[c.wslot] == c {
		w.slots[c.wslot] = c.wnext
	}
	if c.wnext != nil {
		c.wnext.wprev = c.wprev
	}
	c.wprev, c.wnext, c.wslot = nil, nil, -1
}

// remove takes c out of the wheel.
func (w *wheel) remove(c *conn) {
	w.mu.Lock()
	w.removeLocked(c)
	w.mu.Unlock()
}

// reset re-slots c after its timeout changed.
func (w *wheel) reset(c *conn) {
	w.mu.Lock()
	w.removeLocked(c)
	w.addLocked(c)
	w.mu.Unlock()
}

func (w *wheel) stop() { close(w.stopCh) }

func (w *wheel) run() {
	t := time.NewTicker(time.Duration(w.tick) * time.Millisecond)
	defer t.Stop()
	var expired, overdue []*conn
	for {
		select {
		case <-w.stopCh:
			return
		case <-t.C:
		}
		overdue = w.srv.resumeOverdue(w.now(), overdue)
		expired = w.advance(w.now(), expired[:0])
		for i, c := range expired {
			reason := errKeepAlive
			if !c.connected.Load() {
				reason = errConnectTimeout
			}
			c.close(reason)
			expired[i] = nil
		}
	}
}

// advance processes every tick up to now and appends the connections that expired.
func (w *wheel) advance(now int64, expired []*conn) []*conn {
	w.mu.Lock()
	defer w.mu.Unlock()
	target := now / w.tick
	for w.cur < target {
		w.cur++
		s := w.cur % wheelSlots
		c := w.slots[s]
		w.slots[s] = nil
		for c != nil {
			next := c.wnext
			c.wprev, c.wnext, c.wslot = nil, nil, -1
			to := int64(c.timeout.Load())
			switch {
			case to <= 0:
			case c.lastActive.Load()+to <= now:
				expired = append(expired, c)
			default:
				w.addLocked(c)
			}
			c = next
		}
	}
	return expired
}
