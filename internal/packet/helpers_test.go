package packet

import (
	"errors"
	"reflect"
	"testing"
)

// str encodes s as a length-prefixed MQTT string field.
func str(s string) []byte {
	return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...)
}

// raw builds a packet from its first byte and body parts. It encodes the
// Remaining Length itself (up to two bytes) rather than with the code under
// test, so the table checks the encoder against an independent spelling.
func raw(b0 byte, parts ...[]byte) []byte {
	var body []byte
	for _, p := range parts {
		body = append(body, p...)
	}
	n := len(body)
	out := []byte{b0}
	switch {
	case n < 128:
		out = append(out, byte(n))
	case n < 16384:
		out = append(out, byte(n%128)|0x80, byte(n/128))
	default:
		panic("raw: body too long for the test helper")
	}
	return append(out, body...)
}

// decodeAll frames b and decodes the packet it starts with.
func decodeAll(b []byte, maxPacketSize int, version byte) (Packet, int, error) {
	h, body, n, err := Frame(b, maxPacketSize)
	if err != nil {
		return nil, 0, err
	}
	p, err := Decode(h, body, version)
	if err != nil {
		return nil, 0, err
	}
	return p, n, nil
}

// normalize returns a copy of p with empty slices set to nil, so packets
// compare equal whether a field is nil or aliases an empty part of a body.
func normalize(p Packet) Packet {
	nz := func(b []byte) []byte {
		if len(b) == 0 {
			return nil
		}
		return b
	}
	switch v := p.(type) {
	case *Publish:
		c := *v
		c.Topic, c.Payload = nz(c.Topic), nz(c.Payload)
		return &c
	case *Connect:
		c := *v
		c.Password = nz(c.Password)
		if c.Will != nil {
			w := *c.Will
			w.Payload = nz(w.Payload)
			c.Will = &w
		}
		return &c
	case *Suback:
		c := *v
		c.ReturnCodes = nz(c.ReturnCodes)
		return &c
	}
	return p
}

// equalPacket reports whether a and b are the same packet.
func equalPacket(a, b Packet) bool {
	return reflect.DeepEqual(normalize(a), normalize(b))
}

// wantError checks that err is an *Error with the given statement and code.
func wantError(t *testing.T, err error, stmt string, code ConnackCode) {
	t.Helper()
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("got error %v (%T), want *Error", err, err)
	}
	if pe.Statement != stmt {
		t.Errorf("got statement %q, want %q (error: %v)", pe.Statement, stmt, err)
	}
	if pe.Code != code {
		t.Errorf("got code %d, want %d (error: %v)", pe.Code, code, err)
	}
	if pe.Msg == "" {
		t.Errorf("got empty message")
	}
}
