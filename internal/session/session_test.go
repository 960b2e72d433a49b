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
		a, _ := s.Send(msg, packet.QoS1, 0, 0)
		b, _ := s.Send(msg, packet.QoS1, 0, 0)
		if a.PacketID != 1 || b.PacketID != 2 {
			t.Fatalf("got %d, %d, want 1, 2", a.PacketID, b.PacketID)
		}
		if _, err := s.Puback(1); err != nil {
			t.Fatal(err)
		}
		s.lastID = 65534
		c, _ := s.Send(msg, packet.QoS1, 0, 0)
		d, _ := s.Send(msg, packet.QoS1, 0, 0) // wraps past 65535 to 1 (free again)
		e, _ := s.Send(msg, packet.QoS1, 0, 0) // 2 is still in flight: skipped
		if c.PacketID != 65535 || d.PacketID != 1 || e.PacketID != 3 {
			t.Fatalf("got %d, %d, %d, want 65535, 1, 3", c.PacketID, d.PacketID, e.PacketID)
		}
	})
	t.Run("exhaustion returns ErrNoPacketID", func(t *testing.T) {
		s := New("c", false)
		for i := 0; i < 65535; i++ {
			if _, err := s.Send(msg, packet.QoS1, 0, 0); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
		}
		if _, err := s.Send(msg, packet.QoS1, 0, 0); !errors.Is(err, ErrNoPacketID) {
			t.Fatalf("got %v, want ErrNoPacketID", err)
		}
		if _, err := s.Puback(777); err != nil {
			t.Fatal(err)
		}
		f, err := s.Send(msg, packet.QoS1, 0, 0)
		if err != nil || f.PacketID != 777 {
			t.Fatalf("after freeing 777: got %v, %v", f, err)
		}
	})
}

func TestQoS2Outbound(t *testing.T) {
	s := New("c", false)
	msg := &Message{Topic: "t", QoS: packet.QoS2}
	f, _ := s.Send(msg, packet.QoS2, 0, 0)
	if f.State != AwaitPubrec {
		t.Fatalf("state %v, want AwaitPubrec", f.State)
	}
	if _, err := s.Pubcomp(f.PacketID); !errors.Is(err, ErrUnknownPacketID) {
		t.Fatalf("PUBCOMP before PUBREC: got %v", err)
	}
	if _, err := s.Puback(f.PacketID); !errors.Is(err, ErrUnknownPacketID) {
		t.Fatalf("PUBACK for QoS 2: got %v", err)
	}
	if _, _, err := s.Pubrec(f.PacketID, 0); err != nil || f.State != AwaitPubcomp || f.Msg != nil {
		t.Fatalf("PUBREC: %v, state %v", err, f.State)
	}
	if _, _, err := s.Pubrec(f.PacketID, 0); err != nil {
		t.Fatalf("duplicate PUBREC: %v", err)
	}
	if got := s.Inflight(); len(got) != 1 || got[0] != f {
		t.Fatalf("Inflight() = %v", got)
	}
	if _, err := s.Pubcomp(f.PacketID); err != nil || s.InflightLen() != 0 {
		t.Fatalf("PUBCOMP: %v, inflight %d", err, s.InflightLen())
	}
	if _, _, err := s.Pubrec(99, 0); !errors.Is(err, ErrUnknownPacketID) {
		t.Fatalf("PUBREC unknown: %v", err)
	}
	q1, _ := s.Send(msg, packet.QoS1, 0, 0)
	if _, _, err := s.Pubrec(q1.PacketID, 0); !errors.Is(err, ErrUnknownPacketID) {
		t.Fatalf("PUBREC for QoS 1: %v", err)
	}
}

