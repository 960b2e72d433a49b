package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/topic"
)

// run is the state one runner shares with its clients.
type run struct {
	mode   string
	t      Target
	tag    uint32
	spread bool

	started     time.Time
	user0, sys0 time.Duration

	errs                         errorLog
	attempted, connected, failed atomic.Int64
	connSeq                      atomic.Int64 // numbers every connection of the run, for spreading
	connNanos                    atomic.Int64 // time spent opening connections

	connHist, e2eHist, ackHist *histogram

	sent, acked, received atomic.Uint64
	pubEnd                atomic.Int64                 // UnixNano when the last publisher stopped writing
	pubs                  atomic.Pointer[[]*publisher] // for the progress line, once all are connected

	// stop tells publishers to stop; abort is closed when the caller's context ends.
	stop, abort         chan struct{}
	stopOnce, abortOnce sync.Once
	stopAbortWatch      func() bool

	// wantReceived ends a subscribe-only run: enough is closed once received reaches it.
	wantReceived uint64
	enough       chan struct{}
	enoughOnce   sync.Once
}

func newRun(ctx context.Context, mode string, t Target, conns int) *run {
	u, s := cpuTime()
	r := &run{
		mode:     mode,
		t:        t,
		tag:      newRunTag(),
		spread:   t.SpreadAbove >= 0 && conns > t.SpreadAbove && isLoopback(t.Addr),
		started:  time.Now(),
		user0:    u,
		sys0:     s,
		connHist: newHistogram(),
		e2eHist:  newHistogram(),
		ackHist:  newHistogram(),
		stop:     make(chan struct{}),
		abort:    make(chan struct{}),
		enough:   make(chan struct{}),
	}
	r.stopAbortWatch = context.AfterFunc(ctx, func() {
		r.abortOnce.Do(func() { close(r.abort) })
		r.stopPublishing()
	})
	return r
}

func (r *run) stopPublishing() { r.stopOnce.Do(func() { close(r.stop) }) }

func (r *run) pubDone(t time.Time) {
	for {
		old := r.pubEnd.Load()
		if t.UnixNano() <= old || r.pubEnd.CompareAndSwap(old, t.UnixNano()) {
			return
		}
	}
}

func (r *run) checkReceived() {
	if r.wantReceived > 0 && r.received.Load() >= r.wantReceived {
		r.enoughOnce.Do(func() { close(r.enough) })
	}
}

// openAll opens n connections with ids ClientPrefix+kind+index, at most Workers at a time and
// each start at least Interval after the previous one, and runs setup on each. The result is
// indexed like the connections; a failed one is nil and counted as an error.
func (r *run) openAll(ctx context.Context, n int, kind string, bufSize int, setup func(i int, c *client) error) []*client {
	clients := make([]*client, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for range min(n, r.t.Workers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var timer *time.Timer
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if r.t.Interval > 0 {
					if d := time.Until(t0.Add(time.Duration(i) * r.t.Interval)); d > 0 {
						if timer == nil {
							timer = time.NewTimer(d)
						} else {
							timer.Reset(d)
						}
						select {
						case <-ctx.Done():
							timer.Stop()
							return
						case <-timer.C:
						}
					}
				}
				r.attempted.Add(1)
				begin := time.Now()
				c, err := r.dial(ctx, fmt.Sprintf("%s%s%d", r.t.ClientPrefix, kind, i), int(r.connSeq.Add(1)-1), bufSize)
				if err == nil {
					r.connHist.recordAll([]int64{int64(time.Since(begin))})
					if setup != nil {
						if err = setup(i, c); err != nil {
							c.nc.Close()
						}
					}
				}
				if err != nil {
					r.failed.Add(1)
					r.errs.add(err)
					continue
				}
				r.connected.Add(1)
				clients[i] = c
			}
		}()
	}
	wg.Wait()
	r.connNanos.Add(int64(time.Since(t0)))
	return clients
}

