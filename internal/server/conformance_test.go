package server_test

// Tests for normative MQTT 3.1.1 statements that no other test proves under the statement's own
// identifier. docs/conformance.md points at them by name, and test/conformance checks that it does
// so truthfully, so a subtest name here must keep its statement ID.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/iotd/iotd/internal/auth"
	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/iotdtest"
	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/server"
)

// confStart runs a broker and server with default options.
func confStart(t *testing.T) *iotdtest.Env {
	t.Helper()
	return iotdtest.Start(t, server.Options{}, broker.Options{})
}

// rawConn is a client socket whose input is read byte for byte, for checks on the exact bytes the
// server sends (iotdtest.Client decodes, which hides fields a decoder ignores).
type rawConn struct {
	t *testing.T
	c net.Conn
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, iotdtest.Timeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c}
}

func (r *rawConn) send(p packet.Packet) {
	r.t.Helper()
	r.c.SetWriteDeadline(time.Now().Add(iotdtest.Timeout))
	if _, err := r.c.Write(p.Append(nil)); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// read returns the first byte and the body of the next packet exactly as they came off the wire.
func (r *rawConn) read() (first byte, body []byte) {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(iotdtest.Timeout))
	var b [1]byte
	if _, err := io.ReadFull(r.c, b[:]); err != nil {
		r.t.Fatalf("read fixed header: %v", err)
	}
	first = b[0]
	n, shift := 0, 0
	for {
		if _, err := io.ReadFull(r.c, b[:]); err != nil {
			r.t.Fatalf("read remaining length: %v", err)
		}
		n |= int(b[0]&0x7f) << shift
		if b[0]&0x80 == 0 {
			break
		}
		shift += 7
	}
	body = make([]byte, n)
	if _, err := io.ReadFull(r.c, body); err != nil {
		r.t.Fatalf("read body of %d bytes: %v", n, err)
	}
	return first, body
}

// connect sends CONNECT and checks for an accepting CONNACK, byte for byte.
func (r *rawConn) connect(id string) {
	r.t.Helper()
	r.send(&packet.Connect{ClientID: id, CleanSession: true, KeepAlive: 60})
	if first, body := r.read(); first != 0x20 || !bytes.Equal(body, []byte{0, 0}) {
		r.t.Fatalf("got %#x % x, want CONNACK 20 02 00 00", first, body)
	}
}

// waitOpen waits until the server has n connections open. The server counts a connection closed
// only after the broker has handled its end (will, clean session), so this is the barrier that
// makes a later "nothing arrived" check sound.
func waitOpen(t *testing.T, env *iotdtest.Env, n int64) {
	t.Helper()
	iotdtest.Eventually(t, func() bool { return env.Server.Stats().Open == n }, "%d connections open", n)
}

// expectPacket reads the next packet and fails unless it is a T.
func expectPacket[T packet.Packet](t *testing.T, c *iotdtest.Client) T {
	t.Helper()
	p := c.Read()
	v, ok := p.(T)
	if !ok {
		var want T
		t.Fatalf("got %T %+v, want %T", p, p, want)
	}
	return v
}

// ackPublish acknowledges a PUBLISH the way a client must (QoS 1: PUBACK; QoS 2: PUBREC, then
// PUBCOMP for the server's PUBREL).
func ackPublish(t *testing.T, c *iotdtest.Client, p *packet.Publish) {
	t.Helper()
	switch p.QoS {
	case packet.QoS1:
		c.Send(&packet.Puback{PacketID: p.PacketID})
	case packet.QoS2:
		c.Send(&packet.Pubrec{PacketID: p.PacketID})
		if r := expectPacket[*packet.Pubrel](t, c); r.PacketID != p.PacketID {
			t.Fatalf("PUBREL %d, want %d", r.PacketID, p.PacketID)
		}
		c.Send(&packet.Pubcomp{PacketID: p.PacketID})
	}
}

// publishQoS1 publishes at QoS 1 and waits for the PUBACK.
func publishQoS1(t *testing.T, c *iotdtest.Client, topic, payload string, id uint16, retain bool) {
	t.Helper()
	c.Send(&packet.Publish{Topic: []byte(topic), Payload: []byte(payload), QoS: packet.QoS1, PacketID: id, Retain: retain})
	if a := expectPacket[*packet.Puback](t, c); a.PacketID != id {
		t.Fatalf("PUBACK %d, want %d", a.PacketID, id)
	}
}

// rawConnect builds a CONNECT by hand: protocol name "MQTT", level 4, the given flags,
// keep-alive 60, then payload.
func rawConnect(flags byte, payload ...string) []byte {
	body := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, flags, 0, 60}
	for _, f := range payload {
		body = append(body, byte(len(f)>>8), byte(len(f)))
		body = append(body, f...)
	}
	return append([]byte{0x10, byte(len(body))}, body...)
}

// denyAuthorizer refuses the topics and filters it lists, by access.
type denyAuthorizer struct{ write, read []string }

func (d denyAuthorizer) Authorize(_ *auth.Client, a auth.Access, topic string) bool {
	deny := d.read
	if a == auth.Write {
		deny = d.write
	}
	for _, p := range deny {
		if strings.HasPrefix(topic, p) {
			return false
		}
	}
	return true
}

// failingAuthenticator stands for an authentication backend that is down.
type failingAuthenticator struct{}

func (failingAuthenticator) Authenticate(context.Context, *auth.Credentials) error {
	return errors.New("backend unreachable")
}

