package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/boxcar-bus/boxcar/internal/goroutine"
)

// Group commit. SQLite has one writer, and a commit costs more than the
// statements of a small transaction: it writes every page the transaction
// changed to the WAL and updates the WAL index. Tx calls that arrive while
// the write lock is taken queue up; whichever of them gets the lock next
// runs every queued call in one SQLite transaction, each in a savepoint of
// its own and in arrival order, commits once and hands each caller its
// result. Under load the commits (and the pages they write) are shared by
// many calls; alone, a call runs in a transaction of its own.
//
// Nothing is weakened:
//   - a call's error or panic rolls back its savepoint only;
//   - Tx returns only after the transaction holding the call committed (or
//     failed), so a nil error still means the writes are committed;
//   - calls run one after the other, so the group is serializable: a call
//     sees the writes of the calls before it, which commit with it.
//
// What a group shares is its fate in the rare failures that end the whole
// SQLite transaction (a full disk, an I/O error): every call that ran in it
// returns an error and none of its writes are committed. A caller's canceled
// context is not one of them on a database from Open: the write connection
// is shielded (see Shield), so the cancel stops the caller's next statement,
// never one running, which SQLite would answer by rolling back the whole
// transaction. On other databases it is.

// maxTxGroup bounds the calls of one group, and so how long the group holds
// the write lock.
const maxTxGroup = 128

// txSavepoint isolates each call of a group but the first.
var txSavepoint = NewSavepoint("boxcar_tx")

// txCall is one Tx call waiting for a group.
type txCall struct {
	ctx  context.Context
	fn   func(tx *sql.Tx) error
	done chan txResult // buffered; receives exactly one result
	// committed is set (by the group's leader) when the call's transaction
	// committed: its result follows once the commit is durable.
	committed bool
}

// txResult is a call's outcome: its error, or the panic of its fn, to be
// raised again on the caller's goroutine.
type txResult struct {
	err      error
	panicked bool
	panicVal any
}

// txQueue holds the Tx calls waiting for the write lock.
type txQueue struct {
	mu    sync.Mutex
	calls []*txCall
}

func (q *txQueue) push(c *txCall) {
	q.mu.Lock()
	q.calls = append(q.calls, c)
	q.mu.Unlock()
}

func (q *txQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.calls)
}

// take removes and returns up to n calls from the head of the queue.
func (q *txQueue) take(n int) []*txCall {
	q.mu.Lock()
	defer q.mu.Unlock()
	n = min(n, len(q.calls))
	calls := make([]*txCall, n)
	copy(calls, q.calls)
	rest := copy(q.calls, q.calls[n:])
	clear(q.calls[rest:])
	q.calls = q.calls[:rest]
	return calls
}

// remove takes c out of the queue, reporting false if a group already took
// it.
func (q *txQueue) remove(c *txCall) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, x := range q.calls {
		if x == c {
			q.calls = append(q.calls[:i], q.calls[i+1:]...)
			q.calls = q.calls[:len(q.calls):len(q.calls)]
			return true
		}
	}
	return false
}

