package store

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Policy says when committed operations are forced to the device (fsync) and so when they count
// as durable.
type Policy uint8

const (
	// FsyncAlways syncs every group as soon as it can: a group is durable when its fsync returns.
	// Operations that arrive while one group is being synced form the next group (group commit).
	FsyncAlways Policy = iota
	// FsyncInterval commits and syncs the operations gathered over each interval as one group: a
	// group is durable when its fsync returns, at most one interval (plus the fsync) after it began.
	// Fewer fsyncs than FsyncAlways, longer waits for acknowledgements.
	FsyncInterval
	// FsyncNever never syncs: a group counts as durable once the backend has taken it (committed
	// without a sync), and reaches the device when the engine or the operating system writes it.
	// Acknowledgements still wait for that commit, which keeps memory bounded when the disk is
	// slower than the clients, but a crash of the machine may lose acknowledged messages, and so
	// may a crash of the process when the engine buffers writes itself (Pebble does, briefly).
	FsyncNever
)

// ParsePolicy parses "always", "interval" or "never".
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "always":
		return FsyncAlways, nil
	case "interval":
		return FsyncInterval, nil
	case "never":
		return FsyncNever, nil
	}
	return 0, fmt.Errorf("unknown fsync policy %q (want always, interval or never)", s)
}

// String returns "always", "interval" or "never".
func (p Policy) String() string {
	switch p {
	case FsyncAlways:
		return "always"
	case FsyncInterval:
		return "interval"
	case FsyncNever:
		return "never"
	}
	return fmt.Sprintf("Policy(%d)", p)
}

// DefaultInterval is the group-commit interval of FsyncInterval when Options.Interval is 0.
const DefaultInterval = 10 * time.Millisecond

// Options configure a Log.
type Options struct {
	Fsync    Policy        // when groups are synced; the zero value is FsyncAlways
	Interval time.Duration // FsyncInterval's interval; 0 means DefaultInterval
	Logger   *slog.Logger  // receives commit failures; nil discards
}

// Log is the write side of a store: the broker appends operations, one goroutine commits them to
// the Backend in groups. It is safe for concurrent use.
//
// Appending never waits for I/O. Each group of operations appended between Begin and End gets the
// next sequence number, which Written reports; Durable reports the sequence number of the last
// group that reached the durability point of the fsync policy. A caller that must not let a client
// see a state change before it is durable notes Written after making the change and waits until
// Durable reaches it (see OnDurable).
type Log struct {
	be   Backend
	opts Options
	log  *slog.Logger

	// atomic keeps the committer from closing a group while a caller is between Atomic and its
	// release: the groups appended meanwhile are committed together (see Atomic).
	atomic sync.RWMutex

	mu     sync.Mutex
	cur    []Op   // the open group; guarded by mu
	seq    uint64 // sequence number of the last group with operations; guarded by mu
	nextID uint64 // next message id; guarded by mu
	stop   bool   // Close was called; guarded by mu
	tx     Tx

	written   atomic.Uint64
	durable   atomic.Uint64
	committed atomic.Uint64 // the last group handed to the backend
	failing   atomic.Bool   // the last commit failed; it is being retried

	wake chan struct{} // a group is waiting (capacity 1)
	quit chan struct{} // closed by Close
	done chan struct{} // closed when the committer returns

	onDurable atomic.Pointer[func(uint64)]

	waitMu   sync.Mutex
	waitCond *sync.Cond

	commits, syncs, ops atomic.Uint64
	closeErr            error // set by the committer before done is closed
}

