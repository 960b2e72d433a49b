package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotd/iotd/internal/iotdtest"
)

// newSyncTopic returns a topic for one receiver's markers. Every receiver the helpers create
// subscribes to its own; a marker published on it after the messages under test proves, when it
// arrives, that nothing else was on its way (see expectNone).
func newSyncTopic() string { return "sync/" + newID("s") }

// procTimeout bounds every subprocess; the -W flags of mosquitto_sub end them sooner.
const procTimeout = 60 * time.Second

var idSeq atomic.Uint64

// newID returns a client identifier unique in the test binary, so that the log lines and sessions
// of one test never mix with another's.
func newID(prefix string) string { return fmt.Sprintf("%s-%d", prefix, idSeq.Add(1)) }

// waitRouted returns once the broker has closed the connection of clientID after a DISCONNECT.
// The server handles a connection's packets in order, so everything the client published before
// its DISCONNECT has then been routed, and queued to every subscriber.
func waitRouted(t *testing.T, env *iotdtest.Env, clientID string) {
	t.Helper()
	waitDisconnects(t, env, clientID, 1)
}

// waitDisconnects is waitRouted for a client identifier that connects several times: it returns
// once the broker has logged the n-th DISCONNECT of clientID.
func waitDisconnects(t *testing.T, env *iotdtest.Env, clientID string, n int) {
	t.Helper()
	parts := []string{`msg="client disconnected"`, "client_id=" + clientID + " ", `reason="client sent DISCONNECT"`}
	iotdtest.Eventually(t, func() bool { return countLines(env.Logs.String(), parts...) >= n },
		"DISCONNECT number %d of %s", n, clientID)
}

// within is iotdtest.Eventually with a deadline of d, for the few waits that are longer by design.
func within(t *testing.T, d time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for "+format, append([]any{d}, args...)...)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

// countLines counts the lines of log that contain every one of parts.
func countLines(log string, parts ...string) int {
	n := 0
	for line := range strings.SplitSeq(log, "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			n++
		}
	}
	return n
}

// msg is a PUBLISH as a subscriber of either kind received it.
type msg struct {
	Topic   string
	Payload string
	QoS     byte
	Retain  bool
}

func (m msg) String() string {
	return fmt.Sprintf("{%s %q qos=%d retain=%t}", m.Topic, m.Payload, m.QoS, m.Retain)
}

// receiver is a connected, subscribed client of either kind.
type receiver interface {
	// next returns the next message received, failing the test if none comes within
	// iotdtest.Timeout.
	next(t *testing.T) msg
	// disconnect sends DISCONNECT and closes the connection.
	disconnect(t *testing.T)
	// syncTopic is the receiver's marker topic, which it is subscribed to.
	syncTopic() string
}

// expect fails the test unless the next message r receives is want.
func expect(t *testing.T, r receiver, want msg) {
	t.Helper()
	if got := r.next(t); got != want {
		t.Fatalf("received %v, want %v", got, want)
	}
}

// expectNone proves that each receiver has nothing else coming: it publishes a marker on the
// receiver's sync topic and fails if anything arrives before it. The marker is routed after
// everything already routed (waitRouted), and a connection's output is sent in order, so this
// needs no sleep.
func expectNone(t *testing.T, env *iotdtest.Env, rs ...receiver) {
	t.Helper()
	for i, r := range rs {
		marker := msg{Topic: r.syncTopic(), Payload: newID("marker")}
		pahoPublish(t, env, marker)
		if got := r.next(t); got != marker {
			t.Fatalf("receiver %d received %v, want nothing before the marker %v", i, got, marker)
		}
	}
}

// subSpec says how a receiver connects and what it subscribes to; the receiver's sync topic is
// always added.
type subSpec struct {
	id         string // client identifier; "" picks a unique one unless emptyID is set
	emptyID    bool   // send an empty client identifier
	persistent bool   // CleanSession=0
	qos        byte   // requested QoS for every filter
	filters    []string
}

