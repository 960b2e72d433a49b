package packet

import "slices"

// Connect flag bits (section 3.1.2.3).
const (
	connectReserved     = 0x01
	connectCleanSession = 0x02
	connectWill         = 0x04
	connectWillQoSShift = 3
	connectWillRetain   = 0x20
	connectPassword     = 0x40
	connectUsername     = 0x80
)

// Protocol names of the supported levels (section 3.1.2.1).
const (
	protocolName311 = "MQTT"
	protocolName31  = "MQIsdp"
)

// Connect is the first packet a client sends (section 3.1).
type Connect struct {
	// ProtocolName is "MQTT" for 3.1.1 and "MQIsdp" for 3.1. Append
	// derives it from ProtocolLevel when empty.
	ProtocolName string
	// ProtocolLevel is Version311 or Version31. Append uses Version311
	// when it is 0.
	ProtocolLevel byte
	// CleanSession asks the server to discard any previous session.
	CleanSession bool
	// KeepAlive is the longest gap between two client packets, in seconds;
	// 0 turns keep-alive off.
	KeepAlive uint16
	// ClientID identifies the session; it may be empty, and the broker
	// decides whether to accept that ([MQTT-3.1.3-6], [MQTT-3.1.3-8]).
	ClientID string
	// Will is the message to publish when the connection ends abnormally;
	// nil when the will flag is 0.
	Will *Will
	// Username is the user name; meaningful only when HasUsername is set.
	Username string
	// HasUsername reports that the user name flag is set (the name may be
	// empty). Append sets the flag when HasUsername is true or Username is
	// not empty.
	HasUsername bool
	// Password is the password, binary data of up to 65,535 bytes.
	Password []byte
	// HasPassword reports that the password flag is set (the password may
	// be empty). Append sets the flag when HasPassword is true or Password
	// is not empty.
	HasPassword bool
}

// Will is the will message of a CONNECT (sections 3.1.2.5 to 3.1.2.7).
type Will struct {
	// Topic is the topic the will is published to.
	Topic string
	// Payload is the will message; an empty message decodes as nil.
	Payload []byte
	// QoS is the QoS the will is published with.
	QoS QoS
	// Retain publishes the will as a retained message.
	Retain bool
}

// Type returns TypeConnect.
func (c *Connect) Type() Type { return TypeConnect }

// Append appends the CONNECT encoding to dst.
func (c *Connect) Append(dst []byte) []byte {
	level := c.ProtocolLevel
	if level == 0 {
		level = Version311
	}
	name := c.ProtocolName
	if name == "" {
		name = protocolName311
		if level == Version31 {
			name = protocolName31
		}
	}
	hasUser := c.HasUsername || c.Username != ""
	hasPass := c.HasPassword || len(c.Password) > 0

	var flags byte
	if c.CleanSession {
		flags |= connectCleanSession
	}
	n := 2 + len(name) + 1 + 1 + 2 + 2 + len(c.ClientID)
	if w := c.Will; w != nil {
		flags |= connectWill | byte(w.QoS&3)<<connectWillQoSShift
		if w.Retain {
			flags |= connectWillRetain
		}
		n += 2 + len(w.Topic) + 2 + len(w.Payload)
	}
	if hasUser {
		flags |= connectUsername
		n += 2 + len(c.Username)
	}
	if hasPass {
		flags |= connectPassword
		n += 2 + len(c.Password)
	}

	dst = slices.Grow(dst, 1+varintLen(n)+n)
	dst = appendHeader(dst, TypeConnect, 0, n)
	dst = appendString(dst, name)
	dst = append(dst, level, flags)
	dst = appendUint16(dst, c.KeepAlive)
	dst = appendString(dst, c.ClientID)
	if w := c.Will; w != nil {
		dst = appendString(dst, w.Topic)
		dst = appendBinary(dst, w.Payload)
	}
	if hasUser {
		dst = appendString(dst, c.Username)
	}
	if hasPass {
		dst = appendBinary(dst, c.Password)
	}
	return dst
}

