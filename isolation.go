package boxcar

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	bjs "github.com/boxcar-bus/boxcar/jetstream"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// Isolation: an event whose handler kills the process (os.Exit or
// log.Fatal in it, a crash in cgo, a panic on a goroutine of its own, an
// out-of-memory kill) would kill every restart again: each start redelivers
// it before the events after it, no attempt on it ever returns, so none is
// counted, and every key waits behind it for ever.
//
// So a start that finds events of a stopped process unacked (the consumer's
// reset, in rewind) files the events one at a time, each once the one before
// has ended its attempt, and runs the first that could kill alone. That is
// an event with a handler to run: not a malformed one, not one a TxHandler
// handled before (the dedupe table skips it), not one that ran alone since
// the last clean start and ended. Before its handler runs, its row in
// boxcar_handling records the attempt (a commit: a process crash does not
// lose it). If the process dies meanwhile, the next start finds that row for
// the same event: the attempt counts, the event runs alone again, and once
// MaxAttempts attempts on it began and none ended, it is dead-lettered
// (reason "failed") without its handler called again, and the key goes on.
//
// An event that runs alone and completes (handled, or dead-lettered) is
// recorded as through: the next start does not run it alone again, even if
// its ack did not reach the stream (an embedded server killed with the
// process may lose the last acks). One dead-lettered that way, its handler
// not run, is recorded among the row's dead too: if it comes back, its ack
// lost, it is acked, not run, since running it would kill the process again
// (and, below through, not alone: a crash loop again). One whose attempt ends without
// completing it (an error, a call abandoned at HandlerTimeout that may
// still run) keeps its record and ends the start's isolation: its retry, or
// the abandoned call, may yet kill the process, and no other event is to
// run alone meanwhile and be blamed for it. A start
// runs one event alone after a stop that left no record, and twice as many
// as the last start when the last start's process died after its own runs
// alone (the event that kills is further on), up to maxAloneSpan; then the
// events are filed as usual again. Only attempts made alone count: an event
// that shared a transaction with the one that killed is never blamed for it.
// Kills from outside (an operator, a deploy) count only when they land
// while the same event runs alone, MaxAttempts starts in a row.

// maxAloneSpan bounds the events a start runs alone.
const maxAloneSpan = 64

// errProcessStopped is the error of an attempt the process did not outlive.
var errProcessStopped = errors.New("boxcar: the process stopped while the handler ran on this event alone")

// aloneSpan is how many events a start that isolates runs alone, after the
// last start's row h (zero if none).
func aloneSpan(h sqlite.Handling) int {
	switch {
	case h.Span == 0:
		return 1
	case h.StreamSeq != 0:
		return h.Span // its process died on an event run alone: that one again
	}
	return min(2*h.Span, maxAloneSpan)
}

// runAlone files msg once the event filed before it ended its attempt, and
// runs it alone if it could kill the process (see above). It returns once
// msg's attempt ended, or at stop.
func (d *dispatcher) runAlone(ctx context.Context, msg jetstream.Msg) {
	it, kq := d.file(msg, true)
	if it == nil {
		return
	}
	suspect := kq != nil && d.mayKill(ctx, it)
	if suspect {
		d.prepareAlone(ctx, it)
	}
	if kq == nil {
		// It joined its key's queue (a key that retries, or parked): it
		// is not alone, and waiting for it would hold every key behind
		// that one.
		return
	}
	d.mu.Lock()
	d.ready <- kq
	d.mu.Unlock()
	var completed bool
	select {
	case completed = <-it.alone:
	case <-ctx.Done():
		return
	}
	if suspect {
		d.aloneEnded(ctx, it, completed)
	}
}

// deadBefore reports whether m is an event a run alone dead-lettered since
// the last clean start, without running its handler (see above).
func (d *dispatcher) deadBefore(m Message) bool {
	return slices.Contains(d.handling.Dead, sqlite.DeadEvent{StreamSeq: m.StreamSeq, ID: m.ID})
}

// mayKill reports whether it has a handler to run: see above.
func (d *dispatcher) mayKill(ctx context.Context, it *item) bool {
	if it.bad != nil || it.m.StreamSeq <= d.handling.Through {
		return false
	}
	if d.s.h.tx != nil && !d.rerun(it) {
		handled, err := sqlite.Handled(ctx, d.b.db, d.s.name, it.m.ID)
		return err != nil || !handled
	}
	return true
}

