package store

import (
	"sync"

	"github.com/iotd/iotd/internal/packet"
)

// Memory is the in-memory reference backend: it keeps every record in maps and loses them with the
// process. It defines the contract's behaviour for the conformance suite, and lets tests restart a
// broker on the same state without a disk: Close keeps the records, and Open may be called on the
// same Memory again.
type Memory struct {
	mu       sync.Mutex
	version  int
	sessions map[string]Session
	subs     map[string]map[string]packet.QoS
	retained map[string]Op
	messages map[uint64]Op
	outbound map[string]map[uint64]Outbound
	inbound  map[string]map[uint16]struct{}
}

// NewMemory returns an empty in-memory backend.
func NewMemory() *Memory {
	return &Memory{
		sessions: make(map[string]Session),
		subs:     make(map[string]map[string]packet.QoS),
		retained: make(map[string]Op),
		messages: make(map[uint64]Op),
		outbound: make(map[string]map[uint64]Outbound),
		inbound:  make(map[string]map[uint16]struct{}),
	}
}

// Load implements Backend.
func (m *Memory) Load(fn func(*Op) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.sessions {
		s := s
		if s.Will != nil {
			w := *s.Will
			s.Will = &w
		}
		if err := fn(&Op{Kind: PutSession, ClientID: s.ClientID, Session: &s}); err != nil {
			return err
		}
	}
	for id, subs := range m.subs {
		for f, q := range subs {
			if err := fn(&Op{Kind: PutSubscription, ClientID: id, Name: f, QoS: q}); err != nil {
				return err
			}
		}
	}
	for _, op := range m.retained {
		op := op
		if err := fn(&op); err != nil {
			return err
		}
	}
	for _, op := range m.messages {
		op := op
		if err := fn(&op); err != nil {
			return err
		}
	}
	for id, obs := range m.outbound {
		for _, o := range obs {
			if err := fn(&Op{Kind: PutOutbound, ClientID: id, Outbound: o}); err != nil {
				return err
			}
		}
	}
	for id, ins := range m.inbound {
		for pid := range ins {
			if err := fn(&Op{Kind: PutInbound, ClientID: id, PacketID: pid}); err != nil {
				return err
			}
		}
	}
	return nil
}

func inner[K comparable, V any](m map[string]map[K]V, id string) map[K]V {
	in := m[id]
	if in == nil {
		in = make(map[K]V)
		m[id] = in
	}
	return in
}

func deleteInner[K comparable, V any](m map[string]map[K]V, id string, k K) {
	if in := m[id]; in != nil {
		delete(in, k)
		if len(in) == 0 {
			delete(m, id)
		}
	}
}

// Commit implements Backend. It copies what it keeps.
func (m *Memory) Commit(ops []Op, _ bool) error {
	for i := range ops {
		if k := ops[i].Kind; k == 0 || k > DeleteInbound {
			return errUnknownKind(k) // before changing anything: Commit is atomic
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range ops {
		op := &ops[i]
		switch op.Kind {
		case PutSession:
			s := *op.Session
			if s.Will != nil {
				w := *s.Will
				w.Payload = clone(w.Payload)
				s.Will = &w
			}
			m.sessions[op.ClientID] = s
		case DeleteSession:
			delete(m.sessions, op.ClientID)
			delete(m.subs, op.ClientID)
			delete(m.outbound, op.ClientID)
			delete(m.inbound, op.ClientID)
		case PutSubscription:
			inner(m.subs, op.ClientID)[op.Name] = op.QoS
		case DeleteSubscription:
			deleteInner(m.subs, op.ClientID, op.Name)
		case PutRetained:
			m.retained[op.Name] = Op{Kind: PutRetained, Name: op.Name, Payload: clone(op.Payload), QoS: op.QoS}
		case DeleteRetained:
			delete(m.retained, op.Name)
		case PutMessage:
			m.messages[op.ID] = Op{Kind: PutMessage, ID: op.ID, Name: op.Name, Payload: clone(op.Payload), QoS: op.QoS, Retain: op.Retain}
		case DeleteMessage:
			delete(m.messages, op.ID)
		case PutOutbound:
			inner(m.outbound, op.ClientID)[op.Outbound.Seq] = op.Outbound
		case DeleteOutbound:
			deleteInner(m.outbound, op.ClientID, op.ID)
		case PutInbound:
			inner(m.inbound, op.ClientID)[op.PacketID] = struct{}{}
		case DeleteInbound:
			deleteInner(m.inbound, op.ClientID, op.PacketID)
		}
	}
	return nil
}

func clone(b []byte) []byte { return append([]byte{}, b...) }

// Sync implements Backend; there is nothing to sync.
func (m *Memory) Sync() error { return nil }

// Version implements Backend.
func (m *Memory) Version() (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.version, nil
}

// SetVersion implements Backend.
func (m *Memory) SetVersion(v int) error {
	m.mu.Lock()
	m.version = v
	m.mu.Unlock()
	return nil
}

// Close implements Backend. The records stay, so the Memory can be opened again.
func (m *Memory) Close() error { return nil }
