package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// histMax is the largest latency a histogram tracks; larger values are recorded as histMax.
const histMax = int64(60 * time.Second)

// latencyBlock is how many samples a client buffers before it takes the histogram's lock.
const latencyBlock = 512

// histogram is an HDR histogram of durations in nanoseconds, shared by the clients of a run.
// Clients record through a latencyBuf, so the lock is taken once per latencyBlock samples.
type histogram struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

func newHistogram() *histogram {
	// 1 ns to 60 s at three significant digits: about 0.1 % resolution at any latency.
	return &histogram{h: hdrhistogram.New(1, histMax, 3)}
}

func (h *histogram) recordAll(vs []int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, v := range vs {
		h.h.RecordValue(min(max(v, 1), histMax)) // clamped into range, so it cannot fail
	}
}

// latency summarises the histogram.
func (h *histogram) latency() Latency {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.h.TotalCount() == 0 {
		return Latency{}
	}
	us := func(v int64) float64 { return float64(v) / 1e3 }
	return Latency{
		Count: h.h.TotalCount(),
		P50:   us(h.h.ValueAtQuantile(50)),
		P90:   us(h.h.ValueAtQuantile(90)),
		P99:   us(h.h.ValueAtQuantile(99)),
		P999:  us(h.h.ValueAtQuantile(99.9)),
		Max:   us(h.h.Max()),
		Mean:  h.h.Mean() / 1e3,
	}
}

// latencyBuf buffers one client's samples for a shared histogram. It belongs to one goroutine.
type latencyBuf struct {
	h   *histogram
	buf []int64
}

func (l *latencyBuf) record(v int64) {
	if l.buf == nil {
		l.buf = make([]int64, 0, latencyBlock)
	}
	l.buf = append(l.buf, v)
	if len(l.buf) == latencyBlock {
		l.flush()
	}
}

func (l *latencyBuf) flush() {
	if len(l.buf) > 0 {
		l.h.recordAll(l.buf)
		l.buf = l.buf[:0]
	}
}

// errorLog counts a run's errors and keeps the first few for the summary.
type errorLog struct {
	n       atomic.Uint64
	mu      sync.Mutex
	samples []string
}

// maxErrorSamples bounds the error messages kept; the count covers all of them.
const maxErrorSamples = 10

func (e *errorLog) add(err error) {
	if err == nil {
		return
	}
	e.n.Add(1)
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.samples) < maxErrorSamples {
		e.samples = append(e.samples, err.Error())
	}
}

func (e *errorLog) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.samples...)
}

// seqTracker accounts for the sequence numbers one subscriber received from one publisher: how
// many distinct ones and how many more than once. Sequence numbers arrive mostly in order, so it
// keeps a sliding bitmap of at most maxWindowWords words above the point below which everything
// has arrived; a number more than that far ahead gives up on the oldest holes (they stay lost).
type seqTracker struct {
	base   uint64   // every sequence number below base has been received (a multiple of 64)
	win    []uint64 // bit i of win[w] is sequence number base+64w+i
	unique uint64
	dups   uint64
}

// maxWindowWords bounds how far out of order messages may arrive: 64 words, 4,096 numbers.
const maxWindowWords = 64

func (t *seqTracker) add(seq uint64) {
	if seq < t.base {
		t.dups++
		return
	}
	w := (seq - t.base) / 64
	if w >= maxWindowWords {
		t.slide(int(w - maxWindowWords + 1))
		w = (seq - t.base) / 64
	}
	for int(w) >= len(t.win) {
		t.win = append(t.win, 0)
	}
	bit := uint64(1) << (seq % 64)
	if t.win[w]&bit != 0 {
		t.dups++
		return
	}
	t.win[w] |= bit
	t.unique++
	full := 0
	for full < len(t.win) && t.win[full] == ^uint64(0) {
		full++
	}
	if full > 0 {
		t.slide(full)
	}
}

// slide moves base forward by n words, dropping what the window knew about them.
func (t *seqTracker) slide(n int) {
	if n >= len(t.win) {
		t.win = t.win[:0]
	} else {
		t.win = t.win[:copy(t.win, t.win[n:])]
	}
	t.base += 64 * uint64(n)
}

