package packet

import "slices"

// PUBLISH fixed-header flag bits (section 3.3.1).
const (
	publishRetain   = 0x01
	publishQoSShift = 1
	publishDup      = 0x08
)

// Publish carries an application message (section 3.3).
type Publish struct {
	// Dup marks a re-delivery ([MQTT-3.3.1-1]); always false at QoS 0.
	Dup bool
	// QoS is the delivery level.
	QoS QoS
	// Retain asks the server to keep the message for future subscribers.
	Retain bool
	// Topic is the topic name. After decoding it aliases the packet body.
	Topic []byte
	// PacketID identifies the message; only for QoS 1 and 2 (it is not on
	// the wire at QoS 0, [MQTT-2.3.1-5]).
	PacketID uint16
	// Payload is the application message, possibly empty. After decoding
	// it aliases the packet body.
	Payload []byte
}

// Type returns TypePublish.
func (p *Publish) Type() Type { return TypePublish }

// Append appends the PUBLISH encoding to dst. It allocates only when dst
// lacks the capacity.
func (p *Publish) Append(dst []byte) []byte {
	dst = AppendPublishHeader(dst, p, len(p.Payload))
	return append(dst, p.Payload...)
}

// AppendPublishHeader appends the fixed header, topic and packet id of a
// PUBLISH whose payload (payloadLen bytes) the caller appends next; p.Payload
// is ignored. It lets the broker encode the header once per QoS level for a
// fan-out. It grows dst to hold the payload too, so the caller's append of
// the payload does not allocate again.
func AppendPublishHeader(dst []byte, p *Publish, payloadLen int) []byte {
	n := 2 + len(p.Topic) + payloadLen
	if p.QoS > QoS0 {
		n += 2
	}
	flags := byte(p.QoS&3) << publishQoSShift
	if p.Dup {
		flags |= publishDup
	}
	if p.Retain {
		flags |= publishRetain
	}
	dst = slices.Grow(dst, 1+varintLen(n)+n)
	dst = appendHeader(dst, TypePublish, flags, n)
	dst = appendBinary(dst, p.Topic)
	if p.QoS > QoS0 {
		// [MQTT-2.3.1-5] QoS 0 carries no packet identifier.
		dst = appendUint16(dst, p.PacketID)
	}
	return dst
}

// DecodePublish decodes a PUBLISH body into p without allocating; p.Topic
// and p.Payload alias body. On error p is left unchanged. Wildcards in the
// topic are the business of package topic, not of the codec.
func DecodePublish(h FixedHeader, body []byte, p *Publish) error {
	if h.Type != TypePublish {
		return newError("", "publish: fixed header: got packet type %s", h.Type)
	}
	qos := QoS((h.Flags >> publishQoSShift) & 3)
	dup := h.Flags&publishDup != 0
	if qos == 3 {
		return newError("MQTT-3.3.1-4", "publish: fixed header: qos 3")
	}
	if dup && qos == QoS0 {
		return newError("MQTT-3.3.1-2", "publish: fixed header: dup set at qos 0")
	}
	topic, rest, ok := readField(body)
	if !ok {
		return truncated(TypePublish, "topic name")
	}
	if len(topic) == 0 {
		return newError("MQTT-4.7.3-1", "publish: topic name: empty")
	}
	if err := utf8Field(TypePublish, "topic name", "MQTT-3.3.2-1", topic); err != nil {
		return err
	}
	var id uint16
	if qos > QoS0 {
		if id, rest, ok = readUint16(rest); !ok {
			return truncated(TypePublish, "packet identifier")
		}
		if id == 0 {
			return newError("MQTT-2.3.1-1", "publish: packet identifier: 0 at qos %d", qos)
		}
	}
	*p = Publish{
		Dup:      dup,
		QoS:      qos,
		Retain:   h.Flags&publishRetain != 0,
		Topic:    topic,
		PacketID: id,
		Payload:  rest,
	}
	return nil
}
