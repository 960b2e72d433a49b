// Package session holds the state of one MQTT client session: what must outlive a network
// connection when the client connects with CleanSession=0 ([MQTT-3.1.2-4]).
//
// A Session does no I/O and starts no goroutines. It is plain state that the broker mutates under
// its own lock and that a store can later save and restore: subscriptions, the will, the packet
// identifier allocator, outbound QoS 1/2 messages awaiting acknowledgement and inbound QoS 2 packet
// identifiers awaiting PUBREL. A Session is not safe for concurrent use; the broker serialises access.
package session

import (
	"errors"

	"github.com/iotd/iotd/internal/packet"
)

// ErrNoPacketID is returned by Session.Send when all 65,535 packet identifiers are in flight.
var ErrNoPacketID = errors.New("session: every packet identifier is in use")

// ErrWindowFull is returned by Session.Send when the inflight window is full; the caller queues
// the message instead.
var ErrWindowFull = errors.New("session: inflight window full")

// ErrUnknownPacketID is returned by the acknowledgement methods for an identifier that is not in
// flight in the expected state. The caller ignores such an acknowledgement (it may be a duplicate
// after a reconnect); it is not a protocol violation.
var ErrUnknownPacketID = errors.New("session: unknown packet identifier")

// Message is an application message kept by the broker beyond the packet it arrived in: a retained
// message, a will, or a message in flight to a subscriber. Its fields are owned copies, never views
// into a read buffer, and are not modified after creation, so one Message may be shared.
type Message struct {
	Topic   string     // the topic name
	Payload []byte     // the application message
	QoS     packet.QoS // the QoS it was published with
	Retain  bool       // the retain flag it was published with (set on retained messages)

	// StoreID and StoreRefs belong to the broker's store, which keeps one copy of a message for
	// every persistent session it is queued or in flight to: the stored message's id (0 until
	// first stored) and the number of stored outbound records that refer to it. They are guarded
	// by the store log's lock, not by the session's owner.
	StoreID   uint64
	StoreRefs int32
}

// NewMessage copies topic and payload into a new Message.
func NewMessage(topic []byte, payload []byte, qos packet.QoS, retain bool) *Message {
	return &Message{Topic: string(topic), Payload: append([]byte(nil), payload...), QoS: qos, Retain: retain}
}

// State is where an outbound QoS 1 or 2 message is in its acknowledgement flow.
type State byte

const (
	// AwaitPuback: a QoS 1 PUBLISH was sent; PUBACK completes it.
	AwaitPuback State = iota + 1
	// AwaitPubrec: a QoS 2 PUBLISH was sent; PUBREC moves it on.
	AwaitPubrec
	// AwaitPubcomp: PUBREL was sent after PUBREC; PUBCOMP completes it.
	AwaitPubcomp
)

// Inflight is an outbound QoS 1 or 2 message that has a packet identifier and has not completed.
type Inflight struct {
	PacketID uint16     // the identifier it was sent with
	QoS      packet.QoS // the QoS it is delivered at (the minimum of publish and granted QoS)
	State    State      // where it is in its acknowledgement flow
	Attempts uint8      // how many times it was re-sent on timeout (for the backoff)
	Msg      *Message   // the message; nil once PUBREC arrived (only the PUBREL flow remains)
	SentAt   int64      // when it (or its PUBREL) was last sent, in the caller's clock
	Seq      uint64     // its place in the session's order of delivery (see Session.LastSeq)
}

// Session is the state of one client session.
type Session struct {
	// ClientID is the client identifier the session belongs to.
	ClientID string
	// Clean is the CleanSession flag of the connection that owns the session.
	Clean bool
	// Subscriptions maps each topic filter to its granted QoS.
	Subscriptions map[string]packet.QoS
	// Will is the will message of the current connection, nil when it has none.
	Will *Message

	lastID uint16
	seq    uint64 // the last sequence number given to a queued or sent message
	st     *flow  // QoS 1/2 state; nil while there is none, so a quiet session stays small
}

