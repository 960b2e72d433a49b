package server_test

// Raw-client tests of QoS 1/2 delivery that need the wire: retransmission on timeout, session
// expiry, duplicates from a publisher and packet identifier wrap-around.

import (
	"fmt"
	"testing"
	"time"

	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/iotdtest"
	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/server"
)

// readPublishAt reads the next packet, fails unless it is a PUBLISH and returns it with the time it
// was read.
func readPublishAt(t *testing.T, c *iotdtest.Client) (*packet.Publish, time.Time) {
	t.Helper()
	p := expectPacket[*packet.Publish](t, c)
	return p, time.Now()
}

// expectResend fails unless p is a re-send of first: same packet id, topic, payload and QoS,
// with DUP 1 ([MQTT-3.3.1-1]).
func expectResend(t *testing.T, p, first *packet.Publish) {
	t.Helper()
	if !p.Dup || p.PacketID != first.PacketID || p.QoS != first.QoS || string(p.Topic) != string(first.Topic) || string(p.Payload) != string(first.Payload) {
		t.Fatalf("got %+v, want a re-send with DUP 1 of %+v", p, first)
	}
}

// TestRetryOnTimeout checks the optional retransmission of unacknowledged messages to a client
// that stays connected: RetryInterval 200 ms, doubled after each retry. The broker's housekeeping
// runs once a second (broker.HousekeepInterval), so the retries come on its ticks; the test
// checks what is re-sent, in which order and with which flags, and of the timing only that the
// gaps grow, by a second against a nominal second.
func TestRetryOnTimeout(t *testing.T) {
	opts := broker.Options{RetryInterval: 200 * time.Millisecond, RetryMaxInterval: 10 * time.Second}
	t.Run("MQTT-3.3.1-1 MQTT-4.3.2-1 an unacknowledged QoS 1 PUBLISH is re-sent with DUP 1, in order, with growing gaps", func(t *testing.T) {
		t.Parallel()
		env := iotdtest.Start(t, server.Options{}, opts)
		sub := iotdtest.Dial(t, env.Addr)
		sub.MustConnect("retry1", true)
		sub.Subscribe(1, packet.QoS1, "retry/#")
		pub := iotdtest.Dial(t, env.Addr)
		pub.MustConnect("pub", true)
		publishQoS1(t, pub, "retry/a", "first", 1, false)
		publishQoS1(t, pub, "retry/b", "second", 2, false)
		a, sentAt := readPublishAt(t, sub)
		b := expectPacket[*packet.Publish](t, sub)
		if a.Dup || b.Dup || string(a.Payload) != "first" || string(b.Payload) != "second" {
			t.Fatalf("first sends %+v, %+v; want first then second with DUP 0", a, b)
		}
		const rounds = 4
		at := []time.Time{sentAt}
		for i := range rounds {
			p, when := readPublishAt(t, sub)
			expectResend(t, p, a) // re-sent in the order first sent ([MQTT-4.6.0-6])
			expectResend(t, expectPacket[*packet.Publish](t, sub), b)
			if i == 0 && when.Sub(sentAt) < 100*time.Millisecond {
				t.Fatalf("first retry %v after the send, before the retry interval (200 ms)", when.Sub(sentAt))
			}
			at = append(at, when)
		}
		// Nominal gaps with 1 s ticks: up to 1.2 s, then 1 s (400 ms due), 1 s (800 ms due),
		// 2 s (1.6 s due).
		if g2, g4 := at[2].Sub(at[1]), at[4].Sub(at[3]); g4 <= g2 {
			t.Errorf("gap before the 4th retry %v is not longer than before the 2nd %v: no backoff", g4, g2)
		}
		if got := env.Broker.Stats().Retried; got < 2*rounds {
			t.Errorf("Stats().Retried = %d, want at least %d", got, 2*rounds)
		}
		sub.Send(&packet.Puback{PacketID: a.PacketID})
		sub.Send(&packet.Puback{PacketID: b.PacketID})
		sub.ExpectNoPublish()
	})
	t.Run("MQTT-4.3.3-1 a QoS 2 PUBLISH is re-sent with DUP 1 until PUBREC, then only its PUBREL is re-sent", func(t *testing.T) {
		t.Parallel()
		env := iotdtest.Start(t, server.Options{}, opts)
		sub := iotdtest.Dial(t, env.Addr)
		sub.MustConnect("retry2", true)
		sub.Subscribe(1, packet.QoS2, "retry/#")
		pub := iotdtest.Dial(t, env.Addr)
		pub.MustConnect("pub", true)
		pub.Send(&packet.Publish{Topic: []byte("retry/2"), Payload: []byte("m"), QoS: packet.QoS2, PacketID: 9})
		expectPacket[*packet.Pubrec](t, pub)
		first := expectPacket[*packet.Publish](t, sub)
		if first.Dup || first.QoS != packet.QoS2 {
			t.Fatalf("first send %+v, want QoS 2 with DUP 0", first)
		}
		expectResend(t, expectPacket[*packet.Publish](t, sub), first)
		sub.Send(&packet.Pubrec{PacketID: first.PacketID})
		for i := range 2 { // the PUBREL that answers the PUBREC, then its retry
			if r := expectPacket[*packet.Pubrel](t, sub); r.PacketID != first.PacketID {
				t.Fatalf("PUBREL %d (%d), want %d", r.PacketID, i, first.PacketID)
			}
		}
		sub.Send(&packet.Pubcomp{PacketID: first.PacketID})
		sub.ExpectNoPublish()
		if got := env.Broker.Stats().Retried; got < 2 {
			t.Errorf("Stats().Retried = %d, want at least 2", got)
		}
	})
}

