package integration

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iotd/iotd/internal/iotdtest"
	"github.com/iotd/iotd/internal/packet"
)

// This file holds the crash tests' own MQTT 3.1.1 client. Paho cannot be told to keep a session's
// state across a broker that vanishes mid-flow and to show what it re-sends, and the test must
// know exactly which messages the broker acknowledged, so the client is written on internal/packet.
// Its session state (in-flight packet ids, QoS 2 receiver state) lives in the test process and
// outlives every connection, as a correct CleanSession=0 client's does.

// errConnLost is returned by pubSession.publish once the connection it was given is gone.
var errConnLost = errors.New("connection lost")

// rawConn is one network connection of the raw client.
type rawConn struct {
	nc net.Conn
	r  *packet.Reader

	wmu  sync.Mutex // serialises writes; guards wbuf
	wbuf []byte
}

// dialRaw connects to addr, sends CONNECT (keep-alive off) and returns the connection and the
// session present flag of an accepting CONNACK.
func dialRaw(addr, clientID string, clean bool) (*rawConn, bool, error) {
	nc, err := net.DialTimeout("tcp", addr, iotdtest.Timeout)
	if err != nil {
		return nil, false, err
	}
	c := &rawConn{nc: nc, r: packet.NewReader(nc, 0)}
	if err := c.send(&packet.Connect{ClientID: clientID, CleanSession: clean}); err != nil {
		nc.Close()
		return nil, false, err
	}
	nc.SetReadDeadline(time.Now().Add(iotdtest.Timeout))
	p, err := c.read()
	nc.SetReadDeadline(time.Time{})
	if err != nil {
		nc.Close()
		return nil, false, fmt.Errorf("%s: waiting for CONNACK: %w", clientID, err)
	}
	ack, ok := p.(*packet.Connack)
	if !ok || ack.ReturnCode != packet.Accepted {
		nc.Close()
		return nil, false, fmt.Errorf("%s: got %v instead of an accepting CONNACK", clientID, p)
	}
	return c, ack.SessionPresent, nil
}

// dialRawUntil is dialRaw retried until it succeeds or d has passed: a broker that has just
// restarted may not take the first attempt.
func dialRawUntil(addr, clientID string, clean bool, d time.Duration) (*rawConn, bool, error) {
	deadline := time.Now().Add(d)
	for {
		c, present, err := dialRaw(addr, clientID, clean)
		if err == nil || time.Now().After(deadline) {
			return c, present, err
		}
		time.Sleep(10 * time.Millisecond) // retry interval inside a deadline, not synchronisation
	}
}

// send writes ps in one write.
func (c *rawConn) send(ps ...packet.Packet) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = c.wbuf[:0]
	for _, p := range ps {
		c.wbuf = p.Append(c.wbuf)
	}
	c.nc.SetWriteDeadline(time.Now().Add(iotdtest.Timeout))
	_, err := c.nc.Write(c.wbuf)
	return err
}

// read returns the next packet; only one goroutine reads a connection.
func (c *rawConn) read() (packet.Packet, error) { return c.r.ReadPacket(packet.Version311) }

// close closes the connection without DISCONNECT, as a crash of the client would.
func (c *rawConn) close() { c.nc.Close() }

// disconnect sends DISCONNECT and closes the connection.
func (c *rawConn) disconnect() {
	c.send(&packet.Disconnect{})
	c.nc.Close()
}

// outMsg is a QoS 1 or 2 PUBLISH of the publisher's session that is not complete yet.
type outMsg struct {
	seq     uint64 // order of the first send: re-sends go in this order
	pid     uint16
	topic   string
	payload string
	qos     packet.QoS
	retain  bool
	rec     bool // QoS 2: PUBREC received, the broker owns the message; PUBREL until PUBCOMP
	conn    int  // the session's connection (1, 2, ...) that first sent it
	resends int  // PUBLISH re-sent after a reconnect
}

func (m *outMsg) publish(dup bool) *packet.Publish {
	return &packet.Publish{Dup: dup, QoS: m.qos, Retain: m.retain, Topic: []byte(m.topic), PacketID: m.pid, Payload: []byte(m.payload)}
}

// ackedMsg is what the test knows of a message the broker acknowledged.
type ackedMsg struct {
	topic   string
	qos     packet.QoS
	pid     uint16
	conn    int // connection of the first send
	ackConn int // connection that brought the PUBACK or PUBREC
	resends int
}