// flow is the QoS 1/2 state of a session, allocated when first needed and released when empty.
type flow struct {
	queue       []Queued // waiting for the client or for a free packet id, oldest first
	queueBytes  int      // topic and payload bytes in queue
	inflight    map[uint16]*Inflight
	order       []uint16 // packet ids of inflight in the order they were first sent ([MQTT-4.6.0-1])
	awaitingRel map[uint16]struct{}
}

var noFlow flow // read-only stand-in while a session has no flow state

// rd returns the flow state for reading.
func (s *Session) rd() *flow {
	if s.st == nil {
		return &noFlow
	}
	return s.st
}

// wr returns the flow state for writing, allocating it.
func (s *Session) wr() *flow {
	if s.st == nil {
		s.st = &flow{}
	}
	return s.st
}

// tidy releases the flow state once it holds nothing.
func (s *Session) tidy() {
	if st := s.st; st != nil && len(st.queue) == 0 && len(st.inflight) == 0 && len(st.awaitingRel) == 0 {
		s.st = nil
	}
}

// New returns an empty session for clientID.
func New(clientID string, clean bool) *Session {
	return &Session{ClientID: clientID, Clean: clean}
}

// Subscribe records filter with its granted QoS, replacing an earlier subscription to the same
// filter ([MQTT-3.8.4-3]). It reports whether the filter is new to the session.
func (s *Session) Subscribe(filter string, qos packet.QoS) (added bool) {
	if s.Subscriptions == nil {
		s.Subscriptions = make(map[string]packet.QoS)
	}
	_, existed := s.Subscriptions[filter]
	s.Subscriptions[filter] = qos
	return !existed
}

// Unsubscribe removes filter; it reports whether the session had it.
func (s *Session) Unsubscribe(filter string) (removed bool) {
	if _, ok := s.Subscriptions[filter]; !ok {
		return false
	}
	delete(s.Subscriptions, filter)
	return true
}

// Send assigns a free packet identifier to msg for delivery at qos (1 or 2) and records it in
// flight, sent at time now. Identifiers count up from 1, wrap after 65,535 and skip those still
// in flight ([MQTT-2.3.1-2]). With window > 0 at most window messages are in flight: beyond it
// Send returns ErrWindowFull; when all identifiers are in use it returns ErrNoPacketID. In both
// cases it records nothing.
func (s *Session) Send(msg *Message, qos packet.QoS, window int, now int64) (*Inflight, error) {
	f, err := s.send(msg, qos, window, now, s.seq+1)
	if err == nil {
		s.seq++
	}
	return f, err
}

// send is Send with the message's sequence number given.
func (s *Session) send(msg *Message, qos packet.QoS, window int, now int64, seq uint64) (*Inflight, error) {
	st := s.wr()
	if window > 0 && len(st.inflight) >= window {
		return nil, ErrWindowFull
	}
	if len(st.inflight) >= 65535 {
		return nil, ErrNoPacketID
	}
	if st.inflight == nil {
		st.inflight = make(map[uint16]*Inflight)
	}
	id := s.lastID
	for {
		id++
		if id == 0 {
			id = 1
		}
		if _, used := st.inflight[id]; !used {
			break
		}
	}
	s.lastID = id
	state := AwaitPuback
	if qos == packet.QoS2 {
		state = AwaitPubrec
	}
	f := &Inflight{PacketID: id, Msg: msg, QoS: qos, State: state, SentAt: now, Seq: seq}
	st.inflight[id] = f
	st.order = append(st.order, id)
	return f, nil
}

// Puback completes a QoS 1 delivery ([MQTT-4.3.2-1]).
// It returns the completed message, for the caller's bookkeeping (its store record).
func (s *Session) Puback(id uint16) (*Inflight, error) { return s.complete(id, AwaitPuback) }

