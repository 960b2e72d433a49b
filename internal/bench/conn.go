package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"
)

// ConnSet is a set of idle connections opened by OpenConns. Its methods are safe for use by one
// goroutine at a time.
type ConnSet struct {
	r       *run
	o       ConnOptions
	clients []*client

	pingStop chan struct{}
	pingWG   sync.WaitGroup
	stopProg func()
	closed   bool
}

// OpenConns opens o.Count connections (CONNECT with clean session, the configured keep-alive)
// and keeps them open, pinging them when the keep-alive requires it, until Close. Failed attempts
// are counted in the summary, not returned: the error reports invalid options only.
func OpenConns(ctx context.Context, o ConnOptions) (*ConnSet, error) {
	o.Target.setDefaults()
	if o.Count == 0 {
		o.Count = 1
	}
	errs := []error{o.Target.validate()}
	if o.Count < 0 {
		errs = append(errs, fmt.Errorf("connections %d: negative", o.Count))
	}
	if o.Hold < 0 {
		errs = append(errs, fmt.Errorf("hold %v: negative", o.Hold))
	}
	if err := joinValid(errs...); err != nil {
		return nil, err
	}
	if o.Hold == 0 {
		o.Hold = DefaultDuration
	}
	r := newRun(ctx, "conn", o.Target, o.Count)
	s := &ConnSet{r: r, o: o, pingStop: make(chan struct{})}
	var last int64
	s.stopProg = r.progress(func(elapsed time.Duration, dt float64) string {
		n := r.connected.Load()
		line := fmt.Sprintf("[%6.1fs] conns %d/%d (%s/s)  failed %d  errors %d", elapsed.Seconds(), n, o.Count,
			human(float64(n-last)/dt), r.failed.Load(), r.errs.n.Load())
		last = n
		return line
	})
	// The read buffer only serves the handshake; it is dropped afterwards so that an idle
	// connection costs the generator as little as possible.
	s.clients = r.openAll(ctx, o.Count, "c", 64, nil)
	for _, c := range s.clients {
		if c != nil {
			c.fr = frameReader{}
		}
	}
	s.pingWG.Add(1)
	go func() { defer s.pingWG.Done(); r.pingLoop(s.clients, s.pingStop) }()
	return s, nil
}

// Connected returns the number of connections that were opened.
func (s *ConnSet) Connected() int { return int(s.r.connected.Load()) }

// Alive returns the number of open connections the broker has not closed, checked without
// blocking (a zero-length read or reset on a peek means closed).
func (s *ConnSet) Alive() int {
	n := 0
	for _, c := range s.clients {
		if c != nil && alive(c) {
			n++
		}
	}
	return n
}

// Close checks which connections the broker closed, closes them all and returns the summary of
// the run. Calling it again returns the summary without doing anything else.
func (s *ConnSet) Close() *Summary {
	sum := &Summary{Mode: "conn", Addr: s.r.t.Addr}
	if !s.closed {
		s.closed = true
		close(s.pingStop)
		s.pingWG.Wait()
		for _, c := range s.clients {
			if c != nil && !alive(c) {
				sum.Connections.ClosedByBroker++
				s.r.errs.add(fmt.Errorf("%s: connection closed by the broker", c.id))
			}
		}
		for _, c := range s.clients {
			if c != nil {
				c.close()
			}
		}
		s.stopProg()
		s.r.stopAbortWatch()
	}
	closedByBroker := sum.Connections.ClosedByBroker
	s.r.account(sum, load{}, nil, nil, s.r.started)
	sum.Connections.ClosedByBroker = closedByBroker
	return sum
}

// RunConn opens o.Count connections, holds them for o.Hold (or until ctx ends) and closes them.
func RunConn(ctx context.Context, o ConnOptions) (*Summary, error) {
	s, err := OpenConns(ctx, o)
	if err != nil {
		return nil, err
	}
	timer := time.NewTimer(s.o.Hold)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-s.r.abort:
	}
	return s.Close(), nil
}

// alive peeks at c's socket without blocking: closed if the peer sent FIN (a read of 0 bytes)
// or reset it; open if there is nothing to read or there are bytes waiting (PINGRESPs).
func alive(c *client) bool {
	sc, ok := c.nc.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	open := true
	var b [1]byte
	err = raw.Read(func(fd uintptr) bool {
		n, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case rerr == nil:
			open = n > 0
		case errors.Is(rerr, syscall.EAGAIN):
		default:
			open = false
		}
		return true // never wait for readability
	})
	return open && err == nil
}
