package sqlite

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/iotd/iotd/internal/store"
)

// FileName is the name of the database file inside the store directory. SQLite keeps its WAL
// beside it, as FileName + "-wal".
const FileName = "iotd.db"

// tmpName is where a new database is built before it is renamed to FileName.
const tmpName = FileName + ".tmp"

// applicationID marks a SQLite database as an IoTD store ("ioTD"), so that Open refuses the
// database of another program instead of adding its tables to it.
const applicationID = 0x696f5444

// layout is the version of the table layout, kept in PRAGMA user_version. It is separate from
// the store's schema version (store.SchemaVersion, in the meta table), which is about what the
// broker writes; layout is about how this backend lays records out in tables.
const layout = 1

// SQLite primary result codes (the low byte of an extended code) that Open and Load tell apart.
const (
	codeError   = 1  // SQLITE_ERROR: a generic error, such as a missing table
	codeBusy    = 5  // SQLITE_BUSY: another connection holds the lock
	codeCorrupt = 11 // SQLITE_CORRUPT: the database is malformed
	codeNotADB  = 26 // SQLITE_NOTADB: the file is not a SQLite database
)

// Defaults of Options.
const (
	DefaultCacheKiB       = 2048 // SQLite's own default page cache is about 2 MB
	DefaultAutoCheckpoint = 1000 // SQLite's default: checkpoint when the WAL reaches 1000 pages (~4 MiB)
)

// Options configure a SQLite backend. The zero value is ready to use.
type Options struct {
	// CacheKiB is the size of SQLite's page cache in KiB (PRAGMA cache_size); 0 means
	// DefaultCacheKiB. Load reads each table once, so a larger cache helps little.
	CacheKiB int
	// AutoCheckpoint is the WAL size, in pages, at which SQLite copies the WAL back into the
	// database (PRAGMA wal_autocheckpoint); 0 means DefaultAutoCheckpoint. A larger value writes
	// less often to the database file and makes the WAL, and the replay after a crash, longer.
	AutoCheckpoint int
	// SkipQuickCheck skips PRAGMA quick_check at Open. The check reads every page and verifies
	// the structure of every b-tree, including the indexes of the sessions and retained tables,
	// which Load does not read. On 180,000 records (23 MB) it takes 60-90 ms, against 340 ms for
	// Open and Load and 400 ms for PRAGMA integrity_check.
	SkipQuickCheck bool
	// Logger receives what Open finds (a new store, a WAL left by an unclean stop); nil discards.
	Logger *slog.Logger
}

// The statements, prepared once at Open.
const (
	stBegin = iota
	stCommit
	stRollback
	stCheckpoint
	stGetVersion
	stSetVersion
	stPutSession
	stDelSession
	stDelSessionSubs
	stDelSessionOut
	stDelSessionIn
	stPutSub
	stDelSub
	stPutRetained
	stDelRetained
	stPutMessage
	stDelMessage
	stPutOutbound
	stDelOutbound
	stPutInbound
	stDelInbound
	nStmt
)

var stmtSQL = [nStmt]string{
	stBegin:          `BEGIN IMMEDIATE`,
	stCommit:         `COMMIT`,
	stRollback:       `ROLLBACK`,
	stCheckpoint:     `PRAGMA wal_checkpoint(PASSIVE)`,
	stGetVersion:     `SELECT value FROM meta WHERE key = 'schema_version'`,
	stSetVersion:     `INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)`,
	stPutSession:     `INSERT OR REPLACE INTO sessions (client_id, disconnected_at, will) VALUES (?, ?, ?)`,
	stDelSession:     `DELETE FROM sessions WHERE client_id = ?`,
	stDelSessionSubs: `DELETE FROM subscriptions WHERE client_id = ?`,
	stDelSessionOut:  `DELETE FROM outbound WHERE client_id = ?`,
	stDelSessionIn:   `DELETE FROM inbound WHERE client_id = ?`,
	stPutSub:         `INSERT OR REPLACE INTO subscriptions (client_id, filter, qos) VALUES (?, ?, ?)`,
	stDelSub:         `DELETE FROM subscriptions WHERE client_id = ? AND filter = ?`,
	stPutRetained:    `INSERT OR REPLACE INTO retained (topic, qos, payload) VALUES (?, ?, ?)`,
	stDelRetained:    `DELETE FROM retained WHERE topic = ?`,
	stPutMessage:     `INSERT OR REPLACE INTO messages (id, topic, qos, retain, payload) VALUES (?, ?, ?, ?, ?)`,
	stDelMessage:     `DELETE FROM messages WHERE id = ?`,
	stPutOutbound:    `INSERT OR REPLACE INTO outbound (client_id, seq, msg_id, qos, state, packet_id) VALUES (?, ?, ?, ?, ?, ?)`,
	stDelOutbound:    `DELETE FROM outbound WHERE client_id = ? AND seq = ?`,
	stPutInbound:     `INSERT OR IGNORE INTO inbound (client_id, packet_id) VALUES (?, ?)`,
	stDelInbound:     `DELETE FROM inbound WHERE client_id = ? AND packet_id = ?`,
}

