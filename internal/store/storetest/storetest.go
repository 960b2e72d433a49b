// Package storetest is the conformance suite every store.Backend runs: the same operations, the
// same expected records, checked after closing and reopening the backend.
//
// A backend's test calls
//
//	storetest.Run(t, func(t *testing.T, dir string) store.Backend { ... open the backend in dir ... })
//
// open is called once per subtest with a fresh directory, and again with the same directory after
// the suite closed the backend, to check what survived. It fails the test itself on error.
package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/store"
)

// Opener opens (or reopens) a backend in dir.
type Opener func(t *testing.T, dir string) store.Backend

// Run runs the conformance suite against the backend open opens.
func Run(t *testing.T, open Opener) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			be := open(t, dir)
			reopen := func() store.Backend {
				t.Helper()
				if err := be.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				be = open(t, dir)
				return be
			}
			tc.run(t, be, reopen)
			if err := be.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
		})
	}
	t.Run("log and recovery", func(t *testing.T) { testLog(t, open) })
}

type testCase struct {
	name string
	run  func(t *testing.T, be store.Backend, reopen func() store.Backend)
}

// Records returns every record of be as canonical strings, sorted, for comparison.
func Records(t testing.TB, be store.Backend) []string {
	t.Helper()
	var out []string
	err := be.Load(func(op *store.Op) error {
		out = append(out, canon(op))
		return nil
	})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	slices.Sort(out)
	return out
}

func canon(op *store.Op) string {
	switch op.Kind {
	case store.PutSession:
		s := op.Session
		w := "none"
		if s.Will != nil {
			w = fmt.Sprintf("%q:%x:q%d:r%v", s.Will.Topic, s.Will.Payload, s.Will.QoS, s.Will.Retain)
		}
		return fmt.Sprintf("session %q id=%q will=%s at=%d", op.ClientID, s.ClientID, w, s.DisconnectedAt)
	case store.PutSubscription:
		return fmt.Sprintf("sub %q %q q%d", op.ClientID, op.Name, op.QoS)
	case store.PutRetained:
		return fmt.Sprintf("retained %q %x q%d", op.Name, op.Payload, op.QoS)
	case store.PutMessage:
		return fmt.Sprintf("message %d %q %x q%d r%v", op.ID, op.Name, op.Payload, op.QoS, op.Retain)
	case store.PutOutbound:
		o := op.Outbound
		return fmt.Sprintf("outbound %q seq=%d msg=%d q%d state=%d pid=%d", op.ClientID, o.Seq, o.MsgID, o.QoS, o.State, o.PacketID)
	case store.PutInbound:
		return fmt.Sprintf("inbound %q %d", op.ClientID, op.PacketID)
	}
	return "unexpected " + op.Kind.String()
}

// expect compares the backend's records, now and after a reopen, with want (canonical strings in
// any order).
func expect(t *testing.T, be store.Backend, reopen func() store.Backend, want ...string) store.Backend {
	t.Helper()
	want = slices.Clone(want)
	slices.Sort(want)
	check := func(when string) {
		t.Helper()
		got := Records(t, be)
		if !slices.Equal(got, want) {
			t.Fatalf("records %s:\n got  %q\n want %q", when, got, want)
		}
	}
	check("before reopen")
	be = reopen()
	check("after reopen")
	return be
}

