package boxcar

import (
	"context"
	"database/sql"
	"time"

	"github.com/oklog/ulid/v2"

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
	return sqlite.RecordHandled(ctx, tx, d.s.name, it.m.ID, time.Now().UnixNano())
}

// pruneLoop deletes dedupe rows older than Config.DedupeRetention, a chunk
// at a time, every tenth of the retention (at most hourly).
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
		err := d.withTxLocked(false, func(ctx context.Context, tx *sql.Tx) error {
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
