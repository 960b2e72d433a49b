package pebble

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"

	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/store"
)

// Keys. The first byte of a key says which table it belongs to. Every record of one client lives
// under the client's prefix, tagClient + uvarint(len(id)) + id, followed by a sub-tag. The length
// prefix makes the prefixes of two different client ids disjoint ("a" is not a prefix of "ab" or
// "a/b"), so DeleteSession can remove [prefix+subSession, prefix+subEnd) with one range deletion
// and touch no other client.
const (
	tagMeta     byte = 0x00 // tagMeta + name: engine metadata such as the schema version
	tagClient   byte = 0x01 // client prefix + sub-tag + ...: a session and its records
	tagRetained byte = 0x02 // tagRetained + topic: a retained message
	tagMessage  byte = 0x03 // tagMessage + big-endian uint64 id: a message outbound records refer to
)

// Sub-tags after a client prefix.
const (
	subSession      byte = 0x00 // nothing follows
	subSubscription byte = 0x01 // the filter follows
	subOutbound     byte = 0x02 // the big-endian uint64 Seq follows
	subInbound      byte = 0x03 // the big-endian uint16 packet identifier follows
	subEnd          byte = 0x04 // exclusive end of a client's range; never stored
)

// recordV1 is the first byte of every value: the encoding of the record. A value that starts with
// anything else does not decode, so a later encoding can be told apart.
const recordV1 byte = 1

// versionKey holds the schema version (store.Backend.Version).
var versionKey = []byte{tagMeta, 'v'}

// Flags of a session value.
const flagWill byte = 1

// Values (after the recordV1 byte), with uvarints in their shortest form:
//
//	session:      flags, zigzag-uvarint DisconnectedAt; with flagWill: uvarint len(topic), topic,
//	              QoS, retain (0 or 1), uvarint ID, payload (the rest)
//	subscription: QoS
//	outbound:     uvarint MsgID, QoS, State, big-endian uint16 PacketID
//	inbound:      nothing
//	retained:     QoS, payload (the rest)
//	message:      QoS, retain (0 or 1), uvarint len(topic), topic, payload (the rest)
//	version:      uvarint version

func appendClientPrefix(dst []byte, id string) []byte {
	dst = append(dst, tagClient)
	dst = binary.AppendUvarint(dst, uint64(len(id)))
	return append(dst, id...)
}

func appendSessionKey(dst []byte, id string) []byte {
	return append(appendClientPrefix(dst, id), subSession)
}

func appendSubscriptionKey(dst []byte, id, filter string) []byte {
	return append(append(appendClientPrefix(dst, id), subSubscription), filter...)
}

func appendOutboundKey(dst []byte, id string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append(appendClientPrefix(dst, id), subOutbound), seq)
}

func appendInboundKey(dst []byte, id string, pid uint16) []byte {
	return binary.BigEndian.AppendUint16(append(appendClientPrefix(dst, id), subInbound), pid)
}

func appendRetainedKey(dst []byte, topic string) []byte {
	return append(append(dst, tagRetained), topic...)
}

func appendMessageKey(dst []byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, tagMessage), id)
}

// appendRecord appends the key and the value that store op, a Put operation, to k and v.
func appendRecord(k, v []byte, op *store.Op) (key, val []byte) {
	switch op.Kind {
	case store.PutSession:
		return appendSessionKey(k, op.ClientID), appendSessionValue(v, op.Session)
	case store.PutSubscription:
		return appendSubscriptionKey(k, op.ClientID, op.Name), appendSubscriptionValue(v, op.QoS)
	case store.PutRetained:
		return appendRetainedKey(k, op.Name), appendRetainedValue(v, op.QoS, op.Payload)
	case store.PutMessage:
		return appendMessageKey(k, op.ID), appendMessageValue(v, op.QoS, op.Retain, op.Name, op.Payload)
	case store.PutOutbound:
		return appendOutboundKey(k, op.ClientID, op.Outbound.Seq), appendOutboundValue(v, &op.Outbound)
	case store.PutInbound:
		return appendInboundKey(k, op.ClientID, op.PacketID), appendInboundValue(v)
	}
	panic("pebble: appendRecord of " + op.Kind.String()) // Commit checked the kind
}

