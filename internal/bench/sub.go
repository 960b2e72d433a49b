package bench

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/iotd/iotd/internal/packet"
)

// subBufSize is a subscriber's read buffer: large enough that a busy subscriber reads many
// messages per system call.
const subBufSize = 64 << 10

// subscriber is one subscribing connection and the goroutine (readLoop) that reads it.
type subscriber struct {
	r      *run
	c      *client
	idx    int
	filter string

	// received is this subscriber's count; firstRecv and lastRecv are UnixNano times of its first
	// and latest read that brought a PUBLISH.
	received  atomic.Uint64
	firstRecv atomic.Int64
	lastRecv  atomic.Int64

	// Owned by readLoop until done is closed.
	own      []seqTracker           // by publisher index, for this run's messages
	others   map[uint64]*seqTracker // by tag<<32|index, for other runs' messages
	untagged uint64                 // messages without a tracking header
	lat      latencyBuf
	pending  []uint64 // bitmap of QoS 2 packet ids received and awaiting PUBREL

	done chan struct{}
}

func newSubscriber(r *run, c *client, idx int, filter string) *subscriber {
	s := &subscriber{r: r, c: c, idx: idx, filter: filter, done: make(chan struct{})}
	s.lat.h = r.e2eHist
	return s
}

// tracker returns the sequence tracker for a publisher.
func (s *subscriber) tracker(st stamp) *seqTracker {
	if st.tag == s.r.tag && st.pub < 1<<20 {
		for int(st.pub) >= len(s.own) {
			s.own = append(s.own, seqTracker{})
		}
		return &s.own[st.pub]
	}
	if s.others == nil {
		s.others = make(map[uint64]*seqTracker)
	}
	k := uint64(st.tag)<<32 | uint64(st.pub)
	t := s.others[k]
	if t == nil {
		t = &seqTracker{}
		s.others[k] = t
	}
	return t
}

// readLoop reads and acknowledges deliveries until the connection ends. It pings the broker when
// it has written nothing for half the keep-alive, which a QoS 0 subscriber otherwise never does.
func (s *subscriber) readLoop() {
	defer close(s.done)
	defer s.lat.flush()
	ka := s.r.t.KeepAlive
	var out []byte
	var pub packet.Publish
	var rdl time.Time
	for {
		if ka > 0 && time.Until(rdl) < ka/4 {
			rdl = time.Now().Add(ka / 2)
			s.c.nc.SetReadDeadline(rdl)
		}
		if err := s.c.fr.fill(s.c.nc); err != nil {
			if isTimeout(err) && !s.c.closing.Load() {
				rdl = time.Time{}
				if time.Duration(time.Now().UnixNano()-s.c.lastWrite.Load()) >= ka/2 {
					if err := s.c.write([]byte{byte(packet.TypePingreq) << 4, 0}); err != nil {
						s.r.errs.add(fmt.Errorf("%s: write PINGREQ: %w", s.c.id, err))
						return
					}
				}
				continue
			}
			s.r.errs.add(s.c.readErr(err))
			return
		}
		now := time.Now().UnixNano()
		out = out[:0]
		n := uint64(0)
		for {
			h, body, ok, err := s.c.fr.next()
			if err != nil {
				s.r.errs.add(fmt.Errorf("%s: %w", s.c.id, err))
				s.c.nc.Close()
				return
			}
			if !ok {
				break
			}
			switch h.Type {
			case packet.TypePublish:
				if err := packet.DecodePublish(h, body, &pub); err != nil {
					s.r.errs.add(fmt.Errorf("%s: %w", s.c.id, err))
					continue
				}
				if out, ok = s.deliver(&pub, now, out); ok {
					n++
				}
			case packet.TypePubrel:
				id, err := ackID(h, body)
				if err != nil {
					s.r.errs.add(fmt.Errorf("%s: %w", s.c.id, err))
					continue
				}
				if s.pending != nil {
					s.pending[id/64] &^= 1 << (id % 64)
				}
				out = (&packet.Pubcomp{PacketID: id}).Append(out)
			case packet.TypePingresp, packet.TypeSuback, packet.TypeUnsuback:
			default:
				s.r.errs.add(fmt.Errorf("%s: unexpected %s", s.c.id, h.Type))
			}
		}
		// A busy QoS 0 subscriber reads without ever writing: ping on the keep-alive schedule
		// here too, or the broker times it out in the middle of a long delivery.
		if ka > 0 && time.Duration(now-s.c.lastWrite.Load()) >= ka/2 {
			out = append(out, byte(packet.TypePingreq)<<4, 0)
		}
		if n > 0 {
			s.received.Add(n)
			s.r.received.Add(n)
			s.firstRecv.CompareAndSwap(0, now)
			s.lastRecv.Store(now)
			s.r.checkReceived()
		}
		if len(out) > 0 {
			if err := s.c.write(out); err != nil && !s.c.closing.Load() {
				s.r.errs.add(fmt.Errorf("%s: write acknowledgement: %w", s.c.id, err))
			}
		}
	}
}

// deliver accounts for one PUBLISH and appends its acknowledgement to out. It returns false for
// a retransmitted QoS 2 PUBLISH whose first copy is still awaiting PUBREL: that is the protocol
// repeating itself, not a second delivery ([MQTT-4.3.3-2]).
func (s *subscriber) deliver(p *packet.Publish, now int64, out []byte) ([]byte, bool) {
	switch p.QoS {
	case packet.QoS1:
		out = (&packet.Puback{PacketID: p.PacketID}).Append(out)
	case packet.QoS2:
		out = (&packet.Pubrec{PacketID: p.PacketID}).Append(out)
		if s.pending == nil {
			s.pending = make([]uint64, 65536/64)
		}
		w, bit := p.PacketID/64, uint64(1)<<(p.PacketID%64)
		if s.pending[w]&bit != 0 {
			return out, false
		}
		s.pending[w] |= bit
	}
	st, ok := readStamp(p.Payload)
	if !ok {
		s.untagged++
		return out, true
	}
	s.lat.record(now - st.sent)
	s.tracker(st).add(st.seq)
	return out, true
}

// ackID reads the packet identifier of a PUBACK, PUBREC, PUBREL or PUBCOMP body.
func ackID(h packet.FixedHeader, body []byte) (uint16, error) {
	if len(body) != 2 {
		return 0, fmt.Errorf("%s: remaining length %d, want 2", h.Type, len(body))
	}
	return uint16(body[0])<<8 | uint16(body[1]), nil
}
