package pebble

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	engine "github.com/cockroachdb/pebble/v2"
	"go.uber.org/goleak"

	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/store"
	"github.com/iotd/iotd/internal/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func openTest(t testing.TB, dir string) *Backend {
	t.Helper()
	b, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	return b
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dir string) store.Backend { return openTest(t, dir) })
}

func commit(t testing.TB, b *Backend, sync bool, ops ...store.Op) {
	t.Helper()
	if err := b.Commit(ops, sync); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

func ret(topic, payload string) store.Op {
	return store.Op{Kind: store.PutRetained, Name: topic, Payload: []byte(payload), QoS: packet.QoS1}
}

// snapshot returns every file of dir with its content, to prove that a refused store was left
// as it was.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := make(map[string]string)
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			files[rel] = "<dir>"
			return nil
		}
		data, err := os.ReadFile(path)
		files[rel] = string(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func unchanged(t *testing.T, dir string, before map[string]string) {
	t.Helper()
	after := snapshot(t, dir)
	if !maps.Equal(before, after) {
		t.Fatalf("the store was changed:\n before %q\n after  %q", slices.Sorted(maps.Keys(before)), slices.Sorted(maps.Keys(after)))
	}
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if content == "<dir>" {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func corrupt(t *testing.T, err error, dir string) {
	t.Helper()
	var ce *store.CorruptError
	if !errors.As(err, &ce) || !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("got %v; want a *store.CorruptError", err)
	}
	if ce.Path != dir {
		t.Fatalf("CorruptError.Path = %q; want %q", ce.Path, dir)
	}
}

func TestOpenCreatesMissingDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b", "store")
	b := openTest(t, dir)
	if v, err := b.Version(); v != 0 || err != nil {
		t.Fatalf("Version = %d, %v; want 0", v, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openTest(t, dir) // opens what it created
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefusesWhatIsNotAStore(t *testing.T) {
	tests := []struct {
		name   string
		files  map[string]string
		detail string
	}{
		{"unrelated files", map[string]string{"notes.txt": "hello", "LOCK": ""}, "not part of a Pebble store: notes.txt"},
		{"an SQLite database", map[string]string{"iotd.db": "SQLite format 3\x00"}, "iotd.db"},
		{"a subdirectory", map[string]string{"sub": "<dir>"}, "sub"},
		{"a directory named like a table", map[string]string{"000001.sst": "<dir>"}, "000001.sst"},
		{"many files", map[string]string{"1": "", "2": "", "3": "", "4": "", "5": "", "6": "", "7": ""}, "and 2 more"},
		{"names close to Pebble's", map[string]string{"OPTIONS-x": "", "MANIFEST-": "", "a.sst": "", "1-x.log": "", "x.log": "", ".log": ""}, "and 1 more"},
		{"tables without a manifest marker", map[string]string{"000005.sst": "t", "MANIFEST-000004": "m"}, "manifest marker is missing"},
		{"a log without a manifest marker", map[string]string{"000002.log": "l", "000003-001.log": "l", "LOCK": ""}, "manifest marker is missing"},
		{"a blob file without a manifest marker", map[string]string{"000007.blob": "b"}, "manifest marker is missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tc.files)
			before := snapshot(t, dir)
			_, err := Open(dir, Options{})
			corrupt(t, err, dir)
			if !strings.Contains(err.Error(), tc.detail) {
				t.Fatalf("error %q does not name %q", err, tc.detail)
			}
			unchanged(t, dir, before)
		})
	}
	t.Run("a file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "iotd.db")
		if err := os.WriteFile(path, []byte("SQLite format 3\x00"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Open(path, Options{})
		corrupt(t, err, path)
		if data, _ := os.ReadFile(path); string(data) != "SQLite format 3\x00" {
			t.Fatal("the file was changed")
		}
	})
}

func TestOpenAfterInterruptedCreation(t *testing.T) {
	// What a crash while Pebble creates a store leaves behind: no manifest marker, so nothing was
	// stored yet, and Open creates the store afresh.
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"LOCK": "", "MANIFEST-000001": "partial", "OPTIONS-000003": "", "temporary.000004.dbtmp": "x"})
	b := openTest(t, dir)
	commit(t, b, true, ret("t", "p"))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openTest(t, dir)
	defer b.Close()
	if got := storetest.Records(t, b); len(got) != 1 {
		t.Fatalf("records %q", got)
	}
}

func TestOpenErrors(t *testing.T) {
	t.Run("held by another backend", func(t *testing.T) {
		dir := t.TempDir()
		b := openTest(t, dir)
		_, err := Open(dir, Options{})
		if err == nil || errors.Is(err, store.ErrCorrupt) {
			t.Fatalf("second Open = %v; want an error that is not ErrCorrupt", err)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		openTest(t, dir).Close()
	})
	t.Run("negative options", func(t *testing.T) {
		for _, o := range []Options{{MemTableSize: -1}, {CacheSize: -1}, {MaxOpenFiles: -1}} {
			if _, err := Open(t.TempDir(), o); err == nil || errors.Is(err, store.ErrCorrupt) {
				t.Fatalf("Open(%+v) = %v; want an error", o, err)
			}
		}
	})
	t.Run("cannot create", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(file, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(filepath.Join(file, "store"), Options{}); err == nil || errors.Is(err, store.ErrCorrupt) {
			t.Fatalf("Open under a file = %v; want an error that is not ErrCorrupt", err)
		}
	})
	t.Run("unreadable directory", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root reads any directory")
		}
		dir := t.TempDir()
		if err := os.Chmod(dir, 0); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(dir, 0o755)
		if _, err := Open(dir, Options{}); err == nil || errors.Is(err, store.ErrCorrupt) {
			t.Fatalf("Open = %v; want an error that is not ErrCorrupt", err)
		}
	})
	t.Run("engine panics", func(t *testing.T) {
		defer func(f func(string, *engine.Options) (*engine.DB, error)) { engineOpen = f }(engineOpen)
		for _, v := range []any{errors.New("boom"), "boom"} {
			engineOpen = func(string, *engine.Options) (*engine.DB, error) { panic(v) }
			dir := t.TempDir()
			_, err := Open(dir, Options{})
			corrupt(t, err, dir)
			if !strings.Contains(err.Error(), "boom") {
				t.Fatalf("error %q does not say why", err)
			}
		}
	})
	t.Run("environmental errors", func(t *testing.T) {
		for _, tc := range []struct {
			err  error
			want bool
		}{
			{os.ErrPermission, true}, {fmt.Errorf("x: %w", os.ErrPermission), true},
			{errors.New("lock held by current process"), true}, {errors.New("pebble: malformed manifest"), false},
		} {
			if got := environmental(tc.err); got != tc.want {
				t.Errorf("environmental(%v) = %v; want %v", tc.err, got, tc.want)
			}
		}
	})
}

func TestOptions(t *testing.T) {
	var h captureHandler
	b, err := Open(t.TempDir(), Options{MemTableSize: 1 << 20, CacheSize: 1 << 20, MaxOpenFiles: 64, Logger: slog.New(&h)})
	if err != nil {
		t.Fatal(err)
	}
	// A memtable of 1 MiB fills and flushes while this is written.
	for i := range 200 {
		commit(t, b, false, ret(fmt.Sprint("t", i), strings.Repeat("x", 10<<10)))
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if !h.has(slog.LevelDebug, "pebble engine") {
		t.Fatalf("no engine message at debug level in %v", h.messages())
	}
}

// captureHandler is a slog.Handler that records what it receives.
type captureHandler struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captureHandler) WithGroup(string) slog.Handler      { return h }

func (h *captureHandler) has(level slog.Level, msg string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.ContainsFunc(h.recs, func(r slog.Record) bool { return r.Level == level && r.Message == msg })
}

func (h *captureHandler) messages() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var s []string
	for _, r := range h.recs {
		s = append(s, r.Level.String()+" "+r.Message)
	}
	return s
}

