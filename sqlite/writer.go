package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The single writer. SQLite admits one writer at a time; Writer makes that
// one writer explicit, in Go, for everything Boxcar writes:
//
//   - the write lock: Boxcar's writes (Bus.Tx groups, the relay's cursor,
//     subscriber transactions, the checkpointer's short locked step) queue
//     here, in arrival order, instead of in SQLite's busy handler, which
//     sleeps and retries (1, 2, 5, 10 ms ...) and turns microsecond commits
//     into millisecond tails;
//   - the write connection: every write under the lock runs on one
//     connection, which keeps its page cache (SQLite drops a connection's
//     whole cache when it starts a transaction after another connection
//     committed, so writes that hop between the pool's connections each start
//     by reading the pages they change again);
//   - the shield (see Shield): on while the connection runs Tx groups, so a
//     caller's canceled context cannot interrupt, and so roll back, a
//     transaction it shares with other callers; off for Boxcar's own writes,
//     so that a subscriber handler's timeout still interrupts its statement;
//   - group commit (Tx, txgroup.go) with a savepoint per call;
//   - the checkpointer (checkpoint.go), which keeps WAL checkpoints off the
//     commit path.

// ErrClosed is returned by Tx once RefuseTx or Close was called.
var ErrClosed = errors.New("sqlite: writer closed")

// ErrWALSyncFailed is wrapped by Durable's error, for good, once an fsync of
// the WAL, or a checkpoint's fsync of the database file (checkpoint.go),
// has failed: what the kernel could not write may be gone, and no
// later fsync can show otherwise, so nothing is reported durable again
// while the process runs, also by a Writer of the database opened again
// (WriterStats.WALSyncFailure says why). A SyncFull Tx then fails before it
// runs, with ErrTxNotRun too: it could not keep its promise. The one whose
// own fsync failed was committed; its error does not wrap ErrTxNotRun.
var ErrWALSyncFailed = errors.New("sqlite: an fsync of the WAL failed")

// ErrTxNotRun is wrapped by the error of a Tx call whose function never ran
// and of which nothing was committed: safe to retry once the cause is gone.
var ErrTxNotRun = errors.New("not run, nothing committed")

// WriterConfig configures a Writer. The zero value is valid.
type WriterConfig struct {
	// AfterTxCommit, if set, is called after each Tx group commits, before
	// its callers get their results (Boxcar wakes the relay there). It must
	// not block.
	AfterTxCommit func()
	// Synchronous is when Tx reports a commit. Either way Durable waits
	// for an fsync of the WAL that covers every commit before it (see
	// syncer.go), off the write lock, and the write connection commits with
	// synchronous=NORMAL: what leaves the database (a published event, an
	// ack) waits for Durable. SyncFull: Tx returns once its commit is
	// durable (it survives a power loss). SyncNormal (the default): Tx
	// returns at the commit, as the app's own connections do in NORMAL: a
	// power loss can take back the last commits, together.
	Synchronous string
	// Logger receives the checkpointer's warnings. Default: discard.
	Logger *slog.Logger
}

// Writer is the single writer of one database. Make it with NewWriter and
// Close it before closing the database.
type Writer struct {
	db      *sql.DB
	cfg     WriterConfig
	gate    *gate    // the database's (from Open), or the writer's own
	st      *dbState // the database's state (from Open), nil otherwise
	conn    *sql.Conn
	ended   autoCommitter // the write connection's driver: tells a transaction SQLite ended
	shield  *Shield       // nil for a database not from Open
	unwatch func()        // ends the checkpointer's pokes at commits (dbState.commits)
	txq     txQueue
	ckpt    *checkpointer
	syncer  *walSyncer // nil for a database without a file (then Durable returns at once)
	txWaits bool       // SyncFull: Tx results wait for Durable

	busy        time.Duration // the longest a Tx call waits for the write lock (the database's busy timeout)
	refuseTx    atomic.Bool   // Tx calls not yet run return ErrClosed
	closing     chan struct{} // closed at RefuseTx: wakes the Tx calls waiting for the lock
	closingOnce sync.Once
	txCommits   atomic.Int64 // Tx groups committed
	txCalls     atomic.Int64 // Tx calls in them

	closeOnce sync.Once
	closeErr  error
}

