package server_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/iotdtest"
	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/server"
	"github.com/iotd/iotd/internal/store"
)

// manualDurability is a store whose durable point the test moves by hand.
type manualDurability struct {
	written, durable atomic.Uint64
	mu               sync.Mutex
	fn               func(uint64)
}

func (m *manualDurability) Written() uint64 { return m.written.Load() }
func (m *manualDurability) Durable() uint64 { return m.durable.Load() }
func (m *manualDurability) OnDurable(fn func(uint64)) {
	m.mu.Lock()
	m.fn = fn
	m.mu.Unlock()
}

func (m *manualDurability) advance(to uint64) {
	m.durable.Store(to)
	m.mu.Lock()
	fn := m.fn
	m.mu.Unlock()
	fn(to)
}

// expectSilence fails if c receives anything within d. It proves an absence, so it has to wait.
func expectSilence(t *testing.T, c *iotdtest.Client, d time.Duration, what string) {
	t.Helper()
	if p, err := c.TryRead(d); err == nil {
		t.Fatalf("%s: got %T before the store was durable", what, p)
	}
}

// TestOutputWaitsForDurability checks that acknowledgements leave only once the store reports the
// state they depend on durable ([MQTT-4.3.2-2], [MQTT-4.3.3-2]), and that QoS 0 deliveries, which
// depend on nothing stored, do not wait.
func TestOutputWaitsForDurability(t *testing.T) {
	d := &manualDurability{}
	env := iotdtest.Start(t, server.Options{Durability: d}, broker.Options{})
	sub := iotdtest.Dial(t, env.Addr)
	sub.MustConnect("sub", true) // nothing pending yet: answered at once
	sub.Subscribe(1, packet.QoS0, "d/#")

	d.written.Store(1)
	pub := iotdtest.Dial(t, env.Addr)
	pub.Send(&packet.Connect{ProtocolLevel: 4, ClientID: "pub", CleanSession: true, KeepAlive: 60})
	expectSilence(t, pub, 200*time.Millisecond, "CONNACK")
	d.advance(1)
	if ack := expectPacket[*packet.Connack](t, pub); ack.ReturnCode != packet.Accepted {
		t.Fatalf("CONNACK %v", ack.ReturnCode)
	}

	d.written.Store(2)
	pub.Send(&packet.Publish{Topic: []byte("d/1"), Payload: []byte("x"), QoS: packet.QoS1, PacketID: 9})
	// The QoS 0 delivery to the subscriber goes out at once.
	if p := sub.ReadPublish(); string(p.Payload) != "x" {
		t.Fatalf("subscriber got %q", p.Payload)
	}
	expectSilence(t, pub, 200*time.Millisecond, "PUBACK")
	d.advance(2)
	if a := expectPacket[*packet.Puback](t, pub); a.PacketID != 9 {
		t.Fatalf("PUBACK %d", a.PacketID)
	}
}

// TestStoreBackedServer runs QoS 1 and 2 through a server whose broker writes to a real store log
// (memory backend, fsync always): output waits for each group commit and nothing stalls.
func TestStoreBackedServer(t *testing.T) {
	l, _, err := store.Open(store.NewMemory(), "mem", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	env := iotdtest.Start(t, server.Options{Durability: l}, broker.Options{Store: l})
	t.Cleanup(func() { l.Close() }) // after the server's shutdown (cleanups run last-in first-out)
	sub := iotdtest.Dial(t, env.Addr)
	sub.MustConnect("psub", false)
	sub.Subscribe(1, packet.QoS2, "s/#")
	pub := iotdtest.Dial(t, env.Addr)
	pub.MustConnect("ppub", false)
	for i := range 50 {
		publishQoS1(t, pub, "s/1", "m", uint16(i+1), false)
		p := expectPacket[*packet.Publish](t, sub)
		sub.Send(&packet.Puback{PacketID: p.PacketID})
	}
	pub.Send(&packet.Publish{Topic: []byte("s/2"), Payload: []byte("q2"), QoS: packet.QoS2, PacketID: 100})
	expectPacket[*packet.Pubrec](t, pub)
	pub.Send(&packet.Pubrel{PacketID: 100})
	expectPacket[*packet.Pubcomp](t, pub)
	p := expectPacket[*packet.Publish](t, sub)
	sub.Send(&packet.Pubrec{PacketID: p.PacketID})
	expectPacket[*packet.Pubrel](t, sub)
	sub.Send(&packet.Pubcomp{PacketID: p.PacketID})
	sub.Ping()
	if st := l.Stats(); st.Syncs == 0 || st.Ops == 0 {
		t.Fatalf("store stats %+v: nothing was committed", st)
	}
}
