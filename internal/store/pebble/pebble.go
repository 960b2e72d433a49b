// Package pebble is IoTD's default file backend: a store.Backend on the Pebble LSM engine
// (github.com/cockroachdb/pebble/v2), kept in one directory.
//
// Every record of the persistence contract is one key-value pair, written with a small versioned
// binary encoding (see record.go). A session's records share a key prefix that starts with the
// length of its client id, so DeleteSession is one range deletion that cannot reach another
// client. A Commit is one Pebble batch, written to the write-ahead log with or without fsync;
// Close flushes the log to table files, so a cleanly closed store holds only checksummed tables.
//
// A store that cannot be read — a damaged or truncated table, manifest or options file, a record
// that does not decode, a directory that holds something else — is reported as store.ErrCorrupt
// (a *store.CorruptError). Open refuses a directory with unrelated files before Pebble writes to
// it, and a panic of the engine becomes an error: ErrCorrupt during Open, Load and Version, a
// plain error during Commit, Sync and SetVersion, after which the Backend refuses further work.
//
// What Pebble cannot tell from a crash is recovered as a crash: a write-ahead log or manifest
// whose last part is cut off or unreadable ends where it stops making sense, and the records
// before that point are loaded. Damage to a log is reported only when later parts of the log
// prove that the damaged part had been written and synced.
package pebble

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"strings"
	"syscall"
	"time"

	engine "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/iotd/iotd/internal/store"
)

// Defaults for Options: a small store for a broker with a few thousand sessions. They equal
// Pebble's own memtable and cache defaults today, and are spelled out so that IoTD's footprint does
// not follow Pebble's; open files are bounded lower than Pebble's 1000.
const (
	// DefaultMemTableSize is the default Options.MemTableSize: 4 MiB.
	DefaultMemTableSize = 4 << 20
	// DefaultCacheSize is the default Options.CacheSize: 8 MiB.
	DefaultCacheSize = 8 << 20
	// DefaultMaxOpenFiles is the default Options.MaxOpenFiles.
	DefaultMaxOpenFiles = 256
)

// Options tune the engine. The zero value is a small store with the defaults above.
type Options struct {
	// MemTableSize is the size of one memtable, in bytes: writes gather there and in the
	// write-ahead log until it is flushed to a table file. Up to two exist at a time. 0 means
	// DefaultMemTableSize.
	MemTableSize int64
	// CacheSize is the size of the block cache, in bytes. 0 means DefaultCacheSize.
	CacheSize int64
	// MaxOpenFiles bounds the file descriptors the engine keeps open. 0 means DefaultMaxOpenFiles.
	MaxOpenFiles int
	// Logger receives the engine's messages: informational ones at debug level, errors and
	// background failures at error level. nil discards them.
	Logger *slog.Logger
}

// Backend is a store.Backend kept by Pebble in one directory. Like every Backend, its methods are
// called by one goroutine at a time.
type Backend struct {
	db      *engine.DB
	fsClose io.Closer // stops the disk-health checker after db closes
	dir     string
	log     *slog.Logger
	key     []byte // scratch for keys
	val     []byte // scratch for values
	end     []byte // scratch for range ends
	dirty   bool   // something was written since Open: Close flushes
	fail    error  // set when the engine panicked: it may hold locks or be half-updated
}

var _ store.Backend = (*Backend)(nil)

// maxScratch bounds the scratch buffer kept between commits, so that one large payload does not
// stay allocated.
const maxScratch = 64 << 10

// Open opens the store in dir, creating dir and an empty store if dir is missing or empty.
//
// A directory that holds anything but a Pebble store is refused with a *store.CorruptError, and
// nothing in it is changed; so is a store that Pebble cannot open because a file is damaged. A
// store that another process (or another Backend in this one) has open is refused with a plain
// error.
func Open(dir string, opts Options) (b *Backend, err error) {
	if opts.MemTableSize < 0 || opts.CacheSize < 0 || opts.MaxOpenFiles < 0 {
		return nil, fmt.Errorf("pebble store %s: negative option in %+v", dir, opts)
	}
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	// The disk-health wrapper that Pebble would add itself runs a goroutine that Pebble stops only
	// when a DB it opened closes, not when Open fails; owning it stops it in both cases.
	fsys, fsClose := vfs.WithDiskHealthChecks(vfs.Default, diskSlowThreshold, nil, func(info vfs.DiskSlowInfo) {
		lg.Warn("pebble disk is slow", "dir", dir, "path", info.Path, "op", info.OpType.String(), "duration", info.Duration)
	})
	eo := &engine.Options{
		FS:                 fsys,
		MemTableSize:       uint64(or(opts.MemTableSize, DefaultMemTableSize)),
		CacheSize:          or(opts.CacheSize, DefaultCacheSize),
		MaxOpenFiles:       or(opts.MaxOpenFiles, DefaultMaxOpenFiles),
		FormatMajorVersion: formatVersion,
		Logger:             logger{lg},
		EventListener:      eventListener(lg),
	}
	defer func() {
		if r := recover(); r != nil {
			b, err = nil, store.Corrupt(dir, "the engine failed while opening the store", panicError(r))
		}
		if b == nil {
			fsClose.Close() // stops the health checker's goroutine; it has no error to report
		}
	}()
	db, err := engineOpen(dir, eo)
	if err != nil {
		if errors.Is(err, syscall.EAGAIN) || strings.Contains(err.Error(), "lock held") {
			return nil, fmt.Errorf("store %s is in use by another process (another iotd with the same data directory?): %w", dir, err)
		}
		if environmental(err) {
			return nil, fmt.Errorf("pebble store %s: %w", dir, err)
		}
		return nil, store.Corrupt(dir, "the engine cannot open the store", err)
	}
	return &Backend{db: db, fsClose: fsClose, dir: dir, log: lg}, nil
}

