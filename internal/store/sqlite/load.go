package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/store"
)

// Load implements store.Backend. It reads each table once and calls fn
// with a new Op for every row; the Op and what it points to belong to fn. A row that SQLite
// cannot read, or whose values do not fit the fields of its record, is reported as
// store.ErrCorrupt with the table and key.
func (b *Backend) Load(fn func(*store.Op) error) (err error) {
	if b.closed {
		return store.ErrClosed
	}
	inFn := false
	defer func() {
		if r := recover(); r != nil {
			if inFn {
				panic(r) // fn's own panic is not a damaged store
			}
			err = store.Corrupt(b.path, "the SQLite engine failed while reading the store", fmt.Errorf("panic: %v", r))
		}
	}()
	call := func(op *store.Op) error {
		inFn = true
		err := fn(op)
		inFn = false
		return err
	}
	for _, t := range loaders {
		if err := b.loadTable(t, call); err != nil {
			return err
		}
	}
	return nil
}

// row holds the columns of one row as scanned; a loader reads the ones its table has.
type row struct {
	id            string // client id or topic
	name          string // filter or topic
	a, c, d, e, f int64
	raw           sql.RawBytes // payload or will; valid until the next row
}

// loader reads one table: query selects the columns that dest points to, and op turns them into
// a record.
type loader struct {
	table string
	query string
	dest  func(r *row) []any
	op    func(r *row) (*store.Op, error)
}

var loaders = []loader{
	{
		table: "sessions",
		query: `SELECT client_id, disconnected_at, will IS NOT NULL, will FROM sessions`,
		dest:  func(r *row) []any { return []any{&r.id, &r.a, &r.c, &r.raw} },
		op: func(r *row) (*store.Op, error) {
			s := &store.Session{ClientID: r.id, DisconnectedAt: r.a}
			if r.c != 0 {
				w, err := decodeWill(r.raw)
				if err != nil {
					return nil, fmt.Errorf("session %q: %w", r.id, err)
				}
				s.Will = w
			}
			return &store.Op{Kind: store.PutSession, ClientID: r.id, Session: s}, nil
		},
	},
	{
		table: "subscriptions",
		query: `SELECT client_id, filter, qos FROM subscriptions`,
		dest:  func(r *row) []any { return []any{&r.id, &r.name, &r.a} },
		op: func(r *row) (*store.Op, error) {
			q, err := qos(r.a)
			if err != nil {
				return nil, fmt.Errorf("subscription %q of session %q: %w", r.name, r.id, err)
			}
			return &store.Op{Kind: store.PutSubscription, ClientID: r.id, Name: r.name, QoS: q}, nil
		},
	},
	{
		table: "retained",
		query: `SELECT topic, qos, payload FROM retained`,
		dest:  func(r *row) []any { return []any{&r.name, &r.a, &r.raw} },
		op: func(r *row) (*store.Op, error) {
			q, err := qos(r.a)
			if err != nil {
				return nil, fmt.Errorf("retained message of topic %q: %w", r.name, err)
			}
			return &store.Op{Kind: store.PutRetained, Name: r.name, QoS: q, Payload: append([]byte{}, r.raw...)}, nil
		},
	},
	{
		table: "messages",
		query: `SELECT id, topic, qos, retain, payload FROM messages`,
		dest:  func(r *row) []any { return []any{&r.a, &r.name, &r.c, &r.d, &r.raw} },
		op: func(r *row) (*store.Op, error) {
			q, err := qos(r.c)
			if err == nil && r.d != 0 && r.d != 1 {
				err = fmt.Errorf("retain flag %d is not 0 or 1", r.d)
			}
			if err != nil {
				return nil, fmt.Errorf("message %d: %w", uint64(r.a), err)
			}
			return &store.Op{Kind: store.PutMessage, ID: uint64(r.a), Name: r.name, QoS: q, Retain: r.d == 1,
				Payload: append([]byte{}, r.raw...)}, nil
		},
	},
	{
		table: "outbound",
		query: `SELECT client_id, seq, msg_id, qos, state, packet_id FROM outbound`,
		dest:  func(r *row) []any { return []any{&r.id, &r.a, &r.c, &r.d, &r.e, &r.f} },
		op: func(r *row) (*store.Op, error) {
			q, err := qos(r.d)
			if err == nil && (r.e < 0 || r.e > 0xff) {
				err = fmt.Errorf("state %d out of range", r.e)
			}
			if err == nil {
				err = checkPacketID(r.f)
			}
			if err != nil {
				return nil, fmt.Errorf("outbound record %d of session %q: %w", uint64(r.a), r.id, err)
			}
			return &store.Op{Kind: store.PutOutbound, ClientID: r.id, Outbound: store.Outbound{
				Seq: uint64(r.a), MsgID: uint64(r.c), QoS: q, State: store.State(r.e), PacketID: uint16(r.f)}}, nil
		},
	},
	{
		table: "inbound",
		query: `SELECT client_id, packet_id FROM inbound`,
		dest:  func(r *row) []any { return []any{&r.id, &r.a} },
		op: func(r *row) (*store.Op, error) {
			if err := checkPacketID(r.a); err != nil {
				return nil, fmt.Errorf("inbound record of session %q: %w", r.id, err)
			}
			return &store.Op{Kind: store.PutInbound, ClientID: r.id, PacketID: uint16(r.a)}, nil
		},
	},
}

// qos checks that a stored QoS fits its field. The store keeps what the broker wrote, like the
// reference backend does, so the check is the field's range, not MQTT's.
func qos(v int64) (packet.QoS, error) {
	if v < 0 || v > 0xff {
		return 0, fmt.Errorf("QoS %d out of range", v)
	}
	return packet.QoS(v), nil
}

func checkPacketID(v int64) error {
	if v < 0 || v > 0xffff {
		return fmt.Errorf("packet identifier %d out of range", v)
	}
	return nil
}

// loadTable reads the table of t and calls fn with each record.
func (b *Backend) loadTable(t loader, fn func(*store.Op) error) error {
	rows, err := b.conn.QueryContext(context.Background(), t.query)
	if err != nil {
		return b.engineErr("reading table "+t.table, err)
	}
	defer rows.Close()
	var r row
	dest := t.dest(&r)
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return store.Corrupt(b.path, "a row of table "+t.table+" does not decode", err)
		}
		op, err := t.op(&r)
		if err != nil {
			return store.Corrupt(b.path, "a record of table "+t.table+" does not decode", err)
		}
		if err := fn(op); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return b.engineErr("reading table "+t.table, err)
	}
	return nil
}
