package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// The write-wait stage: how long the app's writes wait for SQLite's single
// writer while a transactional subscriber works through a backlog. Its
// batches and the app's writes queue for the writer in the database's gate
// (sqlite/gate.go), taking turns; SubscribeOptions.MaxBatchTime bounds how
// long one batch holds it. The app writes at a modest steady rate, both
// ways an app writes: through Bus.Tx and in its own transactions
// (db.BeginTx, INSERT, Commit) on the same *sql.DB from sqlite.Open.

const (
	// wwWriters is how many goroutines run each kind of app write: paced
	// open-loop at o.writeRate/s each, they keep their schedule through
	// waits of up to wwWriters/rate (320 ms at 50/s); past that they fall
	// behind (the notes say how far) and a run is cut at its duration.
	wwWriters = 16
	// wwWarmup is how long a new subscriber works before the app's writes
	// start: it has fetched and its first batch holds the writer.
	wwWarmup = 500 * time.Millisecond
	// wwTarget is the target for the app's write-wait at 20 ms
	// handlers: p99 at most this, and no "database is locked".
	wwTarget        = 50 * time.Millisecond // the row says "p99 ≤ 50 ms"
	wwTargetHandler = 20 * time.Millisecond
)

// waitRecord is what one kind of app write met in one run.
type waitRecord struct {
	lat    *durations   // call → commit, of the writes that committed
	errs   atomic.Int64 // writes that failed
	locked atomic.Int64 // of which "database is locked"
	errMax atomic.Int64 // the longest call → error, ns
	first  atomic.Value // the first error's text
}

func newWaitRecord() *waitRecord { return &waitRecord{lat: newDurations()} }

// done records one write (writeSpec.onDone).
func (r *waitRecord) done(took time.Duration, err error) {
	if err == nil {
		r.lat.record(took)
		return
	}
	r.errs.Add(1)
	if isLocked(err) {
		r.locked.Add(1)
	}
	r.first.CompareAndSwap(nil, err.Error())
	for {
		m := r.errMax.Load()
		if int64(took) <= m || r.errMax.CompareAndSwap(m, int64(took)) {
			break
		}
	}
}

// isLocked reports whether err is "database is locked": the gate's, after a
// write waited its busy timeout, or SQLite's own.
func isLocked(err error) bool {
	return errors.Is(err, sqlite.ErrBusy) || strings.Contains(err.Error(), "database is locked")
}

// errorsNote describes r's errors for a table cell.
func (r *waitRecord) errorsNote() string {
	n := r.errs.Load()
	if n == 0 {
		return "0 errors"
	}
	s := fmt.Sprintf("%d errors (%d `database is locked`), after waiting up to %s", n, r.locked.Load(), ms(time.Duration(r.errMax.Load())))
	if first, ok := r.first.Load().(string); ok {
		s += fmt.Sprintf("; first: %q", first)
	}
	return s
}

// waitRun is one measurement of both kinds of app write.
type waitRun struct {
	tx, own       *waitRecord
	txRes, ownRes writeResult
	rate          int           // writes/s of each kind
	dur           time.Duration // how long the schedule runs
	scheduled     int           // writes of each kind the schedule holds
	// The subscriber's (if any): events it handled during the
	// measurement, and its backlog (pending + unacked) at the end.
	handled, left int64
}

// subscriberStats returns the stats of the subscriber name (zero if none).
func subscriberStats(ctx context.Context, bus *boxcar.Bus, name string) (boxcar.SubscriberStats, error) {
	st, err := bus.Stats(ctx)
	if err != nil {
		return boxcar.SubscriberStats{}, err
	}
	for _, s := range st.Subscribers {
		if s.Name == name {
			return s, nil
		}
	}
	return boxcar.SubscriberStats{}, nil
}

