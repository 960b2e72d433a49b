package sqlite

import (
	"bytes"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/store"
	"github.com/iotd/iotd/internal/store/storetest"
)

// fill commits records of every kind, enough for every table to span several pages, in groups
// of 100 messages.
func fill(t testing.TB, b *Backend, groups int) {
	t.Helper()
	for g := range groups {
		var ops []store.Op
		for i := range 100 {
			n := g*100 + i
			id := fmt.Sprintf("client-%d", n%50)
			ops = append(ops,
				store.Op{Kind: store.PutSession, ClientID: id, Session: &store.Session{ClientID: id,
					Will: &store.Message{Topic: "will/" + id, Payload: []byte("bye"), QoS: packet.QoS1}}},
				store.Op{Kind: store.PutSubscription, ClientID: id, Name: fmt.Sprintf("sensors/%d/#", n), QoS: packet.QoS1},
				store.Op{Kind: store.PutRetained, Name: fmt.Sprintf("sensors/%d/state", n), Payload: bytes.Repeat([]byte{byte(n)}, 100), QoS: packet.QoS1},
				store.Op{Kind: store.PutMessage, ID: uint64(n + 1), Name: "t", Payload: bytes.Repeat([]byte{1}, 100), QoS: packet.QoS1},
				store.Op{Kind: store.PutOutbound, ClientID: id, Outbound: store.Outbound{Seq: uint64(n), MsgID: uint64(n + 1), QoS: packet.QoS1, State: store.AwaitPuback, PacketID: uint16(n)}},
				store.Op{Kind: store.PutInbound, ClientID: id, PacketID: uint16(n)},
			)
		}
		commit(t, b, true, ops...)
	}
}

// files returns the names and contents of the files in dir.
func files(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Type().IsRegular() {
			data, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			m[e.Name()] = data
		} else {
			m[e.Name()+"/"] = nil
		}
	}
	return m
}

// openAndLoad opens dir and loads it, returning the first error and the number of records.
func openAndLoad(t *testing.T, dir string, opts Options) (int, error) {
	t.Helper()
	b, err := Open(dir, opts)
	if err != nil {
		return 0, err
	}
	defer b.Close()
	n := 0
	err = b.Load(func(*store.Op) error { n++; return nil })
	return n, err
}

// wantCorrupt opens and loads dir and checks that it is refused as corrupt, naming path, and
// that no file of dir changed.
func wantCorrupt(t *testing.T, dir, path string, opts Options) {
	t.Helper()
	before := files(t, dir)
	_, err := openAndLoad(t, dir, opts)
	var ce *store.CorruptError
	if !errors.Is(err, store.ErrCorrupt) || !errors.As(err, &ce) {
		t.Fatalf("open and load = %v; want an error wrapping store.ErrCorrupt", err)
	}
	if ce.Path != path {
		t.Errorf("CorruptError.Path = %s; want %s", ce.Path, path)
	}
	t.Logf("error: %v", err)
	after := files(t, dir)
	if len(after) != len(before) {
		t.Fatalf("files before %d, after %d", len(before), len(after))
	}
	for name, data := range before {
		if !bytes.Equal(after[name], data) {
			t.Errorf("%s changed", name)
		}
	}
}

// filled holds the database file of a closed store filled with fill, by number of groups, so
// that each test builds it once.
var filled = map[int][]byte{}

