package packet

// Decode decodes the body of one packet whose fixed header is h. version is
// the connection's protocol level (Version31 or Version311); CONNECT
// ignores it, since it is the packet that sets it. MQTT 5.0 bodies are not
// decoded yet, so any other version fails.
//
// Strings and slices are copied, except Publish.Topic and Publish.Payload,
// which alias body. The flag nibble of h is checked as ParseFixedHeader
// does, so a hand-built header cannot smuggle reserved bits in. The errors
// are *Error values; see the package documentation for what the server does
// with them.
func Decode(h FixedHeader, body []byte, version byte) (Packet, error) {
	if err := checkType(h.Type, h.Flags); err != nil {
		return nil, err
	}
	if h.Type != TypeConnect && version != Version311 && version != Version31 {
		return nil, newError("", "%s: protocol level %d: not supported", h.Type.field(), version)
	}
	switch h.Type {
	case TypeConnect:
		c, err := decodeConnect(body)
		if err != nil {
			return nil, err
		}
		return c, nil
	case TypeConnack:
		c, err := decodeConnack(body)
		if err != nil {
			return nil, err
		}
		return c, nil
	case TypePublish:
		p := new(Publish)
		if err := DecodePublish(h, body, p); err != nil {
			return nil, err
		}
		return p, nil
	case TypeSubscribe:
		s, err := decodeSubscribe(body)
		if err != nil {
			return nil, err
		}
		return s, nil
	case TypeSuback:
		s, err := decodeSuback(body)
		if err != nil {
			return nil, err
		}
		return s, nil
	case TypeUnsubscribe:
		u, err := decodeUnsubscribe(body)
		if err != nil {
			return nil, err
		}
		return u, nil
	case TypePingreq, TypePingresp, TypeDisconnect:
		if err := decodeEmpty(h.Type, body); err != nil {
			return nil, err
		}
		switch h.Type {
		case TypePingreq:
			return &Pingreq{}, nil
		case TypePingresp:
			return &Pingresp{}, nil
		}
		return &Disconnect{}, nil
	}
	// The remaining types carry only a packet identifier.
	id, err := decodeID(h.Type, body)
	if err != nil {
		return nil, err
	}
	switch h.Type {
	case TypePuback:
		return &Puback{PacketID: id}, nil
	case TypePubrec:
		return &Pubrec{PacketID: id}, nil
	case TypePubrel:
		return &Pubrel{PacketID: id}, nil
	case TypePubcomp:
		return &Pubcomp{PacketID: id}, nil
	}
	return &Unsuback{PacketID: id}, nil
}
