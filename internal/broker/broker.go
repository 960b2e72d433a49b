// Package broker is one MQTT routing domain: the registry of client sessions and their takeover,
// the subscription index, retained messages, wills and fan-out.
//
// The broker does no network I/O. The server hands it decoded packets together with an Outbound,
// the broker's view of a connection, and the broker appends encoded packets to the Outbounds of the
// clients it delivers to. Deliveries made while the server handles one read batch are collected in
// a Batch and flushed once per connection at the end of the batch, so fan-out costs one write per
// subscriber per batch rather than one per message.
//
// Lock order: Broker.mu, then Client.mu, then whatever an Outbound takes inside Enqueue. The topic
// tree and retained index have locks of their own and are never held while taking the others.
package broker

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/iotd/iotd/internal/auth"
	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/session"
	"github.com/iotd/iotd/internal/store"
	"github.com/iotd/iotd/internal/topic"
)

// Close reasons the broker gives to Outbound.Close.
var (
	// ErrTakenOver: another connection connected with the same client identifier ([MQTT-3.1.4-2]).
	ErrTakenOver = errors.New("session taken over by a new connection with the same client id")
	// ErrSlowConsumer: the connection's pending output grew past its hard limit.
	ErrSlowConsumer = errors.New("slow consumer: pending output over the limit")
)

// ErrInvalidFilter is returned by Subscribe and Unsubscribe for a malformed topic filter; the
// server closes the connection ([MQTT-4.8.0-1]).
var ErrInvalidFilter = errors.New("invalid topic filter")

// Outbound is the broker's view of one network connection.
type Outbound interface {
	// Enqueue appends one encoded packet to the connection's pending output without blocking and
	// without keeping b. droppable marks a QoS 0 PUBLISH, which a connection over its pending-output
	// limit drops instead of queueing. ok is false when the packet was not queued (dropped, or the
	// connection is closed); schedule is true when the caller must add the connection to its Batch,
	// which happens once between two flushes.
	Enqueue(b []byte, droppable bool) (ok, schedule bool)
	// Flush writes pending output without blocking; what the socket does not take now is written
	// when it becomes writable.
	Flush()
	// Close closes the connection asynchronously. reason is logged. Safe to call more than once
	// and from any goroutine, including while holding Client locks.
	Close(reason error)
	// Resume restarts reading from a connection the server paused after Broker.Throttle. Safe to
	// call from any goroutine, while holding Client locks, and when it is not paused.
	Resume()
}

// Options configure a Broker. The zero value is usable: no retained limits, everybody allowed.
type Options struct {
	// MaxRetained bounds the number of retained topics; 0 means no limit. New topics beyond it are
	// not retained (logged and counted); replacing or deleting an existing one always works.
	MaxRetained int
	// MaxRetainedPayload bounds the payload size of a retained message; 0 means no limit.
	MaxRetainedPayload int
	// Authenticator checks CONNECT; nil accepts everyone.
	Authenticator auth.Authenticator
	// Authorizer checks SUBSCRIBE, PUBLISH and delivery; nil allows everything.
	Authorizer auth.Authorizer
	// MaxInflight is the inflight window: QoS 1/2 messages sent to one client and not yet
	// acknowledged. Further messages wait in the session's queue, in order. 0 means the default,
	// 64; the largest useful value is 65,535 (the packet identifiers).
	MaxInflight int
	// MaxQueued bounds the messages kept per session while its client is offline or its window is
	// full; further ones are dropped (the newest is refused), logged and counted. 0 means the
	// default, 1000; a negative value keeps none.
	MaxQueued int
	// MaxQueuedBytes bounds the topic and payload bytes of one session's queue; 0 means only
	// MaxQueued bounds it.
	MaxQueuedBytes int
	// QueueQoS0 also queues QoS 0 messages for offline persistent sessions (off by default, as
	// QoS 0 promises nothing to a client that is away).
	QueueQoS0 bool
	// RetryInterval re-sends an unacknowledged QoS 1/2 message (DUP set) to a connected client after
	// this long, doubling for each further retry up to RetryMaxInterval. 0 (the default) re-sends
	// only on reconnect, which is what MQTT 3.1.1 requires ([MQTT-4.4.0-1]).
	RetryInterval time.Duration
	// RetryMaxInterval caps the retry backoff; 0 means one minute.
	RetryMaxInterval time.Duration
	// SessionExpiry removes a persistent session whose client has been offline this long, with its
	// subscriptions and queued messages, so that abandoned sessions cannot grow memory without
	// bound. 0 means sessions never expire.
	SessionExpiry time.Duration
	// Store, when set, receives every change to persistent sessions and retained messages (see
	// Restore for the way back). nil keeps everything in memory only. The caller opens and closes it.
	Store *store.Log
	// Logger receives the broker's log lines; nil discards them.
	Logger *slog.Logger
}

// Defaults used for zero Options fields.
const (
	DefaultMaxInflight      = 64
	DefaultMaxQueued        = 1000
	DefaultRetryMaxInterval = time.Minute
)

