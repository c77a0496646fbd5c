// Package sqlite opens SQLite databases the way Boxcar needs them, runs
// Boxcar's schema migrations and holds every SQL statement Boxcar executes.
//
// # Why seq is commit order
//
// The outbox key is `seq INTEGER PRIMARY KEY` (the rowid). SQLite allows one
// writer at a time: a transaction takes the write lock at its first write (at
// BEGIN, with the immediate transactions this package opens) and keeps it
// until COMMIT or ROLLBACK. A seq is assigned while the lock is held, as
// max(seq)+1, so every transaction that commits later gets a larger seq. The
// row with the largest seq is never pruned (see PruneOutbox), so max(seq)
// never goes down and no seq is handed out twice.
// Therefore a reader that has seen seq = n committed never later sees a
// commit with seq < n, and the relay can keep one cursor (the last published
// seq) instead of a flag per row. A rolled-back transaction may leave a gap;
// gaps are harmless, the relay never waits for a missing seq.
//
// This does not hold on databases with concurrent writers (PostgreSQL
// sequences are handed out before commit, so a smaller seq can commit after a
// larger one). Porting the outbox would need a commit-ordered reading instead.
package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// Synchronous modes for Options.Synchronous.
const (
	// SyncNormal fsyncs the WAL at checkpoints only. A committed transaction
	// survives a process crash; the last few may be lost in a power loss or
	// an OS crash. This is the default: it is several times faster than
	// SyncFull (bench/RESULTS.md has the figures).
	SyncNormal = "NORMAL"
	// SyncFull fsyncs the WAL at every commit: committed means durable.
	SyncFull = "FULL"
)

// Options configures Open. The zero value is valid.
type Options struct {
	// Synchronous is SyncNormal (default) or SyncFull.
	Synchronous string
	// BusyTimeout is how long a statement waits for another connection's
	// write lock before failing with SQLITE_BUSY. Default 10s.
	BusyTimeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.Synchronous == "" {
		o.Synchronous = SyncNormal
	}
	if o.BusyTimeout == 0 {
		o.BusyTimeout = defaultBusyTimeout
	}
	return o
}

func (o Options) validate() error {
	switch strings.ToUpper(o.Synchronous) {
	case SyncNormal, SyncFull:
	default:
		return fmt.Errorf("sqlite: Options.Synchronous is %q: use %q or %q", o.Synchronous, SyncNormal, SyncFull)
	}
	if o.BusyTimeout < 0 {
		return fmt.Errorf("sqlite: Options.BusyTimeout is negative: use 0 for the default (10s)")
	}
	return nil
}

// stmtCacheSize is how many prepared statements each connection keeps, by
// SQL text, least recently used out. Boxcar runs about ten distinct
// statements; the rest is for the application's.
const stmtCacheSize = 64

// defaultBusyTimeout is Options.BusyTimeout's default.
const defaultBusyTimeout = 10 * time.Second

// dbState is what the connections of one database from Open share: the
// gate (its write lock in Go, see gate.go) and the watchers of its outbox
// commits. It hangs off the database's driver (db.Driver()), so it lives and
// goes with the *sql.DB: nothing is registered per database.
type dbState struct {
	gate     gate
	watchers commitWatchers
	busy     time.Duration // the connections' busy timeout: the longest an app's write waits for the gate
	// selfReported is set while the Writer commits a group whose commit it
	// reports itself, after the commit (WriterConfig.AfterTxCommit): the
	// commit hook, which fires before the commit is visible, stays quiet
	// then, so the relay is not woken to read too early and look again.
	// SQLite has one writer at a time: no other connection commits then.
	selfReported atomic.Bool
	// path is the database's main file, as SQLite names it (set by Open
	// before it returns the database).
	path string
	// writers counts the Writers running on the database. While one does,
	// its checkpointer makes every checkpoint, and no connection runs one of
	// its own (see autoCheckpoint).
	writers atomic.Int32
	// commits are called at every commit on a connection, before it (from
	// the commit hook) and, for the app's commits, after it: Writers'
	// checkpointers are poked.
	commits commitWatchers
	// forbidden caches checkpointsForbidden(path) once it is true.
	forbidden atomic.Bool
}