// diskSlowThreshold is how long a write or sync may take before the disk is reported as slow.
const diskSlowThreshold = 5 * time.Second

// engineOpen is engine.Open; tests replace it to make it panic.
var engineOpen = engine.Open

// formatVersion is the on-disk format of new stores, named rather than FormatNewest so that a newer
// Pebble does not silently upgrade a store beyond what an older IoTD reads.
const formatVersion = engine.FormatValueSeparation

func or[T int | int64](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// environmental reports whether err from engine.Open is about the environment rather than the
// files: permissions, a full disk, or a lock held by another user of the store.
func environmental(err error) bool {
	return errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.ENOSPC) ||
		errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EROFS) ||
		strings.Contains(err.Error(), "lock held")
}

// checkDir creates dir if it is missing, and refuses a path that is not a directory or a directory
// with files that Pebble did not write, before Pebble touches it: Pebble would create a store among
// them, or, with its manifest marker gone, start afresh and delete the tables it no longer knows.
func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("pebble store %s: %w", dir, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("pebble store %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return store.Corrupt(dir, "it is a file, not a Pebble store directory", nil)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("pebble store %s: %w", dir, err)
	}
	var foreign, data []string
	hasManifest := false
	for _, e := range entries {
		name := e.Name()
		switch fileKind(name) {
		case fileForeign:
			foreign = append(foreign, name)
		case fileData:
			data = append(data, name)
		case fileManifestMarker:
			hasManifest = true
		}
		if e.IsDir() {
			foreign = append(foreign, name)
		}
	}
	if len(foreign) > 0 {
		return store.Corrupt(dir, "the directory holds files that are not part of a Pebble store: "+list(foreign), nil)
	}
	if !hasManifest && len(data) > 0 {
		return store.Corrupt(dir, "the manifest marker is missing, but data files are present: "+list(data), nil)
	}
	return nil
}

func list(names []string) string {
	const most = 5
	if len(names) > most {
		return strings.Join(names[:most], ", ") + fmt.Sprintf(" and %d more", len(names)-most)
	}
	return strings.Join(names, ", ")
}

type fileClass uint8

const (
	fileForeign        fileClass = iota // not written by Pebble
	fileSetup                           // written while a store is created: LOCK, OPTIONS, markers, temporaries
	fileManifestMarker                  // names the current manifest: the store exists
	fileData                            // holds records or their index: tables, logs, manifests
)

// fileKind classifies a file name by Pebble's naming scheme. A MANIFEST-000001 without a marker is
// what an interrupted creation leaves: nothing was stored before the marker named it.
func fileKind(name string) fileClass {
	switch {
	case name == "LOCK":
		return fileSetup
	case name == "CURRENT": // stores of Pebble's oldest format
		return fileManifestMarker
	case strings.HasPrefix(name, "marker.manifest."):
		return fileManifestMarker
	case strings.HasPrefix(name, "marker."), strings.HasSuffix(name, ".dbtmp"):
		return fileSetup
	case strings.HasPrefix(name, "OPTIONS-") && digits(name[len("OPTIONS-"):]):
		return fileSetup
	case name == "MANIFEST-000001":
		return fileSetup
	case strings.HasPrefix(name, "MANIFEST-") && digits(name[len("MANIFEST-"):]):
		return fileData
	}
	base, ext, _ := strings.Cut(name, ".")
	switch ext {
	case "sst", "blob":
		if digits(base) {
			return fileData
		}
	case "log": // a write-ahead log: 000012.log, or 000012-001.log after a failover
		n, idx, _ := strings.Cut(base, "-")
		if digits(n) && (idx == "" || digits(idx)) {
			return fileData
		}
	}
	return fileForeign
}

