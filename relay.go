package boxcar

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/boxcar-bus/boxcar/internal/lifecycle"
	bjs "github.com/boxcar-bus/boxcar/jetstream"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// relay moves outbox rows into the event stream, in seq order, exactly once.
//
// Its cursor is the largest seq known to be in the stream. It reads rows
// above the cursor in batches, publishes them pipelined (see
// jetstream.Publisher; the next batch is read and sent while the previous
// one is acked), and moves the cursor past a batch when every message of it,
// and of the batches before it, is acked. It never holds a transaction
// while publishing, so producers are never throttled to its pace.
//
// The saved cursor is not the truth: on start and after any publish error
// the relay asks the stream for the outbox seq of its last event and moves
// the cursor there (forward after a crash between a publish and the cursor
// save, however long ago, so nothing is published twice even outside the
// duplicate window; backward if the stream lost acked writes, so they are
// published again). That lets the cursor be saved lazily.
type relay struct {
	b   *Bus
	pub bjs.Writer

	group  *lifecycle.Group // the relay's goroutine
	wakeCh chan struct{}
	hinted atomic.Bool // woken by a commit hook: the commit may not be visible yet

	cursor        atomic.Int64      // in memory; see above
	mark          sqlite.StreamMark // the stream at the cursor: see resync
	saved         int64             // last saved cursor
	savedMark     sqlite.StreamMark // and its mark
	savedAt       time.Time
	published     atomic.Int64 // events published since Open
	failures      atomic.Int64 // publish rounds that failed
	setAsideCount atomic.Int64 // events moved to boxcar_outbox_dead since Open

	// checkpoints remember when the cursor passed a seq, so rows are pruned
	// only PruneDelay after they were relayed. At most one per second.
	checkpoints []checkpoint
	lastPrune   time.Time

	rows []sqlite.OutboxRow
	out  []bjs.Outgoing
	// traced are the end functions of Config.Tracing's Publish for the
	// batches in flight, oldest first (see tracing.go).
	traced []func(error)
}

type checkpoint struct {
	seq int64
	at  time.Time
}

func newRelay(ctx context.Context, b *Bus) (*relay, error) {
	r := &relay{
		b:      b,
		group:  lifecycle.New(),
		wakeCh: make(chan struct{}, 1),
	}
	wc := bjs.WriterConfig{Layout: b.layout, Origin: b.cfg.InstanceID, Shared: b.cfg.topology() == topologyShared, Owns: r.owns}
	if b.cfg.Probe != nil {
		wc.MidBatch = func() { b.probe(ProbeRelayMidBatch) }
	}
	r.pub = bjs.NewWriter(b.js, b.events, wc)
	saved, mark, err := sqlite.CursorMark(ctx, b.db, b.cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("relay: read cursor: %w", err)
	}
	r.mark = mark
	r.cursor.Store(saved)
	r.saved, r.savedMark, r.savedAt = saved, r.mark, time.Now()
	if err := r.resync(ctx); err != nil {
		return nil, err
	}
	// Rows below the saved cursor were relayed before this start: let them
	// age a full PruneDelay from now.
	r.checkpoints = append(r.checkpoints, checkpoint{seq: min(saved, r.cursor.Load()), at: time.Now()})
	return r, nil
}

