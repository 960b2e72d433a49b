// Package server is the network side of IoTD: it accepts connections from any net.Listener, runs
// the CONNECT handshake, reads and writes MQTT packets, enforces connect timeouts, keep-alive and
// size limits, and turns packets into broker calls.
//
// # Connections cost almost nothing while idle
//
// After Accept the server duplicates the socket's file descriptor, closes the net.Conn (which
// returns the runtime's poll descriptor to its cache) and parks the raw, non-blocking fd in one of
// its own epoll instances with EPOLLONESHOT. An idle connection therefore holds no goroutine, no
// read buffer and no write buffer: only a small conn struct and the broker's session. When a socket
// becomes readable, the event loop that owns its epoll instance reads into the loop's shared buffer,
// decodes and dispatches every whole packet in place, keeps an unfinished tail (only then does the
// connection own bytes) and re-arms the fd. Output is appended to a per-connection pending buffer
// taken from a pool and flushed once per event batch with one write; what the socket does not take
// is written on EPOLLOUT. Keep-alive and connect timeouts are checked by one timer wheel.
//
// Only connections whose net.Conn implements syscall.Conn (TCP and Unix sockets) can be served
// this way; TLS and WebSocket transports will need a goroutine-backed path.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/limit"
)

// ErrServerClosed is returned by Serve after Shutdown was called.
var ErrServerClosed = errors.New("server: closed")

