package main

import (
	"context"
	"fmt"
	"log"
	"slices"
	"time"
)

// benchProduce measures the app's transaction alone and with PublishTx, on
// one bus, alternating, o.rounds times each; it reports the medians. Between
// runs it waits for the relay to catch up, so that a run never pays for the
// relaying of the one before; during a run with PublishTx the relay works
// beside the writers, as it would in the application.
func benchProduce(ctx context.Context, dir string, w *workload, rep *report) error {
	o := w.o
	e, err := openEnv(ctx, dir, o)
	if err != nil {
		return err
	}
	defer e.close()
	// Warm up: connections, prepared statements, the relay's first batches.
	if _, err := w.write(ctx, e.bus, writeSpec{n: 2000, publish: true, firstIdx: 1 << 40}); err != nil {
		return err
	}
	if err := e.waitRelayed(ctx, time.Minute); err != nil {
		return err
	}
	var bare, withPub []float64
	var lagAfter []int64
	idx := 0
	for round := range o.rounds {
		for _, publish := range []bool{false, true} {
			res, err := w.write(ctx, e.bus, writeSpec{n: o.events, publish: publish, firstIdx: idx})
			if err != nil {
				return err
			}
			idx += o.events
			rate := float64(o.events) / res.elapsed.Seconds()
			what := "bare app tx"
			if publish {
				what = "app tx + PublishTx"
				withPub = append(withPub, rate)
				st, err := e.bus.Stats(ctx)
				if err != nil {
					return err
				}
				lagAfter = append(lagAfter, st.OutboxLag)
				log.Printf("produce round %d: %-20s %8.0f tx/s (relay %d events behind at the end)", round+1, what, rate, st.OutboxLag)
				if err := e.waitRelayed(ctx, time.Minute); err != nil {
					return err
				}
			} else {
				bare = append(bare, rate)
				log.Printf("produce round %d: %-20s %8.0f tx/s", round+1, what, rate)
			}
		}
	}
	b, p := median(bare), median(withPub)
	rep.bareTx = b
	rep.add(row{
		stage:    "produce",
		what:     "bare app tx (1 row)",
		value:    fmt.Sprintf("%s tx/s", num(b)),
		detail:   fmt.Sprintf("median of %d runs of %s tx, %d writers, Bus.Tx", o.rounds, num(float64(o.events)), o.writers),
		baseline: "",
	})
	ratio := b / p
	rep.add(row{
		stage:    "produce",
		what:     "app tx + PublishTx",
		value:    fmt.Sprintf("%s tx/s", num(p)),
		detail:   fmt.Sprintf("relay running beside; max lag at run end %s events", num(float64(slices.Max(lagAfter)))),
		baseline: fmt.Sprintf("cost ratio %.2f×", ratio),
		target:   "≤ 1.3×",
		met:      ratio <= 1.3,
		hasTgt:   true,
	})
	return nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