// resync moves the cursor to what the stream holds. A stream that is gone
// (an operator deleted it) is created again, and refilled from the outbox.
func (r *relay) resync(ctx context.Context) error {
	end, err := r.pub.Resync(ctx)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := r.b.ensureStreams(ctx); err != nil {
			return fmt.Errorf("relay: %w", err)
		}
		end, err = r.pub.Resync(ctx)
	}
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	cur := r.cursor.Load()
	var created int64
	if !end.Created.IsZero() {
		created = end.Created.UnixNano()
	}
	replaced := r.mark.CreatedNS != 0 && created != 0 && created != r.mark.CreatedNS
	switch {
	case end.Found:
		if end.OutboxSeq != cur {
			if end.OutboxSeq < cur {
				r.b.log.Warn("boxcar: the stream is behind the outbox cursor (lost writes?): republishing",
					logStream, r.b.cfg.Stream, logCursor, cur, logStreamSeq, end.OutboxSeq)
			}
			r.cursor.Store(end.OutboxSeq)
			r.capCheckpoints(end.OutboxSeq)
		}
		r.mark.Seq = end.EventSeq
	case cur > 0 && (end.LastSeq == 0 || replaced):
		// The stream never held a message (its store was lost), or it is
		// not the stream the cursor was saved on (deleted and made again,
		// by an operator or another instance): none of the outbox is in it.
		// Republish whatever the outbox still has.
		minSeq, _, err := sqlite.OutboxBounds(ctx, r.b.db)
		if err != nil {
			return fmt.Errorf("relay: %w", err)
		}
		from := max(minSeq-1, 0)
		why := "the event stream is empty but the cursor is not"
		if replaced {
			why = "the event stream was deleted and made again since the cursor was saved, and holds no event of this outbox"
		}
		r.b.log.Warn("boxcar: "+why+": republishing the outbox",
			logStream, r.b.cfg.Stream, logCursor, cur, logFromSeq, from+1)
		r.cursor.Store(from)
		r.capCheckpoints(from)
		r.mark.Seq = 0
	case end.LastSeq > 0 && end.LastSeq < r.mark.Seq:
		// No event is left to say where the cursor belongs (the older ones
		// expired), and the stream ends before the event at the cursor: it
		// lost acked writes (a power loss took its store's unsynced tail,
		// a restore from an older copy). Go back as many outbox rows as it
		// lost messages, which covers the events among them (foreign
		// messages among them only make it go back further), and publish
		// them again.
		if err := r.goBack(ctx, cur, int64(r.mark.Seq-end.LastSeq), end.LastSeq); err != nil {
			return fmt.Errorf("relay: %w", err)
		}
		r.mark.Seq = 0
	case r.mark.Seq > 0 && end.LastSeq > r.mark.Seq && end.Msgs == 0 && created != 0 && created == r.mark.CreatedNS &&
		r.b.cfg.topology() != topologyShared:
		// The same stream as at the saved cursor stored messages after the
		// event there, and every one has expired since (the process was
		// down longer than Retention after a crash between their acks and
		// the cursor save): no event is left to say where the cursor
		// belongs. The relay is the stream's only writer, so each of them
		// was the outbox row after the one before: go forward as many rows.
		if err := r.goForward(ctx, cur, int64(end.LastSeq-r.mark.Seq), end.LastSeq); err != nil {
			return fmt.Errorf("relay: %w", err)
		}
		r.mark.Seq = 0
	}
	if created != 0 {
		r.mark.CreatedNS = created
	}
	return nil
}

// goForward moves the cursor forward stored outbox rows from cur, for the
// same stream as at the saved cursor, which stored that many messages after
// it that have all expired, and ends at lastSeq. If the outbox has fewer
// rows after cur, something else wrote into the stream: the cursor stays,
// and the rows after it are published again (a duplicate, not a loss).
func (r *relay) goForward(ctx context.Context, cur, stored int64, lastSeq uint64) error {
	b := r.b
	seq, ok, err := sqlite.OutboxSeqForward(ctx, b.db, cur, stored)
	if err != nil {
		return err
	}
	if !ok {
		b.log.Warn("boxcar: the event stream stored more messages after the saved cursor than the outbox has rows after it, and none is left to read (all expired): republishing from the cursor",
			logStream, b.cfg.Stream, logCursor, cur, logStreamSeq, lastSeq)
		return nil
	}
	b.log.Info("boxcar: the events published after the saved cursor have all expired from the stream: moving the cursor past them",
		logStream, b.cfg.Stream, logCursor, cur, logStreamSeq, lastSeq, logFromSeq, seq+1)
	r.cursor.Store(seq)
	return nil
}

