// Package store is IoTD's persistence contract: what the broker writes so that persistent sessions,
// retained messages and messages in flight survive a restart or a crash, and how a storage engine
// keeps it.
//
// The contract has two halves.
//
//   - Backend is what a storage engine implements: apply a batch of operations atomically
//     (Commit), replay what is stored (Load), and close. Every backend runs the same conformance
//     suite, storetest.Run. This package holds the in-memory reference backend (NewMemory); the
//     file backend (Pebble) and the SQLite backend live in subpackages.
//   - Log is what the broker writes to. It never blocks on I/O: the broker appends operations to
//     the current group under a short lock, and one goroutine commits groups to the backend with
//     the configured fsync policy (group commit). Each append gets a sequence number; a packet
//     that must not reach a client before the state it depends on is durable (an acknowledgement,
//     a PUBREL, a QoS 2 PUBLISH to a subscriber) waits until Log.Durable reaches the sequence
//     number that was current when it was queued.
//
// What is stored, record by record (the Kind of an Op says which):
//
//   - a persistent session (CleanSession=0, [MQTT-3.1.2-4]): its client id, the will of its current
//     connection, and when its client went away;
//   - the session's subscriptions, one record per filter;
//   - its outbound messages, queued or in flight, one record per message in the order they were
//     queued, with the packet identifier and acknowledgement state once sent; the message itself is
//     a separate record shared by every session it was delivered to;
//   - its inbound QoS 2 packet identifiers awaiting PUBREL ([MQTT-4.3.3-2]);
//   - retained messages, one record per topic ([MQTT-3.3.1-5]).
//
// Clean sessions are not stored: they end with their connection ([MQTT-3.1.2-6]).
package store

import (
	"errors"
	"fmt"

	"github.com/iotd/iotd/internal/packet"
)

// SchemaVersion is the version of the stored layout that this build writes. A backend records it
// when it creates a store; Open migrates an older store step by step (see Migrations) and refuses
// a newer one.
const SchemaVersion = 1

// Kind is what an Op does.
type Kind uint8

// The operations. A Put replaces the record with the same key; a Delete of a missing record is not
// an error. Keys are given with each kind.
const (
	// PutSession stores Session (key: Session.ClientID), keeping the session's other records.
	PutSession Kind = iota + 1
	// DeleteSession removes the session ClientID together with its subscriptions, outbound and
	// inbound records. The messages those outbound records referred to are deleted by their own
	// DeleteMessage operations.
	DeleteSession
	// PutSubscription stores filter Name with QoS for session ClientID (key: ClientID, Name).
	PutSubscription
	// DeleteSubscription removes filter Name of session ClientID.
	DeleteSubscription
	// PutRetained stores Msg as the retained message of its topic (key: Msg.Topic).
	PutRetained
	// DeleteRetained removes the retained message of topic Name.
	DeleteRetained
	// PutMessage stores Msg, which outbound records refer to by Msg.ID (key: Msg.ID).
	PutMessage
	// DeleteMessage removes message ID.
	DeleteMessage
	// PutOutbound stores Outbound for session ClientID (key: ClientID, Outbound.Seq).
	PutOutbound
	// DeleteOutbound removes outbound record Seq of session ClientID.
	DeleteOutbound
	// PutInbound stores inbound QoS 2 packet identifier PacketID of session ClientID (key:
	// ClientID, PacketID).
	PutInbound
	// DeleteInbound removes inbound packet identifier PacketID of session ClientID.
	DeleteInbound
)

var kindNames = [...]string{"", "PutSession", "DeleteSession", "PutSubscription", "DeleteSubscription",
	"PutRetained", "DeleteRetained", "PutMessage", "DeleteMessage", "PutOutbound", "DeleteOutbound",
	"PutInbound", "DeleteInbound"}