func TestLogger(t *testing.T) {
	var h captureHandler
	g := logger{slog.New(&h)}
	g.Infof("info %d", 1)
	g.Errorf("error %d", 2)
	func() {
		defer func() {
			r := recover()
			if fe, ok := r.(fatalError); !ok || fe.Error() != "fatal 3" {
				t.Fatalf("Fatalf panicked with %v; want fatalError", r)
			}
		}()
		g.Fatalf("fatal %d", 3)
		t.Fatal("Fatalf returned")
	}()
	el := eventListener(slog.New(&h))
	el.BackgroundError(errors.New("bg"))
	el.DataCorruption(engine.DataCorruptionInfo{Path: "000001.sst", Details: errors.New("bad")})
	for _, want := range []struct {
		level slog.Level
		msg   string
	}{
		{slog.LevelDebug, "pebble engine"}, {slog.LevelError, "pebble engine"}, {slog.LevelError, "pebble engine failed"},
		{slog.LevelError, "pebble background error"}, {slog.LevelError, "pebble found corrupt data"},
	} {
		if !h.has(want.level, want.msg) {
			t.Errorf("no %s %q in %q", want.level, want.msg, h.messages())
		}
	}
	// A disabled level costs no formatting and records nothing.
	quiet := logger{slog.New(slog.DiscardHandler)}
	quiet.Infof("%v", failStringer{t})
}

