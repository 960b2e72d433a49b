package server_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/iotdtest"
	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/server"
)

func TestPublishSubscribe(t *testing.T) {
	env := start(t)
	sub := iotdtest.Dial(t, env.Addr)
	sub.MustConnect("sub", true)
	pub := iotdtest.Dial(t, env.Addr)
	pub.MustConnect("pub", true)

	t.Run("MQTT-3.8.4-1 MQTT-3.8.4-2 MQTT-3.8.4-5 MQTT-3.9.3-1 SUBACK per filter in order", func(t *testing.T) {
		codes := sub.Subscribe(7, packet.QoS0, "a/+/c", "x/#")
		if !bytes.Equal(codes, []byte{0, 0}) {
			t.Fatalf("codes %v", codes)
		}
		s := &packet.Subscribe{PacketID: 8, Subscriptions: []packet.Subscription{{Filter: "q/1", QoS: 1}, {Filter: "q/2", QoS: 2}, {Filter: "q/0", QoS: 0}}}
		sub.Send(s)
		ack := sub.Read().(*packet.Suback)
		if ack.PacketID != 8 || !bytes.Equal(ack.ReturnCodes, []byte{1, 2, 0}) {
			t.Fatalf("got %+v, want id 8 codes [1 2 0]", ack)
		}
	})
	t.Run("MQTT-3.3.5-1 QoS 0 routing through wildcards", func(t *testing.T) {
		pub.Publish("a/b/c", "one", false)
		pub.Publish("x/y/z", "two", false)
		pub.Publish("a/b/d", "none", false)
		pub.Publish("x", "three", false) // "x/#" matches its parent level
		for _, want := range []string{"one", "two", "three"} {
			p := sub.ReadPublish()
			if string(p.Payload) != want || p.QoS != 0 || p.Retain || p.Dup {
				t.Fatalf("got %q qos %d retain %v, want %q", p.Payload, p.QoS, p.Retain, want)
			}
		}
		pub.Ping()
		sub.ExpectNoPublish()
	})
	t.Run("MQTT-3.3.2-2 MQTT-4.7.1-1 topic name with wildcard closes", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("bad", true)
		c.Publish("a/+", "x", false)
		c.ExpectClosed()
		env.Logs.WaitFor(t, "level=WARN", "publish topic")
	})
	t.Run("MQTT-4.7.1-2 MQTT-4.7.1-3 invalid filter closes", func(t *testing.T) {
		for _, f := range []string{"a/#/b", "a+", "#a"} {
			c := iotdtest.Dial(t, env.Addr)
			c.MustConnect("badsub", true)
			c.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: f}}})
			c.ExpectClosed()
		}
	})
	t.Run("MQTT-4.7.2-1 $ topics not matched by leading wildcards", func(t *testing.T) {
		s := iotdtest.Dial(t, env.Addr)
		s.MustConnect("dollar", true)
		s.Subscribe(1, 0, "#", "+/info", "$SYS/#")
		pub.Publish("$SYS/info", "sys", false)
		if p := s.ReadPublish(); string(p.Payload) != "sys" {
			t.Fatalf("got %q", p.Payload)
		}
		pub.Ping()
		s.ExpectNoPublish()
	})
	t.Run("MQTT-3.3.5-1 overlapping subscriptions deliver once at the highest QoS", func(t *testing.T) {
		s := iotdtest.Dial(t, env.Addr)
		s.MustConnect("overlap", true)
		s.Subscribe(1, 0, "o/#")
		s.Subscribe(2, 1, "o/+")
		s.Subscribe(3, 0, "o/p")
		pub.Send(&packet.Publish{Topic: []byte("o/p"), Payload: []byte("x"), QoS: 1, PacketID: 3})
		if _, ok := pub.Read().(*packet.Puback); !ok {
			t.Fatal("no PUBACK")
		}
		p := s.ReadPublish()
		if p.QoS != 1 {
			t.Fatalf("delivered at QoS %d, want 1", p.QoS)
		}
		s.Send(&packet.Puback{PacketID: p.PacketID})
		pub.Ping()
		s.ExpectNoPublish()
	})
	t.Run("MQTT-3.10.4-4 MQTT-3.10.4-5 MQTT-3.10.4-2 UNSUBACK and no further delivery", func(t *testing.T) {
		s := iotdtest.Dial(t, env.Addr)
		s.MustConnect("unsub", true)
		s.Subscribe(1, 0, "u/1")
		s.Send(&packet.Unsubscribe{PacketID: 9, Filters: []string{"u/1", "never/subscribed"}})
		if ack, ok := s.Read().(*packet.Unsuback); !ok || ack.PacketID != 9 {
			t.Fatalf("got %+v", ack)
		}
		pub.Publish("u/1", "x", false)
		pub.Ping()
		s.ExpectNoPublish()
	})
	t.Run("MQTT-3.10.4-1 unsubscribe compares filters character by character", func(t *testing.T) {
		s := iotdtest.Dial(t, env.Addr)
		s.MustConnect("unsub2", true)
		s.Subscribe(1, 0, "v/+")
		s.Send(&packet.Unsubscribe{PacketID: 2, Filters: []string{"v/1"}})
		s.Read()
		pub.Publish("v/1", "still", false)
		if p := s.ReadPublish(); string(p.Payload) != "still" {
			t.Fatal("v/+ must survive unsubscribing v/1")
		}
	})
	t.Run("server-to-client packets from a client close", func(t *testing.T) {
		for _, p := range []packet.Packet{&packet.Connack{}, &packet.Suback{PacketID: 1, ReturnCodes: []byte{0}}, &packet.Unsuback{PacketID: 1}, &packet.Pingresp{}} {
			c := iotdtest.Dial(t, env.Addr)
			c.MustConnect("s2c", true)
			c.Send(p)
			c.ExpectClosed()
		}
	})
}

