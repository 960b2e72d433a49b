package broker

import (
	"time"

	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/session"
	"github.com/iotd/iotd/internal/store"
)

// Persistence. With Options.Store set, every change to a persistent session (CleanSession=0) and
// to the retained messages is appended to the store's log in the same critical section that makes
// it, before any packet that depends on it is queued to a connection. The server holds such packets
// back until the log reports the change durable, so a client never sees an acknowledgement for
// state the broker could lose ([MQTT-4.3.2-2], [MQTT-4.3.3-2]). Clean sessions are never stored:
// they end with their connection ([MQTT-3.1.2-6]).
//
// A message delivered to several persistent sessions is stored once; session.Message.StoreRefs
// counts the outbound records that refer to it, under the log's lock, and the last one to go
// deletes it.

// persists reports whether cl's session is written to the store. cl.mu must be held.
func (b *Broker) persists(cl *Client) bool { return b.store != nil && !cl.sess.Clean }

// refLocked counts one more stored reference to m, storing m with the first. tx is open.
func refLocked(tx *store.Tx, m *session.Message) {
	if m.StoreRefs == 0 {
		m.StoreID = tx.NewMessageID()
		tx.Append(store.Op{Kind: store.PutMessage, ID: m.StoreID, Name: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain})
	}
	m.StoreRefs++
}

// unrefLocked drops one stored reference to m, deleting it with the last. tx is open.
func unrefLocked(tx *store.Tx, m *session.Message) {
	if m == nil || m.StoreRefs <= 0 {
		return
	}
	m.StoreRefs--
	if m.StoreRefs == 0 {
		tx.Append(store.Op{Kind: store.DeleteMessage, ID: m.StoreID})
	}
}

func outboundOp(clientID string, seq uint64, m *session.Message, qos packet.QoS, st store.State, pid uint16) store.Op {
	var id uint64
	if m != nil && st != store.AwaitPubcomp {
		id = m.StoreID
	}
	return store.Op{Kind: store.PutOutbound, ClientID: clientID, Outbound: store.Outbound{Seq: seq, MsgID: id, QoS: qos, State: st, PacketID: pid}}
}

func storeState(s session.State) store.State {
	switch s {
	case session.AwaitPuback:
		return store.AwaitPuback
	case session.AwaitPubrec:
		return store.AwaitPubrec
	}
	return store.AwaitPubcomp
}

// persistSentLocked records a new or dequeued message in flight to cl. fresh is true when the
// message was not queued before (its reference is new). cl.mu must be held.
func (b *Broker) persistSentLocked(cl *Client, f *session.Inflight, fresh bool) {
	if !b.persists(cl) {
		return
	}
	tx := b.store.Begin()
	if fresh {
		refLocked(tx, f.Msg)
	}
	tx.Append(outboundOp(cl.sess.ClientID, f.Seq, f.Msg, f.QoS, storeState(f.State), f.PacketID))
	tx.End()
}

// persistQueuedLocked records a message queued for cl with sequence number seq. cl.mu must be held.
func (b *Broker) persistQueuedLocked(cl *Client, m *session.Message, qos packet.QoS, seq uint64) {
	if !b.persists(cl) {
		return
	}
	tx := b.store.Begin()
	refLocked(tx, m)
	tx.Append(outboundOp(cl.sess.ClientID, seq, m, qos, store.Queued, 0))
	tx.End()
}

// persistDoneLocked removes a completed or discarded outbound record of cl. cl.mu must be held.
func (b *Broker) persistDoneLocked(cl *Client, seq uint64, m *session.Message) {
	if !b.persists(cl) {
		return
	}
	tx := b.store.Begin()
	tx.Append(store.Op{Kind: store.DeleteOutbound, ClientID: cl.sess.ClientID, ID: seq})
	unrefLocked(tx, m)
	tx.End()
}

// persistPubrecLocked records that PUBREC arrived for f, whose message was m: only the PUBREL flow
// remains. cl.mu must be held.
func (b *Broker) persistPubrecLocked(cl *Client, f *session.Inflight, m *session.Message) {
	if !b.persists(cl) {
		return
	}
	tx := b.store.Begin()
	tx.Append(outboundOp(cl.sess.ClientID, f.Seq, nil, f.QoS, store.AwaitPubcomp, f.PacketID))
	unrefLocked(tx, m)
	tx.End()
}

// persistSessionLocked stores cl's session record: the will of its connection, and when its client
// went away (0 while connected). cl.mu must be held.
func (b *Broker) persistSessionLocked(cl *Client, disconnectedAt int64) {
	if !b.persists(cl) {
		return
	}
	rec := &store.Session{ClientID: cl.sess.ClientID, DisconnectedAt: disconnectedAt}
	if w := cl.sess.Will; w != nil {
		rec.Will = &store.Message{Topic: w.Topic, Payload: w.Payload, QoS: w.QoS, Retain: w.Retain}
	}
	b.store.Append(store.Op{Kind: store.PutSession, ClientID: rec.ClientID, Session: rec})
}