// TestSessionExpiry checks that a persistent session offline for longer than SessionExpiry is
// removed with its subscriptions and queued messages, while sessions that are connected, or that
// come back in time, are kept.
func TestSessionExpiry(t *testing.T) {
	env := iotdtest.Start(t, server.Options{}, broker.Options{SessionExpiry: time.Second})
	pub := iotdtest.Dial(t, env.Addr)
	pub.MustConnect("pub", true)
	var pid uint16
	publish := func(topic string) {
		t.Helper()
		pid++
		publishQoS1(t, pub, topic, "queued", pid, false)
	}
	// leave subscribes a persistent session to topic and disconnects it.
	leave := func(id, topic string) {
		t.Helper()
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect(id, false)
		c.Subscribe(1, packet.QoS1, topic)
		c.Send(&packet.Disconnect{})
		c.ExpectClosed()
	}
	online := iotdtest.Dial(t, env.Addr)
	online.MustConnect("online", false)
	online.Subscribe(1, packet.QoS1, "exp/online")
	leave("gone", "exp/gone")
	publish("exp/gone")
	leave("back", "exp/back")
	publish("exp/back")
	back := iotdtest.Dial(t, env.Addr)

	t.Run("MQTT-3.1.2-4 MQTT-4.1.0-1 a session that comes back in time is resumed", func(t *testing.T) {
		if ack := back.MustConnect("back", false); !ack.SessionPresent {
			t.Fatal("session present 0")
		}
		if p := back.ReadPublish(); string(p.Topic) != "exp/back" {
			t.Fatalf("got %+v, want the message queued while offline", p)
		}
	})
	t.Run("a session offline for longer than the expiry is removed", func(t *testing.T) {
		iotdtest.Eventually(t, func() bool { return env.Broker.Stats().Expired == 1 }, "one session expired")
		env.Logs.WaitFor(t, `msg="session expired"`, "client_id=gone ")
		c := iotdtest.Dial(t, env.Addr)
		if ack := c.MustConnect("gone", false); ack.SessionPresent {
			t.Fatal("session present 1 for an expired session")
		}
		c.ExpectNoPublish() // its queued message went with it
		publish("exp/gone")
		c.ExpectNoPublish() // and so did its subscription
	})
	t.Run("connected sessions do not expire", func(t *testing.T) {
		// Both stayed connected for longer than the expiry while the other session expired.
		publish("exp/online")
		if p := online.ReadPublish(); string(p.Topic) != "exp/online" {
			t.Fatalf("got %+v", p)
		}
		for _, c := range []*iotdtest.Client{online, back} {
			c.Conn.Close()
		}
		waitOpen(t, env, 1) // only pub
		for _, id := range []string{"online", "back"} {
			c := iotdtest.Dial(t, env.Addr)
			if ack := c.MustConnect(id, false); !ack.SessionPresent {
				t.Fatalf("%s: session present 0", id)
			}
		}
	})
}

