// Package iotdtest holds test helpers shared by IoTD's tests: a broker and server on 127.0.0.1:0,
// a raw MQTT client built on the project's codec, a log recorder that tests can wait on, and
// polling with a deadline. It is imported only from _test.go files.
package iotdtest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/server"
)

// Timeout bounds every wait in these helpers.
const Timeout = 10 * time.Second

// Eventually polls cond every few milliseconds until it returns true or Timeout passes, then fails
// the test with msg. It is the replacement for sleeping in tests.
func Eventually(t testing.TB, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: "+msg, append([]any{Timeout}, args...)...)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Logs records log lines for assertions; safe for concurrent use.
type Logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String returns everything logged so far.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// WaitFor waits until a logged line contains every one of parts and returns that line.
func (l *Logs) WaitFor(t testing.TB, parts ...string) string {
	t.Helper()
	var found string
	Eventually(t, func() bool {
		for _, line := range strings.Split(l.String(), "\n") {
			ok := true
			for _, p := range parts {
				if !strings.Contains(line, p) {
					ok = false
					break
				}
			}
			if ok {
				found = line
				return true
			}
		}
		return false
	}, "a log line containing %q; log:\n%s", parts, l)
	return found
}

// Env is a running broker and server listening on 127.0.0.1.
type Env struct {
	Addr   string         // host:port the server listens on
	Broker *broker.Broker // the broker behind it
	Server *server.Server // the server
	Logs   *Logs          // everything both logged, at debug level
}

// Start runs a broker and server on 127.0.0.1:0 and shuts them down when the test ends. Zero
// options take the server's defaults; the logger records at debug level into Env.Logs.
func Start(t testing.TB, sopts server.Options, bopts broker.Options) *Env {
	t.Helper()
	logs := &Logs{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	bopts.Logger = log
	sopts.Logger = log
	b := broker.New(bopts)
	s, err := server.New(b, sopts)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln, "test") }()
	hctx, stopHousekeep := context.WithCancel(context.Background())
	housekept := make(chan struct{})
	go func() {
		defer close(housekept)
		b.Run(hctx)
	}()
	t.Cleanup(func() {
		defer func() {
			stopHousekeep()
			<-housekept
		}()
		if t.Failed() {
			t.Logf("broker log:\n%s", logs)
		}
		ctx, cancel := context.WithTimeout(context.Background(), Timeout)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, server.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return &Env{Addr: ln.Addr().String(), Broker: b, Server: s, Logs: logs}
}

// Client is a raw MQTT 3.1.1 client over TCP for tests: it sends exactly the bytes it is told to
// and reports exactly what comes back.
type Client struct {
	t    testing.TB
	Conn net.Conn // the connection, for tests that need raw access
	r    *packet.Reader
}

// Dial connects a raw client to addr; the connection is closed when the test ends.
func Dial(t testing.TB, addr string) *Client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, Timeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	return Wrap(t, c)
}

// Wrap makes a raw client of an established connection (any transport); the connection is closed
// when the test ends.
func Wrap(t testing.TB, c net.Conn) *Client {
	t.Cleanup(func() { c.Close() })
	return &Client{t: t, Conn: c, r: packet.NewReader(c, 0)}
}

// SendRaw writes b as is.
func (c *Client) SendRaw(b []byte) {
	c.t.Helper()
	c.Conn.SetWriteDeadline(time.Now().Add(Timeout))
	if _, err := c.Conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// Send encodes and writes p.
func (c *Client) Send(p packet.Packet) { c.t.Helper(); c.SendRaw(p.Append(nil)) }

// Read returns the next packet, failing the test if none arrives within Timeout.
func (c *Client) Read() packet.Packet {
	c.t.Helper()
	p, err := c.TryRead(Timeout)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return p
}

// TryRead returns the next packet or the error that prevented it (io.EOF when the server closed).
func (c *Client) TryRead(d time.Duration) (packet.Packet, error) {
	c.Conn.SetReadDeadline(time.Now().Add(d))
	return c.r.ReadPacket(packet.Version311)
}

// ExpectClosed waits until the server closes the connection, failing on any packet received.
func (c *Client) ExpectClosed() {
	c.t.Helper()
	p, err := c.TryRead(Timeout)
	if err == nil {
		c.t.Fatalf("expected the server to close the connection, got %T %+v", p, p)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("expected the server to close the connection; still open after %v", Timeout)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !isReset(err) {
		c.t.Fatalf("expected EOF, got %v", err)
	}
}

func isReset(err error) bool { return strings.Contains(err.Error(), "connection reset") }

// Connect sends CONNECT and returns the CONNACK.
func (c *Client) Connect(p *packet.Connect) *packet.Connack {
	c.t.Helper()
	if p.ProtocolName == "" {
		p.ProtocolName, p.ProtocolLevel = "MQTT", packet.Version311
	}
	c.Send(p)
	ack, ok := c.Read().(*packet.Connack)
	if !ok {
		c.t.Fatalf("expected CONNACK")
	}
	return ack
}

// MustConnect connects with the given client id and clean session flag and fails unless accepted.
func (c *Client) MustConnect(id string, clean bool) *packet.Connack {
	c.t.Helper()
	ack := c.Connect(&packet.Connect{ClientID: id, CleanSession: clean, KeepAlive: 60})
	if ack.ReturnCode != packet.Accepted {
		c.t.Fatalf("CONNACK %v, want accepted", ack.ReturnCode)
	}
	return ack
}

// Subscribe subscribes to filters at qos and returns the SUBACK return codes.
func (c *Client) Subscribe(id uint16, qos packet.QoS, filters ...string) []byte {
	c.t.Helper()
	s := &packet.Subscribe{PacketID: id}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, packet.Subscription{Filter: f, QoS: qos})
	}
	c.Send(s)
	ack, ok := c.Read().(*packet.Suback)
	if !ok || ack.PacketID != id {
		c.t.Fatalf("expected SUBACK for %d, got %+v", id, ack)
	}
	return ack.ReturnCodes
}

// Publish sends a QoS 0 PUBLISH.
func (c *Client) Publish(topic string, payload string, retain bool) {
	c.t.Helper()
	c.Send(&packet.Publish{Topic: []byte(topic), Payload: []byte(payload), Retain: retain})
}

// ReadPublish reads the next packet and fails unless it is a PUBLISH.
func (c *Client) ReadPublish() *packet.Publish {
	c.t.Helper()
	p := c.Read()
	pub, ok := p.(*packet.Publish)
	if !ok {
		c.t.Fatalf("expected PUBLISH, got %T %+v", p, p)
	}
	return pub
}

// Ping sends PINGREQ and waits for PINGRESP; any PUBLISH before it fails the test. It proves that
// everything the server had to send before the PINGRESP has been received.
func (c *Client) Ping() {
	c.t.Helper()
	c.Send(&packet.Pingreq{})
	if p, ok := c.Read().(*packet.Pingresp); !ok {
		c.t.Fatalf("expected PINGRESP, got %T %+v", p, p)
	}
}

// ExpectNoPublish proves that nothing arrives before a PINGRESP round trip.
func (c *Client) ExpectNoPublish() { c.t.Helper(); c.Ping() }