func (m ackedMsg) String() string {
	return fmt.Sprintf("id=%d sent_on_conn=%d acked_on_conn=%d resends=%d", m.pid, m.conn, m.ackConn, m.resends)
}

// pubSession is the publisher's session: it outlives connections, and re-sends what is not
// complete when it is given a new one ([MQTT-4.4.0-1]).
type pubSession struct {
	id     string
	window int  // messages in flight at most
	keep   bool // remember every acknowledged payload (the soak test only counts)

	mu       sync.Mutex
	cond     *sync.Cond // signalled when a message completes or the connection is lost
	conn     *rawConn   // the live connection; nil while there is none
	conns    int        // connections attached so far
	inflight map[uint16]*outMsg
	lastPID  uint16
	seq      uint64
	// published and acknowledged count messages by QoS; a message counts as acknowledged at
	// PUBACK (QoS 1) or PUBREC (QoS 2), when the broker has taken ownership of it.
	published, acknowledged [3]int
	acked                   map[string]ackedMsg // by payload, when keep
	resent                  int                 // PUBLISH and PUBREL re-sent after a reconnect
	stray                   []string            // acknowledgements that match nothing in flight
}

func newPubSession(id string, window int, keep bool) *pubSession {
	p := &pubSession{id: id, window: window, keep: keep, inflight: map[uint16]*outMsg{}, acked: map[string]ackedMsg{}}
	p.cond = sync.NewCond(&p.mu)
	return p
}

// attach makes c the session's connection and re-sends, in their original order, every PUBLISH
// not acknowledged yet (DUP=1, same packet id) and a PUBREL for every PUBREC without PUBCOMP
// ([MQTT-4.4.0-1]). The caller then runs readLoop(c).
func (p *pubSession) attach(c *rawConn) error {
	p.mu.Lock()
	p.conn = c
	p.conns++
	pending := make([]*outMsg, 0, len(p.inflight))
	for _, m := range p.inflight {
		pending = append(pending, m)
	}
	slices.SortFunc(pending, func(a, b *outMsg) int { return cmp.Compare(a.seq, b.seq) })
	var ps []packet.Packet
	for _, m := range pending {
		if m.rec {
			ps = append(ps, &packet.Pubrel{PacketID: m.pid})
		} else {
			m.resends++
			ps = append(ps, m.publish(true))
		}
	}
	p.resent += len(ps)
	p.mu.Unlock()
	if len(ps) == 0 {
		return nil
	}
	return c.send(ps...)
}

// lost marks c as gone and wakes a publish waiting on the window.
func (p *pubSession) lost(c *rawConn) {
	p.mu.Lock()
	if p.conn == c {
		p.conn = nil
	}
	p.cond.Broadcast()
	p.mu.Unlock()
}

// readLoop handles the broker's acknowledgements on c until c fails.
func (p *pubSession) readLoop(c *rawConn) {
	defer p.lost(c)
	for {
		pk, err := c.read()
		if err != nil {
			return
		}
		var reply packet.Packet
		p.mu.Lock()
		switch pk := pk.(type) {
		case *packet.Puback:
			if m := p.inflight[pk.PacketID]; m != nil && m.qos == packet.QoS1 {
				delete(p.inflight, pk.PacketID)
				p.ackedLocked(m)
			} else {
				p.strayLocked(pk)
			}
		case *packet.Pubrec:
			if m := p.inflight[pk.PacketID]; m != nil && m.qos == packet.QoS2 {
				if !m.rec {
					m.rec = true
					p.ackedLocked(m)
				}
				reply = &packet.Pubrel{PacketID: pk.PacketID}
			} else {
				p.strayLocked(pk)
			}
		case *packet.Pubcomp:
			if m := p.inflight[pk.PacketID]; m != nil && m.rec {
				delete(p.inflight, pk.PacketID)
			} else {
				p.strayLocked(pk)
			}
		default:
			p.strayLocked(pk)
		}
		p.cond.Broadcast()
		p.mu.Unlock()
		if reply != nil {
			if c.send(reply) != nil {
				return
			}
		}
	}
}

func (p *pubSession) ackedLocked(m *outMsg) {
	p.acknowledged[m.qos]++
	if p.keep {
		p.acked[m.payload] = ackedMsg{topic: m.topic, qos: m.qos, pid: m.pid, conn: m.conn, ackConn: p.conns, resends: m.resends}
	}
}

func (p *pubSession) strayLocked(pk packet.Packet) {
	if len(p.stray) < 20 {
		p.stray = append(p.stray, fmt.Sprintf("%T%+v", pk, pk))
	}
}

