package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotd/iotd/internal/auth"
	"github.com/iotd/iotd/internal/packet"
)

// fakeConn is an Outbound that records what the broker queues, decoded.
type fakeConn struct {
	mu      sync.Mutex
	pending []byte
	got     []packet.Packet
	closed  error
	limit   int // pending bytes over which droppable packets are refused; 0 = none
	hard    bool
	resumed int
}

func (f *fakeConn) Enqueue(b []byte, droppable bool) (ok, schedule bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed != nil || f.hard || (droppable && f.limit > 0 && len(f.pending)+len(b) > f.limit) {
		return false, false
	}
	schedule = len(f.pending) == 0
	f.pending = append(f.pending, b...)
	return true, schedule
}

func (f *fakeConn) Flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.pending
	for len(b) > 0 {
		h, body, n, err := packet.Frame(b, 0)
		if err != nil {
			panic(err)
		}
		p, err := packet.Decode(h, body, packet.Version311)
		if err != nil {
			panic(err)
		}
		if pub, ok := p.(*packet.Publish); ok {
			pub.Topic, pub.Payload = bytes.Clone(pub.Topic), bytes.Clone(pub.Payload)
		}
		f.got = append(f.got, p)
		b = b[n:]
	}
	f.pending = nil
}

func (f *fakeConn) Close(reason error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed == nil {
		f.closed = reason
	}
}

func (f *fakeConn) Resume() {
	f.mu.Lock()
	f.resumed++
	f.mu.Unlock()
}

func (f *fakeConn) take() []packet.Packet {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := f.got
	f.got = nil
	return g
}

func (f *fakeConn) publishes(t *testing.T) []*packet.Publish {
	t.Helper()
	var out []*packet.Publish
	for _, p := range f.take() {
		if pub, ok := p.(*packet.Publish); ok {
			out = append(out, pub)
		}
	}
	return out
}

type env struct {
	t  *testing.T
	b  *Broker
	bt Batch
}

func newEnv(t *testing.T, o Options) *env { return &env{t: t, b: New(o)} }

func (e *env) connect(id string, clean bool, will *packet.Will) (*Client, *fakeConn, *packet.Connack) {
	e.t.Helper()
	fc := &fakeConn{}
	cl, code := e.b.Connect(context.Background(), ConnectRequest{Connect: &packet.Connect{ClientID: id, CleanSession: clean, Will: will}, Conn: fc}, &e.bt)
	if code != packet.Accepted {
		e.t.Fatalf("connect %q: %v", id, code)
	}
	e.bt.Flush()
	ps := fc.take()
	ack, ok := ps[0].(*packet.Connack)
	if !ok {
		e.t.Fatalf("first packet %T, want CONNACK", ps[0])
	}
	fc.got = ps[1:]
	return cl, fc, ack
}

func (e *env) sub(cl *Client, qos packet.QoS, filters ...string) {
	e.t.Helper()
	s := &packet.Subscribe{PacketID: 1}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, packet.Subscription{Filter: f, QoS: qos})
	}
	if err := e.b.Subscribe(cl, s, &e.bt); err != nil {
		e.t.Fatal(err)
	}
	e.bt.Flush()
}

func (e *env) pub(cl *Client, topic, payload string, qos packet.QoS, retain bool) {
	e.b.Publish(cl, &packet.Publish{Topic: []byte(topic), Payload: []byte(payload), QoS: qos, Retain: retain, PacketID: 1}, &e.bt)
	e.bt.Flush()
}

func TestConnectRules(t *testing.T) {
	e := newEnv(t, Options{})
	if _, code := e.b.Connect(context.Background(), ConnectRequest{Connect: &packet.Connect{}, Conn: &fakeConn{}}, &e.bt); code != packet.RefusedIdentifierRejected {
		t.Fatalf("MQTT-3.1.3-8: got %v", code)
	}
	cl, code := e.b.Connect(context.Background(), ConnectRequest{Connect: &packet.Connect{CleanSession: true}, Conn: &fakeConn{}}, &e.bt)
	if code != packet.Accepted || len(cl.ClientID()) < 10 || cl.Key() != "__client_"+cl.ClientID() {
		t.Fatalf("MQTT-3.1.3-6: got %v %q", code, cl.ClientID())
	}
}