func appendBool(dst []byte, b bool) []byte {
	if b {
		return append(dst, 1)
	}
	return append(dst, 0)
}

func appendSessionValue(dst []byte, s *store.Session) []byte {
	dst = append(dst, recordV1)
	at := uint64(s.DisconnectedAt<<1) ^ uint64(s.DisconnectedAt>>63) // zigzag
	if s.Will == nil {
		return binary.AppendUvarint(append(dst, 0), at)
	}
	w := s.Will
	dst = binary.AppendUvarint(append(dst, flagWill), at)
	dst = binary.AppendUvarint(dst, uint64(len(w.Topic)))
	dst = append(dst, w.Topic...)
	dst = appendBool(append(dst, byte(w.QoS)), w.Retain)
	dst = binary.AppendUvarint(dst, w.ID)
	return append(dst, w.Payload...)
}

func appendSubscriptionValue(dst []byte, q packet.QoS) []byte {
	return append(dst, recordV1, byte(q))
}

func appendOutboundValue(dst []byte, o *store.Outbound) []byte {
	dst = binary.AppendUvarint(append(dst, recordV1), o.MsgID)
	dst = append(dst, byte(o.QoS), byte(o.State))
	return binary.BigEndian.AppendUint16(dst, o.PacketID)
}

func appendInboundValue(dst []byte) []byte { return append(dst, recordV1) }

func appendRetainedValue(dst []byte, q packet.QoS, payload []byte) []byte {
	return append(append(dst, recordV1, byte(q)), payload...)
}

func appendMessageValue(dst []byte, q packet.QoS, retain bool, topic string, payload []byte) []byte {
	dst = appendBool(append(dst, recordV1, byte(q)), retain)
	dst = binary.AppendUvarint(dst, uint64(len(topic)))
	dst = append(dst, topic...)
	return append(dst, payload...)
}

func appendVersionValue(dst []byte, v uint64) []byte {
	return binary.AppendUvarint(append(dst, recordV1), v)
}

// Decoding errors. A record that fails to decode makes the store corrupt (store.ErrCorrupt).
var (
	errShort     = errors.New("record is truncated")
	errTrailing  = errors.New("record has trailing bytes")
	errVarint    = errors.New("malformed or non-minimal varint")
	errEncoding  = errors.New("unknown record encoding")
	errEmptyKey  = errors.New("empty key")
	errUnknownID = errors.New("unknown key table")
)

// reader reads the fields of a key or value. The first error sticks; later reads return zero
// values, so a decoder checks r.err once at the end.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.b = nil
}

