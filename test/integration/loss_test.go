package integration

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/iotdtest"
	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/server"
)

// lossSeed reproduces a run of TestLoss: go test ./test/integration -run TestLoss -seed N. The
// environment variable IOTD_LOSS_SEED does the same when flags are awkward (several packages).
var lossSeed = flag.Uint64("seed", 0, "seed of TestLoss's random drops and reconnects (0: from the clock)")

// lossConfig sizes one run of the loss test.
type lossConfig struct {
	publishers  int           // publishing clients, each on its own topic
	messages    int           // messages per publisher
	subscribers int           // persistent subscribers, each subscribed to every publisher's topic
	pubWindow   int           // PUBLISH packets a publisher keeps unacknowledged
	dropEvery   int           // a subscriber drops its connection after 1 in dropEvery packets, on average
	limit       time.Duration // hard deadline of the whole test
}

// lossSeedValue returns the seed of this run: the -seed flag, else IOTD_LOSS_SEED, else the clock.
func lossSeedValue(t *testing.T) uint64 {
	t.Helper()
	if *lossSeed != 0 {
		return *lossSeed
	}
	if s := os.Getenv("IOTD_LOSS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("IOTD_LOSS_SEED=%q: %v", s, err)
		}
		return v
	}
	return uint64(time.Now().UnixNano())
}

// TestLoss publishes thousands of messages from several publishers at QoS 1 and at QoS 2 to
// persistent subscribers that drop their connections (closing the socket, without DISCONNECT) and
// reconnect at random throughout. Every subscriber must receive every message at least once at
// QoS 1 and exactly once at QoS 2, and the first delivery of each message in the order its
// publisher sent it ([MQTT-4.6.0-6]); with a queue large enough for everything a subscriber can
// miss, the broker must drop nothing. The subscribers are raw clients on internal/packet, so the
// test decides when acknowledgements are sent or lost; at QoS 2 they keep the packet identifiers
// awaiting PUBREL across their own reconnects (the standard's "Method B" receiver), which is what
// makes exactly-once possible end to end ([MQTT-4.3.3-1], [MQTT-4.4.0-1]).
//
// The run is random but reproducible: the seed is logged first and repeated in every failure
// (-seed or IOTD_LOSS_SEED replays it, up to the scheduling of goroutines). IOTD_LOSS_LONG=1 runs a
// longer variant.
func TestLoss(t *testing.T) {
	t.Parallel()
	cfg := lossConfig{publishers: 4, messages: 2000, subscribers: 3, pubWindow: 64, dropEvery: 250, limit: 25 * time.Second}
	if os.Getenv("IOTD_LOSS_LONG") == "1" {
		cfg = lossConfig{publishers: 8, messages: 20000, subscribers: 3, pubWindow: 64, dropEvery: 1000, limit: 8 * time.Minute}
	}
	seed := lossSeedValue(t)
	t.Logf("seed %d (rerun with -seed %d or IOTD_LOSS_SEED=%d); %d publishers x %d messages, %d subscribers",
		seed, seed, seed, cfg.publishers, cfg.messages, cfg.subscribers)
	deadline := time.Now().Add(cfg.limit)
	if d, ok := t.Deadline(); ok && d.Add(-5*time.Second).Before(deadline) {
		deadline = d.Add(-5 * time.Second)
	}
	for _, tc := range []struct {
		name string
		qos  packet.QoS
	}{
		{"MQTT-4.1.0-1 MQTT-4.3.2-1 MQTT-4.4.0-1 MQTT-4.6.0-6 QoS 1 at least once, in order per publisher", packet.QoS1},
		{"MQTT-4.1.0-1 MQTT-4.3.3-1 MQTT-4.4.0-1 MQTT-4.6.0-6 QoS 2 exactly once, in order per publisher", packet.QoS2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runLoss(t, cfg, tc.qos, seed+uint64(tc.qos), deadline)
		})
	}
}

// lossReport is what one run counts; it is logged, and dumped on failure.
type lossReport struct {
	sent, received, firsts, dups, dupsDiscarded, pubrels, unknownPubrels, reconnects, offlineWaits uint64
}

