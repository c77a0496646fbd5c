package boxcar

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/boxcar-bus/boxcar/internal/faults"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// The dedupe (inbox) store. A transactional handler's writes and the row
// (subscriber, event ID) commit in one SQLite transaction, and the message
// is acked only after that commit:
//
//   - crash before the commit: nothing of the handling survives; the
//     redelivery runs the handler again;
//   - crash after the commit, before the ack: the redelivery finds the row
//     and is acked without running the handler.
//
// The row is written in the same savepoint as the handler's writes, never
// before them: a handler that fails takes its row with it (unlike
// deduplicators that mark a message seen before handling it, and so drop the
// retry of a failed handler).

// runTx handles the heads of the keys in batch inside one SQLite
// transaction, then acks what committed.
//
// Grouping is what makes transactional subscribers fast: SQLite has one
// writer and a commit costs far more than a statement, so N events in one
// commit cost little more than one. It does not weaken anything: a failing
// event rolls back alone, nothing is acked before the commit, and events of
// one key stay in order because a key's events are taken from its head and
// the key stops at its first failure.
//
// A batch first runs without savepoints (the fast path: two statements per
// event fewer). If a handler fails there, the whole transaction is rolled
// back and the batch runs again with a savepoint per event; the failed
// event is not run again but fails with its error (its attempt counted
// once), so its key stops there. Handlers of the events that ran before it
// run twice, their first run rolled back: a TxHandler's effects are its
// writes in tx, and a crash before the commit does the same.
//
// locked says the caller holds the bus's write lock; runTx releases it.
func (d *dispatcher) runTx(batch []*keyQueue, locked bool) {
	perKey := max(d.s.opts.BatchSize/len(batch), 1)
	turns := make([]turn, len(batch))
	var attempts []int // to undo the count if the transaction fails
	for i, kq := range batch {
		turns[i] = turn{kq: kq, items: d.takeHeads(kq, perKey)}
		for _, it := range turns[i].items {
			attempts = append(attempts, it.attempts)
		}
	}
	failed := d.runTxFast(turns, attempts, locked)
	if failed == nil {
		return
	}
	d.runTxSafe(turns, attempts, false, failed)
}

// turn is one key's part of a transactional batch.
type turn struct {
	kq     *keyQueue
	items  []*item
	done   int
	failed *outcome
}

// errFastFailed rolls back the fast path: a handler failed.
var errFastFailed = errors.New("boxcar: a handler failed in a batch without savepoints")

// runTxFast runs the batch without savepoints. If a handler failed, it
// returns that failure, with the lock released and every other attempt
// count as it was, for runTxSafe. On any other outcome (committed, or the
// transaction failed) it has done all runTxSafe would, and returns nil.
func (d *dispatcher) runTxFast(turns []turn, attempts []int, locked bool) *outcome {
	var hung, failed *outcome
	var skipped int64
	err := d.withTxLocked(locked, func(ctx context.Context, tx *sql.Tx) error {
		return d.supervise(&hung, func(w *handlerWatch) error {
			qctx := context.WithoutCancel(ctx)
			for i := range turns {
				t := &turns[i]
				for _, it := range t.items {
					if it.bad != nil || d.isStopping() {
						break
					}
					res, err := tx.ExecContext(qctx, sqlite.InsertDedupe, d.s.name, it.m.ID, time.Now().UnixNano())
					if err != nil {
						return &abortError{err: fmt.Errorf("dedupe row: %w", err)}
					}
					if n, err := res.RowsAffected(); err != nil {
						return &abortError{err: err}
					} else if n == 0 {
						skipped++
						t.done++
						continue
					}
					it.attempts++
					it.m.Attempt = it.attempts
					err = d.callTx(ctx, tx, it, w)
					if ae := (*abortError)(nil); errors.As(err, &ae) {
						return ae.err
					}
					if sqlite.IsFull(err) {
						return err // the database failed, not the handler
					}
					if err != nil {
						failed = &outcome{it: it, err: err}
						return errFastFailed
					}
					t.done++
				}
			}
			return nil
		})
	})
	if hung == nil && errors.Is(err, errFastFailed) {
		j := 0
		for i := range turns {
			for _, it := range turns[i].items {
				if it != failed.it {
					it.attempts = attempts[j]
				}
				j++
			}
			turns[i].done = 0
		}
		return failed
	}
	if err != nil {
		d.txFailed(turns, attempts, hung, err)
		return nil
	}
	var done int64
	for i := range turns {
		done += int64(turns[i].done)
	}
	d.stats.skipped.Add(skipped)
	d.stats.handled.Add(done - skipped)
	d.committed(turns)
	return nil
}