// String returns the kind's name, such as "PutSession".
func (k Kind) String() string {
	if int(k) < len(kindNames) && k != 0 {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", k)
}

// Message is an application message as recovered from a store: a retained message, a will, or a
// message queued or in flight to one or more sessions.
type Message struct {
	ID      uint64     // identifies a message referred to by outbound records; 0 for retained messages and wills
	Topic   string     // the topic name
	Payload []byte     // the application message
	QoS     packet.QoS // the QoS it was published with
	Retain  bool       // its retain flag
}

// Session is the stored part of a persistent session.
type Session struct {
	ClientID string
	// Will is the will message of the connection bound to the session, nil when there is none or
	// no connection. A will found on recovery belongs to a connection the broker lost when it
	// stopped, so the broker publishes it ([MQTT-3.1.2-8]).
	Will *Message
	// DisconnectedAt is when the session's client went away, in Unix nanoseconds; 0 while it is
	// connected. Session expiry counts from it across restarts.
	DisconnectedAt int64
}

// State is where an outbound message is in its delivery.
type State uint8

const (
	// Queued: not sent yet; it has no packet identifier.
	Queued State = iota
	// AwaitPuback: sent at QoS 1 with PacketID; PUBACK completes it.
	AwaitPuback
	// AwaitPubrec: sent at QoS 2 with PacketID; PUBREC moves it on.
	AwaitPubrec
	// AwaitPubcomp: PUBREL sent for PacketID; PUBCOMP completes it. Its message is no longer
	// needed (MsgID is 0).
	AwaitPubcomp
)

// Outbound is a message queued or in flight to one session.
type Outbound struct {
	// Seq orders the session's outbound records: messages are delivered in increasing Seq
	// ([MQTT-4.6.0-5]). It is unique within the session and never reused.
	Seq      uint64
	MsgID    uint64     // the Message; 0 in AwaitPubcomp
	QoS      packet.QoS // the QoS it is delivered at
	State    State      // where it is in its delivery
	PacketID uint16     // the packet identifier it was sent with; 0 while Queued
}

// Op is one operation on the store. Which fields matter depends on Kind (see the Kind constants);
// the others are zero. A message (PutRetained, PutMessage) is carried inline, so appending one to a
// Log allocates nothing.
type Op struct {
	Kind     Kind
	QoS      packet.QoS // PutSubscription; the message's QoS for PutRetained and PutMessage
	Retain   bool       // PutMessage: the message's retain flag
	PacketID uint16     // PutInbound, DeleteInbound
	ClientID string     // every session-scoped kind
	Name     string     // filter (PutSubscription, DeleteSubscription) or topic (PutRetained, DeleteRetained, PutMessage)
	Payload  []byte     // PutRetained, PutMessage
	ID       uint64     // PutMessage, DeleteMessage: the message; DeleteOutbound: the Seq
	Session  *Session   // PutSession
	Outbound Outbound   // PutOutbound
}

// Backend is a storage engine. Its methods are called by one goroutine at a time (the Log's
// committer, or Open before the Log starts), so a backend need not lock.
type Backend interface {
	// Load calls fn with one Put operation for every stored record: PutSession, PutSubscription,
	// PutRetained, PutMessage, PutOutbound and PutInbound, in no particular order, except that a
	// session's records may come before or after the session itself. It stops at and returns the
	// first error of fn. A store that cannot be read returns an error wrapping ErrCorrupt.
	Load(fn func(*Op) error) error
	// Commit applies ops in order, atomically: after a crash either all of them are stored or
	// none. With sync true they are durable on the device when Commit returns (fsync); with sync
	// false they reach the device when the engine or the operating system decides. Commit does
	// not keep ops or anything they point to beyond the call.
	Commit(ops []Op, sync bool) error
	// Sync makes every earlier Commit durable on the device.
	Sync() error
	// Version returns the schema version of the stored data (0 for a store created empty, before
	// any migration ran).
	Version() (int, error)
	// SetVersion records the schema version, durably.
	SetVersion(v int) error
	// Close releases the engine. The Backend is not used afterwards.
	Close() error
}

// ErrCorrupt marks a store that cannot be read: a damaged or truncated file, a record that does
// not decode, or a schema version this build does not know.
var ErrCorrupt = errors.New("store is corrupt or unreadable")

// ErrClosed is returned by operations on a closed Log.
var ErrClosed = errors.New("store: closed")

// CorruptError describes a store that cannot be read, for the operator: which file or directory,
// what is wrong and what to do. It wraps ErrCorrupt.
type CorruptError struct {
	Path   string // the store's file or directory
	Detail string // what is wrong
	Err    error  // the engine's error, if any
}

// Error implements error.
func (e *CorruptError) Error() string {
	s := fmt.Sprintf("store %s cannot be read: %s", e.Path, e.Detail)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s + ". Nothing was changed. Restore it from a backup, or start with store.on_corrupt = \"move-aside\" " +
		"(or --store-move-aside) to move it aside and begin with an empty store"
}

// Unwrap returns ErrCorrupt and the engine's error.
func (e *CorruptError) Unwrap() []error { return []error{ErrCorrupt, e.Err} }

// Corrupt returns a *CorruptError for path.
func Corrupt(path, detail string, err error) error {
	return &CorruptError{Path: path, Detail: detail, Err: err}
}