func TestQoS12Flows(t *testing.T) {
	env := start(t)
	sub := iotdtest.Dial(t, env.Addr)
	sub.MustConnect("sub", true)
	sub.Subscribe(1, 2, "q/#")
	pub := iotdtest.Dial(t, env.Addr)
	pub.MustConnect("pub", true)

	t.Run("MQTT-4.3.2-2 QoS 1 PUBLISH gets PUBACK with its id", func(t *testing.T) {
		pub.Send(&packet.Publish{Topic: []byte("q/1"), Payload: []byte("one"), QoS: 1, PacketID: 11})
		if a, ok := pub.Read().(*packet.Puback); !ok || a.PacketID != 11 {
			t.Fatalf("got %+v", a)
		}
		p := sub.ReadPublish()
		if p.QoS != 1 || p.PacketID == 0 || string(p.Payload) != "one" {
			t.Fatalf("got %+v", p)
		}
		sub.Send(&packet.Puback{PacketID: p.PacketID})
	})
	t.Run("MQTT-4.3.3-2 QoS 2 retransmission before PUBREL is routed once", func(t *testing.T) {
		m := &packet.Publish{Topic: []byte("q/2"), Payload: []byte("two"), QoS: 2, PacketID: 12}
		pub.Send(m)
		if a, ok := pub.Read().(*packet.Pubrec); !ok || a.PacketID != 12 {
			t.Fatalf("got %+v", a)
		}
		m.Dup = true
		pub.Send(m)
		if a, ok := pub.Read().(*packet.Pubrec); !ok || a.PacketID != 12 {
			t.Fatalf("got %+v", a)
		}
		pub.Send(&packet.Pubrel{PacketID: 12})
		if a, ok := pub.Read().(*packet.Pubcomp); !ok || a.PacketID != 12 {
			t.Fatalf("got %+v", a)
		}
		p := sub.ReadPublish()
		if p.QoS != 2 || string(p.Payload) != "two" {
			t.Fatalf("got %+v", p)
		}
		sub.Send(&packet.Pubrec{PacketID: p.PacketID})
		if r, ok := sub.Read().(*packet.Pubrel); !ok || r.PacketID != p.PacketID {
			t.Fatalf("got %+v, want PUBREL %d", r, p.PacketID)
		}
		sub.Send(&packet.Pubcomp{PacketID: p.PacketID})
		pub.Ping()
		sub.ExpectNoPublish()
	})
	t.Run("PUBREL for an unknown id still gets PUBCOMP", func(t *testing.T) {
		pub.Send(&packet.Pubrel{PacketID: 999})
		if a, ok := pub.Read().(*packet.Pubcomp); !ok || a.PacketID != 999 {
			t.Fatalf("got %+v", a)
		}
	})
	t.Run("acks for unknown ids are ignored", func(t *testing.T) {
		sub.Send(&packet.Puback{PacketID: 4242})
		sub.Send(&packet.Pubrec{PacketID: 4243})
		sub.Send(&packet.Pubcomp{PacketID: 4244})
		sub.Ping()
		env.Logs.WaitFor(t, "acknowledgement ignored")
	})
	t.Run("MQTT-3.8.4-6 delivered at the minimum of published and granted QoS", func(t *testing.T) {
		s := iotdtest.Dial(t, env.Addr)
		s.MustConnect("low", true)
		s.Subscribe(1, 0, "q/down")
		pub.Send(&packet.Publish{Topic: []byte("q/down"), Payload: []byte("d"), QoS: 2, PacketID: 13})
		pub.Read()
		pub.Send(&packet.Pubrel{PacketID: 13})
		pub.Read()
		if p := s.ReadPublish(); p.QoS != 0 {
			t.Fatalf("got QoS %d, want 0", p.QoS)
		}
	})
}

