package server

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/packet"
)

const (
	readBufSize = 64 << 10
	maxEvents   = 256
	wakeFD      = -1 // epoll data marking the loop's own eventfd
)

// loop is one event loop: an epoll instance and the goroutine that waits on it. Connections are
// spread over the loops round-robin; each loop reads, decodes and dispatches inline, so that the
// read buffer, the decode scratch and the fan-out batch are per loop and never per connection.
type loop struct {
	srv    *Server
	epfd   int
	wakefd int
	stopCh chan struct{}

	events [maxEvents]unix.EpollEvent
	buf    []byte
	batch  broker.Batch
	pub    packet.Publish
	scr    []byte // encoding scratch for acks

	readyMu sync.Mutex
	ready   []*conn // guarded by readyMu: resumed connections to handle (see schedule)
	spare   []*conn // owned by the loop goroutine: the other buffer of ready
}

func newLoop(s *Server) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("server: epoll_create1: %w", err)
	}
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("server: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeFD}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wfd)
		return nil, fmt.Errorf("server: epoll_ctl eventfd: %w", err)
	}
	return &loop{srv: s, epfd: epfd, wakefd: wfd, stopCh: make(chan struct{}), buf: make([]byte, readBufSize)}, nil
}

func (l *loop) closeFDs() {
	unix.Close(l.epfd)
	unix.Close(l.wakefd)
}

// stop asks the loop goroutine to return.
func (l *loop) stop() {
	close(l.stopCh)
	var one = [8]byte{1}
	_, _ = unix.Write(l.wakefd, one[:]) // EAGAIN only if the counter is already non-zero: awake anyway
}

func (l *loop) stopped() bool {
	select {
	case <-l.stopCh:
		return true
	default:
		return false
	}
}

const readEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR

// register adds a new connection's fd to the loop's epoll, armed for reading.
func (l *loop) register(c *conn) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: c.fd, Pad: int32(c.gen)}
	return unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, int(c.fd), &ev)
}

// arm re-arms c's one-shot registration: for reading unless c is paused, for writing when output
// is waiting. With neither, the registration stays disarmed until Resume. c.mu must be held.
func (l *loop) arm(c *conn) {
	ev := unix.EpollEvent{Events: unix.EPOLLONESHOT, Fd: c.fd, Pad: int32(c.gen)}
	if !c.paused {
		ev.Events |= unix.EPOLLIN | unix.EPOLLRDHUP
	}
	if c.wantOut {
		ev.Events |= unix.EPOLLOUT
	}
	if ev.Events == unix.EPOLLONESHOT {
		return
	}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, int(c.fd), &ev); err != nil {
		c.requestCloseLocked(fmt.Errorf("epoll re-arm: %w", err))
	}
}

func (l *loop) run() {
	for {
		n, err := unix.EpollWait(l.epfd, l.events[:], -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			l.srv.log.Error("epoll_wait failed; event loop stops", "error", err)
			return
		}
		for i := 0; i < n; i++ {
			ev := &l.events[i]
			if ev.Fd == wakeFD {
				var b [8]byte
				_, _ = unix.Read(l.wakefd, b[:]) // reset the counter; nothing else to do with it
				continue
			}
			if ev.Fd < wakeFD {
				if ls := l.srv.rawListenerByID(ev.Fd); ls != nil {
					l.srv.acceptReady(ls)
				}
				continue
			}
			if c := l.srv.lookup(ev.Fd, uint32(ev.Pad)); c != nil {
				l.handle(c, ev.Events)
			}
		}
		l.runReady()
		l.batch.Flush()
		if l.stopped() {
			return
		}
	}
}

// handle serves one readiness event of c.
func (l *loop) handle(c *conn, events uint32) {
	c.mu.Lock()
	if c.closed || c.busy {
		// A concurrent re-arm delivered a second event while another loop owns c; that loop
		// re-arms when done and level-triggered readiness reports again.
		c.mu.Unlock()
		return
	}
	c.busy = true
	if events&unix.EPOLLOUT != 0 && !c.closing.Load() {
		if err := c.writeLocked(); err != nil {
			c.requestCloseLocked(err)
		}
	}
	c.mu.Unlock()

	if events&readEvents != 0 {
		for !c.closing.Load() {
			l.read(c)
			if l.batch.Congested() && l.throttle(c) {
				break // paused: the rest waits for Resume
			}
			if c.partial == nil || !c.partial.held {
				break
			}
			// Held back packets and no pause after all: go on with them.
		}
	}

	c.mu.Lock()
	c.busy = false
	if !c.closing.Load() {
		l.arm(c)
	}
	finalize := c.finalizeIfIdleLocked()
	c.mu.Unlock()
	if finalize {
		c.afterClose()
	}
}

// throttle pauses reading from c, a publisher whose messages just filled the queue of a
// subscriber that is alive but slower (the broker's Batch says which), until that subscriber
// drains (broker calls Resume) or maxPause passes (the wheel calls Resume). Rather than
// overflowing the subscriber's queue and dropping QoS 1/2 messages, the publisher is slowed to
// the subscriber's pace; a stuck subscriber never causes a pause (the broker checks), so it
// cannot block publishers.
func (l *loop) throttle(c *conn) (paused bool) {
	if c.client == nil {
		l.batch.ClearCongested()
		return false
	}
	c.mu.Lock()
	c.paused = true // before registering: a Resume that comes at once must find it set
	c.mu.Unlock()
	if l.srv.broker.Throttle(c.client, c, &l.batch) {
		l.srv.pause(c)
		c.mu.Lock()
		paused = c.paused // false if a Resume came already
		c.mu.Unlock()
		return paused
	}
	c.mu.Lock()
	c.paused = false
	c.mu.Unlock()
	return false
}

