package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/boxcar-bus/boxcar"
)

// row is one line of the results table.
type row struct {
	stage, what, value, detail string
	baseline                   string // the comparison with the baseline
	target                     string
	met, hasTgt                bool
}

// point is one latency run, for the chart.
type point struct {
	label    string
	offered  float64 // events/s
	achieved float64
	q        quantiles
}

type report struct {
	opts    options
	start   time.Time
	elapsed time.Duration
	bareTx  float64 // the bare app tx rate, the end-to-end baseline

	// loadBefore and loadAfter are the 1-minute load averages: other work on
	// the machine makes the figures noisy.
	loadBefore, loadAfter string
	rows                  []row
	points                []point
}

func (r *report) add(x row) { r.rows = append(r.rows, x) }

// text renders the table as Markdown, which also reads well in a terminal.
func (r *report) text() string {
	var b strings.Builder
	o := r.opts
	busSync := boxcar.DefaultSynchronous + ", the default"
	if o.busSync != "" {
		busSync = "Config.Synchronous=" + o.busSync + " (-bus-sync)"
	}
	fmt.Fprintf(&b, "Boxcar bench: %d CPUs, %s/%s, %s; SQLite synchronous=%s (the app's connections; Boxcar's writer: %s, except where a row says); %d writers; %d keys; %d-byte payloads; %d subscriber(s) × %d workers; run took %v; load average %s before, %s after\n\n",
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), o.sync, busSync, o.writers, o.keys, o.payload,
		o.subscribers, o.workers, r.elapsed.Round(time.Second), r.loadBefore, r.loadAfter)
	b.WriteString("| stage | measure | result | vs baseline | target | met | notes |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, x := range r.rows {
		met := ""
		if x.hasTgt {
			met = "no"
			if x.met {
				met = "yes"
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", x.stage, x.what, x.value, x.baseline, x.target, met, x.detail)
	}
	return b.String()
}

// write puts results.md and latency.png into dir.
func (r *report) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	md := "# Boxcar bench results\n\nCommand: `go run ./bench " + strings.Join(os.Args[1:], " ") + "`\n\n" + r.text()
	if len(r.points) > 0 {
		md += "\n![commit → handled latency against throughput](latency.png)\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	if len(r.points) == 0 {
		return nil
	}
	return writeChart(filepath.Join(dir, "latency.png"), r.points)
}

// num formats n with thousands separators, no decimals.
func num(n float64) string {
	s := fmt.Sprintf("%.0f", n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// ms formats d in milliseconds with sensible precision.
func ms(d time.Duration) string {
	f := float64(d) / float64(time.Millisecond)
	switch {
	case f < 10:
		return fmt.Sprintf("%.2f ms", f)
	case f < 100:
		return fmt.Sprintf("%.1f ms", f)
	default:
		return fmt.Sprintf("%.0f ms", f)
	}
}

// loadAverage returns the 1-minute load average, or "?" where there is no
// /proc/loadavg.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}
