package bench

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotd/iotd/internal/packet"
)

// markerEvery spaces the PINGREQ markers a QoS 0 publisher adds to its stream, so that they add
// a handful of packets per second, not one per message, to what the broker handles.
const markerEvery = 100 * time.Millisecond

// batchBytes bounds the bytes a publisher encodes into one write when messages are due faster
// than it can write them one by one.
const batchBytes = 16 << 10

// publisher is one publishing connection: a writer goroutine (run) and a reader goroutine
// (readLoop) that consumes acknowledgements.
type publisher struct {
	r     *run
	c     *client
	idx   int
	topic string
	o     *Publishers

	// sent, acked and completed are the publisher's own totals; the run's shared counters are
	// updated alongside for the progress line.
	sent atomic.Uint64
	// acked counts the messages the broker has taken: PUBACK (QoS 1) or PUBREC (QoS 2)
	// received; at QoS 0, messages written before a PINGREQ the broker has answered.
	acked     atomic.Uint64
	completed atomic.Uint64 // PUBACK (QoS 1) or PUBCOMP (QoS 2): its window slot is free

	// credits holds one token per free place in the window (QoS 1/2).
	credits chan struct{}
	// slots[id-1] is the UnixNano send time of the message with packet id id; 0 when the id is
	// free, negated once its PUBREC arrived (QoS 2).
	slots  []atomic.Int64
	cursor int

	// markers holds, for each PINGREQ written and not yet answered, the number of messages
	// written before it: a broker answers a PINGREQ only after it has read what came before, so
	// each PINGRESP proves that many QoS 0 messages were taken. At most one marker rides along
	// with the batches at a time (markerOut), at most one per markerEvery, so the extra packets
	// cost nothing measurable.
	markers   chan uint64
	markerOut atomic.Bool
	pong      chan struct{} // poked on each PINGRESP
	// lastAck is the UnixNano time the broker last took messages (ack or answered marker).
	lastAck atomic.Int64

	ackLat     latencyBuf
	readerDone chan struct{}
}

func newPublisher(r *run, c *client, idx int, o *Publishers) *publisher {
	p := &publisher{r: r, c: c, idx: idx, topic: expand(o.Topic, idx), o: o, readerDone: make(chan struct{}),
		markers: make(chan uint64, 16), pong: make(chan struct{}, 1)}
	p.ackLat.h = r.ackHist
	if o.QoS > packet.QoS0 {
		p.credits = make(chan struct{}, o.Inflight)
		for range o.Inflight {
			p.credits <- struct{}{}
		}
		// Twice the window, so an id is never reused while an earlier one is still unacknowledged
		// out of order.
		p.slots = make([]atomic.Int64, min(65535, 2*o.Inflight))
	}
	return p
}

// inflight is the number of messages sent and not yet completed.
func (p *publisher) inflight() int {
	if p.credits == nil {
		return 0
	}
	return cap(p.credits) - len(p.credits)
}

// allocID finds a free packet id and marks it sent at now. The caller holds a credit, so fewer
// than len(slots)/2 ids are in use and the search ends quickly.
func (p *publisher) allocID(now int64) uint16 {
	for {
		s := p.cursor
		p.cursor++
		if p.cursor == len(p.slots) {
			p.cursor = 0
		}
		if p.slots[s].CompareAndSwap(0, now) {
			return uint16(s + 1)
		}
	}
}