// Tx runs fn in a savepoint of a group commit (see above) and returns after
// the transaction holding it committed: nil means fn's writes are
// committed. If fn returns an error or panics, its writes are rolled back
// and the error returned (or the panic raised again). If SQLite ends the
// whole transaction, every fn that ran in it gets an error and none of their
// writes are committed.
//
// ctx bounds the wait for a place in a group. Inside fn, a canceled context
// fails the next statement run with it, but does not interrupt one already
// running (on a database from Open). Once fn has run, Tx waits for the
// commit, whatever ctx does, and reports its outcome.
func (w *Writer) Tx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if w.refuseTx.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := w.fullTxRefused(); err != nil {
		return err
	}
	me := goroutine.ID()
	if w.gate.owner.Load() == me {
		return ErrReentrant
	}
	c := &txCall{ctx: ctx, fn: fn, done: make(chan txResult, 1)}
	w.txq.push(c)
	// Let the goroutines that are ready to run (other writers, about to
	// call Tx) queue before this one tries to lead a group. With few CPUs a
	// writer that just got its result would otherwise take the lock again at
	// once, alone, while the others wait for a CPU (bench/RESULTS.md has the
	// group sizes with and without this).
	runtime.Gosched()
	granted, withdraw := w.gate.enter(appClass)
	var timeout <-chan time.Time
	if w.busy > 0 {
		t := time.NewTimer(w.busy)
		defer t.Stop()
		timeout = t.C
	}
	var stopped error
	select {
	case r := <-c.done:
		if !withdraw() {
			w.Unlock() // granted meanwhile: pass it on
		}
		return r.raise()
	case <-granted:
		w.gate.owner.Store(me)
		w.lead(c)
	case <-ctx.Done():
		stopped = ctx.Err()
	case <-timeout:
		// The write lock was held all along: a transaction of the app's
		// left open (no Commit or Rollback), or a Tx function that hangs.
		stopped = fmt.Errorf("%w: a Tx call waited %v for the writer (held for %v by one transaction: one left open, or a Tx function that hangs?)",
			ErrBusy, w.busy, w.gate.heldFor().Round(time.Millisecond))
	case <-w.closing:
		stopped = ErrClosed
	}
	if stopped != nil {
		if !withdraw() {
			w.gate.owner.Store(me) // granted meanwhile: lead a group after all
			w.lead(c)
		} else if w.txq.remove(c) {
			return stopped
		}
		// A group took the call: its outcome follows.
	}
	return (<-c.done).raise()
}

func (r txResult) raise() error {
	if r.panicked {
		panic(r.panicVal)
	}
	return r.err
}

// lead runs groups holding the write lock, releases it, then hands their
// committed calls their results once the commits are durable: the fsync
// waits off the lock, and the next group commits meanwhile.
//
// A Tx function that calls runtime.Goexit (t.FailNow, in a test) ends the
// goroutine that runs its group, which may be another caller's: the group's
// calls get an error (runTxGroupOnce), and the deferred call below releases
// the lock and answers the calls already committed, so that no writer waits
// for a lock nobody holds.
func (w *Writer) lead(own *txCall) {
	var committed []*txCall
	exited := true
	defer func() {
		if exited {
			w.Unlock()
			w.answer(committed)
		}
	}()
	w.runTxGroups(own, &committed)
	exited = false
	w.Unlock()
	w.answer(committed)
}

// answer hands committed calls their results once their commits are
// durable (with SyncFull; at once otherwise).
func (w *Writer) answer(committed []*txCall) {
	if len(committed) == 0 {
		return
	}
	r := txResult{}
	if !w.txWaits {
		for _, c := range committed {
			c.done <- r
		}
		return
	}
	if err := w.Durable(context.Background()); err != nil {
		r.err = fmt.Errorf("boxcar: tx: committed, but the fsync that makes it durable failed (a power loss could undo it): %w", err)
	}
	for _, c := range committed {
		c.done <- r
	}
}

// runTxGroups runs groups of queued calls, holding the write lock, until own
// has run, and appends the calls that committed to committed (their results
// are not sent yet). Usually one group does it; own can only miss a group that started
// before it was queued, or be left over when the queue holds more than
// maxTxGroup calls.
func (w *Writer) runTxGroups(own *txCall, committed *[]*txCall) {
	for len(own.done) == 0 && !own.committed {
		calls := w.txq.take(maxTxGroup)
		if len(calls) == 0 {
			return // own was taken by the group that just released the lock
		}
		if w.refuseTx.Load() {
			for _, c := range calls {
				c.done <- txResult{err: ErrClosed}
			}
			continue
		}
		if err := w.fullTxRefused(); err != nil {
			// The fsync failed while these calls were queued.
			for _, c := range calls {
				c.done <- txResult{err: err}
			}
			continue
		}
		for len(calls) > 0 {
			var ran []*txCall
			calls, ran = w.runTxGroupOnce(calls)
			*committed = append(*committed, ran...)
		}
	}
}

// fullTxRefused is the error of a SyncFull Tx call once a WAL fsync has
// failed: it is not run, since it would commit and then fail (a caller
// that retries on an error would apply it twice). Nil otherwise.
func (w *Writer) fullTxRefused() error {
	if !w.txWaits || w.syncer == nil {
		return nil
	}
	if err := w.syncer.failure(); err != nil {
		return fmt.Errorf("boxcar: tx: %w: SyncFull cannot make a commit durable: %w", ErrTxNotRun, err)
	}
	return nil
}

