package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	rtrace "runtime/trace"
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
// -load-rates, the same for the naive pipeline (naive.go) on a database and
// server of its own after the bus is closed, and the CPU an idle bus uses
// over -idle. No ack observer runs: a run ends when every event is handled,
// polled only after the last write.
func benchLoad(ctx context.Context, dir string, w *workload, rep *report) error {
	o := w.o
	rates, err := parseList("load-rates", o.loadRates, 1, 1_000_000, "events/s")
	if err != nil {
		return err
	}
	p, err := openPipeline(ctx, filepath.Join(dir, "bus"), w, boxcar.Config{})
	if err != nil {
		return err
	}
	base := 0
	traced := o.loadTrace == ""
	// run writes n events at interval through Bus.Tx and waits until the
	// subscriber handled them; it returns the WAL fsyncs per event (each
	// costs the process ~80–150 µs of system time on this VM's disk).
	run := func(n int, interval time.Duration) (float64, error) {
		st0, err := p.bus.Stats(ctx)
		if err != nil {
			return 0, err
		}
		if !traced && interval > 0 {
			traced = true
			stop, err := startTrace(o.loadTrace)
			if err != nil {
				return 0, err
			}
			defer stop()
		}
		if _, _, err := p.runPaced(ctx, base, n, interval); err != nil {
			return 0, err
		}
		base += n
		st1, err := p.bus.Stats(ctx)
		if err != nil {
			return 0, err
		}
		return float64(st1.WALSyncs-st0.WALSyncs) / float64(n), nil
	}
	bus, err := measureLoad(o, rates, run)
	if err != nil {
		p.close()
		return err
	}
	if o.idle > 0 {
		c0 := cpuTime()
		time.Sleep(o.idle)
		idle := cpuTime() - c0
		log.Printf("load: idle for %v: %v CPU", o.idle, idle)
		defer rep.add(row{stage: "load", what: fmt.Sprintf("CPU of an idle bus over %v", o.idle), value: fmt.Sprintf("%.3f s", idle.Seconds()),
			detail: fmt.Sprintf("%.2f%% of one core", 100*idle.Seconds()/o.idle.Seconds())})
	}
	p.close()

	nv, err := openNaive(ctx, filepath.Join(dir, "naive"))
	if err != nil {
		return fmt.Errorf("naive pipeline: %w", err)
	}
	defer nv.close()
	nbase := 0
	nrun := func(n int, interval time.Duration) (float64, error) {
		spec := writeSpec{n: n, interval: interval, firstIdx: nbase, txFn: nv.tx}
		if _, err := w.write(ctx, nil, spec); err != nil {
			return 0, err
		}
		nbase += n
		return 0, nv.waitHandled(int64(nbase), 5*time.Minute)
	}
	naive, err := measureLoad(o, rates, nrun)
	if err != nil {
		return fmt.Errorf("naive pipeline: %w", err)
	}

	rep.add(row{stage: "load", what: "CPU per event, flat out", value: fmt.Sprintf("%.0f µs", us(bus[0].cpu)),
		baseline: fmt.Sprintf("naive pipeline %.0f µs", us(naive[0].cpu)),
		detail: fmt.Sprintf("process CPU (user+sys) / events over %s events at %s events/s (naive: %s/s); 1 TxHandler subscriber; %.2f WAL fsyncs per event",
			num(float64(o.events)), num(bus[0].rate), num(naive[0].rate), bus[0].syncs)})
	for i, rate := range rates {
		b, nv := bus[i+1], naive[i+1]
		ratio := float64(b.cpu) / float64(bus[0].cpu)
		r := row{stage: "load", what: fmt.Sprintf("CPU per event at %s/s", num(float64(rate))), value: fmt.Sprintf("%.0f µs", us(b.cpu)),
			baseline: fmt.Sprintf("%.2f× flat out; naive pipeline %.0f µs", ratio, us(nv.cpu)),
			detail:   fmt.Sprintf("%s events over %v; %.2f WAL fsyncs per event", num(float64(b.n)), o.levelDur, b.syncs)}
		if rate == 3000 {
			r.target, r.met, r.hasTgt = "≤ 2× flat out, below the naive pipeline", ratio <= 2 && b.cpu < nv.cpu, true
		}
		rep.add(r)
	}
	return nil
}

// loadPoint is one run of measureLoad.
type loadPoint struct {
	n     int
	cpu   time.Duration // per event
	rate  float64       // achieved, events/s
	syncs float64       // WAL fsyncs per event
}

// measureLoad warms run up, then runs it flat out (o.events) and at each
// rate for o.levelDur; the first point is flat out.
func measureLoad(o options, rates []int, run func(n int, interval time.Duration) (syncs float64, err error)) ([]loadPoint, error) {
	if _, err := run(5000, 0); err != nil { // warm up
		return nil, err
	}
	var pts []loadPoint
	for i := -1; i < len(rates); i++ {
		n, interval, label := o.events, time.Duration(0), "flat out"
		if i >= 0 {
			n, interval, label = int(float64(rates[i])*o.levelDur.Seconds()), time.Second/time.Duration(rates[i]), fmt.Sprintf("%d/s", rates[i])
		}
		time.Sleep(500 * time.Millisecond) // the previous run's tail
		c0, t0 := cpuTime(), time.Now()
		syncs, err := run(n, interval)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", label, err)
		}
		pt := loadPoint{n: n, cpu: (cpuTime() - c0) / time.Duration(n), rate: float64(n) / time.Since(t0).Seconds(), syncs: syncs}
		log.Printf("load: %-8s %v CPU per event, %.2f WAL fsyncs per event (%.0f events/s)", label, pt.cpu, syncs, pt.rate)
		pts = append(pts, pt)
	}
	return pts, nil
}

// startTrace writes a runtime execution trace to file until stop is called.
func startTrace(file string) (stop func(), err error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	if err := rtrace.Start(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		rtrace.Stop()
		if err := f.Close(); err != nil {
			log.Print(err)
		}
	}, nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