func TestConformanceConnect(t *testing.T) {
	env := confStart(t)
	t.Run("MQTT-3.1.3-5 client ids of 1 to 23 alphanumeric bytes are accepted", func(t *testing.T) {
		for _, id := range []string{"a", "Z", "7", "0123456789abcdefghijklm", "ABCDEFGHIJKLMNOPQRSTUVW"} {
			c := iotdtest.Dial(t, env.Addr)
			if ack := c.Connect(&packet.Connect{ClientID: id, CleanSession: true}); ack.ReturnCode != packet.Accepted {
				t.Fatalf("client id %q: got %v, want accepted", id, ack.ReturnCode)
			}
		}
	})
	t.Run("MQTT-3.1.4-4 a valid CONNECT is answered with CONNACK 0", func(t *testing.T) {
		c := dialRaw(t, env.Addr)
		c.connect("valid")
	})
	t.Run("MQTT-3.1.3-9 a rejected client id gets CONNACK 2 and the connection is closed", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		ack := c.Connect(&packet.Connect{ClientID: "", CleanSession: false})
		if ack.ReturnCode != packet.RefusedIdentifierRejected || ack.SessionPresent {
			t.Fatalf("got %+v, want CONNACK 2 with session present 0", ack)
		}
		c.ExpectClosed()
	})
	// Every case is a CONNECT that breaks section 3.1; none may get a CONNACK. The subtest names
	// carry the client-side statement the CONNECT breaks, which the server detects.
	malformed := []struct {
		name string
		raw  []byte
	}{
		{"MQTT-3.1.2-3 reserved flag set", rawConnect(0x03, "c")},
		{"MQTT-3.1.2-14 will QoS 3", rawConnect(0x1e, "c", "w", "m")},
		{"MQTT-3.1.2-11 MQTT-3.1.2-13 will QoS without will flag", rawConnect(0x0a, "c")},
		{"MQTT-3.1.2-11 MQTT-3.1.2-15 will retain without will flag", rawConnect(0x22, "c")},
		{"MQTT-3.1.2-22 password without user name", rawConnect(0x42, "c", "pw")},
		{"MQTT-3.1.2-9 will flag without will topic and message", rawConnect(0x06, "c")},
		{"MQTT-3.1.2-19 user name flag without user name", rawConnect(0x82, "c")},
		{"MQTT-3.1.2-21 password flag without password", rawConnect(0xc2, "c", "u")},
		{"MQTT-3.1.2-18 MQTT-3.1.3-1 fields beyond the flags", rawConnect(0x02, "c", "extra")},
		{"MQTT-3.1.3-3 no client id", rawConnect(0x02)},
		{"MQTT-3.1.3-4 client id is not UTF-8", rawConnect(0x02, "c\xff")},
		{"MQTT-3.1.3-10 will topic is not UTF-8", rawConnect(0x06, "c", "w\xed\xa0\x80", "m")},
		{"MQTT-3.1.3-11 user name contains U+0000", rawConnect(0x82, "c", "u\x00")},
	}
	t.Run("MQTT-3.1.4-1 MQTT-3.2.2-6 a CONNECT that does not conform is closed without CONNACK", func(t *testing.T) {
		for _, tc := range malformed {
			t.Run(tc.name, func(t *testing.T) {
				c := iotdtest.Dial(t, env.Addr)
				c.SendRaw(tc.raw)
				c.ExpectClosed()
			})
		}
	})
	t.Run("MQTT-3.1.4-5 data after a refused CONNECT is ignored", func(t *testing.T) {
		env := confStart(t) // its own server: the test counts open connections
		watch := iotdtest.Dial(t, env.Addr)
		watch.MustConnect("refused-watch", true)
		watch.Subscribe(1, 0, "refused/#")
		// One write: a CONNECT the server refuses, then packets that must not be acted upon.
		var b []byte
		b = (&packet.Connect{ClientID: "", CleanSession: false}).Append(b)
		b = (&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "refused/#"}}}).Append(b)
		b = (&packet.Publish{Topic: []byte("refused/t"), Payload: []byte("x"), Retain: true}).Append(b)
		b = (&packet.Pingreq{}).Append(b)
		c := iotdtest.Dial(t, env.Addr)
		c.SendRaw(b)
		if ack := expectPacket[*packet.Connack](t, c); ack.ReturnCode != packet.RefusedIdentifierRejected {
			t.Fatalf("got %v, want CONNACK 2", ack.ReturnCode)
		}
		c.ExpectClosed() // no SUBACK, no PINGRESP
		waitOpen(t, env, 1)
		watch.ExpectNoPublish()
		if n := env.Broker.Stats().Retained; n != 0 {
			t.Fatalf("%d retained messages, want 0", n)
		}
	})
	t.Run("MQTT-3.2.2-3 CleanSession 0 without a stored session has session present 0", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		if ack := c.MustConnect("fresh-persistent", false); ack.SessionPresent {
			t.Fatal("session present set for a session the server never had")
		}
	})
	t.Run("MQTT-3.1.4-3 CleanSession is applied after the CONNECT is accepted", func(t *testing.T) {
		env := confStart(t) // its own server: the test counts open connections
		steps := []struct {
			name    string
			clean   bool
			present bool
		}{
			{"new persistent session", false, false},
			{"resumed", false, true},
			{"clean session discards it", true, false},
			{"nothing left to resume", false, false},
		}
		for _, s := range steps {
			t.Run(s.name, func(t *testing.T) {
				c := iotdtest.Dial(t, env.Addr)
				if ack := c.MustConnect("cleanproc", s.clean); ack.SessionPresent != s.present {
					t.Fatalf("session present %v, want %v", ack.SessionPresent, s.present)
				}
				c.Send(&packet.Disconnect{})
				c.ExpectClosed()
				waitOpen(t, env, 0)
			})
		}
	})
	t.Run("MQTT-3.1.3-2 the client id selects the session state", func(t *testing.T) {
		for _, id := range []string{"sel-one", "sel-two"} {
			c := iotdtest.Dial(t, env.Addr)
			c.MustConnect(id, false)
			c.Subscribe(1, 0, strings.TrimPrefix(id, "sel-")+"/#")
			c.Send(&packet.Disconnect{})
			c.ExpectClosed()
		}
		c := iotdtest.Dial(t, env.Addr)
		if ack := c.MustConnect("sel-one", false); !ack.SessionPresent {
			t.Fatal("session of sel-one not present")
		}
		pub := iotdtest.Dial(t, env.Addr)
		pub.MustConnect("sel-pub", true)
		pub.Publish("two/x", "for sel-two", false)
		pub.Publish("one/x", "for sel-one", false)
		if p := c.ReadPublish(); string(p.Payload) != "for sel-one" {
			t.Fatalf("got %q, want only the message for sel-one's own subscription", p.Payload)
		}
	})
	t.Run("MQTT-3.1.2-7 retained messages outlive the session that published them", func(t *testing.T) {
		pub := iotdtest.Dial(t, env.Addr)
		pub.MustConnect("short-lived", true)
		pub.Publish("outlive/t", "still here", true)
		pub.Send(&packet.Disconnect{})
		pub.ExpectClosed()
		iotdtest.Eventually(t, func() bool { return env.Broker.Stats().Retained >= 1 }, "retained stored")
		s := iotdtest.Dial(t, env.Addr)
		s.MustConnect("outlive-sub", true)
		s.Subscribe(1, 0, "outlive/t")
		if p := s.ReadPublish(); !p.Retain || string(p.Payload) != "still here" {
			t.Fatalf("got %+v, want the retained message", p)
		}
	})
	t.Run("MQTT-4.8.0-2 a failing authentication backend closes the connection", func(t *testing.T) {
		env := iotdtest.Start(t, server.Options{}, broker.Options{Authenticator: failingAuthenticator{}})
		c := iotdtest.Dial(t, env.Addr)
		if ack := c.Connect(&packet.Connect{ClientID: "authfail", CleanSession: true}); ack.ReturnCode != packet.RefusedServerUnavailable {
			t.Fatalf("got %v, want CONNACK 3", ack.ReturnCode)
		}
		c.ExpectClosed()
	})
}