// filledStore returns a new directory with a copy of a closed, filled store, and the database's
// path and size.
func filledStore(t *testing.T, groups int) (dir, db string, size int) {
	t.Helper()
	data, ok := filled[groups]
	if !ok {
		src := t.TempDir()
		b := open(t, src)
		fill(t, b, groups)
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		var err error
		if data, err = os.ReadFile(filepath.Join(src, FileName)); err != nil {
			t.Fatal(err)
		}
		filled[groups] = data
	}
	dir = t.TempDir()
	db = filepath.Join(dir, FileName)
	if err := os.WriteFile(db, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, db, len(data)
}

func garbage(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// overwrite writes data at off in name, growing nothing.
func overwrite(t *testing.T, name string, off int, data []byte) {
	t.Helper()
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, int64(off)); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptDatabaseFile(t *testing.T) {
	const pageSize = 4096
	cases := []struct {
		name   string
		damage func(t *testing.T, db string, size int)
		opts   Options
	}{
		{"garbage", func(t *testing.T, db string, size int) { os.WriteFile(db, garbage(size, 1), 0o600) }, Options{}},
		{"text file", func(t *testing.T, db string, _ int) { os.WriteFile(db, []byte("this is not a database\n"), 0o600) }, Options{}},
		{"a page of zeros", func(t *testing.T, db string, _ int) { os.WriteFile(db, make([]byte, pageSize), 0o600) }, Options{}},
		{"empty", func(t *testing.T, db string, _ int) { os.Truncate(db, 0) }, Options{}},
		{"truncated inside the header", func(t *testing.T, db string, _ int) { os.Truncate(db, 50) }, Options{}},
		{"truncated to one page", func(t *testing.T, db string, _ int) { os.Truncate(db, pageSize) }, Options{}},
		{"truncated by half", func(t *testing.T, db string, size int) { os.Truncate(db, int64(size/2/pageSize*pageSize)) }, Options{}},
		{"truncated by one page", func(t *testing.T, db string, size int) { os.Truncate(db, int64(size-pageSize)) }, Options{}},
		{"truncated by one byte", func(t *testing.T, db string, size int) { os.Truncate(db, int64(size-1)) }, Options{}},
		{"extended by garbage", func(t *testing.T, db string, size int) {
			f, _ := os.OpenFile(db, os.O_WRONLY|os.O_APPEND, 0)
			f.Write(garbage(100, 2))
			f.Close()
		}, Options{}},
		{"garbage header", func(t *testing.T, db string, _ int) { overwrite(t, db, 0, garbage(100, 3)) }, Options{}},
		{"garbage page in the middle", func(t *testing.T, db string, size int) {
			overwrite(t, db, size/2/pageSize*pageSize, garbage(pageSize, 4))
		}, Options{}},
		{"garbage page in the middle, found by Load", func(t *testing.T, db string, size int) {
			overwrite(t, db, size/2/pageSize*pageSize, garbage(pageSize, 4))
		}, Options{SkipQuickCheck: true}},
		{"garbage after the first page", func(t *testing.T, db string, size int) {
			overwrite(t, db, pageSize, garbage(size-pageSize, 5))
		}, Options{}},
		{"schema page of zeros", func(t *testing.T, db string, _ int) { overwrite(t, db, 100, make([]byte, pageSize-100)) }, Options{}},
		{"wrong free page count in the header", func(t *testing.T, db string, _ int) {
			overwrite(t, db, 36, binary.BigEndian.AppendUint32(nil, 5))
		}, Options{}},
		{"a directory", func(t *testing.T, db string, _ int) { os.Remove(db); os.Mkdir(db, 0o700) }, Options{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir, db, size := filledStore(t, 10)
			c.damage(t, db, size)
			wantCorrupt(t, dir, db, c.opts)
		})
	}
}

// Every page of the database damaged in turn: Open or Load reports corruption, or (for a page
// that holds no record, such as a free page) loads every record; nothing panics. With the quick
// check every damaged page is found; without it, Load misses the pages of the indexes it does not
// read.
func TestEveryPageDamaged(t *testing.T) {
	const pageSize = 4096
	dir, db, size := filledStore(t, 3)
	orig, _ := os.ReadFile(db)
	for _, skip := range []bool{false, true} {
		t.Run(fmt.Sprintf("SkipQuickCheck=%v", skip), func(t *testing.T) {
			os.WriteFile(db, orig, 0o600)
			opts := Options{SkipQuickCheck: skip}
			want, err := openAndLoad(t, dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			corrupt := 0
			for p := 0; p < size/pageSize; p++ {
				damaged := slices.Clone(orig)
				copy(damaged[p*pageSize:(p+1)*pageSize], garbage(pageSize, uint64(p)))
				os.WriteFile(db, damaged, 0o600)
				n, err := openAndLoad(t, dir, opts)
				switch {
				case errors.Is(err, store.ErrCorrupt):
					corrupt++
				case err != nil:
					t.Errorf("page %d: %v; want ErrCorrupt", p+1, err)
				case n != want:
					t.Errorf("page %d: loaded %d records, want %d or ErrCorrupt", p+1, n, want)
				case !skip:
					t.Errorf("page %d (type %d): damage not found", p+1, orig[p*pageSize])
				}
			}
			t.Logf("%d of %d damaged pages reported as corrupt", corrupt, size/pageSize)
		})
	}
}

func TestCorruptDirectory(t *testing.T) {
	t.Run("unrelated files and no database", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600)
		wantCorrupt(t, dir, dir, Options{})
	})
	t.Run("WAL without database", func(t *testing.T) {
		dir, db, _ := filledStore(t, 1)
		os.Rename(db, db+"-wal")
		wantCorrupt(t, dir, db, Options{})
	})
	t.Run("lost+found is fine", func(t *testing.T) {
		dir := t.TempDir()
		os.Mkdir(filepath.Join(dir, "lost+found"), 0o700)
		if _, err := openAndLoad(t, dir, Options{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("unrelated files beside a database are left alone", func(t *testing.T) {
		dir, _, _ := filledStore(t, 1)
		os.WriteFile(filepath.Join(dir, "README"), []byte("backups in /srv"), 0o600)
		if _, err := openAndLoad(t, dir, Options{}); err != nil {
			t.Fatal(err)
		}
	})
}

// rawDB opens the database file of dir directly, to damage it through the engine.
func rawDB(t *testing.T, dir string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func exec(t *testing.T, db *sql.DB, query string, args ...any) {
	t.Helper()
	if _, err := db.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

func TestNotAnIoTDStore(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, db *sql.DB)
	}{
		{"another program's database", func(t *testing.T, db *sql.DB) {
			exec(t, db, "PRAGMA application_id = 42")
		}},
		{"unknown layout", func(t *testing.T, db *sql.DB) { exec(t, db, "PRAGMA user_version = 99") }},
		{"a table is missing", func(t *testing.T, db *sql.DB) { exec(t, db, "DROP TABLE inbound") }},
		{"a column is missing", func(t *testing.T, db *sql.DB) { exec(t, db, "ALTER TABLE outbound DROP COLUMN packet_id") }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir, db, _ := filledStore(t, 1)
			raw := rawDB(t, dir)
			c.damage(t, raw)
			raw.Close()
			wantCorrupt(t, dir, db, Options{})
		})
	}
	t.Run("a database of no program", func(t *testing.T) {
		dir := t.TempDir()
		raw := rawDB(t, dir)
		exec(t, raw, "CREATE TABLE t (x)")
		raw.Close()
		wantCorrupt(t, dir, filepath.Join(dir, FileName), Options{})
	})
}

// Records that SQLite reads without complaint but that do not decode.
func TestBadRecords(t *testing.T) {
	cases := []struct {
		name, table, query string
	}{
		{"will of garbage", "sessions", `INSERT INTO sessions VALUES ('x', 0, x'ff00ff')`},
		{"empty will", "sessions", `INSERT INTO sessions VALUES ('x', 0, x'')`},
		{"will of an unknown version", "sessions", `INSERT INTO sessions VALUES ('x', 0, x'0200000000')`},
		{"subscription QoS out of range", "subscriptions", `INSERT INTO subscriptions VALUES ('x', 'f', 256)`},
		{"retained QoS negative", "retained", `INSERT INTO retained VALUES ('x', -1, x'')`},
		{"message retain flag 2", "messages", `INSERT INTO messages VALUES (100000, 't', 1, 2, x'')`},
		{"message QoS out of range", "messages", `INSERT INTO messages VALUES (100000, 't', 1000, 0, x'')`},
		{"outbound state out of range", "outbound", `INSERT INTO outbound VALUES ('x', 1, 1, 1, 256, 1)`},
		{"outbound QoS out of range", "outbound", `INSERT INTO outbound VALUES ('x', 1, 1, 300, 1, 1)`},
		{"outbound packet id out of range", "outbound", `INSERT INTO outbound VALUES ('x', 1, 1, 1, 1, 65536)`},
		{"inbound packet id negative", "inbound", `INSERT INTO inbound VALUES ('x', -1)`},
		{"text where a number belongs", "inbound", `DROP TABLE inbound; CREATE TABLE inbound (client_id, packet_id);
			INSERT INTO inbound VALUES ('x', 'one')`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir, db, _ := filledStore(t, 1)
			raw := rawDB(t, dir)
			exec(t, raw, c.query)
			raw.Close()
			wantCorrupt(t, dir, db, Options{})
			_, err := openAndLoad(t, dir, Options{})
			if !strings.Contains(err.Error(), c.table) {
				t.Errorf("error %q does not name table %s", err, c.table)
			}
		})
	}
}

// crashCopy copies the database and WAL of the open backend b to a new directory, as a crash
// would leave them (the backend uses a large auto-checkpoint so that the commits stay in the
// WAL).
func crashCopy(t *testing.T, b *Backend) string {
	t.Helper()
	dir := t.TempDir()
	for _, suffix := range []string{"-wal", ""} { // the WAL first: it only grows meanwhile
		data, err := os.ReadFile(b.path + suffix) // drops the process's locks; b is only closed afterwards
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, FileName+suffix), data, 0o600)
	}
	return dir
}

func TestWAL(t *testing.T) {
	// A crash after 1 synced group that was checkpointed and 3 more in the WAL.
	src := t.TempDir()
	b := open(t, src, Options{AutoCheckpoint: 100000})
	fill(t, b, 1)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	fill(t, b, 3)
	crash := crashCopy(t, b)
	b.Close()
	walSize := func(dir string) int {
		fi, err := os.Stat(filepath.Join(dir, FileName+"-wal"))
		if err != nil {
			t.Fatal(err)
		}
		return int(fi.Size())
	}
	if walSize(crash) < 3*4096 {
		t.Fatalf("the WAL holds %d bytes; the test needs a few pages in it", walSize(crash))
	}
	ok := func(t *testing.T, dir string) int {
		t.Helper()
		n, err := openAndLoad(t, dir, Options{})
		if err != nil {
			t.Fatalf("open and load: %v", err)
		}
		return n
	}
	copyDir := func(t *testing.T) string {
		dir := t.TempDir()
		for name, data := range files(t, crash) {
			os.WriteFile(filepath.Join(dir, name), data, 0o600)
		}
		return dir
	}
	full := ok(t, copyDir(t))
	t.Run("replayed after a crash", func(t *testing.T) {
		var buf strings.Builder
		dir := copyDir(t)
		b := open(t, dir, Options{Logger: newLogger(&buf)})
		got := storetest.Records(t, b)
		if len(got) == 0 || !strings.Contains(buf.String(), "WAL left by an unclean stop") {
			t.Fatalf("records %d, log %q", len(got), buf.String())
		}
	})
	// A damaged database with a WAL is refused. Closing the connection after the error lets
	// SQLite checkpoint the WAL's committed pages into the database (modernc.org/sqlite offers no
	// way to set SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE), but the damaged page is left as it was and
	// nothing committed is lost. (Damage to a page that the WAL holds a newer copy of is
	// harmless: SQLite reads the WAL's.)
	for _, skip := range []bool{false, true} {
		t.Run(fmt.Sprintf("damaged database with a WAL, SkipQuickCheck=%v", skip), func(t *testing.T) {
			// A WAL with one small commit in it, so that most pages are only in the database.
			b := open(t, t.TempDir(), Options{AutoCheckpoint: 100000})
			fill(t, b, 3)
			if err := b.Sync(); err != nil {
				t.Fatal(err)
			}
			commit(t, b, true, ret("in/the/wal", "p"))
			crash := crashCopy(t, b)
			b.Close()
			dir := t.TempDir()
			db := filepath.Join(dir, FileName)
			orig, _ := os.ReadFile(filepath.Join(crash, FileName))
			found := 0
			for p := 1; p < len(orig)/4096; p++ {
				damaged := slices.Clone(orig)
				page := garbage(4096, uint64(p))
				copy(damaged[p*4096:], page)
				os.WriteFile(db, damaged, 0o600)
				os.WriteFile(db+"-wal", files(t, crash)[FileName+"-wal"], 0o600)
				_, err := openAndLoad(t, dir, Options{SkipQuickCheck: skip})
				if err == nil {
					continue
				}
				if !errors.Is(err, store.ErrCorrupt) {
					t.Fatalf("page %d: %v; want ErrCorrupt", p+1, err)
				}
				found++
				after, _ := os.ReadFile(db)
				if !bytes.Equal(after[p*4096:(p+1)*4096], page) {
					t.Fatalf("page %d: the damaged page changed after the failed open", p+1)
				}
			}
			if found == 0 {
				t.Fatal("no damaged page was found")
			}
			t.Logf("%d of %d damaged pages found", found, len(orig)/4096-1)
		})
	}
	for _, c := range []struct {
		name    string
		damage  func(t *testing.T, wal string, size int)
		corrupt bool
		fewer   bool // loads fewer records than the whole WAL holds
	}{
		{"garbage", func(t *testing.T, wal string, size int) { os.WriteFile(wal, garbage(size, 7), 0o600) }, true, false},
		{"truncated inside the header", func(t *testing.T, wal string, _ int) { os.Truncate(wal, 20) }, true, false},
		{"a bit flipped in the header", func(t *testing.T, wal string, _ int) { overwrite(t, wal, 16, []byte{0x55}) }, true, false},
		{"another format version", func(t *testing.T, wal string, _ int) {
			overwrite(t, wal, 4, binary.BigEndian.AppendUint32(nil, walFormat+1))
		}, true, false},
		{"header of zeros: nothing was written yet", func(t *testing.T, wal string, _ int) { overwrite(t, wal, 0, make([]byte, 32)) }, false, true},
		{"empty: nothing was written yet", func(t *testing.T, wal string, _ int) { os.Truncate(wal, 0) }, false, true},
		{"zeros inside the header's length", func(t *testing.T, wal string, _ int) { os.Truncate(wal, 10); overwrite(t, wal, 0, make([]byte, 10)) }, false, true},
		{"cut in the frames: the complete transactions are replayed", func(t *testing.T, wal string, size int) {
			os.Truncate(wal, int64(size-1000))
		}, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := copyDir(t)
			wal := filepath.Join(dir, FileName+"-wal")
			c.damage(t, wal, walSize(dir))
			if c.corrupt {
				wantCorrupt(t, dir, wal, Options{})
				return
			}
			if n := ok(t, dir); c.fewer && n >= full || n == 0 {
				t.Fatalf("loaded %d records; want fewer than %d and more than 0", n, full)
			}
		})
	}
}

// A WAL written by SQLite with big-endian checksums is accepted by the header check.
func TestCheckWALBigEndian(t *testing.T) {
	h := make([]byte, 32)
	binary.BigEndian.PutUint32(h[0:], walMagic|1)
	binary.BigEndian.PutUint32(h[4:], walFormat)
	binary.BigEndian.PutUint32(h[8:], 4096)
	var s0, s1 uint32
	for i := 0; i < 24; i += 8 {
		s0 += binary.BigEndian.Uint32(h[i:]) + s1
		s1 += binary.BigEndian.Uint32(h[i+4:]) + s0
	}
	binary.BigEndian.PutUint32(h[24:], s0)
	binary.BigEndian.PutUint32(h[28:], s1)
	name := filepath.Join(t.TempDir(), "wal")
	os.WriteFile(name, h, 0o600)
	if replay, err := checkWAL(name); err != nil || !replay {
		t.Fatalf("checkWAL = %v, %v; want true, nil", replay, err)
	}
}
