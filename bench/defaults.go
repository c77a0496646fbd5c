package main

import (
	"context"
	"fmt"
	"log"
	"path/filepath"
	"strings"
	"time"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// syncSetting is one value of Config.Synchronous in the defaults stage, and
// what it measured.
type syncSetting struct {
	label, mode   string
	e2e, produce  []float64 // events/s and tx/s, one per round
	q             quantiles // commit → handled at the fixed rate
	achieved      float64
	behind        time.Duration
	latencyEvents int
}

// benchDefaults measures what Config.Synchronous costs, both settings in
// one run: sqlite.SyncNormal, the default (Bus.Tx returns at the commit; the
// relay publishes and subscribers ack only after a shared fsync of the WAL
// covers the commit), and sqlite.SyncFull (Bus.Tx waits for that fsync
// too). The behaviour before issue 6 (nothing waited for an fsync) is no
// longer a mode: compare with a run of the old commit (bench/RESULTS.md).
// Each round measures both, in an order that
// alternates from round to round (so that drift hits both), each on a fresh
// bus and database:
//   - the produce rate of Bus.Tx + PublishTx, flat out, as the produce stage
//     measures it (the relay running beside);
//   - the flat-out end-to-end rate, commit → handled by a TxHandler, as the
//     end-to-end stage measures it;
//   - in the last round, commit → handled at o.fixedRate events/s.
//
// The app's own connections keep -sync: only Boxcar's writer changes.
func benchDefaults(ctx context.Context, dir string, w *workload, rep *report) error {
	o := w.o
	n := o.defaultsEvents
	settings := []*syncSetting{
		{label: "SyncNormal (default)", mode: sqlite.SyncNormal},
		{label: "SyncFull (Tx waits)", mode: sqlite.SyncFull},
	}
	for round := range o.rounds {
		order := settings
		if round%2 == 1 {
			order = []*syncSetting{settings[1], settings[0]}
		}
		for _, s := range order {
			cfg := boxcar.Config{Synchronous: s.mode}
			sub := filepath.Join(dir, fmt.Sprintf("%s%d", strings.ToLower(s.mode), round+1))
			produced, err := produceRate(ctx, filepath.Join(sub, "produce"), w, cfg, n)
			if err != nil {
				return fmt.Errorf("%s, produce: %w", s.label, err)
			}
			tidy(filepath.Join(sub, "produce"), o.keep)
			handled, err := s.endToEnd(ctx, filepath.Join(sub, "e2e"), w, cfg, n, round == o.rounds-1)
			if err != nil {
				return fmt.Errorf("%s, end to end: %w", s.label, err)
			}
			tidy(sub, o.keep)
			s.produce, s.e2e = append(s.produce, produced), append(s.e2e, handled)
			log.Printf("defaults round %d: %-26s Bus.Tx + PublishTx %8.0f tx/s, end to end %8.0f events/s", round+1, s.label, produced, handled)
			time.Sleep(500 * time.Millisecond)
		}
	}
	normal, full := settings[0], settings[1] // the default, and the one measured against it
	vsOld := func(s *syncSetting, f func(*syncSetting) float64) string {
		if s == normal {
			return ""
		}
		return fmt.Sprintf("%.2f× NORMAL", f(s)/f(normal))
	}
	e2eOf := func(s *syncSetting) float64 { return median(s.e2e) }
	produceOf := func(s *syncSetting) float64 { return median(s.produce) }
	for _, m := range []struct {
		what, noun, how string
		rates           func(*syncSetting) []float64
	}{
		{"end to end flat out", "events", fmt.Sprintf("commit → handled by a TxHandler, %d subscriber(s) × %d workers", o.subscribers, o.workers),
			func(s *syncSetting) []float64 { return s.e2e }},
		{"Bus.Tx + PublishTx", "tx", fmt.Sprintf("%d writers, flat out, relay beside, no subscriber", o.writers),
			func(s *syncSetting) []float64 { return s.produce }},
	} {
		for _, s := range settings {
			rates := m.rates(s)
			rep.add(row{
				stage:    "defaults",
				what:     m.what + ", " + s.label,
				value:    fmt.Sprintf("%s %s/s", num(median(rates)), m.noun),
				baseline: vsOld(s, func(s *syncSetting) float64 { return median(m.rates(s)) }),
				detail: fmt.Sprintf("median of %d runs of %s %s (%s %s/s), %s; a fresh bus each run, the two settings alternating",
					o.rounds, num(float64(n)), m.noun, joinNums(rates), m.noun, m.how),
			})
		}
	}
	ratio := fmt.Sprintf("end to end %.2f× · Bus.Tx + PublishTx %.2f×", e2eOf(full)/e2eOf(normal), produceOf(full)/produceOf(normal))
	if o.fixedRate > 0 {
		p99 := func(s *syncSetting) float64 { return float64(s.q.p99) }
		for _, s := range settings {
			vs := ""
			if s != normal {
				vs = "p99 " + vsOld(s, p99)
			}
			rep.add(row{
				stage:    "defaults",
				what:     fmt.Sprintf("latency at %s/s, %s", num(float64(o.fixedRate)), s.label),
				value:    fmt.Sprintf("p50 %s · p99 %s · p99.9 %s", ms(s.q.p50), ms(s.q.p99), ms(s.q.p999)),
				baseline: vs,
				detail: fmt.Sprintf("commit → handled, as the latency stage measures it, on the last round's bus; achieved %s/s; max %s; %s events; writers up to %s behind schedule",
					num(s.achieved), ms(s.q.max), num(float64(s.latencyEvents)), ms(s.behind)),
			})
		}
		ratio += fmt.Sprintf(" · latency p50 %.2f×, p99 %.2f×", float64(full.q.p50)/float64(normal.q.p50), p99(full)/p99(normal))
	}
	rep.add(row{
		stage:  "defaults",
		what:   "FULL / NORMAL",
		value:  ratio,
		detail: "SyncFull over the default: rates below 1× and latencies above 1× are what making Bus.Tx wait for the WAL fsync costs",
	})
	return nil
}

// produceRate opens a bus with cfg in dir and returns the rate of Bus.Tx +
// PublishTx, n transactions flat out, after a warm-up.
func produceRate(ctx context.Context, dir string, w *workload, cfg boxcar.Config, n int) (float64, error) {
	e, err := openEnv(ctx, dir, w.o, cfg)
	if err != nil {
		return 0, err
	}
	defer e.close()
	if err := e.warmUp(ctx, w); err != nil {
		return 0, err
	}
	res, err := w.write(ctx, e.bus, writeSpec{n: n, publish: true})
	if err != nil {
		return 0, err
	}
	return float64(n) / res.elapsed.Seconds(), nil
}

// endToEnd opens a pipeline with cfg in dir and returns its flat-out rate
// for n events, after a warm-up; with latency it then measures commit →
// handled at o.fixedRate into s.
func (s *syncSetting) endToEnd(ctx context.Context, dir string, w *workload, cfg boxcar.Config, n int, latency bool) (float64, error) {
	p, err := openPipeline(ctx, dir, w, cfg)
	if err != nil {
		return 0, err
	}
	defer p.close()
	if _, _, err := p.runFlatOut(ctx, 0, 5000); err != nil {
		return 0, err
	}
	start := time.Now()
	done, _, err := p.runFlatOut(ctx, 5000, n)
	if err != nil {
		return 0, err
	}
	rate := float64(n) / done.Sub(start).Seconds()
	if !latency || w.o.fixedRate <= 0 {
		return rate, nil
	}
	time.Sleep(500 * time.Millisecond)
	if err := p.observeAcks(); err != nil {
		return 0, err
	}
	s.latencyEvents = int(float64(w.o.fixedRate) * w.o.levelDur.Seconds())
	interval := time.Duration(float64(time.Second) / float64(w.o.fixedRate))
	t, wres, err := p.runLoad(ctx, 5000+n, s.latencyEvents, interval)
	if err != nil {
		return 0, err
	}
	s.q, s.behind = t.lat.quantiles(), wres.behind
	s.achieved = float64(s.latencyEvents) / wres.elapsed.Seconds()
	log.Printf("defaults: latency at %d/s, %s: p50 %v p99 %v p99.9 %v max %v (writers up to %v late)",
		w.o.fixedRate, s.label, s.q.p50, s.q.p99, s.q.p999, s.q.max, s.behind.Round(time.Millisecond))
	return rate, nil
}