// Broker is one routing domain. Create it with New; it is safe for concurrent use.
type Broker struct {
	opts      Options
	log       *slog.Logger
	maxQueued int
	pauseAt   int // queue length at which publishers are throttled (0: never)
	resumeAt  int // queue length at which they are resumed
	window    int
	start     time.Time // origin of now()
	store     *store.Log

	mu        sync.Mutex           // guards clients, offline and listeners
	listeners map[string]*string   // interned listener names, shared by the clients
	clients   map[string]*Client   // keyed "__client_" + client id
	offline   map[*Client]struct{} // persistent sessions without a connection, for expiry

	subs     *topic.Tree[*Client]
	retained *topic.Retained[*session.Message]
	// retainMu makes a retained change and its store record one step, so that the store keeps
	// the last of two concurrent publishes to a topic, as the index does.
	retainMu sync.Mutex

	stats struct {
		received, delivered, dropped, retainRefused, expired, retried atomic.Uint64
	}
	lastDropWarn atomic.Int64 // unix ms of the last drop warning
}

// warnDrop logs a dropped delivery, at most once a second: a stuck subscriber can cause millions.
// cl.mu is held.
func (b *Broker) warnDrop(cl *Client, total uint64) {
	now := time.Now().UnixMilli()
	last := b.lastDropWarn.Load()
	if now-last < 1000 || !b.lastDropWarn.CompareAndSwap(last, now) {
		return
	}
	b.log.Warn("delivery dropped: slow consumer or closed connection", "client_id", cl.sess.ClientID, "dropped_total", total)
}

// now is the broker's monotonic clock in nanoseconds, for retries and expiry.
func (b *Broker) now() int64 { return int64(time.Since(b.start)) }

// HousekeepInterval is how often Run re-sends timed-out messages and expires sessions.
const HousekeepInterval = time.Second

// Run does the broker's periodic work until ctx ends: re-sending unacknowledged messages after
// RetryInterval and removing sessions offline for longer than SessionExpiry. The caller owns the
// goroutine that runs it.
func (b *Broker) Run(ctx context.Context) {
	t := time.NewTicker(HousekeepInterval)
	defer t.Stop()
	var bt Batch
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			b.housekeep(b.now(), &bt)
		}
	}
}

// housekeep does one round of Run's work at broker time now.
func (b *Broker) housekeep(now int64, bt *Batch) {
	if iv := int64(b.opts.RetryInterval); iv > 0 {
		b.mu.Lock()
		for _, cl := range b.clients {
			cl.mu.Lock()
			if cl.conn != nil && cl.sess.InflightLen() > 0 {
				cl.sess.Due(now, iv, int64(b.opts.RetryMaxInterval), func(f *session.Inflight) {
					b.stats.retried.Add(1)
					b.sendInflightLocked(cl, bt, f, true) // [MQTT-3.3.1-1] with DUP set
				})
			}
			cl.mu.Unlock()
		}
		b.mu.Unlock()
		bt.Flush()
	}
	if exp := int64(b.opts.SessionExpiry); exp > 0 {
		type gone struct {
			cl      *Client
			subs    map[string]packet.QoS
			offline time.Duration
		}
		var expired []gone
		b.mu.Lock()
		for cl := range b.offline {
			cl.mu.Lock()
			if cl.conn == nil && now-cl.offlineSince >= exp {
				delete(b.offline, cl)
				if b.clients[cl.key] == cl {
					delete(b.clients, cl.key)
				}
				b.forgetLocked(cl.sess)
				expired = append(expired, gone{cl, cl.sess.Subscriptions, time.Duration(now - cl.offlineSince)})
				cl.sess.Subscriptions = nil
			}
			cl.mu.Unlock()
		}
		b.mu.Unlock()
		for _, g := range expired {
			for filter := range g.subs {
				b.subs.Unsubscribe(filter, g.cl)
			}
			b.stats.expired.Add(1)
			b.log.Info("session expired", "client_id", g.cl.ClientID(), "offline_for", g.offline.Round(time.Second).String())
		}
	}
}

// Client is a session registered in the broker together with the connection currently bound to it
// (none while a persistent session is offline).
type Client struct {
	key  string // "__client_" + client id
	mu   sync.Mutex
	sess *session.Session // guarded by mu
	conn Outbound         // guarded by mu; nil while offline
	user string           // guarded by mu: the username of the bound connection
	// listener is the name of the listener the bound connection arrived on (interned by the
	// broker), and cert whether user came from its TLS certificate; guarded by mu.
	listener *string
	cert     bool
	// offlineSince is when the connection went away (broker clock); guarded by mu.
	offlineSince int64
	// waiters are throttled publishers' connections to resume once the queue drains; nil until
	// the first one (an idle client pays one pointer); guarded by mu.
	waiters *[]Outbound
}

// Flow control: a publisher is paused when a subscriber's queue passes half its limit, and resumed
// when it is down to a quarter; a subscriber whose oldest unacknowledged message was sent more
// than stuckAfter ago is stuck, and nobody waits for it (its queue fills and further messages are
// dropped, counted).
const (
	stuckAfter = int64(250 * time.Millisecond)
	maxWaiters = 1024
)