// runLoss runs one QoS level of TestLoss against its own broker.
func runLoss(t *testing.T, cfg lossConfig, q packet.QoS, seed uint64, deadline time.Time) {
	// The queue can hold every message of the run: a subscriber that falls behind, or stays away,
	// never loses one to the queue limit, so any loss is the broker's fault.
	maxQueued := max(100000, cfg.publishers*cfg.messages)
	env := iotdtest.Start(t, server.Options{}, broker.Options{MaxInflight: 16, MaxQueued: maxQueued})
	start := time.Now()
	run := &lossRun{cfg: cfg, qos: q, seed: seed, addr: env.Addr, deadline: deadline}
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf("seed %d: "+format, append([]any{run.seed}, args...)...)
	}

	subs := make([]*lossSub, cfg.subscribers)
	for i := range subs {
		subs[i] = run.newSub(i)
	}
	var wg sync.WaitGroup
	ready := make(chan error, len(subs))
	for _, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.run(ready)
		}()
	}
	for range subs {
		if err := <-ready; err != nil {
			fail("subscriber setup: %v", err)
		}
	}
	pubs := make([]*lossPub, cfg.publishers)
	if !t.Failed() {
		for i := range pubs {
			pubs[i] = &lossPub{lr: run, index: i}
			wg.Add(1)
			go func() {
				defer wg.Done()
				pubs[i].run()
			}()
		}
	}

	// Wait until every subscriber has had every message, a subscriber fails, or the deadline.
	complete := func() bool {
		for _, s := range subs {
			if !s.complete.Load() {
				return false
			}
		}
		return true
	}
	timedOut := false
	for !t.Failed() && !complete() && run.err() == nil {
		if time.Now().After(deadline) {
			timedOut = true
			break
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
	run.stop()
	wg.Wait()

	var r lossReport
	for _, p := range pubs {
		if p != nil {
			r.sent += p.acked
		}
	}
	for _, s := range subs {
		r.received += s.received
		r.firsts += s.firsts
		r.dups += s.dups
		r.dupsDiscarded += s.dupsDiscarded
		r.pubrels += s.pubrels
		r.unknownPubrels += s.unknownPubrels
		r.reconnects += s.reconnects
		r.offlineWaits += s.offlineWaits
	}
	st := env.Broker.Stats()
	// A subscriber that reconnects at once often does so before the broker has seen its old
	// connection close: the new connection then takes the session over ([MQTT-3.1.4-2]).
	takeovers := countLines(env.Logs.String(), `msg="session taken over"`)
	t.Logf("QoS %d in %v: sent %d (%d publishers x %d), received %d (first deliveries %d of %d), "+
		"QoS 1 duplicates %d, QoS 2 duplicates discarded by the receiver %d, PUBRELs %d (unknown id %d), "+
		"reconnects %d (%d after waiting offline, %d taking over a connection not yet closed); "+
		"broker: received %d, delivered %d, dropped %d",
		q, time.Since(start).Round(time.Millisecond), r.sent, cfg.publishers, cfg.messages, r.received,
		r.firsts, cfg.publishers*cfg.messages*cfg.subscribers, r.dups, r.dupsDiscarded, r.pubrels, r.unknownPubrels,
		r.reconnects, r.offlineWaits, takeovers, st.Received, st.Delivered, st.Dropped)

	for _, err := range run.errs() {
		fail("%v", err)
	}
	if timedOut {
		var state []string
		for _, p := range pubs {
			if p != nil {
				state = append(state, fmt.Sprintf("publisher %d: %d of %d acknowledged", p.index, p.acked, cfg.messages))
			}
		}
		for _, s := range subs {
			state = append(state, fmt.Sprintf("subscriber %s: next expected per publisher %v", s.id, s.next))
		}
		fail("not done within the deadline %v:\n%s", cfg.limit, strings.Join(state, "\n"))
	}
	if t.Failed() {
		return
	}
	if r.sent != uint64(cfg.publishers*cfg.messages) {
		fail("%d messages acknowledged to the publishers, want %d", r.sent, cfg.publishers*cfg.messages)
	}
	if q == packet.QoS2 && r.dups != 0 {
		fail("%d duplicates delivered at QoS 2", r.dups)
	}
	if st.Dropped != 0 {
		fail("broker dropped %d deliveries; the queue limit (%d) is larger than anything a subscriber can miss", st.Dropped, maxQueued)
	}
}

// lossRun is the state shared by the clients of one run.
type lossRun struct {
	cfg      lossConfig
	qos      packet.QoS
	seed     uint64
	addr     string
	deadline time.Time
	sent     atomic.Int64 // PUBLISH packets written by all publishers, for subscribers waiting offline

	mu      sync.Mutex
	stopped bool
	conns   map[net.Conn]struct{} // open connections, closed by stop
	failed  []error
}

// fail records err; the run ends at the next check.
func (r *lossRun) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.stopped {
		r.failed = append(r.failed, err)
	}
}

