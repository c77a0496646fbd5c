package main

import (
	"context"
	"fmt"
	"log"
	"syscall"
	"time"

	"github.com/boxcar-bus/boxcar"
)

// cpuTime is the CPU time (user and system) the process has used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchLoad measures what a bus costs at everyday load: process CPU time per
// event (the whole process: the app's writers, the relay, the embedded
// server, one transactional subscriber) flat out and at the offered rates of
// -load-rates, and the CPU an idle bus uses over -idle. No ack observer
// runs: a run ends when Stats shows every event acked, polled only after
// the last write.
func benchLoad(ctx context.Context, dir string, w *workload, rep *report) error {
	o := w.o
	rates, err := parseList("load-rates", o.loadRates, 1, 1_000_000, "events/s")
	if err != nil {
		return err
	}
	p, err := openPipeline(ctx, dir, w, boxcar.Config{})
	if err != nil {
		return err
	}
	defer p.close()
	base := 0
	if _, _, err := p.runFlatOut(ctx, base, 5000); err != nil { // warm up
		return err
	}
	base += 5000
	measure := func(n int, interval time.Duration) (perEvent time.Duration, took time.Duration, err error) {
		time.Sleep(500 * time.Millisecond) // the previous run's tail
		c0, t0 := cpuTime(), time.Now()
		done, _, err := p.runPaced(ctx, base, n, interval)
		if err != nil {
			return 0, 0, err
		}
		base += n
		return (cpuTime() - c0) / time.Duration(n), done.Sub(t0), nil
	}
	flat, took, err := measure(o.events, 0)
	if err != nil {
		return fmt.Errorf("flat out: %w", err)
	}
	log.Printf("load: flat out %v CPU per event (%.0f events/s)", flat, float64(o.events)/took.Seconds())
	rep.add(row{stage: "load", what: "CPU per event, flat out", value: fmt.Sprintf("%.0f µs", us(flat)),
		detail: fmt.Sprintf("process CPU (user+sys) / events over %s events at %s events/s; 1 TxHandler subscriber", num(float64(o.events)), num(float64(o.events)/took.Seconds()))})
	for _, rate := range rates {
		n := int(float64(rate) * o.levelDur.Seconds())
		per, _, err := measure(n, time.Second/time.Duration(rate))
		if err != nil {
			return fmt.Errorf("%d/s: %w", rate, err)
		}
		ratio := float64(per) / float64(flat)
		log.Printf("load: %d/s %v CPU per event (%.2f× flat out)", rate, per, ratio)
		r := row{stage: "load", what: fmt.Sprintf("CPU per event at %s/s", num(float64(rate))), value: fmt.Sprintf("%.0f µs", us(per)),
			baseline: fmt.Sprintf("%.2f× flat out", ratio), detail: fmt.Sprintf("%s events over %v", num(float64(n)), o.levelDur)}
		if rate == 3000 {
			r.target, r.met, r.hasTgt = "≤ 2× flat out", ratio <= 2, true
		}
		rep.add(r)
	}
	if o.idle > 0 {
		c0 := cpuTime()
		time.Sleep(o.idle)
		idle := cpuTime() - c0
		log.Printf("load: idle for %v: %v CPU", o.idle, idle)
		rep.add(row{stage: "load", what: fmt.Sprintf("CPU of an idle bus over %v", o.idle), value: fmt.Sprintf("%.3f s", idle.Seconds()),
			detail: fmt.Sprintf("%.2f%% of one core", 100*idle.Seconds()/o.idle.Seconds())})
	}
	return nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
