package session

import (
	"errors"
	"testing"

	"github.com/iotd/iotd/internal/packet"
)

func TestSubscribe(t *testing.T) {
	s := New("c", false)
	if !s.Subscribe("a/#", packet.QoS1) {
		t.Fatal("first Subscribe: got added=false")
	}
	t.Run("MQTT-3.8.4-3 replacing keeps one entry with the new QoS", func(t *testing.T) {
		if s.Subscribe("a/#", packet.QoS2) {
			t.Fatal("second Subscribe: got added=true")
		}
		if got := s.Subscriptions["a/#"]; got != packet.QoS2 || len(s.Subscriptions) != 1 {
			t.Fatalf("got %v (%d filters), want QoS 2 and 1 filter", got, len(s.Subscriptions))
		}
	})
	if !s.Unsubscribe("a/#") || s.Unsubscribe("a/#") {
		t.Fatal("Unsubscribe: want true then false")
	}
}

func TestPacketIDs(t *testing.T) {
	msg := &Message{Topic: "t", Payload: []byte("x"), QoS: packet.QoS1}
	t.Run("MQTT-2.3.1-2 ids count up and skip ids in flight", func(t *testing.T) {
		s := New("c", false)
		a, _ := s.Send(msg, packet.QoS1)
		b, _ := s.Send(msg, packet.QoS1)
		if a.PacketID != 1 || b.PacketID != 2 {
			t.Fatalf("got %d, %d, want 1, 2", a.PacketID, b.PacketID)
		}
		if err := s.Puback(1); err != nil {
			t.Fatal(err)
		}
		s.lastID = 65534
		c, _ := s.Send(msg, packet.QoS1)
		d, _ := s.Send(msg, packet.QoS1) // wraps past 65535 to 1 (free again)
		e, _ := s.Send(msg, packet.QoS1) // 2 is still in flight: skipped
		if c.PacketID != 65535 || d.PacketID != 1 || e.PacketID != 3 {
			t.Fatalf("got %d, %d, %d, want 65535, 1, 3", c.PacketID, d.PacketID, e.PacketID)
		}
	})
	t.Run("exhaustion returns ErrNoPacketID", func(t *testing.T) {
		s := New("c", false)
		for i := 0; i < 65535; i++ {
			if _, err := s.Send(msg, packet.QoS1); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
		}
		if _, err := s.Send(msg, packet.QoS1); !errors.Is(err, ErrNoPacketID) {
			t.Fatalf("got %v, want ErrNoPacketID", err)
		}
		if err := s.Puback(777); err != nil {
			t.Fatal(err)
		}
		f, err := s.Send(msg, packet.QoS1)
		if err != nil || f.PacketID != 777 {
			t.Fatalf("after freeing 777: got %v, %v", f, err)
		}
	})
}

func TestQoS2Outbound(t *testing.T) {
	s := New("c", false)
	msg := &Message{Topic: "t", QoS: packet.QoS2}
	f, _ := s.Send(msg, packet.QoS2)
	if f.State != AwaitPubrec {
		t.Fatalf("state %v, want AwaitPubrec", f.State)
	}
	if err := s.Pubcomp(f.PacketID); !errors.Is(err, ErrUnknownPacketID) {
		t.Fatalf("PUBCOMP before PUBREC: got %v", err)
	}
	if err := s.Puback(f.PacketID); !errors.Is(err, ErrUnknownPacketID) {
		t.Fatalf("PUBACK for QoS 2: got %v", err)
	}
	if err := s.Pubrec(f.PacketID); err != nil || f.State != AwaitPubcomp || f.Msg != nil {
		t.Fatalf("PUBREC: %v, state %v", err, f.State)
	}
	if err := s.Pubrec(f.PacketID); err != nil {
		t.Fatalf("duplicate PUBREC: %v", err)
	}
	if got := s.Inflight(); len(got) != 1 || got[0] != f {
		t.Fatalf("Inflight() = %v", got)
	}
	if err := s.Pubcomp(f.PacketID); err != nil || s.InflightLen() != 0 {
		t.Fatalf("PUBCOMP: %v, inflight %d", err, s.InflightLen())
	}
	if err := s.Pubrec(99); !errors.Is(err, ErrUnknownPacketID) {
		t.Fatalf("PUBREC unknown: %v", err)
	}
	q1, _ := s.Send(msg, packet.QoS1)
	if err := s.Pubrec(q1.PacketID); !errors.Is(err, ErrUnknownPacketID) {
		t.Fatalf("PUBREC for QoS 1: %v", err)
	}
}

