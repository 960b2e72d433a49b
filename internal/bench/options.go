package bench

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/topic"
)

// Defaults applied to zero option values.
const (
	// DefaultAddr is the broker address: the standard MQTT port on loopback.
	DefaultAddr = "127.0.0.1:1883"
	// DefaultKeepAlive is the keep-alive sent in CONNECT.
	DefaultKeepAlive = 60 * time.Second
	// DefaultWorkers is the number of connection attempts in progress at once.
	DefaultWorkers = 64
	// DefaultSpreadAbove is the connection count above which source addresses are spread.
	DefaultSpreadAbove = 1000
	// DefaultTimeout bounds a connection attempt and a write that makes no progress.
	DefaultTimeout = 10 * time.Second
	// DefaultInflight is the window of unacknowledged QoS 1/2 messages per publisher.
	DefaultInflight = 64
	// DefaultSize is the payload size in bytes, as in the standard scenarios.
	DefaultSize = 64
	// DefaultTopic is the publishers' topic template.
	DefaultTopic = "bench/%i"
	// DefaultFilter is the subscribers' filter template; it matches DefaultTopic.
	DefaultFilter = "bench/#"
	// DefaultDuration bounds a run that has no message bound.
	DefaultDuration = 10 * time.Second
	// DefaultDrain is how long a run waits for an acknowledgement or a delivery after
	// publishing before it stops waiting.
	DefaultDrain = 3 * time.Second
	// DefaultMaxDrain bounds the whole wait after publishing.
	DefaultMaxDrain = time.Minute
	// DefaultExtraFilter is the template of the extra subscriptions; it matches no DefaultTopic
	// name.
	DefaultExtraFilter = "bench/x%i/+/#"
	// DefaultExtraPerConn is how many extra subscriptions one connection installs.
	DefaultExtraPerConn = 10000
)

// Target says where the load generator connects and how it opens its connections. It is shared
// by every runner.
type Target struct {
	// Addr is the broker's host:port (default DefaultAddr).
	Addr string
	// KeepAlive is the keep-alive sent in CONNECT (default DefaultKeepAlive). A client that has
	// sent nothing for half of it sends PINGREQ, so a quiet subscriber is not timed out.
	KeepAlive time.Duration
	// ClientPrefix starts every client identifier (default "ib-" and a tag unique to the run).
	ClientPrefix string
	// Username and Password are sent in CONNECT when Username is not empty.
	Username, Password string
	// TLS, when set, runs every connection over TLS with this configuration.
	TLS *tls.Config
	// Persistent connects with CleanSession=0, so that the broker keeps (and, with a store,
	// persists) every session, its subscriptions and its QoS 1/2 messages.
	Persistent bool
	// Interval spaces the starts of successive connection attempts; 0 opens them as fast as
	// Workers allow.
	Interval time.Duration
	// Workers bounds the connection attempts in progress at once (default DefaultWorkers).
	Workers int
	// SpreadAbove: a run that opens more connections than this to a loopback address spreads
	// their source addresses over 127.0.0.2-127.0.0.251 (default DefaultSpreadAbove; negative
	// never spreads).
	SpreadAbove int
	// Timeout bounds each connection attempt (dial, CONNECT, CONNACK, SUBACK) and any write that
	// makes no progress (default DefaultTimeout).
	Timeout time.Duration
	// Progress receives a progress line per ProgressInterval; nil prints none.
	Progress io.Writer
	// ProgressInterval is the time between progress lines (default one second).
	ProgressInterval time.Duration
}

func (t *Target) setDefaults() {
	if t.Addr == "" {
		t.Addr = DefaultAddr
	}
	if t.KeepAlive == 0 {
		t.KeepAlive = DefaultKeepAlive
	}
	if t.ClientPrefix == "" {
		t.ClientPrefix = "ib-" + strconv.FormatUint(uint64(newRunTag()), 36) + "-"
	}
	if t.Workers <= 0 {
		t.Workers = DefaultWorkers
	}
	if t.SpreadAbove == 0 {
		t.SpreadAbove = DefaultSpreadAbove
	}
	if t.Timeout <= 0 {
		t.Timeout = DefaultTimeout
	}
	if t.ProgressInterval <= 0 {
		t.ProgressInterval = time.Second
	}
}

func (t *Target) validate() error {
	if _, _, err := net.SplitHostPort(t.Addr); err != nil {
		return fmt.Errorf("addr %q: %w", t.Addr, err)
	}
	if t.KeepAlive < 0 || t.KeepAlive > 65535*time.Second {
		return fmt.Errorf("keep-alive %v: want 0 to 65535s", t.KeepAlive)
	}
	if t.Interval < 0 {
		return fmt.Errorf("interval %v: negative", t.Interval)
	}
	return nil
}

// Publishers describes the publishing side of a run.
type Publishers struct {
	// Count is the number of publishers (default 1).
	Count int
	// Rate is the messages per second of each publisher; 0 publishes as fast as the broker takes.
	Rate float64
	// QoS is the level of every PUBLISH.
	QoS packet.QoS
	// Size is the payload size in bytes (default DefaultSize). Payloads under MinTrackedSize
	// carry no timestamp or sequence.
	Size int
	// Topic is the topic name; %i is replaced by the publisher's index (default DefaultTopic).
	Topic string
	// Retain sets the RETAIN flag.
	Retain bool
	// Messages bounds the messages of each publisher; 0 means only the duration bounds them.
	Messages int
	// Inflight is the window of unacknowledged QoS 1/2 messages per publisher (default
	// DefaultInflight).
	Inflight int
}