// publish sends a new message on c once the window has room. It returns errConnLost, or the
// write's error, when c is gone; the message then stays in flight and is re-sent by the next
// attach.
func (p *pubSession) publish(c *rawConn, topic, payload string, qos packet.QoS, retain bool) error {
	p.mu.Lock()
	for len(p.inflight) >= p.window && p.conn == c {
		p.cond.Wait()
	}
	if p.conn != c {
		p.mu.Unlock()
		return errConnLost
	}
	for {
		p.lastPID++
		if _, busy := p.inflight[p.lastPID]; p.lastPID != 0 && !busy {
			break
		}
	}
	p.seq++
	m := &outMsg{seq: p.seq, pid: p.lastPID, topic: topic, payload: payload, qos: qos, retain: retain, conn: p.conns}
	p.inflight[m.pid] = m
	p.published[qos]++
	p.mu.Unlock()
	return c.send(m.publish(false))
}

// idle reports whether every message published is complete.
func (p *pubSession) idle() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.inflight) == 0
}

// subSession is a subscriber's session: one filter at one QoS, and for QoS 2 the packet ids
// delivered and not yet released, which survive reconnects.
type subSession struct {
	id         string
	filter     string
	qos        packet.QoS
	wantRetain bool // the RETAIN flag every message must carry
	keep       bool // remember every payload (the soak test only counts)

	subacked chan *packet.Suback

	mu         sync.Mutex
	got        map[string]int // deliveries by payload, when keep
	deliveries int
	awaitRel   map[uint16]string // QoS 2: payload delivered under each id that awaits its PUBREL
	suppressed int               // QoS 2 PUBLISH packets not delivered again (method B)
	bad        []string          // what a correct broker never sends
}

func newSubSession(id, filter string, qos packet.QoS, keep bool) *subSession {
	return &subSession{id: id, filter: filter, qos: qos, keep: keep, subacked: make(chan *packet.Suback, 1),
		got: map[string]int{}, awaitRel: map[uint16]string{}}
}

// matches reports whether topic matches the filter; the tests use plain names and one trailing #.
func (s *subSession) matches(topic string) bool {
	if prefix, ok := strings.CutSuffix(s.filter, "#"); ok {
		return strings.HasPrefix(topic, prefix)
	}
	return topic == s.filter
}

// subscribe sends the session's one SUBSCRIBE on c, whose serve loop runs, and waits for the SUBACK.
func (s *subSession) subscribe(c *rawConn) error {
	sub := &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: s.filter, QoS: s.qos}}}
	if err := c.send(sub); err != nil {
		return err
	}
	select {
	case ack := <-s.subacked:
		if len(ack.ReturnCodes) != 1 || ack.ReturnCodes[0] != byte(s.qos) {
			return fmt.Errorf("%s: SUBACK %v for %s at QoS %d", s.id, ack.ReturnCodes, s.filter, s.qos)
		}
		return nil
	case <-time.After(iotdtest.Timeout):
		return fmt.Errorf("%s: no SUBACK within %v", s.id, iotdtest.Timeout)
	}
}

// serve receives on c until it fails. QoS 2 follows method B of MQTT 3.1.1 section 4.3.3: a
// PUBLISH whose id awaits its PUBREL is not delivered again, and every PUBLISH gets a PUBREC
// ([MQTT-4.3.3-2]).
func (s *subSession) serve(c *rawConn) {
	for {
		pk, err := c.read()
		if err != nil {
			return
		}
		var reply packet.Packet
		s.mu.Lock()
		switch pk := pk.(type) {
		case *packet.Publish:
			if !s.matches(string(pk.Topic)) || pk.QoS != s.qos || pk.Retain != s.wantRetain {
				s.badLocked("%s: PUBLISH %s qos=%d retain=%t", s.id, pk.Topic, pk.QoS, pk.Retain)
			}
			switch pk.QoS {
			case packet.QoS0:
				s.deliverLocked(pk)
			case packet.QoS1:
				s.deliverLocked(pk)
				reply = &packet.Puback{PacketID: pk.PacketID}
			case packet.QoS2:
				if prev, ok := s.awaitRel[pk.PacketID]; !ok {
					s.deliverLocked(pk)
					s.awaitRel[pk.PacketID] = string(pk.Payload)
				} else {
					s.suppressed++
					if prev != string(pk.Payload) {
						// The broker reused an id whose exchange is not complete: this message
						// is lost to a receiver that follows method B.
						s.badLocked("MQTT-2.3.1-4 %s: PUBLISH id %d (dup=%t) carries %q while %q, sent under that id, awaits its PUBREL",
							s.id, pk.PacketID, pk.Dup, pk.Payload, prev)
					}
				}
				reply = &packet.Pubrec{PacketID: pk.PacketID}
			}
		case *packet.Pubrel:
			delete(s.awaitRel, pk.PacketID)
			reply = &packet.Pubcomp{PacketID: pk.PacketID}
		case *packet.Suback:
			select {
			case s.subacked <- pk:
			default:
				s.badLocked("%s: unexpected SUBACK %+v", s.id, pk)
			}
		default:
			s.badLocked("%s: unexpected %T %+v", s.id, pk, pk)
		}
		s.mu.Unlock()
		if reply != nil && c.send(reply) != nil {
			return
		}
	}
}