// runTxSafe runs the batch with a savepoint per event. pre, if not nil, is
// a handler failure of the fast path: that event is not run again but fails
// with its error.
func (d *dispatcher) runTxSafe(turns []turn, attempts []int, locked bool, pre *outcome) {
	var hung *outcome // a handler that did not return in time
	preReached := false
	err := d.withTxLocked(locked, func(ctx context.Context, tx *sql.Tx) error {
		return d.supervise(&hung, func(w *handlerWatch) error {
			for i := range turns {
				t := &turns[i]
				for _, it := range t.items {
					if it.bad != nil || d.isStopping() {
						break
					}
					if pre != nil && it == pre.it {
						t.failed = pre
						preReached = true
						break
					}
					err := d.handleInSavepoint(ctx, tx, it, w)
					if ae := (*abortError)(nil); errors.As(err, &ae) {
						return ae.err // the transaction is unusable: roll back the batch
					}
					if err != nil {
						t.failed = &outcome{it: it, err: err}
						break
					}
					t.done++
				}
			}
			return nil
		})
	})
	if err != nil {
		d.txFailed(turns, attempts, hung, err)
		return
	}
	if pre != nil && !preReached {
		// An event before it in its key failed this time, or the subscriber
		// is stopping: its failed run in the fast path does not count.
		pre.it.attempts--
	}
	d.committed(turns)
}

// txFailed handles a batch whose transaction failed (BEGIN, COMMIT, a full
// disk, or a hung handler): nothing of it happened. This is the database's
// failure, not the handlers': the keys retry without an attempt counted. A
// hung handler is the exception: its event keeps the attempt and goes
// through the usual failure path (retry with backoff, dead letter after
// MaxAttempts).
func (d *dispatcher) txFailed(turns []turn, attempts []int, hung *outcome, err error) {
	d.b.log.Warn("boxcar: subscriber transaction failed; retrying", logSub, d.s.name, logError, err)
	var hungTurn *turn
	d.mu.Lock()
	j := 0
	for i := range turns {
		for _, it := range turns[i].items {
			if hung == nil || it != hung.it {
				it.attempts = attempts[j]
			} else {
				hungTurn = &turns[i]
			}
			j++
		}
		if !d.stopping && &turns[i] != hungTurn {
			d.scheduleRetry(turns[i].kq, 1)
		}
	}
	d.mu.Unlock()
	if hungTurn != nil {
		d.finish(hungTurn.kq, 0, hung)
	}
}

// committed acks what a batch's transaction committed and moves each key on.
func (d *dispatcher) committed(turns []turn) {
	faults.Hit(faults.HandlerAfterCommit)
	for i := range turns {
		t := &turns[i]
		for _, it := range t.items[:t.done] {
			d.ack(it)
		}
		if t.failed == nil && len(t.items) > 0 && t.items[0].bad != nil {
			t.failed = &outcome{it: t.items[0], err: t.items[0].bad}
		}
		d.finish(t.kq, t.done, t.failed)
	}
}

// abortError reports that the transaction itself failed (SQLite rolled it
// back, as it does on a full disk), not just one event; or that hung's
// handler did not return in time and still holds the transaction.
type abortError struct {
	err  error
	hung *item
}

func (e *abortError) Error() string { return e.err.Error() }
func (e *abortError) Unwrap() error { return e.err }

// handleInSavepoint records it in the dedupe table and runs the handler,
// inside a savepoint that is rolled back if the handler fails. A row already
// there means the event was handled before: the handler is skipped.
func (d *dispatcher) handleInSavepoint(ctx context.Context, tx *sql.Tx, it *item, w *handlerWatch) error {
	// Boxcar's own statements run with a context that cannot be canceled:
	// the driver then runs them on this goroutine instead of starting one
	// per statement. The transaction's context still ends it at Close.
	qctx := context.WithoutCancel(ctx)
	if _, err := tx.ExecContext(qctx, `SAVEPOINT boxcar_event`); err != nil {
		return &abortError{err: fmt.Errorf("savepoint: %w", err)}
	}
	res, err := tx.ExecContext(qctx, sqlite.InsertDedupe, d.s.name, it.m.ID, time.Now().UnixNano())
	if err == nil {
		var n int64
		if n, err = res.RowsAffected(); err == nil && n == 0 {
			d.stats.skipped.Add(1)
			_, err = tx.ExecContext(qctx, `RELEASE boxcar_event`)
			return err
		}
	}
	if err == nil {
		it.attempts++
		it.m.Attempt = it.attempts
		err = d.callTx(ctx, tx, it, w)
	}
	if err != nil {
		if sqlite.IsFull(err) {
			return &abortError{err: err}
		}
		if _, rbErr := tx.ExecContext(qctx, `ROLLBACK TO boxcar_event`); rbErr != nil {
			// The savepoint is gone: SQLite rolled the transaction back.
			return &abortError{err: fmt.Errorf("%w (and rollback to savepoint: %v)", err, rbErr)}
		}
		tx.ExecContext(qctx, `RELEASE boxcar_event`)
		return err
	}
	if _, err := tx.ExecContext(qctx, `RELEASE boxcar_event`); err != nil {
		return &abortError{err: fmt.Errorf("release savepoint: %w", err)}
	}
	d.stats.handled.Add(1)
	return nil
}