func (r *reader) byte() byte {
	if len(r.b) < 1 {
		r.fail(errShort)
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// uvarint reads a uvarint and rejects one that is not in its shortest form, so that every record
// has exactly one encoding.
func (r *reader) uvarint() uint64 {
	x, n := binary.Uvarint(r.b)
	if n <= 0 {
		if n == 0 {
			r.fail(errShort)
		} else {
			r.fail(errVarint)
		}
		return 0
	}
	if n != uvarintLen(x) {
		r.fail(errVarint)
		return 0
	}
	r.b = r.b[n:]
	return x
}

func uvarintLen(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }

func (r *reader) bytes(n uint64) []byte {
	if uint64(len(r.b)) < n {
		r.fail(errShort)
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

func (r *reader) uint16() uint16 {
	p := r.bytes(2)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint16(p)
}

func (r *reader) uint64() uint64 {
	p := r.bytes(8)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint64(p)
}

func (r *reader) rest() []byte {
	p := r.b
	r.b = nil
	return p
}

func (r *reader) qos() packet.QoS {
	q := r.byte()
	if q > byte(packet.QoS2) {
		r.fail(fmt.Errorf("QoS %d out of range", q))
	}
	return packet.QoS(q)
}

func (r *reader) bool() bool {
	b := r.byte()
	if b > 1 {
		r.fail(fmt.Errorf("flag %d is not 0 or 1", b))
	}
	return b == 1
}

// version reads the leading encoding byte of a value.
func (r *reader) version() {
	if v := r.byte(); v != recordV1 && r.err == nil {
		r.fail(fmt.Errorf("%w %d", errEncoding, v))
	}
}

// end reports the first error, or errTrailing if bytes are left.
func (r *reader) end() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = errTrailing
	}
	return r.err
}

// decoder turns stored records back into operations. It remembers the last client id so that the
// records of one client, which are adjacent in key order, share one string.
type decoder struct {
	lastID []byte
	id     string
}

func (d *decoder) clientID(b []byte) string {
	if d.lastID == nil || string(b) != string(d.lastID) {
		d.id = string(b)
		d.lastID = append(d.lastID[:0], b...)
	}
	return d.id
}

// decode fills op with the Put operation that stores (key, val). Payloads are copied: the op does
// not refer to key or val. It reports a metadata key with meta true and op untouched.
func (d *decoder) decode(key, val []byte, op *store.Op) (meta bool, err error) {
	if len(key) == 0 {
		return false, errEmptyKey
	}
	k := reader{b: key[1:]}
	v := reader{b: val}
	switch key[0] {
	case tagMeta:
		return true, nil
	case tagClient:
		idb := k.bytes(k.uvarint())
		sub := k.byte()
		if k.err != nil {
			return false, fmt.Errorf("key: %w", k.err)
		}
		op.ClientID = d.clientID(idb)
		v.version()
		switch sub {
		case subSession:
			op.Kind = store.PutSession
			op.Session = decodeSession(&v, op.ClientID)
		case subSubscription:
			op.Kind = store.PutSubscription
			op.Name = string(k.rest())
			op.QoS = v.qos()
		case subOutbound:
			op.Kind = store.PutOutbound
			op.Outbound = store.Outbound{Seq: k.uint64(), MsgID: v.uvarint(), QoS: v.qos()}
			if st := v.byte(); st <= byte(store.AwaitPubcomp) {
				op.Outbound.State = store.State(st)
			} else {
				v.fail(fmt.Errorf("outbound state %d out of range", st))
			}
			op.Outbound.PacketID = v.uint16()
		case subInbound:
			op.Kind = store.PutInbound
			op.PacketID = k.uint16()
		default:
			return false, fmt.Errorf("key: unknown client record type %d", sub)
		}
	case tagRetained:
		op.Kind = store.PutRetained
		op.Name = string(k.rest())
		v.version()
		op.QoS = v.qos()
		op.Payload = clone(v.rest())
	case tagMessage:
		op.Kind = store.PutMessage
		op.ID = k.uint64()
		v.version()
		op.QoS = v.qos()
		op.Retain = v.bool()
		op.Name = string(v.bytes(v.uvarint()))
		op.Payload = clone(v.rest())
	default:
		return false, fmt.Errorf("key: %w %d", errUnknownID, key[0])
	}
	if err := k.end(); err != nil {
		return false, fmt.Errorf("key: %w", err)
	}
	if err := v.end(); err != nil {
		return false, fmt.Errorf("value: %w", err)
	}
	return false, nil
}

func decodeSession(v *reader, id string) *store.Session {
	s := &store.Session{ClientID: id}
	flags := v.byte()
	at := v.uvarint()
	s.DisconnectedAt = int64(at>>1) ^ -int64(at&1) // zigzag
	switch flags {
	case 0:
	case flagWill:
		w := &store.Message{}
		w.Topic = string(v.bytes(v.uvarint()))
		w.QoS = v.qos()
		w.Retain = v.bool()
		w.ID = v.uvarint()
		w.Payload = clone(v.rest())
		s.Will = w
	default:
		v.fail(fmt.Errorf("unknown session flags %#x", flags))
	}
	return s
}

func decodeVersion(val []byte) (uint64, error) {
	r := reader{b: val}
	r.version()
	x := r.uvarint()
	return x, r.end()
}

// clone copies p into a slice of its own (never nil, like the reference backend's).
func clone(p []byte) []byte { return append([]byte{}, p...) }
