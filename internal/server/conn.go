package server

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/packet"
)

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

// Close reasons. Each close is logged once with its reason, at the level levelFor chooses.
var (
	errShutdown       = errors.New("server shutting down")
	errPeerClosed     = errors.New("connection closed by client")
	errDisconnect     = errors.New("client sent DISCONNECT")
	errConnectTimeout = errors.New("no CONNECT within the connect timeout")
	errKeepAlive      = errors.New("keep-alive timeout: nothing received within 1.5 times the keep-alive")
	errRefused        = errors.New("connection refused in CONNACK")
)

// protocolError marks a close caused by the client breaking the protocol (logged at warn).
type protocolError struct{ err error }

// Error implements error.
func (e protocolError) Error() string { return "protocol violation: " + e.err.Error() }

// Unwrap returns the violation itself.
func (e protocolError) Unwrap() error { return e.err }

func violation(err error) error { return protocolError{err} }

func levelFor(reason error) slog.Level {
	var pe protocolError
	switch {
	case errors.As(reason, &pe), errors.Is(reason, broker.ErrSlowConsumer):
		return slog.LevelWarn
	case errors.Is(reason, errConnectTimeout), errors.Is(reason, errKeepAlive), errors.Is(reason, broker.ErrTakenOver), errors.Is(reason, errRefused):
		return slog.LevelInfo
	}
	return slog.LevelDebug
}

// conn is one client connection, parked in an epoll instance as a raw fd.
//
// Fields marked "owner" are touched only by the goroutine that currently owns the connection: the
// event loop while busy is set, or the closer after the fd is closed. The struct is kept small
// (field order packs it into a 208-byte size class): it is most of what an idle connection costs.
type conn struct {
	loop     *loop
	listener *string // the listener's name
	ident    *string // the identity of its TLS client certificate; nil when none
	remote   netip.AddrPort
	anon     [16]byte // provisional id until CONNECT is accepted: __anon_<uuid>

	mu     sync.Mutex
	out    []byte // pending output, from outPool; nil when empty; guarded by mu
	outOff int    // bytes of out already written; guarded by mu
	reason error  // why the connection is closing; guarded by mu

	closing   atomic.Bool // close requested; the owner stops dispatching
	connected atomic.Bool // CONNECT accepted (read by the wheel to name the timeout)

	// owner
	client  *broker.Client // set once CONNECT is accepted
	partial *partial       // unfinished packet between reads; nil when none

	// keep-alive (see wheel)
	lastActive atomic.Int64 // wheel clock, ms
	wprev      *conn        // guarded by wheel.mu
	wnext      *conn        // guarded by wheel.mu
	timeout    atomic.Int32 // ms; 0 = none (1.5 x 65,535 s fits)
	wslot      int32        // guarded by wheel.mu; -1 when not in the wheel

	fd   int32
	gen  uint32 // tells this connection from a later one that reuses its fd number
	gate uint64 // guarded by mu: store sequence number the pending output waits for (see Durability)

	busy      bool // guarded by mu: an event loop is handling this connection; it re-arms the fd when done
	closed    bool // guarded by mu: the fd is closed
	scheduled bool // guarded by mu: in some Batch awaiting Flush
	wantOut   bool // guarded by mu: pending output waits for EPOLLOUT
	paused    bool // guarded by mu: reading is paused (throttled publisher)
	gated     bool // guarded by mu: in the server's list of connections waiting for the store
	graceful  bool // owner: DISCONNECT received
	version   byte // owner: protocol level from CONNECT; versionRefusing while a refusal is delayed
}

// partial is an unfinished packet kept between reads. Fields are owned by the event loop that
// owns the connection.
type partial struct {
	buf  []byte
	need int  // total length of a packet larger than the loop's read buffer; 0 otherwise
	held bool // buf holds packets held back by a throttle, to dispatch before reading more
}

