package packet

import (
	"slices"
	"strconv"
)

// Subscription is one topic filter of a SUBSCRIBE with its requested QoS.
type Subscription struct {
	// Filter is the topic filter; wildcards are validated by package topic.
	Filter string
	// QoS is the maximum QoS the client asks for.
	QoS QoS
}

// Subscribe asks for one or more subscriptions (section 3.8).
type Subscribe struct {
	// PacketID is the non-zero packet identifier ([MQTT-2.3.1-1]).
	PacketID uint16
	// Subscriptions holds at least one filter ([MQTT-3.8.3-3]).
	Subscriptions []Subscription
}

// Suback answers a SUBSCRIBE (section 3.9).
type Suback struct {
	// PacketID is the identifier of the SUBSCRIBE ([MQTT-3.8.4-2]).
	PacketID uint16
	// ReturnCodes holds, per filter and in order, the granted QoS (0, 1 or
	// 2) or SubackFailure ([MQTT-3.9.3-1], [MQTT-3.9.3-2]).
	ReturnCodes []byte
}

// Unsubscribe removes one or more subscriptions (section 3.10).
type Unsubscribe struct {
	// PacketID is the non-zero packet identifier ([MQTT-2.3.1-1]).
	PacketID uint16
	// Filters holds at least one topic filter ([MQTT-3.10.3-2]).
	Filters []string
}

// Type returns TypeSubscribe.
func (s *Subscribe) Type() Type { return TypeSubscribe }

// Append appends the SUBSCRIBE encoding to dst, with flags 0010
// ([MQTT-3.8.1-1]).
func (s *Subscribe) Append(dst []byte) []byte {
	n := 2
	for _, sub := range s.Subscriptions {
		n += 2 + len(sub.Filter) + 1
	}
	dst = slices.Grow(dst, 1+varintLen(n)+n)
	dst = appendHeader(dst, TypeSubscribe, requiredFlags[TypeSubscribe], n)
	dst = appendUint16(dst, s.PacketID)
	for _, sub := range s.Subscriptions {
		dst = appendString(dst, sub.Filter)
		dst = append(dst, byte(sub.QoS))
	}
	return dst
}

// Type returns TypeSuback.
func (s *Suback) Type() Type { return TypeSuback }

// Append appends the SUBACK encoding to dst.
func (s *Suback) Append(dst []byte) []byte {
	n := 2 + len(s.ReturnCodes)
	dst = slices.Grow(dst, 1+varintLen(n)+n)
	dst = appendHeader(dst, TypeSuback, 0, n)
	dst = appendUint16(dst, s.PacketID)
	return append(dst, s.ReturnCodes...)
}

// Type returns TypeUnsubscribe.
func (u *Unsubscribe) Type() Type { return TypeUnsubscribe }

// Append appends the UNSUBSCRIBE encoding to dst, with flags 0010
// ([MQTT-3.10.1-1]).
func (u *Unsubscribe) Append(dst []byte) []byte {
	n := 2
	for _, f := range u.Filters {
		n += 2 + len(f)
	}
	dst = slices.Grow(dst, 1+varintLen(n)+n)
	dst = appendHeader(dst, TypeUnsubscribe, requiredFlags[TypeUnsubscribe], n)
	dst = appendUint16(dst, u.PacketID)
	for _, f := range u.Filters {
		dst = appendString(dst, f)
	}
	return dst
}

// readPacketID reads the packet identifier that starts SUBSCRIBE and
// UNSUBSCRIBE; it must not be 0 ([MQTT-2.3.1-1]).
func readPacketID(t Type, b []byte) (uint16, []byte, error) {
	id, rest, ok := readUint16(b)
	if !ok {
		return 0, b, truncated(t, "packet identifier")
	}
	if id == 0 {
		return 0, b, newError("MQTT-2.3.1-1", "%s: packet identifier: 0", t.field())
	}
	return id, rest, nil
}

// readFilter reads topic filter number i (from 1) of a SUBSCRIBE or
// UNSUBSCRIBE: a non-empty ([MQTT-4.7.3-1]) UTF-8 string whose statement
// is utf8Stmt.
func readFilter(t Type, b []byte, i int, utf8Stmt string) (string, []byte, error) {
	field := "topic filter " + strconv.Itoa(i)
	f, rest, ok := readField(b)
	if !ok {
		return "", b, truncated(t, field)
	}
	if len(f) == 0 {
		return "", b, newError("MQTT-4.7.3-1", "%s: %s: empty", t.field(), field)
	}
	if err := utf8Field(t, field, utf8Stmt, f); err != nil {
		return "", b, err
	}
	return string(f), rest, nil
}

// decodeSubscribe decodes a SUBSCRIBE body (section 3.8.2, 3.8.3).
func decodeSubscribe(b []byte) (*Subscribe, error) {
	id, b, err := readPacketID(TypeSubscribe, b)
	if err != nil {
		return nil, err
	}
	if len(b) == 0 {
		return nil, newError("MQTT-3.8.3-3", "subscribe: payload: no topic filters")
	}
	s := &Subscribe{PacketID: id}
	for i := 1; len(b) > 0; i++ {
		var f string
		if f, b, err = readFilter(TypeSubscribe, b, i, "MQTT-3.8.3-1"); err != nil {
			return nil, err
		}
		if len(b) == 0 {
			return nil, truncated(TypeSubscribe, "requested qos "+strconv.Itoa(i))
		}
		// [MQTT-3.8.3-4] bits 7-2 are reserved and QoS 3 does not exist.
		if q := b[0]; q > byte(QoS2) {
			return nil, newError("MQTT-3.8.3-4", "subscribe: requested qos %d: got %#02x, want 0, 1 or 2", i, q)
		}
		s.Subscriptions = append(s.Subscriptions, Subscription{Filter: f, QoS: QoS(b[0])})
		b = b[1:]
	}
	return s, nil
}

// decodeSuback decodes a SUBACK body (section 3.9).
func decodeSuback(b []byte) (*Suback, error) {
	id, b, ok := readUint16(b)
	if !ok {
		return nil, truncated(TypeSuback, "packet identifier")
	}
	if len(b) == 0 {
		// A SUBSCRIBE has at least one filter and gets one code per filter.
		return nil, newError("MQTT-3.8.4-5", "suback: payload: no return codes")
	}
	for i, c := range b {
		if c > byte(QoS2) && c != SubackFailure {
			return nil, newError("MQTT-3.9.3-2", "suback: return code %d: got %#02x, want 0, 1, 2 or 0x80", i+1, c)
		}
	}
	return &Suback{PacketID: id, ReturnCodes: clone(b)}, nil
}

// decodeUnsubscribe decodes an UNSUBSCRIBE body (section 3.10).
func decodeUnsubscribe(b []byte) (*Unsubscribe, error) {
	id, b, err := readPacketID(TypeUnsubscribe, b)
	if err != nil {
		return nil, err
	}
	if len(b) == 0 {
		return nil, newError("MQTT-3.10.3-2", "unsubscribe: payload: no topic filters")
	}
	u := &Unsubscribe{PacketID: id}
	for i := 1; len(b) > 0; i++ {
		var f string
		if f, b, err = readFilter(TypeUnsubscribe, b, i, "MQTT-3.10.3-1"); err != nil {
			return nil, err
		}
		u.Filters = append(u.Filters, f)
	}
	return u, nil
}
