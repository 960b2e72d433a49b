package sqlite

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/store"
)

func TestWillRoundTrip(t *testing.T) {
	for _, m := range []store.Message{
		{},
		{Topic: "will/c1", Payload: []byte("gone"), QoS: packet.QoS1, Retain: true},
		{ID: 1<<64 - 1, Topic: strings.Repeat("t", 300), Payload: bytes.Repeat([]byte{0}, 70000), QoS: 255},
		{Topic: "τ/\x00/\xff", Payload: nil, QoS: packet.QoS2},
	} {
		b := appendWill([]byte("prefix"), &m)
		got, err := decodeWill(b[len("prefix"):])
		if err != nil {
			t.Fatalf("decode %+v: %v", m, err)
		}
		if got.ID != m.ID || got.Topic != m.Topic || !bytes.Equal(got.Payload, m.Payload) || got.QoS != m.QoS || got.Retain != m.Retain || got.Payload == nil {
			t.Fatalf("round trip of %+v gave %+v", m, got)
		}
	}
}

// The encoding is fixed: stored wills must decode in later builds.
func TestWillEncodingGolden(t *testing.T) {
	m := &store.Message{ID: 300, Topic: "w/t", Payload: []byte("bye"), QoS: packet.QoS1, Retain: true}
	if got, want := hex.EncodeToString(appendWill(nil, m)), "010101"+"ac02"+"03"+"772f74"+"627965"; got != want {
		t.Fatalf("encoding = %s; want %s", got, want)
	}
}

func TestDecodeWillRejects(t *testing.T) {
	for _, c := range []struct {
		name, hex string
	}{
		{"empty", ""},
		{"version only", "01"},
		{"no flags", "0101"},
		{"no id", "010000"},
		{"unknown version", "00000000" + "00"},
		{"version 2", "02000000" + "00"},
		{"reserved flag", "010002" + "00" + "00"},
		{"id truncated", "010000" + "80"},
		{"id overflows", "010000" + "ffffffffffffffffffff01" + "00"},
		{"id not shortest", "010000" + "8000" + "00"},
		{"no topic length", "010000" + "00"},
		{"topic length not shortest", "010000" + "00" + "8100" + "77"},
		{"topic longer than the record", "010000" + "00" + "05" + "7777"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := hex.DecodeString(c.hex)
			if err != nil {
				t.Fatal(err)
			}
			if m, err := decodeWill(b); err == nil {
				t.Fatalf("decoded %+v; want an error", m)
			}
		})
	}
}

// FuzzDecodeWill checks that decoding never panics, that whatever decodes re-encodes to the same
// bytes (one encoding per will), and that the result shares no memory with the input.
func FuzzDecodeWill(f *testing.F) {
	f.Add(appendWill(nil, &store.Message{Topic: "w", Payload: []byte("p"), QoS: 1, Retain: true}))
	f.Add(appendWill(nil, &store.Message{ID: 1 << 40, Topic: "a/b/c"}))
	f.Add([]byte{1, 0, 0, 0x80, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeWill(b)
		if err != nil {
			return
		}
		if re := appendWill(nil, m); !bytes.Equal(re, b) {
			t.Fatalf("%x decodes to %+v, which encodes to %x", b, m, re)
		}
		if len(m.Payload) > 0 {
			saved := bytes.Clone(m.Payload)
			clear(b)
			if !bytes.Equal(m.Payload, saved) {
				t.Fatal("the decoded payload aliases the input")
			}
		}
	})
}
