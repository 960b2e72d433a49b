package packet

import "fmt"

// requiredFlags holds the fixed-header flag values of Table 2.2 for every
// type except PUBLISH, whose flags carry DUP, QoS and RETAIN.
var requiredFlags = [16]byte{
	TypePubrel:      0x2, // [MQTT-3.6.1-1]
	TypeSubscribe:   0x2, // [MQTT-3.8.1-1]
	TypeUnsubscribe: 0x2, // [MQTT-3.10.1-1]
}

// flagStatements names the statement a wrong flag nibble breaks; types
// with a statement of their own use it, the rest the general rule.
var flagStatements = [16]string{
	TypePubrel:      "MQTT-3.6.1-1",
	TypeSubscribe:   "MQTT-3.8.1-1",
	TypeUnsubscribe: "MQTT-3.10.1-1",
	TypeDisconnect:  "MQTT-3.14.1-1",
}

// checkType rejects the reserved packet types 0 and 15 and reserved flag
// bits that differ from Table 2.2 ([MQTT-2.2.2-1], [MQTT-2.2.2-2]). PUBLISH
// flags are checked by DecodePublish.
func checkType(t Type, flags byte) error {
	if !t.known() {
		return newError("", "fixed header: packet type %d is reserved", byte(t))
	}
	if t == TypePublish || flags == requiredFlags[t] {
		return nil
	}
	stmt := flagStatements[t]
	if stmt == "" {
		stmt = "MQTT-2.2.2-1"
	}
	return newError(stmt, "%s: fixed header flags: got %04b, want %04b", t.field(), flags, requiredFlags[t])
}

// ParseFixedHeader parses the fixed header at the start of b. n is the
// header length (2..5). maxPacketSize bounds the whole packet (header plus
// Remaining Length); 0 or less means the protocol maximum.
//
// It returns ErrIncomplete when b is a proper prefix of a valid header. A
// reserved type (0 or 15), reserved flag bits that differ from Table 2.2
// ([MQTT-2.2.2-1], [MQTT-2.2.2-2], [MQTT-3.6.1-1], [MQTT-3.8.1-1],
// [MQTT-3.10.1-1], [MQTT-3.14.1-1]) and a Remaining Length longer than four
// bytes give an *Error. The first byte is checked before waiting for more,
// and a packet larger than maxPacketSize is refused with an error wrapping
// ErrTooLarge as soon as its Remaining Length is known, before anyone
// allocates or waits for the body.
//
// It does not allocate unless it returns an *Error.
func ParseFixedHeader(b []byte, maxPacketSize int) (h FixedHeader, n int, err error) {
	if len(b) == 0 {
		return FixedHeader{}, 0, ErrIncomplete
	}
	t, flags := Type(b[0]>>4), b[0]&0x0f
	if err := checkType(t, flags); err != nil {
		return FixedHeader{}, 0, err
	}
	// The Remaining Length is a little-endian base-128 varint of at most
	// four bytes (section 2.2.3). Non-minimal encodings are accepted: 3.1.1,
	// unlike 5.0, has no statement against them.
	rl := 0
	for i := 1; ; i++ {
		if i == maxHeaderLen {
			return FixedHeader{}, 0, newError("", "fixed header: remaining length: longer than 4 bytes")
		}
		if i >= len(b) {
			return FixedHeader{}, 0, ErrIncomplete
		}
		c := b[i]
		rl |= int(c&0x7f) << (7 * (i - 1))
		if c&0x80 == 0 {
			n = i + 1
			break
		}
	}
	if maxPacketSize > 0 && n+rl > maxPacketSize {
		return FixedHeader{}, 0, &Error{
			Msg: fmt.Sprintf("%s: packet size %d exceeds maximum %d", t.field(), n+rl, maxPacketSize),
			err: ErrTooLarge,
		}
	}
	return FixedHeader{Type: t, Flags: flags, RemainingLength: rl}, n, nil
}

// Frame finds one whole packet at the start of b: the header, the body and
// the total length n (header plus body). The body aliases b, with its
// capacity clipped at the end of the packet. Frame returns ErrIncomplete
// when b does not yet hold the whole packet, and the errors of
// ParseFixedHeader. It never allocates unless it returns an *Error.
func Frame(b []byte, maxPacketSize int) (h FixedHeader, body []byte, n int, err error) {
	h, hn, err := ParseFixedHeader(b, maxPacketSize)
	if err != nil {
		return FixedHeader{}, nil, 0, err
	}
	n = hn + h.RemainingLength
	if len(b) < n {
		return FixedHeader{}, nil, 0, ErrIncomplete
	}
	return h, b[hn:n:n], n, nil
}

// varintLen returns the number of bytes appendVarint writes for v.
func varintLen(v int) int {
	switch {
	case v < 1<<7:
		return 1
	case v < 1<<14:
		return 2
	case v < 1<<21:
		return 3
	default:
		return 4
	}
}

// appendVarint appends v as a Remaining Length (section 2.2.3).
func appendVarint(dst []byte, v int) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 {
			return append(dst, c)
		}
		dst = append(dst, c|0x80)
	}
}

// appendHeader appends a fixed header.
func appendHeader(dst []byte, t Type, flags byte, remaining int) []byte {
	dst = append(dst, byte(t)<<4|flags)
	return appendVarint(dst, remaining)
}

// appendUint16 appends v big-endian, as MQTT encodes every two-byte
// integer (section 1.5.2).
func appendUint16(dst []byte, v uint16) []byte {
	return append(dst, byte(v>>8), byte(v))
}

// appendString appends a length-prefixed string (section 1.5.3).
func appendString(dst []byte, s string) []byte {
	dst = appendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

// appendBinary appends length-prefixed binary data (section 1.5.3 layout).
func appendBinary(dst, b []byte) []byte {
	dst = appendUint16(dst, uint16(len(b)))
	return append(dst, b...)
}

// readUint16 reads a big-endian two-byte integer; ok is false when b holds
// fewer than two bytes.
func readUint16(b []byte) (v uint16, rest []byte, ok bool) {
	if len(b) < 2 {
		return 0, b, false
	}
	return uint16(b[0])<<8 | uint16(b[1]), b[2:], true
}

// readField reads a two-byte length and that many bytes, the layout of
// every string and binary field; the field aliases b. ok is false when the
// length prefix or the bytes it announces run past the end of b.
func readField(b []byte) (field, rest []byte, ok bool) {
	n, rest, ok := readUint16(b)
	if !ok || int(n) > len(rest) {
		return nil, b, false
	}
	return rest[:n:n], rest[n:], true
}
