package packet

// Connack is the server's answer to CONNECT (section 3.2).
type Connack struct {
	// SessionPresent reports that the server resumed a stored session
	// ([MQTT-3.2.2-2]); it is false with any non-zero return code
	// ([MQTT-3.2.2-4]).
	SessionPresent bool
	// ReturnCode is Accepted or the reason for refusing.
	ReturnCode ConnackCode
}

// Puback acknowledges a QoS 1 PUBLISH (section 3.4).
type Puback struct {
	// PacketID is the identifier of the PUBLISH ([MQTT-2.3.1-6]).
	PacketID uint16
}

// Pubrec is the first acknowledgement of a QoS 2 PUBLISH (section 3.5).
type Pubrec struct {
	// PacketID is the identifier of the PUBLISH ([MQTT-2.3.1-6]).
	PacketID uint16
}

// Pubrel releases a QoS 2 PUBLISH after its PUBREC (section 3.6).
type Pubrel struct {
	// PacketID is the identifier of the PUBLISH ([MQTT-2.3.1-6]).
	PacketID uint16
}

// Pubcomp completes a QoS 2 exchange (section 3.7).
type Pubcomp struct {
	// PacketID is the identifier of the PUBLISH.
	PacketID uint16
}

// Unsuback acknowledges an UNSUBSCRIBE (section 3.11).
type Unsuback struct {
	// PacketID is the identifier of the UNSUBSCRIBE ([MQTT-3.10.4-4]).
	PacketID uint16
}

// Pingreq is the client's keep-alive probe (section 3.12).
type Pingreq struct{}

// Pingresp answers a PINGREQ (section 3.13).
type Pingresp struct{}

// Disconnect is the client's clean goodbye (section 3.14).
type Disconnect struct{}

// Type returns TypeConnack.
func (c *Connack) Type() Type { return TypeConnack }

// Append appends the CONNACK encoding to dst.
func (c *Connack) Append(dst []byte) []byte {
	var flags byte
	if c.SessionPresent {
		flags = 1
	}
	return append(dst, byte(TypeConnack)<<4, 2, flags, byte(c.ReturnCode))
}

// Type returns TypePuback.
func (p *Puback) Type() Type { return TypePuback }

// Append appends the PUBACK encoding to dst.
func (p *Puback) Append(dst []byte) []byte { return appendIDPacket(dst, TypePuback, p.PacketID) }

// Type returns TypePubrec.
func (p *Pubrec) Type() Type { return TypePubrec }

// Append appends the PUBREC encoding to dst.
func (p *Pubrec) Append(dst []byte) []byte { return appendIDPacket(dst, TypePubrec, p.PacketID) }

// Type returns TypePubrel.
func (p *Pubrel) Type() Type { return TypePubrel }

// Append appends the PUBREL encoding to dst, with flags 0010
// ([MQTT-3.6.1-1]).
func (p *Pubrel) Append(dst []byte) []byte { return appendIDPacket(dst, TypePubrel, p.PacketID) }

// Type returns TypePubcomp.
func (p *Pubcomp) Type() Type { return TypePubcomp }

// Append appends the PUBCOMP encoding to dst.
func (p *Pubcomp) Append(dst []byte) []byte { return appendIDPacket(dst, TypePubcomp, p.PacketID) }

// Type returns TypeUnsuback.
func (u *Unsuback) Type() Type { return TypeUnsuback }

// Append appends the UNSUBACK encoding to dst.
func (u *Unsuback) Append(dst []byte) []byte { return appendIDPacket(dst, TypeUnsuback, u.PacketID) }

// Type returns TypePingreq.
func (*Pingreq) Type() Type { return TypePingreq }

// Append appends the PINGREQ encoding to dst.
func (*Pingreq) Append(dst []byte) []byte { return append(dst, byte(TypePingreq)<<4, 0) }

// Type returns TypePingresp.
func (*Pingresp) Type() Type { return TypePingresp }

// Append appends the PINGRESP encoding to dst.
func (*Pingresp) Append(dst []byte) []byte { return append(dst, byte(TypePingresp)<<4, 0) }

// Type returns TypeDisconnect.
func (*Disconnect) Type() Type { return TypeDisconnect }

// Append appends the DISCONNECT encoding to dst.
func (*Disconnect) Append(dst []byte) []byte { return append(dst, byte(TypeDisconnect)<<4, 0) }

// appendIDPacket encodes the packets whose whole body is a packet id.
func appendIDPacket(dst []byte, t Type, id uint16) []byte {
	return append(dst, byte(t)<<4|requiredFlags[t], 2, byte(id>>8), byte(id))
}

// decodeConnack decodes a CONNACK body (section 3.2.2).
func decodeConnack(b []byte) (*Connack, error) {
	if len(b) != 2 {
		return nil, newError("", "connack: remaining length: got %d, want 2", len(b))
	}
	if b[0]&^1 != 0 {
		// Section 3.2.2.1: bits 7-1 of the acknowledge flags are reserved.
		return nil, newError("", "connack: acknowledge flags: reserved bits set in %08b", b[0])
	}
	c := &Connack{SessionPresent: b[0] == 1, ReturnCode: ConnackCode(b[1])}
	if c.ReturnCode > RefusedNotAuthorized {
		return nil, newError("", "connack: return code: got %d, want 0 to 5", b[1])
	}
	if c.SessionPresent && c.ReturnCode != Accepted {
		return nil, newError("MQTT-3.2.2-4", "connack: session present with return code %d", b[1])
	}
	return c, nil
}

// decodeID decodes the body of a packet that carries only a packet id.
// Acknowledgements echo an id the peer allocated, so 0 is left for the
// session to treat as an id that matches nothing.
func decodeID(t Type, b []byte) (uint16, error) {
	if len(b) != 2 {
		return 0, newError("", "%s: remaining length: got %d, want 2", t.field(), len(b))
	}
	return uint16(b[0])<<8 | uint16(b[1]), nil
}

// decodeEmpty checks that a packet with no variable header has no body.
func decodeEmpty(t Type, b []byte) error {
	if len(b) != 0 {
		return newError("", "%s: remaining length: got %d, want 0", t.field(), len(b))
	}
	return nil
}