// Options configure a Server. Zero values take the defaults named on each field.
type Options struct {
	// MaxPacketSize bounds a whole packet in bytes (default 1 MiB). Larger packets close the
	// connection before their body is read.
	MaxPacketSize int
	// MaxConnections bounds open connections; 0 means only the fd limit bounds them.
	MaxConnections int
	// ConnectTimeout is the time a new connection has to send CONNECT (default 10 s).
	ConnectTimeout time.Duration
	// MaxKeepAlive is the largest keep-alive in seconds a client may ask for; 0 means no limit. A
	// client asking for more, or for 0 ("never"), while it is set gets CONNACK 0x02.
	MaxKeepAlive uint16
	// MaxPendingBytes bounds a connection's unwritten output (default 1 MiB): QoS 0 messages over
	// it are dropped, and a connection with four times as much is closed as a slow consumer.
	MaxPendingBytes int
	// Workers is the number of event loops (default GOMAXPROCS).
	Workers int
	// Tick is the resolution of the keep-alive timer wheel (default 250 ms).
	Tick time.Duration
	// Limiter, when set, applies connection rate limits per source address and in total, and
	// delays the answer to a failed login from a source by its growing backoff.
	Limiter *limit.Limiter
	// Durability, when set, holds back output that depends on stored state until the store has
	// made that state durable (see Durability). nil sends everything at once.
	Durability Durability
	// Logger receives the server's log lines; nil discards them.
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.MaxPacketSize <= 0 {
		o.MaxPacketSize = 1 << 20
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.MaxPendingBytes <= 0 {
		o.MaxPendingBytes = 1 << 20
	}
	if o.Workers <= 0 {
		o.Workers = max(1, runtimeProcs())
	}
	if o.Tick <= 0 {
		o.Tick = 250 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Durability is the view the server has of the broker's store log (*store.Log implements it).
// Changes are appended to the log before the packets that depend on them are queued; each
// appended group has a sequence number. A connection notes Written when such a packet is queued,
// and its output is written only once Durable has reached that number: an acknowledgement, a PUBREL
// or a QoS 2 PUBLISH is never seen by a client before the state it reports is stored (see
// waitsForStore for which packets wait and why the others need not).
type Durability interface {
	// Written returns the sequence number of the last appended group.
	Written() uint64
	// Durable returns the sequence number of the last durable group.
	Durable() uint64
	// OnDurable registers fn, called whenever Durable advances.
	OnDurable(fn func(durable uint64))
}

// Server serves MQTT connections for one broker. Create it with New, call Serve for each listener
// and Shutdown once to stop.
type Server struct {
	opts   Options
	broker *broker.Broker
	log    *slog.Logger

	baseCtx context.Context // passed to broker calls that may block; cancelled by Shutdown
	cancel  context.CancelFunc

	loops []*loop
	next  atomic.Uint32 // round-robin loop choice
	wheel *wheel
	conns []atomic.Pointer[conn] // indexed by fd
	open  atomic.Int64           // connections accepted and not yet closed
	gen   atomic.Uint32

	mu        sync.Mutex
	listeners map[net.Listener]struct{} // guarded by mu
	names     map[string]*string        // guarded by mu: interned listener names, shared by conns
	raw       []*rawListener            // guarded by mu: listeners served from the event loops
	closing   bool                      // guarded by mu
	drained   chan struct{}             // closed when open reaches 0 during shutdown; guarded by mu

	pmu    sync.Mutex
	paused map[*conn]int64 // guarded by pmu: throttled connections and when (wheel ms) they paused

	identities  map[string]IdentityFunc // guarded by mu: listeners whose TLS certificates name the user
	bridges     sync.WaitGroup          // bridged (TLS) connections' goroutines
	rateLimited atomic.Uint64           // connections refused by the rate limits

	dur   Durability
	gmu   sync.Mutex
	gated []*conn // guarded by gmu: connections whose output waits for the store

	wg       sync.WaitGroup // loops, wheel
	acceptWG sync.WaitGroup // Serve calls
	lastWarn atomic.Int64   // unix ms of the last rate-limited warning
}

// New creates a server for b and starts its event loops and timer wheel; Shutdown stops them.
func New(b *broker.Broker, opts Options) (*Server, error) {
	opts.setDefaults()
	s := &Server{opts: opts, broker: b, log: opts.Logger, listeners: make(map[net.Listener]struct{}), dur: opts.Durability}
	if s.dur != nil {
		s.dur.OnDurable(s.released)
	}
	s.baseCtx, s.cancel = context.WithCancel(context.Background())
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return nil, fmt.Errorf("server: read fd limit: %w", err)
	}
	if lim.Cur < lim.Max {
		// The broker wants every descriptor it may have; raising the soft limit to the hard one is
		// what Go itself does for os/exec-free programs since 1.19, so this is normally a no-op.
		lim.Cur = lim.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &lim) // best effort: the table below follows the actual limit
		_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	}
	size := min(max(lim.Cur, 1024), 1<<22)
	s.conns = make([]atomic.Pointer[conn], size)
	for i := 0; i < opts.Workers; i++ {
		l, err := newLoop(s)
		if err != nil {
			for _, l := range s.loops {
				l.closeFDs()
			}
			return nil, err
		}
		s.loops = append(s.loops, l)
	}
	s.wheel = newWheel(s, opts.Tick)
	for _, l := range s.loops {
		s.goFunc(l.run)
	}
	s.goFunc(s.wheel.run)
	return s, nil
}

// goFunc runs f in a goroutine that the server waits for in Shutdown.
func (s *Server) goFunc(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// Serve accepts connections on l until l is closed or Shutdown is called. name labels the
// listener in logs and in the auth.Client of its connections. It returns ErrServerClosed after
// Shutdown, or the error that stopped Accept.
func (s *Server) Serve(l net.Listener, name string) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.acceptWG.Add(1)
	s.mu.Unlock()
	defer s.acceptWG.Done()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()

	if sc, ok := l.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			if ls, err := s.newRawListener(raw, name); err == nil {
				return s.serveRaw(ls)
			}
		}
	}
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.isClosing() {
				return ErrServerClosed
			}
			if !s.backoff(&backoff, err, name) {
				if s.isClosing() { // Shutdown interrupted the backoff
					return ErrServerClosed
				}
				return fmt.Errorf("server: accept on %s: %w", name, err)
			}
			continue
		}
		backoff = 0
		s.accept(nc, name)
	}
}

