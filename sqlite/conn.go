package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/mattn/go-sqlite3"
)

// The connections of a database from Open wrap the driver's. The wrapper
// does three things:
//
//   - it queues the app's writes for the database's gate (gate.go): a
//     transaction holds the gate from BeginTx to Commit or Rollback, a
//     statement run outside a transaction for its duration. The writer's own
//     connection is not queued here: the Writer holds the gate around its use.
//   - it shields the writer's connection from cancellation (Shield): when a
//     statement's context is canceled while it runs, the driver calls
//     sqlite3_interrupt, and SQLite answers an interrupted INSERT, UPDATE or
//     DELETE inside a transaction by rolling back the whole transaction. When
//     one transaction holds the work of several callers (Boxcar's group
//     commit), one caller's canceled context would undo the others' work. A
//     shielded connection checks the context before each statement and then
//     runs it with the cancel removed: a canceled context still stops the
//     next statement, never one already running. (And for every statement run
//     with a cancelable context the driver starts a goroutine to wait for the
//     cancel.)
//   - it guards the writer's transactions: once SQLite has ended one on its
//     own (see ErrTxEnded), every further statement fails instead of running,
//     and committing, outside it.

// ErrTxEnded is returned for a statement run in a transaction of the writer
// after SQLite ended that transaction on its own: a statement failed in a
// way that rolls back the whole transaction (INSERT OR ROLLBACK, a trigger's
// RAISE(ROLLBACK), a full disk, an interrupt) and its error was swallowed.
// Without the guard the statement would run, and commit, by itself.
var ErrTxEnded = errors.New("sqlite: SQLite ended the transaction (a statement's error that rolls back the whole transaction was ignored: INSERT OR ROLLBACK, RAISE(ROLLBACK), a full disk, an interrupt); nothing more runs in it and nothing of it is committed")

// ErrTxEndedByStatement is the cause TxEnded reports when a statement run
// as SQL (COMMIT, END, ROLLBACK) ended the writer's transaction: what it
// ended was shared with other callers, and whether it was committed is not
// known to them.
var ErrTxEndedByStatement = errors.New("sqlite: a statement (COMMIT, END or ROLLBACK run as SQL) ended the transaction: end it with tx.Commit or tx.Rollback, or return an error; whether its writes were committed is unknown")

// driverWrap opens conns around the driver's connections, for one database.
type driverWrap struct {
	sqlite3.SQLiteDriver
	state *dbState
}

func (d *driverWrap) Open(dsn string) (driver.Conn, error) {
	c, err := d.SQLiteDriver.Open(dsn)
	if err != nil {
		return nil, err
	}
	return &conn{SQLiteConn: c.(*sqlite3.SQLiteConn), state: d.state, ckpt: defaultAutoCheckpoint}, nil
}

// conn is the driver's connection with the gate, the shield and the guard.
// Every method not defined here is the driver's. database/sql uses a
// connection from one goroutine at a time, so inTx needs no lock.
type conn struct {
	*sqlite3.SQLiteConn
	state    *dbState
	writer   atomic.Bool // the Writer's connection: not queued for the gate here
	shielded atomic.Bool
	guarded  atomic.Bool // a writer's transaction is open: refuse statements outside it
	inTx     bool        // an app transaction holds the gate
	ckpt     int         // the wal_autocheckpoint the connection runs with

	errMu   sync.Mutex
	lastErr error // the writer's connection: why the statement that ended its transaction did
}

// noteEnd is run after each statement of c, which began inside a
// transaction if inTx: if the statement ended the transaction of the
// writer's connection, it remembers why (SQLite's error, or
// ErrTxEndedByStatement for a statement that succeeded: COMMIT as SQL). An
// error that left the transaction open (a constraint a savepoint absorbs)
// is not the cause of a later end.
func (c *conn) noteEnd(inTx bool, err error) error {
	if inTx && c.writer.Load() && c.SQLiteConn.AutoCommit() {
		cause := err
		if cause == nil {
			cause = ErrTxEndedByStatement
		}
		c.errMu.Lock()
		c.lastErr = cause
		c.errMu.Unlock()
	}
	return err
}

// takeLastErr returns why the transaction ended and forgets it.
func (c *conn) takeLastErr() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	err := c.lastErr
	c.lastErr = nil
	return err
}

