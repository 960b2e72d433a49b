// Package sqlite is IoTD's SQLite storage backend: a store.Backend kept in one SQLite database,
// dir/iotd.db, through modernc.org/sqlite (pure Go, no cgo).
//
// # Layout
//
// The database has one table per kind of record (sessions, subscriptions, retained, messages,
// outbound, inbound) plus meta, which holds the store's schema version. The columns are plain
// values that an operator can read with the sqlite3 command-line tool (`sqlite3 iotd.db .schema`
// shows what each one means); only payloads and wills are blobs, a will in a small versioned
// encoding of its own. The tables are STRICT, so SQLite itself refuses a value of the wrong type.
// PRAGMA application_id marks the file as IoTD's and PRAGMA user_version numbers the table layout.
// A new database is built under a temporary name and renamed into place once its schema is
// written, so an iotd.db that exists is never legitimately empty.
//
// # Durability
//
// The database runs in WAL mode with one connection that holds an exclusive lock
// (locking_mode=EXCLUSIVE): a second process cannot open the same store, and no -shm file is used.
// A Commit is one transaction. With sync true it runs under synchronous=FULL, which fsyncs the WAL
// before Commit returns; with sync false under synchronous=NORMAL, which leaves the WAL to the
// operating system. Sync runs a checkpoint, which fsyncs the WAL, copies it into the database and
// fsyncs the database. Close leaves the single file iotd.db.
//
// # Damage
//
// Open refuses with an error wrapping store.ErrCorrupt, naming the file and what is wrong:
//   - before SQLite opens anything: an iotd.db that is not a regular file or is shorter than a
//     page, a WAL whose header is neither valid nor all zeros (SQLite would silently ignore such a
//     WAL and every transaction in it), a directory that holds other files but no iotd.db, or
//     iotd.db's WAL without iotd.db;
//   - a file that is not a SQLite database, a SQLite database of another program, an unknown
//     table layout, tables or columns that are not IoTD's, and a database file that is not a whole
//     number of pages (SQLite would read a short last page as zeros);
//   - then PRAGMA quick_check, which reads every page and checks the structure of every b-tree,
//     indexes included, in about a fifth of the time Load takes. PRAGMA integrity_check, which
//     also matches every index against its table, is not run: it is much slower on a large store.
//     Options.SkipQuickCheck leaves detection to Load alone, which misses damage to the indexes
//     of the sessions and retained tables (it never reads them).
//
// Load reads every row of every table and reports, the same way, a page SQLite finds malformed
// and a row that SQLite reads but that does not decode (a value out of range for its field, a
// will that is not in IoTD's encoding). SQLite keeps no checksums of its pages, so a changed byte
// inside a payload is found by neither.
//
// A store refused before SQLite opens it is not touched. Once SQLite has opened it, closing the
// connection after an error lets SQLite copy the committed pages of a WAL left by a crash into the
// database file and remove the WAL (modernc.org/sqlite offers no way to set
// SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE); the damaged pages are left as they are and nothing committed
// is lost, but the files are not byte for byte what they were.
package sqlite