// failStringer fails the test when it is formatted.
type failStringer struct{ t *testing.T }

func (f failStringer) String() string { f.t.Error("formatted for a disabled level"); return "" }

func TestCommitRejectsBadOperations(t *testing.T) {
	b := openTest(t, t.TempDir())
	defer b.Close()
	for _, bad := range []store.Op{{Kind: 0}, {Kind: store.DeleteInbound + 1}, {Kind: store.PutSession, ClientID: "c"}} {
		err := b.Commit([]store.Op{ret("first", "x"), bad}, true)
		if err == nil {
			t.Fatalf("Commit with %+v succeeded", bad)
		}
	}
	if got := storetest.Records(t, b); len(got) != 0 {
		t.Fatalf("a refused Commit stored %q", got)
	}
	if err := b.Commit(nil, true); err != nil {
		t.Fatalf("empty Commit: %v", err)
	}
}

func TestClosed(t *testing.T) {
	b := openTest(t, t.TempDir())
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, verr := b.Version()
	for name, err := range map[string]error{
		"Commit": b.Commit([]store.Op{ret("t", "p")}, true), "Sync": b.Sync(), "SetVersion": b.SetVersion(1),
		"Load": b.Load(func(*store.Op) error { return nil }), "Version": verr,
	} {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close = %v; want ErrClosed", name, err)
		}
	}
}

func TestSetVersion(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir)
	if err := b.SetVersion(-1); err == nil {
		t.Fatal("SetVersion(-1) succeeded")
	}
	if err := b.SetVersion(1 << 30); err != nil {
		t.Fatal(err)
	}
	if v, err := b.Version(); v != 1<<30 || err != nil {
		t.Fatalf("Version = %d, %v", v, err)
	}
	b.Close()
}

func TestSync(t *testing.T) {
	b := openTest(t, t.TempDir())
	defer b.Close()
	commit(t, b, false, ret("t", "p"))
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestEnginePanics closes the engine under the Backend, which makes Pebble panic on the next call:
// the panic becomes an error, and the Backend refuses further work.
func TestEnginePanics(t *testing.T) {
	calls := map[string]func(b *Backend) error{
		"Commit":     func(b *Backend) error { return b.Commit([]store.Op{ret("t", "p")}, true) },
		"Sync":       func(b *Backend) error { return b.Sync() },
		"SetVersion": func(b *Backend) error { return b.SetVersion(1) },
		"Version":    func(b *Backend) error { _, err := b.Version(); return err },
		"Load":       func(b *Backend) error { return b.Load(func(*store.Op) error { return nil }) },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			b := openTest(t, t.TempDir())
			if err := b.db.Close(); err != nil {
				t.Fatal(err)
			}
			err := call(b)
			if err == nil || !strings.Contains(err.Error(), "engine panic") {
				t.Fatalf("%s on a closed engine = %v; want an engine panic error", name, err)
			}
			if name == "Version" || name == "Load" {
				corrupt(t, err, b.dir)
			}
			for other, call := range calls {
				if err2 := call(b); err2 == nil {
					t.Fatalf("%s after a failure succeeded", other)
				}
			}
			if err := b.Close(); err == nil {
				t.Fatal("Close of a closed engine succeeded")
			}
		})
	}
}