// identity is what the Authorizer is told about cl. cl.mu must be held.
func (c *Client) identity() auth.Client {
	return auth.Client{ClientID: c.ClientID(), Username: c.user}
}

// Key returns the registry key of the client's session, "__client_<clientId>".
func (c *Client) Key() string { return c.key }

// ClientID returns the client identifier (possibly assigned by the server).
func (c *Client) ClientID() string { return c.key[len(keyPrefix):] }

const keyPrefix = "__client_"

// New returns a broker with the given options.
func New(opts Options) *Broker {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	maxQueued := opts.MaxQueued
	switch {
	case maxQueued == 0:
		maxQueued = DefaultMaxQueued
	case maxQueued < 0:
		maxQueued = 0
	}
	if opts.MaxInflight <= 0 {
		opts.MaxInflight = DefaultMaxInflight
	}
	if opts.RetryMaxInterval <= 0 {
		opts.RetryMaxInterval = DefaultRetryMaxInterval
	}
	return &Broker{
		opts:      opts,
		log:       log,
		maxQueued: maxQueued,
		pauseAt:   maxQueued / 2,
		resumeAt:  maxQueued / 4,
		window:    min(opts.MaxInflight, 65535),
		start:     time.Now(),
		store:     opts.Store,
		offline:   make(map[*Client]struct{}),
		clients:   make(map[string]*Client),
		subs:      topic.NewTree[*Client](),
		retained:  topic.NewRetained[*session.Message](),
	}
}

// Stats is a snapshot of the broker's counters.
type Stats struct {
	Sessions      int    // sessions in the registry, online and offline
	Subscriptions int    // (filter, session) pairs in the subscription index
	Retained      int    // retained topics
	Received      uint64 // PUBLISH packets routed (from clients and wills)
	Delivered     uint64 // PUBLISH packets queued to subscribers
	Dropped       uint64 // deliveries not made (slow consumer, full queue, clean session gone)
	RetainRefused uint64 // retained messages not stored because of the retained limits
	Expired       uint64 // persistent sessions removed after SessionExpiry offline
	Retried       uint64 // QoS 1/2 messages re-sent after RetryInterval
}

// Stats returns a snapshot of the counters.
func (b *Broker) Stats() Stats {
	b.mu.Lock()
	n := len(b.clients)
	b.mu.Unlock()
	return Stats{
		Sessions:      n,
		Subscriptions: b.subs.Len(),
		Retained:      b.retained.Len(),
		Received:      b.stats.received.Load(),
		Delivered:     b.stats.delivered.Load(),
		Dropped:       b.stats.dropped.Load(),
		RetainRefused: b.stats.retainRefused.Load(),
		Expired:       b.stats.expired.Load(),
		Retried:       b.stats.retried.Load(),
	}
}

// Batch collects the connections that received output while the server handled one read batch,
// plus scratch space for matching and encoding, so routing allocates nothing. Each server event
// loop owns one Batch; it is not safe for concurrent use.
type Batch struct {
	touched   []Outbound
	matches   topic.Matches[*Client]
	buf       []byte
	congested []*Client // subscribers whose queue passed the pause mark during this batch
}

// Congested reports whether a delivery made since the last Throttle or ClearCongested found a
// subscriber that is alive but too slow: the publisher should be throttled (Broker.Throttle).
func (bt *Batch) Congested() bool { return len(bt.congested) > 0 }

// ClearCongested forgets the congested subscribers without throttling anyone.
func (bt *Batch) ClearCongested() {
	clear(bt.congested)
	bt.congested = bt.congested[:0]
}

// Throttle registers o, the connection of publisher from, to be resumed when the subscribers the
// batch found congested have drained their queues to a quarter of their limit, and clears the
// list. It reports whether o must pause; if so, the server stops reading from o until Resume (or
// its own timeout). A publisher is never made to wait for itself.
func (b *Broker) Throttle(from *Client, o Outbound, bt *Batch) bool {
	wait := false
	for _, cl := range bt.congested {
		if cl == from {
			continue
		}
		cl.mu.Lock()
		if cl.conn != nil && cl.sess.QueueLen() > b.resumeAt {
			switch {
			case cl.waiters == nil:
				cl.waiters = &[]Outbound{o}
				wait = true
			case slices.Contains(*cl.waiters, o):
				wait = true // registered before (and resumed by the server's timeout since)
			case len(*cl.waiters) < maxWaiters:
				*cl.waiters = append(*cl.waiters, o)
				wait = true
			}
		}
		cl.mu.Unlock()
	}
	bt.ClearCongested()
	return wait
}

// wakeLocked resumes the publishers waiting for cl. cl.mu must be held.
func (b *Broker) wakeLocked(cl *Client) {
	if cl.waiters == nil {
		return
	}
	for _, o := range *cl.waiters {
		o.Resume()
	}
	cl.waiters = nil
}

// Add schedules o to be flushed by the next Flush.
func (bt *Batch) Add(o Outbound) { bt.touched = append(bt.touched, o) }

// Flush flushes every scheduled connection once and empties the batch.
func (bt *Batch) Flush() {
	for i, o := range bt.touched {
		o.Flush()
		bt.touched[i] = nil
	}
	bt.touched = bt.touched[:0]
}