func digits(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// panicError turns a recovered panic value into an error.
func panicError(r any) error {
	if err, ok := r.(error); ok {
		return fmt.Errorf("engine panic: %w", err)
	}
	return fmt.Errorf("engine panic: %v", r)
}

// guard recovers a panic of the engine during an operation that changes the store: the engine may
// be half-updated or hold a lock, so the Backend refuses every later operation. It is deferred.
func (b *Backend) guard(err *error, what string) {
	if r := recover(); r != nil {
		b.fail = fmt.Errorf("pebble store %s: %s: %w; the store must be closed and reopened", b.dir, what, panicError(r))
		b.log.Error("pebble store failed", "dir", b.dir, "error", b.fail)
		*err = b.fail
	}
}

// guardRead recovers a panic of the engine while reading. It is deferred.
func (b *Backend) guardRead(err *error, what string) {
	if r := recover(); r != nil {
		*err = b.readPanic(what, r)
	}
}

// readPanic handles panic r of the engine while reading: the store cannot be read, and the engine
// may hold a lock, so the Backend refuses every later operation.
func (b *Backend) readPanic(what string, r any) error {
	b.fail = store.Corrupt(b.dir, what, panicError(r))
	b.log.Error("pebble store failed", "dir", b.dir, "error", b.fail)
	return b.fail
}

func (b *Backend) usable() error {
	if b.db == nil {
		return fmt.Errorf("pebble store %s: %w", b.dir, store.ErrClosed)
	}
	return b.fail
}

func writeOptions(sync bool) *engine.WriteOptions {
	if sync {
		return engine.Sync
	}
	return engine.NoSync
}

// Commit implements store.Backend: ops become one Pebble batch, applied atomically and, with sync,
// fsynced to the write-ahead log before Commit returns. The batch holds copies, so nothing of ops
// is kept.
func (b *Backend) Commit(ops []store.Op, sync bool) (err error) {
	if err := b.usable(); err != nil {
		return err
	}
	for i := range ops {
		if err := check(&ops[i]); err != nil {
			return err // before changing anything: Commit is atomic
		}
	}
	if len(ops) == 0 {
		return nil
	}
	defer b.guard(&err, "commit")
	b.dirty = true
	batch := b.db.NewBatch()
	for i := range ops {
		if err := b.add(batch, &ops[i]); err != nil {
			batch.Close() // never applied; Close only returns it to the pool
			return fmt.Errorf("pebble store %s: %s: %w", b.dir, ops[i].Kind, err)
		}
	}
	if cap(b.val) > maxScratch {
		b.val = nil
	}
	if err := batch.Commit(writeOptions(sync)); err != nil {
		return fmt.Errorf("pebble store %s: commit: %w", b.dir, err)
	}
	return batch.Close()
}

// check rejects an operation Commit cannot apply.
func check(op *store.Op) error {
	if op.Kind == 0 || op.Kind > store.DeleteInbound {
		return fmt.Errorf("store: unknown operation %s", op.Kind)
	}
	if op.Kind == store.PutSession && op.Session == nil {
		return fmt.Errorf("store: PutSession %q without a session", op.ClientID)
	}
	return nil
}

// add appends op to batch. The batch copies keys and values, so the scratch buffers are reused.
func (b *Backend) add(batch *engine.Batch, op *store.Op) error {
	k := b.key[:0]
	var err error
	switch op.Kind {
	case store.DeleteSession:
		// The client's records are exactly the keys between its prefix + subSession and its
		// prefix + subEnd (see the key layout in record.go).
		k = appendSessionKey(k, op.ClientID)
		b.end = append(append(b.end[:0], k[:len(k)-1]...), subEnd)
		err = batch.DeleteRange(k, b.end, nil)
	case store.DeleteSubscription:
		k = appendSubscriptionKey(k, op.ClientID, op.Name)
		err = batch.Delete(k, nil)
	case store.DeleteRetained:
		k = appendRetainedKey(k, op.Name)
		err = batch.Delete(k, nil)
	case store.DeleteMessage:
		k = appendMessageKey(k, op.ID)
		err = batch.Delete(k, nil)
	case store.DeleteOutbound:
		k = appendOutboundKey(k, op.ClientID, op.ID)
		err = batch.Delete(k, nil)
	case store.DeleteInbound:
		k = appendInboundKey(k, op.ClientID, op.PacketID)
		err = batch.Delete(k, nil)
	default:
		var v []byte
		k, v = appendRecord(k, b.val[:0], op)
		err = batch.Set(k, v, nil)
		b.val = v
	}
	b.key = k
	return err
}

// Sync implements store.Backend: it writes an empty entry to the write-ahead log with fsync, which
// makes every earlier entry durable too.
func (b *Backend) Sync() (err error) {
	if err := b.usable(); err != nil {
		return err
	}
	defer b.guard(&err, "sync")
	if err := b.db.LogData(nil, engine.Sync); err != nil {
		return fmt.Errorf("pebble store %s: sync: %w", b.dir, err)
	}
	return nil
}

// Version implements store.Backend. The version is stored under a key of its own; a store without
// it is version 0.
func (b *Backend) Version() (v int, err error) {
	if err := b.usable(); err != nil {
		return 0, err
	}
	defer b.guardRead(&err, "the schema version cannot be read")
	val, closer, err := b.db.Get(versionKey)
	if errors.Is(err, engine.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, b.readError("the schema version cannot be read", err)
	}
	x, err := decodeVersion(val)
	closer.Close() // Close of a Get result only releases a reference; it has no error to report.
	if err != nil || x > math.MaxInt32 {
		if err == nil {
			err = fmt.Errorf("version %d out of range", x)
		}
		return 0, store.Corrupt(b.dir, "the schema version record does not decode", err)
	}
	return int(x), nil
}

// SetVersion implements store.Backend.
func (b *Backend) SetVersion(v int) (err error) {
	if err := b.usable(); err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("pebble store %s: negative schema version %d", b.dir, v)
	}
	defer b.guard(&err, "set version")
	b.dirty = true
	if err := b.db.Set(versionKey, appendVersionValue(nil, uint64(v)), engine.Sync); err != nil {
		return fmt.Errorf("pebble store %s: set version: %w", b.dir, err)
	}
	return nil
}