// run publishes until the message bound, the run's stop signal or a write error, then waits until
// the broker has taken everything written: the acknowledgements still outstanding at QoS 1/2
// (until none arrived for drain), the answer to a PINGREQ at QoS 0 (at most maxDrain). The time
// the broker took the last message ends the publisher's share of the publishing phase, so the
// send rate is the rate the broker took messages at, not the rate the kernel buffered them.
func (p *publisher) run(start time.Time, drain, maxDrain time.Duration) {
	o := p.o
	msgSize := len(p.topic) + o.Size + 8
	maxBatch := max(1, batchBytes/msgSize)
	payload := newPayload(o.Size)
	tracked := o.Size >= MinTrackedSize
	pub := packet.Publish{QoS: o.QoS, Retain: o.Retain, Topic: []byte(p.topic)}
	buf := make([]byte, 0, maxBatch*msgSize)
	var seq uint64
	var interval time.Duration
	if o.Rate > 0 {
		interval = time.Duration(float64(time.Second) / o.Rate)
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	stop := p.r.stop
	keepAlive := p.r.t.KeepAlive
	failed := false
	var lastMarker int64
	loopDone := make(chan struct{})
	var interrupter sync.WaitGroup
	interrupter.Add(1)
	go func() {
		defer interrupter.Done()
		p.interruptWrites(loopDone)
	}()

loop:
	for o.Messages == 0 || seq < uint64(o.Messages) {
		select {
		case <-stop:
			break loop
		default:
		}
		n := maxBatch
		if o.Messages > 0 {
			n = min(n, int(uint64(o.Messages)-seq))
		}
		if o.Rate > 0 {
			// The k-th message (from 0) is due at start + k/rate; send every message now due.
			due := int64(time.Since(start).Seconds()*o.Rate) + 1 - int64(seq)
			if due <= 0 {
				wait := time.Until(start.Add(time.Duration(float64(seq) * float64(interval))))
				if keepAlive > 0 && time.Duration(time.Now().UnixNano()-p.c.lastWrite.Load()) > keepAlive/2 && !p.markerOut.Load() {
					p.markerOut.Store(true)
					p.markers <- seq
					if err := p.c.write(pingreq); err != nil {
						p.r.errs.add(fmt.Errorf("%s: write PINGREQ: %w", p.c.id, err))
						failed = true
						break loop
					}
				}
				timer.Reset(min(wait, max(keepAlive/2, time.Millisecond)))
				select {
				case <-stop:
					break loop
				case <-timer.C:
				}
				continue
			}
			n = min(n, int(due))
		}
		if o.QoS > packet.QoS0 {
			// Wait for one place in the window, then take as many more as are free.
			select {
			case <-p.credits:
			case <-stop:
				break loop
			case <-p.readerDone:
				break loop
			}
			got := 1
		more:
			for got < n {
				select {
				case <-p.credits:
					got++
				default:
					break more
				}
			}
			n = got
		}
		buf = buf[:0]
		now := time.Now().UnixNano()
		for range n {
			if o.QoS > packet.QoS0 {
				pub.PacketID = p.allocID(now)
			}
			if tracked {
				putStamp(payload, stamp{tag: p.r.tag, sent: now, pub: uint32(p.idx), seq: seq})
			}
			buf = packet.AppendPublishHeader(buf, &pub, len(payload))
			buf = append(buf, payload...)
			seq++
		}
		if o.QoS == packet.QoS0 && !p.markerOut.Load() && now-lastMarker >= int64(markerEvery) {
			lastMarker = now
			p.markerOut.Store(true)
			p.markers <- seq
			buf = append(buf, pingreq...)
		}
		if err := p.c.write(buf); err != nil {
			select {
			case <-stop:
				// The run ended while the broker held this write back (flow control): not an
				// error, but the stream may end inside a packet, so nothing more is written.
			default:
				if !p.c.closing.Load() {
					p.r.errs.add(fmt.Errorf("%s: write PUBLISH: %w", p.c.id, err))
				}
			}
			failed = true
			break
		}
		p.sent.Add(uint64(n))
		p.r.sent.Add(uint64(n))
	}
	close(loopDone)
	interrupter.Wait()
	if o.QoS > packet.QoS0 {
		p.awaitAcks(drain)
	} else if !failed && p.sent.Load() > 0 {
		p.flush(seq, maxDrain)
	}
	done := time.Now()
	if t := p.lastAck.Load(); t != 0 && p.acked.Load() == p.sent.Load() {
		done = time.Unix(0, t) // everything taken: the phase ended when the last was
	}
	p.r.pubDone(done)
}

// interruptWrites makes a write that the broker holds back fail once the run's stop signal
// comes, so the duration bounds the run even when the broker stops reading the publisher (as a
// broker that pushes back on a fast publisher does). It returns when loopDone is closed.
func (p *publisher) interruptWrites(loopDone <-chan struct{}) {
	select {
	case <-loopDone:
		return
	case <-p.r.stop:
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		// Repeated: the writer may have set a fresh deadline just before this one.
		p.c.nc.SetWriteDeadline(time.Unix(1, 0))
		select {
		case <-loopDone:
			return
		case <-tick.C:
		}
	}
}

// pingreq is the PINGREQ packet.
var pingreq = []byte{byte(packet.TypePingreq) << 4, 0}

// flush waits until the broker has read every QoS 0 message written (sent of them): it writes a
// PINGREQ marker after the last one, unless one is already out, and waits for the answers, at
// most limit. Without this, the last messages may sit in socket buffers and would count as taken
// (and, for a subscriber, as lost) although the broker never read them. What is still unread
// when the limit passes stays out of the acked count.
func (p *publisher) flush(sent uint64, limit time.Duration) {
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for p.acked.Load() < sent {
		if !p.markerOut.Load() {
			p.markerOut.Store(true)
			p.markers <- sent
			if err := p.c.write(pingreq); err != nil {
				if !p.c.closing.Load() {
					p.r.errs.add(fmt.Errorf("%s: write PINGREQ: %w", p.c.id, err))
				}
				return
			}
		}
		select {
		case <-p.pong:
		case <-p.readerDone:
			return
		case <-p.r.abort:
			return
		case <-timer.C:
			return
		}
	}
}

// awaitAcks waits until every sent message completed, the reader ended, or no acknowledgement
// arrived for drain.
func (p *publisher) awaitAcks(drain time.Duration) {
	last, lastChange := p.completed.Load(), time.Now()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for p.inflight() > 0 {
		select {
		case <-p.readerDone:
			return
		case <-p.r.abort:
			return
		case now := <-tick.C:
			if c := p.completed.Load(); c != last {
				last, lastChange = c, now
			} else if now.Sub(lastChange) > drain {
				return
			}
		}
	}
}

// readLoop consumes what the broker sends a publisher: acknowledgements (answering PUBREC with
// PUBREL) and PINGRESP. It ends when the connection does.
func (p *publisher) readLoop() {
	defer close(p.readerDone)
	defer p.ackLat.flush()
	var out []byte
	for {
		if err := p.c.fr.fill(p.c.nc); err != nil {
			p.r.errs.add(p.c.readErr(err))
			return
		}
		now := time.Now().UnixNano()
		out = out[:0]
		for {
			h, body, ok, err := p.c.fr.next()
			if err != nil {
				p.r.errs.add(fmt.Errorf("%s: %w", p.c.id, err))
				p.c.nc.Close()
				return
			}
			if !ok {
				break
			}
			if out, err = p.handle(h, body, now, out); err != nil {
				p.r.errs.add(fmt.Errorf("%s: %w", p.c.id, err))
			}
		}
		if len(out) > 0 {
			if err := p.c.write(out); err != nil && !p.c.closing.Load() {
				p.r.errs.add(fmt.Errorf("%s: write PUBREL: %w", p.c.id, err))
			}
		}
	}
}

// handle processes one packet from the broker and appends any answer to out.
func (p *publisher) handle(h packet.FixedHeader, body []byte, now int64, out []byte) ([]byte, error) {
	switch h.Type {
	case packet.TypePingresp:
		select {
		case m := <-p.markers:
			p.markerOut.Store(false)
			if p.o.QoS == packet.QoS0 {
				if prev := p.acked.Load(); m > prev {
					p.acked.Store(m)
					p.r.acked.Add(m - prev)
					p.lastAck.Store(now)
				}
			}
		default: // an answer to a PINGREQ this publisher did not send: ignore it
		}
		select {
		case p.pong <- struct{}{}:
		default:
		}
		return out, nil
	case packet.TypePuback, packet.TypePubrec, packet.TypePubcomp:
	default:
		return out, fmt.Errorf("unexpected %s", h.Type)
	}
	id, err := ackID(h, body)
	if err != nil {
		return out, err
	}
	if int(id) < 1 || int(id) > len(p.slots) {
		return out, fmt.Errorf("%s for packet id %d, which was never sent", h.Type, id)
	}
	slot := &p.slots[id-1]
	switch {
	case h.Type == packet.TypePuback && p.o.QoS == packet.QoS1:
		sent := slot.Swap(0)
		if sent <= 0 {
			return out, fmt.Errorf("PUBACK for packet id %d, which is not in flight", id)
		}
		p.ackLat.record(now - sent)
		p.lastAck.Store(now)
		p.acked.Add(1)
		p.r.acked.Add(1)
		p.completed.Add(1)
		p.credits <- struct{}{}
	case h.Type == packet.TypePubrec && p.o.QoS == packet.QoS2:
		sent := slot.Load()
		if sent > 0 {
			slot.Store(-sent)
			p.lastAck.Store(now)
			p.acked.Add(1)
			p.r.acked.Add(1)
		} else if sent == 0 {
			return out, fmt.Errorf("PUBREC for packet id %d, which is not in flight", id)
		}
		// A repeated PUBREC gets its PUBREL again.
		out = (&packet.Pubrel{PacketID: id}).Append(out)
	case h.Type == packet.TypePubcomp && p.o.QoS == packet.QoS2:
		sent := slot.Load()
		if sent >= 0 {
			return out, fmt.Errorf("PUBCOMP for packet id %d, which awaits no PUBREL", id)
		}
		slot.Store(0)
		p.ackLat.record(now + sent)
		p.completed.Add(1)
		p.credits <- struct{}{}
	default:
		return out, fmt.Errorf("unexpected %s at QoS %d", h.Type, p.o.QoS)
	}
	return out, nil
}
