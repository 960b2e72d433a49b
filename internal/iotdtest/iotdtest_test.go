package iotdtest

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"

	"github.com/iotd/iotd/internal/auth"
	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/server"
)

// TestHelpers drives every helper once against a real broker, as the packages that use them do.
func TestHelpers(t *testing.T) {
	env := Start(t, server.Options{}, broker.Options{})
	sub := Dial(t, env.Addr)
	if ack := sub.MustConnect("helper-sub", true); ack.SessionPresent {
		t.Fatal("session present on a clean connect")
	}
	if codes := sub.Subscribe(1, packet.QoS0, "h/#"); len(codes) != 1 || codes[0] != 0 {
		t.Fatalf("SUBACK %v", codes)
	}
	pub := Dial(t, env.Addr)
	pub.MustConnect("helper-pub", true)
	pub.Publish("h/1", "hello", false)
	if p := sub.ReadPublish(); string(p.Payload) != "hello" {
		t.Fatalf("got %q", p.Payload)
	}
	sub.ExpectNoPublish()
	line := env.Logs.WaitFor(t, "client connected", "client_id=helper-pub")
	if !strings.Contains(line, "helper-pub") {
		t.Fatalf("WaitFor returned %q", line)
	}
	Eventually(t, func() bool { return env.Broker.Stats().Sessions == 2 }, "two sessions")
	// A second CONNECT is a protocol violation: the server closes the connection.
	pub.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, ClientID: "again", CleanSession: true})
	pub.ExpectClosed()
	if !isReset(errString("read: connection reset by peer")) || isReset(errString("EOF")) {
		t.Fatal("isReset")
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// fakeTB records a Fatalf and ends the goroutine, as testing.T does, so that the helpers' failure
// paths can be driven.
type fakeTB struct {
	*testing.T
	failed chan string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed <- fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (f *fakeTB) Fatal(args ...any) {
	f.failed <- fmt.Sprint(args...)
	runtime.Goexit()
}

// mustFail runs fn with a fakeTB and returns the failure message, failing t if fn did not fail.
func mustFail(t *testing.T, fn func(tb testing.TB)) string {
	t.Helper()
	f := &fakeTB{T: t, failed: make(chan string, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	select {
	case msg := <-f.failed:
		return msg
	default:
		t.Fatal("the helper did not fail")
		return ""
	}
}

type refuseAll struct{}

func (refuseAll) Authenticate(context.Context, *auth.Credentials) error { return auth.ErrNotAuthorized }

func TestHelperFailures(t *testing.T) {
	env := Start(t, server.Options{}, broker.Options{})
	refusing := Start(t, server.Options{}, broker.Options{Authenticator: refuseAll{}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()

	cases := []struct {
		name, want string
		fn         func(tb testing.TB)
	}{
		{"dial to a closed port", "dial", func(tb testing.TB) { Dial(tb, closedAddr) }},
		{"refused connect", "want accepted", func(tb testing.TB) { Dial(tb, refusing.Addr).MustConnect("x", true) }},
		{"read on a closed connection", "read", func(tb testing.TB) {
			c := Dial(tb, env.Addr)
			c.Conn.Close()
			c.Read()
		}},
		{"send on a closed connection", "write", func(tb testing.TB) {
			c := Dial(tb, env.Addr)
			c.Conn.Close()
			c.SendRaw([]byte{0xC0, 0})
		}},
		{"PINGRESP where a PUBLISH is expected", "expected PUBLISH", func(tb testing.TB) {
			c := Dial(tb, env.Addr)
			c.MustConnect("", true)
			c.Send(&packet.Pingreq{})
			c.ReadPublish()
		}},
		{"SUBACK where a PINGRESP is expected", "expected PINGRESP", func(tb testing.TB) {
			c := Dial(tb, env.Addr)
			c.MustConnect("", true)
			c.Send(&packet.Subscribe{PacketID: 4, Subscriptions: []packet.Subscription{{Filter: "a"}}})
			c.Ping()
		}},
		{"PINGRESP where a SUBACK is expected", "expected SUBACK", func(tb testing.TB) {
			c := Dial(tb, env.Addr)
			c.MustConnect("", true)
			c.Send(&packet.Pingreq{})
			c.Subscribe(5, 0, "a")
		}},
		{"a packet where the close is expected", "expected the server to close", func(tb testing.TB) {
			c := Dial(tb, env.Addr)
			c.MustConnect("", true)
			c.Send(&packet.Pingreq{})
			c.ExpectClosed()
		}},
		{"not a CONNACK", "expected CONNACK", func(tb testing.TB) {
			c := Dial(tb, env.Addr)
			c.MustConnect("", true)
			c.Send(&packet.Pingreq{})
			c.Connect(&packet.Connect{ClientID: "x", CleanSession: true}) // a second CONNECT: PINGRESP comes first
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if msg := mustFail(t, tc.fn); !strings.Contains(msg, tc.want) {
				t.Fatalf("failed with %q, want %q", msg, tc.want)
			}
		})
	}
}
