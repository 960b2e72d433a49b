package sqlite

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/store"
)

// willVersion is the first byte of an encoded will. A change of the encoding gets a new version,
// and decodeWill keeps reading the old ones.
const willVersion = 1

// willRetain is the flag bit of the will's retain flag; the other bits are reserved and must be 0.
const willRetain = 1

// appendWill appends the encoding of m to b and returns the result. The will is the one column of
// the schema that is not plain columns: it is optional, and a message of its own (topic, QoS,
// retain, payload), so it is kept as one value that is NULL when the session has no will.
//
// The layout, in order:
//
//	version  1 byte, willVersion
//	qos      1 byte
//	flags    1 byte: bit 0 is the retain flag, the others are 0
//	id       uvarint, Message.ID (0 for a will, kept so that the record round-trips)
//	topic    uvarint length, then the topic's bytes
//	payload  the rest of the value
func appendWill(b []byte, m *store.Message) []byte {
	var flags byte
	if m.Retain {
		flags |= willRetain
	}
	b = append(b, willVersion, byte(m.QoS), flags)
	b = binary.AppendUvarint(b, m.ID)
	b = binary.AppendUvarint(b, uint64(len(m.Topic)))
	b = append(b, m.Topic...)
	return append(b, m.Payload...)
}

var errShortWill = errors.New("will record is truncated")

// decodeWill decodes a will encoded by appendWill. The result shares no memory with b. It rejects
// anything appendWill does not produce: an unknown version, reserved flag bits, a varint that is
// truncated, overlong or not in its shortest form, a topic longer than the record.
func decodeWill(b []byte) (*store.Message, error) {
	if len(b) < 3 {
		return nil, errShortWill
	}
	if b[0] != willVersion {
		return nil, fmt.Errorf("will record has unknown encoding version %d", b[0])
	}
	if b[2]&^willRetain != 0 {
		return nil, fmt.Errorf("will record has unknown flags %#02x", b[2])
	}
	m := &store.Message{QoS: packet.QoS(b[1]), Retain: b[2]&willRetain != 0}
	rest := b[3:]
	id, rest, err := uvarint(rest)
	if err != nil {
		return nil, fmt.Errorf("will message id: %w", err)
	}
	n, rest, err := uvarint(rest)
	if err != nil {
		return nil, fmt.Errorf("will topic length: %w", err)
	}
	if n > uint64(len(rest)) {
		return nil, fmt.Errorf("will topic length %d exceeds the %d bytes left", n, len(rest))
	}
	m.ID = id
	m.Topic = string(rest[:n])
	m.Payload = append([]byte{}, rest[n:]...)
	return m, nil
}

// uvarint reads a varint in its shortest form, so that every record has exactly one encoding.
func uvarint(b []byte) (uint64, []byte, error) {
	v, n := binary.Uvarint(b)
	switch {
	case n == 0:
		return 0, nil, errShortWill
	case n < 0:
		return 0, nil, errors.New("varint overflows 64 bits")
	case n > 1 && b[n-1] == 0:
		return 0, nil, errors.New("varint is not in its shortest form")
	}
	return v, b[n:], nil
}
