package packet

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// validStream concatenates the valid table cases that fit the default
// maximum and returns the bytes with the packets they hold.
func validStream() ([]byte, []Packet) {
	var b []byte
	var want []Packet
	for _, c := range codecCases {
		if c.valid() && c.max == 0 {
			b = append(b, c.raw...)
			want = append(want, c.pkt)
		}
	}
	return b, want
}

func TestReaderStream(t *testing.T) {
	stream, want := validStream()
	tests := []struct {
		name string
		r    io.Reader
	}{
		{name: "whole stream", r: bytes.NewReader(stream)},
		{name: "one byte at a time", r: iotest.OneByteReader(bytes.NewReader(stream))},
		{name: "half reads", r: iotest.HalfReader(bytes.NewReader(stream))},
		{name: "EOF with the last data", r: iotest.DataErrReader(bytes.NewReader(stream))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(tt.r, 0)
			for i, w := range want {
				p, err := r.ReadPacket(Version311)
				if err != nil {
					t.Fatalf("packet %d: got error %v", i, err)
				}
				if !equalPacket(p, w) {
					t.Fatalf("packet %d: got %#v, want %#v", i, p, w)
				}
			}
			if _, err := r.ReadPacket(Version311); err != io.EOF {
				t.Errorf("at the end: got %v, want io.EOF", err)
			}
		})
	}
}

// TestReaderDoesNotAlias checks that a Publish returned by ReadPacket
// survives the reuse of the Reader's buffer.
func TestReaderDoesNotAlias(t *testing.T) {
	first := &Publish{Topic: []byte("a"), Payload: []byte("one")}
	second := &Publish{Topic: []byte("b"), Payload: []byte("two")}
	stream := second.Append(first.Append(nil))
	r := NewReader(bytes.NewReader(stream), 0)
	p1, err := r.ReadPacket(Version311)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := r.ReadPacket(Version311)
	if err != nil {
		t.Fatal(err)
	}
	clear(r.buf)
	if !equalPacket(p1, first) || !equalPacket(p2, second) {
		t.Errorf("got %#v and %#v, want %#v and %#v", p1, p2, first, second)
	}
}

func TestReaderErrors(t *testing.T) {
	errRead := errors.New("read failed")
	puback := []byte{0x40, 0x02, 0x00, 0x01}
	tests := []struct {
		name    string
		r       io.Reader
		max     int
		packets int // good packets before the error
		want    error
		stmt    string // for *Error results
	}{
		{name: "empty stream", r: bytes.NewReader(nil), want: io.EOF},
		{name: "stream ends in the header", r: bytes.NewReader([]byte{0x30}), want: io.ErrUnexpectedEOF},
		{name: "stream ends in the body", r: bytes.NewReader(puback[:3]), want: io.ErrUnexpectedEOF},
		{name: "read error after a packet", r: io.MultiReader(bytes.NewReader(puback), iotest.ErrReader(errRead)), packets: 1, want: errRead},
		{name: "reader that never makes progress", r: emptyReader{}, want: io.ErrNoProgress},
		{name: "too large", r: bytes.NewReader([]byte{0x30, 0x7F}), max: 64, want: ErrTooLarge},
		{
			name:    "MQTT-3.3.1-4 decode error after a packet",
			r:       bytes.NewReader(append(append([]byte(nil), puback...), 0x36, 0x05, 0x00, 0x01, 't', 0x00, 0x01)),
			packets: 1, stmt: "MQTT-3.3.1-4",
		},
		{name: "MQTT-2.2.2-1 reserved flags", r: bytes.NewReader([]byte{0x41, 0x02, 0x00, 0x01}), stmt: "MQTT-2.2.2-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(tt.r, tt.max)
			for i := range tt.packets {
				if _, err := r.ReadPacket(Version311); err != nil {
					t.Fatalf("packet %d: got error %v", i, err)
				}
			}
			_, err := r.ReadPacket(Version311)
			if tt.stmt != "" {
				wantError(t, err, tt.stmt, 0)
				return
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// TestReaderContinuesAfterDecodeError checks that a malformed body is
// consumed, so the next packet is readable.
func TestReaderContinuesAfterDecodeError(t *testing.T) {
	stream := []byte{0xC0, 0x01, 0x00, 0xD0, 0x00}
	r := NewReader(bytes.NewReader(stream), 0)
	if _, err := r.ReadPacket(Version311); err == nil {
		t.Fatal("got no error for a PINGREQ with a body")
	}
	p, err := r.ReadPacket(Version311)
	if err != nil || p.Type() != TypePingresp {
		t.Fatalf("got %v, %v, want PINGRESP", p, err)
	}
}

// TestReaderTooLargeReadsOnlyTheHeader checks that an oversized packet is
// refused without reading or allocating for its body.
func TestReaderTooLargeReadsOnlyTheHeader(t *testing.T) {
	hdr := []byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F}
	src := &strictReader{t: t, data: hdr}
	r := NewReader(iotest.OneByteReader(src), 1024)
	_, err := r.ReadPacket(Version311)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	if len(r.buf) > readerMinBuf {
		t.Errorf("got a buffer of %d bytes, want at most %d", len(r.buf), readerMinBuf)
	}
}

// TestReaderLargePacket checks the buffer grows to hold a packet bigger
// than its initial size.
func TestReaderLargePacket(t *testing.T) {
	want := &Publish{QoS: QoS1, PacketID: 5, Topic: []byte("big"), Payload: bytes.Repeat([]byte("z"), 3*readerMinBuf)}
	stream := (&Pingreq{}).Append(want.Append(nil))
	r := NewReader(iotest.HalfReader(bytes.NewReader(stream)), 0)
	p, err := r.ReadPacket(Version311)
	if err != nil || !equalPacket(p, want) {
		t.Fatalf("got %v, %v", p, err)
	}
	if p, err := r.ReadPacket(Version311); err != nil || p.Type() != TypePingreq {
		t.Fatalf("got %v, %v, want PINGREQ", p, err)
	}
}

// emptyReader returns no bytes and no error, forever.
type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, nil }

// strictReader serves data and fails the test if read after it.
type strictReader struct {
	t    *testing.T
	data []byte
}

func (s *strictReader) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		s.t.Errorf("read past the header")
		return 0, io.EOF
	}
	n := copy(p, s.data)
	s.data = s.data[n:]
	return n, nil
}