// ConnectRequest is an accepted-by-the-codec CONNECT and the connection it arrived on.
type ConnectRequest struct {
	Connect    *packet.Connect // the decoded CONNECT
	Conn       Outbound        // the connection it arrived on
	Listener   string          // the listener's name, for the authenticator
	RemoteAddr string          // the peer's address, for the authenticator
	// CertIdentity is the identity of the client's verified TLS certificate when the listener
	// takes identities from certificates; it then replaces the username of CONNECT.
	CertIdentity string
}

// Connect authenticates a CONNECT and binds its connection to the session keyed by the client id,
// taking the session over from an older connection ([MQTT-3.1.4-2]). On success it queues the
// CONNACK on the connection before any other packet ([MQTT-3.2.0-1]), then re-sends the session's
// unacknowledged messages. On refusal it returns the CONNACK code and queues nothing: the server
// answers and closes ([MQTT-3.2.2-4], [MQTT-3.2.2-5]).
func (b *Broker) Connect(ctx context.Context, r ConnectRequest, bt *Batch) (*Client, packet.ConnackCode) {
	c := r.Connect
	clientID := c.ClientID
	if clientID == "" {
		if !c.CleanSession {
			// [MQTT-3.1.3-8] an empty client id needs CleanSession=1.
			return nil, packet.RefusedIdentifierRejected
		}
		// [MQTT-3.1.3-6] the server assigns a unique client id.
		clientID = "iotd-" + uuid.NewString()
	}
	key := keyPrefix + clientID
	// The session and the authorizer share the key's bytes rather than another copy of the id.
	clientID = key[len(keyPrefix):]
	id := auth.Client{ClientID: clientID, Username: c.Username}
	hasUser := c.HasUsername
	if r.CertIdentity != "" {
		id.Username, hasUser = r.CertIdentity, true
	}
	if a := b.opts.Authenticator; a != nil {
		err := a.Authenticate(ctx, &auth.Credentials{Client: id, Listener: r.Listener, RemoteAddr: r.RemoteAddr,
			HasUsername: hasUser, Password: c.Password, HasPassword: c.HasPassword, FromCertificate: r.CertIdentity != ""})
		switch {
		case err == nil:
		case errors.Is(err, auth.ErrBadCredentials):
			return nil, packet.RefusedBadUsernameOrPassword
		case errors.Is(err, auth.ErrNotAuthorized):
			return nil, packet.RefusedNotAuthorized
		default:
			b.log.Error("authentication failed", "client_id", clientID, "error", err)
			return nil, packet.RefusedServerUnavailable
		}
	}
	var will *session.Message
	if w := c.Will; w != nil {
		if az := b.opts.Authorizer; az != nil && !az.Authorize(&id, auth.Write, w.Topic) {
			// As Mosquitto does: a client may not leave a will it could not publish itself.
			b.log.Info("connect refused: will topic not writable", "client_id", clientID, "topic", w.Topic)
			return nil, packet.RefusedNotAuthorized
		}
		will = &session.Message{Topic: w.Topic, Payload: w.Payload, QoS: w.QoS, Retain: w.Retain}
	}

	b.mu.Lock()
	cl := b.clients[key]
	if cl == nil {
		cl = &Client{key: key}
		b.clients[key] = cl
	}
	cl.mu.Lock()
	old, oldWill := cl.conn, (*session.Message)(nil)
	if old != nil && cl.sess != nil {
		oldWill = cl.sess.Will
	}
	var dropped map[string]packet.QoS
	present := false
	switch {
	case cl.sess == nil:
		cl.sess = session.New(clientID, c.CleanSession)
	case c.CleanSession || cl.sess.Clean:
		// [MQTT-3.1.2-6] a clean session discards the previous one; so does resuming a session that
		// was itself clean, since it ended with its connection ([MQTT-3.1.2-4]).
		dropped = cl.sess.Subscriptions
		b.forgetLocked(cl.sess)
		cl.sess = session.New(clientID, c.CleanSession)
	default:
		present = true // [MQTT-3.2.2-2]
	}
	cl.sess.Will = will // [MQTT-3.1.2-8] stored for this connection
	cl.conn = r.Conn
	delete(b.offline, cl)
	cl.user = id.Username
	cl.listener = b.internLocked(r.Listener)
	cl.cert = r.CertIdentity != ""
	b.persistSessionLocked(cl, 0) // before the CONNACK: a persistent session exists once acknowledged
	var resend []*session.Inflight
	if present {
		resend = cl.sess.Inflight()
	}
	// [MQTT-3.2.2-1], [MQTT-3.2.2-2]: session present only when a stored session is resumed.
	bt.buf = (&packet.Connack{SessionPresent: present, ReturnCode: packet.Accepted}).Append(bt.buf[:0])
	b.enqueueLocked(cl, bt, bt.buf, false)
	for _, f := range resend {
		b.sendInflightLocked(cl, bt, f, true)
	}
	b.drainLocked(cl, bt) // then what was queued while it was away, in order
	cl.mu.Unlock()
	b.mu.Unlock()

	for filter := range dropped {
		b.subs.Unsubscribe(filter, cl)
	}
	if old != nil {
		b.log.Info("session taken over", "client_id", clientID)
		old.Close(ErrTakenOver)
		if oldWill != nil {
			// The old connection ended without DISCONNECT, so its will is published ([MQTT-3.1.2-8]).
			b.publishMessage(oldWill, bt)
		}
	}
	return cl, packet.Accepted
}

