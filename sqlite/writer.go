package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
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

// WriterConfig configures a Writer. The zero value is valid.
type WriterConfig struct {
	// AfterTxCommit, if set, is called after each Tx group commits, before
	// its callers get their results (Boxcar wakes the relay there). It must
	// not block.
	AfterTxCommit func()
	// Logger receives the checkpointer's warnings. Default: discard.
	Logger *slog.Logger
}

// Writer is the single writer of one database. Make it with NewWriter and
// Close it before closing the database.
type Writer struct {
	db     *sql.DB
	cfg    WriterConfig
	lock   chan struct{} // capacity 1: taken while held
	conn   *sql.Conn
	shield *Shield // nil for a database not from Open
	txq    txQueue
	ckpt   *checkpointer

	refuseTx  atomic.Bool  // Tx calls not yet run return ErrClosed
	txCommits atomic.Int64 // Tx groups committed
	txCalls   atomic.Int64 // Tx calls in them

	closeOnce sync.Once
	closeErr  error
}

// NewWriter takes a connection of db for the writer and starts its
// checkpointer.
func NewWriter(ctx context.Context, db *sql.DB, cfg WriterConfig) (*Writer, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Writer{db: db, cfg: cfg, lock: make(chan struct{}, 1)}
	var err error
	if w.conn, err = db.Conn(ctx); err != nil {
		return nil, fmt.Errorf("sqlite: writer: %w", err)
	}
	w.shield, _ = ShieldOf(w.conn)
	// The write connection's own checkpoint threshold is only a backstop:
	// the checkpointer does the work (see checkpoint.go).
	if _, err := w.conn.ExecContext(ctx, fmt.Sprintf(`PRAGMA wal_autocheckpoint=%d`, walBackstopPages)); err != nil {
		w.conn.Close()
		return nil, fmt.Errorf("sqlite: writer: %w", err)
	}
	w.ckpt = startCheckpointer(db, cfg.Logger, w.Lock, w.Unlock)
	return w, nil
}

// Lock takes the write lock, waiting up to ctx. Release it with Unlock, or
// pass it on to WriteLocked.
func (w *Writer) Lock(ctx context.Context) error {
	select {
	case w.lock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Unlock releases the write lock.
func (w *Writer) Unlock() { <-w.lock }

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

// WriteLocked is Write for a caller that holds the write lock (from Lock);
// the lock is released on return either way.
func (w *Writer) WriteLocked(ctx context.Context, fn func(tx *sql.Tx) error) error {
	defer w.Unlock()
	w.shield.Set(false)
	tx, err := w.conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
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
}

// Stats reads the writer's counters.
func (w *Writer) Stats() WriterStats {
	return WriterStats{TxCommits: w.txCommits.Load(), TxCalls: w.txCalls.Load(), TxQueued: w.txq.len()}
}

// RefuseTx makes every Tx call that has not run yet, and every later one,
// return ErrClosed. Boxcar's own writes (Write) go on until Close.
func (w *Writer) RefuseTx() { w.refuseTx.Store(true) }

// Close refuses Tx calls, waits (up to ctx) for the write lock, so for the
// last write to finish, returns the write connection to the pool and stops
// the checkpointer. It does not close the database. Calling Close again
// returns the first call's result.
func (w *Writer) Close(ctx context.Context) error {
	w.closeOnce.Do(func() {
		w.RefuseTx()
		defer w.ckpt.stop()
		if err := w.Lock(ctx); err != nil {
			// A write is still running (a hung Tx function): the connection
			// goes back to the pool when the pool is closed.
			w.closeErr = fmt.Errorf("sqlite: writer: close: waiting for the write in progress: %w", err)
			return
		}
		w.conn.Close()
		w.Unlock()
	})
	return w.closeErr
}