// newAnonID returns a random (version 4) UUID for a provisional id. It draws from math/rand/v2,
// not crypto/rand: the id only names a connection in logs until CONNECT, it guards nothing, and
// a getrandom(2) call per accepted connection would cost more than the rest of the accept.
func newAnonID() [16]byte {
	var u [16]byte
	binary.LittleEndian.PutUint64(u[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(u[8:], rand.Uint64())
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return u
}

// provisionalID is the id a connection is tracked under before its CONNECT is accepted.
func (c *conn) provisionalID() string { return "__anon_" + uuid.UUID(c.anon).String() }

// outPool holds pending-output buffers so that an idle connection holds none.
var outPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledOut is the largest buffer returned to the pool; a busy subscriber's buffer is worth
// keeping (allocating it again is what costs), a huge one is left to the collector.
const maxPooledOut = 1 << 20

func releaseOut(b []byte) {
	if cap(b) > maxPooledOut {
		return
	}
	b = b[:0]
	outPool.Put(&b)
}

// Enqueue implements broker.Outbound.
func (c *conn) Enqueue(b []byte, droppable bool) (ok, schedule bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.closing.Load() {
		return false, false
	}
	pending := len(c.out) - c.outOff
	limit := c.loop.srv.opts.MaxPendingBytes
	if droppable && pending+len(b) > limit {
		return false, false
	}
	if pending+len(b) > 4*limit {
		// Far behind even on packets that must not be dropped: disconnect it. The caller's batch
		// flush finalizes the close, since no event may ever come from a stuck socket.
		c.requestCloseLocked(broker.ErrSlowConsumer)
		schedule = !c.scheduled
		c.scheduled = true
		return false, schedule
	}
	if c.out == nil {
		c.out = (*outPool.Get().(*[]byte))[:0]
	} else if c.outOff > 0 && len(c.out)+len(b) > cap(c.out) {
		// Reuse the written head of the buffer before growing it.
		n := copy(c.out, c.out[c.outOff:])
		c.out, c.outOff = c.out[:n], 0
	}
	c.out = append(c.out, b...)
	if d := c.loop.srv.dur; d != nil && waitsForStore(b[0]) {
		c.gate = d.Written()
	}
	if c.scheduled {
		return true, false
	}
	c.scheduled = true
	return true, true
}

// waitsForStore reports whether a packet with first byte b0 must not reach the client before the
// state changes made so far are durable:
//   - acknowledgements (CONNACK, PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK) report state the
//     client then relies on and will not send again ([MQTT-4.3.2-2], [MQTT-4.3.3-2]);
//   - PUBREL: after it the broker re-sends PUBREL, not the PUBLISH, and the subscriber forgets the
//     packet identifier once it answers PUBCOMP;
//   - a QoS 2 PUBLISH: a subscriber that received it would get it again under a new identifier if
//     the message was lost with a crash and its publisher, never acknowledged, sent it again.
//
// QoS 0 and QoS 1 deliveries do not wait: at worst a crash makes a QoS 1 message arrive twice,
// which QoS 1 allows ([MQTT-4.3.2-1] "at least once"). Not waiting keeps a subscriber's inflight
// window from being held for a commit per message. PINGRESP waits for nothing.
func waitsForStore(b0 byte) bool {
	switch packet.Type(b0 >> 4) {
	case packet.TypePublish:
		return packet.QoS(b0>>1&3) == packet.QoS2
	case packet.TypePingresp:
		return false
	}
	return true
}

// Flush implements broker.Outbound.
func (c *conn) Flush() {
	c.mu.Lock()
	c.scheduled = false
	if c.closed {
		c.mu.Unlock()
		return
	}
	err := c.writeLocked()
	if err != nil {
		c.requestCloseLocked(err)
	}
	finalize := c.finalizeIfIdleLocked()
	c.mu.Unlock()
	if finalize {
		c.afterClose()
	}
}

// writeLocked writes pending output until done or EAGAIN, then arms EPOLLOUT if needed. Output
// that waits for the store is left for Server.released.
func (c *conn) writeLocked() error {
	if c.heldLocked() {
		return nil
	}
	for c.outOff < len(c.out) {
		n, err := unix.Write(int(c.fd), c.out[c.outOff:])
		if n > 0 {
			c.outOff += n
		}
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			if !c.wantOut {
				c.wantOut = true
				if !c.busy {
					c.loop.arm(c)
				}
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
	if c.out != nil {
		releaseOut(c.out)
		c.out, c.outOff = nil, 0
	}
	c.wantOut = false
	return nil
}

// heldLocked reports whether the pending output waits for the store, and if so queues c to be
// flushed when it is durable.
func (c *conn) heldLocked() bool {
	d := c.loop.srv.dur
	if d == nil || c.outOff == len(c.out) || c.gate <= d.Durable() {
		return false
	}
	c.loop.srv.gateLocked(c)
	if c.gate <= d.Durable() {
		// The store got there while c was being listed, possibly just after Server.released took
		// the list: write now rather than wait for a later advance that may never come.
		return false
	}
	c.wantOut = false // Server.released flushes it; waiting for EPOLLOUT would spin
	return true
}

// Resume implements broker.Outbound: reading starts again after a throttle.
func (c *conn) Resume() {
	c.mu.Lock()
	was := c.paused
	if was {
		c.paused = false
		if !c.busy && !c.closed && !c.closing.Load() {
			c.loop.arm(c)
		}
	}
	c.mu.Unlock()
	if was {
		c.loop.srv.unpause(c)
		c.loop.schedule(c)
	}
}

// versionRefusing marks, in conn.version, a connection whose refusing CONNACK is delayed after a
// failed login: what it sends meanwhile is ignored. (A flag of its own would push conn into the
// next allocation size class, which every idle connection would pay for.)
const versionRefusing = 0xFF

// refuseLater answers a CONNECT whose login failed with the refusing CONNACK, after the source's
// backoff delay, and closes ([MQTT-3.2.2-5]). It runs on a timer's goroutine.
func (c *conn) refuseLater(code packet.ConnackCode) {
	enc := (&packet.Connack{ReturnCode: code}).Append(nil)
	c.Enqueue(enc, false)
	c.Flush()
	c.close(fmt.Errorf("%w: %s", errRefused, code))
}

// Close implements broker.Outbound.
func (c *conn) Close(reason error) { c.close(reason) }

// close requests the connection to close. If no event loop is handling it, it is closed at once;
// otherwise the owning loop closes it when it is done with it.
func (c *conn) close(reason error) {
	c.mu.Lock()
	c.requestCloseLocked(reason)
	finalize := c.finalizeIfIdleLocked()
	c.mu.Unlock()
	if finalize {
		c.afterClose()
	}
}

func (c *conn) requestCloseLocked(reason error) {
	if c.closed || c.closing.Load() {
		return
	}
	c.reason = reason
	c.closing.Store(true)
}

// finalizeIfIdleLocked closes the fd if a close was requested and no loop owns the connection.
// It reports whether the caller must run afterClose (after unlocking).
func (c *conn) finalizeIfIdleLocked() bool {
	if c.closed || c.busy || !c.closing.Load() {
		return false
	}
	// Best effort: a refusing CONNACK or the output queued before the close goes out if the socket
	// takes it now, unless it waits for the store (then it is not sent: the client will retry).
	for d := c.loop.srv.dur; c.outOff < len(c.out) && (d == nil || c.gate <= d.Durable()); {
		n, err := unix.Write(int(c.fd), c.out[c.outOff:])
		if err != nil || n <= 0 {
			break
		}
		c.outOff += n
	}
	if c.out != nil {
		releaseOut(c.out)
		c.out, c.outOff = nil, 0
	}
	c.closed = true
	// Remove the fd from epoll and from the table before closing it: the number is reused at once.
	_ = unix.EpollCtl(c.loop.epfd, unix.EPOLL_CTL_DEL, int(c.fd), nil) // ENOENT if never registered; nothing to undo
	c.loop.srv.conns[c.fd].CompareAndSwap(c, nil)
	unix.Close(int(c.fd))
	return true
}

// afterClose runs once, outside c.mu, after the fd was closed.
func (c *conn) afterClose() {
	s := c.loop.srv
	s.wheel.remove(c)
	s.unpause(c)
	c.partial = nil
	reason := c.reason
	if c.graceful {
		reason = errDisconnect
	}
	if c.client != nil {
		s.log.Log(s.baseCtx, levelFor(reason), "client disconnected", "client_id", c.client.ClientID(), "remote", c.remote.String(), "reason", reason.Error())
		s.broker.Disconnect(c.client, c, c.graceful)
	} else {
		s.log.Log(s.baseCtx, levelFor(reason), "connection closed before CONNECT was accepted", "conn", c.provisionalID(), "remote", c.remote.String(), "reason", reason.Error())
	}
	s.closed()
}