func TestConformanceWill(t *testing.T) {
	env := iotdtest.Start(t, server.Options{}, broker.Options{})
	watcher := iotdtest.Dial(t, env.Addr)
	watcher.MustConnect("will-watcher", true)
	watcher.Subscribe(1, 0, "#")
	withWill := func(t *testing.T, id string, retain bool) *iotdtest.Client {
		t.Helper()
		c := iotdtest.Dial(t, env.Addr)
		ack := c.Connect(&packet.Connect{ClientID: id, CleanSession: true, KeepAlive: 60,
			Will: &packet.Will{Topic: "will/" + id, Payload: []byte(id + " gone"), Retain: retain}})
		if ack.ReturnCode != packet.Accepted {
			t.Fatalf("CONNACK %v", ack.ReturnCode)
		}
		return c
	}
	expectWill := func(t *testing.T, id string) {
		t.Helper()
		if p := watcher.ReadPublish(); string(p.Payload) != id+" gone" || string(p.Topic) != "will/"+id {
			t.Fatalf("got %q on %q, want the will of %s", p.Payload, p.Topic, id)
		}
	}
	t.Run("MQTT-3.1.2-12 without a will flag nothing is published when the connection ends", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("no-will", true)
		c.Conn.Close()
		waitOpen(t, env, 1)
		watcher.ExpectNoPublish()
	})
	t.Run("MQTT-3.1.2-16 a will without retain is published as a non-retained message", func(t *testing.T) {
		c := withWill(t, "plain", false)
		c.Conn.Close()
		expectWill(t, "plain")
		late := iotdtest.Dial(t, env.Addr)
		late.MustConnect("plain-late", true)
		late.Subscribe(1, 0, "will/plain")
		late.ExpectNoPublish()
	})
	t.Run("MQTT-3.1.2-10 a published will is deleted and never published again", func(t *testing.T) {
		withWill(t, "once", false)
		// A takeover ends the first connection without DISCONNECT: its will is published, once.
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("once", true)
		expectWill(t, "once")
		c.Conn.Close()
		waitOpen(t, env, 1)
		watcher.ExpectNoPublish()
	})
	t.Run("MQTT-3.14.1-1 a DISCONNECT with reserved flags set closes the connection like any violation", func(t *testing.T) {
		c := withWill(t, "badflags", false)
		c.SendRaw([]byte{0xe2, 0x00})
		c.ExpectClosed()
		env.Logs.WaitFor(t, "level=WARN", "disconnect: fixed header flags")
		expectWill(t, "badflags") // not a DISCONNECT: the will is published
	})
	t.Run("MQTT-3.14.4-2 packets after DISCONNECT are ignored", func(t *testing.T) {
		c := withWill(t, "after", false)
		var b []byte
		b = (&packet.Disconnect{}).Append(b)
		b = (&packet.Publish{Topic: []byte("after/t"), Payload: []byte("late"), Retain: true}).Append(b)
		b = (&packet.Pingreq{}).Append(b)
		c.SendRaw(b)
		c.ExpectClosed() // no PINGRESP
		waitOpen(t, env, 1)
		watcher.ExpectNoPublish() // neither the PUBLISH nor the will
		if n := env.Broker.Stats().Retained; n != 0 {
			t.Fatalf("%d retained messages, want 0", n)
		}
	})
}