// NewWriter takes a connection of db for the writer and starts its
// checkpointer.
func NewWriter(ctx context.Context, db *sql.DB, cfg WriterConfig) (*Writer, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Synchronous == "" {
		cfg.Synchronous = SyncNormal
	}
	sync := strings.ToUpper(cfg.Synchronous)
	if sync != SyncFull && sync != SyncNormal {
		return nil, fmt.Errorf("sqlite: writer: Synchronous is %q: use %q or %q", cfg.Synchronous, SyncFull, SyncNormal)
	}
	w := &Writer{db: db, cfg: cfg, gate: &gate{}, busy: defaultBusyTimeout, closing: make(chan struct{})}
	if st := stateOf(db); st != nil {
		w.gate, w.busy = &st.gate, st.busy // the app's connections queue there too
		w.st = st
	}
	var err error
	if w.conn, err = db.Conn(ctx); err != nil {
		return nil, fmt.Errorf("sqlite: writer: %w", err)
	}
	switch dc := rawConn(w.conn).(type) {
	case *conn:
		dc.writer.Store(true)
		w.ended = dc.SQLiteConn
	case autoCommitter:
		w.ended = dc
	}
	w.shield, _ = ShieldOf(w.conn)
	// The checkpointer makes the checkpoints (see checkpoint.go). The write
	// connection commits with synchronous=NORMAL: durability, where asked
	// for, comes from the syncer, off the write lock. The pool's connections
	// keep their mode.
	path, err := mainFile(ctx, w.conn)
	if err != nil {
		w.dropConn()
		return nil, fmt.Errorf("sqlite: writer: %w", err)
	}
	// After a checkpoint's fsync failed in this process, no checkpoint runs
	// again (see checkpointFsyncFailed), also on the database opened again.
	forbidden := checkpointsForbidden(path)
	pragmas := []string{`PRAGMA synchronous=NORMAL`}
	if w.st != nil {
		// From here on, no connection of the database checkpoints on its
		// own (dbState.autoCheckpoint), this one included.
		w.st.writers.Add(1)
	} else {
		// Not a database from Open: its connections checkpoint on their own,
		// and the write connection only as a backstop.
		backstop := walBackstopPages
		if forbidden {
			backstop = 0
		}
		pragmas = append(pragmas, fmt.Sprintf(`PRAGMA wal_autocheckpoint=%d`, backstop))
	}
	for _, pragma := range pragmas {
		if _, err := w.conn.ExecContext(ctx, pragma); err != nil {
			w.dropConn()
			if w.st != nil {
				w.st.writers.Add(-1)
			}
			return nil, fmt.Errorf("sqlite: writer: %w", err)
		}
	}
	w.syncer, w.txWaits = startSyncer(path+"-wal"), sync == SyncFull
	if forbidden && w.syncer.failure() == nil {
		// The failed checkpoint was the app's own, with no Writer running.
		w.syncer.breakWith(checkpointFailure(errCheckpointElsewhere))
	}
	w.ckpt = startCheckpointer(db, path, cfg.Logger, w.Lock, w.Unlock, !forbidden, func(ctx context.Context, err error) { w.checkpointFsyncFailed(ctx, path, err) })
	if w.st != nil {
		// Every commit wakes the checkpointer, the app's own too.
		w.unwatch = w.st.commits.add(w.ckpt.poke)
	}
	return w, nil
}

// dropConn closes the write connection for good: it does not go back to the
// pool, where it would run the app's statements as the writer's (past the
// gate, with synchronous=NORMAL).
func (w *Writer) dropConn() {
	w.conn.Raw(func(any) error { return driver.ErrBadConn })
	w.conn.Close()
}