type authFunc func(*auth.Credentials) error

func (f authFunc) Authenticate(_ context.Context, c *auth.Credentials) error { return f(c) }

type denyTopics map[string]bool

func (d denyTopics) Authorize(_ *auth.Client, a auth.Access, topic string) bool {
	return !d[a.String()+":"+topic]
}

func TestAuthHooks(t *testing.T) {
	e := newEnv(t, Options{
		Authenticator: authFunc(func(c *auth.Credentials) error {
			switch c.Username {
			case "bad":
				return auth.ErrBadCredentials
			case "no":
				return auth.ErrNotAuthorized
			case "err":
				return errors.New("backend down")
			}
			return nil
		}),
		Authorizer: denyTopics{"write:secret": true, "read:hidden/#": true, "read:hidden/x": true},
		Logger:     slog.New(slog.DiscardHandler),
	})
	for user, want := range map[string]packet.ConnackCode{"bad": packet.RefusedBadUsernameOrPassword, "no": packet.RefusedNotAuthorized, "err": packet.RefusedServerUnavailable} {
		_, code := e.b.Connect(context.Background(), ConnectRequest{Connect: &packet.Connect{ClientID: "x", Username: user, HasUsername: true}, Conn: &fakeConn{}}, &e.bt)
		if code != want {
			t.Errorf("user %q: got %v, want %v", user, code, want)
		}
	}
	sub, sc, _ := e.connect("sub", true, nil)
	s := &packet.Subscribe{PacketID: 3, Subscriptions: []packet.Subscription{{Filter: "hidden/#"}, {Filter: "#", QoS: 1}}}
	if err := e.b.Subscribe(sub, s, &e.bt); err != nil {
		t.Fatal(err)
	}
	e.bt.Flush()
	if ack := sc.take()[0].(*packet.Suback); !bytes.Equal(ack.ReturnCodes, []byte{packet.SubackFailure, 1}) {
		t.Fatalf("SUBACK %v", ack.ReturnCodes)
	}
	pub, _, _ := e.connect("pub", true, nil)
	e.pub(pub, "secret", "x", 0, false)   // write denied: not routed
	e.pub(pub, "hidden/x", "y", 0, false) // read denied for the subscriber
	e.pub(pub, "open", "z", 1, false)
	got := sc.publishes(t)
	if len(got) != 1 || string(got[0].Payload) != "z" {
		t.Fatalf("got %v", got)
	}
}

func TestRouteAllocatesNothing(t *testing.T) {
	e := newEnv(t, Options{})
	pub, _, _ := e.connect("pub", true, nil)
	for _, id := range []string{"a", "b", "c"} {
		cl, fc, _ := e.connect(id, true, nil)
		e.sub(cl, 0, "dev/+/state", "dev/#")
		fc.pending = make([]byte, 0, 1<<20)
	}
	p := &packet.Publish{Topic: []byte("dev/1/state"), Payload: []byte("0123456789")}
	e.b.Publish(pub, p, &e.bt)
	allocs := testing.AllocsPerRun(1000, func() {
		e.b.Publish(pub, p, &e.bt)
		for _, o := range e.bt.touched {
			o.(*fakeConn).pending = o.(*fakeConn).pending[:0]
		}
		e.bt.touched = e.bt.touched[:0]
	})
	if allocs != 0 {
		t.Fatalf("routing a QoS 0 message to 3 subscribers allocates %v times, want 0", allocs)
	}
}