func TestPersistentSession(t *testing.T) {
	env := start(t)
	c := iotdtest.Dial(t, env.Addr)
	if ack := c.MustConnect("p", false); ack.SessionPresent {
		t.Fatal("new session reported present")
	}
	c.Subscribe(1, 1, "p/#")
	c.Send(&packet.Disconnect{})
	c.ExpectClosed()
	iotdtest.Eventually(t, func() bool { return env.Server.Stats().Open == 0 }, "connection gone")

	t.Run("MQTT-3.2.2-2 MQTT-3.1.2-4 session present and subscriptions survive", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		if ack := c.MustConnect("p", false); !ack.SessionPresent {
			t.Fatal("session present not set")
		}
		pub := iotdtest.Dial(t, env.Addr)
		pub.MustConnect("pub", true)
		pub.Publish("p/x", "kept", false)
		if p := c.ReadPublish(); string(p.Payload) != "kept" {
			t.Fatalf("got %q", p.Payload)
		}
		c.Send(&packet.Disconnect{})
		c.ExpectClosed()
	})
	t.Run("MQTT-3.1.2-6 MQTT-3.2.2-1 clean session discards the stored one", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		if ack := c.MustConnect("p", true); ack.SessionPresent {
			t.Fatal("session present with clean session")
		}
		pub := iotdtest.Dial(t, env.Addr)
		pub.MustConnect("pub2", true)
		pub.Publish("p/x", "gone", false)
		pub.Ping()
		c.ExpectNoPublish()
		c.Send(&packet.Disconnect{})
		c.ExpectClosed()
		iotdtest.Eventually(t, func() bool { return env.Broker.Stats().Sessions == 1 }, "clean session removed (only pub2 left)")
	})
	t.Run("MQTT-4.4.0-1 unacknowledged QoS 1 re-sent with DUP after reconnect", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("r", false)
		c.Subscribe(1, 1, "r/1")
		pub := iotdtest.Dial(t, env.Addr)
		pub.MustConnect("pub3", true)
		pub.Send(&packet.Publish{Topic: []byte("r/1"), Payload: []byte("again"), QoS: 1, PacketID: 1})
		pub.Read()
		first := c.ReadPublish()
		c.Conn.Close() // no PUBACK, no DISCONNECT
		c2 := iotdtest.Dial(t, env.Addr)
		if ack := c2.MustConnect("r", false); !ack.SessionPresent {
			t.Fatal("session not present")
		}
		p := c2.ReadPublish()
		if !p.Dup || p.PacketID != first.PacketID || string(p.Payload) != "again" {
			t.Fatalf("got %+v, want DUP re-send of id %d", p, first.PacketID)
		}
		c2.Send(&packet.Puback{PacketID: p.PacketID})
	})
}