// rawListener is a listening socket served from an event loop: its descriptor (a dup of the
// net.Listener's) sits in the first loop's epoll, level-triggered, and the loop accepts with
// accept4(2) when it is readable. No net.Conn, address objects or runtime poll descriptor are made
// per connection, which keeps both the accept rate up and the garbage (so the heap) down.
type rawListener struct {
	name string
	fd   int
	id   int32      // epoll data: listenerFD(id)
	errs chan error // accept errors the loop cannot handle, for Serve to act on
	loop *loop      // the loop whose epoll holds fd

	mu     sync.Mutex // held while fd is used, so that Serve never closes it under the loop
	closed bool       // guarded by mu
}

// listenerFD maps a listener id to the epoll data value that marks it (below wakeFD).
func listenerFD(id int32) int32 { return wakeFD - 1 - id }

func (s *Server) newRawListener(raw syscall.RawConn, name string) (*rawListener, error) {
	fd := -1
	var err error
	if cerr := raw.Control(func(f uintptr) { fd, err = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); cerr != nil {
		return nil, cerr
	}
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	ls := &rawListener{name: name, fd: fd, id: int32(len(s.raw)), errs: make(chan error, 1), loop: s.loops[0]}
	s.raw = append(s.raw, ls)
	s.mu.Unlock()
	if err := ls.arm(unix.EPOLL_CTL_ADD); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return ls, nil
}

func (ls *rawListener) arm(op int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: listenerFD(ls.id)}
	return unix.EpollCtl(ls.loop.epfd, op, ls.fd, &ev)
}

// rawListenerByID returns the listener marked by epoll data fd, or nil.
func (s *Server) rawListenerByID(fd int32) *rawListener {
	id := wakeFD - 1 - fd
	s.mu.Lock()
	defer s.mu.Unlock()
	if id < 0 || int(id) >= len(s.raw) {
		return nil
	}
	return s.raw[id]
}

// acceptReady accepts up to a batch of connections from a readable listener (on its loop).
func (s *Server) acceptReady(ls *rawListener) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for i := 0; i < 256 && !ls.closed; i++ {
		fd, sa, err := unix.Accept4(ls.fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch err {
		case nil:
		case unix.EAGAIN:
			return
		case unix.EINTR, unix.ECONNABORTED:
			continue
		default:
			// Stop watching the listener (level-triggered, it would spin) and let Serve decide.
			_ = unix.EpollCtl(ls.loop.epfd, unix.EPOLL_CTL_DEL, ls.fd, nil) // Serve re-adds it after its backoff
			select {
			case ls.errs <- err:
			default:
			}
			return
		}
		remote := sockaddrAddrPort(sa)
		if remote.IsValid() {
			// Go's net package sets TCP_NODELAY on every TCP connection; so does IoTD: MQTT packets
			// are small and latency matters more than segment count.
			_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1) // best effort, as in net
		}
		s.acceptFD(fd, remote, ls.name, nil, false)
	}
}

// serveRaw waits while a loop accepts for ls, backing off after transient accept errors.
func (s *Server) serveRaw(ls *rawListener) error {
	defer func() {
		ls.mu.Lock()
		ls.closed = true
		_ = unix.EpollCtl(ls.loop.epfd, unix.EPOLL_CTL_DEL, ls.fd, nil) // ENOENT if an error removed it already
		unix.Close(ls.fd)
		ls.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		select {
		case <-s.baseCtx.Done():
			return ErrServerClosed
		case err := <-ls.errs:
			if !s.backoff(&backoff, err, ls.name) {
				if s.isClosing() {
					return ErrServerClosed
				}
				return fmt.Errorf("server: accept on %s: %w", ls.name, err)
			}
			if err := ls.arm(unix.EPOLL_CTL_ADD); err != nil {
				return fmt.Errorf("server: accept on %s: %w", ls.name, err)
			}
		}
	}
}