// Latency is a latency distribution, in microseconds.
type Latency struct {
	Count int64   `json:"count"`   // samples
	P50   float64 `json:"p50_us"`  // median
	P90   float64 `json:"p90_us"`  // 90th percentile
	P99   float64 `json:"p99_us"`  // 99th percentile
	P999  float64 `json:"p999_us"` // 99.9th percentile
	Max   float64 `json:"max_us"`  // largest sample
	Mean  float64 `json:"mean_us"` // arithmetic mean
}

// Connections sums up the connections a run opened.
type Connections struct {
	// Attempted, Connected and Failed count connection attempts and their outcome.
	Attempted int `json:"attempted"`
	Connected int `json:"connected"`
	Failed    int `json:"failed"`
	// PerSecond is the rate at which connections were accepted (CONNACK received) while
	// opening them.
	PerSecond float64 `json:"per_second"`
	// Latency is the time from dialling to CONNACK.
	Latency Latency `json:"latency"`
	// ClosedByBroker counts connections the broker closed while the run held them.
	ClosedByBroker int `json:"closed_by_broker"`
}

// CPU is the CPU time the load generator used during the run.
type CPU struct {
	UserSeconds   float64 `json:"user_s"`
	SystemSeconds float64 `json:"system_s"`
	// Percent is user plus system time over the run's wall time (connection set-up and drain
	// included); 100 is one core.
	Percent float64 `json:"percent"`
	// MicrosPerMessage is user plus system time per message sent or received: the generator's
	// own cost, which bounds the rate it can drive.
	MicrosPerMessage float64 `json:"us_per_message,omitempty"`
}

// Summary is the outcome of a run. Rates are per second over the publishing phase (sent) or
// from its start to the last delivery (received).
type Summary struct {
	Mode        string  `json:"mode"`      // conn, pub, sub or scenario
	Addr        string  `json:"addr"`      // the broker
	ElapsedSecs float64 `json:"elapsed_s"` // the whole run, set-up and drain included

	Connections Connections `json:"connections"`
	Publishers  int         `json:"publishers"`
	Subscribers int         `json:"subscribers"`
	// ExtraSubscriptions is the number of extra (non-matching) subscriptions installed, and
	// SubscribePerSec the rate at which the broker acknowledged them.
	ExtraSubscriptions int     `json:"extra_subscriptions,omitempty"`
	SubscribePerSec    float64 `json:"subscribe_per_s,omitempty"`

	PubQoS int `json:"pub_qos"` // QoS of the PUBLISH packets
	SubQoS int `json:"sub_qos"` // QoS requested in SUBSCRIBE
	// PublishSecs is the length of the publishing phase: from the first PUBLISH until the broker
	// had taken the last one (its PUBACK or PUBREC at QoS 1/2; at QoS 0 the answer to a PINGREQ
	// written after it), so SentPerSec is the rate the broker took messages at.
	PublishSecs float64 `json:"publish_s"`
	// Sent counts PUBLISH packets written. Acked counts those the broker took: acknowledged
	// (PUBACK at QoS 1, PUBREC at QoS 2) or, at QoS 0, read before a PINGREQ it answered.
	// Unacked is the rest when the run stopped waiting (an error at QoS 1 and 2). SentPerSec is
	// Acked over PublishSecs: the rate the broker took messages at.
	Sent       uint64  `json:"sent"`
	SentPerSec float64 `json:"sent_per_s"`
	Acked      uint64  `json:"acked"`
	Unacked    uint64  `json:"unacked"`
	// Received counts PUBLISH packets the subscribers received, duplicates included.
	Received       uint64  `json:"received"`
	ReceivedPerSec float64 `json:"received_per_s"`
	// Expected is the number of distinct deliveries the run expected (each publisher's Acked
	// messages times its matching subscribers); 0 when unknown (a publish-only or
	// subscribe-only run).
	Expected uint64 `json:"expected"`
	// Lost is the number of expected deliveries that never arrived; Duplicates the number of
	// deliveries of a message the subscriber already had.
	Lost       uint64  `json:"lost"`
	LostPct    float64 `json:"lost_pct"`
	Duplicates uint64  `json:"duplicates"`
	// Latency is end to end, publisher to subscriber; AckLatency is PUBLISH to PUBACK (QoS 1) or
	// PUBCOMP (QoS 2) at the publisher.
	Latency    Latency `json:"latency"`
	AckLatency Latency `json:"ack_latency"`

	// Errors counts everything that went wrong (failed connections, connections the broker
	// closed, protocol surprises, stalled writes, unacknowledged QoS 1/2 messages); the first
	// few are in ErrorSamples.
	Errors       uint64   `json:"errors"`
	ErrorSamples []string `json:"error_samples,omitempty"`
	// CPU is the load generator's own CPU use.
	CPU CPU `json:"cpu"`
}