// TestQoS2InboundDuplicates checks that a QoS 2 message is routed once however often its
// publisher sends it before PUBREL, on one connection or across a reconnect of its persistent
// session, and that after PUBREL the packet id starts a new message.
func TestQoS2InboundDuplicates(t *testing.T) {
	env := confStart(t)
	subs := map[packet.QoS]*iotdtest.Client{}
	for _, q := range []packet.QoS{packet.QoS1, packet.QoS2} {
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect(fmt.Sprintf("sub%d", q), true)
		c.Subscribe(1, q, "dup/#")
		subs[q] = c
	}
	// expectOnce checks that each subscriber gets payload, published at pubQoS, and acknowledges
	// it; expectNothing then proves that no second copy follows.
	expectOnce := func(t *testing.T, payload string, pubQoS packet.QoS) {
		t.Helper()
		for q, c := range subs {
			p := c.ReadPublish()
			if want := min(q, pubQoS); string(p.Payload) != payload || p.QoS != want || p.Dup {
				t.Fatalf("subscriber at QoS %d got %+v, want %q at QoS %d with DUP 0", q, p, payload, want)
			}
			ackPublish(t, c, p)
		}
	}
	expectNothing := func(t *testing.T) {
		t.Helper()
		for _, c := range subs {
			c.ExpectNoPublish()
		}
	}
	top := t // the reconnected publisher outlives the subtest that connects it
	pub := iotdtest.Dial(t, env.Addr)
	pub.MustConnect("dup-pub", false)
	send := func(t *testing.T, c *iotdtest.Client, p packet.Packet, want packet.Type, id uint16) {
		t.Helper()
		c.Send(p)
		got := c.Read()
		var gotID uint16
		switch a := got.(type) {
		case *packet.Pubrec:
			gotID = a.PacketID
		case *packet.Pubcomp:
			gotID = a.PacketID
		case *packet.Puback:
			gotID = a.PacketID
		}
		if got.Type() != want || gotID != id {
			t.Fatalf("got %T %+v, want %s %d", got, got, want, id)
		}
	}
	m := &packet.Publish{Topic: []byte("dup/t"), Payload: []byte("once"), QoS: packet.QoS2, PacketID: 7}

	t.Run("MQTT-4.3.3-2 a QoS 2 PUBLISH re-sent before PUBREL, also after a reconnect, is routed once", func(t *testing.T) {
		send(t, pub, m, packet.TypePubrec, 7)
		expectOnce(t, "once", packet.QoS2)
		dup := *m
		dup.Dup = true
		send(t, pub, &dup, packet.TypePubrec, 7) // [MQTT-4.3.3-2] PUBREC again, no second routing
		pub.Conn.Close()                         // the PUBREL never went out
		waitOpen(t, env, 2)
		pub = iotdtest.Dial(top, env.Addr)
		if ack := pub.MustConnect("dup-pub", false); !ack.SessionPresent {
			t.Fatal("publisher's session not present")
		}
		send(t, pub, &dup, packet.TypePubrec, 7) // [MQTT-4.4.0-1] the client re-sends it on reconnect
		send(t, pub, &packet.Pubrel{PacketID: 7}, packet.TypePubcomp, 7)
		expectNothing(t)
	})
	t.Run("MQTT-4.3.3-2 a repeated PUBREL is answered with PUBCOMP and routes nothing", func(t *testing.T) {
		send(t, pub, &packet.Pubrel{PacketID: 7}, packet.TypePubcomp, 7)
		expectNothing(t)
	})
	t.Run("MQTT-4.3.3-2 after PUBREL the packet id starts a new message", func(t *testing.T) {
		again := *m
		again.Payload = []byte("new")
		send(t, pub, &again, packet.TypePubrec, 7)
		expectOnce(t, "new", packet.QoS2)
		send(t, pub, &packet.Pubrel{PacketID: 7}, packet.TypePubcomp, 7)
		expectNothing(t)
	})
	t.Run("MQTT-4.3.2-2 MQTT-3.3.1-3 a QoS 1 PUBLISH with a packet id seen before is a new publication, sent on with DUP 0", func(t *testing.T) {
		q1 := &packet.Publish{Topic: []byte("dup/t"), Payload: []byte("q1"), QoS: packet.QoS1, PacketID: 8}
		send(t, pub, q1, packet.TypePuback, 8)
		expectOnce(t, "q1", packet.QoS1)
		dup := *q1
		dup.Dup = true
		send(t, pub, &dup, packet.TypePuback, 8)
		expectOnce(t, "q1", packet.QoS1) // delivered again, as a new message: DUP 0 ([MQTT-3.3.1-3])
		expectNothing(t)
	})
}