func TestConformancePublish(t *testing.T) {
	env := confStart(t)
	pub := iotdtest.Dial(t, env.Addr)
	pub.MustConnect("pub", true)

	t.Run("MQTT-2.3.1-5 MQTT-3.3.1-2 MQTT-4.3.1-1 QoS 0 deliveries have no packet id and DUP 0", func(t *testing.T) {
		s := dialRaw(t, env.Addr)
		s.connect("raw-sub")
		s.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "raw/#"}}})
		if first, body := s.read(); first != 0x90 || !bytes.Equal(body, []byte{0, 1, 0}) {
			t.Fatalf("got %#x % x, want SUBACK", first, body)
		}
		// Published at QoS 0, and at QoS 1 with DUP set: both are delivered at the granted QoS 0.
		pub.Publish("raw/a", "zero", false)
		pub.Send(&packet.Publish{Topic: []byte("raw/b"), Payload: []byte("one"), QoS: packet.QoS1, Dup: true, PacketID: 9})
		expectPacket[*packet.Puback](t, pub)
		for _, want := range []struct{ topic, payload string }{{"raw/a", "zero"}, {"raw/b", "one"}} {
			first, body := s.read()
			if first != 0x30 {
				t.Fatalf("first byte %#x, want 0x30 (PUBLISH, DUP 0, QoS 0, RETAIN 0)", first)
			}
			exp := append([]byte{0, byte(len(want.topic))}, want.topic...)
			exp = append(exp, want.payload...)
			if !bytes.Equal(body, exp) {
				t.Fatalf("body % x, want % x (no packet identifier)", body, exp)
			}
		}
	})
	t.Run("MQTT-3.3.1-2 a QoS 0 PUBLISH with DUP set closes", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("dup0", true)
		c.SendRaw([]byte{0x38, 3, 0, 1, 't'})
		c.ExpectClosed()
	})
	t.Run("MQTT-3.3.1-3 outgoing DUP does not copy the incoming DUP", func(t *testing.T) {
		s := iotdtest.Dial(t, env.Addr)
		s.MustConnect("dup-sub", true)
		s.Subscribe(1, 1, "dup/t")
		pub.Send(&packet.Publish{Topic: []byte("dup/t"), Payload: []byte("x"), QoS: packet.QoS1, Dup: true, PacketID: 10})
		expectPacket[*packet.Puback](t, pub)
		p := s.ReadPublish()
		if p.Dup || p.QoS != packet.QoS1 {
			t.Fatalf("got DUP %v QoS %d, want DUP 0 QoS 1 on a first delivery", p.Dup, p.QoS)
		}
		ackPublish(t, s, p)
	})
	t.Run("MQTT-3.3.1-7 a retained QoS 0 message replaces the retained message", func(t *testing.T) {
		publishQoS1(t, pub, "replace/t", "first at QoS 1", 11, true)
		pub.Publish("replace/t", "second at QoS 0", true)
		pub.Ping()
		s := iotdtest.Dial(t, env.Addr)
		s.MustConnect("replace-sub", true)
		s.Subscribe(1, 2, "replace/t")
		p := s.ReadPublish()
		if string(p.Payload) != "second at QoS 0" || p.QoS != packet.QoS0 || !p.Retain {
			t.Fatalf("got %q QoS %d retain %v, want the QoS 0 message", p.Payload, p.QoS, p.Retain)
		}
		s.ExpectNoPublish()
	})
	t.Run("MQTT-3.3.1-10 an empty retained message is delivered and clears the topic", func(t *testing.T) {
		pub.Publish("clear/t", "kept", true)
		pub.Ping() // stored before the subscription exists
		s := iotdtest.Dial(t, env.Addr)
		s.MustConnect("clear-sub", true)
		s.Subscribe(1, 0, "clear/t")
		if p := s.ReadPublish(); string(p.Payload) != "kept" {
			t.Fatalf("got %q", p.Payload)
		}
		pub.Publish("clear/t", "", true)
		if p := s.ReadPublish(); len(p.Payload) != 0 || p.Retain {
			t.Fatalf("got %q retain %v, want an empty payload delivered with RETAIN 0", p.Payload, p.Retain)
		}
		late := iotdtest.Dial(t, env.Addr)
		late.MustConnect("clear-late", true)
		late.Subscribe(1, 0, "clear/t")
		late.ExpectNoPublish()
	})
	t.Run("MQTT-3.3.2-1 a topic name that is not UTF-8 closes", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("utf8", true)
		c.SendRaw([]byte{0x30, 5, 0, 2, 'a', 0xff, 'x'})
		c.ExpectClosed()
	})
	t.Run("MQTT-3.3.2-3 the topic name sent to a subscriber is the published name", func(t *testing.T) {
		s := iotdtest.Dial(t, env.Addr)
		s.MustConnect("name-sub", true)
		s.Subscribe(1, 0, "name/+/c", "name/#")
		pub.Publish("name/b/c", "x", false)
		if p := s.ReadPublish(); string(p.Topic) != "name/b/c" {
			t.Fatalf("got topic %q, want name/b/c", p.Topic)
		}
		s.ExpectNoPublish()
	})
	t.Run("MQTT-3.3.4-1 the server answers PUBLISH as its QoS requires", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("answers", true)
		c.Publish("answers/0", "x", false)
		c.Ping() // nothing before the PINGRESP: QoS 0 is not answered
		c.Send(&packet.Publish{Topic: []byte("answers/1"), QoS: packet.QoS1, PacketID: 1})
		expectPacket[*packet.Puback](t, c)
		c.Send(&packet.Publish{Topic: []byte("answers/2"), QoS: packet.QoS2, PacketID: 2})
		expectPacket[*packet.Pubrec](t, c)
		c.Send(&packet.Pubrel{PacketID: 2})
		expectPacket[*packet.Pubcomp](t, c)
	})
	t.Run("MQTT-2.3.1-6 acknowledgements carry the packet id of the PUBLISH", func(t *testing.T) {
		s := iotdtest.Dial(t, env.Addr)
		s.MustConnect("echo-sub", true)
		s.Subscribe(1, 2, "echo/#")
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("echo", true)
		c.Send(&packet.Publish{Topic: []byte("echo/1"), QoS: packet.QoS1, PacketID: 0x1234})
		if a := expectPacket[*packet.Puback](t, c); a.PacketID != 0x1234 {
			t.Fatalf("PUBACK %#x, want 0x1234", a.PacketID)
		}
		c.Send(&packet.Publish{Topic: []byte("echo/2"), QoS: packet.QoS2, PacketID: 0xbeef})
		if a := expectPacket[*packet.Pubrec](t, c); a.PacketID != 0xbeef {
			t.Fatalf("PUBREC %#x, want 0xbeef", a.PacketID)
		}
		c.Send(&packet.Pubrel{PacketID: 0xbeef})
		if a := expectPacket[*packet.Pubcomp](t, c); a.PacketID != 0xbeef {
			t.Fatalf("PUBCOMP %#x, want 0xbeef", a.PacketID)
		}
		s.ReadPublish() // echo/1 at QoS 1, not acknowledged: it stays in flight
		p := s.ReadPublish()
		s.Send(&packet.Pubrec{PacketID: p.PacketID})
		if r := expectPacket[*packet.Pubrel](t, s); r.PacketID != p.PacketID { // the server's own PUBREL
			t.Fatalf("PUBREL %d, want %d", r.PacketID, p.PacketID)
		}
	})
	t.Run("MQTT-3.3.5-2 an unauthorized PUBLISH is acknowledged and not delivered", func(t *testing.T) {
		env := iotdtest.Start(t, server.Options{}, broker.Options{Authorizer: denyAuthorizer{write: []string{"secret"}}})
		s := iotdtest.Dial(t, env.Addr)
		s.MustConnect("auth-sub", true)
		s.Subscribe(1, 1, "#")
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("auth-pub", true)
		publishQoS1(t, c, "secret/t", "denied", 1, false)
		publishQoS1(t, c, "open/t", "allowed", 2, false)
		if p := s.ReadPublish(); string(p.Payload) != "allowed" {
			t.Fatalf("got %q, want only the authorized message", p.Payload)
		}
		c.Ping() // the connection stays open
	})
	t.Run("MQTT-4.7.3-1 an empty topic name or filter closes", func(t *testing.T) {
		for _, raw := range [][]byte{
			{0x30, 3, 0, 0, 'x'},       // PUBLISH with an empty topic name
			{0x82, 5, 0, 1, 0, 0, 0},   // SUBSCRIBE with an empty filter
			{0xa2, 4, 0, 1, 0, 0},      // UNSUBSCRIBE with an empty filter
			{0x32, 5, 0, 0, 0, 1, 'x'}, // QoS 1 PUBLISH with an empty topic name
		} {
			c := iotdtest.Dial(t, env.Addr)
			c.MustConnect("empty", true)
			c.SendRaw(raw)
			c.ExpectClosed()
		}
	})
	t.Run("MQTT-4.7.3-2 U+0000 in a topic name or filter closes", func(t *testing.T) {
		for _, p := range []packet.Packet{
			&packet.Publish{Topic: []byte("a\x00b")},
			&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "a/\x00"}}},
			&packet.Unsubscribe{PacketID: 1, Filters: []string{"\x00"}},
		} {
			c := iotdtest.Dial(t, env.Addr)
			c.MustConnect("nul", true)
			c.Send(p)
			c.ExpectClosed()
		}
	})
	t.Run("MQTT-4.7.3-3 topic names and filters of 65535 bytes are routed", func(t *testing.T) {
		name := "long/" + strings.Repeat("n", 65535-len("long/"))
		s := iotdtest.Dial(t, env.Addr)
		s.MustConnect("long-sub", true)
		if codes := s.Subscribe(1, 0, name); !bytes.Equal(codes, []byte{0}) {
			t.Fatalf("SUBACK %v", codes)
		}
		pub.Publish(name, "long", false)
		if p := s.ReadPublish(); string(p.Topic) != name || string(p.Payload) != "long" {
			t.Fatalf("got %d-byte topic, payload %q", len(p.Topic), p.Payload)
		}
	})
	t.Run("MQTT-4.7.3-4 matching does not normalise topic names", func(t *testing.T) {
		s := iotdtest.Dial(t, env.Addr)
		s.MustConnect("norm-sub", true)
		s.Subscribe(1, 0, "norm/Caf\u00e9/+")
		for _, name := range []string{"norm/Cafe\u0301/x", "norm/caf\u00e9/x", "norm/CAF\u00c9/x", "norm/Caf\u00e9 /x"} {
			pub.Publish(name, "no", false)
		}
		pub.Publish("norm/Caf\u00e9/x", "yes", false)
		if p := s.ReadPublish(); string(p.Payload) != "yes" {
			t.Fatalf("got %q on %q, want only the exact name", p.Payload, p.Topic)
		}
		s.ExpectNoPublish()
	})
	t.Run("MQTT-1.5.3-3 a byte order mark in a topic is kept", func(t *testing.T) {
		s := iotdtest.Dial(t, env.Addr)
		s.MustConnect("bom-sub", true)
		s.Subscribe(1, 0, "\uFEFFbom/#")
		pub.Publish("bom/x", "stripped", false)
		pub.Publish("\uFEFFbom/x", "kept", false)
		p := s.ReadPublish()
		if string(p.Payload) != "kept" || string(p.Topic) != "\uFEFFbom/x" {
			t.Fatalf("got %q on %q, want the message whose name starts with U+FEFF", p.Payload, p.Topic)
		}
		s.ExpectNoPublish()
	})
	t.Run("MQTT-4.5.0-1 every matching subscriber gets the message", func(t *testing.T) {
		var subs []*iotdtest.Client
		for i, f := range []string{"fan/x", "fan/+", "fan/#", "+/x"} {
			s := iotdtest.Dial(t, env.Addr)
			s.MustConnect(fmt.Sprintf("fan-%d", i), true)
			s.Subscribe(1, packet.QoS(i%3), f)
			subs = append(subs, s)
		}
		publishQoS1(t, pub, "fan/x", "all", 12, false)
		for i, s := range subs {
			p := s.ReadPublish()
			if string(p.Payload) != "all" {
				t.Fatalf("subscriber %d got %q", i, p.Payload)
			}
			ackPublish(t, s, p)
		}
	})
	t.Run("MQTT-4.6.0-5 MQTT-4.6.0-6 messages from one publisher arrive and are acknowledged in the order sent", func(t *testing.T) {
		s := iotdtest.Dial(t, env.Addr)
		s.MustConnect("order-sub", true)
		s.Subscribe(1, 2, "order/#")
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("order-pub", true)
		const n = 60
		var b []byte
		for i := range n {
			q := packet.QoS(i % 3)
			p := &packet.Publish{Topic: []byte(fmt.Sprintf("order/%d", i%4)), Payload: []byte{byte(i)}, QoS: q}
			if q > 0 {
				p.PacketID = uint16(i + 1)
			}
			b = p.Append(b)
		}
		c.SendRaw(b)
		for i := 0; i < n; {
			switch p := s.Read().(type) {
			case *packet.Publish:
				if p.Payload[0] != byte(i) {
					t.Fatalf("message %d arrived at position %d", p.Payload[0], i)
				}
				i++
				switch p.QoS {
				case packet.QoS1:
					s.Send(&packet.Puback{PacketID: p.PacketID})
				case packet.QoS2:
					s.Send(&packet.Pubrec{PacketID: p.PacketID})
				}
			case *packet.Pubrel:
				s.Send(&packet.Pubcomp{PacketID: p.PacketID})
			default:
				t.Fatalf("unexpected %T", p)
			}
		}
		// The publisher's PUBACKs and PUBRECs come in the order of its PUBLISH packets.
		for i := range n {
			var id uint16
			switch i % 3 {
			case 0:
				continue // QoS 0: nothing to acknowledge
			case 1:
				id = expectPacket[*packet.Puback](t, c).PacketID
			case 2:
				id = expectPacket[*packet.Pubrec](t, c).PacketID
			}
			if want := uint16(i + 1); id != want {
				t.Fatalf("acknowledgement for %d, want %d", id, want)
			}
		}
	})
	t.Run("MQTT-2.3.1-1 MQTT-2.3.1-4 deliveries in flight have distinct non-zero packet ids", func(t *testing.T) {
		s := iotdtest.Dial(t, env.Addr)
		s.MustConnect("ids-sub", true)
		s.Subscribe(1, 1, "ids/t")
		seen := map[uint16]bool{}
		var got []*packet.Publish
		for i := range 5 {
			publishQoS1(t, pub, "ids/t", "x", uint16(20+i), false)
			p := s.ReadPublish()
			if p.PacketID == 0 || seen[p.PacketID] {
				t.Fatalf("packet id %d: zero or already in flight (%v)", p.PacketID, seen)
			}
			seen[p.PacketID] = true
			got = append(got, p)
		}
		for _, p := range got {
			ackPublish(t, s, p)
		}
		s.Ping()
	})
	t.Run("MQTT-2.3.1-1 a QoS 1 PUBLISH with packet id 0 closes", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("id0", true)
		c.SendRaw([]byte{0x32, 5, 0, 1, 't', 0, 0})
		c.ExpectClosed()
	})
}