func (s *subSession) deliverLocked(p *packet.Publish) {
	s.deliveries++
	if s.keep {
		s.got[string(p.Payload)]++
	}
}

func (s *subSession) badLocked(format string, args ...any) {
	if len(s.bad) < 20 {
		s.bad = append(s.bad, fmt.Sprintf(format, args...))
	}
}

// count returns the deliveries of payload.
func (s *subSession) count(payload string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[payload]
}

// total returns the number of deliveries.
func (s *subSession) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deliveries
}

// pollUntil polls cond until it is true or d has passed, and reports which.
func pollUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
	return true
}

// startIotdFor is startIotd for a broker that must outlive procTimeout (the long soak, the full
// recovery figures): the process is bounded by limit instead.
func startIotdFor(t *testing.T, limit time.Duration, args ...string) (*proc, *iotdtest.Env) {
	t.Helper()
	if limit <= procTimeout {
		return startIotd(t, args...)
	}
	needIotd(t)
	p := startProcLimit(t, limit, nil, nil, iotdBin, withDataDir(t, args)...)
	pos := 0
	line := p.waitLine(t, p.stderr, &pos, "the listening line", listeningRE.MatchString)
	addr := listeningRE.FindStringSubmatch(line)[1]
	p.waitLine(t, p.stderr, &pos, "the started line", func(l string) bool { return strings.Contains(l, `msg="iotd started"`) })
	return p, &iotdtest.Env{Addr: addr}
}

// stopIotd sends sig to p and waits until it has exited; after SIGINT it must exit with 0.
func stopIotd(t *testing.T, p *proc, sig syscall.Signal) {
	t.Helper()
	p.signal(sig)
	select {
	case <-p.exited:
	case <-time.After(procTimeout):
		t.Fatalf("iotd still running %v after %v\nstderr:\n%s", procTimeout, sig, p.stderr)
	}
	if sig == syscall.SIGINT {
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("iotd exited with %d after SIGINT\nstderr:\n%s", code, p.stderr)
		}
	}
}

var (
	storeOpenedRE = regexp.MustCompile(`msg="store opened"`)
	tookRE        = regexp.MustCompile(` took=(\S+)`)
	sessionsRE    = regexp.MustCompile(` sessions=(\d+)`)
	retainedRE    = regexp.MustCompile(` retained=(\d+)`)
)

// storeOpened is what the "store opened" line of a start says.
type storeOpened struct {
	took               time.Duration
	sessions, retained int
}

// readStoreOpened finds the "store opened" line p logged (it precedes "iotd started").
func readStoreOpened(t *testing.T, p *proc) storeOpened {
	t.Helper()
	for line := range strings.SplitSeq(p.stderr.String(), "\n") {
		if !storeOpenedRE.MatchString(line) {
			continue
		}
		var so storeOpened
		var err error
		m := tookRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("no took= in %q", line)
		}
		if so.took, err = time.ParseDuration(m[1]); err != nil {
			t.Fatalf("took= in %q: %v", line, err)
		}
		for _, f := range []struct {
			re  *regexp.Regexp
			dst *int
		}{{sessionsRE, &so.sessions}, {retainedRE, &so.retained}} {
			m := f.re.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("no %v in %q", f.re, line)
			}
			*f.dst, _ = strconv.Atoi(m[1])
		}
		return so
	}
	t.Fatalf("iotd logged no store opened line:\n%s", p.stderr)
	return storeOpened{}
}

// dirSize returns the total size of the regular files under dir; files removed while it walks
// (compactions, checkpoints) are skipped.
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// envInt reads a positive integer from the environment variable name, or returns def.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// mib formats a byte count in MiB, or in KiB below one MiB.
func mib(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
}
