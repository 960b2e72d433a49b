package sqlite

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/store"
	"github.com/iotd/iotd/internal/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// open opens a backend in dir with opts and closes it when the test ends.
func open(t testing.TB, dir string, opts ...Options) *Backend {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	b, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func commit(t testing.TB, b *Backend, sync bool, ops ...store.Op) {
	t.Helper()
	if err := b.Commit(ops, sync); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

func ret(topic, payload string) store.Op {
	return store.Op{Kind: store.PutRetained, Name: topic, Payload: []byte(payload)}
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dir string) store.Backend { return open(t, dir) })
}

// pragma returns the value of a PRAGMA on b's connection.
func pragma(t *testing.T, b *Backend, name string) string {
	t.Helper()
	var v string
	if err := b.conn.QueryRowContext(context.Background(), "PRAGMA "+name).Scan(&v); err != nil {
		t.Fatalf("PRAGMA %s: %v", name, err)
	}
	return v
}

func TestOpenCreatesAndCloseLeavesOneFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "store")
	b := open(t, dir)
	commit(t, b, false, ret("t", "p"))
	if _, err := os.Stat(filepath.Join(dir, FileName+"-wal")); err != nil {
		t.Fatalf("no WAL while open: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, FileName+"-shm")); err == nil {
		t.Fatal("a -shm file exists; the exclusive locking mode should keep the WAL index in memory")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{FileName}) {
		t.Fatalf("after Close the directory holds %q; want only %s", names, FileName)
	}
}

func TestPragmas(t *testing.T) {
	b := open(t, t.TempDir(), Options{CacheKiB: 1234, AutoCheckpoint: 77})
	for _, c := range []struct{ name, want string }{
		{"journal_mode", "wal"},
		{"locking_mode", "exclusive"},
		{"cache_size", "-1234"},
		{"wal_autocheckpoint", "77"},
		{"application_id", "1768903748"},
		{"user_version", "1"},
	} {
		if got := pragma(t, b, c.name); got != c.want {
			t.Errorf("PRAGMA %s = %s; want %s", c.name, got, c.want)
		}
	}
}

// The pragma follows each commit's sync flag: FULL fsyncs the WAL at commit, NORMAL does not.
func TestCommitSwitchesSynchronous(t *testing.T) {
	b := open(t, t.TempDir())
	for _, c := range []struct {
		sync bool
		want string
	}{{false, "1"}, {false, "1"}, {true, "2"}, {true, "2"}, {false, "1"}} {
		commit(t, b, c.sync, ret("t", "p"))
		if got := pragma(t, b, "synchronous"); got != c.want {
			t.Fatalf("after Commit(sync=%v) synchronous = %s; want %s", c.sync, got, c.want)
		}
	}
	if err := b.SetVersion(3); err != nil {
		t.Fatal(err)
	}
	if got := pragma(t, b, "synchronous"); got != "2" {
		t.Fatalf("after SetVersion synchronous = %s; want 2 (durable)", got)
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	commit(t, b, false, ret("u", "p"))
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	// After Sync the database file alone holds every commit: a copy of it without the WAL has them.
	data, err := os.ReadFile(b.path) // drops the process's locks on it; b is not used afterwards
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, FileName), data, 0o600)
	if got := storetest.Records(t, open(t, dir)); len(got) != 2 {
		t.Fatalf("records in the database file after Sync = %q; want 2", got)
	}
}

func TestSecondOpenIsRefused(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir)
	commit(t, b, true, ret("t", "p"))
	b2, err := Open(dir, Options{})
	if err == nil {
		b2.Close()
		t.Fatal("a second Open of the same store succeeded")
	}
	if errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Open = %v; want an in-use error that is not ErrCorrupt", err)
	}
	// The first one still works.
	commit(t, b, true, ret("u", "p"))
}

func TestClosed(t *testing.T) {
	b := open(t, t.TempDir())
	b.Close()
	for name, err := range map[string]error{
		"Commit":     b.Commit([]store.Op{ret("t", "p")}, true),
		"Load":       b.Load(func(*store.Op) error { return nil }),
		"Sync":       b.Sync(),
		"SetVersion": b.SetVersion(1),
	} {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close = %v; want ErrClosed", name, err)
		}
	}
	if _, err := b.Version(); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Version after Close = %v; want ErrClosed", err)
	}
}

