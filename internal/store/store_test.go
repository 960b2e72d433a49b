package store_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/store"
	"github.com/iotd/iotd/internal/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformanceMemory(t *testing.T) {
	var mu sync.Mutex
	mems := map[string]*store.Memory{}
	storetest.Run(t, func(t *testing.T, dir string) store.Backend {
		mu.Lock()
		defer mu.Unlock()
		if mems[dir] == nil {
			mems[dir] = store.NewMemory()
		}
		return mems[dir]
	})
}

func TestParsePolicy(t *testing.T) {
	for _, p := range []store.Policy{store.FsyncAlways, store.FsyncInterval, store.FsyncNever} {
		got, err := store.ParsePolicy(p.String())
		if err != nil || got != p {
			t.Errorf("ParsePolicy(%q) = %v, %v", p.String(), got, err)
		}
	}
	if _, err := store.ParsePolicy("sometimes"); err == nil {
		t.Error("ParsePolicy accepted \"sometimes\"")
	}
	if s := store.Policy(9).String(); s != "Policy(9)" {
		t.Errorf("String = %q", s)
	}
}

func TestKindString(t *testing.T) {
	if s := store.PutSession.String(); s != "PutSession" {
		t.Errorf("got %q", s)
	}
	if s := store.DeleteInbound.String(); s != "DeleteInbound" {
		t.Errorf("got %q", s)
	}
	if s := store.Kind(0).String(); s != "Kind(0)" {
		t.Errorf("got %q", s)
	}
}

func TestCorruptError(t *testing.T) {
	inner := errors.New("bad magic")
	err := store.Corrupt("/var/lib/iotd/pebble", "MANIFEST does not decode", inner)
	if !errors.Is(err, store.ErrCorrupt) || !errors.Is(err, inner) {
		t.Fatalf("%v does not wrap ErrCorrupt and the cause", err)
	}
	for _, want := range []string{"/var/lib/iotd/pebble", "MANIFEST does not decode", "bad magic", "move-aside", "Nothing was changed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err.Error(), want)
		}
	}
	if err := store.Corrupt("p", "d", nil); !errors.Is(err, store.ErrCorrupt) || strings.Contains(err.Error(), "<nil>") {
		t.Errorf("without cause: %v", err)
	}
}