// schema creates the tables of layout 1. SQLite keeps the text, comments included, so
// `sqlite3 iotd.db .schema` shows an operator what each column means.
//
// Keys are whole columns compared for equality, so a client id is never a prefix of another's
// key: DeleteSession of "a" removes nothing of "ab" or "a/b". Unsigned 64-bit ids and sequence
// numbers are stored as the int64 with the same bits. Tables whose rows are small and keyed by
// more than one column are WITHOUT ROWID (one b-tree instead of a table plus an index); sessions,
// retained and messages carry blobs of any size, which SQLite keeps best in rowid tables.
const schema = `
CREATE TABLE meta (
	key   TEXT NOT NULL PRIMARY KEY, -- 'schema_version': the store's schema version (store.SchemaVersion)
	value INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE sessions (
	client_id       TEXT NOT NULL PRIMARY KEY, -- a persistent session (CleanSession=0)
	disconnected_at INTEGER NOT NULL,          -- when its client went away, Unix nanoseconds; 0 while connected
	will            BLOB                       -- the will of its connection in IoTD's will encoding; NULL for none
) STRICT;

CREATE TABLE subscriptions (
	client_id TEXT NOT NULL,
	filter    TEXT NOT NULL,
	qos       INTEGER NOT NULL,
	PRIMARY KEY (client_id, filter)
) STRICT, WITHOUT ROWID;

CREATE TABLE retained (
	topic   TEXT NOT NULL PRIMARY KEY,
	qos     INTEGER NOT NULL,
	payload BLOB NOT NULL
) STRICT;

CREATE TABLE messages (
	id      INTEGER PRIMARY KEY, -- referred to by outbound.msg_id
	topic   TEXT NOT NULL,
	qos     INTEGER NOT NULL,
	retain  INTEGER NOT NULL,    -- 0 or 1
	payload BLOB NOT NULL
) STRICT;

CREATE TABLE outbound (
	client_id TEXT NOT NULL,
	seq       INTEGER NOT NULL,  -- delivery order within the session
	msg_id    INTEGER NOT NULL,  -- messages.id; 0 when state is 3
	qos       INTEGER NOT NULL,  -- the QoS it is delivered at
	state     INTEGER NOT NULL,  -- 0 queued, 1 awaiting PUBACK, 2 awaiting PUBREC, 3 awaiting PUBCOMP
	packet_id INTEGER NOT NULL,  -- 0 while queued
	PRIMARY KEY (client_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE inbound (
	client_id TEXT NOT NULL,
	packet_id INTEGER NOT NULL,  -- a QoS 2 packet identifier awaiting PUBREL
	PRIMARY KEY (client_id, packet_id)
) STRICT, WITHOUT ROWID;
`

// Backend is a store.Backend kept in a SQLite database. Like every Backend it is used by one
// goroutine at a time.
type Backend struct {
	path string // the database file, for errors
	log  *slog.Logger

	db     *sql.DB
	conn   *sql.Conn // the one connection, which holds the database's exclusive lock
	st     [nStmt]*sql.Stmt
	full   bool   // synchronous is FULL (else NORMAL)
	will   []byte // scratch for encoding wills; copied by the driver when bound
	closed bool
}

var _ store.Backend = (*Backend)(nil)