// TestPacketIDWrap delivers more than 65,535 QoS 1 messages to a subscriber that holds the first
// one unacknowledged: the broker's packet ids count up, wrap after 65,535 to 1, skip the id still
// in flight, and are never 0 ([MQTT-2.3.1-1], [MQTT-2.3.1-4]).
func TestPacketIDWrap(t *testing.T) {
	// The queue holds what the publisher sends ahead of the subscriber: nothing may be dropped.
	env := iotdtest.Start(t, server.Options{}, broker.Options{MaxQueued: 100000})
	sub := iotdtest.Dial(t, env.Addr)
	sub.MustConnect("wrap", true)
	sub.Subscribe(1, packet.QoS1, "wrap/t")
	pub := iotdtest.Dial(t, env.Addr)
	pub.MustConnect("pub", true)

	const total, batch = 65536 + 8, 512
	held := uint16(0) // the id of the first message, never acknowledged
	t.Run("MQTT-2.3.1-1 MQTT-2.3.1-4 packet ids are never 0, wrap after 65535 and skip the one in flight", func(t *testing.T) {
		done := make(chan error, 1)
		go func() { // the subscriber reads and acknowledges everything but the first
			prev := uint16(0)
			for i := range total {
				pk, err := sub.TryRead(iotdtest.Timeout)
				if err != nil {
					done <- fmt.Errorf("message %d: %v", i, err)
					return
				}
				p, ok := pk.(*packet.Publish)
				if !ok || p.PacketID == 0 || string(p.Payload) != fmt.Sprint(i) {
					done <- fmt.Errorf("message %d: got %T %+v", i, pk, pk)
					return
				}
				want := prev + 1
				switch {
				case i == 0:
					held = p.PacketID
					want = p.PacketID
				case prev == 65535:
					want = 1
				}
				if want == held && i > 0 {
					want++ // skipped: still in flight
				}
				if p.PacketID != want {
					done <- fmt.Errorf("message %d: packet id %d after %d, want %d (held %d)", i, p.PacketID, prev, want, held)
					return
				}
				prev = p.PacketID
				if i > 0 {
					if _, err := sub.Conn.Write((&packet.Puback{PacketID: p.PacketID}).Append(nil)); err != nil {
						done <- fmt.Errorf("PUBACK %d: %v", p.PacketID, err)
						return
					}
				}
			}
			done <- nil
		}()
		var buf []byte
		for i := 0; i < total; i += batch {
			buf = buf[:0]
			n := min(batch, total-i)
			for j := range n {
				buf = (&packet.Publish{Topic: []byte("wrap/t"), Payload: fmt.Append(nil, i+j), QoS: packet.QoS1, PacketID: uint16((i+j)%65535 + 1)}).Append(buf)
			}
			pub.SendRaw(buf)
			for range n {
				expectPacket[*packet.Puback](t, pub)
			}
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		sub.Send(&packet.Puback{PacketID: held})
		sub.ExpectNoPublish()
	})
}