func TestOfflineAndDrops(t *testing.T) {
	e := newEnv(t, Options{MaxQueued: 2})
	cl, fc, _ := e.connect("p", false, nil)
	e.sub(cl, 1, "t")
	e.b.Disconnect(cl, fc, true)
	pub, _, _ := e.connect("pub", true, nil)
	t.Run("MQTT-3.1.2-5 MQTT-4.5.0-1 QoS 1 kept for the offline session up to the limit, QoS 0 not", func(t *testing.T) {
		e.pub(pub, "t", "offline1", 1, false)
		e.pub(pub, "t", "offline0", 0, false)
		e.pub(pub, "t", "offline2", 2, false) // delivered at the granted QoS 1
		e.pub(pub, "t", "over the limit", 1, false)
		if st := e.b.Stats(); st.Dropped != 2 || st.Sessions != 2 {
			t.Fatalf("stats %+v", st)
		}
		// Disconnect of a connection that is no longer bound does nothing.
		e.b.Disconnect(cl, fc, false)
		_, fc2, ack := e.connect("p", false, nil)
		if !ack.SessionPresent {
			t.Fatal("session not present")
		}
		got := fc2.publishes(t)
		if len(got) != 2 || string(got[0].Payload) != "offline1" || string(got[1].Payload) != "offline2" || got[1].QoS != 1 {
			t.Fatalf("got %v", got)
		}
	})
	t.Run("a negative MaxQueued keeps nothing", func(t *testing.T) {
		e := newEnv(t, Options{MaxQueued: -1})
		cl, fc, _ := e.connect("p", false, nil)
		e.sub(cl, 1, "t")
		e.b.Disconnect(cl, fc, true)
		pub, _, _ := e.connect("pub", true, nil)
		e.pub(pub, "t", "x", 1, false)
		if st := e.b.Stats(); st.Dropped != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
	// A hard-refusing connection counts drops.
	cl2, fc2, _ := e.connect("q", true, nil)
	e.sub(cl2, 0, "t")
	fc2.hard = true
	before := e.b.Stats().Dropped
	e.pub(pub, "t", "x", 0, false)
	if st := e.b.Stats(); st.Dropped <= before {
		t.Fatalf("stats %+v", st)
	}
}

func TestResumedSessionResendsPubrel(t *testing.T) {
	e := newEnv(t, Options{})
	cl, fc, _ := e.connect("p", false, nil)
	e.sub(cl, 2, "t")
	pub, _, _ := e.connect("pub", true, nil)
	e.pub(pub, "t", "m", 2, false)
	p := fc.publishes(t)[0]
	e.b.Ack(cl, packet.TypePubrec, p.PacketID, &e.bt)
	e.bt.Flush()
	if r, ok := fc.take()[0].(*packet.Pubrel); !ok || r.PacketID != p.PacketID {
		t.Fatal("no PUBREL")
	}
	// Reconnect: MQTT-4.4.0-1 the PUBREL is re-sent.
	_, fc2, ack := e.connect("p", false, nil)
	if !ack.SessionPresent {
		t.Fatal("session not present")
	}
	if fc.closed != ErrTakenOver {
		t.Fatalf("old conn closed with %v", fc.closed)
	}
	if r, ok := fc2.take()[0].(*packet.Pubrel); !ok || r.PacketID != p.PacketID {
		t.Fatal("PUBREL not re-sent")
	}
	e.b.Ack(cl, packet.TypePubcomp, p.PacketID, &e.bt)
	e.b.Ack(cl, packet.TypePuback, 77, &e.bt) // unknown: ignored
}

func TestInvalidFilters(t *testing.T) {
	e := newEnv(t, Options{})
	cl, _, _ := e.connect("c", true, nil)
	if err := e.b.Subscribe(cl, &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "a/#/b"}}}, &e.bt); !errors.Is(err, ErrInvalidFilter) {
		t.Fatalf("subscribe: %v", err)
	}
	if err := e.b.Unsubscribe(cl, &packet.Unsubscribe{PacketID: 1, Filters: []string{"a+"}}, &e.bt); !errors.Is(err, ErrInvalidFilter) {
		t.Fatalf("unsubscribe: %v", err)
	}
}