// Open opens the SQLite store in dir, creating dir and an empty store if there is none. A store
// that cannot be read is reported with an error wrapping store.ErrCorrupt that names the file (see
// the package documentation for what is checked and what SQLite may still write). A store in use
// by another process is an error that does not wrap store.ErrCorrupt.
func Open(dir string, opts Options) (b *Backend, err error) {
	if opts.CacheKiB <= 0 {
		opts.CacheKiB = DefaultCacheKiB
	}
	if opts.AutoCheckpoint <= 0 {
		opts.AutoCheckpoint = DefaultAutoCheckpoint
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store %s: %w", dir, err)
	}
	path := filepath.Join(dir, FileName)
	be := &Backend{path: path, log: lg, will: make([]byte, 0, 256)}
	defer func() {
		// The engine is not supposed to panic, but a damaged file must never take the broker
		// down with a stack trace instead of a message that says which file is damaged.
		if r := recover(); r != nil {
			b, err = nil, store.Corrupt(path, "the SQLite engine failed while opening the store", fmt.Errorf("panic: %v", r))
		}
		if err != nil {
			// The error that matters is the one that made Open fail.
			_ = be.release()
		}
	}()
	created, replay, err := prepare(dir, path)
	if err != nil {
		return nil, err
	}
	if err := be.open(opts); err != nil {
		return nil, err
	}
	switch {
	case created:
		lg.Info("created an empty SQLite store", "path", path)
	case replay:
		lg.Info("opened the SQLite store with the WAL left by an unclean stop", "path", path)
	default:
		lg.Debug("opened the SQLite store", "path", path)
	}
	return be, nil
}

// prepare checks what dir holds before SQLite touches it, creating a new database if there is
// none. It reports whether it created one, and whether the database has a WAL to replay.
func prepare(dir, path string) (created, replay bool, err error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := checkEmptyDir(dir, path); err != nil {
			return false, false, err
		}
		return true, false, create(dir, path)
	case err != nil:
		return false, false, fmt.Errorf("store %s: %w", path, err)
	case !fi.Mode().IsRegular():
		return false, false, store.Corrupt(path, "it is not a regular file", nil)
	case fi.Size() < 512:
		// A database is renamed into place only once its schema is written, so it is never
		// empty; 512 bytes is SQLite's smallest page.
		return false, false, store.Corrupt(path, fmt.Sprintf("the database file is %d bytes, shorter than one page (truncated)", fi.Size()), nil)
	}
	replay, err = checkWAL(path + "-wal")
	return false, replay, err
}

// checkEmptyDir refuses a directory without a database that holds anything but the leftovers of
// an interrupted creation: the files of a store whose database is gone, or files of something
// else, which a store must not be mixed with.
func checkEmptyDir(dir, path string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("store %s: %w", dir, err)
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, tmpName), name == "lost+found":
		case strings.HasPrefix(name, FileName):
			return store.Corrupt(path, fmt.Sprintf("the database file is missing but %s is there", name), nil)
		default:
			return store.Corrupt(dir, fmt.Sprintf("the directory holds %q and no %s, so it is not an IoTD SQLite store", name, FileName), nil)
		}
	}
	return nil
}

// walMagic is the first word of a WAL header: 0x377f0682 if its checksums are little-endian,
// 0x377f0683 if big-endian (https://sqlite.org/fileformat.html#the_write_ahead_log).
const walMagic = 0x377f0682

// walFormat is the WAL format version, the header's second word.
const walFormat = 3007000