// Disconnect unbinds conn from cl after the connection closed. graceful is true when the client
// sent DISCONNECT: the will is then discarded ([MQTT-3.14.4-3]); otherwise it is published
// ([MQTT-3.1.2-8]). A clean session ends with its connection ([MQTT-3.1.2-6]). Nothing happens if
// conn is no longer bound to cl (the session was taken over).
func (b *Broker) Disconnect(cl *Client, conn Outbound, graceful bool) {
	b.mu.Lock()
	cl.mu.Lock()
	if cl.conn != conn {
		cl.mu.Unlock()
		b.mu.Unlock()
		return
	}
	cl.conn = nil
	b.wakeLocked(cl) // nobody waits for a client that is gone
	id := cl.identity()
	will := cl.sess.Will
	cl.sess.Will = nil
	var subs map[string]packet.QoS
	if cl.sess.Clean {
		subs = cl.sess.Subscriptions
		cl.sess.Subscriptions = nil
		if b.clients[cl.key] == cl {
			delete(b.clients, cl.key)
		}
	} else {
		cl.offlineSince = b.now()
		b.offline[cl] = struct{}{}
		b.persistSessionLocked(cl, time.Now().UnixNano()) // no will any more: it is published or discarded below
	}
	cl.mu.Unlock()
	b.mu.Unlock()
	for filter := range subs {
		b.subs.Unsubscribe(filter, cl)
	}
	if will != nil && !graceful {
		if az := b.opts.Authorizer; az != nil && !az.Authorize(&id, auth.Write, will.Topic) {
			// The rules changed since CONNECT (a reload): the will is held to today's rules.
			b.log.Info("will not published: topic no longer writable", "client_id", id.ClientID, "topic", will.Topic)
			return
		}
		var bt Batch
		b.publishMessage(will, &bt)
		bt.Flush()
	}
}

// DiscardWill clears the will of cl's connection; the server calls it on DISCONNECT before
// closing ([MQTT-3.1.2-10]).
func (b *Broker) DiscardWill(cl *Client) {
	cl.mu.Lock()
	if cl.sess != nil {
		cl.sess.Will = nil
	}
	cl.mu.Unlock()
}

func (b *Broker) publishMessage(m *session.Message, bt *Batch) {
	p := packet.Publish{QoS: m.QoS, Retain: m.Retain, Topic: []byte(m.Topic), Payload: m.Payload}
	b.route(&p, bt)
}

// Publish routes a PUBLISH received from cl. The packet's Topic and Payload may alias a read
// buffer: whatever the broker keeps it copies. The caller acknowledges QoS 1 and 2 itself.
func (b *Broker) Publish(cl *Client, p *packet.Publish, bt *Batch) {
	if az := b.opts.Authorizer; az != nil {
		cl.mu.Lock()
		id := cl.identity()
		cl.mu.Unlock()
		if !az.Authorize(&id, auth.Write, string(p.Topic)) {
			b.log.Info("publish denied", "client_id", id.ClientID, "topic", string(p.Topic))
			return
		}
	}
	b.route(p, bt)
}

// route stores a retained message and delivers p to every matching subscriber.
func (b *Broker) route(p *packet.Publish, bt *Batch) {
	b.stats.received.Add(1)
	var stored *session.Message
	if p.Retain {
		stored = b.retain(p)
	}
	b.subs.Match(p.Topic, &bt.matches)
	subs := bt.matches.Subscribers()
	if len(subs) == 0 {
		return
	}
	// QoS 0 deliveries share one encoding. [MQTT-3.3.1-9] the retain flag is cleared on messages
	// delivered to existing subscriptions.
	var enc0 []byte
	var live *session.Message // the message kept for QoS 1/2 deliveries, with RETAIN 0 as well
	var name string           // the topic as a string, for the Authorizer
	for _, s := range subs {
		cl := s.Sub
		qos := min(p.QoS, packet.QoS(s.QoS)) // [MQTT-3.8.4-6] downgrade to the granted QoS
		if b.opts.Authorizer != nil {
			if name == "" {
				name = string(p.Topic) // once per publish, not per subscriber
			}
			if !b.mayRead(cl, name) {
				continue
			}
		}
		if qos == packet.QoS0 {
			if enc0 == nil {
				q := packet.Publish{Topic: p.Topic}
				bt.buf = packet.AppendPublishHeader(bt.buf[:0], &q, len(p.Payload))
				bt.buf = append(bt.buf, p.Payload...)
				enc0 = bt.buf
			}
			cl.mu.Lock()
			if cl.conn == nil && b.opts.QueueQoS0 && !cl.sess.Clean {
				b.queueLocked(cl, bt, b.liveMessage(p, stored, &live), packet.QoS0)
			} else {
				b.enqueueLocked(cl, bt, enc0, true)
			}
			cl.mu.Unlock()
			continue
		}
		m := b.liveMessage(p, stored, &live)
		enc0 = nil // it aliases bt.buf, which the QoS 1/2 encoding below overwrites
		cl.mu.Lock()
		b.deliverLocked(cl, bt, m, qos)
		cl.mu.Unlock()
	}
}