func (p *Publishers) setDefaults() {
	if p.Count == 0 {
		p.Count = 1
	}
	if p.Size == 0 {
		p.Size = DefaultSize
	}
	if p.Topic == "" {
		p.Topic = DefaultTopic
	}
	if p.Inflight == 0 {
		p.Inflight = DefaultInflight
	}
}

func (p *Publishers) validate() error {
	var errs []error
	if p.Count < 0 {
		errs = append(errs, fmt.Errorf("publishers %d: negative", p.Count))
	}
	if p.Rate < 0 {
		errs = append(errs, fmt.Errorf("rate %v: negative", p.Rate))
	}
	if p.QoS > packet.QoS2 {
		errs = append(errs, fmt.Errorf("qos %d: want 0, 1 or 2", p.QoS))
	}
	if p.Size < 0 || p.Size > maxPayload {
		errs = append(errs, fmt.Errorf("size %d: want 0 to %d", p.Size, maxPayload))
	}
	if p.Messages < 0 {
		errs = append(errs, fmt.Errorf("messages %d: negative", p.Messages))
	}
	if p.Inflight < 1 || p.Inflight > 65535 {
		errs = append(errs, fmt.Errorf("inflight %d: want 1 to 65535", p.Inflight))
	}
	if strings.ContainsAny(p.Topic, "+#") {
		errs = append(errs, fmt.Errorf("topic %q: wildcards are not allowed in a topic name", p.Topic))
	} else if err := topic.ValidateName([]byte(expand(p.Topic, 0))); err != nil {
		errs = append(errs, fmt.Errorf("topic %q: %w", p.Topic, err))
	}
	return errors.Join(errs...)
}

// Subscribers describes the subscribing side of a run.
type Subscribers struct {
	// Count is the number of subscribers (default 1).
	Count int
	// Filter is the topic filter; %i is replaced by the subscriber's index (default
	// DefaultFilter).
	Filter string
	// QoS is the maximum QoS requested in SUBSCRIBE.
	QoS packet.QoS
	// Messages ends a subscribe-only run once the subscribers together received this many; 0
	// means only the duration ends it.
	Messages int
}

func (s *Subscribers) setDefaults() {
	if s.Count == 0 {
		s.Count = 1
	}
	if s.Filter == "" {
		s.Filter = DefaultFilter
	}
}

func (s *Subscribers) validate() error {
	var errs []error
	if s.Count < 0 {
		errs = append(errs, fmt.Errorf("subscribers %d: negative", s.Count))
	}
	if s.QoS > packet.QoS2 {
		errs = append(errs, fmt.Errorf("qos %d: want 0, 1 or 2", s.QoS))
	}
	if s.Messages < 0 {
		errs = append(errs, fmt.Errorf("messages %d: negative", s.Messages))
	}
	if err := topic.ValidateFilter(expand(s.Filter, 0)); err != nil {
		errs = append(errs, fmt.Errorf("filter %q: %w", s.Filter, err))
	}
	return errors.Join(errs...)
}

// ConnOptions configures RunConn and OpenConns.
type ConnOptions struct {
	Target
	// Count is the number of connections to open (default 1).
	Count int
	// Hold is how long RunConn keeps the connections open once they are all open (default
	// DefaultDuration).
	Hold time.Duration
}

// PubOptions configures RunPub.
type PubOptions struct {
	Target
	Publishers
	// Duration bounds the publishing; with Messages 0 it defaults to DefaultDuration.
	Duration time.Duration
	// Drain bounds the wait for outstanding acknowledgements after publishing: the run gives up
	// when none has arrived for this long (default DefaultDrain).
	Drain time.Duration
	// MaxDrain bounds the wait for a QoS 0 publisher's last PINGREQ answer, which proves the
	// broker read everything before it (default DefaultMaxDrain).
	MaxDrain time.Duration
}

// SubOptions configures RunSub.
type SubOptions struct {
	Target
	Subscribers
	// Duration bounds the run; with Messages 0 it defaults to DefaultDuration.
	Duration time.Duration
}

// ScenarioOptions configures RunScenario: subscribers first, then publishers, measured end to
// end.
type ScenarioOptions struct {
	Target
	// Pub is the publishing side.
	Pub Publishers
	// Sub is the subscribing side. Sub.Messages is ignored: the run ends when the publishers are
	// done and every expected delivery arrived (or none arrived for Drain).
	Sub Subscribers
	// Duration bounds the publishing; with Pub.Messages 0 it defaults to DefaultDuration.
	Duration time.Duration
	// Drain bounds the wait for acknowledgements and deliveries after publishing: the run stops
	// waiting when nothing has arrived for this long (default DefaultDrain).
	Drain time.Duration
	// MaxDrain bounds the whole wait for deliveries after publishing, even while they still
	// arrive, so a broker that queued minutes of messages does not hold the run for minutes;
	// what has not arrived by then is lost (default DefaultMaxDrain).
	MaxDrain time.Duration
	// ExtraSubs is a number of extra wildcard subscriptions installed before the run, on
	// connections of their own, which the run's topics do not match: they measure what a large
	// subscription index costs the broker's matching.
	ExtraSubs int
	// ExtraFilter is the template of the extra filters; %i is replaced by the subscription's
	// index (default DefaultExtraFilter). It must not match the publishers' topics.
	ExtraFilter string
	// ExtraPerConn is the number of extra subscriptions per connection (default
	// DefaultExtraPerConn).
	ExtraPerConn int
}

// expand replaces %i in a topic or filter template with i.
func expand(tmpl string, i int) string {
	if !strings.Contains(tmpl, "%i") {
		return tmpl
	}
	return strings.ReplaceAll(tmpl, "%i", strconv.Itoa(i))
}