// checkWAL refuses a WAL whose header is neither valid nor all zeros. SQLite ignores a WAL with an
// invalid header, which loses every transaction in it without a word; an all-zero header is what
// a crash can leave of a WAL being started, and holds nothing yet. A WAL cut short after its
// header is what a crash leaves too: SQLite replays the transactions whose frames are complete.
func checkWAL(name string) (replay bool, err error) {
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store %s: %w", name, err)
	}
	defer f.Close()
	var h [32]byte
	n, err := io.ReadFull(f, h[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("store %s: %w", name, err)
	}
	if n == 0 || allZero(h[:n]) {
		return false, nil
	}
	if n < len(h) {
		return false, store.Corrupt(name, fmt.Sprintf("the WAL is truncated inside its header (%d bytes)", n), nil)
	}
	magic := binary.BigEndian.Uint32(h[0:])
	if magic&^1 != walMagic || binary.BigEndian.Uint32(h[4:]) != walFormat {
		return false, store.Corrupt(name, "the file is not a SQLite WAL (bad header)", nil)
	}
	var order binary.ByteOrder = binary.LittleEndian
	if magic&1 == 1 {
		order = binary.BigEndian
	}
	var s0, s1 uint32
	for i := 0; i < 24; i += 8 {
		s0 += order.Uint32(h[i:]) + s1
		s1 += order.Uint32(h[i+4:]) + s0
	}
	if s0 != binary.BigEndian.Uint32(h[24:]) || s1 != binary.BigEndian.Uint32(h[28:]) {
		return false, store.Corrupt(name, "the WAL header's checksum does not match", nil)
	}
	return true, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// dsn returns the data source name that opens file with SQLite URI parameters query. The path
// is escaped so that no character of it ('?', '#', '%') is taken for URI syntax.
func dsn(file, query string) string {
	return "file:" + (&url.URL{Path: filepath.ToSlash(file)}).EscapedPath() + "?" + query
}

// create builds an empty store under a temporary name and renames it to path, so that a crash
// leaves either no database or a complete one.
func create(dir, path string) error {
	tmp := filepath.Join(dir, tmpName)
	for _, suffix := range []string{"", "-journal", "-wal", "-shm"} {
		if err := os.Remove(tmp + suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("store %s: removing a leftover: %w", dir, err)
		}
	}
	db, err := sql.Open("sqlite", dsn(tmp, "mode=rwc"))
	if err != nil {
		return fmt.Errorf("store %s: creating the database: %w", tmp, err)
	}
	db.SetMaxOpenConns(1)
	script := fmt.Sprintf("PRAGMA application_id = %d; PRAGMA user_version = %d; BEGIN; %s COMMIT; PRAGMA journal_mode = WAL;",
		applicationID, layout, schema)
	_, err = db.Exec(script)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncFile(tmp)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncFile(dir)
	}
	if err != nil {
		return fmt.Errorf("store %s: creating the database: %w", path, err)
	}
	return nil
}

// syncFile fsyncs a file or directory.
func syncFile(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// open opens the connection, checks that the database is an IoTD store of a known layout, and
// prepares the statements.
func (b *Backend) open(opts Options) error {
	db, err := sql.Open("sqlite", dsn(b.path, "mode=rw"))
	if err != nil {
		return fmt.Errorf("store %s: %w", b.path, err)
	}
	b.db = db
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	ctx := context.Background()
	if b.conn, err = db.Conn(ctx); err != nil {
		return b.engineErr("opening the database", err)
	}
	// Before the first read: the exclusive lock is taken then and held, which keeps a second
	// process out, and SQLite keeps the WAL index in memory instead of a -shm file.
	if _, err := b.conn.ExecContext(ctx, "PRAGMA locking_mode = EXCLUSIVE"); err != nil {
		return b.engineErr("setting the locking mode", err)
	}
	var id, ver int64
	if err := b.conn.QueryRowContext(ctx, "PRAGMA application_id").Scan(&id); err != nil {
		return b.engineErr("reading the database header", err)
	}
	if id != applicationID {
		return store.Corrupt(b.path, fmt.Sprintf("it is a SQLite database of another program (application_id %#x), not an IoTD store", id), nil)
	}
	if err := b.checkSize(); err != nil {
		return err
	}
	if err := b.conn.QueryRowContext(ctx, "PRAGMA user_version").Scan(&ver); err != nil {
		return b.engineErr("reading the database header", err)
	}
	if ver != layout {
		return store.Corrupt(b.path, fmt.Sprintf("unknown table layout %d (this build knows %d)", ver, layout), nil)
	}
	var mode string
	if err := b.conn.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode); err != nil {
		return b.engineErr("switching to WAL mode", err)
	}
	if mode != "wal" {
		return fmt.Errorf("store %s: SQLite refused WAL mode (journal mode %q)", b.path, mode)
	}
	pragmas := fmt.Sprintf("PRAGMA synchronous = FULL; PRAGMA cache_size = %d; PRAGMA wal_autocheckpoint = %d;",
		-opts.CacheKiB, opts.AutoCheckpoint)
	if _, err := b.conn.ExecContext(ctx, pragmas); err != nil {
		return b.engineErr("setting up the connection", err)
	}
	b.full = true
	// Starting and ending a write transaction takes the exclusive lock now rather than at the
	// first Commit, so that a store in use elsewhere is refused at Open, and replays a WAL.
	if _, err := b.conn.ExecContext(ctx, "BEGIN IMMEDIATE; COMMIT"); err != nil {
		return b.engineErr("locking the database", err)
	}
	for i, q := range stmtSQL {
		if b.st[i], err = b.conn.PrepareContext(ctx, q); err != nil {
			if code(err) == codeError { // no such table, no such column
				return store.Corrupt(b.path, "its tables are not those of an IoTD store", err)
			}
			return b.engineErr("preparing a statement", err)
		}
	}
	if !opts.SkipQuickCheck {
		return b.quickCheck()
	}
	return nil
}

