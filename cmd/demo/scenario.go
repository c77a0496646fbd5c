package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// A scenario is one failure mode of the article, run twice: the naive way
// and on Boxcar, with the same fault, each side in its own directory and
// processes. Its count is taken from the side's files by check, after the
// side's last process exited.
type scenario struct {
	num  int
	name string // the -scenario flag's value
	// failure is the article's failure mode; naiveWay the habit that causes
	// it; boxcarWay what contains it.
	failure, naiveWay, boxcarWay string
	// wrong says what the count counts ("signups never emailed").
	wrong string
	// fault describes the injected fault for the table.
	fault func(cfg config) string
	// point is where the crash scenarios' app is SIGKILLed (see
	// crashAndRecover); run, if set, runs a side instead.
	point string
	run   func(ctx context.Context, r *runner, sc *scenario, side string) (sideResult, error)
	// count is the scenario's count of wrong results, and of how many.
	count func(o outcome) (wrong, of int)
}

// scenarios in the order they run and print.
var scenarios = []*scenario{scenarioDualWrite, scenarioAutoAck, scenarioReorder, scenarioDedupe, scenarioSchemaDrift, scenarioOps}

// config holds the sizes the flags choose.
type config struct {
	Users        int           // signups in the crash scenarios
	CrashAt      int           // which signup / handled event the crash lands after
	ReorderUsers int           // users who change their email twice in the reorder scenario
	Outage       time.Duration // how long the broker stays down in the reorder scenario
	DriftUsers   int           // signups in the schema-drift act, half of them after the rename
	OpsUsers     int           // signups in the operations act (every opsEvery-th one's change is poison)
	Serve        bool          // the operations act's status page stays up until Enter
	Writers      int           // concurrent auth requests
	Timeout      time.Duration // per side
}

func (c config) crashAt() int {
	if c.CrashAt > 0 {
		return min(c.CrashAt, c.Users)
	}
	// A little past half: in the middle of a consumer's fetch of 100.
	return max(c.Users/2+c.Users/40, 1)
}

// runner runs scenarios under one work directory.
type runner struct {
	exe  string
	root string
	cfg  config
	prog *progress
	// hold, with cfg.Serve, is called with the status page's URL at the end
	// of the operations act, while its app still serves it.
	hold func(url string)
}

// sideResult is one side's run of a scenario.
type sideResult struct {
	out   outcome
	stats map[string]int64 // the last process's STATS
	took  time.Duration
	// notes are lines to print under the table about this side (what the
	// schema-drift act's checker said).
	notes []string
}

func (r *runner) sideDir(sc *scenario, side string) (string, error) {
	dir := filepath.Join(r.root, sc.name, side)
	return dir, os.MkdirAll(dir, 0o755)
}

// crashAndRecover is the shape of scenarios 1, 2 and 4: run the app until
// it pauses at point for the at-th time, SIGKILL it there, start it again
// to handle what is left, then check its files. The naive side's broker is
// a process of its own that lives through the app's crash.
func (r *runner) crashAndRecover(ctx context.Context, sc *scenario, side string) (sideResult, error) {
	point := sc.point
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	dir, err := r.sideDir(sc, side)
	if err != nil {
		return sideResult{}, err
	}
	at := r.cfg.crashAt()
	spec := childSpec{
		Role: side, Scenario: sc.name, Phase: phaseRun, Dir: dir,
		Users: r.cfg.Users, Writers: r.cfg.Writers, PauseAt: map[string]int{point: at},
	}
	if side == roleNaive {
		b, err := newBroker(r.exe, "naive broker", dir)
		if err != nil {
			return sideResult{}, err
		}
		r.prog.step(sc, side, "starting the broker")
		if err := b.start(ctx); err != nil {
			return sideResult{}, err
		}
		defer b.stop()
		spec.BrokerURL = b.url()
	}

	r.prog.step(sc, side, "running")
	p, err := startProc(r.exe, side+" app", spec, r.prog.counters)
	if err != nil {
		return sideResult{}, err
	}
	if err := p.await(ctx, "POINT "+point); err != nil {
		return sideResult{}, err
	}
	p.kill()
	r.prog.step(sc, side, fmt.Sprintf("SIGKILLed at %s #%d; restarted, catching up", point, at))

	spec.Phase, spec.PauseAt = phaseRecover, nil
	p, err = startProc(r.exe, side+" app (restarted)", spec, r.prog.counters)
	if err != nil {
		return sideResult{}, err
	}
	if err := p.wait(ctx); err != nil {
		return sideResult{}, err
	}
	o, err := check(ctx, dir)
	return sideResult{out: o, stats: p.finalStats(), took: time.Since(start)}, err
}

// runSide runs one side of sc.
func (r *runner) runSide(ctx context.Context, sc *scenario, side string) (sideResult, error) {
	if sc.run != nil {
		return sc.run(ctx, r, sc, side)
	}
	return r.crashAndRecover(ctx, sc, side)
}