// A handler that ignores its context must not hold the transaction,
// SQLite's single writer and its key for ever. The batch runs on a goroutine
// of its own and the worker supervises it (one goroutine and one timer per
// transaction, not per event): when a handler has run for HandlerTimeout and
// a short grace (for a handler that is returning its context's error), the
// worker abandons the batch, the transaction rolls back and the batch is
// retried, the hung event with its attempt counted. The abandoned call's
// later uses of tx fail with sql.ErrTxDone; Close waits for it.

// handlerWatch tells the supervisor which handler call is running, since when.
type handlerWatch struct {
	mu        sync.Mutex
	cur       *item
	start     time.Time
	abandoned bool
}

func (w *handlerWatch) begin(it *item) {
	w.mu.Lock()
	w.cur, w.start = it, time.Now()
	w.mu.Unlock()
}

// end reports false if the supervisor gave up on the call meanwhile.
func (w *handlerWatch) end() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cur = nil
	return !w.abandoned
}

// supervise runs the batch on its own goroutine and waits for it, or gives
// up on it when one handler call overruns (setting *hung).
func (d *dispatcher) supervise(hung **outcome, run func(w *handlerWatch) error) error {
	w := &handlerWatch{}
	done := make(chan error, 1)
	d.abandoned.Add(1)
	go func() {
		defer d.abandoned.Done()
		done <- run(w)
	}()
	limit := d.s.opts.HandlerTimeout + handlerGrace
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-timer.C:
		}
		w.mu.Lock()
		next := limit
		if w.cur != nil {
			ran := time.Since(w.start)
			if ran >= limit {
				w.abandoned = true
				err := fmt.Errorf("handler did not return within %v: %w", d.s.opts.HandlerTimeout, context.DeadlineExceeded)
				*hung = &outcome{it: w.cur, err: err}
				w.mu.Unlock()
				return err
			}
			next = limit - ran
		}
		w.mu.Unlock()
		timer.Reset(next)
	}
}

// callTx runs the transactional handler for it with HandlerTimeout on its
// context, under the watch of supervise.
func (d *dispatcher) callTx(ctx context.Context, tx *sql.Tx, it *item, w *handlerWatch) error {
	hctx, cancel := context.WithTimeout(ctx, d.s.opts.HandlerTimeout)
	defer cancel()
	// Copy the message before begin: once the supervisor (under the
	// watch's lock) abandons this call, a retry may update it.m while the
	// abandoned handler still runs.
	m := it.m
	w.begin(it)
	err := callSafely(func() error { return d.s.h.tx(hctx, tx, m) })
	if !w.end() {
		return &abortError{err: errors.New("handler abandoned after its timeout"), hung: it}
	}
	return err
}

// handlerGrace is how long a handler whose context ended may take to return.
const handlerGrace = 100 * time.Millisecond

// withTx runs fn in a transaction under the bus's write lock and commits.
func (d *dispatcher) withTx(fn func(ctx context.Context, tx *sql.Tx) error) error {
	return d.withTxLocked(false, fn)
}

// withTxLocked is withTx for a caller that may already hold the write lock
// (locked); the lock is released on return either way.
func (d *dispatcher) withTxLocked(locked bool, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return d.b.writeTx(d.ctx, locked, func(tx *sql.Tx) error { return fn(d.ctx, tx) })
}

// pruneLoop deletes dedupe rows older than Config.DedupeRetention, a chunk
// at a time, every tenth of the retention (at most hourly).
func (d *dispatcher) pruneLoop() {
	defer d.wg.Done()
	every := min(d.b.cfg.DedupeRetention/10, time.Hour)
	every = max(every, time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-d.quit:
			return
		case <-t.C:
		}
		if err := d.pruneDedupe(); err != nil {
			d.b.log.Warn("boxcar: dedupe prune failed", logSub, d.s.name, logError, err)
		}
	}
}

// pruneDedupe deletes this subscriber's dedupe rows whose event IDs are
// older than the retention. Event IDs are ULIDs, so "older" is a range of
// the primary key: the smallest ULID of the cutoff millisecond.
func (d *dispatcher) pruneDedupe() error {
	cutoff := time.Now().Add(-d.b.cfg.DedupeRetention)
	var zero ulid.ULID
	if err := zero.SetTime(ulid.Timestamp(cutoff)); err != nil {
		return err
	}
	before := zero.String()
	for !d.isStopping() {
		var n int64
		err := d.withTx(func(ctx context.Context, tx *sql.Tx) error {
			var err error
			n, err = sqlite.PruneDedupe(ctx, tx, d.s.name, before, 1000)
			return err
		})
		if err != nil || n < 1000 {
			return err
		}
	}
	return nil
}
