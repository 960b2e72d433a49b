package packet

import (
	"errors"
	"fmt"
	"testing"
)

func TestParseFixedHeader(t *testing.T) {
	tests := []struct {
		name   string
		in     []byte
		max    int
		want   FixedHeader
		wantN  int
		errIs  error // ErrIncomplete or ErrTooLarge
		errMsg bool  // an *Error that is neither
		stmt   string
	}{
		{name: "empty", in: nil, errIs: ErrIncomplete},
		{name: "type byte only", in: []byte{0x30}, errIs: ErrIncomplete},
		{name: "varint continues", in: []byte{0x30, 0x80}, errIs: ErrIncomplete},
		{name: "varint continues three bytes", in: []byte{0x30, 0xFF, 0xFF, 0xFF}, errIs: ErrIncomplete},
		{name: "zero length", in: []byte{0xC0, 0x00}, want: FixedHeader{Type: TypePingreq}, wantN: 2},
		{name: "one byte 127", in: []byte{0x30, 0x7F}, want: FixedHeader{Type: TypePublish, RemainingLength: 127}, wantN: 2},
		{name: "two bytes 128", in: []byte{0x30, 0x80, 0x01}, want: FixedHeader{Type: TypePublish, RemainingLength: 128}, wantN: 3},
		{name: "two bytes 16383", in: []byte{0x30, 0xFF, 0x7F}, want: FixedHeader{Type: TypePublish, RemainingLength: 16383}, wantN: 3},
		{name: "three bytes 16384", in: []byte{0x30, 0x80, 0x80, 0x01}, want: FixedHeader{Type: TypePublish, RemainingLength: 16384}, wantN: 4},
		{name: "four bytes maximum", in: []byte{0x3D, 0xFF, 0xFF, 0xFF, 0x7F}, want: FixedHeader{Type: TypePublish, Flags: 0xD, RemainingLength: MaxRemainingLength}, wantN: 5},
		{name: "non-minimal varint is accepted", in: []byte{0xC0, 0x80, 0x00}, want: FixedHeader{Type: TypePingreq}, wantN: 3},
		{name: "five bytes", in: []byte{0x30, 0x80, 0x80, 0x80, 0x80, 0x00}, errMsg: true},
		{name: "five bytes seen before the sixth arrives", in: []byte{0x30, 0x80, 0x80, 0x80, 0x80}, errMsg: true},
		{name: "reserved type checked from the first byte", in: []byte{0xF0}, errMsg: true},
		{name: "MQTT-3.8.1-1 reserved flags checked from the first byte", in: []byte{0x80}, errMsg: true, stmt: "MQTT-3.8.1-1"},
		{name: "right flags wait for the length", in: []byte{0x82}, errIs: ErrIncomplete},
		{name: "too large from two header bytes", in: []byte{0x30, 0x7F}, max: 100, errIs: ErrTooLarge},
		{name: "too large at the protocol maximum", in: []byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F}, max: MaxRemainingLength, errIs: ErrTooLarge},
		{name: "negative maximum means the protocol maximum", in: []byte{0x30, 0x7F}, max: -1, want: FixedHeader{Type: TypePublish, RemainingLength: 127}, wantN: 2},
		{name: "exactly the maximum", in: []byte{0x30, 0x7E}, max: 128, want: FixedHeader{Type: TypePublish, RemainingLength: 126}, wantN: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, n, err := ParseFixedHeader(tt.in, tt.max)
			switch {
			case tt.errIs != nil:
				if !errors.Is(err, tt.errIs) {
					t.Fatalf("got error %v, want %v", err, tt.errIs)
				}
			case tt.errMsg:
				wantError(t, err, tt.stmt, 0)
			default:
				if err != nil {
					t.Fatalf("got error %v", err)
				}
				if h != tt.want || n != tt.wantN {
					t.Errorf("got %+v n=%d, want %+v n=%d", h, n, tt.want, tt.wantN)
				}
			}
		})
	}
}

// TestReservedFlags tries all 16 flag values of every type: only the
// values of Table 2.2 pass, and PUBLISH leaves its flags to DecodePublish.
func TestReservedFlags(t *testing.T) {
	statements := map[Type]string{
		TypePubrel:      "MQTT-3.6.1-1",
		TypeSubscribe:   "MQTT-3.8.1-1",
		TypeUnsubscribe: "MQTT-3.10.1-1",
		TypeDisconnect:  "MQTT-3.14.1-1",
	}
	for typ := TypeConnect; typ <= TypeDisconnect; typ++ {
		stmt := statements[typ]
		if stmt == "" {
			stmt = "MQTT-2.2.2-1"
		}
		want := byte(0)
		if typ == TypePubrel || typ == TypeSubscribe || typ == TypeUnsubscribe {
			want = 2
		}
		t.Run(fmt.Sprintf("%s MQTT-2.2.2-2 %v", stmt, typ), func(t *testing.T) {
			for flags := range byte(16) {
				_, _, err := ParseFixedHeader([]byte{byte(typ)<<4 | flags, 0}, 0)
				if typ == TypePublish || flags == want {
					if err != nil {
						t.Errorf("flags %04b: got error %v", flags, err)
					}
					continue
				}
				wantError(t, err, stmt, 0)
			}
		})
	}
}

// TestTooLargeBeforeBody checks that an oversized packet is refused from
// its header bytes alone, whatever follows, and that the refusal is the
// same through Frame.
func TestTooLargeBeforeBody(t *testing.T) {
	tests := []struct {
		name string
		hdr  []byte
		max  int
	}{
		{name: "publish of 256 MB with limit 1 KiB", hdr: []byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F}, max: 1024},
		{name: "connect of 200 bytes with limit 100", hdr: []byte{0x10, 0xC8, 0x01}, max: 100},
		{name: "subscribe one byte over", hdr: []byte{0x82, 0x09}, max: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := ParseFixedHeader(tt.hdr, tt.max); !errors.Is(err, ErrTooLarge) {
				t.Errorf("ParseFixedHeader: got %v, want ErrTooLarge", err)
			}
			_, _, _, err := Frame(tt.hdr, tt.max)
			if !errors.Is(err, ErrTooLarge) {
				t.Errorf("Frame: got %v, want ErrTooLarge", err)
			}
			var pe *Error
			if !errors.As(err, &pe) || pe.Code != 0 {
				t.Errorf("got %#v, want an *Error with no CONNACK code", err)
			}
		})
	}
}

func TestAppendVarint(t *testing.T) {
	for _, v := range []int{0, 1, 127, 128, 16383, 16384, 2097151, 2097152, MaxRemainingLength} {
		t.Run(fmt.Sprint(v), func(t *testing.T) {
			b := appendVarint([]byte{0x30}, v)
			if len(b)-1 != varintLen(v) {
				t.Errorf("got %d bytes, varintLen says %d", len(b)-1, varintLen(v))
			}
			h, n, err := ParseFixedHeader(b, 0)
			if err != nil || h.RemainingLength != v || n != len(b) {
				t.Errorf("got %+v n=%d err=%v, want length %d", h, n, err, v)
			}
		})
	}
}
