package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/iotd/iotd/internal/packet"
)

// client is one MQTT connection of the load generator. Its hot paths (the publisher's writer and
// each connection's reader) own it; other goroutines only set closing and call close.
type client struct {
	nc      net.Conn
	id      string
	fr      frameReader
	closing atomic.Bool // the run is closing it: a read error after this is not an error

	// lastWrite is the UnixNano time of the last write, for keep-alive pings.
	lastWrite atomic.Int64
	timeout   time.Duration
}

// frameReader keeps the bytes read from a connection and hands out whole packets from them, in
// place: a body aliases buf until the next fill.
type frameReader struct {
	buf  []byte
	r, w int
}

// fill reads once from nc into the free part of buf. It first moves an unfinished packet to the
// front and grows buf when that packet would not fit.
func (f *frameReader) fill(nc net.Conn) error {
	if f.r == f.w {
		f.r, f.w = 0, 0
	}
	need := 0
	if h, n, err := packet.ParseFixedHeader(f.buf[f.r:f.w], 0); err == nil {
		need = n + h.RemainingLength
	}
	if f.r > 0 && (len(f.buf)-f.w < len(f.buf)/4 || need > len(f.buf)-f.r) {
		f.w = copy(f.buf, f.buf[f.r:f.w])
		f.r = 0
	}
	if need > len(f.buf) {
		buf := make([]byte, need)
		copy(buf, f.buf[:f.w])
		f.buf = buf
	}
	n, err := nc.Read(f.buf[f.w:])
	f.w += n
	if n > 0 {
		return nil // deliver what arrived; a pending error comes back on the next read
	}
	return err
}

// next returns the next whole packet in the buffer; ok is false when more bytes are needed.
func (f *frameReader) next() (h packet.FixedHeader, body []byte, ok bool, err error) {
	h, body, n, err := packet.Frame(f.buf[f.r:f.w], 0)
	if err != nil {
		if errors.Is(err, packet.ErrIncomplete) {
			return h, nil, false, nil
		}
		return h, nil, false, err
	}
	f.r += n
	return h, body, true, nil
}

// write writes b within Timeout and records the time. The deadline is set for every write, so
// it means "no progress for Timeout", not "Timeout since some earlier write".
func (c *client) write(b []byte) error {
	now := time.Now()
	if err := c.nc.SetWriteDeadline(now.Add(c.timeout)); err != nil {
		return err
	}
	_, err := c.nc.Write(b)
	c.lastWrite.Store(now.UnixNano())
	return err
}

// close sends DISCONNECT (best effort: the broker may be gone) and closes the connection.
func (c *client) close() {
	c.closing.Store(true)
	c.nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	c.nc.Write([]byte{byte(packet.TypeDisconnect) << 4, 0}) // best effort; the close follows anyway
	c.nc.Close()
}

// readErr classifies an error from reading c: nil when the run closed the connection itself.
func (c *client) readErr(err error) error {
	if c.closing.Load() {
		return nil
	}
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: connection closed by the broker", c.id)
	}
	if errors.Is(err, syscall.ECONNRESET) {
		return fmt.Errorf("%s: connection reset by the broker", c.id)
	}
	return fmt.Errorf("%s: read: %w", c.id, err)
}

// readPacket reads until one whole packet is available and returns it, within the deadline set
// on the connection by the caller.
func (c *client) readPacket() (packet.FixedHeader, []byte, error) {
	for {
		h, body, ok, err := c.fr.next()
		if err != nil {
			return h, nil, err
		}
		if ok {
			return h, body, nil
		}
		if err := c.fr.fill(c.nc); err != nil {
			return h, nil, err
		}
	}
}