func TestWillOnDisconnect(t *testing.T) {
	e := newEnv(t, Options{})
	w, wc, _ := e.connect("w", true, nil)
	e.sub(w, 0, "will")
	cl, fc, _ := e.connect("c", true, &packet.Will{Topic: "will", Payload: []byte("bye")})
	e.b.Disconnect(cl, fc, false)
	if got := wc.publishes(t); len(got) != 1 || string(got[0].Payload) != "bye" {
		t.Fatalf("got %v", got)
	}
	cl, fc, _ = e.connect("c", true, &packet.Will{Topic: "will", Payload: []byte("bye")})
	e.b.DiscardWill(cl)
	e.b.Disconnect(cl, fc, false)
	if got := wc.publishes(t); len(got) != 0 {
		t.Fatalf("will after DiscardWill: %v", got)
	}
	if st := e.b.Stats(); st.Sessions != 1 || st.Subscriptions != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func BenchmarkFanOut1000(b *testing.B) {
	e := &env{b: New(Options{})}
	var conns []*fakeConn
	for i := 0; i < 1000; i++ {
		fc := &fakeConn{pending: make([]byte, 0, 1<<16)}
		cl, _ := e.b.Connect(context.Background(), ConnectRequest{Connect: &packet.Connect{ClientID: string(rune('a'+i%26)) + string(rune(i)), CleanSession: true}, Conn: fc}, &e.bt)
		e.b.Subscribe(cl, &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "fan/+"}}}, &e.bt)
		conns = append(conns, fc)
	}
	e.bt.touched = e.bt.touched[:0]
	pub, _ := e.b.Connect(context.Background(), ConnectRequest{Connect: &packet.Connect{ClientID: "pub", CleanSession: true}, Conn: &fakeConn{}}, &e.bt)
	p := &packet.Publish{Topic: []byte("fan/1"), Payload: make([]byte, 64)}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.b.Publish(pub, p, &e.bt)
		for _, fc := range conns {
			fc.pending = fc.pending[:0]
		}
		e.bt.touched = e.bt.touched[:0]
	}
}

func TestRetainedAndUnsubscribe(t *testing.T) {
	e := newEnv(t, Options{MaxRetained: 2, MaxRetainedPayload: 8})
	pub, _, _ := e.connect("pub", true, nil)
	e.pub(pub, "r/1", "one", 1, true)
	e.pub(pub, "r/2", "two", 0, true)
	e.pub(pub, "r/3", "three", 0, true)            // over the count
	e.pub(pub, "r/1", "too long payload", 0, true) // over the size: r/1 keeps "one"
	e.pub(pub, "r/2", "", 0, true)                 // deletes
	if st := e.b.Stats(); st.Retained != 1 || st.RetainRefused != 2 {
		t.Fatalf("stats %+v", st)
	}
	cl, fc, _ := e.connect("s", true, nil)
	e.sub(cl, 2, "r/#")
	got := fc.take()
	if len(got) != 2 {
		t.Fatalf("got %d packets, want SUBACK and one retained", len(got))
	}
	if p := got[1].(*packet.Publish); !p.Retain || p.QoS != 1 || string(p.Payload) != "one" {
		t.Fatalf("retained %+v", p)
	}
	if err := e.b.Unsubscribe(cl, &packet.Unsubscribe{PacketID: 4, Filters: []string{"r/#", "none"}}, &e.bt); err != nil {
		t.Fatal(err)
	}
	e.bt.Flush()
	if u, ok := fc.take()[0].(*packet.Unsuback); !ok || u.PacketID != 4 {
		t.Fatal("no UNSUBACK")
	}
	e.pub(pub, "r/1", "live", 0, false)
	if got := fc.publishes(t); len(got) != 0 {
		t.Fatalf("delivered after unsubscribe: %v", got)
	}
	if !e.b.ReceiveQoS2(cl, 9) || e.b.ReceiveQoS2(cl, 9) {
		t.Fatal("ReceiveQoS2: want new then duplicate")
	}
	e.b.Pubrel(cl, 9)
	if !e.b.ReceiveQoS2(cl, 9) {
		t.Fatal("after Pubrel the id is new")
	}
}