// schedule makes the loop handle c as if it were readable: after a Resume, so that packets held
// back by the throttle are dispatched even if the socket has nothing new.
func (l *loop) schedule(c *conn) {
	l.readyMu.Lock()
	l.ready = append(l.ready, c)
	l.readyMu.Unlock()
	var one = [8]byte{1}
	_, _ = unix.Write(l.wakefd, one[:]) // EAGAIN only if the counter is already non-zero: awake anyway
}

// runReady handles the connections scheduled since the last call.
func (l *loop) runReady() {
	l.readyMu.Lock()
	ready := l.ready
	l.ready = l.spare[:0]
	l.readyMu.Unlock()
	for i, c := range ready {
		l.handle(c, unix.EPOLLIN)
		ready[i] = nil
	}
	l.spare = ready[:0]
}

// read reads what the socket has (one read) and dispatches every whole packet. Packets held back
// by a throttle are dispatched first, without reading.
func (l *loop) read(c *conn) {
	if p := c.partial; p != nil && p.held {
		c.partial = nil
		rest, held := l.process(c, p.buf)
		l.keep(c, rest, held)
		return
	}
	if c.partial != nil && c.partial.need > 0 {
		l.readLarge(c)
		return
	}
	n0 := 0
	if c.partial != nil {
		n0 = copy(l.buf, c.partial.buf)
	}
	n, err := unix.Read(int(c.fd), l.buf[n0:])
	if err != nil || n == 0 {
		l.readFailed(c, n, err)
		return
	}
	l.touch(c)
	c.partial = nil
	rest, held := l.process(c, l.buf[:n0+n])
	l.keep(c, rest, held)
}

// keep stores what process left: whole packets held back by a throttle, or an unfinished packet.
// rest may alias the loop's buffer; what is kept is copied.
func (l *loop) keep(c *conn, rest []byte, held bool) {
	if len(rest) == 0 || c.closing.Load() {
		return
	}
	if held {
		c.partial = &partial{buf: append([]byte(nil), rest...), held: true}
		return
	}
	// Keep the unfinished tail. A packet larger than the loop buffer gets its own buffer that grows
	// as its bytes arrive, so a client announcing a big packet and stalling holds little.
	h, hn, err := packet.ParseFixedHeader(rest, l.srv.opts.MaxPacketSize)
	if err == nil && hn+h.RemainingLength > len(l.buf) {
		need := hn + h.RemainingLength
		buf := make([]byte, len(rest), min(need, max(2*len(rest), 4096)))
		copy(buf, rest)
		c.partial = &partial{buf: buf, need: need}
		return
	}
	c.partial = &partial{buf: append([]byte(nil), rest...)}
}

// readLarge continues a packet larger than the loop buffer, reading into its own buffer.
func (l *loop) readLarge(c *conn) {
	p := c.partial
	if len(p.buf) == cap(p.buf) {
		nb := make([]byte, len(p.buf), min(p.need, 2*cap(p.buf)))
		copy(nb, p.buf)
		p.buf = nb
	}
	n, err := unix.Read(int(c.fd), p.buf[len(p.buf):cap(p.buf)])
	if err != nil || n == 0 {
		l.readFailed(c, n, err)
		return
	}
	l.touch(c)
	p.buf = p.buf[:len(p.buf)+n]
	if len(p.buf) < p.need {
		return
	}
	c.partial = nil
	l.process(c, p.buf) // exactly one packet: nothing is left
}

func (l *loop) readFailed(c *conn, n int, err error) {
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		// Spurious wake-up; nothing to read yet.
	case err == nil && n == 0:
		c.close(errPeerClosed)
	default:
		c.close(fmt.Errorf("read: %w", err))
	}
}

// touch records activity for keep-alive ([MQTT-3.1.2-24]). Before CONNECT the connect timeout
// counts from accept, so trickling bytes does not extend it.
func (l *loop) touch(c *conn) {
	if c.client != nil {
		c.lastActive.Store(l.srv.wheel.now())
	}
}

// process dispatches every whole packet in b and returns the unfinished tail. It stops early,
// returning the rest with held set, when a delivery found a congested subscriber: the caller then
// throttles the connection before dispatching more.
func (l *loop) process(c *conn, b []byte) (rest []byte, held bool) {
	max := l.srv.opts.MaxPacketSize
	for len(b) > 0 && !c.closing.Load() {
		h, body, n, err := packet.Frame(b, max)
		if err == packet.ErrIncomplete {
			return b, false
		}
		if err != nil {
			if errors.Is(err, packet.ErrTooLarge) {
				c.close(violation(fmt.Errorf("packet larger than max_packet_size %d: %w", max, err)))
			} else {
				c.close(violation(err))
			}
			return nil, false
		}
		l.dispatch(c, h, body)
		b = b[n:]
		if len(b) > 0 && l.batch.Congested() {
			return b, true
		}
	}
	return nil, false
}