func TestLoadPassesOnPanicsOfFn(t *testing.T) {
	b := openTest(t, t.TempDir())
	defer b.Close()
	commit(t, b, true, ret("t", "p"))
	defer func() {
		if r := recover(); r != "mine" {
			t.Fatalf("recovered %v; want the panic of fn", r)
		}
		if err := b.Load(func(*store.Op) error { return nil }); err != nil {
			t.Fatalf("Load after fn panicked: %v", err)
		}
	}()
	b.Load(func(*store.Op) error { panic("mine") })
}

// TestBadRecords writes records that do not decode straight through the engine: Load (or Version)
// reports the store as corrupt and names the record.
func TestBadRecords(t *testing.T) {
	tests := []struct {
		name     string
		key, val []byte
	}{
		{"unknown table", []byte{0x7f, 1}, []byte{1}},
		{"unknown encoding", appendRetainedKey(nil, "r"), []byte{9, 0}},
		{"bad QoS", appendSubscriptionKey(nil, "c", "f"), []byte{1, 3}},
		{"truncated outbound", appendOutboundKey(nil, "c", 1), []byte{1}},
		{"truncated client key", []byte{tagClient, 9, 'c'}, []byte{1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			b := openTest(t, dir)
			commit(t, b, true, ret("a", "fine"), ret("z", "fine"))
			if err := b.db.Set(tc.key, tc.val, engine.Sync); err != nil {
				t.Fatal(err)
			}
			for range 2 { // before and after a reopen
				err := b.Load(func(*store.Op) error { return nil })
				corrupt(t, err, dir)
				if !strings.Contains(err.Error(), keyString(tc.key)) {
					t.Fatalf("error %q does not name the record %s", err, keyString(tc.key))
				}
				if err := b.Close(); err != nil {
					t.Fatal(err)
				}
				b = openTest(t, dir)
			}
			b.Close()
		})
	}
	t.Run("bad version", func(t *testing.T) {
		for _, val := range [][]byte{{2, 1}, {1}, appendVersionValue(nil, 1<<32)} {
			dir := t.TempDir()
			b := openTest(t, dir)
			if err := b.db.Set(versionKey, val, engine.Sync); err != nil {
				t.Fatal(err)
			}
			_, err := b.Version()
			corrupt(t, err, dir)
			b.Close()
		}
	})
	t.Run("long key is shortened", func(t *testing.T) {
		if s := keyString(bytes.Repeat([]byte{'k'}, 100)); len(s) > 80 || !strings.HasSuffix(s, "...") {
			t.Fatalf("keyString = %q", s)
		}
	})
}

// crashImage builds a store with records in a table file (a..., flushed) and records only in the
// write-ahead log (b..., synced), and copies its files while it is open: what a crash leaves.
func crashImage(t *testing.T, n int, payload int) (dir string, flushed, logged []string) {
	t.Helper()
	src := t.TempDir()
	b := openTest(t, src)
	if err := b.SetVersion(1); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		op := ret(fmt.Sprintf("a%04d", i), strings.Repeat("p", payload))
		commit(t, b, true, op)
		flushed = append(flushed, op.Name)
	}
	if err := b.db.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		op := ret(fmt.Sprintf("b%04d", i), strings.Repeat("p", payload))
		commit(t, b, true, op)
		logged = append(logged, op.Name)
	}
	dir = t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if errors.Is(err, os.ErrNotExist) {
			continue // an obsolete log that the engine deleted meanwhile
		}
		if err != nil {
			t.Fatal(err)
		}
		writeFiles(t, dir, map[string]string{e.Name(): string(data)})
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, flushed, logged
}

func topics(t *testing.T, b *Backend) ([]string, error) {
	var got []string
	err := b.Load(func(op *store.Op) error {
		got = append(got, op.Name)
		return nil
	})
	slices.Sort(got)
	return got, err
}