func TestPacketIDExhaustionQueues(t *testing.T) {
	e := newEnv(t, Options{MaxInflight: 70000, MaxQueued: 10})
	cl, fc, _ := e.connect("s", true, nil)
	e.sub(cl, 1, "t")
	pub, _, _ := e.connect("pub", true, nil)
	for i := 0; i < 65536; i++ {
		payload := []byte(nil)
		if i == 65535 {
			payload = []byte("queued")
		}
		e.b.Publish(pub, &packet.Publish{Topic: []byte("t"), QoS: 1, PacketID: 1, Payload: payload}, &e.bt)
		if i%4096 == 0 {
			e.bt.Flush()
			fc.take()
		}
	}
	e.bt.Flush()
	fc.take()
	if st := e.b.Stats(); st.Dropped != 0 {
		t.Fatalf("dropped %d, want 0: the 65,536th waits for a free id", st.Dropped)
	}
	e.b.Ack(cl, packet.TypePuback, 4242, &e.bt)
	e.bt.Flush()
	got := fc.publishes(t)
	if len(got) != 1 || got[0].PacketID != 4242 || string(got[0].Payload) != "queued" {
		t.Fatalf("after freeing id 4242 got %v", got)
	}
}

func TestInflightWindow(t *testing.T) {
	e := newEnv(t, Options{MaxInflight: 2})
	cl, fc, _ := e.connect("s", false, nil)
	e.sub(cl, 2, "t")
	pub, _, _ := e.connect("pub", true, nil)
	for i := 0; i < 5; i++ {
		e.pub(pub, "t", fmt.Sprint(i), packet.QoS(1+i%2), false)
	}
	got := fc.publishes(t)
	if len(got) != 2 {
		t.Fatalf("window 2: %d sent", len(got))
	}
	// MQTT-4.6.0-5: acknowledging opens the window and the queue drains in order.
	var all []string
	for len(got) > 0 {
		p := got[0]
		got = got[1:]
		all = append(all, string(p.Payload))
		if p.QoS == 1 {
			e.b.Ack(cl, packet.TypePuback, p.PacketID, &e.bt)
		} else {
			e.b.Ack(cl, packet.TypePubrec, p.PacketID, &e.bt)
			e.b.Ack(cl, packet.TypePubcomp, p.PacketID, &e.bt)
		}
		e.bt.Flush()
		got = append(got, fc.publishes(t)...)
	}
	if strings.Join(all, ",") != "0,1,2,3,4" {
		t.Fatalf("order %v", all)
	}
}

func TestQueueQoS0AndBytes(t *testing.T) {
	e := newEnv(t, Options{QueueQoS0: true, MaxQueuedBytes: 10})
	cl, fc, _ := e.connect("p", false, nil)
	e.sub(cl, 1, "t")
	e.b.Disconnect(cl, fc, true)
	pub, _, _ := e.connect("pub", true, nil)
	e.pub(pub, "t", "zero", 0, false)    // 5 bytes with the topic
	e.pub(pub, "t", "one", 1, false)     // 4 bytes: 9 in all
	e.pub(pub, "t", "refused", 1, false) // over 10 bytes
	if st := e.b.Stats(); st.Dropped != 1 {
		t.Fatalf("stats %+v", st)
	}
	_, fc2, _ := e.connect("p", false, nil)
	got := fc2.publishes(t)
	if len(got) != 2 || string(got[0].Payload) != "zero" || got[0].QoS != 0 || string(got[1].Payload) != "one" || got[1].QoS != 1 {
		t.Fatalf("got %v", got)
	}
}