// deliveryQoS is the QoS at which messages reached the subscribers.
func (s *Summary) deliveryQoS() int { return min(s.PubQoS, s.SubQoS) }

// OK reports whether the run succeeded: no errors, and no loss when messages were delivered at
// QoS 1 or 2 (at QoS 0 a broker may drop; that is reported, not failed).
func (s *Summary) OK() bool {
	if s.Errors > 0 {
		return false
	}
	return s.Expected == 0 || s.deliveryQoS() == 0 || s.Lost == 0
}

// WriteJSON writes the summary as one indented JSON object.
func (s *Summary) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}

// WriteText writes the summary for people, one figure per line.
func (s *Summary) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "iotd bench %s against %s: %.2fs\n", s.Mode, s.Addr, s.ElapsedSecs)
	c := s.Connections
	fmt.Fprintf(&b, "  connections   %d/%d connected, %d failed, %s/s", c.Connected, c.Attempted, c.Failed, human(c.PerSecond))
	if c.Latency.Count > 0 {
		fmt.Fprintf(&b, ", connect p50 %s p99 %s max %s", us(c.Latency.P50), us(c.Latency.P99), us(c.Latency.Max))
	}
	if c.ClosedByBroker > 0 {
		fmt.Fprintf(&b, ", %d closed by the broker", c.ClosedByBroker)
	}
	b.WriteString("\n")
	if s.ExtraSubscriptions > 0 {
		fmt.Fprintf(&b, "  extra subs    %d installed (%s/s)\n", s.ExtraSubscriptions, human(s.SubscribePerSec))
	}
	if s.Publishers > 0 {
		fmt.Fprintf(&b, "  published     %d by %d publishers at QoS %d in %.2fs: %s msg/s", s.Sent, s.Publishers, s.PubQoS, s.PublishSecs, human(s.SentPerSec))
		if s.PubQoS > 0 {
			fmt.Fprintf(&b, ", %d acknowledged, %d unacknowledged", s.Acked, s.Unacked)
		} else if s.Unacked > 0 {
			fmt.Fprintf(&b, ", %d not yet read by the broker when the run ended", s.Unacked)
		}
		b.WriteString("\n")
	}
	if s.Subscribers > 0 {
		fmt.Fprintf(&b, "  received      %d by %d subscribers at QoS %d: %s msg/s\n", s.Received, s.Subscribers, s.SubQoS, human(s.ReceivedPerSec))
	}
	if s.Expected > 0 {
		fmt.Fprintf(&b, "  delivery      %d expected, %d lost (%.2f%%), %d duplicates\n", s.Expected, s.Lost, s.LostPct, s.Duplicates)
	} else if s.Duplicates > 0 {
		fmt.Fprintf(&b, "  delivery      %d duplicates\n", s.Duplicates)
	}
	writeLatency(&b, "latency", s.Latency)
	writeLatency(&b, "ack latency", s.AckLatency)
	fmt.Fprintf(&b, "  errors        %d\n", s.Errors)
	for _, e := range s.ErrorSamples {
		fmt.Fprintf(&b, "    %s\n", e)
	}
	fmt.Fprintf(&b, "  bench CPU     %.2fs user + %.2fs system = %.0f%% of one core", s.CPU.UserSeconds, s.CPU.SystemSeconds, s.CPU.Percent)
	if s.CPU.MicrosPerMessage > 0 {
		fmt.Fprintf(&b, ", %.2fµs per message sent or received", s.CPU.MicrosPerMessage)
	}
	b.WriteString("\n")
	if !s.OK() {
		b.WriteString("  result        FAILED\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeLatency(b *strings.Builder, name string, l Latency) {
	if l.Count == 0 {
		return
	}
	fmt.Fprintf(b, "  %-13s p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (%d samples)\n",
		name, us(l.P50), us(l.P90), us(l.P99), us(l.P999), us(l.Max), l.Count)
}

// us formats microseconds with a unit that keeps three significant digits readable.
func us(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fs", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.2fms", v/1e3)
	}
	return fmt.Sprintf("%.0fµs", v)
}

// human formats a rate with a k or M suffix.
func human(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}
