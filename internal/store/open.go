package store

import (
	"cmp"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/iotd/iotd/internal/packet"
)

// Recovered is the state a store held when it was opened, assembled for the broker.
type Recovered struct {
	Sessions []*RecoveredSession // ordered by client id
	Retained []*Message          // ordered by topic
	Messages int                 // distinct messages referred to by outbound records
	Removed  int                 // records dropped as orphans (see Open)
}

// RecoveredSession is one persistent session with its records.
type RecoveredSession struct {
	Session
	Subscriptions []Subscription      // ordered by filter
	Outbound      []RecoveredOutbound // ordered by Seq: the order of delivery
	Inbound       []uint16            // ordered
}

// Subscription is a stored subscription of a session.
type Subscription struct {
	Filter string
	QoS    packet.QoS
}

// RecoveredOutbound is an outbound record with its message (nil in AwaitPubcomp). Records that
// refer to the same message share one *Message.
type RecoveredOutbound struct {
	Outbound
	Msg *Message
}

// migrations[v] upgrades a store from schema version v to v+1. Version 0 is an empty, new store;
// SchemaVersion 1 is the first layout, so there is nothing to migrate yet. A change of layout adds
// a function here and bumps SchemaVersion; Open runs the steps in order and records each version.
var migrations = map[int]func(Backend) error{}

// Open checks the schema version of be (path names the store in errors), migrates an older store,
// loads what it holds and starts a Log over it.
//
// Records that cannot belong to anything are removed in the Log's first group: subscriptions,
// outbound and inbound records of a session that is not stored, and messages no outbound record
// refers to. An outbound record whose message is missing is dropped the same way and counted; the
// message was deleted, so it was delivered. None of this is corruption: it is what an interrupted
// clean-up leaves.
func Open(be Backend, path string, opts Options) (*Log, *Recovered, error) {
	v, err := be.Version()
	if err != nil {
		return nil, nil, Corrupt(path, "the schema version cannot be read", err)
	}
	if v > SchemaVersion {
		return nil, nil, Corrupt(path, fmt.Sprintf("it was written by a newer IoTD (schema version %d; this build reads up to %d)", v, SchemaVersion), nil)
	}
	if v == 0 {
		if err := be.SetVersion(SchemaVersion); err != nil {
			return nil, nil, fmt.Errorf("store %s: recording the schema version: %w", path, err)
		}
		v = SchemaVersion
	}
	for ; v < SchemaVersion; v++ {
		m := migrations[v]
		if m == nil {
			return nil, nil, Corrupt(path, fmt.Sprintf("no migration from schema version %d", v), nil)
		}
		if err := m(be); err != nil {
			return nil, nil, fmt.Errorf("store %s: migrating from schema version %d: %w", path, v, err)
		}
		if err := be.SetVersion(v + 1); err != nil {
			return nil, nil, fmt.Errorf("store %s: recording schema version %d: %w", path, v+1, err)
		}
	}
	rec, cleanup, maxID, err := load(be)
	if err != nil {
		return nil, nil, err
	}
	if len(cleanup) > 0 {
		if err := be.Commit(cleanup, true); err != nil {
			return nil, nil, fmt.Errorf("store %s: removing orphaned records: %w", path, err)
		}
	}
	return newLog(be, opts, maxID+1), rec, nil
}

// load reads every record of be and assembles them. It returns the operations that remove orphans
// and the largest message id.
func load(be Backend) (*Recovered, []Op, uint64, error) {
	sessions := make(map[string]*RecoveredSession)
	var subs, outs, ins []Op
	var retained []*Message
	messages := make(map[uint64]*Message)
	err := be.Load(func(op *Op) error {
		switch op.Kind {
		case PutSession:
			if op.Session == nil {
				return fmt.Errorf("%w: session record %q without data", ErrCorrupt, op.ClientID)
			}
			sessions[op.ClientID] = &RecoveredSession{Session: *op.Session}
		case PutSubscription:
			subs = append(subs, *op)
		case PutOutbound:
			outs = append(outs, *op)
		case PutInbound:
			ins = append(ins, *op)
		case PutRetained:
			retained = append(retained, &Message{Topic: op.Name, Payload: op.Payload, QoS: op.QoS, Retain: true})
		case PutMessage:
			messages[op.ID] = &Message{ID: op.ID, Topic: op.Name, Payload: op.Payload, QoS: op.QoS, Retain: op.Retain}
		default:
			return fmt.Errorf("%w: Load returned %s", ErrCorrupt, op.Kind)
		}
		return nil
	})
	if err != nil {
		return nil, nil, 0, err
	}
	var cleanup []Op
	var maxID uint64
	for id := range messages {
		maxID = max(maxID, id)
	}
	for _, op := range subs {
		s := sessions[op.ClientID]
		if s == nil {
			cleanup = append(cleanup, Op{Kind: DeleteSubscription, ClientID: op.ClientID, Name: op.Name})
			continue
		}
		s.Subscriptions = append(s.Subscriptions, Subscription{Filter: op.Name, QoS: op.QoS})
	}
	used := make(map[uint64]bool)
	for _, op := range outs {
		s := sessions[op.ClientID]
		o := op.Outbound
		var m *Message
		if o.MsgID != 0 {
			m = messages[o.MsgID]
		}
		if s == nil || (m == nil && o.State != AwaitPubcomp) {
			cleanup = append(cleanup, Op{Kind: DeleteOutbound, ClientID: op.ClientID, ID: o.Seq})
			continue
		}
		if m != nil {
			used[m.ID] = true
		}
		s.Outbound = append(s.Outbound, RecoveredOutbound{Outbound: o, Msg: m})
	}
	for _, op := range ins {
		s := sessions[op.ClientID]
		if s == nil {
			cleanup = append(cleanup, Op{Kind: DeleteInbound, ClientID: op.ClientID, PacketID: op.PacketID})
			continue
		}
		s.Inbound = append(s.Inbound, op.PacketID)
	}
	for id := range messages {
		if !used[id] {
			cleanup = append(cleanup, Op{Kind: DeleteMessage, ID: id})
		}
	}
	rec := &Recovered{Retained: retained, Messages: len(used), Removed: len(cleanup)}
	for _, s := range sessions {
		slices.SortFunc(s.Subscriptions, func(a, b Subscription) int { return cmp.Compare(a.Filter, b.Filter) })
		slices.SortFunc(s.Outbound, func(a, b RecoveredOutbound) int { return cmp.Compare(a.Seq, b.Seq) })
		slices.Sort(s.Inbound)
		rec.Sessions = append(rec.Sessions, s)
	}
	slices.SortFunc(rec.Sessions, func(a, b *RecoveredSession) int { return cmp.Compare(a.ClientID, b.ClientID) })
	slices.SortFunc(rec.Retained, func(a, b *Message) int { return cmp.Compare(a.Topic, b.Topic) })
	return rec, cleanup, maxID, nil
}

// MoveAside renames the store at path (a file or a directory) to path + ".corrupt-" + a UTC
// timestamp, so that a fresh store can be created in its place while the old one is kept for
// inspection. It returns the new name.
func MoveAside(path string, now time.Time) (string, error) {
	to := path + ".corrupt-" + now.UTC().Format("20060102T150405Z")
	if err := os.Rename(path, to); err != nil {
		return "", fmt.Errorf("moving store %s aside: %w", path, err)
	}
	return to, nil
}

func errUnknownKind(k Kind) error { return fmt.Errorf("store: unknown operation %s", k) }