// backoff sleeps after a transient accept error (out of descriptors, a timeout), 5 ms doubling to
// 1 s as net/http does, instead of spinning. It reports false for a permanent error or Shutdown.
func (s *Server) backoff(d *time.Duration, err error, name string) bool {
	var ne net.Error
	if !(errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)) {
		return false
	}
	*d = min(max(*d*2, 5*time.Millisecond), time.Second)
	s.warnRateLimited("accept failed; backing off", "listener", name, "error", err, "backoff", *d)
	return s.sleep(*d)
}

func sockaddrAddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// sleep waits d or until Shutdown; it reports whether the server is still running.
func (s *Server) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.baseCtx.Done():
		return false
	}
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// warnRateLimited logs at warn level at most once a second, for conditions a hostile peer can
// trigger at will (connection floods).
func (s *Server) warnRateLimited(msg string, args ...any) {
	now := time.Now().UnixMilli()
	last := s.lastWarn.Load()
	if now-last < 1000 || !s.lastWarn.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn(msg, args...)
}

// accept turns a net.Conn from a listener without a descriptor of its own into a parked fd, or
// bridges it (TLS) when it has none.
func (s *Server) accept(nc net.Conn, listener string) {
	var remote netip.AddrPort
	if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		remote = ta.AddrPort()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		s.bridge(nc, remote, listener)
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		nc.Close()
		s.log.Error("connection refused", "listener", listener, "error", err)
		return
	}
	fd := -1
	cerr := raw.Control(func(f uintptr) {
		fd, err = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0)
	})
	// The dup shares the open file description (non-blocking already); closing the net.Conn frees
	// the runtime's poll descriptor so that an idle connection holds none.
	nc.Close()
	if cerr != nil || err != nil {
		s.warnRateLimited("connection refused: dup failed", "listener", listener, "error", errors.Join(cerr, err))
		return
	}
	s.acceptFD(fd, remote, listener, nil, false)
}

// allow applies the connection rate limits to a new connection from remote.
func (s *Server) allow(remote netip.AddrPort, listener string) bool {
	lim := s.opts.Limiter
	if lim == nil || lim.Allow(remote.Addr(), time.Now()) {
		return true
	}
	s.rateLimited.Add(1)
	s.warnRateLimited("connection refused: connection rate limit", "listener", listener, "remote", remote.String())
	return false
}

// acceptFD registers a new connection's non-blocking fd, or closes it when over a limit. ident is
// the identity from its TLS certificate, if any; checked is true when the rate limits were applied
// already (before a TLS handshake). It reports whether the connection was registered.
func (s *Server) acceptFD(fd int, remote netip.AddrPort, listener string, ident *string, checked bool) bool {
	if max := s.opts.MaxConnections; max > 0 && s.open.Load() >= int64(max) {
		unix.Close(fd)
		s.warnRateLimited("connection refused: max_connections reached", "listener", listener, "remote", remote.String(), "limit", max)
		return false
	}
	if fd >= len(s.conns) {
		unix.Close(fd)
		s.warnRateLimited("connection refused: descriptor beyond the server's table", "fd", fd)
		return false
	}
	if !checked && !s.allow(remote, listener) {
		unix.Close(fd)
		return false
	}
	c := &conn{fd: int32(fd), gen: s.gen.Add(1), listener: s.listenerName(listener), remote: remote, ident: ident}
	c.anon = newAnonID()
	c.loop = s.loops[int(s.next.Add(1))%len(s.loops)]
	c.lastActive.Store(s.wheel.now())
	c.timeout.Store(int32(min(s.opts.ConnectTimeout.Milliseconds(), 1<<31-1)))
	s.open.Add(1)
	s.conns[fd].Store(c)
	s.wheel.add(c)
	if err := c.loop.register(c); err != nil {
		s.log.Error("connection refused: epoll register", "error", err)
		c.close(err)
		return true // registered, and closed like any connection
	}
	if s.log.Enabled(s.baseCtx, slog.LevelDebug) { // the arguments cost allocations
		s.log.Debug("connection accepted", "conn", c.provisionalID(), "listener", listener, "remote", remote.String())
	}
	return true
}