// decodeConnect decodes a CONNECT body. It checks the protocol name and
// level before anything that follows the level byte, because a CONNECT of
// a level we do not speak (5.0 has properties here) must still get its
// CONNACK 0x01 ([MQTT-3.1.2-2]).
func decodeConnect(b []byte) (*Connect, error) {
	name, b, ok := readField(b)
	if !ok {
		return nil, truncated(TypeConnect, "protocol name")
	}
	// The name is kept as one of the constants, which costs no allocation.
	var want byte
	var protocol string
	switch string(name) {
	case protocolName311:
		want, protocol = Version311, protocolName311
	case protocolName31:
		want, protocol = Version31, protocolName31
	default:
		// [MQTT-3.1.2-1]: not MQTT at all, so no CONNACK.
		return nil, newError("MQTT-3.1.2-1", "connect: protocol name: got %q, want %q or %q",
			clip(name), protocolName311, protocolName31)
	}
	if len(b) < 1 {
		return nil, truncated(TypeConnect, "protocol level")
	}
	level := b[0]
	if level != want {
		e := newError("MQTT-3.1.2-2", "connect: protocol level: got %d, want %d for protocol name %q",
			level, want, name)
		e.Code = RefusedProtocolVersion
		return nil, e
	}
	if len(b) < 2 {
		return nil, truncated(TypeConnect, "connect flags")
	}
	flags := b[1]
	b = b[2:]
	if flags&connectReserved != 0 {
		return nil, newError("MQTT-3.1.2-3", "connect: connect flags: reserved bit 0 is set")
	}
	willQoS := QoS((flags >> connectWillQoSShift) & 3)
	willRetain := flags&connectWillRetain != 0
	hasWill := flags&connectWill != 0
	switch {
	case !hasWill && willQoS != QoS0:
		// [MQTT-3.1.2-11] [MQTT-3.1.2-13]
		return nil, newError("MQTT-3.1.2-13", "connect: connect flags: will qos %d without will flag", willQoS)
	case !hasWill && willRetain:
		// [MQTT-3.1.2-11] [MQTT-3.1.2-15]
		return nil, newError("MQTT-3.1.2-15", "connect: connect flags: will retain without will flag")
	case willQoS == 3:
		return nil, newError("MQTT-3.1.2-14", "connect: connect flags: will qos 3")
	}
	hasUser := flags&connectUsername != 0
	hasPass := flags&connectPassword != 0
	if hasPass && !hasUser {
		return nil, newError("MQTT-3.1.2-22", "connect: connect flags: password flag without user name flag")
	}
	keepAlive, b, ok := readUint16(b)
	if !ok {
		return nil, truncated(TypeConnect, "keep alive")
	}

	c := &Connect{
		ProtocolName:  protocol,
		ProtocolLevel: level,
		CleanSession:  flags&connectCleanSession != 0,
		KeepAlive:     keepAlive,
		HasUsername:   hasUser,
		HasPassword:   hasPass,
	}

	// The payload fields come in a fixed order, each present exactly when
	// its flag says so ([MQTT-3.1.3-1]).
	var f []byte
	if f, b, ok = readField(b); !ok {
		return nil, missing("client id")
	}
	if err := utf8Field(TypeConnect, "client id", "MQTT-3.1.3-4", f); err != nil {
		return nil, err
	}
	c.ClientID = string(f)
	if hasWill {
		w := &Will{QoS: willQoS, Retain: willRetain}
		if f, b, ok = readField(b); !ok {
			return nil, missing("will topic")
		}
		if err := utf8Field(TypeConnect, "will topic", "MQTT-3.1.3-10", f); err != nil {
			return nil, err
		}
		w.Topic = string(f)
		if f, b, ok = readField(b); !ok {
			return nil, missing("will message")
		}
		w.Payload = clone(f)
		c.Will = w
	}
	if hasUser {
		if f, b, ok = readField(b); !ok {
			return nil, missing("user name")
		}
		if err := utf8Field(TypeConnect, "user name", "MQTT-3.1.3-11", f); err != nil {
			return nil, err
		}
		c.Username = string(f)
	}
	if hasPass {
		if f, b, ok = readField(b); !ok {
			return nil, missing("password")
		}
		c.Password = clone(f)
	}
	if len(b) != 0 {
		return nil, newError("MQTT-3.1.3-1", "connect: payload: %d bytes after the last field the flags announce", len(b))
	}
	return c, nil
}

// missing reports a CONNECT payload field that its flag announces but the
// body does not hold ([MQTT-3.1.3-1]).
func missing(field string) *Error {
	e := truncated(TypeConnect, field)
	e.Statement = "MQTT-3.1.3-1"
	return e
}

// clone copies b; an empty b gives nil so that decoded packets compare
// equal however the input spelled an empty field.
func clone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

// clip shortens b for an error message so that a hostile peer cannot make
// the log line arbitrarily long.
func clip(b []byte) []byte {
	const limit = 32
	if len(b) > limit {
		return b[:limit]
	}
	return b
}