// uncancel returns the context a statement runs with.
func (c *conn) uncancel(ctx context.Context) (context.Context, error) {
	if !c.shielded.Load() || ctx.Done() == nil {
		return ctx, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return context.WithoutCancel(ctx), nil
}

// before is run before each statement: it refuses one outside the
// transaction it was meant for (the writer's, or the app's own: SQLite
// ended it, and the statement would run, and commit, by itself), and
// shields it. It reports whether a transaction is open.
func (c *conn) before(ctx context.Context) (context.Context, bool, error) {
	if err := c.checkpointPolicy(); err != nil {
		return nil, false, err
	}
	auto := c.SQLiteConn.AutoCommit()
	if auto && (c.guarded.Load() || c.inTx) {
		return nil, false, ErrTxEnded
	}
	ctx, err := c.uncancel(ctx)
	return ctx, !auto, err
}

// checkpointPolicy sets the connection's wal_autocheckpoint to what the
// database's state asks for now (dbState.autoCheckpoint). It runs before
// each statement and before an app's commit: a commit past the threshold
// checkpoints on the committing connection.
func (c *conn) checkpointPolicy() error {
	want := c.state.autoCheckpoint()
	if want == c.ckpt {
		return nil
	}
	if _, err := c.SQLiteConn.Exec(fmt.Sprintf(`PRAGMA wal_autocheckpoint=%d`, want), nil); err != nil {
		return fmt.Errorf("sqlite: set the connection's checkpoints: %w", err)
	}
	c.ckpt = want
	return nil
}

// queued reports whether a statement on c must take the gate for its
// duration: an app's connection outside a transaction.
func (c *conn) queued() bool { return !c.writer.Load() && !c.inTx }

func (c *conn) lockGate(ctx context.Context) error {
	return c.state.gate.lock(ctx, appClass, c.state.busy)
}

func (c *conn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if err := c.refuseCheckpoint(query); err != nil {
		return nil, err
	}
	ctx, inTx, err := c.before(ctx)
	if err != nil {
		return nil, err
	}
	if c.queued() {
		if err := c.lockGate(ctx); err != nil {
			return nil, err
		}
		defer c.state.gate.unlock()
	}
	res, err := c.SQLiteConn.ExecContext(ctx, query, args)
	c.after(!inTx, err)
	return res, c.noteEnd(inTx, err)
}

func (c *conn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if err := c.refuseCheckpoint(query); err != nil {
		return nil, err
	}
	ctx, inTx, err := c.before(ctx)
	if err != nil {
		return nil, err
	}
	// The driver takes the first step here: a checkpoint's error (its
	// one row) comes back now.
	rows, err := c.SQLiteConn.QueryContext(ctx, query, args)
	c.after(false, err)
	return rows, c.noteEnd(inTx, err)
}

// isCheckpoint reports whether query runs a checkpoint (PRAGMA
// wal_checkpoint, in any case).
func isCheckpoint(query string) bool {
	const word = "wal_checkpoint"
	for i := 0; i+len(word) <= len(query); i++ {
		if (query[i] == 'w' || query[i] == 'W') && strings.EqualFold(query[i:i+len(word)], word) {
			return true
		}
	}
	return false
}

// refuseCheckpoint refuses a checkpoint the app asks for by SQL once
// checkpoints of the database are forbidden (see forbidCheckpoints).
func (c *conn) refuseCheckpoint(query string) error {
	if c.state.checkpointsForbidden() && isCheckpoint(query) {
		return ErrCheckpointsForbidden
	}
	return nil
}

// ErrCheckpointsForbidden is returned for a checkpoint asked for by SQL
// after a checkpoint's fsync of the database failed in this process: one
// more would start the WAL over without the pages the kernel may have
// dropped (see checkpoint.go). The process must restart.
var ErrCheckpointsForbidden = errors.New("sqlite: no checkpoint may run: a checkpoint's fsync of this database failed in this process; restart it (see the runbook, \"the disk failed an fsync\")")

// after is run after each statement and an app's commit: a failed fsync (a
// checkpoint the app ran) forbids every later checkpoint, and a commit
// (committed: a commit, or a statement run outside a transaction) wakes the
// checkpointers. The commit hook wakes them too, but before SQLite writes
// the commit, which a checkpoint 25 ms later can miss.
func (c *conn) after(committed bool, err error) {
	if isFsyncError(err) {
		forbidCheckpoints(c.state.path)
		keepOpen(c.state.path) // best effort: an error here has no one to go to but the app's
	}
	if committed && err == nil && !c.writer.Load() {
		c.state.commits.notify()
	}
}

func (c *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	ctx, err := c.uncancel(ctx)
	if err != nil {
		return nil, err
	}
	if c.writer.Load() {
		c.takeLastErr()
		return c.SQLiteConn.BeginTx(ctx, opts)
	}
	// Every transaction begins IMMEDIATE (it takes SQLite's write lock,
	// read-only ones too): it holds the gate until it ends.
	if err := c.lockGate(ctx); err != nil {
		return nil, err
	}
	tx, err := c.SQLiteConn.BeginTx(ctx, opts)
	if err != nil {
		c.state.gate.unlock()
		return nil, err
	}
	c.inTx = true
	return &appTx{Tx: tx, c: c}, nil
}

func (c *conn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	if err := c.refuseCheckpoint(query); err != nil {
		return nil, err
	}
	s, err := c.SQLiteConn.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	return &stmt{SQLiteStmt: s.(*sqlite3.SQLiteStmt), c: c, ckpt: isCheckpoint(query)}, nil
}

func (c *conn) Close() error {
	c.endTx()
	return c.SQLiteConn.Close()
}

// endTx releases the gate an app transaction of c held.
func (c *conn) endTx() {
	if c.inTx {
		c.inTx = false
		c.state.gate.unlock()
	}
}

// appTx is an app's transaction: it releases the gate when it ends.
type appTx struct {
	driver.Tx
	c *conn
}

func (t *appTx) Commit() error {
	defer t.c.endTx()
	if err := t.c.checkpointPolicy(); err != nil {
		t.Tx.Rollback()
		return fmt.Errorf("sqlite: commit: rolled back: %w", err)
	}
	err := t.Tx.Commit()
	t.c.after(true, err)
	return err
}

func (t *appTx) Rollback() error {
	defer t.c.endTx()
	return t.Tx.Rollback()
}

// stmt is a prepared statement of a conn, queued, shielded and guarded
// with it.
type stmt struct {
	*sqlite3.SQLiteStmt
	c    *conn
	ckpt bool // the statement runs a checkpoint (isCheckpoint)
}

func (s *stmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	if s.ckpt && s.c.state.checkpointsForbidden() {
		return nil, ErrCheckpointsForbidden
	}
	ctx, inTx, err := s.c.before(ctx)
	if err != nil {
		return nil, err
	}
	if s.c.queued() {
		if err := s.c.lockGate(ctx); err != nil {
			return nil, err
		}
		defer s.c.state.gate.unlock()
	}
	res, err := s.SQLiteStmt.ExecContext(ctx, args)
	s.c.after(!inTx, err)
	return res, s.c.noteEnd(inTx, err)
}

func (s *stmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	if s.ckpt && s.c.state.checkpointsForbidden() {
		return nil, ErrCheckpointsForbidden
	}
	ctx, inTx, err := s.c.before(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := s.SQLiteStmt.QueryContext(ctx, args)
	s.c.after(false, err)
	return rows, s.c.noteEnd(inTx, err)
}

// Shield is the cancellation switch of one connection.
type Shield struct{ c *conn }

// ShieldOf returns the shield switch of c, a connection of a database from
// Open, or false for other databases. The switch stays valid while c is
// open; it starts off.
func ShieldOf(c *sql.Conn) (*Shield, bool) {
	var sh *Shield
	c.Raw(func(dc any) error {
		if cc, ok := dc.(*conn); ok {
			sh = &Shield{c: cc}
		}
		return nil
	})
	return sh, sh != nil
}

// Set turns the shield on or off for the statements that follow. A nil
// Shield does nothing.
func (s *Shield) Set(on bool) {
	if s != nil {
		s.c.shielded.Store(on)
	}
}

// autoCommitter is a driver connection that tells whether a transaction is
// open: mattn/go-sqlite3's, wrapped (conn) or not.
type autoCommitter interface{ AutoCommit() bool }

// rawConn returns the driver connection of c.
func rawConn(c *sql.Conn) (dc any) {
	c.Raw(func(d any) error {
		dc = d
		return nil
	})
	return dc
}
