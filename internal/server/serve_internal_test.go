package server

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/iotd/iotd/internal/broker"
)

// fakeListener hands out the conns and errors it is given, then blocks until closed.
type fakeListener struct {
	mu     sync.Mutex
	items  []any // net.Conn or error
	closed chan struct{}
	once   sync.Once
}

func newFakeListener(items ...any) *fakeListener {
	return &fakeListener{items: items, closed: make(chan struct{})}
}

func (l *fakeListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if len(l.items) > 0 {
		it := l.items[0]
		l.items = l.items[1:]
		l.mu.Unlock()
		if err, ok := it.(error); ok {
			return nil, err
		}
		return it.(net.Conn), nil
	}
	l.mu.Unlock()
	<-l.closed
	return nil, net.ErrClosed
}

func (l *fakeListener) Close() error   { l.once.Do(func() { close(l.closed) }); return nil }
func (l *fakeListener) Addr() net.Addr { return &net.TCPAddr{} }

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "temporary" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTestServer(t *testing.T) (*Server, *syncBuffer) {
	t.Helper()
	var logs syncBuffer
	log := slogText(&logs)
	s, err := New(broker.New(broker.Options{Logger: log}), Options{Logger: log, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	return s, &logs
}

func shutdown(t *testing.T, s *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

func waitLog(t *testing.T, logs *syncBuffer, part string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), part) {
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q:\n%s", part, logs)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestServeTransports(t *testing.T) {
	s, logs := newTestServer(t)
	defer shutdown(t, s)
	a, b := net.Pipe()
	defer b.Close()
	ln := newFakeListener(a, timeoutErr{}, errors.New("listener broke"))
	err := s.Serve(ln, "fake")
	if err == nil || !strings.Contains(err.Error(), "listener broke") {
		t.Fatalf("Serve: got %v, want the permanent accept error", err)
	}
	waitLog(t, logs, "accept failed; backing off")
	// A connection without a descriptor (net.Pipe here, TLS in practice) is bridged into the event
	// loops and served like any other.
	b.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := b.Write([]byte{0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, 0}); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(b, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK over the bridge: % x, %v", ack, err)
	}
	b.Close()
	waitLog(t, logs, "client disconnected")
}

func TestServeStopsDuringBackoff(t *testing.T) {
	s, _ := newTestServer(t)
	ln := newFakeListener(timeoutErr{}, timeoutErr{}, timeoutErr{}, timeoutErr{}, timeoutErr{}, timeoutErr{}, timeoutErr{}, timeoutErr{}, timeoutErr{}, timeoutErr{})
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln, "fake") }()
	shutdown(t, s)
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
}

func TestCloseReasons(t *testing.T) {
	v := violation(errConnectTimeout)
	if !errors.Is(v, errConnectTimeout) || !strings.HasPrefix(v.Error(), "protocol violation: ") {
		t.Fatalf("violation: %v", v)
	}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{v, "WARN"}, {broker.ErrSlowConsumer, "WARN"}, {errKeepAlive, "INFO"}, {broker.ErrTakenOver, "INFO"},
		{errPeerClosed, "DEBUG"}, {errShutdown, "DEBUG"},
	} {
		if got := levelFor(tc.err).String(); got != tc.want {
			t.Errorf("levelFor(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

func TestLookupBounds(t *testing.T) {
	s, _ := newTestServer(t)
	defer shutdown(t, s)
	if s.lookup(-1, 0) != nil || s.lookup(int32(len(s.conns)), 0) != nil || s.lookup(3, 12345) != nil {
		t.Fatal("lookup out of bounds or of a stale generation must be nil")
	}
}

func TestClosedConnRefusesOutput(t *testing.T) {
	s, _ := newTestServer(t)
	defer shutdown(t, s)
	c := &conn{loop: s.loops[0], fd: -1, closed: true}
	if ok, sched := c.Enqueue([]byte{1}, false); ok || sched {
		t.Fatal("Enqueue on a closed conn")
	}
	c.Flush() // no-op on a closed conn
	c.close(errShutdown)
}

func TestAnonIDIsUUIDv4(t *testing.T) {
	seen := map[[16]byte]bool{}
	for i := 0; i < 1000; i++ {
		id := newAnonID()
		u := uuid.UUID(id)
		if u.Version() != 4 || u.Variant() != uuid.RFC4122 || seen[id] {
			t.Fatalf("%s: version %d variant %v duplicate %v", u, u.Version(), u.Variant(), seen[id])
		}
		seen[id] = true
	}
}