// SQLite's wal_autocheckpoint, by default: a connection that commits past
// this many WAL pages runs a PASSIVE checkpoint.
const defaultAutoCheckpoint = 1000

// autoCheckpoint is the wal_autocheckpoint the database's connections run
// with: none while a Writer runs or after a checkpoint's fsync failed,
// SQLite's default otherwise. SQLite ignores the errors of a connection's
// own checkpoints, so with a Writer every checkpoint is its checkpointer's,
// which sees a failed fsync (see checkpoint.go).
func (st *dbState) autoCheckpoint() int {
	if st.writers.Load() > 0 || st.checkpointsForbidden() {
		return 0
	}
	return defaultAutoCheckpoint
}

// checkpointsForbidden reports whether no checkpoint may run on the
// database any more (see forbidCheckpoints).
func (st *dbState) checkpointsForbidden() bool {
	if st.forbidden.Load() {
		return true
	}
	if checkpointsForbidden(st.path) {
		st.forbidden.Store(true)
		return true
	}
	return false
}

type commitWatchers struct {
	mu  sync.Mutex
	fns map[int]func()
	id  int
}

// add calls fn at each notify, until cancel.
func (w *commitWatchers) add(fn func()) (cancel func()) {
	w.mu.Lock()
	w.id++
	id := w.id
	w.fns[id] = fn
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		delete(w.fns, id)
		w.mu.Unlock()
	}
}

func (w *commitWatchers) notify() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, fn := range w.fns {
		fn()
	}
}

// stateOf returns the shared state of db's connections, or nil for a
// database not opened here.
func stateOf(db *sql.DB) *dbState {
	if d, ok := db.Driver().(*driverWrap); ok {
		return d.state
	}
	return nil
}

// Open opens the SQLite database file at path with the settings Boxcar relies
// on, creating it if needed. See OpenOptions.
func Open(path string) (*sql.DB, error) {
	return OpenOptions(path, Options{})
}

// OpenOptions opens the SQLite database file at path:
//   - journal_mode=WAL, checked: readers never block the writer and the writer
//     never blocks readers, so the relay and subscribers read while the app
//     writes. A database that cannot use WAL (in-memory, some network file
//     systems) is refused.
//   - busy_timeout: a writer that finds the lock taken by another process
//     waits instead of failing at once.
//   - synchronous: see SyncNormal and SyncFull.
//   - transactions begin IMMEDIATE: a transaction that reads and then writes
//     would otherwise fail with SQLITE_BUSY when it upgrades its lock, which
//     the busy timeout cannot cure.
//   - foreign_keys=on, as most applications expect.
//   - a cache of prepared statements per connection (the driver's
//     _stmt_cache_size): a statement run by its SQL text, as applications and
//     Boxcar's own handlers do in every transaction, is compiled once per
//     connection instead of at every call. Compiling costs about as much as
//     running a small INSERT, and it is done while holding the write lock.
//   - a new file is created readable by its owner only (0600); SQLite gives
//     its -wal and -shm files the same permissions.
//
// The app's transactions and statements on these connections queue for the
// database's writer in Go, in arrival order, with Boxcar's own writes (see
// gate.go): no writer sleeps in SQLite's busy handler while the lock is free,
// and none is kept out by another that keeps taking it back. A write waits at
// most the busy timeout, then fails with "database is locked" as before.
//
// Connections opened here report commits that wrote the outbox, which wakes
// the relay at once (see WatchOutboxCommits); databases opened otherwise are
// polled.
func OpenOptions(path string, o Options) (*sql.DB, error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	if path == "" || path == ":memory:" || strings.Contains(path, "mode=memory") {
		return nil, fmt.Errorf("sqlite: path %q: Boxcar needs a database file (WAL does not work in memory)", path)
	}
	if err := createPrivate(path); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	st := &dbState{watchers: commitWatchers{fns: map[int]func(){}}, commits: commitWatchers{fns: map[int]func(){}}, busy: o.BusyTimeout}
	drv := &driverWrap{state: st}
	drv.ConnectHook = func(c *sqlite3.SQLiteConn) error {
		// outboxWritten is per connection, and SQLite runs the hooks on the
		// goroutine using the connection, so it needs no lock.
		outboxWritten := false
		c.RegisterUpdateHook(func(op int, _ string, table string, _ int64) {
			if op == sqlite3.SQLITE_INSERT && table == OutboxTable {
				outboxWritten = true
			}
		})
		c.RegisterCommitHook(func() int {
			st.commits.notify()
			if outboxWritten {
				outboxWritten = false
				if !st.selfReported.Load() {
					st.watchers.notify()
				}
			}
			return 0
		})
		c.RegisterRollbackHook(func() { outboxWritten = false })
		return nil
	}
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_busy_timeout", strconv.FormatInt(o.BusyTimeout.Milliseconds(), 10))
	q.Set("_synchronous", strings.ToUpper(o.Synchronous))
	q.Set("_txlock", "immediate")
	q.Set("_foreign_keys", "on")
	q.Set("_stmt_cache_size", strconv.Itoa(stmtCacheSize))
	db := sql.OpenDB(&connector{dsn: "file:" + uriPath(path) + "?" + q.Encode(), drv: drv})
	var mode string
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		db.Close()
		return nil, fmt.Errorf("sqlite: open %s: journal_mode is %q, Boxcar needs WAL", path, mode)
	}
	var err error
	if st.path, err = mainFile(context.Background(), db); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	return db, nil
}