// liveMessage returns p as a kept Message with RETAIN 0 for delivery to existing subscriptions
// ([MQTT-3.3.1-9]), made once per publish: *live caches it. It shares the retained copy's bytes
// when there is one (Messages are immutable).
func (b *Broker) liveMessage(p *packet.Publish, stored *session.Message, live **session.Message) *session.Message {
	if *live == nil {
		if stored != nil {
			*live = &session.Message{Topic: stored.Topic, Payload: stored.Payload, QoS: p.QoS}
		} else {
			*live = session.NewMessage(p.Topic, p.Payload, p.QoS, false)
		}
	}
	return *live
}

func (b *Broker) mayRead(cl *Client, name string) bool {
	cl.mu.Lock()
	id := cl.identity()
	cl.mu.Unlock()
	return b.opts.Authorizer.Authorize(&id, auth.Read, name)
}

// deliverLocked sends m to cl at qos 1 or 2 with a fresh packet identifier. cl.mu must be held.
func (b *Broker) deliverLocked(cl *Client, bt *Batch, m *session.Message, qos packet.QoS) {
	if cl.conn != nil && cl.sess.QueueLen() == 0 {
		if f, err := cl.sess.Send(m, qos, b.window, b.now()); err == nil {
			b.persistSentLocked(cl, f, true)
			b.sendInflightLocked(cl, bt, f, false)
			return
		}
		// The window is full: queue it behind what is in flight.
	}
	b.queueLocked(cl, bt, m, qos)
}

// queueLocked keeps m for cl until it can be sent: [MQTT-3.1.2-5] an offline persistent session
// keeps QoS 1 and 2 messages, and behind a non-empty queue new messages wait too, so that order is
// kept ([MQTT-4.6.0-5]). cl.mu must be held.
func (b *Broker) queueLocked(cl *Client, bt *Batch, m *session.Message, qos packet.QoS) {
	if cl.conn == nil && cl.sess.Clean {
		// A clean session ends with its connection; nothing is kept for it ([MQTT-3.1.2-6]).
		b.stats.dropped.Add(1)
		return
	}
	if !cl.sess.Queue(m, qos, b.maxQueued, b.opts.MaxQueuedBytes) {
		n := b.stats.dropped.Add(1)
		b.warnDrop(cl, n)
		return
	}
	b.persistQueuedLocked(cl, m, qos, cl.sess.LastSeq())
	if cl.conn != nil && b.pauseAt > 0 && cl.sess.QueueLen() >= b.pauseAt && !cl.sess.OldestSentBefore(b.now()-stuckAfter) {
		if n := len(bt.congested); n == 0 || bt.congested[n-1] != cl {
			bt.congested = append(bt.congested, cl)
		}
	}
}

// drainLocked sends queued messages, oldest first, while the client is connected and its window
// has room. cl.mu must be held.
func (b *Broker) drainLocked(cl *Client, bt *Batch) {
	for cl.conn != nil {
		q, f, ok := cl.sess.Dequeue(b.window, b.now())
		if !ok {
			break
		}
		if f != nil {
			b.persistSentLocked(cl, f, false)
			b.sendInflightLocked(cl, bt, f, false)
			continue
		}
		b.persistDoneLocked(cl, q.Seq, q.Msg)
		p := packet.Publish{Retain: q.Msg.Retain, Topic: []byte(q.Msg.Topic)}
		bt.buf = packet.AppendPublishHeader(bt.buf[:0], &p, len(q.Msg.Payload))
		bt.buf = append(bt.buf, q.Msg.Payload...)
		b.enqueueLocked(cl, bt, bt.buf, true)
	}
	if cl.waiters != nil && cl.sess.QueueLen() <= b.resumeAt {
		b.wakeLocked(cl)
	}
}

// sendInflightLocked encodes and queues f: its PUBLISH (with DUP when re-sent, [MQTT-3.3.1-1]) or,
// after PUBREC, its PUBREL ([MQTT-4.4.0-1]). cl.mu must be held.
func (b *Broker) sendInflightLocked(cl *Client, bt *Batch, f *session.Inflight, resend bool) {
	if f.State == session.AwaitPubcomp {
		bt.buf = (&packet.Pubrel{PacketID: f.PacketID}).Append(bt.buf[:0])
	} else {
		q := packet.Publish{Dup: resend, QoS: f.QoS, Retain: f.Msg.Retain, Topic: []byte(f.Msg.Topic), PacketID: f.PacketID}
		bt.buf = packet.AppendPublishHeader(bt.buf[:0], &q, len(f.Msg.Payload))
		bt.buf = append(bt.buf, f.Msg.Payload...)
	}
	b.enqueueLocked(cl, bt, bt.buf, false)
}