func TestInflightOrder(t *testing.T) {
	s := New("c", false)
	msg := &Message{Topic: "t"}
	var ids []uint16
	for i := 0; i < 5; i++ {
		f, _ := s.Send(msg, packet.QoS1, 0, 0)
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
		if !s.Queue(m1, packet.QoS1, 2, 0) || !s.Queue(m2, packet.QoS2, 2, 0) || s.Queue(m3, packet.QoS1, 2, 0) {
			t.Fatal("want two queued, the third refused")
		}
		if s.QueueLen() != 2 || s.QueueBytes() != 2 {
			t.Fatalf("QueueLen %d QueueBytes %d", s.QueueLen(), s.QueueBytes())
		}
	})
	q, f, ok := s.Dequeue(0, 5)
	if !ok || q.Msg != m1 || f.Msg != m1 || f.QoS != packet.QoS1 || f.State != AwaitPuback || f.SentAt != 5 {
		t.Fatalf("first: %+v %v", f, ok)
	}
	_, f, ok = s.Dequeue(0, 5)
	if !ok || f.Msg != m2 || f.State != AwaitPubrec || s.QueueLen() != 0 || s.QueueBytes() != 0 {
		t.Fatalf("second: %+v %v", f, ok)
	}
	if _, _, ok := s.Dequeue(0, 5); ok {
		t.Fatal("empty queue sent something")
	}
	t.Run("byte limit", func(t *testing.T) {
		s := New("c", false)
		big := &Message{Topic: "t", Payload: make([]byte, 99)}
		if !s.Queue(big, packet.QoS1, 10, 200) || !s.Queue(big, packet.QoS1, 10, 200) || s.Queue(big, packet.QoS1, 10, 200) {
			t.Fatal("want two 100-byte messages under 200 bytes, the third refused")
		}
	})
	t.Run("QoS 0 is dequeued without a packet id", func(t *testing.T) {
		s := New("c", false)
		s.Queue(m1, packet.QoS0, 10, 0)
		q, f, ok := s.Dequeue(1, 0)
		if !ok || f != nil || q.Msg != m1 || q.QoS != packet.QoS0 || s.InflightLen() != 0 {
			t.Fatalf("got %+v %+v %v", q, f, ok)
		}
	})
	t.Run("stays queued while the window is full", func(t *testing.T) {
		s := New("c", false)
		a, _ := s.Send(m1, packet.QoS1, 1, 0)
		if _, err := s.Send(m2, packet.QoS1, 1, 0); !errors.Is(err, ErrWindowFull) {
			t.Fatalf("Send over the window: %v", err)
		}
		s.Queue(m2, packet.QoS1, 10, 0)
		if _, _, ok := s.Dequeue(1, 0); ok {
			t.Fatal("dequeued into a full window")
		}
		s.Puback(a.PacketID)
		if _, f, ok := s.Dequeue(1, 0); !ok || f.Msg != m2 {
			t.Fatal("not dequeued after the window opened")
		}
	})
	t.Run("stays queued while no packet id is free", func(t *testing.T) {
		s := New("c", false)
		for i := 0; i < 65535; i++ {
			s.Send(m1, packet.QoS1, 0, 0)
		}
		s.Queue(m3, packet.QoS1, 10, 0)
		if _, _, ok := s.Dequeue(0, 0); ok || s.QueueLen() != 1 {
			t.Fatal("sent without a free id")
		}
		s.Puback(9)
		if _, f, ok := s.Dequeue(0, 0); !ok || f.PacketID != 9 || f.Msg != m3 {
			t.Fatalf("after PUBACK 9: %+v %v", f, ok)
		}
	})
}

func TestDue(t *testing.T) {
	s := New("c", false)
	m := &Message{Topic: "t"}
	a, _ := s.Send(m, packet.QoS1, 0, 0)
	b, _ := s.Send(m, packet.QoS2, 0, 50)
	var got []uint16
	collect := func(f *Inflight) { got = append(got, f.PacketID) }
	s.Due(99, 100, 1000, collect)
	if len(got) != 0 {
		t.Fatalf("due before the interval: %v", got)
	}
	s.Due(100, 100, 1000, collect) // a is due (sent at 0), b not yet (sent at 50)
	if len(got) != 1 || got[0] != a.PacketID || a.Attempts != 1 || a.SentAt != 100 {
		t.Fatalf("got %v, a=%+v", got, a)
	}
	got = nil
	s.Due(250, 100, 1000, collect) // b due (200 since 50); a waits 200 after its first retry (at 300)
	if len(got) != 1 || got[0] != b.PacketID {
		t.Fatalf("got %v", got)
	}
	got = nil
	s.Due(300, 100, 1000, collect)
	if len(got) != 1 || got[0] != a.PacketID || a.Attempts != 2 {
		t.Fatalf("exponential backoff: got %v, a=%+v", got, a)
	}
	a.Attempts = 40 // the interval is capped at maxInterval however many retries
	got = nil
	s.Due(1300, 100, 1000, collect)
	if len(got) != 2 {
		t.Fatalf("cap: got %v", got)
	}
	if _, _, err := s.Pubrec(b.PacketID, 1400); err != nil || b.Attempts != 0 || b.SentAt != 1400 {
		t.Fatalf("PUBREC resets the backoff: %v %+v", err, b)
	}
}