func TestTakeover(t *testing.T) {
	env := start(t)
	watcher := iotdtest.Dial(t, env.Addr)
	watcher.MustConnect("watcher", true)
	watcher.Subscribe(1, 0, "will/#")

	old := iotdtest.Dial(t, env.Addr)
	old.Connect(&packet.Connect{ClientID: "dup", CleanSession: true, KeepAlive: 60,
		Will: &packet.Will{Topic: "will/dup", Payload: []byte("old gone")}})
	t.Run("MQTT-3.1.4-2 same client id closes the old connection and publishes its will", func(t *testing.T) {
		nc := iotdtest.Dial(t, env.Addr)
		nc.MustConnect("dup", true)
		old.ExpectClosed()
		if p := watcher.ReadPublish(); string(p.Payload) != "old gone" {
			t.Fatalf("got %q", p.Payload)
		}
		env.Logs.WaitFor(t, "session taken over", "client_id=dup")
		nc.Ping()
		if n := env.Broker.Stats().Sessions; n != 2 {
			t.Fatalf("sessions %d, want 2", n)
		}
	})
}

func TestRetained(t *testing.T) {
	env := iotdtest.Start(t, server.Options{}, broker.Options{MaxRetained: 3, MaxRetainedPayload: 16})
	pub := iotdtest.Dial(t, env.Addr)
	pub.MustConnect("pub", true)
	pub.Publish("r/a", "first", true)
	pub.Publish("r/a", "second", true) // replaces
	pub.Publish("r/b/c", "deep", true)
	pub.Publish("r/none", "not retained", false)
	pub.Ping()

	t.Run("MQTT-3.3.1-5 MQTT-3.3.1-6 MQTT-3.3.1-8 delivered to new subscriptions with RETAIN", func(t *testing.T) {
		s := iotdtest.Dial(t, env.Addr)
		s.MustConnect("s1", true)
		s.Subscribe(1, 0, "r/#")
		got := map[string]string{}
		for i := 0; i < 2; i++ {
			p := s.ReadPublish()
			if !p.Retain {
				t.Fatalf("retain flag not set on %s", p.Topic)
			}
			got[string(p.Topic)] = string(p.Payload)
		}
		if got["r/a"] != "second" || got["r/b/c"] != "deep" {
			t.Fatalf("got %v", got)
		}
		s.ExpectNoPublish()
		t.Run("MQTT-3.3.1-9 live delivery has RETAIN 0", func(t *testing.T) {
			pub.Publish("r/a", "live", true)
			if p := s.ReadPublish(); p.Retain || string(p.Payload) != "live" {
				t.Fatalf("got retain %v %q", p.Retain, p.Payload)
			}
		})
	})
	t.Run("MQTT-3.3.1-10 MQTT-3.3.1-11 empty payload deletes", func(t *testing.T) {
		pub.Publish("r/b/c", "", true)
		pub.Ping()
		s := iotdtest.Dial(t, env.Addr)
		s.MustConnect("s2", true)
		s.Subscribe(1, 0, "r/b/#")
		s.ExpectNoPublish()
	})
	t.Run("MQTT-3.3.1-12 retain 0 neither stores nor replaces", func(t *testing.T) {
		pub.Publish("r/a", "plain", false)
		pub.Ping()
		s := iotdtest.Dial(t, env.Addr)
		s.MustConnect("s3", true)
		s.Subscribe(1, 0, "r/a")
		if p := s.ReadPublish(); string(p.Payload) != "live" {
			t.Fatalf("got %q, want the retained %q", p.Payload, "live")
		}
	})
	t.Run("limits: count and payload size", func(t *testing.T) {
		pub.Publish("r/big", strings.Repeat("x", 17), true)
		env.Logs.WaitFor(t, "retained message not stored: payload over the limit")
		for i := 0; i < 3; i++ {
			pub.Publish(fmt.Sprintf("r/n%d", i), "n", true)
		}
		env.Logs.WaitFor(t, "retained message not stored: retained limit reached")
		if st := env.Broker.Stats(); st.Retained != 3 || st.RetainRefused < 2 {
			t.Fatalf("stats %+v", st)
		}
		pub.Publish("r/a", "replaced", true)
		pub.Ping()
		s := iotdtest.Dial(t, env.Addr)
		s.MustConnect("s4", true)
		s.Subscribe(1, 0, "r/a")
		if p := s.ReadPublish(); string(p.Payload) != "replaced" {
			t.Fatalf("got %q", p.Payload)
		}
	})
	t.Run("retained QoS is the minimum of stored and granted", func(t *testing.T) {
		pub.Send(&packet.Publish{Topic: []byte("r/a"), Payload: []byte("q1"), QoS: 1, PacketID: 5, Retain: true})
		pub.Read()
		s := iotdtest.Dial(t, env.Addr)
		s.MustConnect("s5", true)
		s.Subscribe(1, 2, "r/a")
		p := s.ReadPublish()
		if p.QoS != 1 || !p.Retain || p.PacketID == 0 {
			t.Fatalf("got %+v", p)
		}
	})
}