func (r *lossRun) err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.failed) > 0 {
		return r.failed[0]
	}
	return nil
}

func (r *lossRun) errs() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

func (r *lossRun) isStopped() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped
}

// stop ends the run: every connection is closed, which ends every client goroutine.
func (r *lossRun) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	for c := range r.conns {
		c.Close()
	}
	r.conns = nil
}

// dial opens a connection, CONNECTs with id and returns it with the CONNACK. Every read and write
// on it ends at the run's deadline, so that nothing can hang.
func (r *lossRun) dial(id string, clean bool) (*lossConn, *packet.Connack, error) {
	nc, err := net.DialTimeout("tcp", r.addr, iotdtest.Timeout)
	if err != nil {
		return nil, nil, err
	}
	nc.SetDeadline(r.deadline)
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		nc.Close()
		return nil, nil, errStopped
	}
	if r.conns == nil {
		r.conns = make(map[net.Conn]struct{})
	}
	r.conns[nc] = struct{}{}
	r.mu.Unlock()
	c := &lossConn{run: r, nc: nc, rd: packet.NewReader(nc, 0)}
	if err := c.write(&packet.Connect{ProtocolName: "MQTT", ProtocolLevel: packet.Version311, ClientID: id, CleanSession: clean, KeepAlive: 60}); err != nil {
		c.close()
		return nil, nil, err
	}
	p, err := c.read()
	if err != nil {
		c.close()
		return nil, nil, fmt.Errorf("%s: waiting for CONNACK: %w", id, err)
	}
	ack, ok := p.(*packet.Connack)
	if !ok || ack.ReturnCode != packet.Accepted {
		c.close()
		return nil, nil, fmt.Errorf("%s: got %T %+v, want an accepting CONNACK", id, p, p)
	}
	return c, ack, nil
}

var errStopped = errors.New("run stopped")

// lossConn is a raw MQTT connection whose writes may come from two goroutines.
type lossConn struct {
	run *lossRun
	nc  net.Conn
	rd  *packet.Reader
	wmu sync.Mutex
	buf []byte
}

func (c *lossConn) write(p packet.Packet) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.buf = p.Append(c.buf[:0])
	_, err := c.nc.Write(c.buf)
	return err
}

func (c *lossConn) read() (packet.Packet, error) { return c.rd.ReadPacket(packet.Version311) }

// close closes the socket without DISCONNECT: for the broker the client vanished.
func (c *lossConn) close() {
	c.run.mu.Lock()
	delete(c.run.conns, c.nc)
	c.run.mu.Unlock()
	c.nc.Close()
}

// lossPub publishes cfg.messages messages on its own topic, keeping up to cfg.pubWindow in flight,
// and checks that the broker acknowledges them in order.
type lossPub struct {
	lr    *lossRun
	index int
	acked uint64 // read after the run
}

func (p *lossPub) topic() string { return fmt.Sprintf("loss/p%d", p.index) }

func (p *lossPub) run() {
	r := p.lr
	id := fmt.Sprintf("loss-q%d-pub%d", r.qos, p.index)
	c, _, err := r.dial(id, true)
	if err != nil {
		if !errors.Is(err, errStopped) {
			r.fail(fmt.Errorf("publisher %d: %w", p.index, err))
		}
		return
	}
	slots := make(chan struct{}, r.cfg.pubWindow)
	readerDone := make(chan struct{})
	defer func() {
		c.close() // ends the reader, if it is still reading
		<-readerDone
	}()
	go func() { // reads the acknowledgements; completing one frees a slot
		defer close(readerDone)
		next := 0    // sequence number of the next completion expected (PUBACK or PUBCOMP)
		nextRec := 0 // sequence number of the next PUBREC expected
		for next < r.cfg.messages {
			pk, err := c.read()
			if err != nil {
				if !r.isStopped() {
					r.fail(fmt.Errorf("publisher %d: reading acknowledgements after %d: %v", p.index, next, err))
				}
				return
			}
			want := packetID(next)
			var got uint16
			done := false
			switch a := pk.(type) {
			case *packet.Puback:
				got, done = a.PacketID, r.qos == packet.QoS1
			case *packet.Pubrec:
				got = a.PacketID
				if err := c.write(&packet.Pubrel{PacketID: a.PacketID}); err != nil {
					if !r.isStopped() {
						r.fail(fmt.Errorf("publisher %d: PUBREL: %v", p.index, err))
					}
					return
				}
				if r.qos != packet.QoS2 || a.PacketID != packetID(nextRec) {
					// PUBRECs come in PUBLISH order too; PUBCOMPs are checked below.
					r.fail(fmt.Errorf("publisher %d: PUBREC %d, want %d (acknowledgements out of order)", p.index, a.PacketID, packetID(nextRec)))
					return
				}
				nextRec++
				continue
			case *packet.Pubcomp:
				got, done = a.PacketID, r.qos == packet.QoS2
			}
			if !done || got != want {
				r.fail(fmt.Errorf("publisher %d: got %T %+v, want the acknowledgement of packet id %d", p.index, pk, pk, want))
				return
			}
			next++
			p.acked++
			<-slots
		}
	}()
	for seq := 0; seq < r.cfg.messages; seq++ {
		select {
		case slots <- struct{}{}:
		case <-readerDone:
			return
		}
		pub := &packet.Publish{QoS: r.qos, Topic: []byte(p.topic()), PacketID: packetID(seq),
			Payload: fmt.Appendf(nil, "p%d %d", p.index, seq)}
		if err := c.write(pub); err != nil {
			if !r.isStopped() {
				r.fail(fmt.Errorf("publisher %d: PUBLISH %d: %v", p.index, seq, err))
			}
			return
		}
		r.sent.Add(1)
	}
	<-readerDone // every acknowledgement read
}