func TestConformanceQoS(t *testing.T) {
	env := confStart(t)
	pub := iotdtest.Dial(t, env.Addr)
	pub.MustConnect("pub", true)
	// reconnect ends c's connection without DISCONNECT and resumes its session on a new one.
	reconnect := func(t *testing.T, c *iotdtest.Client, id string) *iotdtest.Client {
		t.Helper()
		c.Conn.Close()
		waitOpen(t, env, 1) // only pub is left
		n := iotdtest.Dial(t, env.Addr)
		if ack := n.MustConnect(id, false); !ack.SessionPresent {
			t.Fatal("session not present")
		}
		return n
	}
	t.Run("MQTT-3.3.1-1 MQTT-4.3.2-1 a QoS 1 delivery has DUP 0, is kept until PUBACK and re-sent with DUP 1", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("q1", false)
		c.Subscribe(1, 1, "q1/t")
		publishQoS1(t, pub, "q1/t", "m", 1, false)
		first := c.ReadPublish()
		if first.Dup || first.QoS != packet.QoS1 || first.PacketID == 0 {
			t.Fatalf("got %+v, want DUP 0 QoS 1 with a packet id", first)
		}
		c = reconnect(t, c, "q1")
		again := c.ReadPublish()
		if !again.Dup || again.PacketID != first.PacketID || string(again.Payload) != "m" {
			t.Fatalf("got %+v, want DUP re-send of id %d", again, first.PacketID)
		}
		c.Send(&packet.Puback{PacketID: again.PacketID})
		c = reconnect(t, c, "q1")
		c.ExpectNoPublish() // acknowledged: no longer kept
	})
	t.Run("MQTT-4.3.3-1 a QoS 2 delivery is released with PUBREL and never re-sent after PUBREC", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("q2", false)
		c.Subscribe(1, 2, "q2/t")
		pub.Send(&packet.Publish{Topic: []byte("q2/t"), Payload: []byte("m"), QoS: packet.QoS2, PacketID: 2})
		expectPacket[*packet.Pubrec](t, pub)
		pub.Send(&packet.Pubrel{PacketID: 2})
		expectPacket[*packet.Pubcomp](t, pub)
		p := c.ReadPublish()
		if p.Dup || p.QoS != packet.QoS2 || p.PacketID == 0 {
			t.Fatalf("got %+v, want DUP 0 QoS 2 with a packet id", p)
		}
		c.Send(&packet.Pubrec{PacketID: p.PacketID})
		if r := expectPacket[*packet.Pubrel](t, c); r.PacketID != p.PacketID {
			t.Fatalf("PUBREL %d, want %d", r.PacketID, p.PacketID)
		}
		c = reconnect(t, c, "q2")
		if r := expectPacket[*packet.Pubrel](t, c); r.PacketID != p.PacketID { // the PUBREL, not the PUBLISH
			t.Fatalf("PUBREL %d, want %d", r.PacketID, p.PacketID)
		}
		c.Send(&packet.Pubcomp{PacketID: p.PacketID})
		c = reconnect(t, c, "q2")
		c.ExpectNoPublish()
	})
	t.Run("MQTT-4.1.0-1 subscriptions and unacknowledged messages are kept for the life of the session", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("keep", false)
		c.Subscribe(1, 1, "keep/a", "keep/b")
		publishQoS1(t, pub, "keep/a", "unacked", 3, false)
		c.ReadPublish()
		for range 2 {
			c = reconnect(t, c, "keep")
			if p := c.ReadPublish(); string(p.Payload) != "unacked" {
				t.Fatalf("got %q, want the unacknowledged message", p.Payload)
			}
		}
		pub.Publish("keep/b", "subscribed", false)
		if p := c.ReadPublish(); string(p.Payload) != "subscribed" {
			t.Fatalf("got %q", p.Payload)
		}
	})
	t.Run("MQTT-4.1.0-2 a clean session lasts as long as its connection", func(t *testing.T) {
		waitOpen(t, env, 1) // earlier subtests' connections are gone
		sessions := env.Broker.Stats().Sessions
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("lasting", true)
		c.Subscribe(1, 0, "lasting/t")
		for i := range 3 {
			c.Ping()
			pub.Publish("lasting/t", fmt.Sprint(i), false)
			if p := c.ReadPublish(); string(p.Payload) != fmt.Sprint(i) {
				t.Fatalf("got %q", p.Payload)
			}
		}
		if n := env.Broker.Stats().Sessions; n != sessions+1 {
			t.Fatalf("%d sessions while connected, want %d", n, sessions+1)
		}
		c.Send(&packet.Disconnect{})
		c.ExpectClosed()
		iotdtest.Eventually(t, func() bool { return env.Broker.Stats().Sessions == sessions }, "clean session ended with its connection")
	})
	t.Run("MQTT-4.6.0-6 unacknowledged messages are re-sent in their original order", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("resend", false)
		c.Subscribe(1, 1, "resend/t")
		var ids []uint16
		for i := range 5 {
			publishQoS1(t, pub, "resend/t", fmt.Sprint(i), uint16(30+i), false)
			ids = append(ids, c.ReadPublish().PacketID)
		}
		c.Send(&packet.Puback{PacketID: ids[2]})
		c.Ping()
		c = reconnect(t, c, "resend")
		for _, i := range []int{0, 1, 3, 4} {
			p := c.ReadPublish()
			if p.PacketID != ids[i] || string(p.Payload) != fmt.Sprint(i) || !p.Dup {
				t.Fatalf("got id %d %q DUP %v, want id %d %q re-sent", p.PacketID, p.Payload, p.Dup, ids[i], fmt.Sprint(i))
			}
			c.Send(&packet.Puback{PacketID: p.PacketID})
		}
		c.ExpectNoPublish()
	})
	t.Run("MQTT-3.1.2-5 QoS 1 messages are queued for an offline persistent session", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("offline", false)
		c.Subscribe(1, 1, "offline/t")
		c.Send(&packet.Disconnect{})
		c.ExpectClosed()
		waitOpen(t, env, 1)
		publishQoS1(t, pub, "offline/t", "queued", 4, false)
		c = iotdtest.Dial(t, env.Addr)
		c.MustConnect("offline", false)
		if p := c.ReadPublish(); string(p.Payload) != "queued" || p.QoS != packet.QoS1 {
			t.Fatalf("got %+v, want the message published while offline", p)
		}
	})
}