func TestCommitRejects(t *testing.T) {
	for _, c := range []struct {
		name string
		op   store.Op
	}{
		{"kind 0", store.Op{}},
		{"unknown kind", store.Op{Kind: store.DeleteInbound + 1}},
		{"PutSession without a session", store.Op{Kind: store.PutSession, ClientID: "c"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := open(t, t.TempDir())
			err := b.Commit([]store.Op{ret("t", "p"), c.op}, true)
			if err == nil {
				t.Fatal("Commit succeeded")
			}
			if got := storetest.Records(t, b); len(got) != 0 {
				t.Fatalf("records after a rejected Commit: %q", got)
			}
		})
	}
	t.Run("empty", func(t *testing.T) {
		b := open(t, t.TempDir())
		if err := b.Commit(nil, true); err != nil {
			t.Fatal(err)
		}
	})
}

// A statement that fails in the middle of a group rolls the whole group back.
func TestCommitIsAtomic(t *testing.T) {
	b := open(t, t.TempDir())
	commit(t, b, true, ret("before", "p"))
	b.st[stPutInbound].Close() // the next PutInbound fails
	err := b.Commit([]store.Op{ret("t", "p"), {Kind: store.PutInbound, ClientID: "c", PacketID: 1}}, true)
	if err == nil {
		t.Fatal("Commit with a closed statement succeeded")
	}
	if got, want := storetest.Records(t, b), []string{`retained "before" 70 q0`}; !slices.Equal(got, want) {
		t.Fatalf("records = %q; want %q", got, want)
	}
	// The connection is usable again.
	commit(t, b, true, ret("after", "p"))
}

// Client ids, topics and filters are arbitrary bytes to the store: the keys compare whole values,
// so NUL bytes and invalid UTF-8 neither truncate nor match a prefix.
func TestUnusualKeys(t *testing.T) {
	b := open(t, t.TempDir())
	ids := []string{"a", "a\x00", "a\x00b", "\xff\xfe", "a\xff", "%", "_", "a%"}
	var ops []store.Op
	for _, id := range ids {
		ops = append(ops,
			store.Op{Kind: store.PutSession, ClientID: id, Session: &store.Session{ClientID: id}},
			store.Op{Kind: store.PutSubscription, ClientID: id, Name: id + "/#"},
			store.Op{Kind: store.PutInbound, ClientID: id, PacketID: 1},
			store.Op{Kind: store.PutRetained, Name: id, Payload: []byte(id)})
	}
	commit(t, b, true, ops...)
	commit(t, b, true, store.Op{Kind: store.DeleteSession, ClientID: "a"}, store.Op{Kind: store.DeleteSession, ClientID: "a%"})
	got := map[string]int{}
	err := b.Load(func(op *store.Op) error {
		switch op.Kind {
		case store.PutSession, store.PutSubscription, store.PutInbound:
			got[op.ClientID]++
		case store.PutRetained:
			if !bytes.Equal(op.Payload, []byte(op.Name)) {
				t.Errorf("retained %q has payload %q", op.Name, op.Payload)
			}
			got["retained "+op.Name]++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		want := 3
		if id == "a" || id == "a%" {
			want = 0
		}
		if got[id] != want || got["retained "+id] != 1 {
			t.Errorf("client %q: %d session records, %d retained; want %d and 1", id, got[id], got["retained "+id], want)
		}
	}
}

// The store directory may contain characters that are URI syntax.
func TestOddDirectoryName(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a?b#c%20d e")
	b := open(t, dir)
	commit(t, b, true, ret("t", "p"))
	b.Close()
	if _, err := os.Stat(filepath.Join(dir, FileName)); err != nil {
		t.Fatal(err)
	}
	b = open(t, dir)
	if got := storetest.Records(t, b); len(got) != 1 {
		t.Fatalf("records = %q", got)
	}
}

func TestOpenErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := Open(file, Options{}); err == nil || errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("Open of a regular file as directory = %v; want a plain error", err)
	}
	if _, err := Open(filepath.Join(file, "sub"), Options{}); err == nil {
		t.Fatal("Open under a regular file succeeded")
	}
}