// TestDamagedFiles damages each file of a store in turn, and checks what Open, Version and Load
// make of it. Pebble tells damage from a torn write only where it can: the tail of the newest
// write-ahead log, and of the manifest, ends wherever it stops making sense, as after a crash, and
// Open recovers what comes before.
func TestDamagedFiles(t *testing.T) {
	image, flushed, logged := crashImage(t, 50, 100)
	files := snapshot(t, image)

	type outcome uint8
	const (
		intact       outcome = iota // everything is there
		crash                       // every flushed record and a prefix of the logged ones
		corruptStore                // ErrCorrupt from Open, Version or Load
		crashOrCorrupt
	)
	var newestLog string
	for name := range files {
		if strings.HasSuffix(name, ".log") && name > newestLog {
			newestLog = name
		}
	}
	class := func(name string) string {
		switch {
		case strings.HasSuffix(name, ".sst"):
			return "table"
		case name == newestLog:
			return "newest log"
		case strings.HasSuffix(name, ".log"):
			return "older log"
		case strings.HasPrefix(name, "MANIFEST-"):
			return "manifest"
		case strings.HasPrefix(name, "OPTIONS-"):
			return "options"
		case strings.HasPrefix(name, "marker.manifest."):
			return "manifest marker"
		case strings.HasPrefix(name, "marker."):
			return "format marker"
		}
		return name
	}
	damages := []struct {
		name string
		f    func([]byte) []byte
	}{
		{"deleted", nil},
		{"truncated to 0", func(b []byte) []byte { return nil }},
		{"truncated to half", func(b []byte) []byte { return b[:len(b)/2] }},
		{"last byte cut", func(b []byte) []byte { return b[:max(len(b)-1, 0)] }},
		{"garbage", func(b []byte) []byte {
			for i := range b {
				b[i] = byte(i*7 + 3)
			}
			return b
		}},
		{"bit flipped in the middle", func(b []byte) []byte {
			if len(b) > 0 {
				b[len(b)/2] ^= 0x40
			}
			return b
		}},
	}
	want := func(class, damage string) outcome {
		switch class {
		case "table":
			return corruptStore
		case "newest log":
			return crash
		case "manifest":
			if damage == "deleted" || damage == "truncated to 0" || damage == "garbage" {
				return corruptStore
			}
			return crashOrCorrupt
		case "options":
			if damage == "garbage" || damage == "bit flipped in the middle" {
				return corruptStore
			}
		case "manifest marker", "format marker":
			if damage == "deleted" {
				return corruptStore
			}
		}
		return intact
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		for _, dmg := range damages {
			damaged := maps.Clone(files)
			if dmg.f == nil {
				delete(damaged, name)
			} else if damaged[name] = string(dmg.f([]byte(files[name]))); damaged[name] == files[name] {
				continue // an empty file (LOCK, a marker) stays as it is
			}
			t.Run(class(name)+" "+dmg.name, func(t *testing.T) {
				dir := t.TempDir()
				writeFiles(t, dir, damaged)
				before := snapshot(t, dir)
				got, err := openAndLoad(t, dir)
				exp := want(class(name), dmg.name)
				if err != nil {
					corrupt(t, err, dir)
					if exp != corruptStore && exp != crashOrCorrupt {
						t.Fatalf("got %v; want outcome %d", err, exp)
					}
					if dmg.f != nil { // the damaged file is kept as it was
						if data, rerr := os.ReadFile(filepath.Join(dir, name)); rerr != nil || string(data) != damaged[name] {
							t.Fatalf("the damaged file was changed or removed (%v)", rerr)
						}
					}
					if errors.Is(err, errOpen) {
						unchanged(t, dir, before)
					}
					return
				}
				switch exp {
				case corruptStore:
					t.Fatalf("opened and loaded %d records; want ErrCorrupt", len(got))
				case intact:
					if !slices.Equal(got, append(slices.Clone(flushed), logged...)) {
						t.Fatalf("records %q; want all %d", got, len(flushed)+len(logged))
					}
				case crash, crashOrCorrupt:
					if len(got) < len(flushed) || !slices.Equal(got, append(slices.Clone(flushed), logged[:len(got)-len(flushed)]...)) {
						t.Fatalf("records %q; want all flushed ones and a prefix of the logged ones", got)
					}
				}
			})
		}
	}
}

// errOpen marks an error of Open in openAndLoad.
var errOpen = errors.New("open failed")

// openAndLoad opens dir and reads the version and every record.
func openAndLoad(t *testing.T, dir string) ([]string, error) {
	b, err := Open(dir, Options{})
	if err != nil {
		return nil, errors.Join(err, errOpen)
	}
	defer b.Close()
	if _, err := b.Version(); err != nil {
		return nil, err
	}
	return topics(t, b)
}