// pingLoop keeps connections that nobody reads or writes alive: every quarter keep-alive it
// sends PINGREQ on each that has been quiet for half of it. The answers stay unread in the
// socket, two bytes each. It returns when stop is closed.
func (r *run) pingLoop(clients []*client, stop <-chan struct{}) {
	ka := r.t.KeepAlive
	if ka <= 0 {
		return
	}
	tick := time.NewTicker(ka / 4)
	defer tick.Stop()
	ping := []byte{byte(packet.TypePingreq) << 4, 0}
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			for _, c := range clients {
				if c == nil || time.Duration(now.UnixNano()-c.lastWrite.Load()) < ka/2 {
					continue
				}
				if err := c.write(ping); err != nil && !c.closing.Load() {
					r.errs.add(fmt.Errorf("%s: write PINGREQ: %w", c.id, err))
				}
			}
		}
	}
}

// progress prints a line per ProgressInterval until the returned function is called.
func (r *run) progress(line func(elapsed time.Duration, dt float64) string) (stop func()) {
	if r.t.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(r.t.ProgressInterval)
		defer tick.Stop()
		last := time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				fmt.Fprintln(r.t.Progress, line(now.Sub(r.started), now.Sub(last).Seconds()))
				last = now
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// loadLine returns the progress line function of a publish/subscribe run.
func (r *run) loadLine() func(time.Duration, float64) string {
	var lastSent, lastRecv uint64
	return func(elapsed time.Duration, dt float64) string {
		sent, recv := r.sent.Load(), r.received.Load()
		var b strings.Builder
		fmt.Fprintf(&b, "[%6.1fs] conns %d", elapsed.Seconds(), r.connected.Load())
		if f := r.failed.Load(); f > 0 {
			fmt.Fprintf(&b, " (%d failed)", f)
		}
		fmt.Fprintf(&b, "  sent %d (%s/s)  recv %d (%s/s)", sent, human(float64(sent-lastSent)/dt), recv, human(float64(recv-lastRecv)/dt))
		inflight := 0
		if pubs := r.pubs.Load(); pubs != nil {
			for _, p := range *pubs {
				inflight += p.inflight()
			}
		}
		if inflight > 0 {
			fmt.Fprintf(&b, "  inflight %d", inflight)
		}
		fmt.Fprintf(&b, "  errors %d", r.errs.n.Load())
		lastSent, lastRecv = sent, recv
		return b.String()
	}
}

// load describes a publish and/or subscribe run.
type load struct {
	pub          *Publishers // nil: no publishers
	sub          *Subscribers
	duration     time.Duration
	drain        time.Duration
	maxDrain     time.Duration
	extra        int
	extraFilter  string
	extraPerConn int
}

// RunPub runs publishers only. The returned error reports invalid options; failures of the run
// itself are in the Summary (see Summary.OK).
func RunPub(ctx context.Context, o PubOptions) (*Summary, error) {
	o.Target.setDefaults()
	o.Publishers.setDefaults()
	if err := joinValid(o.Target.validate(), o.Publishers.validate(), durationValid(o.Duration, o.Drain)); err != nil {
		return nil, err
	}
	if o.Duration == 0 && o.Messages == 0 {
		o.Duration = DefaultDuration
	}
	if o.Drain == 0 {
		o.Drain = DefaultDrain
	}
	if o.MaxDrain <= 0 {
		o.MaxDrain = DefaultMaxDrain
	}
	return execute(ctx, "pub", o.Target, load{pub: &o.Publishers, duration: o.Duration, drain: o.Drain, maxDrain: o.MaxDrain}), nil
}

// RunSub runs subscribers only, until they received Messages in total or Duration passed.
func RunSub(ctx context.Context, o SubOptions) (*Summary, error) {
	o.Target.setDefaults()
	o.Subscribers.setDefaults()
	if err := joinValid(o.Target.validate(), o.Subscribers.validate(), durationValid(o.Duration, 0)); err != nil {
		return nil, err
	}
	if o.Duration == 0 && o.Messages == 0 {
		o.Duration = DefaultDuration
	}
	return execute(ctx, "sub", o.Target, load{sub: &o.Subscribers, duration: o.Duration}), nil
}

// RunScenario connects the subscribers (and the extra subscriptions), then runs the publishers,
// then waits until every expected delivery arrived or none arrived for Drain.
func RunScenario(ctx context.Context, o ScenarioOptions) (*Summary, error) {
	o.Target.setDefaults()
	o.Pub.setDefaults()
	o.Sub.setDefaults()
	errs := []error{o.Target.validate(), o.Pub.validate(), o.Sub.validate(), durationValid(o.Duration, o.Drain)}
	if o.ExtraSubs < 0 {
		errs = append(errs, fmt.Errorf("extra subscriptions %d: negative", o.ExtraSubs))
	}
	if o.ExtraFilter == "" {
		o.ExtraFilter = DefaultExtraFilter
	}
	if o.ExtraPerConn <= 0 {
		o.ExtraPerConn = DefaultExtraPerConn
	}
	if o.ExtraSubs > 0 {
		errs = append(errs, extraValid(o.ExtraFilter, o.Pub))
	}
	if err := joinValid(errs...); err != nil {
		return nil, err
	}
	if o.Duration == 0 && o.Pub.Messages == 0 {
		o.Duration = DefaultDuration
	}
	if o.Drain == 0 {
		o.Drain = DefaultDrain
	}
	if o.MaxDrain <= 0 {
		o.MaxDrain = DefaultMaxDrain
	}
	o.Sub.Messages = 0
	return execute(ctx, "scenario", o.Target, load{
		pub: &o.Pub, sub: &o.Sub, duration: o.Duration, drain: o.Drain, maxDrain: o.MaxDrain,
		extra: o.ExtraSubs, extraFilter: o.ExtraFilter, extraPerConn: o.ExtraPerConn,
	}), nil
}

func durationValid(d, drain time.Duration) error {
	if d < 0 {
		return fmt.Errorf("duration %v: negative", d)
	}
	if drain < 0 {
		return fmt.Errorf("drain %v: negative", drain)
	}
	return nil
}

// extraValid checks that the extra filters are valid and match none of the publishers' topics,
// which would make them part of the measured deliveries.
func extraValid(tmpl string, p Publishers) error {
	for _, i := range []int{0, 1, p.Count - 1} {
		f := expand(tmpl, i)
		if err := topic.ValidateFilter(f); err != nil {
			return fmt.Errorf("extra filter %q: %w", tmpl, err)
		}
		for _, j := range []int{0, 1, p.Count - 1} {
			if t := expand(p.Topic, max(j, 0)); topic.Match(f, []byte(t)) {
				return fmt.Errorf("extra filter %q matches topic %q: extra subscriptions must not match", f, t)
			}
		}
	}
	return nil
}

func joinValid(errs ...error) error {
	var msgs []string
	for _, e := range errs {
		if e != nil {
			msgs = append(msgs, e.Error())
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return fmt.Errorf("invalid options: %s", strings.Join(msgs, "; "))
}

// execute runs a load and returns its summary.
func execute(ctx context.Context, mode string, t Target, l load) *Summary {
	nconn, nextra := 0, 0
	if l.pub != nil {
		nconn += l.pub.Count
	}
	if l.sub != nil {
		nconn += l.sub.Count
	}
	if l.extra > 0 {
		nextra = (l.extra + l.extraPerConn - 1) / l.extraPerConn
	}
	r := newRun(ctx, mode, t, nconn+nextra)
	defer r.stopAbortWatch()
	if l.sub != nil && l.pub == nil {
		r.wantReceived = uint64(l.sub.Messages)
	}
	sum := &Summary{Mode: mode, Addr: t.Addr}
	var pubs []*publisher
	var subs []*subscriber
	var extras []*client
	stopProgress := r.progress(r.loadLine())

	// Extra subscriptions first, so the broker's index is full before anything is measured.
	if l.extra > 0 {
		t0 := time.Now()
		extras = r.openAll(ctx, nextra, "x", 512, func(i int, c *client) error {
			lo, hi := i*l.extraPerConn, min((i+1)*l.extraPerConn, l.extra)
			filters := make([]string, 0, hi-lo)
			for k := lo; k < hi; k++ {
				filters = append(filters, expand(l.extraFilter, k))
			}
			return c.subscribe(filters, packet.QoS0, 100, r.t.Timeout+time.Duration(len(filters))*time.Millisecond)
		})
		sum.ExtraSubscriptions = l.extra
		sum.SubscribePerSec = float64(l.extra) / time.Since(t0).Seconds()
	}
	pingStop := make(chan struct{})
	var pingWG sync.WaitGroup
	pingWG.Add(1)
	go func() { defer pingWG.Done(); r.pingLoop(extras, pingStop) }()

	if l.sub != nil {
		sum.Subscribers, sum.SubQoS = l.sub.Count, int(l.sub.QoS)
		clients := r.openAll(ctx, l.sub.Count, "s", subBufSize, func(i int, c *client) error {
			return c.subscribe([]string{expand(l.sub.Filter, i)}, l.sub.QoS, 1, r.t.Timeout)
		})
		for i, c := range clients {
			if c != nil {
				s := newSubscriber(r, c, i, expand(l.sub.Filter, i))
				subs = append(subs, s)
				go s.readLoop()
			}
		}
	}
	if l.pub != nil {
		sum.Publishers, sum.PubQoS = l.pub.Count, int(l.pub.QoS)
		clients := r.openAll(ctx, l.pub.Count, "p", 4096, nil)
		for i, c := range clients {
			if c != nil {
				p := newPublisher(r, c, i, l.pub)
				pubs = append(pubs, p)
				go p.readLoop()
			}
		}
		r.pubs.Store(&pubs)
	}

	start := time.Now()
	if r.errs.n.Load() == 0 && ctx.Err() == nil {
		if l.pub != nil {
			r.publish(pubs, l.duration, l.drain, l.maxDrain)
			sum.PublishSecs = time.Duration(r.pubEnd.Load() - start.UnixNano()).Seconds()
			if l.sub != nil {
				r.drain(pubs, subs, l.drain, l.maxDrain)
			}
		} else {
			var deadline <-chan time.Time
			if l.duration > 0 {
				timer := time.NewTimer(l.duration)
				defer timer.Stop()
				deadline = timer.C
			}
			select {
			case <-deadline:
			case <-r.enough:
			case <-r.abort:
			}
		}
	}

	// Tear down: publishers first, so nothing new is in flight, then subscribers.
	close(pingStop)
	pingWG.Wait()
	for _, p := range pubs {
		p.c.close()
		<-p.readerDone
	}
	for _, s := range subs {
		s.c.close()
		<-s.done
	}
	for _, c := range extras {
		if c != nil {
			c.close()
		}
	}
	stopProgress()
	r.account(sum, l, pubs, subs, start)
	return sum
}

// publish runs the publishers until they are done (message bound, duration or abort) and their
// acknowledgements are in.
func (r *run) publish(pubs []*publisher, d, drain, maxDrain time.Duration) {
	start := time.Now()
	r.pubEnd.Store(start.UnixNano())
	if d > 0 {
		timer := time.AfterFunc(d, r.stopPublishing)
		defer timer.Stop()
	}
	var wg sync.WaitGroup
	for _, p := range pubs {
		wg.Add(1)
		go func() { defer wg.Done(); p.run(start, drain, maxDrain) }()
	}
	wg.Wait()
}

// drain waits until the subscribers received every expected delivery, or none arrived for
// drain, or maxDrain passed, or the run is aborted.
func (r *run) drain(pubs []*publisher, subs []*subscriber, drain, maxDrain time.Duration) {
	want := expectedDeliveries(pubs, subs)
	last, lastChange := r.received.Load(), time.Now()
	giveUp := lastChange.Add(maxDrain)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for r.received.Load() < want {
		select {
		case <-r.abort:
			return
		case now := <-tick.C:
			if n := r.received.Load(); n != last {
				last, lastChange = n, now
			} else if now.Sub(lastChange) > drain {
				return
			}
			if now.After(giveUp) {
				r.errs.add(fmt.Errorf("stopped waiting for %d missing deliveries %v after publishing ended", want-r.received.Load(), maxDrain))
				return
			}
		}
	}
}

// deliverable is what a publisher handed to the broker: the messages it acknowledged (QoS 1
// and 2) or read before an answered PINGREQ (QoS 0).
func (p *publisher) deliverable() uint64 { return p.acked.Load() }

// expectedDeliveries is the number of deliveries the subscribers should receive: each
// publisher's deliverable messages once per subscriber whose filter matches its topic.
func expectedDeliveries(pubs []*publisher, subs []*subscriber) uint64 {
	var n uint64
	for _, p := range pubs {
		for _, s := range subs {
			if topic.Match(s.filter, []byte(p.topic)) {
				n += p.deliverable()
			}
		}
	}
	return n
}

// account fills in the summary once every client goroutine has ended.
func (r *run) account(sum *Summary, l load, pubs []*publisher, subs []*subscriber, start time.Time) {
	end := time.Now()
	sum.ElapsedSecs = end.Sub(r.started).Seconds()
	sum.Connections = Connections{
		Attempted: int(r.attempted.Load()),
		Connected: int(r.connected.Load()),
		Failed:    int(r.failed.Load()),
		Latency:   r.connHist.latency(),
	}
	if ns := r.connNanos.Load(); ns > 0 {
		sum.Connections.PerSecond = float64(sum.Connections.Connected) / time.Duration(ns).Seconds()
	}
	sum.Sent = r.sent.Load()
	for _, p := range pubs {
		sum.Acked += p.acked.Load()
		if p.o.QoS > packet.QoS0 {
			sum.Unacked += p.sent.Load() - p.completed.Load()
		} else {
			sum.Unacked += p.sent.Load() - p.acked.Load()
		}
	}
	if sum.PublishSecs > 0 {
		sum.SentPerSec = float64(sum.Acked) / sum.PublishSecs
	}
	if sum.Unacked > 0 && sum.PubQoS > 0 {
		r.errs.add(fmt.Errorf("%d QoS %d messages were not acknowledged within the drain time (%v without progress)", sum.Unacked, sum.PubQoS, l.drain))
	}
	sum.Received = r.received.Load()
	var first, last int64
	for _, s := range subs {
		if f := s.firstRecv.Load(); f != 0 && (first == 0 || f < first) {
			first = f
		}
		last = max(last, s.lastRecv.Load())
		for i := range s.own {
			sum.Duplicates += s.own[i].dups
		}
		for _, t := range s.others {
			sum.Duplicates += t.dups
		}
	}
	if l.pub != nil {
		first = start.UnixNano() // end to end: from the first publish to the last delivery
	}
	if last > first {
		sum.ReceivedPerSec = float64(sum.Received) / time.Duration(last-first).Seconds()
	}
	if l.pub != nil && l.sub != nil {
		for _, s := range subs {
			for _, p := range pubs {
				if !topic.Match(s.filter, []byte(p.topic)) {
					continue
				}
				want := p.deliverable()
				sum.Expected += want
				var got uint64
				if p.idx < len(s.own) {
					got = s.own[p.idx].unique
				}
				if got < want {
					sum.Lost += want - got
				}
			}
		}
		if sum.Expected > 0 {
			sum.LostPct = 100 * float64(sum.Lost) / float64(sum.Expected)
		}
		if sum.deliveryQoS() == 2 && sum.Duplicates > 0 {
			r.errs.add(fmt.Errorf("%d duplicate deliveries at QoS 2 (exactly once)", sum.Duplicates))
		}
	}
	sum.Latency = r.e2eHist.latency()
	sum.AckLatency = r.ackHist.latency()
	sum.Errors = r.errs.n.Load()
	sum.ErrorSamples = r.errs.list()
	r.fillCPU(sum, end)
}

func (r *run) fillCPU(sum *Summary, end time.Time) {
	u, s := cpuTime()
	sum.CPU.UserSeconds = (u - r.user0).Seconds()
	sum.CPU.SystemSeconds = (s - r.sys0).Seconds()
	if wall := end.Sub(r.started).Seconds(); wall > 0 {
		sum.CPU.Percent = 100 * (sum.CPU.UserSeconds + sum.CPU.SystemSeconds) / wall
	}
	if msgs := sum.Sent + sum.Received; msgs > 0 {
		sum.CPU.MicrosPerMessage = (sum.CPU.UserSeconds + sum.CPU.SystemSeconds) * 1e6 / float64(msgs)
	}
}