// A leftover of an interrupted creation is replaced.
func TestLeftoverTemporaryDatabase(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{tmpName, tmpName + "-journal", tmpName + "-wal"} {
		os.WriteFile(filepath.Join(dir, name), []byte("half-written"), 0o600)
	}
	b := open(t, dir)
	if got := storetest.Records(t, b); len(got) != 0 {
		t.Fatalf("records = %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, tmpName)); err == nil {
		t.Fatal("the temporary database is still there")
	}
}

func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	lg := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	dir := t.TempDir()
	b := open(t, dir, Options{Logger: lg})
	b.Close()
	b = open(t, dir, Options{Logger: lg})
	b.Close()
	out := buf.String()
	if !strings.Contains(out, "created an empty SQLite store") || !strings.Contains(out, "opened the SQLite store") {
		t.Fatalf("log:\n%s", out)
	}
}

func TestLoadPassesOnPanicOfFn(t *testing.T) {
	b := open(t, t.TempDir())
	commit(t, b, true, ret("t", "p"))
	defer func() {
		if r := recover(); r != "fn" {
			t.Fatalf("recovered %v; want fn's own panic", r)
		}
	}()
	b.Load(func(*store.Op) error { panic("fn") })
}

func TestLoadValues(t *testing.T) {
	b := open(t, t.TempDir())
	will := &store.Message{ID: 9, Topic: "w", QoS: packet.QoS2, Retain: true}
	commit(t, b, true,
		store.Op{Kind: store.PutSession, ClientID: "c", Session: &store.Session{ClientID: "c", Will: will, DisconnectedAt: -5}},
		store.Op{Kind: store.PutRetained, Name: "r"},                         // nil payload
		store.Op{Kind: store.PutMessage, ID: 1<<64 - 1, Name: "m", QoS: 255}, // largest id, QoS the field can hold
		store.Op{Kind: store.PutOutbound, ClientID: "c", Outbound: store.Outbound{Seq: 1 << 63, MsgID: 1<<64 - 1, QoS: 255, State: 255, PacketID: 65535}},
	)
	b.Close()
	b = open(t, b.path[:len(b.path)-len(FileName)-1])
	err := b.Load(func(op *store.Op) error {
		switch op.Kind {
		case store.PutSession:
			w := op.Session.Will
			if op.Session.ClientID != "c" || op.Session.DisconnectedAt != -5 || w == nil || w.ID != 9 || w.Topic != "w" ||
				w.QoS != packet.QoS2 || !w.Retain || w.Payload == nil || len(w.Payload) != 0 {
				t.Errorf("session %+v will %+v", op.Session, w)
			}
		case store.PutRetained, store.PutMessage:
			if op.Payload == nil || len(op.Payload) != 0 {
				t.Errorf("%s payload = %#v; want empty, not nil (like store.Memory)", op.Kind, op.Payload)
			}
			if op.Kind == store.PutMessage && (op.ID != 1<<64-1 || op.QoS != 255) {
				t.Errorf("message %+v", op)
			}
		case store.PutOutbound:
			if o := op.Outbound; o.Seq != 1<<63 || o.MsgID != 1<<64-1 || o.QoS != 255 || o.State != 255 || o.PacketID != 65535 {
				t.Errorf("outbound %+v", o)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func newLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Errors of the engine come back as errors, whatever the method.
func TestEngineErrors(t *testing.T) {
	b := open(t, t.TempDir())
	commit(t, b, true, ret("t", "p"))
	b.conn.Close() // every statement fails from now on
	op := []store.Op{ret("u", "p")}
	_, verr := b.Version()
	for name, err := range map[string]error{
		"Commit sync":   b.Commit(op, true),
		"Commit nosync": b.Commit(op, false),
		"Load":          b.Load(func(*store.Op) error { return nil }),
		"Sync":          b.Sync(),
		"SetVersion":    b.SetVersion(1),
		"Version":       verr,
	} {
		if err == nil || errors.Is(err, store.ErrCorrupt) {
			t.Errorf("%s = %v; want an error that is not ErrCorrupt", name, err)
		}
	}
	if err := b.Close(); err == nil {
		t.Error("Close of a lost connection succeeded")
	}
}
