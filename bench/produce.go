package main

import (
	"context"
	"fmt"
	"log"
	"slices"
	"time"

	"github.com/boxcar-bus/boxcar"
)

// benchProduce measures the app's transaction three ways on one bus, in
// turn, o.rounds times each, and reports the medians:
//   - bare: the app without Boxcar, one row per SQLite transaction (the
//     baseline of the produce-cost ratio and of the end-to-end ratio);
//   - Bus.Tx alone: the same row through Bus.Tx, which group-commits;
//   - Bus.Tx with PublishTx: the row and one event.
//
// Between runs it waits for the relay to catch up, so that a run never pays
// for the relaying of the one before; during a run with PublishTx the relay
// works beside the writers, as it would in the application.
func benchProduce(ctx context.Context, dir string, w *workload, rep *report) error {
	o := w.o
	e, err := openEnv(ctx, dir, o, boxcar.Config{})
	if err != nil {
		return err
	}
	defer e.close()
	if err := e.warmUp(ctx, w); err != nil {
		return err
	}
	kinds := []struct {
		what  string
		spec  writeSpec
		rates []float64
	}{
		{what: "bare app tx", spec: writeSpec{plain: true}},
		{what: "Bus.Tx", spec: writeSpec{}},
		{what: "Bus.Tx + PublishTx", spec: writeSpec{publish: true}},
	}
	var lagAfter []int64
	var groupCalls, groups int64
	idx := 0
	for round := range o.rounds {
		for k := range kinds {
			spec := kinds[k].spec
			spec.n, spec.firstIdx = o.events, idx
			before, err := e.bus.Stats(ctx)
			if err != nil {
				return err
			}
			res, err := w.write(ctx, e.bus, spec)
			if err != nil {
				return err
			}
			idx += o.events
			rate := float64(o.events) / res.elapsed.Seconds()
			kinds[k].rates = append(kinds[k].rates, rate)
			st, err := e.bus.Stats(ctx)
			if err != nil {
				return err
			}
			note := ""
			if !spec.plain {
				n := st.TxCommits - before.TxCommits
				note = fmt.Sprintf(" (%.1f calls per commit)", float64(o.events)/float64(max(n, 1)))
				if spec.publish {
					groupCalls += int64(o.events)
					groups += n
				}
			}
			if spec.publish {
				lagAfter = append(lagAfter, st.OutboxLag)
				note += fmt.Sprintf(", relay %d events behind at the end", st.OutboxLag)
			}
			log.Printf("produce round %d: %-20s %8.0f tx/s%s", round+1, kinds[k].what, rate, note)
			if err := e.waitRelayed(ctx, time.Minute); err != nil {
				return err
			}
		}
	}
	bare, grouped, p := median(kinds[0].rates), median(kinds[1].rates), median(kinds[2].rates)
	rep.bareTx = bare
	rep.add(row{
		stage:  "produce",
		what:   "bare app tx (1 row), no Boxcar",
		value:  fmt.Sprintf("%s tx/s", num(bare)),
		detail: fmt.Sprintf("median of %d runs of %s tx, %d writers: db.BeginTx, INSERT, Commit, one row per SQLite transaction, writers taking turns on a mutex", o.rounds, num(float64(o.events)), o.writers),
	})
	rep.add(row{
		stage:    "produce",
		what:     "Bus.Tx (1 row), no event",
		value:    fmt.Sprintf("%s tx/s", num(grouped)),
		baseline: fmt.Sprintf("%.2f× bare", grouped/bare),
		detail:   "the same row through Bus.Tx, which group-commits the calls that queue (a savepoint each)",
	})
	ratio := bare / p
	rep.add(row{
		stage:    "produce",
		what:     "Bus.Tx + PublishTx",
		value:    fmt.Sprintf("%s tx/s", num(p)),
		baseline: fmt.Sprintf("cost ratio %.2f× (vs Bus.Tx alone %.2f×)", ratio, grouped/p),
		target:   "≤ 1.3×",
		met:      ratio <= 1.3,
		hasTgt:   true,
		detail: fmt.Sprintf("%.1f calls per commit; relay running beside; max lag at run end %s events",
			float64(groupCalls)/float64(max(groups, 1)), num(float64(slices.Max(lagAfter)))),
	})
	return nil
}

// warmUp warms e's connections, prepared statements and relay up with 2,000
// events, and waits until they are relayed.
func (e *env) warmUp(ctx context.Context, w *workload) error {
	if _, err := w.write(ctx, e.bus, writeSpec{n: 2000, publish: true, firstIdx: 1 << 40}); err != nil {
		return err
	}
	return e.waitRelayed(ctx, time.Minute)
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