func TestMoveAside(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	to, err := store.MoveAside(dir, time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if want := dir + ".corrupt-20261130T060000Z"; to != want {
		t.Fatalf("moved to %s; want %s", to, want)
	}
	if _, err := os.Stat(filepath.Join(to, "f")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("old path still there: %v", err)
	}
	if _, err := store.MoveAside(dir, time.Now()); err == nil {
		t.Fatal("moving a missing store succeeded")
	}
}

// flaky fails its first n commits, and reports version errors on demand.
type flaky struct {
	*store.Memory
	mu         sync.Mutex
	failures   int
	versionErr error
	setErr     error
	commitErr  error
}

func (f *flaky) Commit(ops []store.Op, sync bool) error {
	f.mu.Lock()
	if f.failures > 0 {
		f.failures--
		f.mu.Unlock()
		return errors.New("disk full")
	}
	err := f.commitErr
	f.mu.Unlock()
	if err != nil {
		return err
	}
	return f.Memory.Commit(ops, sync)
}

func (f *flaky) Version() (int, error) {
	if f.versionErr != nil {
		return 0, f.versionErr
	}
	return f.Memory.Version()
}

func (f *flaky) SetVersion(v int) error {
	if f.setErr != nil {
		return f.setErr
	}
	return f.Memory.SetVersion(v)
}

func TestCommitFailureIsRetried(t *testing.T) {
	be := &flaky{Memory: store.NewMemory(), failures: 3}
	l, _, err := store.Open(be, "mem", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	seq := l.Append(store.Op{Kind: store.PutRetained, Name: "r", Payload: []byte("x")})
	l.WaitDurable(seq)
	if d := l.Durable(); d != seq {
		t.Fatalf("Durable = %d; want %d", d, seq)
	}
	if l.Stats().Failing {
		t.Fatal("still failing after success")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := storetest.Records(t, be.Memory); len(got) != 1 {
		t.Fatalf("records %q", got)
	}
}

func TestCloseWhileFailing(t *testing.T) {
	be := &flaky{Memory: store.NewMemory(), commitErr: errors.New("disk gone")}
	l, _, err := store.Open(be, "mem", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l.Append(store.Op{Kind: store.PutRetained, Name: "r", Payload: []byte("x")})
	deadline := time.Now().Add(10 * time.Second)
	for !l.Stats().Failing {
		if time.Now().After(deadline) {
			t.Fatal("the failing commit was not reported")
		}
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
	if err := l.Close(); err == nil || !strings.Contains(err.Error(), "disk gone") {
		t.Fatalf("Close = %v; want the commit error", err)
	}
	l.WaitDurable(1) // returns at once: the log is closed
}

func TestOpenErrors(t *testing.T) {
	if _, _, err := store.Open(&flaky{Memory: store.NewMemory(), versionErr: errors.New("io")}, "p", store.Options{}); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("unreadable version: %v", err)
	}
	if _, _, err := store.Open(&flaky{Memory: store.NewMemory(), setErr: errors.New("ro")}, "p", store.Options{}); err == nil || errors.Is(err, store.ErrCorrupt) {
		t.Errorf("read-only store: %v", err)
	}
	m := store.NewMemory()
	if err := m.Commit([]store.Op{{Kind: store.PutSubscription, ClientID: "ghost", Name: "f"}}, true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.Open(&flaky{Memory: m, commitErr: errors.New("ro")}, "p", store.Options{}); err == nil {
		t.Error("failed orphan clean-up not reported")
	}
	if err := m.Commit([]store.Op{{Kind: 0}}, true); err == nil {
		t.Error("Commit accepted an unknown kind")
	}
}

type badLoad struct{ *store.Memory }

func (b badLoad) Load(fn func(*store.Op) error) error {
	return fn(&store.Op{Kind: store.DeleteRetained, Name: "x"})
}

type nilSession struct{ *store.Memory }

func (b nilSession) Load(fn func(*store.Op) error) error {
	return fn(&store.Op{Kind: store.PutSession, ClientID: "x"})
}

func TestOpenRejectsBadLoads(t *testing.T) {
	for name, be := range map[string]store.Backend{"delete op": badLoad{store.NewMemory()}, "session without data": nilSession{store.NewMemory()}} {
		if _, _, err := store.Open(be, "p", store.Options{}); !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("%s: Open = %v; want ErrCorrupt", name, err)
		}
	}
}

func TestOutboundWithoutMessageIsDropped(t *testing.T) {
	m := store.NewMemory()
	err := m.Commit([]store.Op{
		{Kind: store.PutSession, ClientID: "c", Session: &store.Session{ClientID: "c"}},
		{Kind: store.PutOutbound, ClientID: "c", Outbound: store.Outbound{Seq: 1, MsgID: 5, QoS: packet.QoS1, State: store.AwaitPuback, PacketID: 1}},
		{Kind: store.PutOutbound, ClientID: "c", Outbound: store.Outbound{Seq: 2, QoS: packet.QoS2, State: store.AwaitPubcomp, PacketID: 2}},
		{Kind: store.PutInbound, ClientID: "ghost", PacketID: 3},
		{Kind: store.PutOutbound, ClientID: "ghost", Outbound: store.Outbound{Seq: 1, State: store.AwaitPubcomp, PacketID: 2}},
	}, true)
	if err != nil {
		t.Fatal(err)
	}
	l, rec, err := store.Open(m, "mem", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if rec.Removed != 3 || len(rec.Sessions) != 1 || len(rec.Sessions[0].Outbound) != 1 || rec.Sessions[0].Outbound[0].Seq != 2 {
		t.Fatalf("recovered %+v (%+v)", rec, rec.Sessions)
	}
}

func BenchmarkLogAppend(b *testing.B) {
	l, _, err := store.Open(store.NewMemory(), "mem", store.Options{Fsync: store.FsyncNever})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	payload := make([]byte, 100)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		tx := l.Begin()
		id := tx.NewMessageID()
		tx.Append(store.Op{Kind: store.PutMessage, ID: id, Name: "bench/t", Payload: payload, QoS: packet.QoS1})
		tx.Append(store.Op{Kind: store.PutOutbound, ClientID: "c", Outbound: store.Outbound{Seq: uint64(i), MsgID: id, QoS: packet.QoS1, State: store.AwaitPuback, PacketID: 1}})
		tx.End()
	}
}

// recording remembers the size of every commit.
type recording struct {
	*store.Memory
	mu    sync.Mutex
	sizes []int
}

func (r *recording) Commit(ops []store.Op, sync bool) error {
	r.mu.Lock()
	r.sizes = append(r.sizes, len(ops))
	r.mu.Unlock()
	return r.Memory.Commit(ops, sync)
}

func TestAtomicGroupsCommitTogether(t *testing.T) {
	be := &recording{Memory: store.NewMemory()}
	l, _, err := store.Open(be, "mem", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for round := range 50 {
		release := l.Atomic()
		l.Append(store.Op{Kind: store.PutInbound, ClientID: "c", PacketID: uint16(round + 1)})
		// The committer is woken by the first group; it must not take it alone. The pause widens
		// the window in which it would (it synchronises nothing: the test passes with or without
		// it when Atomic works, and fails in most rounds without Atomic).
		time.Sleep(200 * time.Microsecond)
		for i := range 3 {
			l.Append(store.Op{Kind: store.PutRetained, Name: fmt.Sprint(round, "/", i), Payload: []byte("x")})
		}
		release()
		l.Flush()
	}
	be.mu.Lock()
	defer be.mu.Unlock()
	for i, n := range be.sizes {
		if n%4 != 0 {
			t.Fatalf("commit %d held %d operations: an atomic group of 4 was split (%v)", i, n, be.sizes)
		}
	}
}
