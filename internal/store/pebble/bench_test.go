package pebble

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/store"
)

// BenchmarkCommit commits the group a busy broker writes for QoS 1 traffic: for each of 100
// messages, PutMessage (100-byte payload) and PutOutbound for the message that arrived, and
// DeleteOutbound and DeleteMessage for one acknowledged in the previous group. One op is one
// group, so msgs/s is 100 groups' worth of messages per second.
func BenchmarkCommit(b *testing.B) {
	for _, sync := range []bool{true, false} {
		b.Run(fmt.Sprintf("sync=%v", sync), func(b *testing.B) {
			be := openTest(b, b.TempDir())
			defer be.Close()
			const perGroup = 100
			payload := bytes.Repeat([]byte{'x'}, 100)
			clients := make([]string, 10)
			for i := range clients {
				clients[i] = fmt.Sprintf("client-%d", i)
			}
			ops := make([]store.Op, 0, 4*perGroup)
			var next uint64 = 1
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				ops = ops[:0]
				for range perGroup {
					id := next
					next++
					c := clients[id%uint64(len(clients))]
					ops = append(ops,
						store.Op{Kind: store.PutMessage, ID: id, Name: "sensors/42/temp", Payload: payload, QoS: packet.QoS1},
						store.Op{Kind: store.PutOutbound, ClientID: c, Outbound: store.Outbound{Seq: id, MsgID: id, QoS: packet.QoS1, State: store.AwaitPuback, PacketID: uint16(id)}})
					if id > perGroup {
						old := id - perGroup
						ops = append(ops,
							store.Op{Kind: store.DeleteOutbound, ClientID: clients[old%uint64(len(clients))], ID: old},
							store.Op{Kind: store.DeleteMessage, ID: old})
					}
				}
				if err := be.Commit(ops, sync); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(perGroup*b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkLoad loads a store of 10,000 retained messages and 1,000 sessions with a subscription,
// an outbound message and an inbound packet identifier each.
func BenchmarkLoad(b *testing.B) {
	be := openTest(b, b.TempDir())
	defer be.Close()
	payload := bytes.Repeat([]byte{'x'}, 100)
	var ops []store.Op
	for i := range 10_000 {
		ops = append(ops, store.Op{Kind: store.PutRetained, Name: fmt.Sprintf("sensors/%d/temp", i), Payload: payload, QoS: packet.QoS1})
	}
	for i := range 1_000 {
		id := fmt.Sprintf("client-%d", i)
		ops = append(ops,
			store.Op{Kind: store.PutSession, ClientID: id, Session: &store.Session{ClientID: id}},
			store.Op{Kind: store.PutSubscription, ClientID: id, Name: "sensors/+/temp", QoS: packet.QoS1},
			store.Op{Kind: store.PutMessage, ID: uint64(i + 1), Name: "t", Payload: payload, QoS: packet.QoS1},
			store.Op{Kind: store.PutOutbound, ClientID: id, Outbound: store.Outbound{Seq: 1, MsgID: uint64(i + 1), QoS: packet.QoS1}},
			store.Op{Kind: store.PutInbound, ClientID: id, PacketID: 1})
	}
	if err := be.Commit(ops, false); err != nil {
		b.Fatal(err)
	}
	if err := be.db.Flush(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for b.Loop() {
		if err := be.Load(func(*store.Op) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
}