// kind is one third-party client: how it subscribes and how it publishes.
type kind struct {
	name string
	// skip skips the test when the client is not available.
	skip func(t *testing.T)
	// subscribe connects a client and returns once the SUBACK granted every filter at s.qos.
	subscribe func(t *testing.T, env *iotdtest.Env, s subSpec) receiver
	// publish connects a client, publishes m, disconnects, and returns once the broker has routed
	// m (waitRouted).
	publish func(t *testing.T, env *iotdtest.Env, m msg)
}

var (
	pahoKind = kind{name: "paho", skip: func(*testing.T) {}, subscribe: pahoSubscribe, publish: pahoPublish}
	mosqKind = kind{name: "mosquitto", skip: needMosquitto, subscribe: mosqSubscribe, publish: mosqPublish}
	kinds    = []kind{pahoKind, mosqKind}
)

// other returns the kind that is not k, to make the two clients talk to each other.
func (k kind) other() kind {
	if k.name == pahoKind.name {
		return mosqKind
	}
	return pahoKind
}

// forEachKind runs f as one subtest per client kind, skipping a kind that is not installed.
func forEachKind(t *testing.T, f func(t *testing.T, k kind)) {
	t.Helper()
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			k.skip(t)
			f(t, k)
		})
	}
}

// ---- Paho ----

// pahoClient is a Paho client whose messages and connection losses land on channels.
type pahoClient struct {
	mqtt.Client
	id   string
	sync string // marker topic; pahoSubscribe subscribes to it, other callers may
	msgs chan msg
	lost chan error
	// lostErr is the connection loss once a test goroutine has taken it from lost.
	lostErr error
}

// pahoOptions are the options every Paho client in these tests starts from: no automatic
// reconnection (it would fight takeover tests), bounded waits.
func pahoOptions(env *iotdtest.Env, id string) *mqtt.ClientOptions {
	return mqtt.NewClientOptions().
		AddBroker("tcp://" + env.Addr).
		SetClientID(id).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(iotdtest.Timeout).
		SetWriteTimeout(iotdtest.Timeout).
		SetKeepAlive(30 * time.Second)
}

// newPaho creates, but does not connect, a client from opts. It is disconnected when the test
// ends; a client that is already disconnected makes that a no-op.
func newPaho(t *testing.T, opts *mqtt.ClientOptions) *pahoClient {
	t.Helper()
	c := &pahoClient{id: opts.ClientID, sync: newSyncTopic(), msgs: make(chan msg, 1024), lost: make(chan error, 1)}
	opts.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
		select {
		case c.msgs <- msg{Topic: m.Topic(), Payload: string(m.Payload()), QoS: m.Qos(), Retain: m.Retained()}:
		default: // more than any test sends; next reports the missing message
		}
	})
	opts.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		select {
		case c.lost <- err:
		default:
		}
	})
	c.Client = mqtt.NewClient(opts)
	t.Cleanup(func() { c.Disconnect(250) })
	return c
}

// connect connects and returns the connect token, whatever the CONNACK said.
func (c *pahoClient) connect(t *testing.T) *mqtt.ConnectToken {
	t.Helper()
	tok := c.Connect()
	if !tok.WaitTimeout(iotdtest.Timeout) {
		t.Fatalf("paho %s: no CONNACK within %v", c.id, iotdtest.Timeout)
	}
	return tok.(*mqtt.ConnectToken)
}

// mustConnect connects and fails the test unless the broker accepted.
func (c *pahoClient) mustConnect(t *testing.T) *mqtt.ConnectToken {
	t.Helper()
	tok := c.connect(t)
	if err := tok.Error(); err != nil {
		t.Fatalf("paho %s: connect: %v (return code %d)", c.id, err, tok.ReturnCode())
	}
	return tok
}

// dialPaho creates and connects a client with the base options, changed by configure.
func dialPaho(t *testing.T, env *iotdtest.Env, id string, configure ...func(*mqtt.ClientOptions)) *pahoClient {
	t.Helper()
	opts := pahoOptions(env, id)
	for _, f := range configure {
		f(opts)
	}
	c := newPaho(t, opts)
	c.mustConnect(t)
	return c
}

