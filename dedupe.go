package boxcar

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"time"

	"github.com/oklog/ulid/v2"

	bjs "github.com/boxcar-bus/boxcar/jetstream"
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

// recordHandled writes the dedupe row of it in tx and reports whether it is
// new: false means this subscriber handled the event before.
func (d *dispatcher) recordHandled(ctx context.Context, tx *sql.Tx, it *item) (bool, error) {
	return sqlite.RecordHandled(ctx, tx, d.s.name, it.m.ID, it.m.Seq, time.Now().UnixNano())
}

// rerun reports whether it runs although the dedupe table says it was
// handled: a replay without dedupe (ReplayRequest.NoDedupe) rebuilds.
func (d *dispatcher) rerun(it *item) bool { return it.m.Replay && d.replayNoDedupe }

// Pruning is safe by construction: a dedupe row goes only once its event
// has left the stream (its outbox seq is below that of the stream's first
// event), so no replay or redelivery can bring the event back after its row
// is gone; and not before DedupeRetention (at least Retention: Open refuses
// less). Rows carry the outbox seq since migration 0002; older rows are kept
// a Retention longer than DedupeRetention, which covers any relay lag a
// stream could have kept them for.

// pruneLoop prunes the subscriber's dedupe rows every tenth of
// Config.DedupeRetention (at most hourly, at least every second).
func (d *dispatcher) pruneLoop(ctx context.Context) {
	every := min(d.b.cfg.DedupeRetention/10, time.Hour)
	every = max(every, time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := d.pruneDedupe(); err != nil {
			d.b.log.Warn("boxcar: dedupe prune failed", logSub, d.s.name, logError, err)
		}
	}
}

// pruneDedupe deletes this subscriber's dedupe rows that the stream no
// longer needs (see above), a chunk at a time.
func (d *dispatcher) pruneDedupe() error {
	ctx := d.handlers.Context()
	cut, err := d.b.dedupeCutoff(ctx, time.Now())
	if err != nil {
		return err
	}
	for !d.isStopping() {
		var n int64
		err := d.withTxLocked(false, func(ctx context.Context, tx *sql.Tx) error {
			var err error
			n, err = sqlite.PruneDedupe(ctx, tx, d.s.name, cut, 1000)
			return err
		})
		if err != nil || n < 1000 {
			return err
		}
	}
	return nil
}

// dedupeCutoff says which dedupe rows may go at now: of events older than
// DedupeRetention that the stream no longer holds.
func (b *Bus) dedupeCutoff(ctx context.Context, now time.Time) (sqlite.DedupeCutoff, error) {
	if b.cfg.topology() != topologySingle {
		// The stream holds the events of several instances, whose outbox
		// seqs are their own: this outbox cannot tell whether one is still
		// in the stream. Go by age alone, with a margin of a whole
		// retention: an event reaches the stream (the hub's, after an
		// outage) at most that late and still counts.
		cut := ulidAt(now.Add(-b.cfg.DedupeRetention - b.cfg.Retention))
		return sqlite.DedupeCutoff{BeforeID: cut, BeforeSeq: math.MaxInt64, LegacyBeforeID: cut}, nil
	}
	first, found, err := bjs.FirstEvent(ctx, b.js, b.events)
	if err != nil {
		return sqlite.DedupeCutoff{}, fmt.Errorf("dedupe prune: %w", err)
	}
	if !found {
		// Nothing of the outbox is in the stream: every event up to the
		// relay's cursor left it (or never got there, and then no
		// subscriber handled it).
		first = b.relay.cursor.Load() + 1
	}
	// Events still in the outbox may be relayed again (a stream lost with
	// its store is refilled from it, and the relay's cursor may not know
	// yet): their dedupe rows stay.
	minSeq, _, err := sqlite.OutboxBounds(ctx, b.db)
	if err != nil {
		return sqlite.DedupeCutoff{}, fmt.Errorf("dedupe prune: %w", err)
	}
	if minSeq > 0 {
		first = min(first, minSeq)
	}
	return sqlite.DedupeCutoff{
		BeforeID:       ulidAt(now.Add(-b.cfg.DedupeRetention)),
		BeforeSeq:      first,
		LegacyBeforeID: ulidAt(now.Add(-b.cfg.DedupeRetention - b.cfg.Retention)),
	}, nil
}

// ulidAt is the smallest ULID of t's millisecond: every ID made before t
// sorts below it.
func ulidAt(t time.Time) string {
	var id ulid.ULID
	if err := id.SetTime(ulid.Timestamp(t)); err != nil {
		return "" // before 1970 or past 10889: below every ID
	}
	return id.String()
}
