package main

import (
	"context"
	"fmt"
	"time"
)

// Failure mode 2, out-of-order delivery, from a retrying producer. Every
// user changes their email twice. The broker (a process of its own, the same
// kind on both sides) is SIGKILLed before the first change and restarted
// before the second. The naive auth service retries the failed first publish
// in the background, so it lands after the second and billing keeps the old
// address. On Boxcar both changes are outbox rows in commit order; the relay
// stops at the first failed publish and resends from there, in order.
var scenarioReorder = &scenario{
	num:       3,
	name:      "reorder",
	failure:   "out of order: retries",
	naiveWay:  "retry failed publish later",
	boxcarWay: "both changes are outbox rows in commit order",
	wrong:     "billed at an old address",
	fault: func(cfg config) string {
		return fmt.Sprintf("the broker, for %v between 2 changes", cfg.Outage)
	},
	run:   runReorder,
	count: func(o outcome) (int, int) { return o.StaleEmail + o.NotBilled, o.Users },
}

func runReorder(ctx context.Context, r *runner, sc *scenario, side string) (sideResult, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	dir, err := r.sideDir(sc, side)
	if err != nil {
		return sideResult{}, err
	}
	b, err := newBroker(r.exe, side+" broker", dir)
	if err != nil {
		return sideResult{}, err
	}
	r.prog.step(sc, side, "starting the broker")
	if err := b.start(ctx); err != nil {
		return sideResult{}, err
	}
	defer b.stop()

	r.prog.step(sc, side, "signing up")
	p, err := startProc(r.exe, side+" app", childSpec{
		Role: side, Scenario: sc.name, Phase: phaseRun, Dir: dir,
		Users: r.cfg.ReorderUsers, Writers: r.cfg.Writers,
		PauseAt:   map[string]int{"outage": 1, "restore": 1},
		BrokerURL: b.url(),
	}, r.prog.counters)
	if err != nil {
		return sideResult{}, err
	}
	if err := p.await(ctx, "POINT outage"); err != nil {
		return sideResult{}, err
	}
	b.crash()
	r.prog.step(sc, side, "broker SIGKILLed; first email changes")
	if err := p.resume(); err != nil {
		return sideResult{}, err
	}
	if err := p.await(ctx, "POINT restore"); err != nil {
		return sideResult{}, err
	}
	select {
	case <-time.After(r.cfg.Outage):
	case <-ctx.Done():
		return sideResult{}, ctx.Err()
	}
	r.prog.step(sc, side, "restarting the broker")
	if err := b.start(ctx); err != nil {
		return sideResult{}, err
	}
	r.prog.step(sc, side, "broker back; second email changes")
	if err := p.resume(); err != nil {
		return sideResult{}, err
	}
	if err := p.wait(ctx); err != nil {
		return sideResult{}, err
	}
	o, err := check(ctx, dir)
	return sideResult{out: o, stats: p.finalStats(), took: time.Since(start)}, err
}