// Pubrec moves a QoS 2 delivery from "PUBLISH sent" to "PUBREL sent" at time now; the caller
// sends PUBREL ([MQTT-4.3.3-1]). A repeated PUBREC for a message already in AwaitPubcomp is accepted again so
// the caller re-sends PUBREL. It returns the delivery and the message it no longer holds (nil for
// a repeated PUBREC).
func (s *Session) Pubrec(id uint16, now int64) (f *Inflight, released *Message, err error) {
	st := s.rd()
	f, ok := st.inflight[id]
	if !ok || f.QoS != packet.QoS2 {
		return nil, nil, ErrUnknownPacketID
	}
	released = f.Msg
	f.State = AwaitPubcomp
	f.Msg = nil // the message itself is no longer needed once PUBREC arrived ([MQTT-4.3.3-1])
	f.Attempts, f.SentAt = 0, now
	return f, released, nil
}

// Pubcomp completes a QoS 2 delivery and returns it.
func (s *Session) Pubcomp(id uint16) (*Inflight, error) { return s.complete(id, AwaitPubcomp) }

func (s *Session) complete(id uint16, want State) (*Inflight, error) {
	st := s.rd()
	f, ok := st.inflight[id]
	if !ok || f.State != want {
		return nil, ErrUnknownPacketID
	}
	delete(st.inflight, id)
	for i, o := range st.order {
		if o == id {
			st.order = append(st.order[:i], st.order[i+1:]...)
			break
		}
	}
	if len(st.inflight) == 0 {
		st.inflight, st.order = nil, nil // release the maps of a quiet session
		s.tidy()
	}
	return f, nil
}

// OldestSentBefore reports whether the oldest message in flight was last sent before t (in the
// caller's clock); false when none is in flight.
func (s *Session) OldestSentBefore(t int64) bool {
	st := s.rd()
	if len(st.order) == 0 {
		return false
	}
	return st.inflight[st.order[0]].SentAt < t
}

// InflightLen returns the number of outbound messages awaiting acknowledgement.
func (s *Session) InflightLen() int { return len(s.rd().inflight) }

// Inflight returns the outbound messages awaiting acknowledgement in the order they were first
// sent, for re-sending after a reconnect ([MQTT-4.4.0-1]).
func (s *Session) Inflight() []*Inflight {
	st := s.rd()
	out := make([]*Inflight, 0, len(st.order))
	for _, id := range st.order {
		out = append(out, st.inflight[id])
	}
	return out
}

// Queued is a message waiting to be sent: its client is offline ([MQTT-3.1.2-5]) or its inflight
// window is full. QoS 0 messages are queued only for offline sessions, when the broker is so
// configured.
type Queued struct {
	Msg *Message   // the message
	QoS packet.QoS // the QoS it will be delivered at
	Seq uint64     // its place in the session's order of delivery (see Session.LastSeq)
}

func queuedSize(m *Message) int { return len(m.Topic) + len(m.Payload) }

// Queue appends msg to the session's queue unless that would make it hold more than maxMsgs
// messages or, with maxBytes > 0, more than maxBytes bytes of topics and payloads; it reports
// whether msg was queued. When the queue is full the new message is the one refused (tail drop),
// so what is queued keeps its order.
func (s *Session) Queue(msg *Message, qos packet.QoS, maxMsgs, maxBytes int) bool {
	st := s.rd()
	n := queuedSize(msg)
	if len(st.queue) >= maxMsgs || maxBytes > 0 && st.queueBytes+n > maxBytes {
		return false
	}
	st = s.wr()
	s.seq++
	st.queue = append(st.queue, Queued{Msg: msg, QoS: qos, Seq: s.seq})
	st.queueBytes += n
	return true
}

// QueueLen returns the number of queued messages.
func (s *Session) QueueLen() int { return len(s.rd().queue) }

// QueueBytes returns the topic and payload bytes of the queued messages.
func (s *Session) QueueBytes() int { return s.rd().queueBytes }

// Dequeue takes the oldest queued message if it can be sent now: a QoS 0 message always (f is
// nil), a QoS 1 or 2 message when Send accepts it (f is its Inflight). ok is false when the queue
// is empty or the window or the identifiers are full; the message then stays queued.
func (s *Session) Dequeue(window int, now int64) (q Queued, f *Inflight, ok bool) {
	st := s.rd()
	if len(st.queue) == 0 {
		return Queued{}, nil, false
	}
	q = st.queue[0]
	if q.QoS > packet.QoS0 {
		var err error
		if f, err = s.send(q.Msg, q.QoS, window, now, q.Seq); err != nil {
			return Queued{}, nil, false
		}
	}
	st.queue[0] = Queued{}
	st.queue = st.queue[1:]
	st.queueBytes -= queuedSize(q.Msg)
	if len(st.queue) == 0 {
		st.queue = nil // release the backing array of a drained queue
		s.tidy()
	}
	return q, f, true
}