// groupError is the error of a call that ran in a transaction that ended
// before its commit: SQLite rolled it back (cause is SQLite's error), or a
// fn of the group called tx.Commit or tx.Rollback (cause is sql.ErrTxDone),
// which leaves the outcome unknown.
func groupError(cause error) error {
	if errors.Is(cause, ErrTxEndedByStatement) {
		return fmt.Errorf("boxcar: tx: a Tx function of the same group ran COMMIT, END or ROLLBACK as SQL, which ended the shared transaction, so whether this call's writes were committed is unknown: %w", cause)
	}
	if errors.Is(cause, sql.ErrTxDone) {
		return fmt.Errorf("boxcar: tx: a Tx function of the same group ended the shared transaction (called tx.Commit or tx.Rollback), so whether this call's writes were committed is unknown: %w", cause)
	}
	return fmt.Errorf("boxcar: tx: SQLite rolled back the transaction this call shared with other Tx calls; nothing of it was committed: %w", cause)
}

// runTxGroupOnce runs calls in one SQLite transaction and returns those left
// for another one: after the first call, if it failed (its transaction was
// rolled back whole, as it had no savepoint), or after a call that ended the
// transaction; and those that committed, marked, whose results the caller
// sends.
func (w *Writer) runTxGroupOnce(calls []*txCall) (rest, committed []*txCall) {
	// The group's own statements run with a context that is never canceled:
	// the driver then runs them on the calling goroutine (with a cancelable
	// one it starts a goroutine per statement), and no canceled caller can
	// interrupt, and so roll back, a transaction shared with others.
	bg := context.Background()
	w.shield.Set(true)
	tx, err := w.conn.BeginTx(bg, nil)
	if err != nil {
		for _, c := range calls {
			c.done <- txResult{err: fmt.Errorf("boxcar: begin: %w", err)}
		}
		return nil, nil
	}
	w.guard(true)
	defer w.guard(false)
	g := &txGroup{tx: tx}
	defer func() {
		if g.inFn != nil {
			g.exited(calls)
		}
	}()
	for i, c := range calls {
		switch g.run(w, c) {
		case stopBefore:
			return calls[i:], nil
		case stopAfter:
			return calls[i+1:], nil
		}
	}
	if len(g.ran) == 0 {
		tx.Rollback()
		return nil, nil
	}
	if err := w.commitGroup(tx); err != nil {
		err = fmt.Errorf("boxcar: commit: %w", err)
		for _, c := range g.ran {
			c.done <- txResult{err: err}
		}
		return nil, nil
	}
	if w.cfg.AfterTxCommit != nil {
		w.cfg.AfterTxCommit()
	}
	w.txCommits.Add(1)
	w.txCalls.Add(int64(len(g.ran)))
	w.ckpt.poke()
	for _, c := range g.ran {
		c.committed = true
	}
	return nil, g.ran
}

// txGroup is one SQLite transaction of a group commit.
type txGroup struct {
	tx  *sql.Tx
	ran []*txCall // calls whose fn succeeded: they commit or fail together
	// inFn is the call whose fn runs now. Still set once the group's
	// goroutine is unwinding, it is a call whose fn called runtime.Goexit
	// (a panic is recovered in callTxFn).
	inFn *txCall
}

// exited ends a group whose goroutine is ending inside a Tx function
// (runtime.Goexit: t.FailNow in a test): the transaction is rolled back,
// and every call of the group, of calls, still waiting gets an error. The
// calls after it never ran.
func (g *txGroup) exited(calls []*txCall) {
	g.tx.Rollback()
	const why = "a Tx function called runtime.Goexit (t.FailNow or t.Fatal in a test?), which ended the goroutine running its group commit"
	for _, c := range g.ran {
		c.done <- txResult{err: fmt.Errorf("boxcar: tx: %s; this call's writes were rolled back with it", why)}
	}
	g.inFn.done <- txResult{err: fmt.Errorf("boxcar: tx: this Tx function called runtime.Goexit (t.FailNow or t.Fatal in a test?): its writes were rolled back")}
	after := false
	for _, c := range calls {
		if after {
			c.done <- txResult{err: fmt.Errorf("boxcar: tx: %w: %s", ErrTxNotRun, why)}
		}
		after = after || c == g.inFn
	}
}