func TestRetryAndExpiry(t *testing.T) {
	e := newEnv(t, Options{RetryInterval: time.Second, RetryMaxInterval: 4 * time.Second, SessionExpiry: time.Hour})
	cl, fc, _ := e.connect("s", false, nil)
	e.sub(cl, 2, "t")
	pub, _, _ := e.connect("pub", true, nil)
	e.pub(pub, "t", "x", 1, false)
	first := fc.publishes(t)[0]
	now := e.b.now()
	e.b.housekeep(now, &e.bt)
	if got := fc.publishes(t); len(got) != 0 {
		t.Fatalf("re-sent before the interval: %v", got)
	}
	e.b.housekeep(now+int64(time.Second), &e.bt)
	got := fc.publishes(t)
	if len(got) != 1 || !got[0].Dup || got[0].PacketID != first.PacketID {
		t.Fatalf("MQTT-3.3.1-1 retry with DUP: got %v", got)
	}
	e.b.housekeep(now+int64(2*time.Second), &e.bt) // backoff: next retry 2 s after the first
	if got := fc.publishes(t); len(got) != 0 {
		t.Fatalf("retried before the backoff: %v", got)
	}
	e.b.housekeep(now+int64(3*time.Second), &e.bt)
	if got := fc.publishes(t); len(got) != 1 || e.b.Stats().Retried != 2 {
		t.Fatalf("second retry: %v, stats %+v", got, e.b.Stats())
	}
	e.b.Disconnect(cl, fc, false)
	e.b.housekeep(e.b.now()+int64(30*time.Minute), &e.bt)
	if st := e.b.Stats(); st.Sessions != 2 || st.Expired != 0 {
		t.Fatalf("expired too early: %+v", st)
	}
	e.b.housekeep(e.b.now()+int64(time.Hour), &e.bt)
	if st := e.b.Stats(); st.Sessions != 1 || st.Expired != 1 || st.Subscriptions != 0 {
		t.Fatalf("not expired: %+v", st)
	}
	// A reconnect after expiry starts a new session.
	if _, _, ack := e.connect("s", false, nil); ack.SessionPresent {
		t.Fatal("expired session still present")
	}
}