// packetID is the identifier a publisher gives its message seq: they count up from 1 and wrap,
// which with at most pubWindow in flight never reuses one in use ([MQTT-2.3.1-2]).
func packetID(seq int) uint16 { return uint16(seq%65535 + 1) }

// lossSub is a persistent subscriber that drops its connection at random and checks what it
// receives. Its fields are owned by its goroutine until the run ends.
type lossSub struct {
	lr  *lossRun
	id  string
	rng *rand.Rand
	// awaitingRel holds the packet ids of QoS 2 messages received and not yet released: the
	// receiver's session state, kept across reconnects like the standard's Method B.
	awaitingRel map[uint16]struct{}
	next        []int // per publisher: sequence number of the next first delivery expected
	complete    atomic.Bool

	received, firsts, dups, dupsDiscarded, pubrels, unknownPubrels, reconnects, offlineWaits uint64
}

func (r *lossRun) newSub(i int) *lossSub {
	return &lossSub{
		lr:          r,
		id:          fmt.Sprintf("loss-q%d-sub%d", r.qos, i),
		rng:         rand.New(rand.NewPCG(r.seed, uint64(i)+1)),
		awaitingRel: make(map[uint16]struct{}),
		next:        make([]int, r.cfg.publishers),
	}
}

// run connects, subscribes, reports on ready, then receives until the run stops, reconnecting
// after each drop.
func (s *lossSub) run(ready chan<- error) {
	r := s.lr
	first := true
	for {
		c, ack, err := r.dial(s.id, false)
		if err != nil {
			if first {
				ready <- err
			} else if !errors.Is(err, errStopped) && !r.isStopped() {
				r.fail(fmt.Errorf("subscriber %s: reconnect %d: %w", s.id, s.reconnects, err))
			}
			return
		}
		if first {
			first = false
			if ack.SessionPresent {
				ready <- fmt.Errorf("subscriber %s: session present on the first connection", s.id)
				c.close()
				return
			}
			err := c.write(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "loss/#", QoS: r.qos}}})
			if err == nil {
				var p packet.Packet
				p, err = c.read()
				if sa, ok := p.(*packet.Suback); err == nil && (!ok || len(sa.ReturnCodes) != 1 || sa.ReturnCodes[0] != byte(r.qos)) {
					err = fmt.Errorf("got %T %+v, want SUBACK granting QoS %d", p, p, r.qos)
				}
			}
			if err != nil {
				ready <- fmt.Errorf("subscriber %s: subscribe: %w", s.id, err)
				c.close()
				return
			}
			ready <- nil
		} else if !ack.SessionPresent {
			// [MQTT-3.2.2-2] the session was stored: it must be resumed.
			r.fail(fmt.Errorf("subscriber %s: reconnect %d: session present 0", s.id, s.reconnects))
			c.close()
			return
		}
		dropped, err := s.receive(c)
		c.close()
		if err != nil {
			if !r.isStopped() {
				r.fail(fmt.Errorf("subscriber %s: %w", s.id, err))
			}
			return
		}
		if !dropped {
			return
		}
		s.reconnects++
		s.waitOffline()
	}
}