// goBack moves the cursor back lost outbox rows from cur, for a stream that
// lost acked writes and now ends at lastSeq.
func (r *relay) goBack(ctx context.Context, cur, lost int64, lastSeq uint64) error {
	b := r.b
	seq, ok, err := sqlite.OutboxSeqBack(ctx, b.db, cur, lost)
	if err != nil {
		return err
	}
	from := seq - 1
	if !ok {
		minSeq, _, err := sqlite.OutboxBounds(ctx, b.db)
		if err != nil {
			return err
		}
		from = max(minSeq-1, 0)
		b.log.Error("boxcar: the event stream lost more messages than the outbox still keeps before its cursor (rows are pruned Config.PruneDelay after they are relayed): events of the outbox before the first seq republished may be lost for good",
			logStream, b.cfg.Stream, logCursor, cur, logStreamSeq, lastSeq, logFromSeq, from+1)
	}
	b.log.Warn("boxcar: the event stream ends before the event at the outbox cursor and holds no event to resync on (lost writes?): republishing",
		logStream, b.cfg.Stream, logCursor, cur, logStreamSeq, lastSeq, logFromSeq, from+1)
	r.cursor.Store(from)
	r.capCheckpoints(from)
	return nil
}

// owns reports whether a stream message claiming outbox seq and event ID id
// is an event of this outbox, for Resync. The outbox row of seq, while it is
// kept, must have that ID. A seq above the largest in the outbox, or between
// kept rows (a rolled-back insert), was never published by this relay. A seq
// below the smallest kept row was pruned (relayed more than PruneDelay ago)
// and cannot be checked: it is trusted, so a foreign message dressed with an
// old seq can still mislead the relay; the stream must have no other writer
// on its subjects.
func (r *relay) owns(ctx context.Context, seq int64, id string) (bool, error) {
	rowID, found, err := sqlite.OutboxID(ctx, r.b.db, seq)
	if err != nil {
		return false, err
	}
	if found {
		return rowID == id, nil
	}
	minSeq, maxSeq, err := sqlite.OutboxBounds(ctx, r.b.db)
	if err != nil {
		return false, err
	}
	return maxSeq > 0 && seq < minSeq, nil
}

// capCheckpoints forgets that rows above cursor were relayed: the stream
// lost them and they must not be pruned before they are published again.
func (r *relay) capCheckpoints(cursor int64) {
	for i := range r.checkpoints {
		r.checkpoints[i].seq = min(r.checkpoints[i].seq, cursor)
	}
	r.saved = -1 // force a save of the moved cursor
}

// hint is called from SQLite's commit hook: it must not block.
func (r *relay) hint() {
	r.hinted.Store(true)
	r.wake()
}

func (r *relay) wake() {
	select {
	case r.wakeCh <- struct{}{}:
	default:
	}
}

// start runs the relay on a goroutine of its group.
func (r *relay) start() { r.group.Go(r.run) }

// stop stops the relay and waits (up to ctx) for it to save its cursor.
func (r *relay) stop(ctx context.Context) error {
	if err := r.group.Stop(ctx); err != nil {
		return fmt.Errorf("boxcar: relay: stop: %w", err)
	}
	return nil
}