// enqueueLocked queues an encoded packet on cl's connection. cl.mu must be held.
func (b *Broker) enqueueLocked(cl *Client, bt *Batch, enc []byte, droppable bool) {
	conn := cl.conn
	if conn == nil {
		b.stats.dropped.Add(1)
		return
	}
	ok, schedule := conn.Enqueue(enc, droppable)
	if schedule {
		bt.Add(conn)
	}
	if !ok {
		n := b.stats.dropped.Add(1)
		b.warnDrop(cl, n)
		return
	}
	if droppable || enc[0]>>4 == byte(packet.TypePublish) {
		b.stats.delivered.Add(1)
	}
}

// retain applies a PUBLISH with the retain flag to the retained index ([MQTT-3.3.1-5]) and returns
// the stored copy, or nil when nothing was stored (an empty payload deletes: [MQTT-3.3.1-10]).
func (b *Broker) retain(p *packet.Publish) *session.Message {
	name := string(p.Topic)
	if len(p.Payload) == 0 {
		b.retainMu.Lock()
		if b.retained.Delete(name) { // [MQTT-3.3.1-10], [MQTT-3.3.1-11]
			b.persistRetained(name, nil)
		}
		b.retainMu.Unlock()
		return nil
	}
	if max := b.opts.MaxRetainedPayload; max > 0 && len(p.Payload) > max {
		b.stats.retainRefused.Add(1)
		b.log.Warn("retained message not stored: payload over the limit", "topic", name, "size", len(p.Payload), "limit", max)
		return nil
	}
	if max := b.opts.MaxRetained; max > 0 && b.retained.Len() >= max {
		if _, exists := b.retained.Get(name); !exists {
			b.stats.retainRefused.Add(1)
			b.log.Warn("retained message not stored: retained limit reached", "topic", name, "limit", max)
			return nil
		}
	}
	m := &session.Message{Topic: name, Payload: append([]byte(nil), p.Payload...), QoS: p.QoS, Retain: true}
	b.retainMu.Lock()
	b.retained.Set(name, m)
	b.persistRetained(name, m)
	b.retainMu.Unlock()
	return m
}

// Subscribe applies a SUBSCRIBE from cl: records each filter, queues the SUBACK and then the
// retained messages matching the new subscriptions. A malformed filter returns ErrInvalidFilter
// and changes nothing; the server closes the connection.
func (b *Broker) Subscribe(cl *Client, s *packet.Subscribe, bt *Batch) error {
	for _, sub := range s.Subscriptions {
		if err := topic.ValidateFilter(sub.Filter); err != nil {
			return errors.Join(ErrInvalidFilter, err)
		}
	}
	codes := make([]byte, len(s.Subscriptions))
	granted := make([]packet.QoS, len(s.Subscriptions))
	cl.mu.Lock()
	id := cl.identity()
	for i, sub := range s.Subscriptions {
		if az := b.opts.Authorizer; az != nil && !az.Authorize(&id, auth.Read, sub.Filter) {
			codes[i] = packet.SubackFailure
			b.log.Info("subscribe denied", "client_id", id.ClientID, "filter", sub.Filter)
			continue
		}
		// [MQTT-3.9.3-2]: the server supports QoS 2, so it grants what was asked.
		granted[i] = sub.QoS
		codes[i] = byte(sub.QoS)
		cl.sess.Subscribe(sub.Filter, sub.QoS)
		b.subs.Subscribe(sub.Filter, cl, byte(sub.QoS))
		b.persistSubLocked(cl, sub.Filter, sub.QoS, true)
	}
	// [MQTT-3.8.4-1], [MQTT-3.8.4-2], [MQTT-3.8.4-5]: one SUBACK, same packet id, a code per filter.
	bt.buf = (&packet.Suback{PacketID: s.PacketID, ReturnCodes: codes}).Append(bt.buf[:0])
	b.enqueueLocked(cl, bt, bt.buf, false)
	// [MQTT-3.3.1-6], [MQTT-3.8.4-3]: retained messages matching the filter are sent, with RETAIN set.
	for i, sub := range s.Subscriptions {
		if codes[i] == packet.SubackFailure {
			continue
		}
		b.retained.Match(sub.Filter, func(name string, m *session.Message) bool {
			if az := b.opts.Authorizer; az != nil && !az.Authorize(&id, auth.Read, name) {
				return true
			}
			qos := min(m.QoS, granted[i])
			if qos == packet.QoS0 {
				q := packet.Publish{Retain: true, Topic: []byte(m.Topic)}
				bt.buf = packet.AppendPublishHeader(bt.buf[:0], &q, len(m.Payload))
				bt.buf = append(bt.buf, m.Payload...)
				b.enqueueLocked(cl, bt, bt.buf, true)
			} else {
				b.deliverLocked(cl, bt, m, qos)
			}
			return true
		})
	}
	cl.mu.Unlock()
	return nil
}

