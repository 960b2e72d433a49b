package sqlite

import (
	"fmt"
	"testing"

	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/store"
)

// qos1Group returns the group the broker commits for n QoS 1 messages in flight: for each message
// a PutMessage with a 100-byte payload and a PutOutbound, then the DeleteOutbound and
// DeleteMessage of the message acknowledged in the previous group. Group g uses ids and sequence
// numbers g*n+1 ... g*n+n.
func qos1Group(ops []store.Op, ids []string, payload []byte, g uint64, n int) []store.Op {
	ops = ops[:0]
	for i := range n {
		id := g*uint64(n) + uint64(i) + 1
		c := ids[i%len(ids)]
		ops = append(ops,
			store.Op{Kind: store.PutMessage, ID: id, Name: "sensors/temperature/room-42", Payload: payload, QoS: packet.QoS1},
			store.Op{Kind: store.PutOutbound, ClientID: c, Outbound: store.Outbound{Seq: id, MsgID: id, QoS: packet.QoS1, State: store.AwaitPuback, PacketID: uint16(id)}})
		if g > 0 {
			prev := id - uint64(n)
			ops = append(ops,
				store.Op{Kind: store.DeleteOutbound, ClientID: c, ID: prev},
				store.Op{Kind: store.DeleteMessage, ID: prev})
		}
	}
	return ops
}

// BenchmarkCommit commits groups of 100 QoS 1 messages (400 operations in steady state). One
// op is one group; msgs/s is how many messages a second that carries.
func BenchmarkCommit(b *testing.B) {
	const n = 100
	for _, sync := range []bool{true, false} {
		b.Run(fmt.Sprintf("sync=%v", sync), func(b *testing.B) {
			be := open(b, b.TempDir())
			ids := make([]string, 10)
			for i := range ids {
				ids[i] = fmt.Sprintf("client-%d", i)
			}
			payload := make([]byte, 100)
			ops := qos1Group(nil, ids, payload, 0, n)
			if err := be.Commit(ops, sync); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for g := uint64(1); g <= uint64(b.N); g++ {
				ops = qos1Group(ops, ids, payload, g, n)
				if err := be.Commit(ops, sync); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// bigStore fills dir with 100,000 retained messages (100-byte payloads) and 10,000 sessions, each
// with 2 subscriptions, 2 outbound messages and 1 inbound packet identifier: 180,000 records.
func bigStore(b *testing.B, dir string) int {
	be, err := Open(dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	payload := make([]byte, 100)
	var ops []store.Op
	n := 0
	flush := func() {
		if err := be.Commit(ops, false); err != nil {
			b.Fatal(err)
		}
		n += len(ops)
		ops = ops[:0]
	}
	for i := range 100_000 {
		ops = append(ops, store.Op{Kind: store.PutRetained, Name: fmt.Sprintf("building/%d/floor/%d/room/%d", i%7, i%13, i), Payload: payload, QoS: packet.QoS1})
		if len(ops) == 10_000 {
			flush()
		}
	}
	for i := range 10_000 {
		id := fmt.Sprintf("device-%08d", i)
		ops = append(ops,
			store.Op{Kind: store.PutSession, ClientID: id, Session: &store.Session{ClientID: id, DisconnectedAt: 1}},
			store.Op{Kind: store.PutSubscription, ClientID: id, Name: "cmd/" + id, QoS: packet.QoS1},
			store.Op{Kind: store.PutSubscription, ClientID: id, Name: "broadcast/#", QoS: packet.QoS0},
			store.Op{Kind: store.PutInbound, ClientID: id, PacketID: 7})
		for j := range 2 {
			mid := uint64(2*i + j + 1)
			ops = append(ops,
				store.Op{Kind: store.PutMessage, ID: mid, Name: "cmd/" + id, Payload: payload, QoS: packet.QoS1},
				store.Op{Kind: store.PutOutbound, ClientID: id, Outbound: store.Outbound{Seq: uint64(j), MsgID: mid, QoS: packet.QoS1}})
		}
		if len(ops) >= 10_000 {
			flush()
		}
	}
	flush()
	return n
}

// BenchmarkLoad opens a store of 180,000 records and loads it. One op is one Open and Load.
func BenchmarkLoad(b *testing.B) {
	dir := b.TempDir()
	n := bigStore(b, dir)
	for _, qc := range []bool{false, true} {
		b.Run(fmt.Sprintf("quick_check=%v", qc), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				be, err := Open(dir, Options{SkipQuickCheck: !qc})
				if err != nil {
					b.Fatal(err)
				}
				got := 0
				if err := be.Load(func(*store.Op) error { got++; return nil }); err != nil {
					b.Fatal(err)
				}
				be.Close()
				if got != n {
					b.Fatalf("loaded %d records; want %d", got, n)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