func (r *relay) run(ctx context.Context) {
	b := r.b
	poll := time.NewTimer(b.cfg.RelayPollInterval)
	defer poll.Stop()
	backoff := time.Duration(0)
	emptyAfterHint := 0
	var diskLogged time.Time
	for {
		n, err := r.drain(ctx)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			r.traceEndAll(err)
			r.failures.Add(1)
			if errors.Is(err, sqlite.ErrWALSyncFailed) {
				// Nothing is durable again until a restart (Health says
				// so): publish nothing, and say why once a minute.
				backoff = 5 * time.Second
				if time.Since(diskLogged) >= time.Minute {
					diskLogged = time.Now()
					b.log.Error("boxcar: the relay publishes nothing: the outbox cannot be made durable until the process restarts", logError, err, logCursor, r.cursor.Load())
				}
				select {
				case <-ctx.Done():
				case <-time.After(backoff):
				}
			} else if !r.setAside(ctx, err) {
				backoff = min(max(backoff*2, 10*time.Millisecond), 5*time.Second)
				b.log.Warn("boxcar: relay publish failed; resyncing with the stream", logError, err, logCursor, r.cursor.Load(), logRetryIn, backoff)
				select {
				case <-ctx.Done():
				case <-time.After(backoff):
				}
			}
			if ctx.Err() != nil {
				break
			}
			if err := r.resync(ctx); err != nil && ctx.Err() == nil {
				b.log.Warn("boxcar: relay resync failed", logError, err)
			}
			continue
		}
		backoff = 0
		r.maintain(ctx, true)

		// A commit hook of the app's own connections fires just before the
		// commit becomes visible (Bus.Tx commits wake the relay after
		// theirs): after a hint, look again shortly, a few times, until a
		// read finds something.
		wait := b.cfg.RelayPollInterval
		switch {
		case r.hinted.Swap(false):
			emptyAfterHint = 1
			wait = 100 * time.Microsecond
		case n == 0 && emptyAfterHint > 0 && emptyAfterHint < 6:
			emptyAfterHint++
			wait = time.Duration(50<<emptyAfterHint) * time.Microsecond
		default:
			emptyAfterHint = 0
		}
		poll.Reset(wait)
		select {
		case <-ctx.Done():
		case <-r.wakeCh:
		case <-poll.C:
		}
		if ctx.Err() != nil {
			break
		}
	}
	r.traceEndAll(ctx.Err())
	// Stopped: save the cursor with a fresh context, bounded.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r.maintain(sctx, false)
}

// setAside moves the outbox row of a publish the stream refused for good
// (larger than its limits: a row written before the limits that refuse it at
// PublishTx, or edited by hand, or a stream whose limits an operator
// lowered), or of a row that cannot be sent as it is (drain: a row written
// or edited by hand, bypassing PublishTx), to boxcar_outbox_dead, with the
// reason, so that it does not hold every later event behind it. It reports
// whether it did; the caller resyncs, and the relay goes on with the next
// row. Subscribers never see the event: later events of its key are
// delivered without it.
//
// The reason is too_large, or bad_ and the outbox column at fault: bad_id,
// bad_type, bad_key, bad_headers, bad_created_ns (bad_subject: a subject
// nats.go refuses that CheckOutgoing let through).
func (r *relay) setAside(ctx context.Context, err error) bool {
	var pe *bjs.PublishError
	if !errors.As(err, &pe) || !bjs.IsPermanent(pe.Err) {
		return false
	}
	b := r.b
	reason := "too_large"
	var bad *bjs.OutgoingError
	switch {
	case errors.As(pe.Err, &bad):
		reason = "bad_" + bad.Field
	case errors.Is(pe.Err, nats.ErrBadHeaderMsg):
		reason = "bad_headers"
	case errors.Is(pe.Err, nats.ErrBadSubject):
		reason = "bad_subject"
	}
	var moved bool
	werr := r.write(ctx, func(tx *sql.Tx) error {
		var err error
		moved, err = sqlite.SetOutboxRowAside(ctx, tx, pe.Seq, reason, pe.Err.Error(), time.Now().UnixNano())
		return err
	})
	if werr != nil {
		b.log.Error("boxcar: relay could not move a refused event out of the outbox; retrying", logSeq, pe.Seq, logError, werr)
		return false
	}
	if moved {
		r.setAsideCount.Add(1)
		msg := "boxcar: the stream refuses an outbox event for good: moved to boxcar_outbox_dead, later events go on without it"
		if bad != nil {
			msg = "boxcar: an outbox row holds what PublishTx never writes (written or edited by hand?) and cannot be published as it is: moved to boxcar_outbox_dead, later events go on without it"
		}
		b.log.Error(msg, logSeq, pe.Seq, logReason, reason, logError, pe.Err)
	}
	return true
}