func TestRunStops(t *testing.T) {
	b := New(Options{SessionExpiry: time.Hour, RetryInterval: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()
	cancel()
	<-done
}

// withCongested marks cl congested, as a delivery over the pause mark does.
func (bt *Batch) withCongested(cl *Client) *Batch {
	bt.congested = append(bt.congested, cl)
	return bt
}

func TestThrottle(t *testing.T) {
	e := newEnv(t, Options{MaxInflight: 1, MaxQueued: 8}) // pause at 4 queued, resume at 2
	sub, sc, _ := e.connect("sub", true, nil)
	e.sub(sub, 1, "t")
	pub, pc, _ := e.connect("pub", true, nil)
	for i := 0; i < 5; i++ { // 1 in flight, 4 queued
		e.b.Publish(pub, &packet.Publish{Topic: []byte("t"), QoS: 1, PacketID: 1}, &e.bt)
	}
	if !e.bt.Congested() {
		t.Fatal("queue at the pause mark: not congested")
	}
	if !e.b.Throttle(pub, pc, &e.bt) || e.bt.Congested() {
		t.Fatal("publisher not throttled, or the list not cleared")
	}
	e.bt.Flush()
	// Acknowledging drains the queue; at 2 queued the publisher is resumed.
	for i := 0; i < 2; i++ {
		p := sc.publishes(t)
		e.b.Ack(sub, packet.TypePuback, p[0].PacketID, &e.bt)
		e.bt.Flush()
	}
	if pc.resumed != 1 {
		t.Fatalf("resumed %d times, want 1", pc.resumed)
	}
	t.Run("a publisher resumed by the server's timeout is throttled again", func(t *testing.T) {
		for i := 0; i < 3; i++ { // back over the pause mark
			e.b.Publish(pub, &packet.Publish{Topic: []byte("t"), QoS: 1, PacketID: 1}, &e.bt)
		}
		if !e.b.Throttle(pub, pc, &e.bt) || !e.b.Throttle(pub, pc, e.bt.withCongested(sub)) {
			t.Fatal("a publisher already waiting must still be told to pause")
		}
		e.bt.Flush()
	})
	t.Run("a stuck subscriber does not throttle", func(t *testing.T) {
		e := newEnv(t, Options{MaxInflight: 1, MaxQueued: 8})
		sub, _, _ := e.connect("sub", true, nil)
		e.sub(sub, 1, "t")
		pub, _, _ := e.connect("pub", true, nil)
		e.b.Publish(pub, &packet.Publish{Topic: []byte("t"), QoS: 1, PacketID: 1}, &e.bt)
		sub.mu.Lock()
		sub.sess.Inflight()[0].SentAt -= 2 * stuckAfter // unacknowledged for too long
		sub.mu.Unlock()
		for i := 0; i < 4; i++ {
			e.b.Publish(pub, &packet.Publish{Topic: []byte("t"), QoS: 1, PacketID: 1}, &e.bt)
		}
		if e.bt.Congested() {
			t.Fatal("congested by a subscriber that stopped acknowledging")
		}
	})
	t.Run("a publisher never waits for itself; a subscriber that leaves wakes its waiters", func(t *testing.T) {
		e := newEnv(t, Options{MaxInflight: 1, MaxQueued: 8})
		self, fc, _ := e.connect("self", true, nil)
		e.sub(self, 1, "t")
		other := &fakeConn{}
		for i := 0; i < 5; i++ {
			e.b.Publish(self, &packet.Publish{Topic: []byte("t"), QoS: 1, PacketID: 1}, &e.bt)
		}
		if e.b.Throttle(self, fc, &e.bt) {
			t.Fatal("throttled by its own subscription")
		}
		for i := 0; i < 5; i++ {
			e.b.Publish(self, &packet.Publish{Topic: []byte("t"), QoS: 1, PacketID: 1}, &e.bt)
		}
		if !e.b.Throttle(nil, other, &e.bt) {
			t.Fatal("not throttled")
		}
		e.b.Disconnect(self, fc, true)
		if other.resumed != 1 {
			t.Fatal("not resumed when the subscriber left")
		}
	})
}

func TestWillTopicMustBeWritable(t *testing.T) {
	deny := denyTopics{"write:will/secret": true}
	e := newEnv(t, Options{Authorizer: deny})
	_, code := e.b.Connect(context.Background(), ConnectRequest{Connect: &packet.Connect{ClientID: "w", CleanSession: true,
		Will: &packet.Will{Topic: "will/secret", Payload: []byte("x")}}, Conn: &fakeConn{}}, &e.bt)
	if code != packet.RefusedNotAuthorized {
		t.Fatalf("CONNECT with a will the client may not publish: %v, want not authorized", code)
	}
	w2, w2c, _ := e.connect("w2", true, &packet.Will{Topic: "will/open", Payload: []byte("x")})
	r, rc, _ := e.connect("reader", true, nil)
	e.sub(r, packet.QoS0, "will/#")
	rc.take()
	// A reload takes the right away after CONNECT: the will is not published.
	deny["write:will/open"] = true
	e.b.Disconnect(w2, w2c, false)
	e.bt.Flush()
	if got := rc.publishes(t); len(got) != 0 {
		t.Fatalf("will published to a topic no longer writable: %v", got)
	}
}

func TestRevalidate(t *testing.T) {
	var seen []string
	e := newEnv(t, Options{Authenticator: authFunc(func(*auth.Credentials) error { return nil })})
	a, ac, _ := e.connect("a", false, nil)
	_, bc, _ := e.connect("b", true, nil)
	n := e.b.Revalidate(func(c *Connected) bool {
		seen = append(seen, c.ClientID)
		return c.ClientID != "a"
	}, errors.New("revoked"))
	if n != 1 || ac.closed == nil || bc.closed != nil || len(seen) != 2 {
		t.Fatalf("closed %d (a: %v, b: %v), asked about %v", n, ac.closed, bc.closed, seen)
	}
	e.b.Disconnect(a, ac, false)
	if n := e.b.Revalidate(func(*Connected) bool { return false }, errors.New("x")); n != 1 {
		t.Fatalf("offline sessions are not asked about: closed %d, want 1 (b)", n)
	}
}