// errCheckpointFsync marks the durability failure of a checkpoint's fsync.
var errCheckpointFsync = errors.New("a checkpoint's fsync failed")

// checkpointFailure is the durability failure of a checkpoint's failed
// fsync (cause).
func checkpointFailure(cause error) error {
	return fmt.Errorf("%w: %w: %w; the kernel may have dropped pages that checkpoints had copied into the database file without an fsync, so checkpoints have stopped and the WAL keeps every commit: nothing is reported durable (no outbox event published, no transactional ack) until the process restarts, which copies the whole WAL into the database again; stop the process, check the disk (dmesg), drop the page cache or reboot, then start it", ErrWALSyncFailed, errCheckpointFsync, cause)
}

// checkpointFsyncFailed ends durability after a checkpoint's fsync failed
// (see checkpointer.checkpoint), and keeps any checkpoint from running
// again in this process: the write connection's own, and the one SQLite
// runs when the last connection to the database closes, which keepOpen
// prevents. It runs on the checkpointer's goroutine, which then ends; ctx
// ends at Close.
func (w *Writer) checkpointFsyncFailed(ctx context.Context, path string, cause error) {
	err := checkpointFailure(cause)
	forbidCheckpoints(path)
	if w.syncer != nil {
		w.syncer.breakWith(err)
	}
	w.cfg.Logger.Error("boxcar: a WAL checkpoint's fsync failed; checkpoints stopped until the process restarts", logError, err)
	if keepErr := keepOpen(path); keepErr != nil {
		w.cfg.Logger.Error("boxcar: could not keep the database open to stop the checkpoint at close; do not close the app cleanly: kill it, so that the WAL stays", logError, keepErr)
	}
	if w.st != nil {
		// Its connections run no checkpoint of their own, from now on
		// whether a Writer runs or not (dbState.autoCheckpoint).
		return
	}
	// Not a database from Open: the write connection's own checkpoint, past
	// walBackstopPages, is turned off here (its connection is gone once
	// Close holds the lock, and then ctx ends). The app's connections to it
	// are out of reach.
	if w.Lock(ctx) == nil {
		_, pErr := w.conn.ExecContext(ctx, `PRAGMA wal_autocheckpoint=0`)
		w.Unlock()
		if pErr != nil && !errors.Is(pErr, sql.ErrConnDone) {
			w.cfg.Logger.Error("boxcar: could not stop the write connection's own checkpoints", logError, pErr)
		}
	}
}

// keptOpen are the connections keepOpen holds: one per database file whose
// checkpoint fsync failed, for the life of the process. None is ever
// closed, on purpose.
var keptOpen = struct {
	sync.Mutex
	m map[string]*sql.DB
}{m: map[string]*sql.DB{}}