// relayDepth is how many batches the relay keeps in flight: it reads and
// sends the next batch while the server is still storing and acking the
// previous one, so neither SQLite reads nor the wait for acks leave the
// server idle. Two are enough to overlap them; the async publish window
// (2 × RelayBatch) bounds the messages in flight.
const relayDepth = 2

// drain publishes until the outbox has nothing above the cursor; it returns
// how many events it published. The cursor moves only past batches whose
// every message was acked, oldest first; batches still in flight when it
// returns with an error are awaited by the Resync that follows.
func (r *relay) drain(ctx context.Context) (int, error) {
	b := r.b
	total := 0
	sent := r.cursor.Load() // the last seq sent: acked or in flight
	for {
		read := 0
		if r.pub.InFlight() < relayDepth {
			var err error
			r.rows, err = sqlite.ReadOutbox(ctx, b.db, sent, b.cfg.RelayBatch, r.rows[:0])
			if bad := (*sqlite.BadRowError)(nil); errors.As(err, &bad) {
				// A row written or edited by hand, which no read again
				// can change: run sets it aside.
				clear(r.rows)
				return total, unsendable(bad.Seq, &bjs.OutgoingError{Field: bad.Column, Err: bad})
			}
			if err != nil {
				return total, fmt.Errorf("read outbox: %w", err)
			}
			read = len(r.rows)
		}
		if read > 0 {
			// An event goes into the stream only once its transaction
			// is on disk (Config.Synchronous): a subscriber must not act on
			// an event whose transaction a power loss takes back.
			if err := b.w.Durable(ctx); err != nil {
				clear(r.rows)
				return total, fmt.Errorf("make the outbox durable: %w", err)
			}
			r.out = r.out[:0]
			for _, row := range r.rows {
				o := bjs.Outgoing{Seq: row.Seq, ID: row.ID, Type: row.Type, Key: row.Key, Data: row.Data, CreatedNS: row.CreatedNS}
				var err error
				if len(row.Headers) > 0 {
					if jerr := json.Unmarshal(row.Headers, &o.Headers); jerr != nil {
						err = &bjs.OutgoingError{Field: "headers", Err: fmt.Errorf("headers are not a JSON object of strings: %w", jerr)}
					}
				}
				if err == nil {
					err = bjs.CheckOutgoing(&o)
				}
				if err != nil {
					// PublishTx never writes such a row: it was written or
					// edited by hand. Sending it without what is wrong
					// would publish an event changed; run sets it aside.
					clear(r.rows)
					clear(r.out)
					return total, unsendable(row.Seq, err)
				}
				r.out = append(r.out, o)
			}
			sent = r.rows[read-1].Seq
			clear(r.rows)
			r.traceSend(ctx)
			r.pub.Send(r.out)
			clear(r.out)
			if read == b.cfg.RelayBatch && r.pub.InFlight() < relayDepth {
				continue // there may be more: read the next batch while this one is acked
			}
		}
		if r.pub.InFlight() == 0 {
			return total, nil
		}
		partial := read > 0 && read < b.cfg.RelayBatch
		last, n, err := r.pub.Await(ctx)
		if err != nil {
			return total, err
		}
		r.traceAcked()
		b.probe(ProbeRelayAfterAck)
		r.cursor.Store(last)
		r.mark.Seq = r.pub.AckedStreamSeq()
		r.published.Add(int64(n))
		total += n
		r.noteCheckpoint(last)
		if time.Since(r.savedAt) >= b.cfg.CursorSaveInterval {
			// Only if the writer is free: an app's transaction may hold
			// it for seconds, and the events committed before it must go
			// on into the stream meanwhile. The saved cursor may lag (the
			// stream's end is the truth), and pruning, capped at it,
			// waits: the save between drains (run) waits its turn.
			r.saveCursor(ctx, false)
		}
		if partial && r.pub.InFlight() == 0 {
			// The last read found less than a batch: the outbox held no
			// more then, and every commit since has woken the relay (the
			// run loop reads again at once). A read now would almost
			// always come back empty: at everyday load that is a read
			// per event, each paying for a page cache the commits made
			// stale.
			return total, nil
		}
	}
}