func commit(t *testing.T, be store.Backend, sync bool, ops ...store.Op) {
	t.Helper()
	if err := be.Commit(ops, sync); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

func sess(id string, will *store.Message, at int64) store.Op {
	return store.Op{Kind: store.PutSession, ClientID: id, Session: &store.Session{ClientID: id, Will: will, DisconnectedAt: at}}
}

func sub(id, filter string, q packet.QoS) store.Op {
	return store.Op{Kind: store.PutSubscription, ClientID: id, Name: filter, QoS: q}
}

func msg(id uint64, topic, payload string, q packet.QoS) store.Op {
	return store.Op{Kind: store.PutMessage, ID: id, Name: topic, Payload: []byte(payload), QoS: q}
}

func out(id string, seq, msgID uint64, q packet.QoS, st store.State, pid uint16) store.Op {
	return store.Op{Kind: store.PutOutbound, ClientID: id, Outbound: store.Outbound{Seq: seq, MsgID: msgID, QoS: q, State: st, PacketID: pid}}
}

func in(id string, pid uint16) store.Op {
	return store.Op{Kind: store.PutInbound, ClientID: id, PacketID: pid}
}

func ret(topic, payload string, q packet.QoS) store.Op {
	return store.Op{Kind: store.PutRetained, Name: topic, Payload: []byte(payload), QoS: q}
}

func canonOf(ops ...store.Op) []string {
	var s []string
	for i := range ops {
		s = append(s, canon(&ops[i]))
	}
	return s
}

var cases = []testCase{
	{"new store is empty with version 0", func(t *testing.T, be store.Backend, reopen func() store.Backend) {
		if v, err := be.Version(); err != nil || v != 0 {
			t.Fatalf("Version = %d, %v; want 0", v, err)
		}
		expect(t, be, reopen)
	}},
	{"version is kept", func(t *testing.T, be store.Backend, reopen func() store.Backend) {
		if err := be.SetVersion(7); err != nil {
			t.Fatal(err)
		}
		be = reopen()
		if v, err := be.Version(); err != nil || v != 7 {
			t.Fatalf("Version = %d, %v; want 7", v, err)
		}
	}},
	{"every kind round-trips", func(t *testing.T, be store.Backend, reopen func() store.Backend) {
		will := &store.Message{Topic: "will/t", Payload: []byte("gone"), QoS: packet.QoS1, Retain: true}
		ops := []store.Op{
			sess("c1", will, 0), sess("c2", nil, 1_700_000_000_000_000_000),
			sub("c1", "a/+/b", packet.QoS1), sub("c1", "#", packet.QoS2), sub("c2", "x", packet.QoS0),
			ret("r/1", "one", packet.QoS1), ret("r/2", "", packet.QoS0),
			msg(1, "m/1", "payload", packet.QoS2), {Kind: store.PutMessage, ID: 1 << 40, Name: "m/2", Payload: []byte{0, 1, 2, 255}, QoS: packet.QoS1, Retain: true},
			out("c1", 1, 1, packet.QoS2, store.AwaitPubrec, 65535), out("c1", 2, 1<<40, packet.QoS1, store.Queued, 0),
			out("c2", 1<<50, 0, packet.QoS2, store.AwaitPubcomp, 1), out("c2", 3, 1, packet.QoS1, store.AwaitPuback, 7),
			in("c1", 1), in("c1", 65535), in("c2", 300),
		}
		commit(t, be, true, ops...)
		expect(t, be, reopen, canonOf(ops...)...)
	}},
	{"put replaces", func(t *testing.T, be store.Backend, reopen func() store.Backend) {
		commit(t, be, true, sess("c", &store.Message{Topic: "w", Payload: []byte("1")}, 0), sub("c", "f", packet.QoS0),
			ret("r", "old", packet.QoS0), msg(5, "t", "old", packet.QoS1), out("c", 1, 5, packet.QoS1, store.Queued, 0))
		commit(t, be, false, sess("c", nil, 42), sub("c", "f", packet.QoS2), ret("r", "new", packet.QoS2),
			msg(5, "t2", "new", packet.QoS2), out("c", 1, 5, packet.QoS2, store.AwaitPubrec, 9))
		expect(t, be, reopen, canonOf(sess("c", nil, 42), sub("c", "f", packet.QoS2), ret("r", "new", packet.QoS2),
			msg(5, "t2", "new", packet.QoS2), out("c", 1, 5, packet.QoS2, store.AwaitPubrec, 9))...)
	}},
	{"deletes remove, missing ones are fine", func(t *testing.T, be store.Backend, reopen func() store.Backend) {
		commit(t, be, true, sess("c", nil, 0), sub("c", "f", packet.QoS0), sub("c", "g", packet.QoS1), ret("r", "x", packet.QoS0),
			ret("s", "y", packet.QoS0), msg(1, "t", "p", packet.QoS1), msg(2, "t", "p", packet.QoS1),
			out("c", 1, 1, packet.QoS1, store.Queued, 0), out("c", 2, 2, packet.QoS1, store.Queued, 0), in("c", 4), in("c", 5))
		commit(t, be, true,
			store.Op{Kind: store.DeleteSubscription, ClientID: "c", Name: "f"},
			store.Op{Kind: store.DeleteRetained, Name: "r"},
			store.Op{Kind: store.DeleteMessage, ID: 1},
			store.Op{Kind: store.DeleteOutbound, ClientID: "c", ID: 1},
			store.Op{Kind: store.DeleteInbound, ClientID: "c", PacketID: 4},
			// none of these exist
			store.Op{Kind: store.DeleteSubscription, ClientID: "zz", Name: "f"},
			store.Op{Kind: store.DeleteRetained, Name: "nope"},
			store.Op{Kind: store.DeleteMessage, ID: 99},
			store.Op{Kind: store.DeleteOutbound, ClientID: "c", ID: 99},
			store.Op{Kind: store.DeleteInbound, ClientID: "c", PacketID: 99},
			store.Op{Kind: store.DeleteSession, ClientID: "nobody"},
		)
		expect(t, be, reopen, canonOf(sess("c", nil, 0), sub("c", "g", packet.QoS1), ret("s", "y", packet.QoS0),
			msg(2, "t", "p", packet.QoS1), out("c", 2, 2, packet.QoS1, store.Queued, 0), in("c", 5))...)
	}},
	{"delete session removes only that client's records", func(t *testing.T, be store.Backend, reopen func() store.Backend) {
		ids := []string{"a", "ab", "a/b", "a\x01", "b", "", "ä", "a b"}
		var ops []store.Op
		for _, id := range ids {
			ops = append(ops, sess(id, nil, 0), sub(id, "f/"+id, packet.QoS1), out(id, 1, 0, packet.QoS2, store.AwaitPubcomp, 1), in(id, 2))
		}
		commit(t, be, true, ops...)
		commit(t, be, true, store.Op{Kind: store.DeleteSession, ClientID: "a"}, store.Op{Kind: store.DeleteSession, ClientID: ""})
		var want []store.Op
		for _, id := range ids {
			if id != "a" && id != "" {
				want = append(want, sess(id, nil, 0), sub(id, "f/"+id, packet.QoS1), out(id, 1, 0, packet.QoS2, store.AwaitPubcomp, 1), in(id, 2))
			}
		}
		expect(t, be, reopen, canonOf(want...)...)
	}},
	{"order within a commit", func(t *testing.T, be store.Backend, reopen func() store.Backend) {
		commit(t, be, true,
			ret("r", "1", packet.QoS0), store.Op{Kind: store.DeleteRetained, Name: "r"}, // put then delete: gone
			store.Op{Kind: store.DeleteRetained, Name: "s"}, ret("s", "2", packet.QoS0), // delete then put: there
			msg(1, "t", "a", packet.QoS1), store.Op{Kind: store.DeleteMessage, ID: 1}, msg(1, "t", "b", packet.QoS1),
			sess("c", nil, 0), sub("c", "x", packet.QoS0), store.Op{Kind: store.DeleteSession, ClientID: "c"}, sess("c", nil, 1), in("c", 3),
		)
		expect(t, be, reopen, canonOf(ret("s", "2", packet.QoS0), msg(1, "t", "b", packet.QoS1), sess("c", nil, 1), in("c", 3))...)
	}},
	{"large and empty payloads, unusual names", func(t *testing.T, be store.Backend, reopen func() store.Backend) {
		big := strings.Repeat("x", 1<<20)
		ops := []store.Op{
			ret("big", big, packet.QoS1), ret("τοπικό/😀/ spaced ", "u", packet.QoS0), ret("/", "slash", packet.QoS0),
			msg(3, "e", "", packet.QoS1), msg(4, "big", big, packet.QoS2),
			sess("s", &store.Message{Topic: "w", Payload: []byte(big), QoS: packet.QoS2}, 0),
		}
		commit(t, be, true, ops...)
		expect(t, be, reopen, canonOf(ops...)...)
	}},
	{"commit keeps nothing of the caller's", func(t *testing.T, be store.Backend, reopen func() store.Backend) {
		p := []byte("original")
		w := &store.Message{Topic: "w", Payload: []byte("will")}
		ops := []store.Op{ret("r", "", packet.QoS0), sess("c", w, 0)}
		ops[0].Payload = p
		commit(t, be, true, ops...)
		copy(p, "CHANGED!")
		w.Payload[0] = 'X'
		ops[0].Name = "other"
		expect(t, be, reopen, canonOf(ret("r", "original", packet.QoS0), sess("c", &store.Message{Topic: "w", Payload: []byte("will")}, 0))...)
	}},
	{"load stops at the first error", func(t *testing.T, be store.Backend, reopen func() store.Backend) {
		commit(t, be, true, ret("a", "1", packet.QoS0), ret("b", "2", packet.QoS0))
		boom := errors.New("boom")
		n := 0
		err := be.Load(func(*store.Op) error { n++; return boom })
		if !errors.Is(err, boom) || n != 1 {
			t.Fatalf("Load = %v after %d calls; want boom after 1", err, n)
		}
	}},
	{"many records", func(t *testing.T, be store.Backend, reopen func() store.Backend) {
		var ops []store.Op
		var want []string
		for i := range 5000 {
			id := fmt.Sprintf("c%d", i%50)
			if i < 50 {
				ops = append(ops, sess(id, nil, 0))
			}
			m := msg(uint64(i+1), "t", fmt.Sprint(i), packet.QoS1)
			o := out(id, uint64(i), uint64(i+1), packet.QoS1, store.Queued, 0)
			ops = append(ops, m, o)
		}
		commit(t, be, false, ops...)
		// deliver every other one
		var del []store.Op
		for i := 0; i < 5000; i += 2 {
			del = append(del, store.Op{Kind: store.DeleteOutbound, ClientID: fmt.Sprintf("c%d", i%50), ID: uint64(i)},
				store.Op{Kind: store.DeleteMessage, ID: uint64(i + 1)})
		}
		commit(t, be, false, del...)
		if err := be.Sync(); err != nil {
			t.Fatal(err)
		}
		for i := range ops {
			op := &ops[i]
			if (op.Kind == store.PutOutbound && op.Outbound.Seq%2 == 0) || (op.Kind == store.PutMessage && op.ID%2 == 1) {
				continue
			}
			want = append(want, canon(op))
		}
		expect(t, be, reopen, want...)
	}},
}

// testLog drives a backend through store.Open and Log with each fsync policy, and checks the
// recovered state.
func testLog(t *testing.T, open Opener) {
	for _, pol := range []store.Policy{store.FsyncAlways, store.FsyncInterval, store.FsyncNever} {
		t.Run(pol.String(), func(t *testing.T) {
			dir := t.TempDir()
			be := open(t, dir)
			l, rec, err := store.Open(be, dir, store.Options{Fsync: pol, Interval: 2 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if len(rec.Sessions)+len(rec.Retained) != 0 {
				t.Fatalf("new store recovered %+v", rec)
			}
			var notified []uint64
			l.OnDurable(func(d uint64) { notified = append(notified, d) })
			tx := l.Begin()
			id := tx.NewMessageID()
			tx.Append(sess("c", nil, 0))
			tx.Append(sub("c", "t/#", packet.QoS2))
			tx.Append(store.Op{Kind: store.PutMessage, ID: id, Name: "t/1", Payload: []byte("hello"), QoS: packet.QoS2})
			tx.Append(out("c", 1, id, packet.QoS2, store.AwaitPubrec, 10))
			tx.Append(out("c", 2, id, packet.QoS1, store.Queued, 0))
			tx.Append(in("c", 77))
			seq := tx.End()
			if seq != 1 || l.Written() != 1 {
				t.Fatalf("End = %d, Written = %d; want 1", seq, l.Written())
			}
			if got := l.Begin().End(); got != 1 {
				t.Fatalf("an empty group got sequence %d; want 1", got)
			}
			l.Append(ret("r", "kept", packet.QoS1))
			l.Append(msg(999, "orphan", "x", packet.QoS1)) // no outbound refers to it
			l.Append(sub("ghost", "f", packet.QoS0))       // no such session
			l.Flush()
			if d := l.Durable(); d != 4 {
				t.Fatalf("Durable after Flush = %d; want 4", d)
			}
			l.WaitDurable(4)
			if st := l.Stats(); st.Ops != 9 || st.Commits == 0 || (pol != store.FsyncNever) != (st.Syncs > 0) {
				t.Fatalf("stats %+v", st)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			l.Append(ret("late", "x", packet.QoS0)) // after Close: dropped
			if len(notified) == 0 {
				t.Fatal("OnDurable never called")
			}

			be = open(t, dir)
			l, rec, err = store.Open(be, dir, store.Options{Fsync: pol})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if rec.Removed != 2 || rec.Messages != 1 || len(rec.Sessions) != 1 || len(rec.Retained) != 1 {
				t.Fatalf("recovered %+v; want 1 session, 1 retained, 1 message, 2 removed", rec)
			}
			s := rec.Sessions[0]
			if s.ClientID != "c" || len(s.Subscriptions) != 1 || s.Subscriptions[0] != (store.Subscription{Filter: "t/#", QoS: packet.QoS2}) ||
				!slices.Equal(s.Inbound, []uint16{77}) || len(s.Outbound) != 2 {
				t.Fatalf("session %+v", s)
			}
			o1, o2 := s.Outbound[0], s.Outbound[1]
			if o1.Seq != 1 || o2.Seq != 2 || o1.Msg == nil || o1.Msg != o2.Msg || o1.Msg.Topic != "t/1" || !bytes.Equal(o1.Msg.Payload, []byte("hello")) ||
				o1.State != store.AwaitPubrec || o1.PacketID != 10 || o2.State != store.Queued {
				t.Fatalf("outbound %+v %+v", o1, o2)
			}
			if r := rec.Retained[0]; r.Topic != "r" || string(r.Payload) != "kept" || !r.Retain {
				t.Fatalf("retained %+v", r)
			}
			// Message ids continue after the largest stored one.
			tx = l.Begin()
			if id2 := tx.NewMessageID(); id2 <= id {
				t.Fatalf("NewMessageID after reopen = %d; want > %d", id2, id)
			}
			tx.End()
			l.Flush()
			if got := Records(t, be); slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, "orphan") || strings.Contains(s, "ghost") }) {
				t.Fatalf("orphans not removed: %q", got)
			}
		})
	}
	t.Run("newer schema is refused", func(t *testing.T) {
		dir := t.TempDir()
		be := open(t, dir)
		if err := be.SetVersion(store.SchemaVersion + 1); err != nil {
			t.Fatal(err)
		}
		_, _, err := store.Open(be, dir, store.Options{})
		var ce *store.CorruptError
		if !errors.As(err, &ce) || !errors.Is(err, store.ErrCorrupt) || ce.Path != dir {
			t.Fatalf("Open = %v; want a CorruptError for %s", err, dir)
		}
		be.Close()
	})
}