// listenerName returns the interned copy of name, so that connections share one string.
func (s *Server) listenerName(name string) *string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.names[name]; ok {
		return p
	}
	if s.names == nil {
		s.names = make(map[string]*string)
	}
	p := &name
	s.names[name] = p
	return p
}

// lookup returns the live connection with the given fd and generation, or nil.
func (s *Server) lookup(fd int32, gen uint32) *conn {
	if fd < 0 || int(fd) >= len(s.conns) {
		return nil
	}
	c := s.conns[fd].Load()
	if c == nil || c.gen != gen {
		return nil
	}
	return c
}

// closed is called once per connection after its fd was closed.
func (s *Server) closed() {
	if s.open.Add(-1) == 0 {
		s.mu.Lock()
		if s.drained != nil {
			close(s.drained)
			s.drained = nil
		}
		s.mu.Unlock()
	}
}

// maxPause bounds how long a throttled publisher waits for a subscriber to drain.
const maxPause = 500 // ms

func (s *Server) pause(c *conn) {
	s.pmu.Lock()
	if s.paused == nil {
		s.paused = make(map[*conn]int64)
	}
	s.paused[c] = s.wheel.now()
	s.pmu.Unlock()
}

func (s *Server) unpause(c *conn) {
	s.pmu.Lock()
	delete(s.paused, c)
	s.pmu.Unlock()
}

// resumeOverdue resumes connections paused for longer than maxPause (called by the wheel).
func (s *Server) resumeOverdue(now int64, buf []*conn) []*conn {
	s.pmu.Lock()
	for c, at := range s.paused {
		if now-at >= maxPause {
			buf = append(buf, c)
		}
	}
	s.pmu.Unlock()
	for i, c := range buf {
		c.Resume()
		buf[i] = nil
	}
	return buf[:0]
}

// Stats is a snapshot of the server's connection counters.
type Stats struct {
	Open        int64  // connections accepted and not yet closed, CONNECT received or not
	RateLimited uint64 // connections refused by the connection rate limits
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	return Stats{Open: s.open.Load(), RateLimited: s.rateLimited.Load()}
}

// Shutdown stops the server gracefully: it closes the listeners, closes every connection (their
// wills are published, as for any close other than DISCONNECT), waits until they are gone, then
// stops the event loops and the timer wheel and waits for every goroutine it started. It returns
// ctx.Err() if ctx ends first; the goroutines are still told to stop.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.closing = true
	drained := make(chan struct{})
	s.drained = drained
	for l := range s.listeners {
		l.Close()
	}
	s.mu.Unlock()
	s.cancel()
	s.acceptWG.Wait()

	if s.open.Load() == 0 {
		s.mu.Lock()
		if s.drained != nil {
			close(s.drained)
			s.drained = nil
		}
		s.mu.Unlock()
	}
	for i := range s.conns {
		if c := s.conns[i].Load(); c != nil {
			c.close(errShutdown)
		}
	}
	var err error
	select {
	case <-drained:
	case <-ctx.Done():
		err = ctx.Err()
	}
	for _, l := range s.loops {
		l.stop()
	}
	s.wheel.stop()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		s.bridges.Wait()
		close(done)
	}()
	select {
	case <-done:
		for _, l := range s.loops {
			l.closeFDs()
		}
	case <-ctx.Done():
		err = ctx.Err()
	}
	return err
}

// gate queues c to be flushed once the store is durable up to c.gate. c.mu is held.
func (s *Server) gateLocked(c *conn) {
	if c.gated {
		return
	}
	c.gated = true
	s.gmu.Lock()
	s.gated = append(s.gated, c)
	s.gmu.Unlock()
}

// released flushes the connections whose output waited for the store; it runs on the store's
// committer goroutine each time the store's durable sequence number advances.
func (s *Server) released(durable uint64) {
	s.gmu.Lock()
	list := s.gated
	s.gated = nil
	s.gmu.Unlock()
	for i, c := range list {
		c.mu.Lock()
		c.gated = false
		c.mu.Unlock()
		c.Flush() // re-gates itself if more output arrived for a later group
		list[i] = nil
	}
}