// Due calls fn, in send order, for each inflight message whose last send is older than its
// retry interval: interval doubled per earlier retry, capped at maxInterval. After fn it counts
// the attempt and sets SentAt to now. Times are in the caller's clock (nanoseconds).
func (s *Session) Due(now int64, interval, maxInterval int64, fn func(*Inflight)) {
	st := s.rd()
	for _, id := range st.order {
		f := st.inflight[id]
		wait := interval << min(f.Attempts, 30)
		if wait <= 0 || wait > maxInterval {
			wait = maxInterval
		}
		if now-f.SentAt < wait {
			continue
		}
		fn(f)
		if f.Attempts < 255 {
			f.Attempts++
		}
		f.SentAt = now
	}
}

// ReceiveQoS2 records an inbound QoS 2 packet identifier. It reports whether the message is new
// and must be routed; a retransmitted PUBLISH with an identifier still awaiting PUBREL is not
// routed again ([MQTT-4.3.3-2]).
func (s *Session) ReceiveQoS2(id uint16) (isNew bool) {
	st := s.wr()
	if _, dup := st.awaitingRel[id]; dup {
		return false
	}
	if st.awaitingRel == nil {
		st.awaitingRel = make(map[uint16]struct{})
	}
	st.awaitingRel[id] = struct{}{}
	return true
}

// Pubrel forgets an inbound QoS 2 packet identifier; the caller answers PUBCOMP whether or not it
// was known ([MQTT-4.3.3-2]: the identifier may be reused after PUBREL).
func (s *Session) Pubrel(id uint16) (known bool) {
	st := s.rd()
	if _, ok := st.awaitingRel[id]; !ok {
		return false
	}
	delete(st.awaitingRel, id)
	if len(st.awaitingRel) == 0 {
		st.awaitingRel = nil
		s.tidy()
	}
	return true
}

// AwaitingRelLen returns the number of inbound QoS 2 identifiers awaiting PUBREL.
func (s *Session) AwaitingRelLen() int { return len(s.rd().awaitingRel) }

// LastSeq returns the sequence number given to the message most recently accepted by Send or
// Queue. Sequence numbers count up from 1 in the order messages were queued or sent, and a
// message keeps its number when it moves from the queue into flight, so a store can keep a
// session's messages in order ([MQTT-4.6.0-5]).
func (s *Session) LastSeq() uint64 { return s.seq }

// Each calls fn for every message the session holds, in flight (until PUBREC) or queued.
func (s *Session) Each(fn func(*Message)) {
	st := s.rd()
	for _, id := range st.order {
		if m := st.inflight[id].Msg; m != nil {
			fn(m)
		}
	}
	for _, q := range st.queue {
		fn(q.Msg)
	}
}

// Restore puts back what a store recorded of the session, in the order of its sequence
// numbers: f in flight (f.PacketID and f.State as they were, f.Msg nil in AwaitPubcomp), or q
// queued when f is nil. Restoring an identifier that is already in flight replaces it. Later
// messages get sequence numbers above the largest restored one.
func (s *Session) Restore(f *Inflight, q *Queued) {
	st := s.wr()
	if f != nil {
		if st.inflight == nil {
			st.inflight = make(map[uint16]*Inflight)
		}
		if _, dup := st.inflight[f.PacketID]; !dup {
			st.order = append(st.order, f.PacketID)
		}
		st.inflight[f.PacketID] = f
		s.lastID = max(s.lastID, f.PacketID)
		s.seq = max(s.seq, f.Seq)
		return
	}
	st.queue = append(st.queue, *q)
	st.queueBytes += queuedSize(q.Msg)
	s.seq = max(s.seq, q.Seq)
}