// measureWrites runs both kinds of app write at o.writeRate/s each, side by
// side, for o.levelDur, while the subscriber sub (if not "") works, and
// waits until every write started has ended. The wait of a write is from
// just before its call (Bus.Tx, or db.BeginTx) to the return of its commit,
// on Go's monotonic clock.
func (w *workload) measureWrites(ctx context.Context, e *env, sub string, base int) (waitRun, error) {
	o := w.o
	n := int(float64(o.writeRate) * o.levelDur.Seconds())
	interval := time.Second / time.Duration(o.writeRate)
	r := waitRun{tx: newWaitRecord(), own: newWaitRecord(), rate: o.writeRate, dur: o.levelDur, scheduled: n}
	before, err := subscriberStats(ctx, e.bus, sub)
	if err != nil {
		return r, err
	}
	spec := writeSpec{n: n, interval: interval, until: o.levelDur, writers: wwWriters}
	txSpec, ownSpec := spec, spec
	txSpec.firstIdx, txSpec.onDone = base, r.tx.done
	ownSpec.firstIdx, ownSpec.onDone, ownSpec.plain, ownSpec.concurrent = base+n, r.own.done, true, true
	var wg sync.WaitGroup
	var txErr, ownErr error
	wg.Go(func() { r.txRes, txErr = w.write(ctx, e.bus, txSpec) })
	wg.Go(func() { r.ownRes, ownErr = w.write(ctx, e.bus, ownSpec) })
	wg.Wait()
	if err := errors.Join(txErr, ownErr); err != nil {
		return r, err
	}
	if sub != "" {
		after, err := subscriberStats(ctx, e.bus, sub)
		if err != nil {
			return r, err
		}
		r.handled = after.Handled - before.Handled
		r.left = int64(after.Pending) + int64(after.Unacked)
	}
	return r, nil
}

// benchWriteWait fills the stream with a backlog, measures the app's writes
// with no subscriber (the baseline), then, for each handler duration, with a
// fresh TxHandler subscriber working through the backlog: once with the
// defaults and once with MaxBatchTime at o.unboundedBatch (the old,
// unbounded batches, as near as the API allows).
func benchWriteWait(ctx context.Context, dir string, w *workload, rep *report) error {
	o := w.o
	delays, err := o.handlerDelays()
	if err != nil {
		return err
	}
	// The backlog is written before the bus opens (as the relay stage
	// does), which is faster than beside a running relay.
	t0 := time.Now()
	db, err := openDB(dir, o.sync)
	if err != nil {
		return err
	}
	err = sqlite.Migrate(ctx, db)
	if err == nil {
		err = fillOutbox(ctx, db, w, o.wwBacklog)
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	e, err := openEnv(ctx, dir, o, boxcar.Config{})
	if err != nil {
		return err
	}
	defer e.close()
	if err := e.waitRelayed(ctx, 5*time.Minute); err != nil {
		return err
	}
	log.Printf("write wait: %s events in the stream in %v", num(float64(o.wwBacklog)), time.Since(t0).Round(time.Millisecond))

	base := 0
	idle, err := w.measureWrites(ctx, e, "", base)
	if err != nil {
		return fmt.Errorf("no subscriber: %w", err)
	}
	base += 2 * idle.scheduled
	logWaits("no subscriber", idle)
	txBase, ownBase := idle.tx.lat.quantiles(), idle.own.lat.quantiles()
	rep.add(waitRow("Bus.Tx, no subscriber", idle, idle.tx, idle.txRes, "", false, false))
	rep.add(waitRow("own tx, no subscriber", idle, idle.own, idle.ownRes, "", false, false))

	type mode struct {
		label    string
		maxBatch time.Duration // SubscribeOptions.MaxBatchTime; 0: the default
	}
	modes := []mode{{label: "defaults"}}
	if o.unboundedBatch > 0 {
		modes = append(modes, mode{fmt.Sprintf("unbounded batches (MaxBatchTime %s)", shortDuration(o.unboundedBatch)), o.unboundedBatch})
	}
	for _, d := range delays {
		runs := make([]waitRun, len(modes))
		for i, m := range modes {
			time.Sleep(500 * time.Millisecond) // let the previous run's tail settle
			name := fmt.Sprintf("ww%dus%d", d.Microseconds(), i)
			sub, err := e.bus.Subscribe(ctx, name, handledTx(name, d, nil),
				boxcar.SubscribeOptions{Workers: o.workers, MaxBatchTime: m.maxBatch})
			if err != nil {
				return err
			}
			time.Sleep(wwWarmup)
			r, err := w.measureWrites(ctx, e, name, base)
			if cerr := closeSubscription(sub); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("%s handlers, %s: %w", handlerLabel(d), m.label, err)
			}
			base += 2 * r.scheduled
			logWaits(fmt.Sprintf("%s handlers, %s", handlerLabel(d), m.label), r)
			runs[i] = r
		}
		for _, kind := range []struct {
			what string
			base quantiles
			rec  func(r waitRun) (*waitRecord, writeResult)
		}{
			{"Bus.Tx", txBase, func(r waitRun) (*waitRecord, writeResult) { return r.tx, r.txRes }},
			{"own tx", ownBase, func(r waitRun) (*waitRecord, writeResult) { return r.own, r.ownRes }},
		} {
			for i, m := range modes {
				rec, res := kind.rec(runs[i])
				x := waitRow(fmt.Sprintf("%s, %s handlers, %s", kind.what, handlerLabel(d), m.label), runs[i], rec, res,
					"no subscriber: p99 "+ms(kind.base.p99), true, i == 0)
				if i == 0 && d == wwTargetHandler {
					x.target = "p99 ≤ 50 ms, 0 locked"
					x.met = x.met && rec.lat.quantiles().p99 <= wwTarget
				}
				rep.add(x)
			}
		}
	}
	return nil
}