// Unsubscribe applies an UNSUBSCRIBE from cl and queues the UNSUBACK, which is sent even when no
// filter matched ([MQTT-3.10.4-4], [MQTT-3.10.4-5]).
func (b *Broker) Unsubscribe(cl *Client, u *packet.Unsubscribe, bt *Batch) error {
	for _, f := range u.Filters {
		if err := topic.ValidateFilter(f); err != nil {
			return errors.Join(ErrInvalidFilter, err)
		}
	}
	cl.mu.Lock()
	for _, f := range u.Filters {
		// [MQTT-3.10.4-1]: compared character by character; [MQTT-3.10.4-2]: no new deliveries.
		if cl.sess.Unsubscribe(f) {
			b.subs.Unsubscribe(f, cl)
			b.persistSubLocked(cl, f, 0, false)
		}
	}
	bt.buf = (&packet.Unsuback{PacketID: u.PacketID}).Append(bt.buf[:0])
	b.enqueueLocked(cl, bt, bt.buf, false)
	cl.mu.Unlock()
	return nil
}

// PublishQoS2 applies a QoS 2 PUBLISH from cl: it records the packet identifier and routes the
// message unless the identifier awaits PUBREL already, which marks a retransmission
// ([MQTT-4.3.3-2]). With a store both steps reach it in one commit: were the identifier stored
// without the copies routed to subscribers, the publisher's re-send after a crash would be taken
// for a duplicate and the message lost after its PUBREC. It reports whether it routed the message;
// the caller answers PUBREC either way.
func (b *Broker) PublishQoS2(cl *Client, p *packet.Publish, bt *Batch) bool {
	if b.store != nil {
		release := b.store.Atomic()
		defer release()
	}
	if !b.ReceiveQoS2(cl, p.PacketID) {
		return false
	}
	b.Publish(cl, p, bt)
	return true
}

// ReceiveQoS2 records the packet id of a QoS 2 PUBLISH from cl; it reports whether the message is
// new and must be routed ([MQTT-4.3.3-2]: a retransmission before PUBREL is not routed again).
// PublishQoS2 does this and the routing together.
func (b *Broker) ReceiveQoS2(cl *Client, id uint16) bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if !cl.sess.ReceiveQoS2(id) {
		return false
	}
	b.persistInboundLocked(cl, id, true)
	return true
}

// Pubrel releases an inbound QoS 2 packet id of cl; the server answers PUBCOMP.
func (b *Broker) Pubrel(cl *Client, id uint16) {
	cl.mu.Lock()
	if cl.sess.Pubrel(id) {
		b.persistInboundLocked(cl, id, false)
	}
	cl.mu.Unlock()
}

// Ack applies an acknowledgement from cl for an outbound QoS 1/2 message: PUBACK, PUBREC (which
// queues PUBREL) or PUBCOMP. Acknowledgements for unknown ids are ignored and logged at debug.
func (b *Broker) Ack(cl *Client, t packet.Type, id uint16, bt *Batch) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	var err error
	var f *session.Inflight
	switch t {
	case packet.TypePuback:
		if f, err = cl.sess.Puback(id); err == nil {
			b.persistDoneLocked(cl, f.Seq, f.Msg)
		}
	case packet.TypePubrec:
		var released *session.Message
		if f, released, err = cl.sess.Pubrec(id, b.now()); err == nil {
			// Stored before PUBREL goes out: after a restart PUBREL, not the PUBLISH, is re-sent.
			b.persistPubrecLocked(cl, f, released)
			bt.buf = (&packet.Pubrel{PacketID: id}).Append(bt.buf[:0])
			b.enqueueLocked(cl, bt, bt.buf, false)
		}
	case packet.TypePubcomp:
		if f, err = cl.sess.Pubcomp(id); err == nil {
			b.persistDoneLocked(cl, f.Seq, nil)
		}
	}
	if err == nil && t != packet.TypePubrec {
		b.drainLocked(cl, bt) // a packet id became free
	}
	if err != nil {
		b.log.Debug("acknowledgement ignored", "client_id", cl.sess.ClientID, "packet", t.String(), "packet_id", id, "reason", err)
	}
}

// internLocked returns the shared copy of a listener name. b.mu must be held.
func (b *Broker) internLocked(name string) *string {
	if p, ok := b.listeners[name]; ok {
		return p
	}
	if b.listeners == nil {
		b.listeners = make(map[string]*string)
	}
	p := &name
	b.listeners[name] = p
	return p
}

// Connected describes a connected client to Revalidate.
type Connected struct {
	auth.Client
	Listener        string // the listener it connected on
	FromCertificate bool   // its username is the identity of its TLS client certificate
}

// Revalidate asks still about every connected client, after users or rules were reloaded, and
// closes the connections of those it rejects (their persistent sessions stay, as after any
// disconnect). It returns how many were closed.
func (b *Broker) Revalidate(still func(c *Connected) bool, reason error) int {
	var gone []Outbound
	b.mu.Lock()
	for _, cl := range b.clients {
		cl.mu.Lock()
		if cl.conn != nil && !still(&Connected{Client: cl.identity(), Listener: *cl.listener, FromCertificate: cl.cert}) {
			gone = append(gone, cl.conn)
			b.log.Info("access revoked: disconnecting", "client_id", cl.ClientID(), "username", cl.user)
		}
		cl.mu.Unlock()
	}
	b.mu.Unlock()
	for _, o := range gone {
		o.Close(reason)
	}
	return len(gone)
}
