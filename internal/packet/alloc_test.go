package packet

import "testing"

// TestHotPathAllocations proves that framing and decoding a PUBLISH and
// encoding packets into a reused buffer do not allocate.
func TestHotPathAllocations(t *testing.T) {
	in := (&Publish{QoS: QoS1, Topic: []byte("sensors/1/temp"), PacketID: 7, Payload: []byte("21.5")}).Append(nil)
	in = append(in, (&Publish{Topic: []byte("a"), Payload: []byte("qos0")}).Append(nil)...)
	out := make([]byte, 0, 256)
	acks := []Packet{&Puback{PacketID: 1}, &Pubrec{PacketID: 1}, &Pubrel{PacketID: 1}, &Pubcomp{PacketID: 1},
		&Connack{}, &Suback{PacketID: 1, ReturnCodes: []byte{1}}, &Unsuback{PacketID: 1}, &Pingresp{}}
	tests := []struct {
		name string
		fn   func()
	}{
		{name: "frame and decode publish", fn: func() {
			for b := in; len(b) > 0; {
				h, body, n, err := Frame(b, 1024)
				if err != nil {
					t.Fatal(err)
				}
				var p Publish
				if err := DecodePublish(h, body, &p); err != nil {
					t.Fatal(err)
				}
				b = b[n:]
			}
		}},
		{name: "append publish header and payload", fn: func() {
			p := Publish{QoS: QoS2, Topic: []byte("sensors/1/temp"), PacketID: 9}
			payload := []byte("21.5")
			out = AppendPublishHeader(out[:0], &p, len(payload))
			out = append(out, payload...)
		}},
		{name: "append publish", fn: func() {
			p := Publish{Topic: []byte("t"), Payload: []byte("x")}
			out = p.Append(out[:0])
		}},
		{name: "append acknowledgements", fn: func() {
			out = out[:0]
			for _, a := range acks {
				out = a.Append(out)
			}
		}},
		{name: "incomplete frame", fn: func() {
			if _, _, _, err := Frame(in[:3], 1024); err != ErrIncomplete {
				t.Fatal(err)
			}
		}},
		{name: "validate utf-8", fn: func() {
			if err := ValidateUTF8(in[4:18]); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(100, tt.fn); n != 0 {
				t.Errorf("got %v allocations per run, want 0", n)
			}
		})
	}
}