// closeSubscription closes sub, giving a batch in progress a second: an
// unbounded batch of slow handlers can hold the writer for seconds, and is
// then canceled and rolled back, which is fine here.
func closeSubscription(sub *boxcar.Subscription) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := sub.Close(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("close subscriber %s: %w", sub.Name(), err)
	}
	return nil
}

func logWaits(label string, r waitRun) {
	q, p := r.tx.lat.quantiles(), r.own.lat.quantiles()
	log.Printf("write wait, %s: Bus.Tx p50 %v p99 %v max %v, %d errors (%d locked); own tx p50 %v p99 %v max %v, %d errors (%d locked); subscriber handled %d, %d left",
		label, q.p50, q.p99, q.max, r.tx.errs.Load(), r.tx.locked.Load(),
		p.p50, p.p99, p.max, r.own.errs.Load(), r.own.locked.Load(), r.handled, r.left)
}

// waitRow is the table row of one kind of app write in run r. With
// withSub it describes the subscriber's backlog; with hasTarget the target
// is no "database is locked" (the caller may add to it).
func waitRow(what string, r waitRun, rec *waitRecord, res writeResult, baseline string, withSub, hasTarget bool) row {
	q := rec.lat.quantiles()
	done := rec.lat.count() + rec.errs.Load()
	notes := fmt.Sprintf("%d of %d scheduled writes (%d/s for %v, %d writers), %s; writers up to %s behind schedule",
		done, r.scheduled, r.rate, r.dur, wwWriters, rec.errorsNote(), ms(res.behind))
	if left := int64(r.scheduled) - done; left > 0 {
		notes += fmt.Sprintf("; writes never started: %d, every writer was still waiting when the %v were over (the percentiles are of the writes that committed)", left, r.dur)
	}
	if withSub {
		if r.left > 0 {
			notes += fmt.Sprintf("; subscriber handled %s events meanwhile, %s still to do at the end", num(float64(r.handled)), num(float64(r.left)))
		} else {
			notes += fmt.Sprintf("; **subscriber ran dry**: handled %s events meanwhile, none left at the end", num(float64(r.handled)))
		}
	}
	x := row{
		stage:    "write wait",
		what:     what,
		value:    fmt.Sprintf("p50 %s · p99 %s · max %s", ms(q.p50), ms(q.p99), ms(q.max)),
		baseline: baseline,
		detail:   notes,
	}
	if hasTarget {
		x.target, x.hasTgt, x.met = "0 locked", true, rec.locked.Load() == 0
	}
	return x
}

// handlerLabel names a handler duration for a table cell: "20 ms".
func handlerLabel(d time.Duration) string {
	return fmt.Sprintf("%g ms", float64(d)/float64(time.Millisecond))
}

// shortDuration formats d without zero units: 1h, not 1h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