// fail ends the transaction and fails the calls that ran in it with cause.
func (g *txGroup) fail(cause error) {
	g.tx.Rollback()
	for _, c := range g.ran {
		c.done <- txResult{err: groupError(cause)}
	}
	g.ran = nil
}

// next is what follows a call in its group's transaction.
type next int

const (
	goOn       next = iota // the next call runs in the same transaction
	stopAfter              // the transaction is over; the next call starts another
	stopBefore             // the transaction is over before this call ran: it starts another
)

// run runs c in the group. A call that ran sends its result later (at the
// commit); any other call sends it now, unless it is to run again
// (stopBefore).
func (g *txGroup) run(w *Writer, c *txCall) next {
	bg := context.Background()
	if err := c.ctx.Err(); err != nil {
		c.done <- txResult{err: err}
		return goOn
	}
	// The first call to run needs no savepoint: if it fails, the whole
	// transaction is rolled back and the rest start a new one.
	first := len(g.ran) == 0
	if !first {
		if err := txSavepoint.Begin(bg, g.tx); err != nil {
			g.fail(fmt.Errorf("savepoint: %w", err))
			return stopBefore
		}
	}
	g.inFn = c
	r := callTxFn(c.fn, g.tx)
	g.inFn = nil
	if ended, why := w.TxEnded(); ended {
		// The transaction is over. If fn ended it (tx.Commit or
		// tx.Rollback, which database/sql knows, or COMMIT run as SQL),
		// what was committed is unknown. Otherwise SQLite ended it under fn
		// (an error fn swallowed, or returned): nothing of the group is
		// committed, and the guard kept fn's later statements from running
		// on their own.
		cause := ErrTxEnded
		if errors.Is(why, ErrTxEndedByStatement) {
			cause = why
		}
		if _, err := g.tx.ExecContext(bg, `SELECT 1`); errors.Is(err, sql.ErrTxDone) {
			cause = err
		}
		g.fail(cause)
		if r.err == nil && !r.panicked {
			r = txResult{err: groupError(cause)}
		}
		c.done <- r
		return stopAfter
	}
	if r.err == nil && !r.panicked {
		if !first {
			if err := txSavepoint.Release(bg, g.tx); err != nil {
				// The transaction is gone: fn ended it (tx.Commit or
				// tx.Rollback).
				cause := fmt.Errorf("release savepoint: %w", err)
				g.fail(cause)
				c.done <- txResult{err: groupError(cause)}
				return stopAfter
			}
		}
		g.ran = append(g.ran, c)
		return goOn
	}
	// fn failed: undo its writes.
	if first {
		if err := g.tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
			r.err = errors.Join(r.err, fmt.Errorf("boxcar: rollback: %w", err))
		}
		c.done <- r
		return stopAfter
	}
	if err := txSavepoint.Rollback(bg, g.tx); err != nil {
		g.fail(fmt.Errorf("rollback to savepoint: %w", err))
		c.done <- r
		return stopAfter
	}
	c.done <- r
	return goOn
}

// callTxFn runs fn, turning a panic into a result.
func callTxFn(fn func(tx *sql.Tx) error, tx *sql.Tx) (r txResult) {
	defer func() {
		if p := recover(); p != nil {
			r = txResult{panicked: true, panicVal: p}
		}
	}()
	return txResult{err: fn(tx)}
}

// commitGroup commits a group's transaction. When AfterTxCommit reports the
// commit, the commit hook of sqlite.Open's connections is told to stay
// quiet for it (dbState.selfReported).
func (w *Writer) commitGroup(tx *sql.Tx) error {
	if w.st == nil || w.cfg.AfterTxCommit == nil {
		return tx.Commit()
	}
	w.st.selfReported.Store(true)
	defer w.st.selfReported.Store(false)
	return tx.Commit()
}