// newLog starts the committer over be. nextID is the first message id to hand out.
func newLog(be Backend, opts Options, nextID uint64) *Log {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	l := &Log{
		be:     be,
		opts:   opts,
		log:    lg,
		nextID: max(nextID, 1),
		wake:   make(chan struct{}, 1),
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	l.tx.l = l
	l.waitCond = sync.NewCond(&l.waitMu)
	go l.run()
	return l
}

// OnDurable registers fn, called by the committer goroutine each time Durable advances, with the
// new value, replacing an earlier fn. It must not block for long: it delays the next commit.
func (l *Log) OnDurable(fn func(durable uint64)) { l.onDurable.Store(&fn) }

// Written returns the sequence number of the last group appended.
func (l *Log) Written() uint64 { return l.written.Load() }

// Durable returns the sequence number of the last group that is durable under the fsync policy.
func (l *Log) Durable() uint64 { return l.durable.Load() }

// Tx is an open group of operations, between Log.Begin and Tx.End. It holds the Log's lock: keep
// it short and do no I/O while it is open.
type Tx struct {
	l *Log
	n int
}

// Begin opens a group. The caller appends operations and calls End.
func (l *Log) Begin() *Tx {
	l.mu.Lock()
	l.tx.n = 0
	return &l.tx
}

// Append adds op to the group. Op's fields, including Payload and Session, must not be modified
// afterwards (the committer reads them later).
func (t *Tx) Append(op Op) {
	t.l.cur = append(t.l.cur, op)
	t.n++
}

// NewMessageID returns an identifier for a PutMessage that no stored message has.
func (t *Tx) NewMessageID() uint64 {
	id := t.l.nextID
	t.l.nextID++
	return id
}

// End closes the group and returns the sequence number it will be durable under: Written if it
// appended nothing.
func (t *Tx) End() uint64 {
	l := t.l
	if t.n > 0 && !l.stop {
		l.seq++
		l.written.Store(l.seq)
	}
	seq, n := l.seq, t.n
	l.mu.Unlock()
	if n > 0 {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
	return seq
}

// Atomic makes the groups appended until the returned release is called reach the backend in
// one commit, so that a crash keeps all of them or none. It is for a change that spans several
// critical sections of its callers, each with its own lock (receiving a QoS 2 message: its packet
// identifier, then a copy for every subscriber). Keep it short, do not nest it, and call release
// exactly once. The committer waits for it (and new calls wait for a waiting committer, so a
// stream of them cannot starve it).
func (l *Log) Atomic() (release func()) {
	l.atomic.RLock()
	return l.atomic.RUnlock
}

// Append is Begin, one Tx.Append and End.
func (l *Log) Append(op Op) uint64 {
	tx := l.Begin()
	tx.Append(op)
	return tx.End()
}

// Stats are counters of a Log.
type Stats struct {
	Commits uint64 // groups committed to the backend
	Syncs   uint64 // commits that were synced
	Ops     uint64 // operations committed
	Failing bool   // the last commit failed and is being retried
}

// Stats returns the log's counters.
func (l *Log) Stats() Stats {
	return Stats{Commits: l.commits.Load(), Syncs: l.syncs.Load(), Ops: l.ops.Load(), Failing: l.failing.Load()}
}

// WaitDurable blocks until Durable reaches seq or the log is closed.
func (l *Log) WaitDurable(seq uint64) { l.wait(&l.durable, seq) }

func (l *Log) wait(v *atomic.Uint64, seq uint64) {
	l.waitMu.Lock()
	for v.Load() < seq {
		select {
		case <-l.done:
			l.waitMu.Unlock()
			return
		default:
		}
		l.waitCond.Wait()
	}
	l.waitMu.Unlock()
}

// Flush waits until everything appended before the call is durable and committed to the backend
// (with FsyncNever, committed without a sync).
func (l *Log) Flush() {
	l.mu.Lock()
	seq := l.seq
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	l.wait(&l.committed, seq)
}

// Close commits what is pending with a sync, whatever the policy, stops the committer and closes
// the backend. Appends after Close are dropped.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.stop {
		l.mu.Unlock()
		<-l.done
		return l.closeErr
	}
	l.stop = true
	l.mu.Unlock()
	close(l.quit)
	<-l.done
	return l.closeErr
}

// run is the committer goroutine.
func (l *Log) run() {
	var spare []Op
	var lastSync time.Time
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer func() {
		l.waitMu.Lock()
		close(l.done)
		l.waitCond.Broadcast()
		l.waitMu.Unlock()
	}()
	for {
		final := false
		select {
		case <-l.wake:
		case <-l.quit:
			final = true
		}
		if !final && l.opts.Fsync == FsyncInterval {
			// Gather for the rest of the interval: one group, one fsync.
			if wait := l.opts.Interval - time.Since(lastSync); wait > 0 {
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-l.quit:
					timer.Stop()
					final = true
				}
			}
		}
		l.atomic.Lock()
		l.mu.Lock()
		ops, seq := l.cur, l.seq
		l.cur = spare[:0]
		l.mu.Unlock()
		l.atomic.Unlock()
		sync := final || l.opts.Fsync != FsyncNever
		err := l.commit(ops, sync)
		if sync && err == nil {
			lastSync = time.Now()
		}
		clear(ops) // drop references to payloads
		spare = ops[:0]
		if err != nil {
			// commit gives up only when Close was called: what it held is lost, and Close says so.
			l.closeErr = errors.Join(err, l.be.Close())
			return
		}
		l.committed.Store(seq)
		l.advance(seq)
		if final {
			l.closeErr = errors.Join(l.be.Sync(), l.be.Close())
			return
		}
	}
}

// commit commits ops, retrying with backoff while the backend fails, until it succeeds or the log
// is closed. Nothing that depends on ops is released meanwhile: acknowledgements wait.
func (l *Log) commit(ops []Op, sync bool) error {
	if len(ops) == 0 {
		return nil
	}
	backoff := 10 * time.Millisecond
	for {
		err := l.be.Commit(ops, sync)
		if err == nil {
			if l.failing.Swap(false) {
				l.log.Info("store commits succeed again")
			}
			l.commits.Add(1)
			l.ops.Add(uint64(len(ops)))
			if sync {
				l.syncs.Add(1)
			}
			return nil
		}
		if !l.failing.Swap(true) {
			l.log.Error("store commit failed; acknowledgements wait until it succeeds", "ops", len(ops), "error", err)
		}
		select {
		case <-l.quit:
			return fmt.Errorf("store: last commit before close failed: %w", err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// advance publishes seq as durable and committed, and tells whoever waits.
func (l *Log) advance(seq uint64) {
	if seq > l.durable.Load() {
		l.durable.Store(seq)
		if fn := l.onDurable.Load(); fn != nil {
			(*fn)(seq)
		}
	}
	l.waitMu.Lock()
	l.waitCond.Broadcast()
	l.waitMu.Unlock()
}