// waitOffline sometimes stays away while more messages are published, so that the broker queues
// them for the offline session ([MQTT-3.1.2-5]) as well as re-sending what was in flight.
func (s *lossSub) waitOffline() {
	if s.rng.IntN(3) != 0 {
		return // reconnect at once, often before the broker has seen the old connection go
	}
	s.offlineWaits++
	r := s.lr
	until := r.sent.Load() + int64(s.rng.IntN(200))
	for r.sent.Load() < until && r.sent.Load() < int64(r.cfg.publishers*r.cfg.messages) && !r.isStopped() && time.Now().Before(r.deadline) {
		time.Sleep(time.Millisecond) // polling interval, not synchronisation
	}
}

// receive handles packets on c until it decides to drop the connection (dropped is true) or an
// error ends it.
func (s *lossSub) receive(c *lossConn) (dropped bool, err error) {
	r := s.lr
	if s.reconnects > 0 && s.rng.IntN(10) == 0 {
		return true, nil // gone again before reading what the broker re-sends
	}
	for {
		pk, err := c.read()
		if err != nil {
			return false, fmt.Errorf("read: %w", err)
		}
		// Drop before answering (the acknowledgement is lost) or after it (it may or may not arrive).
		drop := s.rng.IntN(r.cfg.dropEvery) == 0
		dropBefore := drop && s.rng.IntN(2) == 0
		var answer packet.Packet
		switch p := pk.(type) {
		case *packet.Publish:
			if err := s.deliver(p); err != nil {
				return false, err
			}
			if p.QoS == packet.QoS1 {
				answer = &packet.Puback{PacketID: p.PacketID}
			} else {
				answer = &packet.Pubrec{PacketID: p.PacketID}
			}
		case *packet.Pubrel:
			s.pubrels++
			if _, ok := s.awaitingRel[p.PacketID]; ok {
				delete(s.awaitingRel, p.PacketID)
			} else {
				// The PUBCOMP of an earlier PUBREL was lost with its connection: answer again.
				s.unknownPubrels++
			}
			answer = &packet.Pubcomp{PacketID: p.PacketID}
		default:
			return false, fmt.Errorf("unexpected %T %+v", pk, pk)
		}
		if dropBefore {
			return true, nil
		}
		if err := c.write(answer); err != nil {
			return false, fmt.Errorf("write %T: %w", answer, err)
		}
		if drop {
			return true, nil
		}
	}
}

// deliver checks one PUBLISH and records it.
func (s *lossSub) deliver(p *packet.Publish) error {
	r := s.lr
	s.received++
	if p.QoS != r.qos || p.PacketID == 0 {
		return fmt.Errorf("PUBLISH QoS %d packet id %d, want QoS %d with a packet id", p.QoS, p.PacketID, r.qos)
	}
	var pub, seq int
	if _, err := fmt.Sscanf(string(p.Payload), "p%d %d", &pub, &seq); err != nil || pub < 0 || pub >= r.cfg.publishers ||
		string(p.Topic) != fmt.Sprintf("loss/p%d", pub) {
		return fmt.Errorf("PUBLISH topic %q payload %q is none of the published messages", p.Topic, p.Payload)
	}
	if r.qos == packet.QoS2 {
		if _, held := s.awaitingRel[p.PacketID]; held {
			// A re-send of a message this receiver already has ([MQTT-4.3.3-2]): the broker did not
			// get the PUBREC. It must carry DUP ([MQTT-3.3.1-1]) and is not delivered again.
			if !p.Dup {
				return fmt.Errorf("message p%d %d re-sent with packet id %d awaiting PUBREL but DUP 0", pub, seq, p.PacketID)
			}
			s.dupsDiscarded++
			return nil
		}
		s.awaitingRel[p.PacketID] = struct{}{}
	}
	switch want := s.next[pub]; {
	case seq == want:
		s.next[pub]++
		s.firsts++
		if s.firsts == uint64(r.cfg.publishers*r.cfg.messages) {
			s.complete.Store(true)
		}
	case seq < want && r.qos == packet.QoS1:
		// At least once: an earlier message again, whose PUBACK was lost. It is a re-delivery and
		// must say so ([MQTT-3.3.1-1]).
		if !p.Dup {
			return fmt.Errorf("message p%d %d delivered again (next expected %d) with DUP 0", pub, seq, want)
		}
		s.dups++
	case seq < want:
		s.dups++
		return fmt.Errorf("message p%d %d delivered twice at QoS 2 (packet id %d, DUP %t; next expected %d)", pub, seq, p.PacketID, p.Dup, want)
	default:
		return fmt.Errorf("message p%d %d arrived before p%d %d: lost or out of order (packet id %d, DUP %t)", pub, seq, pub, want, p.PacketID, p.Dup)
	}
	return nil
}