// dial opens connection number seq of the run (the number picks its source address when
// spreading), sends CONNECT with client id id and waits for an accepting CONNACK.
func (r *run) dial(ctx context.Context, id string, seq int, bufSize int) (*client, error) {
	d := net.Dialer{Timeout: r.t.Timeout}
	if r.spread {
		d.LocalAddr = sourceAddr(seq)
	}
	nc, err := d.DialContext(ctx, "tcp", r.t.Addr)
	if err != nil {
		return nil, fmt.Errorf("%s: dial: %w", id, err)
	}
	if r.t.TLS != nil {
		tc := tls.Client(nc, r.t.TLS)
		hctx, cancel := context.WithTimeout(ctx, r.t.Timeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("%s: TLS handshake: %w", id, err)
		}
		nc = tc
	}
	c := &client{nc: nc, id: id, timeout: r.t.Timeout, fr: frameReader{buf: make([]byte, bufSize)}}
	cp := packet.Connect{
		ProtocolName:  "MQTT",
		ProtocolLevel: packet.Version311,
		CleanSession:  !r.t.Persistent,
		KeepAlive:     uint16(r.t.KeepAlive / time.Second),
		ClientID:      id,
	}
	if r.t.Username != "" {
		cp.Username, cp.HasUsername = r.t.Username, true
		cp.Password, cp.HasPassword = []byte(r.t.Password), true
	}
	nc.SetDeadline(time.Now().Add(r.t.Timeout))
	if err := c.write(cp.Append(nil)); err != nil {
		nc.Close()
		return nil, fmt.Errorf("%s: send CONNECT: %w", id, err)
	}
	h, body, err := c.readPacket()
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("%s: read CONNACK: %w", id, err)
	}
	p, err := packet.Decode(h, body, packet.Version311)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("%s: decode CONNACK: %w", id, err)
	}
	ack, ok := p.(*packet.Connack)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("%s: got %s, want CONNACK", id, h.Type)
	}
	if ack.ReturnCode != packet.Accepted {
		nc.Close()
		return nil, fmt.Errorf("%s: CONNACK refused: %v", id, ack.ReturnCode)
	}
	nc.SetDeadline(time.Time{})
	return c, nil
}

// subscribe sends filters in SUBSCRIBE packets of at most perPacket filters each, all at once,
// then waits for every SUBACK and fails on a refused filter.
func (c *client) subscribe(filters []string, qos packet.QoS, perPacket int, timeout time.Duration) error {
	var out []byte
	packets := 0
	for i := 0; i < len(filters); i += perPacket {
		s := packet.Subscribe{PacketID: uint16(packets%65535 + 1)}
		for _, f := range filters[i:min(i+perPacket, len(filters))] {
			s.Subscriptions = append(s.Subscriptions, packet.Subscription{Filter: f, QoS: qos})
		}
		out = s.Append(out)
		packets++
	}
	c.nc.SetDeadline(time.Now().Add(timeout))
	defer c.nc.SetDeadline(time.Time{})
	// Write and read at the same time: a broker may stop reading SUBSCRIBEs until its SUBACKs
	// are read, and many SUBACKs do not fit in the socket buffers.
	werr := make(chan error, 1)
	go func() { werr <- c.write(out) }()
	var err error
	for got := 0; got < packets; got++ {
		var h packet.FixedHeader
		var body []byte
		if h, body, err = c.readPacket(); err != nil {
			err = fmt.Errorf("%s: read SUBACK: %w", c.id, err)
			break
		}
		if h.Type != packet.TypeSuback {
			err = fmt.Errorf("%s: got %s, want SUBACK", c.id, h.Type)
			break
		}
		p, derr := packet.Decode(h, body, packet.Version311)
		if derr != nil {
			err = fmt.Errorf("%s: decode SUBACK: %w", c.id, derr)
			break
		}
		for _, code := range p.(*packet.Suback).ReturnCodes {
			if code == 0x80 {
				err = fmt.Errorf("%s: SUBACK refused a filter", c.id)
			}
		}
		if err != nil {
			break
		}
	}
	if err != nil {
		c.nc.SetDeadline(time.Now()) // unblock the writer
	}
	if wrErr := <-werr; wrErr != nil && err == nil {
		err = fmt.Errorf("%s: send SUBSCRIBE: %w", c.id, wrErr)
	}
	return err
}

// isTimeout reports whether err is a deadline expiry.
func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
