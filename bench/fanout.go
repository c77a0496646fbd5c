package main

import (
	"context"
	"fmt"
	"log"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/boxcar-bus/boxcar"
)

// fanoutBus is a bus whose subscribers (TxHandlers, as openPipeline's) each
// handle every event, and count the handler calls that reached the end of
// their transaction's work. The counts only tell the bench when to start
// asking the bus: a batch rolled back and run again counts twice, so a run
// ends on Stats (nothing pending or unacked), not on the counts.
type fanoutBus struct {
	*env
	calls []atomic.Int64 // [subscriber]
}

// openFanout opens a bus in dir with n transactional subscribers.
func openFanout(ctx context.Context, dir string, w *workload, n int) (*fanoutBus, error) {
	e, err := openEnv(ctx, dir, w.o, boxcar.Config{})
	if err != nil {
		return nil, err
	}
	f := &fanoutBus{env: e, calls: make([]atomic.Int64, n)}
	for i := range n {
		c := &f.calls[i]
		h := handledTx(subscriberName(i), 0, func(boxcar.Message) { c.Add(1) })
		if _, err := e.bus.Subscribe(ctx, subscriberName(i), h, boxcar.SubscribeOptions{Workers: w.o.workers}); err != nil {
			e.close()
			return nil, fmt.Errorf("subscribe %s: %w", subscriberName(i), err)
		}
	}
	return f, nil
}

// run writes n events flat out (indexes from base) and returns when every
// subscriber acked all of them: it waits on the handlers' counts first (no
// requests to the server while the subscribers work), then polls Stats
// every 5 ms until nothing is left in the outbox and nothing pending or
// unacked on any consumer.
func (f *fanoutBus) run(ctx context.Context, w *workload, base, n int) (done time.Time, wres writeResult, err error) {
	want := make([]int64, len(f.calls))
	for i := range f.calls {
		want[i] = f.calls[i].Load() + int64(n)
	}
	wres, err = w.write(ctx, f.bus, writeSpec{n: n, publish: true, firstIdx: base})
	if err != nil {
		return done, wres, err
	}
	deadline := time.Now().Add(10 * time.Minute)
	for i := range f.calls {
		for f.calls[i].Load() < want[i] {
			if time.Now().After(deadline) {
				return done, wres, fmt.Errorf("%s handled %d of %d events after 10 minutes", subscriberName(i), f.calls[i].Load()-want[i]+int64(n), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if err := waitCaughtUp(ctx, f.bus, deadline); err != nil {
		return done, wres, err
	}
	return time.Now(), wres, nil
}

// waitCaughtUp polls the bus's stats every 5 ms until the relay and every
// subscriber caught up: nothing left in the outbox, nothing pending or
// unacked on any consumer.
func waitCaughtUp(ctx context.Context, bus *boxcar.Bus, deadline time.Time) error {
	for {
		st, err := bus.Stats(ctx)
		if err != nil {
			return err
		}
		caughtUp := st.OutboxLag == 0
		for _, s := range st.Subscribers {
			caughtUp = caughtUp && s.Pending == 0 && s.Unacked == 0 && s.Err == ""
		}
		if caughtUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not caught up by the deadline: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fanoutResult is one subscriber count's run.
type fanoutResult struct {
	subs     int
	total    float64       // handled events/s, all subscribers together
	produced float64       // tx/s the writers committed
	cpu      time.Duration // process CPU per handled event
	tookFor  time.Duration
}

// benchFanout measures the same events handled by N transactional
// subscribers, for each N of -fanout: a fresh bus per N, a warm-up of 5,000
// events, then o.events written flat out; the run ends when every subscriber
// acked everything. They share SQLite's one writer: the question is how much
// of one subscriber's rate N of them keep together.
func benchFanout(ctx context.Context, dir string, w *workload, rep *report) error {
	counts, err := w.o.fanoutCounts()
	if err != nil {
		return err
	}
	var results []fanoutResult
	for i, n := range counts {
		if i > 0 {
			settle(filepath.Join(dir, fmt.Sprint(counts[i-1])), w.o.keep)
		}
		r, err := fanoutRun(ctx, filepath.Join(dir, fmt.Sprint(n)), w, n)
		if err != nil {
			return fmt.Errorf("%d subscribers: %w", n, err)
		}
		log.Printf("fanout: %2d subscribers: %8.0f handled events/s (%7.0f per subscriber, %.2f× one subscriber's), %v CPU per handled event, writers %.0f tx/s",
			n, r.total, r.total/float64(n), r.total/results0(results, r).total, r.cpu, r.produced)
		results = append(results, r)
	}
	one := results[0]
	for _, r := range results {
		ratio := r.total / one.total
		x := row{
			stage:    "fanout",
			what:     fmt.Sprintf("%d TxHandler subscriber(s), flat out", r.subs),
			value:    fmt.Sprintf("%s handled events/s", num(r.total)),
			baseline: fmt.Sprintf("%.2f× 1 subscriber's", ratio),
			detail: fmt.Sprintf("%s per subscriber; %.0f µs CPU per handled event; %s events × %d subscribers in %v (commit of the first to the last ack); writers committed %s tx/s",
				num(r.total/float64(r.subs)), us(r.cpu), num(float64(w.o.events)), r.subs, r.tookFor.Round(time.Millisecond), num(r.produced)),
		}
		if r.subs == 8 {
			x.target, x.met, x.hasTgt = "≥ 0.5× 1 subscriber's", ratio >= 0.5, true
		}
		rep.add(x)
	}
	return nil
}

// results0 is the first result, the one-subscriber baseline, or r while
// there is none yet.
func results0(rs []fanoutResult, r fanoutResult) fanoutResult {
	if len(rs) == 0 {
		return r
	}
	return rs[0]
}

// fanoutRun opens a bus with n subscribers in dir, warms it up and measures
// one flat-out run of o.events.
func fanoutRun(ctx context.Context, dir string, w *workload, n int) (fanoutResult, error) {
	f, err := openFanout(ctx, dir, w, n)
	if err != nil {
		return fanoutResult{}, err
	}
	defer f.close()
	const warm = 5000
	if _, _, err := f.run(ctx, w, 0, warm); err != nil {
		return fanoutResult{}, fmt.Errorf("warm-up: %w", err)
	}
	time.Sleep(500 * time.Millisecond) // the warm-up's tail: checkpoints, cursor saves
	events := w.o.events
	c0, t0 := cpuTime(), time.Now()
	done, wres, err := f.run(ctx, w, warm, events)
	if err != nil {
		return fanoutResult{}, err
	}
	took := done.Sub(t0)
	handled := n * events
	return fanoutResult{
		subs:     n,
		total:    float64(handled) / took.Seconds(),
		produced: float64(events) / wres.elapsed.Seconds(),
		cpu:      (cpuTime() - c0) / time.Duration(handled),
		tookFor:  took,
	}, nil
}