// uriPath escapes path for an SQLite URI filename: SQLite decodes %HH in
// it, and '?' and '#' would end it.
func uriPath(path string) string {
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		switch c := path[i]; c {
		case '%', '?', '#':
			fmt.Fprintf(&b, "%%%02X", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// createPrivate creates the database file, if it does not exist, readable
// and writable by its owner only.
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return f.Close()
}

// connector opens the connections of one database from Open.
type connector struct {
	dsn string
	drv *driverWrap
}

func (c *connector) Connect(context.Context) (driver.Conn, error) { return c.drv.Open(c.dsn) }
func (c *connector) Driver() driver.Driver                        { return c.drv }

// WatchOutboxCommits calls fn each time a connection of db is about to commit
// a transaction that inserted outbox rows. It reports false if db was not
// opened by this package (the caller must poll). fn runs inside SQLite's
// commit hook, before the commit is visible to other connections: it must
// not block or touch the database, only signal. Call cancel to stop.
func WatchOutboxCommits(db *sql.DB, fn func()) (cancel func(), ok bool) {
	st := stateOf(db)
	if st == nil {
		return func() {}, false
	}
	return st.watchers.add(fn), true
}

// IsDatabaseFailure reports whether err is the database's own failure (a
// full disk, an I/O error, no memory, a corrupt file), not a statement's:
// retrying the same work later may succeed.
func IsDatabaseFailure(err error) bool {
	se, ok := asSQLiteError(err)
	if !ok {
		return false
	}
	switch se.Code {
	case sqlite3.ErrFull, sqlite3.ErrIoErr, sqlite3.ErrNomem, sqlite3.ErrCorrupt, sqlite3.ErrNotADB, sqlite3.ErrCantOpen:
		return true
	}
	return false
}

// IsFull reports whether err is SQLite's "database or disk is full".
func IsFull(err error) bool {
	se, ok := asSQLiteError(err)
	return ok && se.Code == sqlite3.ErrFull
}

// asSQLiteError is SQLite's error in err's chain. The helpers above run
// after every statement or handler call, mostly on a nil error: that
// returns before anything is allocated (errors.As's target escapes).
func asSQLiteError(err error) (sqlite3.Error, bool) {
	if err == nil {
		return sqlite3.Error{}, false
	}
	var se sqlite3.Error
	ok := errors.As(err, &se)
	return se, ok
}