// forgetLocked deletes a persistent session s from the store with everything it held. cl.mu must
// be held (s is or was cl's session).
func (b *Broker) forgetLocked(s *session.Session) {
	if b.store == nil || s.Clean {
		return
	}
	tx := b.store.Begin()
	tx.Append(store.Op{Kind: store.DeleteSession, ClientID: s.ClientID})
	s.Each(func(m *session.Message) { unrefLocked(tx, m) })
	tx.End()
}

// persistSubLocked records (add) or removes a subscription of cl. cl.mu must be held.
func (b *Broker) persistSubLocked(cl *Client, filter string, qos packet.QoS, add bool) {
	if !b.persists(cl) {
		return
	}
	op := store.Op{Kind: store.DeleteSubscription, ClientID: cl.sess.ClientID, Name: filter}
	if add {
		op.Kind, op.QoS = store.PutSubscription, qos
	}
	b.store.Append(op)
}

// persistInboundLocked records (add) or removes an inbound QoS 2 packet identifier of cl awaiting
// PUBREL, so that exactly-once holds across a restart ([MQTT-4.3.3-2]). cl.mu must be held.
func (b *Broker) persistInboundLocked(cl *Client, id uint16, add bool) {
	if !b.persists(cl) {
		return
	}
	op := store.Op{Kind: store.DeleteInbound, ClientID: cl.sess.ClientID, PacketID: id}
	if add {
		op.Kind = store.PutInbound
	}
	b.store.Append(op)
}

// persistRetained records the retained message of topic name, or its deletion when m is nil.
func (b *Broker) persistRetained(name string, m *session.Message) {
	if b.store == nil {
		return
	}
	if m == nil {
		b.store.Append(store.Op{Kind: store.DeleteRetained, Name: name})
		return
	}
	b.store.Append(store.Op{Kind: store.PutRetained, Name: name, Payload: m.Payload, QoS: m.QoS})
}

// Restore loads what a store recovered into a new broker, before it serves any client: persistent
// sessions (offline) with their subscriptions, messages in flight (re-sent with DUP when their
// client reconnects, [MQTT-4.4.0-1]) and queued, inbound QoS 2 packet identifiers, and retained
// messages. A session stored with a will belonged to a connection that the broker lost when it
// stopped, so the will is published now ([MQTT-3.1.2-8]). It returns the number of wills published.
func (b *Broker) Restore(rec *store.Recovered) int {
	now := b.now()
	wall := time.Now().UnixNano()
	msgs := make(map[uint64]*session.Message)
	var wills []*session.Message
	for _, m := range rec.Retained {
		b.retained.Set(m.Topic, &session.Message{Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: true})
	}
	b.mu.Lock()
	for _, rs := range rec.Sessions {
		cl := &Client{key: keyPrefix + rs.ClientID, sess: session.New(rs.ClientID, false)}
		for _, s := range rs.Subscriptions {
			cl.sess.Subscribe(s.Filter, s.QoS)
			b.subs.Subscribe(s.Filter, cl, byte(s.QoS))
		}
		for _, o := range rs.Outbound {
			var m *session.Message
			if o.Msg != nil {
				m = msgs[o.Msg.ID]
				if m == nil {
					m = &session.Message{Topic: o.Msg.Topic, Payload: o.Msg.Payload, QoS: o.Msg.QoS, Retain: o.Msg.Retain, StoreID: o.Msg.ID}
					msgs[o.Msg.ID] = m
				}
				m.StoreRefs++
			}
			if o.State == store.Queued {
				cl.sess.Restore(nil, &session.Queued{Msg: m, QoS: o.QoS, Seq: o.Seq})
				continue
			}
			st := session.AwaitPuback
			switch o.State {
			case store.AwaitPubrec:
				st = session.AwaitPubrec
			case store.AwaitPubcomp:
				st = session.AwaitPubcomp
			}
			cl.sess.Restore(&session.Inflight{PacketID: o.PacketID, QoS: o.QoS, State: st, Msg: m, SentAt: now, Seq: o.Seq}, nil)
		}
		for _, id := range rs.Inbound {
			cl.sess.ReceiveQoS2(id)
		}
		cl.offlineSince = now
		if at := rs.DisconnectedAt; at > 0 && at < wall {
			cl.offlineSince = now - (wall - at)
		}
		if w := rs.Will; w != nil {
			wills = append(wills, &session.Message{Topic: w.Topic, Payload: w.Payload, QoS: w.QoS, Retain: w.Retain})
		}
		b.clients[cl.key] = cl
		b.offline[cl] = struct{}{}
		if rs.Will != nil || rs.DisconnectedAt == 0 {
			cl.mu.Lock()
			b.persistSessionLocked(cl, wall) // the will is published below; the client is away since now
			cl.mu.Unlock()
		}
	}
	b.mu.Unlock()
	var bt Batch
	for _, w := range wills {
		b.publishMessage(w, &bt)
	}
	bt.Flush()
	return len(wills)
}