func TestConformanceSubscribe(t *testing.T) {
	env := confStart(t)
	pub := iotdtest.Dial(t, env.Addr)
	pub.MustConnect("pub", true)

	t.Run("MQTT-2.3.1-7 SUBACK and UNSUBACK carry the packet id of the request", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("ids", true)
		c.Send(&packet.Subscribe{PacketID: 0xabcd, Subscriptions: []packet.Subscription{{Filter: "ids/t"}}})
		if a := expectPacket[*packet.Suback](t, c); a.PacketID != 0xabcd {
			t.Fatalf("SUBACK %#x, want 0xabcd", a.PacketID)
		}
		c.Send(&packet.Unsubscribe{PacketID: 0x0102, Filters: []string{"ids/t"}})
		if a := expectPacket[*packet.Unsuback](t, c); a.PacketID != 0x0102 {
			t.Fatalf("UNSUBACK %#x, want 0x0102", a.PacketID)
		}
	})
	t.Run("MQTT-3.8.3-4 reserved bits in a requested QoS close", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("reserved", true)
		c.SendRaw([]byte{0x82, 6, 0, 1, 0, 1, 'a', 0x41})
		c.ExpectClosed()
	})
	t.Run("MQTT-3.8.4-3 subscribing again to the same filter replaces the subscription", func(t *testing.T) {
		pub.Publish("again/t", "retained", true)
		pub.Ping() // stored before the subscription exists, so it arrives once, as retained
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("again", true)
		c.Subscribe(1, 0, "again/t")
		if p := c.ReadPublish(); !p.Retain || p.QoS != 0 {
			t.Fatalf("got %+v", p)
		}
		waitOpen(t, env, 2) // earlier subtests' connections are gone: the count below is stable
		subs := env.Broker.Stats().Subscriptions
		if codes := c.Subscribe(2, 1, "again/t"); !bytes.Equal(codes, []byte{1}) {
			t.Fatalf("SUBACK %v, want [1]", codes)
		}
		if p := c.ReadPublish(); !p.Retain || string(p.Payload) != "retained" {
			t.Fatalf("got %+v, want the retained message re-sent", p)
		}
		if n := env.Broker.Stats().Subscriptions; n != subs {
			t.Fatalf("%d subscriptions, want %d: the old one must be replaced", n, subs)
		}
		publishQoS1(t, pub, "again/t", "live", 1, false)
		p := c.ReadPublish()
		if p.QoS != packet.QoS1 || string(p.Payload) != "live" {
			t.Fatalf("got %+v, want one delivery at the new QoS 1", p)
		}
		ackPublish(t, c, p)
		c.ExpectNoPublish()
	})
	t.Run("MQTT-3.8.4-4 a SUBSCRIBE with several filters acts as several SUBSCRIBEs", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("multi", true)
		if codes := c.Subscribe(1, 0, "multi/a", "multi/b/+", "multi/c/#"); !bytes.Equal(codes, []byte{0, 0, 0}) {
			t.Fatalf("SUBACK %v", codes)
		}
		c.ExpectNoPublish() // one SUBACK only
		for _, name := range []string{"multi/a", "multi/b/1", "multi/c/d/e"} {
			pub.Publish(name, name, false)
			if p := c.ReadPublish(); string(p.Topic) != name {
				t.Fatalf("got %q, want %q", p.Topic, name)
			}
		}
	})
	t.Run("MQTT-3.9.3-2 SUBACK return codes are 0, 1, 2 or 0x80", func(t *testing.T) {
		env := iotdtest.Start(t, server.Options{}, broker.Options{Authorizer: denyAuthorizer{read: []string{"deny"}}})
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("codes", true)
		c.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{
			{Filter: "a", QoS: 0}, {Filter: "b", QoS: 1}, {Filter: "c", QoS: 2}, {Filter: "deny/t", QoS: 1},
		}})
		if a := expectPacket[*packet.Suback](t, c); !bytes.Equal(a.ReturnCodes, []byte{0, 1, 2, packet.SubackFailure}) {
			t.Fatalf("return codes %v, want [0 1 2 128]", a.ReturnCodes)
		}
	})
	t.Run("MQTT-3.10.4-3 QoS 1 and 2 deliveries started before UNSUBSCRIBE are completed", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("finish", false)
		c.Subscribe(1, 2, "finish/#")
		publishQoS1(t, pub, "finish/1", "one", 2, false)
		pub.Send(&packet.Publish{Topic: []byte("finish/2"), Payload: []byte("two"), QoS: packet.QoS2, PacketID: 3})
		expectPacket[*packet.Pubrec](t, pub)
		pub.Send(&packet.Pubrel{PacketID: 3})
		expectPacket[*packet.Pubcomp](t, pub)
		q1, q2 := c.ReadPublish(), c.ReadPublish()
		c.Send(&packet.Unsubscribe{PacketID: 2, Filters: []string{"finish/#"}})
		expectPacket[*packet.Unsuback](t, c)
		c.Send(&packet.Pubrec{PacketID: q2.PacketID})
		if r := expectPacket[*packet.Pubrel](t, c); r.PacketID != q2.PacketID {
			t.Fatalf("PUBREL %d, want %d", r.PacketID, q2.PacketID)
		}
		c.Send(&packet.Pubcomp{PacketID: q2.PacketID})
		// The QoS 1 message is still owed: after a reconnect it is re-sent.
		c.Conn.Close()
		waitOpen(t, env, 1) // only pub is left
		c = iotdtest.Dial(t, env.Addr)
		c.MustConnect("finish", false)
		if p := c.ReadPublish(); p.PacketID != q1.PacketID || !p.Dup {
			t.Fatalf("got %+v, want the re-sent QoS 1 message %d", p, q1.PacketID)
		}
		c.Send(&packet.Puback{PacketID: q1.PacketID})
		c.ExpectNoPublish()
	})
	t.Run("MQTT-3.10.4-6 an UNSUBSCRIBE with several filters acts as several UNSUBSCRIBEs", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("unmulti", true)
		c.Subscribe(1, 0, "um/a", "um/b", "um/c")
		c.Send(&packet.Unsubscribe{PacketID: 2, Filters: []string{"um/a", "um/c"}})
		expectPacket[*packet.Unsuback](t, c)
		c.ExpectNoPublish() // one UNSUBACK only
		for _, name := range []string{"um/a", "um/b", "um/c"} {
			pub.Publish(name, name, false)
		}
		if p := c.ReadPublish(); string(p.Topic) != "um/b" {
			t.Fatalf("got %q, want only um/b", p.Topic)
		}
		pub.Ping()
		c.ExpectNoPublish()
	})
}