// keepOpen opens the database at path on a connection of its own that is
// never closed. SQLite checkpoints the WAL and deletes it when the last
// connection to a database closes, which it knows by taking the file's
// exclusive lock; a connection that stays open keeps the shared lock that
// refuses it, so the WAL survives the app's Close and the process's exit.
func keepOpen(path string) error {
	keptOpen.Lock()
	defer keptOpen.Unlock()
	if keptOpen.m[path] != nil {
		return nil
	}
	db, err := sql.Open("sqlite3", "file:"+uriPath(path)+"?mode=rw&_busy_timeout=5000")
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	var n int
	// A read takes the shared lock, which the connection keeps while the
	// database is in WAL mode.
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_master`).Scan(&n); err != nil {
		db.Close()
		return err
	}
	keptOpen.m[path] = db
	return nil
}

// mainFile returns the path of the database's main file.
func mainFile(ctx context.Context, c interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}) (string, error) {
	rows, err := c.QueryContext(ctx, `PRAGMA database_list`)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	for rows.Next() {
		var seq int
		var name, file string
		if err := rows.Scan(&seq, &name, &file); err != nil {
			return "", err
		}
		if name == "main" {
			if file == "" {
				return "", errors.New("the database has no file")
			}
			return file, nil
		}
	}
	if err := rows.Err(); err != nil {
		return "", err
	}
	return "", errors.New("the database has no main file")
}

// Durable returns once everything committed before the call (by the
// writer or any other connection) is on disk. Call it without the write
// lock. After an fsync failed, it fails at once, with ErrWALSyncFailed.
func (w *Writer) Durable(ctx context.Context) error {
	if w.syncer == nil {
		return nil
	}
	return w.syncer.sync(ctx)
}

// DurableWithin is Durable for a caller that can wait up to linger more:
// meanwhile it shares any fsync another caller begins, and only then runs
// one itself. Acks use it: the relay fsyncs for every new event anyway, so
// at everyday load the acks ride its fsyncs instead of adding their own.
func (w *Writer) DurableWithin(ctx context.Context, linger time.Duration) error {
	if w.syncer == nil {
		return nil
	}
	return w.syncer.syncWithin(ctx, linger)
}

// Lock takes the write lock for a background write (see gate.go), waiting
// up to ctx; it fails at once with ErrReentrant on a goroutine that holds
// it. Release it with Unlock, or pass it on to WriteLocked.
func (w *Writer) Lock(ctx context.Context) error {
	return w.gate.lock(ctx, bgClass, 0)
}

// Unlock releases the write lock.
func (w *Writer) Unlock() { w.gate.unlock() }

// Own makes the calling goroutine the one that runs code under the write
// lock its caller holds (a handler's goroutine), so that a call back into
// the writer from it fails with ErrReentrant; call the func returned when
// that code is done.
func (w *Writer) Own() (done func()) {
	prev := w.gate.setOwner()
	return func() { w.gate.restoreOwner(prev) }
}

// TxEnded reports whether the write connection's transaction was ended by
// SQLite itself (see ErrTxEnded), and why: the error of the statement that
// ended it, or ErrTxEndedByStatement for COMMIT, END or ROLLBACK run as SQL
// (nil if unknown: a database not from Open).
// Call it from the goroutine that runs the transaction, between statements.
func (w *Writer) TxEnded() (ended bool, cause error) {
	if w.ended == nil || !w.ended.AutoCommit() {
		return false, nil
	}
	if w.shield != nil {
		cause = w.shield.c.takeLastErr()
	}
	return true, cause
}

// guard turns the write connection's guard (see ErrTxEnded) on or off.
func (w *Writer) guard(on bool) {
	if w.shield != nil {
		w.shield.c.guarded.Store(on)
	}
}

// Write runs fn in a transaction of its own on the write connection, under
// the write lock, and commits it; fn's error rolls it back. For Boxcar's
// own writes: the connection is not shielded, so ctx interrupts a running
// statement.
func (w *Writer) Write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if err := w.Lock(ctx); err != nil {
		return err
	}
	return w.WriteLocked(ctx, fn)
}

// TryWrite is Write for a write that can wait for a later turn: it runs fn
// only if the write lock is free now, and reports whether it did, never
// waiting for it. The relay saves its cursor in the middle of a drain this
// way: an app's transaction may hold the writer for seconds, and the relay
// must go on publishing events committed before it meanwhile.
// A caller that holds the lock itself is told it is busy.
func (w *Writer) TryWrite(ctx context.Context, fn func(tx *sql.Tx) error) (bool, error) {
	granted, withdraw := w.gate.enter(bgClass)
	select {
	case <-granted:
	default:
		if withdraw() {
			return false, nil
		}
		// Handed over between enter and withdraw: it is ours.
	}
	w.gate.setOwner()
	return true, w.WriteLocked(ctx, fn)
}

// WriteLocked is Write for a caller that holds the write lock (from Lock);
// the lock is released on return either way. If SQLite ends the transaction
// while fn runs, fn's later statements fail with ErrTxEnded and WriteLocked
// returns an error matching it: nothing of fn is committed.
func (w *Writer) WriteLocked(ctx context.Context, fn func(tx *sql.Tx) error) error {
	defer w.Unlock()
	w.shield.Set(false)
	tx, err := w.conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	w.guard(true)
	defer w.guard(false)
	returned := false
	defer func() {
		if !returned {
			// fn panicked or called runtime.Goexit: end the transaction,
			// or the next one on this connection could not begin.
			tx.Rollback()
		}
	}()
	err = fn(tx)
	returned = true
	if ended, _ := w.TxEnded(); err == nil && ended {
		err = ErrTxEnded
	}
	if err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	w.ckpt.poke()
	return nil
}

// Conn runs fn with the write connection, under the write lock, outside
// any transaction (for per-connection settings and tests).
func (w *Writer) Conn(ctx context.Context, fn func(c *sql.Conn) error) error {
	if err := w.Lock(ctx); err != nil {
		return err
	}
	defer w.Unlock()
	return fn(w.conn)
}

// WriterStats are the writer's counters.
type WriterStats struct {
	// TxCommits counts the SQLite transactions Tx committed, TxCalls the Tx
	// calls committed in them: TxCalls/TxCommits is the mean group size.
	TxCommits int64
	TxCalls   int64
	// TxQueued is how many Tx calls wait for a group now.
	TxQueued int
	// AppWaiting and BackgroundWaiting are how many writers wait for the
	// write lock now: Tx groups and the app's own transactions, and
	// Boxcar's background writes (see gate.go).
	AppWaiting, BackgroundWaiting int
	// WALSyncs counts the fsyncs of the WAL that made commits durable (for
	// the relay's publishes, the subscribers' acks and SyncFull's Tx): each
	// covers every commit made before it began.
	WALSyncs uint64
	// WALSyncFailure is the failed fsync that ended durability (nil: none;
	// see ErrWALSyncFailed).
	WALSyncFailure error
	// LockHeldFor is how long the current holder of the write lock has
	// held it (0 when free). Seconds mean a transaction of the app's left
	// open, or a Tx function or handler that hangs: every writer waits.
	LockHeldFor time.Duration
}

// Stats reads the writer's counters.
func (w *Writer) Stats() WriterStats {
	app, bg := w.gate.waiting()
	st := WriterStats{TxCommits: w.txCommits.Load(), TxCalls: w.txCalls.Load(), TxQueued: w.txq.len(),
		AppWaiting: app, BackgroundWaiting: bg, LockHeldFor: w.gate.heldFor()}
	if w.syncer != nil {
		st.WALSyncs, st.WALSyncFailure = w.syncer.fsyncs(), w.syncer.failure()
	}
	return st
}

// RefuseTx makes every Tx call that has not run yet, and every later one,
// return ErrClosed: those waiting for the write lock return at once. Boxcar's
// own writes (Write) go on until Close.
func (w *Writer) RefuseTx() {
	w.refuseTx.Store(true)
	w.closingOnce.Do(func() { close(w.closing) })
}

// Close refuses Tx calls, waits (up to ctx) for the write lock, so for the
// last write to finish, returns the write connection to the pool and stops
// the checkpointer. It does not close the database. Calling Close again
// returns the first call's result.
func (w *Writer) Close(ctx context.Context) error {
	w.closeOnce.Do(func() {
		w.RefuseTx()
		if w.st != nil {
			// The connections run their own checkpoints again from here
			// (unless forbidden), while this checkpointer stops.
			w.st.writers.Add(-1)
			w.unwatch()
		}
		defer w.ckpt.stop()
		if w.syncer != nil {
			defer w.syncer.stop()
		}
		if err := w.Lock(ctx); err != nil {
			// A write is still running (a hung Tx function): the connection
			// goes back to the pool when the pool is closed.
			w.closeErr = fmt.Errorf("sqlite: writer: close: waiting for the write in progress: %w", err)
			return
		}
		w.dropConn()
		w.Unlock()
	})
	return w.closeErr
}