func TestQuietSessionReleasesFlowState(t *testing.T) {
	s := New("c", false)
	m := &Message{Topic: "t"}
	if s.Queue(m, packet.QoS1, 0, 0) || s.st != nil {
		t.Fatal("a refused message allocated flow state")
	}
	f, _ := s.Send(m, packet.QoS1, 0, 0)
	s.ReceiveQoS2(7)
	s.Queue(m, packet.QoS1, 1, 0)
	s.Puback(f.PacketID)
	s.Pubrel(7)
	if s.st == nil {
		t.Fatal("released while a message is still queued")
	}
	s.Dequeue(0, 0)
	s.Puback(2)
	if s.st != nil {
		t.Fatalf("flow state kept after everything completed: %+v", s.st)
	}
}

func TestOldestSentBefore(t *testing.T) {
	s := New("c", false)
	if s.OldestSentBefore(100) {
		t.Fatal("nothing in flight")
	}
	m := &Message{Topic: "t"}
	a, _ := s.Send(m, packet.QoS1, 0, 10)
	s.Send(m, packet.QoS1, 0, 50)
	if !s.OldestSentBefore(20) || s.OldestSentBefore(10) {
		t.Fatal("oldest is the one sent at 10")
	}
	s.Puback(a.PacketID)
	if s.OldestSentBefore(20) || !s.OldestSentBefore(51) {
		t.Fatal("oldest is now the one sent at 50")
	}
}

func TestSequenceAndRestore(t *testing.T) {
	s := New("c", false)
	m1, m2, m3 := &Message{Topic: "a"}, &Message{Topic: "b"}, &Message{Topic: "c"}
	f1, err := s.Send(m1, packet.QoS1, 0, 0)
	if err != nil || f1.Seq != 1 || s.LastSeq() != 1 {
		t.Fatalf("Send: %+v %v, LastSeq %d", f1, err, s.LastSeq())
	}
	if !s.Queue(m2, packet.QoS2, 10, 0) || s.LastSeq() != 2 {
		t.Fatalf("Queue: LastSeq %d", s.LastSeq())
	}
	if _, err := s.Send(m3, packet.QoS1, 1, 0); err != ErrWindowFull || s.LastSeq() != 2 {
		t.Fatalf("a refused Send used a sequence number: %v, %d", err, s.LastSeq())
	}
	// A queued message keeps its number when it moves into flight.
	if done, err := s.Puback(f1.PacketID); err != nil || done != f1 {
		t.Fatalf("Puback returned %+v, %v; want the completed delivery", done, err)
	}
	_, f2, ok := s.Dequeue(0, 0)
	if !ok || f2.Seq != 2 {
		t.Fatalf("Dequeue: %+v %v", f2, ok)
	}
	s.Queue(m3, packet.QoS1, 10, 0)
	var seen []string
	s.Each(func(m *Message) { seen = append(seen, m.Topic) })
	if len(seen) != 2 || seen[0] != "b" || seen[1] != "c" {
		t.Fatalf("Each saw %v", seen)
	}
	s.Pubrec(f2.PacketID, 0) // its message is no longer held
	seen = nil
	s.Each(func(m *Message) { seen = append(seen, m.Topic) })
	if len(seen) != 1 || seen[0] != "c" {
		t.Fatalf("Each after PUBREC saw %v", seen)
	}

	// Restore rebuilds the same state in a new session, in sequence order.
	r := New("c", false)
	r.Restore(&Inflight{PacketID: 7, QoS: packet.QoS2, State: AwaitPubcomp, Seq: 2}, nil)
	r.Restore(&Inflight{PacketID: 7, QoS: packet.QoS2, State: AwaitPubcomp, Seq: 2}, nil) // again: replaced, not doubled
	r.Restore(nil, &Queued{Msg: m3, QoS: packet.QoS1, Seq: 5})
	if r.InflightLen() != 1 || r.QueueLen() != 1 || r.QueueBytes() != 1 || r.LastSeq() != 5 {
		t.Fatalf("restored: inflight %d queue %d bytes %d seq %d", r.InflightLen(), r.QueueLen(), r.QueueBytes(), r.LastSeq())
	}
	if _, err := r.Pubcomp(7); err != nil {
		t.Fatalf("Pubcomp of a restored id: %v", err)
	}
	q, f, ok := r.Dequeue(0, 0)
	if !ok || q.Seq != 5 || f.Seq != 5 || f.PacketID != 8 {
		t.Fatalf("dequeued after restore: %+v %+v (ids continue after the restored ones)", q, f)
	}
	if !r.Queue(m1, packet.QoS1, 10, 0) || r.LastSeq() != 6 {
		t.Fatalf("next sequence after restore %d, want 6", r.LastSeq())
	}
}
