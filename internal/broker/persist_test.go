package broker

import (
	"strings"
	"testing"
	"time"

	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/store"
	"github.com/iotd/iotd/internal/store/storetest"
)

// restart closes the broker's log (as a shutdown would, without disconnecting anyone, as a crash
// would) and opens a new broker on the same memory backend.
func restart(t *testing.T, l *store.Log, mem *store.Memory, o Options) (*env, *store.Log, int) {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2, rec, err := store.Open(mem, "mem", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	o.Store = l2
	e := newEnv(t, o)
	wills := e.b.Restore(rec)
	return e, l2, wills
}

func openMem(t *testing.T, mem *store.Memory) *store.Log {
	t.Helper()
	l, _, err := store.Open(mem, "mem", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestPersistenceSurvivesRestart(t *testing.T) {
	mem := store.NewMemory()
	l := openMem(t, mem)
	e := newEnv(t, Options{Store: l, MaxInflight: 2})
	sub, sc, _ := e.connect("sub", false, nil)
	e.sub(sub, packet.QoS2, "t/#")
	sc.take()
	// A persistent publisher with an unreleased inbound QoS 2 message, and a will.
	pubc, _, _ := e.connect("pub", false, &packet.Will{Topic: "will/pub", Payload: []byte("pub died"), QoS: packet.QoS1})
	if !e.b.ReceiveQoS2(pubc, 7) {
		t.Fatal("first QoS 2 id 7 not new")
	}
	e.pub(pubc, "keep/r", "retained", packet.QoS1, true)
	e.pub(pubc, "t/1", "one", packet.QoS1, false)
	e.pub(pubc, "t/2", "two", packet.QoS2, false)
	e.pub(pubc, "t/3", "three", packet.QoS2, false) // window of 2: queued
	got := sc.publishes(t)
	if len(got) != 2 {
		t.Fatalf("got %d publishes, want 2 (window)", len(got))
	}
	// PUBREC for t/2: only its PUBREL flow remains.
	e.b.Ack(sub, packet.TypePubrec, got[1].PacketID, &e.bt)
	e.bt.Flush()
	e.b.Disconnect(sub, sc, true)
	e.pub(pubc, "t/4", "four", packet.QoS1, false) // offline: queued
	l.Flush()

	e2, l2, wills := restart(t, l, mem, Options{MaxInflight: 2})
	defer l2.Close()
	if wills != 1 {
		t.Fatalf("published %d wills after the restart, want 1 (pub was connected)", wills)
	}
	sub2, sc2, ack := e2.connect("sub", false, nil)
	if !ack.SessionPresent {
		t.Fatal("MQTT-3.2.2-2: session not present after the restart")
	}
	var seq []string
	for _, p := range sc2.take() {
		switch p := p.(type) {
		case *packet.Publish:
			seq = append(seq, "publish "+string(p.Topic)+" dup="+map[bool]string{true: "1", false: "0"}[p.Dup])
		case *packet.Pubrel:
			seq = append(seq, "pubrel")
		}
	}
	// t/1 in flight (DUP, MQTT-4.4.0-1), then t/2's PUBREL, then the will (QoS 1, not matching t/#? no),
	// then queued t/3 once the window has room.
	want := []string{"publish t/1 dup=1", "pubrel"}
	if strings.Join(seq, ",") != strings.Join(want, ",") {
		t.Fatalf("after restart got %q, want %q", seq, want)
	}
	e2.b.Ack(sub2, packet.TypePuback, got[0].PacketID, &e2.bt)
	e2.b.Ack(sub2, packet.TypePubcomp, got[1].PacketID, &e2.bt)
	e2.bt.Flush()
	rest := sc2.publishes(t)
	if len(rest) != 2 || string(rest[0].Topic) != "t/3" || string(rest[1].Topic) != "t/4" || rest[0].QoS != 2 || rest[1].QoS != 1 {
		t.Fatalf("queued after restart: %v", rest)
	}
	for _, p := range rest {
		typ := packet.TypePuback
		if p.QoS == 2 {
			typ = packet.TypePubrec
		}
		e2.b.Ack(sub2, typ, p.PacketID, &e2.bt)
		if p.QoS == 2 {
			e2.b.Ack(sub2, packet.TypePubcomp, p.PacketID, &e2.bt)
		}
	}
	e2.bt.Flush()
	// The publisher's QoS 2 id 7 is still awaiting PUBREL: a retransmission is not routed again.
	pub2, _, _ := e2.connect("pub", false, nil)
	if e2.b.ReceiveQoS2(pub2, 7) {
		t.Fatal("MQTT-4.3.3-2: QoS 2 id 7 routed twice across the restart")
	}
	e2.b.Pubrel(pub2, 7)
	// Retained messages survived.
	other, oc, _ := e2.connect("other", true, nil)
	e2.sub(other, packet.QoS1, "keep/#")
	if r := oc.publishes(t); len(r) != 1 || string(r[0].Payload) != "retained" || !r[0].Retain {
		t.Fatalf("retained after restart: %v", r)
	}
	l2.Flush()
	for _, rec := range storetest.Records(t, mem) {
		if strings.HasPrefix(rec, "outbound") || strings.HasPrefix(rec, "message") || strings.HasPrefix(rec, "inbound") {
			t.Errorf("left after everything was acknowledged: %s", rec)
		}
	}
}

func TestPersistenceCleanupAndExpiry(t *testing.T) {
	mem := store.NewMemory()
	l := openMem(t, mem)
	defer l.Close()
	e := newEnv(t, Options{Store: l, SessionExpiry: time.Hour})
	a, ac, _ := e.connect("a", false, nil)
	e.sub(a, packet.QoS1, "x")
	e.b.Disconnect(a, ac, true)
	p, _, _ := e.connect("p", true, nil) // clean: never stored
	e.pub(p, "x", "m1", packet.QoS1, false)
	e.pub(p, "x", "m2", packet.QoS1, false)
	e.pub(p, "r", "v", packet.QoS0, true)
	e.pub(p, "r", "", packet.QoS0, true) // deletes the retained message
	l.Flush()
	recs := storetest.Records(t, mem)
	count := func(prefix string) int {
		n := 0
		for _, r := range recs {
			if strings.HasPrefix(r, prefix) {
				n++
			}
		}
		return n
	}
	if count("session") != 1 || count("outbound") != 2 || count("message") != 2 || count("sub") != 1 || count("retained") != 0 {
		t.Fatalf("records %q", recs)
	}
	// A clean connection discards the stored session with everything it held ([MQTT-3.1.2-6]).
	a2, a2c, _ := e.connect("a", true, nil)
	l.Flush()
	if recs = storetest.Records(t, mem); len(recs) != 0 {
		t.Fatalf("after a clean connect: %q", recs)
	}
	e.b.Disconnect(a2, a2c, true)

	// Expiry removes an offline session's records.
	b, bc, _ := e.connect("b", false, nil)
	e.sub(b, packet.QoS1, "y")
	e.b.Disconnect(b, bc, true)
	e.pub(p, "y", "m", packet.QoS1, false)
	e.b.housekeep(e.b.now()+int64(2*time.Hour), &e.bt)
	l.Flush()
	if recs = storetest.Records(t, mem); len(recs) != 0 {
		t.Fatalf("after expiry: %q", recs)
	}
}

func TestPersistenceSharedMessage(t *testing.T) {
	mem := store.NewMemory()
	l := openMem(t, mem)
	e := newEnv(t, Options{Store: l})
	s1, c1, _ := e.connect("s1", false, nil)
	s2, c2, _ := e.connect("s2", false, nil)
	e.sub(s1, packet.QoS1, "t")
	e.sub(s2, packet.QoS1, "t")
	c1.take()
	c2.take()
	p, _, _ := e.connect("p", true, nil)
	e.pub(p, "t", "shared", packet.QoS1, false)
	l.Flush()
	recs := storetest.Records(t, mem)
	msgs := 0
	for _, r := range recs {
		if strings.HasPrefix(r, "message") {
			msgs++
		}
	}
	if msgs != 1 {
		t.Fatalf("a message for two sessions stored %d times: %q", msgs, recs)
	}
	g1 := c1.publishes(t)
	e.b.Ack(s1, packet.TypePuback, g1[0].PacketID, &e.bt)
	l.Flush()
	if recs := storetest.Records(t, mem); !strings.Contains(strings.Join(recs, "\n"), "message") {
		t.Fatalf("message deleted while s2 still needs it: %q", recs)
	}
	// Restart: both sessions still refer to one message.
	e2, l2, _ := restart(t, l, mem, Options{})
	defer l2.Close()
	s2b, c2b, _ := e2.connect("s2", false, nil)
	g2 := c2b.publishes(t)
	if len(g2) != 1 || !g2[0].Dup || string(g2[0].Payload) != "shared" {
		t.Fatalf("s2 after restart: %v", g2)
	}
	e2.b.Ack(s2b, packet.TypePuback, g2[0].PacketID, &e2.bt)
	l2.Flush()
	for _, r := range storetest.Records(t, mem) {
		if strings.HasPrefix(r, "message") || strings.HasPrefix(r, "outbound") {
			t.Fatalf("left: %s", r)
		}
	}
}