// readError wraps an engine error met while reading: corruption makes a *store.CorruptError,
// anything else (an I/O error, say) a plain one.
func (b *Backend) readError(what string, err error) error {
	if engine.IsCorruptionError(err) {
		return store.Corrupt(b.dir, what, err)
	}
	return fmt.Errorf("pebble store %s: %s: %w", b.dir, what, err)
}

// Load implements store.Backend: it walks every key in order and decodes it. A key or value that
// does not decode makes the store corrupt; the error names the key.
func (b *Backend) Load(fn func(*store.Op) error) (err error) {
	if err := b.usable(); err != nil {
		return err
	}
	inFn := false // a panic of fn is the caller's, not the engine's: it goes on up
	defer func() {
		if inFn {
			return // without calling recover, which would stop the panic
		}
		if r := recover(); r != nil {
			err = b.readPanic("the engine failed while reading the store", r)
		}
	}()
	it, err := b.db.NewIter(nil)
	if err != nil {
		return b.readError("the store cannot be read", err)
	}
	defer func() {
		if cerr := it.Close(); cerr != nil && err == nil {
			err = b.readError("the store cannot be read", cerr)
		}
	}()
	var d decoder
	for ok := it.First(); ok; ok = it.Next() {
		val, verr := it.ValueAndErr()
		if verr != nil {
			return b.readError("a record cannot be read", verr)
		}
		op := new(store.Op)
		meta, derr := d.decode(it.Key(), val, op)
		if derr != nil {
			return store.Corrupt(b.dir, fmt.Sprintf("record %s does not decode", keyString(it.Key())), derr)
		}
		if meta {
			continue
		}
		inFn = true
		if err := fn(op); err != nil {
			return err
		}
		inFn = false
	}
	if err := it.Error(); err != nil {
		return b.readError("the store cannot be read", err)
	}
	return nil
}

// keyString shows a key for an operator, shortened.
func keyString(k []byte) string {
	const most = 64
	if len(k) > most {
		return fmt.Sprintf("%q...", k[:most])
	}
	return fmt.Sprintf("%q", k)
}

// Close implements store.Backend: it flushes what the write-ahead log holds to a table file (so
// that a cleanly closed store keeps every record in checksummed tables, and the next Open replays
// nothing), closes the engine, which stops its goroutines and releases the directory lock, and
// stops the disk-health checker. A second Close does nothing.
func (b *Backend) Close() (err error) {
	if b.db == nil {
		return nil
	}
	db := b.db
	b.db = nil
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("pebble store %s: close: %w", b.dir, panicError(r))
		}
	}()
	defer b.fsClose.Close() // after db: it stops the disk-health checker, and has no error to report
	var ferr error
	if b.dirty && b.fail == nil {
		if err := db.Flush(); err != nil {
			ferr = fmt.Errorf("pebble store %s: flush: %w", b.dir, err)
		}
	}
	if err := db.Close(); err != nil {
		return errors.Join(ferr, fmt.Errorf("pebble store %s: close: %w", b.dir, err))
	}
	return ferr
}