func (r *relay) noteCheckpoint(seq int64) {
	now := time.Now()
	if n := len(r.checkpoints); n > 0 && now.Sub(r.checkpoints[n-1].at) < time.Second {
		r.checkpoints[n-1].seq = seq
		return
	}
	r.checkpoints = append(r.checkpoints, checkpoint{seq: seq, at: now})
}

// maintain saves the cursor if it moved and, when prune is set, deletes
// rows relayed more than PruneDelay ago (at most once a second). When
// nothing moved it writes nothing.
func (r *relay) maintain(ctx context.Context, prune bool) {
	b := r.b
	cur := r.cursor.Load()
	// A busy relay saves its cursor once per CursorSaveInterval, not after
	// every drain (a write transaction per event at everyday load): the
	// stream's end is the truth at start and after an error, the saved
	// cursor only where the relay looks first. Stop (prune false) and a
	// moved-back cursor (saved -1) save at once.
	due := !prune || r.saved < 0 || time.Since(r.savedAt) >= b.cfg.CursorSaveInterval
	if due && !r.saveCursor(ctx, true) {
		return
	}
	if !prune || time.Since(r.lastPrune) < time.Second {
		return
	}
	// Prune up to the newest checkpoint old enough, never past the saved cursor.
	upTo := int64(0)
	i := 0
	for ; i < len(r.checkpoints) && time.Since(r.checkpoints[i].at) >= b.cfg.PruneDelay; i++ {
		upTo = r.checkpoints[i].seq
	}
	upTo = min(upTo, r.saved, cur)
	if upTo <= 0 {
		return
	}
	r.lastPrune = time.Now()
	for {
		var n int64
		err := r.write(ctx, func(tx *sql.Tx) error {
			var err error
			n, err = sqlite.PruneOutbox(ctx, tx, upTo, 2000)
			return err
		})
		if err != nil {
			b.log.Warn("boxcar: relay could not prune the outbox", logError, err)
			return
		}
		if n < 2000 {
			break
		}
	}
	// Keep the checkpoint we pruned to out of the list: its rows are gone.
	r.checkpoints = append(r.checkpoints[:0], r.checkpoints[i:]...)
}

// saveCursor saves the cursor, and the stream mark, if they moved since the
// last save. With wait false it saves only if the writer is free now. It
// reports false if the save failed; a save skipped (the writer was busy)
// leaves r.saved as it was, so pruning stays capped at the cursor saved
// before.
func (r *relay) saveCursor(ctx context.Context, wait bool) bool {
	b := r.b
	cur, mark := r.cursor.Load(), r.mark
	if cur == r.saved && mark == r.savedMark {
		return true
	}
	save := func(tx *sql.Tx) error {
		return sqlite.SaveCursor(ctx, tx, b.cfg.Stream, cur, mark, time.Now().UnixNano())
	}
	var err error
	if !wait {
		var ran bool
		if ran, err = b.w.TryWrite(ctx, save); !ran {
			return true // the writer is busy: a later ack tries again
		}
	} else {
		err = r.write(ctx, save)
	}
	if err != nil {
		b.log.Warn("boxcar: relay could not save its cursor", logError, err)
		return false
	}
	r.saved, r.savedMark, r.savedAt = cur, mark, time.Now()
	return true
}

// unsendable is the error of drain for outbox row seq, which cannot be sent
// as it is (err, an *OutgoingError): a publish error that no retry changes,
// for the row's seq, so that run sets that row aside (setAside) and goes
// on. The batches sent before it are awaited by the resync that follows.
func unsendable(seq int64, err error) error {
	return &bjs.PublishError{Seq: seq, Err: err}
}

// write runs fn in a transaction of the writer.
func (r *relay) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return r.b.w.Write(ctx, fn)
}