// checkSize refuses a database file that is not a whole number of pages. SQLite writes the file
// in whole pages, and reads a short last page as if the missing bytes were zeros, which would hand
// back a record with bytes changed instead of an error. The size comes from stat: opening the file
// here would drop SQLite's locks on it (POSIX locks belong to the process, and any close releases
// them).
func (b *Backend) checkSize() error {
	var pageSize int64
	if err := b.conn.QueryRowContext(context.Background(), "PRAGMA page_size").Scan(&pageSize); err != nil {
		return b.engineErr("reading the page size", err)
	}
	fi, err := os.Stat(b.path)
	if err != nil {
		return fmt.Errorf("store %s: %w", b.path, err)
	}
	if pageSize <= 0 || fi.Size()%pageSize != 0 {
		return store.Corrupt(b.path, fmt.Sprintf("the database file is %d bytes, not a whole number of %d-byte pages (truncated or extended)",
			fi.Size(), pageSize), nil)
	}
	return nil
}

// quickCheck runs PRAGMA quick_check and reports up to 5 of the problems it finds.
func (b *Backend) quickCheck() error {
	rows, err := b.conn.QueryContext(context.Background(), "PRAGMA quick_check(5)")
	if err != nil {
		return b.engineErr("checking the database", err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return b.engineErr("checking the database", err)
		}
		if s != "ok" {
			problems = append(problems, s)
		}
	}
	if err := rows.Err(); err != nil {
		return b.engineErr("checking the database", err)
	}
	if len(problems) > 0 {
		return store.Corrupt(b.path, "PRAGMA quick_check found problems: "+strings.Join(problems, "; "), nil)
	}
	return nil
}

// engineErr wraps an error of SQLite: as corruption when SQLite says the file is damaged or not
// a database, as "in use" when another process holds the lock, else as it is.
func (b *Backend) engineErr(what string, err error) error {
	switch code(err) {
	case codeCorrupt, codeNotADB:
		return store.Corrupt(b.path, what, err)
	case codeBusy:
		return fmt.Errorf("store %s is in use by another process: %s: %w", b.path, what, err)
	}
	return fmt.Errorf("store %s: %s: %w", b.path, what, err)
}

// code returns the primary SQLite result code of err, 0 if err is not SQLite's.
func code(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() & 0xff
	}
	return 0
}

// Version implements store.Backend: the schema version in the meta table, 0 if none was set.
func (b *Backend) Version() (int, error) {
	if b.closed {
		return 0, store.ErrClosed
	}
	var v int64
	err := b.st[stGetVersion].QueryRow().Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, b.engineErr("reading the schema version", err)
	}
	return int(v), nil
}

// SetVersion implements store.Backend. It commits with synchronous=FULL, so the version is
// durable when it returns.
func (b *Backend) SetVersion(v int) error {
	if b.closed {
		return store.ErrClosed
	}
	if err := b.setSync(true); err != nil {
		return err
	}
	if _, err := b.st[stSetVersion].Exec(int64(v)); err != nil {
		return b.engineErr("recording the schema version", err)
	}
	return nil
}

// Close implements store.Backend. SQLite checkpoints the WAL into the database and removes it
// when its last connection closes, so a store closed cleanly is the one file iotd.db.
func (b *Backend) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	return b.release()
}

// release closes whatever open opened.
func (b *Backend) release() error {
	var errs []error
	for i, s := range b.st {
		if s != nil {
			errs = append(errs, s.Close())
			b.st[i] = nil
		}
	}
	if b.conn != nil {
		errs = append(errs, b.conn.Close())
		b.conn = nil
	}
	if b.db != nil {
		errs = append(errs, b.db.Close())
		b.db = nil
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("store %s: closing: %w", b.path, err)
	}
	return nil
}
