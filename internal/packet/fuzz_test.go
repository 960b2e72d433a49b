package packet

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// fuzzMax is the maximum packet size under fuzzing; small enough that the
// fuzzer reaches the too-large path.
const fuzzMax = 1 << 12

// streamResult is what decoding a byte stream packet by packet gives: the
// packets, then the error that stopped it (nil when the input ended
// exactly at a packet boundary).
type streamResult struct {
	packets []Packet
	err     error
}

// decodeStream frames and decodes data in one piece, checking on the way
// that no packet exceeds the maximum and that every packet round-trips.
func decodeStream(t *testing.T, data []byte) streamResult {
	t.Helper()
	var res streamResult
	for len(data) > 0 {
		h, body, n, err := Frame(data, fuzzMax)
		if err != nil {
			res.err = err
			return res
		}
		if n > fuzzMax || n > len(data) || len(body) != h.RemainingLength {
			t.Fatalf("accepted a packet of %d bytes (body %d, header says %d), max %d, input %d",
				n, len(body), h.RemainingLength, fuzzMax, len(data))
		}
		p, err := Decode(h, body, Version311)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("decode error %v is %T, want *Error", err, err)
			}
			res.err = err
			return res
		}
		checkRoundTrip(t, p, n)
		res.packets = append(res.packets, p)
		data = data[n:]
	}
	return res
}

// checkRoundTrip encodes p, decodes the encoding and checks it is the same
// packet, no longer than the n bytes it came from, and encodes the same way
// again.
func checkRoundTrip(t *testing.T, p Packet, n int) {
	t.Helper()
	enc := p.Append(nil)
	if len(enc) > n {
		t.Fatalf("%v: re-encoding is %d bytes, the input was %d", p.Type(), len(enc), n)
	}
	p2, n2, err := decodeAll(enc, fuzzMax, Version311)
	if err != nil {
		t.Fatalf("%v: decoding the re-encoding % x: %v", p.Type(), enc, err)
	}
	if n2 != len(enc) {
		t.Fatalf("%v: re-encoding framed as %d bytes, want %d", p.Type(), n2, len(enc))
	}
	if !equalPacket(p, p2) {
		t.Fatalf("round trip: got %#v, want %#v", p2, p)
	}
	if enc2 := p2.Append(nil); !bytes.Equal(enc, enc2) {
		t.Fatalf("%v: second encoding % x differs from first % x", p.Type(), enc2, enc)
	}
}

// checkPrefixes checks Frame on every prefix of data against Frame on all
// of it: a prefix shorter than the first packet is incomplete (or fails
// with the same header error), a longer one frames the same packet.
func checkPrefixes(t *testing.T, data []byte) {
	t.Helper()
	h, _, n, err := Frame(data, fuzzMax)
	for i := range len(data) {
		hi, _, ni, erri := Frame(data[:i], fuzzMax)
		switch {
		case err == nil && i < n, errors.Is(err, ErrIncomplete):
			if erri != ErrIncomplete {
				t.Fatalf("prefix %d of %d: got %v, want ErrIncomplete", i, len(data), erri)
			}
		case err == nil:
			if erri != nil || hi != h || ni != n {
				t.Fatalf("prefix %d: got %+v n=%d err=%v, want %+v n=%d", i, hi, ni, erri, h, n)
			}
		default:
			if erri != ErrIncomplete && (erri == nil || erri.Error() != err.Error()) {
				t.Fatalf("prefix %d: got %v, want ErrIncomplete or %v", i, erri, err)
			}
		}
	}
}

// checkReader reads data through a Reader fed by r and compares with the
// one-piece result.
func checkReader(t *testing.T, name string, r io.Reader, want streamResult) {
	t.Helper()
	pr := NewReader(r, fuzzMax)
	for i, w := range want.packets {
		p, err := pr.ReadPacket(Version311)
		if err != nil {
			t.Fatalf("%s: packet %d: got error %v, want %#v", name, i, err, w)
		}
		if !equalPacket(p, w) {
			t.Fatalf("%s: packet %d: got %#v, want %#v", name, i, p, w)
		}
	}
	_, err := pr.ReadPacket(Version311)
	switch {
	case want.err == nil:
		if err != io.EOF {
			t.Fatalf("%s: at the end: got %v, want io.EOF", name, err)
		}
	case want.err == ErrIncomplete:
		if err != io.ErrUnexpectedEOF {
			t.Fatalf("%s: at the end: got %v, want io.ErrUnexpectedEOF", name, err)
		}
	default:
		if err == nil || err.Error() != want.err.Error() {
			t.Fatalf("%s: at the end: got %v, want %v", name, err, want.err)
		}
	}
}

// twoChunks returns its two parts on successive reads, then io.EOF.
type twoChunks struct{ parts [2][]byte }

func (c *twoChunks) Read(p []byte) (int, error) {
	for i := range c.parts {
		if len(c.parts[i]) > 0 {
			n := copy(p, c.parts[i])
			c.parts[i] = c.parts[i][n:]
			return n, nil
		}
	}
	return 0, io.EOF
}

// FuzzDecode feeds arbitrary bytes to the framing and decoding paths. It
// checks that nothing panics, that no packet over the maximum size is
// accepted, that decode, encode, decode gives the same packet, and that the
// partial-input paths (every prefix through Frame; a fuzz-chosen split and
// single bytes through Reader) agree with decoding the input in one piece.
func FuzzDecode(f *testing.F) {
	for _, c := range codecCases {
		f.Add(c.raw, uint16(len(c.raw)/2))
	}
	stream, _ := validStream()
	f.Add(stream, uint16(len(stream)/3))
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		want := decodeStream(t, data)
		checkPrefixes(t, data)
		at := int(split) % (len(data) + 1)
		checkReader(t, "split", &twoChunks{parts: [2][]byte{data[:at], data[at:]}}, want)
		if len(data) <= 128 {
			checkReader(t, "one byte", iotest.OneByteReader(bytes.NewReader(data)), want)
		}
	})
}