func TestConformanceProtocolErrors(t *testing.T) {
	env := confStart(t)
	cases := []struct {
		name string
		raw  []byte
	}{
		{"MQTT-4.8.0-1 CONNACK from a client", []byte{0x20, 2, 0, 0}},
		{"MQTT-4.8.0-1 SUBACK from a client", []byte{0x90, 3, 0, 1, 0}},
		{"MQTT-4.8.0-1 reserved packet type 15", []byte{0xf0, 0}},
		{"MQTT-4.8.0-1 PUBACK with reserved flags", []byte{0x41, 2, 0, 1}},
		{"MQTT-4.8.0-1 truncated SUBSCRIBE", []byte{0x82, 3, 0, 1, 0}},
		{"MQTT-4.8.0-1 wildcard in a topic name", []byte{0x30, 5, 0, 3, 'a', '/', '#'}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("violator-%d", i)
			c := iotdtest.Dial(t, env.Addr)
			c.MustConnect(id, true)
			c.SendRaw(tc.raw)
			c.ExpectClosed()
			env.Logs.WaitFor(t, "level=WARN", "client_id="+id+" ", "protocol violation")
		})
	}
}

func TestConformanceTransport(t *testing.T) {
	env := confStart(t)
	t.Run("MQTT-7.1.1-1 MQTT over TCP, an ordered lossless two-way byte stream", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("tcp", true)
		c.Subscribe(1, 0, "tcp/t")
		for i := range 100 {
			c.Publish("tcp/t", fmt.Sprint(i), false)
		}
		for i := range 100 {
			if p := c.ReadPublish(); string(p.Payload) != fmt.Sprint(i) {
				t.Fatalf("got %q at %d", p.Payload, i)
			}
		}
	})
}
