package boxcar

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/boxcar-bus/boxcar/sqlite"
)

// The transactional batch runner: a worker's keys, handled in one SQLite
// transaction of the writer, their dedupe rows with them (see dedupe.go);
// the keys move on at the commit, and the acker (acker.go) acks once a WAL
// fsync covers it.

// eventSavepoint isolates one event of a batch on the safe path.
var eventSavepoint = sqlite.NewSavepoint("boxcar_event")

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
// A failure the batch saw but its key did not reach (the rerun stopped
// before it, or the batch was abandoned with its failure behind the key's
// head) is recorded at its own event: the key resumes at its head, and the
// failed event runs again when the key reaches it, or, if the failure
// dead-letters it (Permanent, MaxAttempts), is dead-lettered then without
// its handler called again (see finish).
//
// locked says the caller holds the bus's write lock; runTx releases it.
func (d *dispatcher) runTx(batch []*keyQueue, locked bool) {
	if d.anyParked(batch) {
		// Parking publishes to the dead-letter stream: not while holding
		// the writer.
		if locked {
			d.b.w.Unlock()
			locked = false
		}
		batch = slices.DeleteFunc(batch, func(kq *keyQueue) bool { return !d.parkLeading(kq) })
		if len(batch) == 0 {
			return
		}
	}
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
	var culprit, failed *outcome
	err := d.withTxLocked(locked, func(ctx context.Context, tx *sql.Tx) error {
		return d.supervise(&culprit, func(w *handlerWatch) error {
			var err error
			failed, err = d.runFastTurns(ctx, tx, turns, w)
			return err
		})
	})
	culprit = culpritOf(culprit, err)
	if culprit == nil && errors.Is(err, errFastFailed) {
		j := 0
		for i := range turns {
			for _, it := range turns[i].items {
				if it != failed.it {
					it.attempts = attempts[j]
				}
				j++
			}
			turns[i].done, turns[i].failed = 0, nil
		}
		return failed
	}
	if err != nil {
		d.txFailed(turns, attempts, culprit, nil, err)
		return nil
	}
	d.committed(turns, nil)
	return nil
}

// runFastTurns is the fast path's loop: each turn's items in order, a dedupe
// row and a handler call each, no savepoints. It returns the first handler
// failure (with errFastFailed), or an error that ends the transaction.
func (d *dispatcher) runFastTurns(ctx context.Context, tx *sql.Tx, turns []turn, w *handlerWatch) (failed *outcome, err error) {
	qctx := context.WithoutCancel(ctx)
	for i := range turns {
		t := &turns[i]
		for _, it := range t.items {
			if it.doomed != nil {
				t.failed = it.doomed // dead-lettered after the commit (finish), its handler not called
				break
			}
			if it.bad != nil || d.isStopping() || w.overTime() {
				break
			}
			it.handled = false
			fresh, err := d.recordHandled(qctx, tx, it)
			if err != nil {
				return nil, &abortError{err: fmt.Errorf("dedupe row: %w", err)}
			}
			if !fresh && !d.rerun(it) {
				t.done++
				continue
			}
			it.attempts++
			it.m.Attempt = it.attempts
			err = d.callTx(ctx, tx, it, w)
			if ae := (*abortError)(nil); errors.As(err, &ae) {
				return nil, ae
			}
			if sqlite.IsFull(err) {
				return nil, err // the database failed, not the handler
			}
			if err != nil {
				return &outcome{it: it, err: err}, errFastFailed
			}
			it.handled = true
			t.done++
		}
	}
	return nil, nil
}