// subscribe subscribes to filters (each at its QoS) and fails unless every one is granted as asked.
func (c *pahoClient) subscribe(t *testing.T, filters map[string]byte) {
	t.Helper()
	tok := c.SubscribeMultiple(filters, nil)
	wait(t, tok, "subscribe")
	got := tok.(*mqtt.SubscribeToken).Result()
	for f, q := range filters {
		if got[f] != q {
			t.Fatalf("paho %s: SUBACK for %q granted %#x, want %d (all: %v)", c.id, f, got[f], q, got)
		}
	}
}

func (c *pahoClient) next(t *testing.T) msg {
	t.Helper()
	deadline := time.After(iotdtest.Timeout)
	for {
		select {
		case m := <-c.msgs:
			return m
		case err := <-c.lost:
			// Messages received before the loss may still be on their way to the handler: keep
			// waiting for them, and say why at the deadline.
			c.lostErr = err
		case <-deadline:
			t.Fatalf("paho %s: no message within %v (connection lost: %v)", c.id, iotdtest.Timeout, c.lostErr)
		}
	}
}

func (c *pahoClient) disconnect(*testing.T) { c.Disconnect(250) }

func (c *pahoClient) syncTopic() string { return c.sync }

// waitLost waits until Paho reports that the broker closed the connection.
func (c *pahoClient) waitLost(t *testing.T) error {
	t.Helper()
	if c.lostErr != nil {
		return c.lostErr
	}
	select {
	case err := <-c.lost:
		c.lostErr = err
		return err
	case <-time.After(iotdtest.Timeout):
		t.Fatalf("paho %s: connection still open after %v", c.id, iotdtest.Timeout)
	}
	return nil
}

// wait waits for a Paho token and fails the test on a timeout or an error.
func wait(t *testing.T, tok mqtt.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(iotdtest.Timeout) {
		t.Fatalf("paho %s: not complete within %v", what, iotdtest.Timeout)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("paho %s: %v", what, err)
	}
}

func pahoSubscribe(t *testing.T, env *iotdtest.Env, s subSpec) receiver {
	t.Helper()
	if s.id == "" && !s.emptyID {
		s.id = newID("ps")
	}
	c := dialPaho(t, env, s.id, func(o *mqtt.ClientOptions) { o.SetCleanSession(!s.persistent) })
	filters := map[string]byte{c.sync: s.qos}
	for _, f := range s.filters {
		filters[f] = s.qos
	}
	c.subscribe(t, filters)
	return c
}

func pahoPublish(t *testing.T, env *iotdtest.Env, m msg) {
	t.Helper()
	c := dialPaho(t, env, newID("pp"))
	wait(t, c.Publish(m.Topic, m.QoS, m.Retain, m.Payload), "publish")
	c.Disconnect(250)
	waitRouted(t, env, c.id)
}

// conn wraps the net.Conn of a Paho client so that a test can cut it or make it go silent, and
// counts the PINGREQs the client wrote.
type conn struct {
	net.Conn
	silent atomic.Bool  // writes are dropped (reported as written)
	pings  atomic.Int64 // PINGREQ packets written
}

var pingreq = []byte{0xC0, 0x00}

func (c *conn) Write(b []byte) (int, error) {
	if bytes.Equal(b, pingreq) {
		c.pings.Add(1)
	}
	if c.silent.Load() {
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// withConn makes the client dial through a conn wrapper that is sent on ch.
func withConn(ch chan<- *conn) func(*mqtt.ClientOptions) {
	return func(o *mqtt.ClientOptions) {
		o.SetCustomOpenConnectionFn(func(uri *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
			nc, err := net.DialTimeout("tcp", uri.Host, iotdtest.Timeout)
			if err != nil {
				return nil, err
			}
			c := &conn{Conn: nc}
			ch <- c
			return c, nil
		})
	}
}

// ---- mosquitto_pub and mosquitto_sub ----

func needMosquitto(t *testing.T) {
	t.Helper()
	for _, bin := range []string{"mosquitto_pub", "mosquitto_sub"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (Debian package mosquitto-clients); .ci/run installs it", bin)
		}
	}
}

// hostPort returns the -h and -p arguments for env's address.
func hostPort(t *testing.T, addr string) []string {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return []string{"-h", host, "-p", port}
}

// lines collects a subprocess's output line by line; safe for concurrent use.
type lines struct {
	mu      sync.Mutex
	partial []byte
	done    []string
	changed chan struct{} // signalled (never blocking) after each Write
}

func newLines() *lines { return &lines{changed: make(chan struct{}, 1)} }

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.done = append(l.done, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
	return len(p), nil
}

// from returns the complete lines from index i on.
func (l *lines) from(i int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.done[min(i, len(l.done)):])
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.done, "\n") + "\n" + string(l.partial)
}