func TestWill(t *testing.T) {
	env := iotdtest.Start(t, server.Options{Tick: 20e6}, broker.Options{})
	watcher := iotdtest.Dial(t, env.Addr)
	watcher.MustConnect("watcher", true)
	watcher.Subscribe(1, 1, "will/#")
	withWill := func(id string, retain bool, ka uint16) *iotdtest.Client {
		c := iotdtest.Dial(t, env.Addr)
		ack := c.Connect(&packet.Connect{ClientID: id, CleanSession: true, KeepAlive: ka,
			Will: &packet.Will{Topic: "will/" + id, Payload: []byte(id + " died"), QoS: 1, Retain: retain}})
		if ack.ReturnCode != 0 {
			t.Fatal(ack.ReturnCode)
		}
		return c
	}
	expectWill := func(id string) {
		t.Helper()
		p := watcher.ReadPublish()
		if string(p.Payload) != id+" died" || p.QoS != 1 {
			t.Fatalf("got %q QoS %d, want %q QoS 1", p.Payload, p.QoS, id+" died")
		}
		watcher.Send(&packet.Puback{PacketID: p.PacketID})
	}
	t.Run("MQTT-3.1.2-8 network close without DISCONNECT publishes the will", func(t *testing.T) {
		c := withWill("net", false, 60)
		c.Conn.Close()
		expectWill("net")
	})
	t.Run("MQTT-3.1.2-8 keep-alive timeout publishes the will", func(t *testing.T) {
		withWill("ka", false, 1)
		expectWill("ka")
	})
	t.Run("MQTT-3.1.2-8 protocol violation publishes the will", func(t *testing.T) {
		c := withWill("bad", false, 60)
		c.SendRaw([]byte{0xff, 0xff, 0xff})
		c.ExpectClosed()
		expectWill("bad")
	})
	t.Run("MQTT-3.1.2-10 MQTT-3.14.4-3 DISCONNECT discards the will", func(t *testing.T) {
		c := withWill("clean", false, 60)
		c.Send(&packet.Disconnect{})
		c.ExpectClosed()
		other := iotdtest.Dial(t, env.Addr)
		other.MustConnect("probe", true)
		other.Publish("will/probe", "marker", false)
		if p := watcher.ReadPublish(); string(p.Payload) != "marker" {
			t.Fatalf("got %q, want only the marker", p.Payload)
		}
	})
	t.Run("MQTT-3.1.2-17 will with retain is retained", func(t *testing.T) {
		c := withWill("ret", true, 60)
		c.Conn.Close()
		expectWill("ret")
		late := iotdtest.Dial(t, env.Addr)
		late.MustConnect("late", true)
		late.Subscribe(1, 1, "will/ret")
		p := late.ReadPublish()
		if !p.Retain || string(p.Payload) != "ret died" {
			t.Fatalf("got %+v", p)
		}
	})
	t.Run("server shutdown publishes wills", func(t *testing.T) {
		// covered by TestShutdown
	})
}