// runTxSafe runs the batch with a savepoint per event. pre, if not nil, is
// a handler failure of the fast path: that event is not run again but fails
// with its error. Not reached (an event before it in its key failed this
// time, the batch's time ran out, the subscriber is stopping), its failure
// is recorded all the same, behind its key's head (see finish): its handler
// saw that attempt.
func (d *dispatcher) runTxSafe(turns []turn, attempts []int, locked bool, pre *outcome) {
	var culprit *outcome // a handler that did not return in time, or ended the transaction
	err := d.withTxLocked(locked, func(ctx context.Context, tx *sql.Tx) error {
		return d.supervise(&culprit, func(w *handlerWatch) error {
			for i := range turns {
				t := &turns[i]
				for _, it := range t.items {
					if it.bad != nil {
						break
					}
					if pre != nil && it == pre.it {
						// Before the time and stopping checks: this runs
						// no handler, and its failure stands.
						t.failed = pre
						break
					}
					if it.doomed != nil {
						t.failed = it.doomed // the same
						break
					}
					if d.isStopping() || w.overTime() {
						break
					}
					err := d.handleInSavepoint(ctx, tx, it, w)
					if ae := (*abortError)(nil); errors.As(err, &ae) {
						return ae // the transaction is unusable: roll back the batch
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
	culprit = culpritOf(culprit, err)
	if err != nil {
		d.txFailed(turns, attempts, culprit, pre, err)
		return
	}
	d.committed(turns, pre)
}

// txFailed handles a batch whose transaction failed (BEGIN, COMMIT, a full
// disk, a hung handler, a handler that ended the transaction): nothing of it
// happened. This is the database's failure, not the handlers': the keys
// retry without an attempt counted. Two events are the exception and keep
// their attempt: the culprit, if any (a handler that hung, or ended the
// transaction), and pre, the fast path's failure (its handler saw that
// attempt and failed). Each goes through the usual failure path (retry with
// backoff, dead letter when due) at its own place in its key: an event
// before it in its key is not done and runs again first (see finish).
func (d *dispatcher) txFailed(turns []turn, attempts []int, culprit, pre *outcome, err error) {
	d.b.log.Warn("boxcar: subscriber transaction failed; retrying", logSub, d.s.name, logError, err)
	var blamed []*turn
	d.mu.Lock()
	j := 0
	for i := range turns {
		t := &turns[i]
		mine := false
		for _, it := range t.items {
			if failedIn(it, culprit, pre) != nil {
				mine = true
			} else {
				it.attempts = attempts[j]
			}
			j++
		}
		switch {
		case mine:
			blamed = append(blamed, t)
		case !d.stopping:
			d.scheduleRetry(t.kq, 1)
		}
	}
	d.mu.Unlock()
	for _, t := range blamed {
		var failures []*outcome // in key order: the culprit is before pre in a turn of both
		for _, it := range t.items {
			if o := failedIn(it, culprit, pre); o != nil {
				failures = append(failures, o)
			}
		}
		if failures[0].it == t.items[0] {
			d.finish(t.kq, 0, failures[0], failures[1:]...)
		} else {
			d.finish(t.kq, 0, nil, failures...)
		}
	}
}

// failedIn returns the one of failures (nil ones allowed) that is it's, or
// nil.
func failedIn(it *item, failures ...*outcome) *outcome {
	for _, o := range failures {
		if o != nil && o.it == it {
			return o
		}
	}
	return nil
}

// committed moves each key of a batch on, now that its transaction
// committed, and hands the events it handled to the acker, which acks them
// once a WAL fsync covers the commit: an ack the server keeps for effects a
// power loss takes back would never be redelivered. Keys need not wait for
// that fsync: SQLite replays the WAL in order, so a later commit of the key
// survives a power loss only if this one does. pre is the fast path's
// failure (for runTxSafe): if the batch did not reach it, it is recorded
// behind its key's head.
func (d *dispatcher) committed(turns []turn, pre *outcome) {
	now := time.Now()
	var acks []*item
	var handled, skipped int64 // counted once committed: a rerun rolled back whole counts nothing
	for i := range turns {
		t := &turns[i]
		for _, it := range t.items[:t.done] {
			if it.handled {
				handled++
				d.stats.endToEnd.observe(now.Sub(it.m.Time))
			} else {
				skipped++
			}
		}
		acks = append(acks, t.items[:t.done]...)
	}
	d.stats.handled.Add(handled)
	d.stats.skipped.Add(skipped)
	if !d.acks.add(acks) {
		// The acker stopped (the dispatcher is stopping): ack here, or
		// leave them for a redelivery the dedupe table absorbs.
		if err := d.ackDurable(acks, 0); err != nil {
			d.b.log.Debug("boxcar: subscriber stopping: committed events left unacked", logSub, d.s.name, logError, err)
		}
	}
	for i := range turns {
		t := &turns[i]
		if t.failed == nil && len(t.items) > 0 && t.items[0].bad != nil {
			t.failed = &outcome{it: t.items[0], err: t.items[0].bad}
		}
		var behind []*outcome
		if pre != nil && t.failed != pre && slices.Contains(t.items, pre.it) {
			behind = append(behind, pre)
		}
		d.finish(t.kq, t.done, t.failed, behind...)
	}
}

// abortError reports that the transaction itself failed (SQLite rolled it
// back, as it does on a full disk), not just one event. culprit, if set, is
// the event whose handler caused it (ended the transaction).
type abortError struct {
	err     error
	culprit *outcome
}

func (e *abortError) Error() string { return e.err.Error() }
func (e *abortError) Unwrap() error { return e.err }

// culpritOf returns the event to blame for a failed batch: the hung
// handler's (found by supervise), else the one err names.
func culpritOf(hung *outcome, err error) *outcome {
	if hung != nil {
		return hung
	}
	if ae := (*abortError)(nil); errors.As(err, &ae) {
		return ae.culprit
	}
	return nil
}

// handleInSavepoint records it in the dedupe table and runs the handler,
// inside a savepoint that is rolled back if the handler fails. A row already
// there means the event was handled before: the handler is skipped.
func (d *dispatcher) handleInSavepoint(ctx context.Context, tx *sql.Tx, it *item, w *handlerWatch) error {
	// Boxcar's own statements run with a context that cannot be canceled:
	// the driver then runs them on this goroutine instead of starting one
	// per statement. The transaction's context still ends it at Close.
	qctx := context.WithoutCancel(ctx)
	if err := eventSavepoint.Begin(qctx, tx); err != nil {
		return &abortError{err: fmt.Errorf("savepoint: %w", err)}
	}
	it.handled = false
	fresh, err := d.recordHandled(qctx, tx, it)
	if err == nil && !fresh && !d.rerun(it) {
		return eventSavepoint.Release(qctx, tx)
	}
	if err == nil {
		it.attempts++
		it.m.Attempt = it.attempts
		err = d.callTx(ctx, tx, it, w)
	}
	if ae := (*abortError)(nil); errors.As(err, &ae) {
		return ae
	}
	if err != nil {
		if sqlite.IsFull(err) {
			return &abortError{err: err}
		}
		if rbErr := eventSavepoint.Rollback(qctx, tx); rbErr != nil {
			// The savepoint is gone: SQLite rolled the transaction back.
			return &abortError{err: fmt.Errorf("%w (and rollback to savepoint: %v)", err, rbErr)}
		}
		return err
	}
	if err := eventSavepoint.Release(qctx, tx); err != nil {
		return &abortError{err: fmt.Errorf("release savepoint: %w", err)}
	}
	it.handled = true
	return nil
}

// A handler that ignores its context must not hold the transaction,
// SQLite's single writer and its key for ever. The batch runs on a goroutine
// of its own (of the handlers group) and the worker supervises it (one
// goroutine and one timer per transaction, not per event): when a handler
// has run for HandlerTimeout and a short grace (for a handler that is
// returning its context's error), the worker abandons the batch, the
// transaction rolls back and the batch is retried, the hung event with its
// attempt counted. The abandoned call's later uses of tx fail with
// sql.ErrTxDone; Close waits for it.

// handlerWatch tells the supervisor which handler call is running, since
// when; and the batch when it has held the writer long enough.
type handlerWatch struct {
	mu        sync.Mutex
	cur       *item
	start     time.Time
	abandoned bool

	began   time.Time     // the batch's start (its goroutine's own)
	maxTime time.Duration // SubscribeOptions.MaxBatchTime
	calls   int           // handler calls so far (its goroutine's own)
}

// overTime reports whether the batch should commit now rather than take
// its next event: it has held the writer for MaxBatchTime (after at least
// one handler call), so that the app's writes queued meanwhile go next.
func (w *handlerWatch) overTime() bool {
	return w.calls > 0 && time.Since(w.began) >= w.maxTime
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
	w := &handlerWatch{began: time.Now(), maxTime: d.s.opts.MaxBatchTime}
	done := make(chan error, 1)
	d.handlers.Go(func(context.Context) {
		// The handlers run on this goroutine while the worker holds the
		// writer: a call back into the writer from one fails at once.
		defer d.b.w.Own()()
		done <- run(w)
	})
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
	hctx, cancel := context.WithTimeout(holdsWriter(ctx), d.s.opts.HandlerTimeout)
	defer cancel()
	// Copy the message before begin: once the supervisor (under the
	// watch's lock) abandons this call, a retry may update it.m while the
	// abandoned handler still runs.
	m := it.m
	w.begin(it)
	w.calls++
	start := time.Now()
	hctx, end := d.b.traceProcess(hctx, d.s.name, m)
	err := callSafely(func() error { return d.s.h.tx(hctx, tx, m) })
	end(err)
	d.stats.handlerTime.observe(time.Since(start))
	if !w.end() {
		return &abortError{err: errors.New("handler abandoned after its timeout")}
	}
	if ended, cause := d.b.w.TxEnded(); ended {
		// SQLite ended the transaction under the handler: the batch is
		// gone, and the guard kept the handler's later writes from
		// committing on their own. When the database failed (a full disk),
		// no event is to blame; otherwise (an INSERT OR ROLLBACK, a
		// RAISE(ROLLBACK) in a trigger, an interrupt) the handler's event
		// counts the attempt.
		if err == nil {
			err = errors.Join(sqlite.ErrTxEnded, cause)
		}
		if errors.Is(cause, sqlite.ErrTxEndedByStatement) {
			// The handler ran COMMIT (or ROLLBACK) as SQL: its writes may be
			// committed without the event's dedupe row, and running it again
			// may apply it twice. A programming error: dead-letter it.
			err = Permanent(err)
		}
		ae := &abortError{err: fmt.Errorf("handler of event %s: %w", it.m.ID, err)}
		if !sqlite.IsDatabaseFailure(cause) && !sqlite.IsDatabaseFailure(err) {
			ae.culprit = &outcome{it: it, err: err}
		}
		return ae
	}
	return err
}

// handlerGrace is how long a handler whose context ended may take to return.
const handlerGrace = 100 * time.Millisecond

// withTxLocked runs fn in a transaction of the writer, with the handlers'
// context, and commits. locked says the caller holds the write lock; it is
// released on return either way.
func (d *dispatcher) withTxLocked(locked bool, fn func(ctx context.Context, tx *sql.Tx) error) error {
	ctx := d.handlers.Context()
	run := func(tx *sql.Tx) error { return fn(ctx, tx) }
	if locked {
		return d.b.w.WriteLocked(ctx, run)
	}
	return d.b.w.Write(ctx, run)
}