// proc is a running subprocess with its output collected.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdout *lines
	stderr *lines
	exited chan struct{} // closed once the process has exited and its output is collected
	err    error         // from Wait; read only after exited is closed
}

// startProc starts name with args, bounded by procTimeout. When the test ends the process gets
// SIGTERM (clients disconnect cleanly on it) and, if it is still there after a while, SIGKILL.
func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	return startProcWith(t, nil, nil, name, args...)
}

// startProcWith is startProc with extra environment variables and a standard input (nil: none).
func startProcWith(t *testing.T, env []string, stdin io.Reader, name string, args ...string) *proc {
	t.Helper()
	return startProcLimit(t, procTimeout, env, stdin, name, args...)
}

// startProcLimit is startProcWith bounded by limit instead of procTimeout.
func startProcLimit(t *testing.T, limit time.Duration, env []string, stdin io.Reader, name string, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = time.Second
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = stdin
	p := &proc{name: name, cmd: cmd, stdout: newLines(), stderr: newLines(), exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		cancel()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(iotdtest.Timeout):
			cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// signal sends sig unless the process has already exited.
func (p *proc) signal(sig syscall.Signal) {
	select {
	case <-p.exited:
	default:
		p.cmd.Process.Signal(sig)
	}
}

// wait waits for the process to exit and returns its exit code (-1 when a signal killed it).
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(procTimeout):
		t.Fatalf("%s still running after %v\nstdout:\n%s\nstderr:\n%s", p.name, procTimeout, p.stdout, p.stderr)
	}
	var ee *exec.ExitError
	if p.err != nil && !errors.As(p.err, &ee) {
		t.Fatalf("%s: %v", p.name, p.err)
	}
	return p.cmd.ProcessState.ExitCode()
}

// waitLine waits for a line of out, from index *pos on, for which match is true, and moves *pos
// past it. It fails the test if the process exits or iotdtest.Timeout passes first.
func (p *proc) waitLine(t *testing.T, out *lines, pos *int, what string, match func(string) bool) string {
	t.Helper()
	deadline := time.After(iotdtest.Timeout)
	for {
		for i, line := range out.from(*pos) {
			if match(line) {
				*pos += i + 1
				return line
			}
		}
		select {
		case <-out.changed:
		case <-p.exited:
			// The output is complete once exited is closed: one last look.
			for i, line := range out.from(*pos) {
				if match(line) {
					*pos += i + 1
					return line
				}
			}
			t.Fatalf("%s exited (%v) before printing %s\nstdout:\n%s\nstderr:\n%s", p.name, p.err, what, p.stdout, p.stderr)
		case <-deadline:
			t.Fatalf("%s printed no %s within %v\nstdout:\n%s\nstderr:\n%s", p.name, what, iotdtest.Timeout, p.stdout, p.stderr)
		}
	}
}

// mosqSub is a running mosquitto_sub started with -d and a -F format that prints each message as
// "MSG <retain> <qos> <topic> <payload>".
type mosqSub struct {
	*proc
	pos  int    // next stdout line to look at
	sync string // marker topic, when mosqSubscribe started it
}

const mosqFormat = "MSG %r %q %t %p"