// prepareAlone counts the attempts on it that the process did not outlive,
// and dooms it at MaxAttempts; otherwise it records the attempt about to
// begin.
func (d *dispatcher) prepareAlone(ctx context.Context, it *item) {
	if d.handling.StreamSeq == it.m.StreamSeq {
		it.attempts = d.handling.Attempts
		for a := 1; a <= it.attempts; a++ {
			it.history = append(it.history, bjs.AttemptError{Attempt: a, Error: errProcessStopped.Error()})
		}
	}
	if it.attempts >= d.s.opts.MaxAttempts {
		it.doomed = &outcome{it: it, err: fmt.Errorf("%w, %d times in a row: dead-lettered without running it again", errProcessStopped, it.attempts)}
		it.recordDead = true
		d.b.log.Error("boxcar: the process stopped every time this event's handler ran alone: dead-lettering it",
			logSub, d.s.name, logKey, it.m.Key, logEventID, it.m.ID, logAttempt, it.attempts)
		return
	}
	if it.attempts > 0 {
		d.b.log.Warn("boxcar: the process stopped while this event's handler ran alone; running it alone again",
			logSub, d.s.name, logKey, it.m.Key, logEventID, it.m.ID, logAttempt, it.attempts+1)
	}
	d.saveHandling(ctx, sqlite.Handling{StreamSeq: it.m.StreamSeq, Attempts: it.attempts + 1, Through: d.handling.Through, Span: d.span, Dead: d.handling.Dead})
}

// aloneEnded records that it ran alone and completed (handled, or
// dead-lettered) with the process alive, and ends the start's isolation
// after span events that ran a handler. An attempt that ended without
// completing it (an error, a handler abandoned at HandlerTimeout that may
// still run) ends the isolation at once, and its record stays: its retry,
// or the abandoned call, may yet kill the process, and nothing else is to
// run alone meanwhile, to be blamed for it. A doomed event is recorded by
// its ack (recordDead): its attempt ends without completing it when its
// dead letter could not be published, and its key retries the letter. The
// isolation ends then too, so that a failing dead-letter stream does not
// hold every key.
func (d *dispatcher) aloneEnded(ctx context.Context, it *item, completed bool) {
	if !completed {
		d.isolate = false
		return
	}
	if it.doomed == nil {
		d.aloneLeft--
		d.saveHandling(ctx, sqlite.Handling{Through: it.m.StreamSeq, Span: d.span, Dead: d.handling.Dead})
	}
	if d.aloneLeft <= 0 {
		d.isolate = false
	}
}

// recordDead records it, doomed by a run alone and its letter now in the
// dead-letter stream, as through and among the dead, before its ack is
// sent: if the ack dies with the process, the next start acks it unrun
// (see above). A crash before this write leaves the record of its
// attempts, and the next start dead-letters it again (the dead-letter
// stream's duplicate window absorbs a second letter within 2 minutes).
func (d *dispatcher) recordDead(it *item) {
	d.mu.Lock()
	h := sqlite.Handling{Through: it.m.StreamSeq, Span: d.span,
		Dead: append(slices.Clone(d.handling.Dead), sqlite.DeadEvent{StreamSeq: it.m.StreamSeq, ID: it.m.ID})}
	d.mu.Unlock()
	// Its letter is published: record it even if Close is giving up on
	// the handlers.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(d.handlers.Context()), recordTimeout)
	defer cancel()
	d.saveHandling(ctx, h)
}

// recordTimeout bounds recordDead's write.
const recordTimeout = 5 * time.Second

// saveHandling writes h as the subscriber's row of boxcar_handling. If it
// cannot, the event runs all the same: an attempt it does not outlive is
// not counted. d.handling changes under d.mu (file reads it there); the
// fetch loop reads it without while it isolates: the one other writer,
// recordDead, runs while the fetch loop waits for that event's end, or
// after the isolation ended.
func (d *dispatcher) saveHandling(ctx context.Context, h sqlite.Handling) {
	d.mu.Lock()
	d.handling = h
	d.mu.Unlock()
	now := time.Now().UnixNano()
	err := d.b.w.Write(ctx, func(tx *sql.Tx) error { return sqlite.SaveHandling(ctx, tx, d.s.consumer, h, now) })
	if err != nil && ctx.Err() == nil {
		d.b.log.Warn("boxcar: could not record an event run alone", logSub, d.s.name, logSeq, h.StreamSeq, logError, err)
	}
}

// endAlone tells the fetch loop that the attempt of it, filed one at a
// time, ended.
func (d *dispatcher) endAlone(it *item, completed bool) {
	if it.alone != nil {
		select {
		case it.alone <- completed:
		default:
		}
	}
}