// TestDamagedLogBeforeSyncedRecords damages an early block of a write-ahead log whose later blocks
// hold synced records: Pebble knows from those that the damaged part was complete, so this is
// corruption, not a torn write.
func TestDamagedLogBeforeSyncedRecords(t *testing.T) {
	image, _, _ := crashImage(t, 200, 1000) // about 200 KB of log: several 32 KiB blocks
	files := snapshot(t, image)
	var newestLog string
	for name := range files {
		if strings.HasSuffix(name, ".log") && name > newestLog {
			newestLog = name
		}
	}
	if len(files[newestLog]) < 3*32<<10 {
		t.Fatalf("log %s has %d bytes; want several blocks", newestLog, len(files[newestLog]))
	}
	data := []byte(files[newestLog])
	data[100] ^= 0xff
	files[newestLog] = string(data)
	dir := t.TempDir()
	writeFiles(t, dir, files)
	before := snapshot(t, dir)
	_, err := Open(dir, Options{})
	corrupt(t, err, dir)
	unchanged(t, dir, before)
}

func TestCloseFlushes(t *testing.T) {
	// After a clean Close the records are in table files: damage to the logs loses nothing.
	dir := t.TempDir()
	b := openTest(t, dir)
	commit(t, b, true, ret("t", "p"))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, l := range logs {
		if err := os.WriteFile(l, []byte("garbage"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b = openTest(t, dir)
	defer b.Close()
	if got, err := topics(t, b); err != nil || !slices.Equal(got, []string{"t"}) {
		t.Fatalf("records %q, %v", got, err)
	}
}

// TestLoadLarge stores 100,000 retained messages and 10,000 sessions with a few records each, and
// reports how long Open and Load take.
func TestLoadLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("large store")
	}
	dir := t.TempDir()
	b := openTest(t, dir)
	const retained, sessions = 100_000, 10_000
	var ops []store.Op
	flush := func() {
		commit(t, b, false, ops...)
		ops = ops[:0]
	}
	payload := bytes.Repeat([]byte{'x'}, 100)
	for i := range retained {
		ops = append(ops, store.Op{Kind: store.PutRetained, Name: fmt.Sprintf("sensors/%d/temp", i), Payload: payload, QoS: packet.QoS1})
		if len(ops) == 1000 {
			flush()
		}
	}
	for i := range sessions {
		id := fmt.Sprintf("client-%d", i)
		ops = append(ops,
			store.Op{Kind: store.PutSession, ClientID: id, Session: &store.Session{ClientID: id, DisconnectedAt: 1}},
			store.Op{Kind: store.PutSubscription, ClientID: id, Name: "sensors/+/temp", QoS: packet.QoS1},
			store.Op{Kind: store.PutSubscription, ClientID: id, Name: "cmd/" + id, QoS: packet.QoS2},
			store.Op{Kind: store.PutMessage, ID: uint64(i + 1), Name: "cmd/" + id, Payload: payload, QoS: packet.QoS1},
			store.Op{Kind: store.PutOutbound, ClientID: id, Outbound: store.Outbound{Seq: 1, MsgID: uint64(i + 1), QoS: packet.QoS1, State: store.AwaitPuback, PacketID: 1}},
			store.Op{Kind: store.PutInbound, ClientID: id, PacketID: 7},
		)
		if len(ops) >= 1000 {
			flush()
		}
	}
	flush()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	b = openTest(t, dir)
	defer b.Close()
	opened := time.Since(start)
	counts := make(map[store.Kind]int)
	if err := b.Load(func(op *store.Op) error { counts[op.Kind]++; return nil }); err != nil {
		t.Fatal(err)
	}
	t.Logf("Open %v, Load %v of %d records", opened, time.Since(start)-opened, retained+6*sessions)
	if counts[store.PutRetained] != retained || counts[store.PutSession] != sessions || counts[store.PutSubscription] != 2*sessions ||
		counts[store.PutOutbound] != sessions || counts[store.PutMessage] != sessions || counts[store.PutInbound] != sessions {
		t.Fatalf("counts %v", counts)
	}
}