// startMosqSub starts mosquitto_sub against addr with args added; it stays at most 30 s (-W).
// stdio buffers a pipe's output until exit, so it runs under stdbuf -oL (GNU coreutils), which
// makes its stdout line-buffered.
func startMosqSub(t *testing.T, addr string, args ...string) *mosqSub {
	t.Helper()
	if _, err := exec.LookPath("stdbuf"); err != nil {
		t.Skip("stdbuf (GNU coreutils) not installed; it is needed to read mosquitto_sub's output as it comes")
	}
	base := append([]string{"-oL", "mosquitto_sub"}, hostPort(t, addr)...)
	base = append(base, "-d", "-F", mosqFormat, "-W", "30")
	return &mosqSub{proc: startProc(t, "stdbuf", append(base, args...)...)}
}

// waitSubscribed waits for the SUBACK and returns the granted QoS of each filter.
func (s *mosqSub) waitSubscribed(t *testing.T) []byte {
	t.Helper()
	line := s.waitLine(t, s.stdout, &s.pos, "a SUBACK", func(l string) bool { return strings.HasPrefix(l, "Subscribed (mid: ") })
	_, codes, _ := strings.Cut(line, "): ")
	var granted []byte
	for _, c := range strings.Split(codes, ", ") {
		n, err := strconv.Atoi(c)
		if err != nil {
			t.Fatalf("mosquitto_sub: cannot parse %q", line)
		}
		granted = append(granted, byte(n))
	}
	return granted
}

func (s *mosqSub) next(t *testing.T) msg {
	t.Helper()
	line := s.waitLine(t, s.stdout, &s.pos, "a message", func(l string) bool { return strings.HasPrefix(l, "MSG ") })
	f := strings.SplitN(line, " ", 5)
	if len(f) != 5 {
		t.Fatalf("mosquitto_sub: cannot parse %q", line)
	}
	q, _ := strconv.Atoi(f[2])
	return msg{Topic: f[3], Payload: f[4], QoS: byte(q), Retain: f[1] == "1"}
}

// disconnect sends SIGTERM, on which mosquitto_sub sends DISCONNECT, and waits for the exit.
func (s *mosqSub) disconnect(t *testing.T) {
	t.Helper()
	s.signal(syscall.SIGTERM)
	s.wait(t)
}

func (s *mosqSub) syncTopic() string { return s.sync }

func mosqSubscribe(t *testing.T, env *iotdtest.Env, s subSpec) receiver {
	t.Helper()
	if s.id == "" && !s.emptyID {
		s.id = newID("ms")
	}
	sync := newSyncTopic()
	args := []string{"-q", strconv.Itoa(int(s.qos)), "-t", sync}
	if !s.emptyID {
		// Without -i, mosquitto_sub sends an empty client identifier.
		args = append(args, "-i", s.id)
	}
	if s.persistent {
		args = append(args, "-c")
	}
	for _, f := range s.filters {
		args = append(args, "-t", f)
	}
	sub := startMosqSub(t, env.Addr, args...)
	sub.sync = sync
	for i, g := range sub.waitSubscribed(t) {
		if g != s.qos {
			t.Fatalf("mosquitto_sub: SUBACK granted %#x for filter %d, want %d", g, i, s.qos)
		}
	}
	return sub
}

// runMosqPub runs mosquitto_pub against addr with args added and returns its exit code and output.
func runMosqPub(t *testing.T, addr string, args ...string) (int, string) {
	t.Helper()
	p := startProc(t, "mosquitto_pub", append(append(hostPort(t, addr), "-d"), args...)...)
	code := p.wait(t)
	return code, p.stdout.String() + p.stderr.String()
}

func mosqPublish(t *testing.T, env *iotdtest.Env, m msg) {
	t.Helper()
	id := newID("mp")
	args := []string{"-i", id, "-t", m.Topic, "-q", strconv.Itoa(int(m.QoS))}
	if m.Payload == "" {
		args = append(args, "-n")
	} else {
		args = append(args, "-m", m.Payload)
	}
	if m.Retain {
		args = append(args, "-r")
	}
	if code, out := runMosqPub(t, env.Addr, args...); code != 0 {
		t.Fatalf("mosquitto_pub exited with %d:\n%s", code, out)
	}
	waitRouted(t, env, id)
}