func TestInflightOrder(t *testing.T) {
	s := New("c", false)
	msg := &Message{Topic: "t"}
	var ids []uint16
	for i := 0; i < 5; i++ {
		f, _ := s.Send(msg, packet.QoS1)
		ids = append(ids, f.PacketID)
	}
	s.Puback(ids[2])
	got := s.Inflight()
	want := []uint16{ids[0], ids[1], ids[3], ids[4]}
	for i, f := range got {
		if f.PacketID != want[i] {
			t.Fatalf("MQTT-4.6.0-1 order: got %d at %d, want %d", f.PacketID, i, want[i])
		}
	}
}

func TestQoS2Inbound(t *testing.T) {
	s := New("c", false)
	t.Run("MQTT-4.3.3-2 retransmission before PUBREL is not new", func(t *testing.T) {
		if !s.ReceiveQoS2(5) || s.ReceiveQoS2(5) || s.AwaitingRelLen() != 1 {
			t.Fatal("want new, then duplicate")
		}
	})
	if !s.Pubrel(5) || s.Pubrel(5) {
		t.Fatal("Pubrel: want known, then unknown")
	}
	if !s.ReceiveQoS2(5) {
		t.Fatal("after PUBREL the id is new again")
	}
}

func TestNewMessageCopies(t *testing.T) {
	topic, payload := []byte("a/b"), []byte("xy")
	m := NewMessage(topic, payload, packet.QoS1, true)
	topic[0], payload[0] = 'z', 'z'
	if m.Topic != "a/b" || string(m.Payload) != "xy" || m.QoS != packet.QoS1 || !m.Retain {
		t.Fatalf("got %+v", m)
	}
}

func TestQueue(t *testing.T) {
	s := New("c", false)
	m1, m2, m3 := &Message{Topic: "1"}, &Message{Topic: "2"}, &Message{Topic: "3"}
	t.Run("MQTT-3.1.2-5 messages kept in order up to the limit", func(t *testing.T) {
		if !s.Queue(m1, packet.QoS1, 2) || !s.Queue(m2, packet.QoS2, 2) || s.Queue(m3, packet.QoS1, 2) {
			t.Fatal("want two queued, the third refused")
		}
		if s.QueueLen() != 2 {
			t.Fatalf("QueueLen %d", s.QueueLen())
		}
	})
	f, ok := s.SendQueued()
	if !ok || f.Msg != m1 || f.QoS != packet.QoS1 || f.State != AwaitPuback {
		t.Fatalf("first: %+v %v", f, ok)
	}
	f, ok = s.SendQueued()
	if !ok || f.Msg != m2 || f.State != AwaitPubrec || s.QueueLen() != 0 {
		t.Fatalf("second: %+v %v", f, ok)
	}
	if _, ok := s.SendQueued(); ok {
		t.Fatal("empty queue sent something")
	}
	t.Run("stays queued while no packet id is free", func(t *testing.T) {
		s := New("c", false)
		for i := 0; i < 65535; i++ {
			s.Send(m1, packet.QoS1)
		}
		s.Queue(m3, packet.QoS1, 10)
		if _, ok := s.SendQueued(); ok || s.QueueLen() != 1 {
			t.Fatal("sent without a free id")
		}
		s.Puback(9)
		if f, ok := s.SendQueued(); !ok || f.PacketID != 9 || f.Msg != m3 {
			t.Fatalf("after PUBACK 9: %+v %v", f, ok)
		}
	})
}
