package packet

import (
	"errors"
	"io"
	"os"
)

const (
	// readerMinBuf is the smallest read buffer; most control packets fit.
	readerMinBuf = 512
	// readerMaxEmptyReads bounds how often a Read may return no bytes and
	// no error before ReadPacket gives up with io.ErrNoProgress.
	readerMaxEmptyReads = 100
)

// Reader reads whole packets from a blocking byte stream, for clients and
// tests. The broker's own connections use Frame over their read buffers
// instead. A Reader is not safe for concurrent use.
type Reader struct {
	r   io.Reader
	max int

	// buf[start:end] holds the bytes read but not yet returned as packets.
	buf        []byte
	start, end int
	// err is the error of the last Read; it is reported once the buffered
	// bytes no longer hold a whole packet.
	err error
}

// NewReader returns a Reader that reads packets from r and refuses any
// packet larger than maxPacketSize bytes (0 or less means the protocol
// maximum) before reading its body.
func NewReader(r io.Reader, maxPacketSize int) *Reader {
	return &Reader{r: r, max: maxPacketSize}
}

// ReadPacket reads and decodes the next packet; version is as for Decode.
// The returned packet does not alias the Reader's buffer: a Publish gets its
// own copy of topic and payload.
//
// At a clean end of stream it returns io.EOF; when the stream ends inside a
// packet, io.ErrUnexpectedEOF. Other errors are those of Frame, Decode and
// the underlying reader. After a decode error the bad packet has been
// consumed; after a read deadline passed (os.ErrDeadlineExceeded) the caller
// may read again; after any other error the Reader keeps failing.
func (r *Reader) ReadPacket(version byte) (Packet, error) {
	for {
		h, body, n, err := Frame(r.buf[r.start:r.end], r.max)
		if err == nil {
			r.start += n
			p, err := Decode(h, body, version)
			if err != nil {
				return nil, err
			}
			if pub, ok := p.(*Publish); ok {
				own(pub)
			}
			return p, nil
		}
		if !errors.Is(err, ErrIncomplete) {
			return nil, err
		}
		if r.err != nil {
			if r.err == io.EOF && r.end > r.start {
				return nil, io.ErrUnexpectedEOF
			}
			err := r.err
			if errors.Is(err, os.ErrDeadlineExceeded) {
				r.err = nil // a read deadline passing is not the end: the caller may read again
			}
			return nil, err
		}
		r.fill()
	}
}

// fill reads at least one byte, or records why it could not. It makes room
// for the whole packet when its header is known, so a large packet costs
// one allocation, and never more than the maximum packet size, which
// ParseFixedHeader has already enforced.
func (r *Reader) fill() {
	need := maxHeaderLen
	if h, n, err := ParseFixedHeader(r.buf[r.start:r.end], r.max); err == nil {
		need = n + h.RemainingLength
	}
	need = max(need, readerMinBuf)
	// Move the unread tail to the front so the buffer only ever has to
	// hold one packet.
	if r.start > 0 {
		r.end = copy(r.buf, r.buf[r.start:r.end])
		r.start = 0
	}
	if len(r.buf) < need {
		buf := make([]byte, need)
		copy(buf, r.buf[:r.end])
		r.buf = buf
	}
	for range readerMaxEmptyReads {
		m, err := r.r.Read(r.buf[r.end:])
		r.end += m
		if err != nil {
			r.err = err
			return
		}
		if m > 0 {
			return
		}
	}
	r.err = io.ErrNoProgress
}

// own gives p its own copy of topic and payload, in one allocation.
func own(p *Publish) {
	b := make([]byte, len(p.Topic)+len(p.Payload))
	n := copy(b, p.Topic)
	copy(b[n:], p.Payload)
	p.Topic = b[:n:n]
	p.Payload = b[n:]
}
