// Command bench measures Boxcar on this machine, each stage beside the bare
// baseline it has to be compared with, in one run and with the same writers
// and payloads:
//
//   - produce: the app's transaction (one row) alone, and the same
//     transaction plus PublishTx: the produce-cost ratio;
//   - relay: draining a backlog of outbox rows into JetStream, and a raw
//     async publish of the same messages into an embedded server;
//   - end to end: sustained throughput from the app's commit to the commit of
//     a transactional subscriber (TxHandler);
//   - latency: commit → handled at fixed offered loads, from an HDR histogram;
//   - write wait: how long the app's writes (Bus.Tx, and its own
//     transactions) wait for SQLite's writer while a slow transactional
//     subscriber works through a backlog, with the default
//     SubscribeOptions.MaxBatchTime and with unbounded batches;
//   - defaults: what the safer defaults cost: end to end, Bus.Tx +
//     PublishTx and latency with Boxcar's write connection at
//     synchronous=NORMAL (the old behaviour) and FULL (the default);
//   - schema: what validation at publish costs: Bus.Tx + PublishTx with the
//     same JSON payloads without and with a schema.Registry as
//     Config.Schemas, and ValidateEvent alone;
//   - load: process CPU per event flat out and at offered rates, and the CPU
//     of an idle bus;
//   - floor: what the fixed parts cost alone, beside the load stage: the
//     embedded server with one publisher and one consumer (CPU per event,
//     latency, idle CPU), the outbox and a transactional consumer on one
//     SQLite database with no broker (flat out against the bare app
//     transaction, CPU per event), and the disk's fsync tail (floor.go);
//   - fanout: the same events handled by 1 to 16 transactional subscribers:
//     total handled events/s beside one subscriber's;
//   - scale: 1,000,000 distinct keys end to end, and a 5,000,000-event
//     backlog drained by the relay and a subscriber beside a 100,000-event
//     one, with the heap and the resident set (minutes and ~5 GB of
//     $TMPDIR at the default sizes; -scale-keys 20000 -scale-backlog 50000
//     for a smoke run).
//
// Everything is real: SQLite files in a temporary directory, the embedded
// nats-server, the bus as an application would open it.
//
//	go run ./bench                 # the default run, a few minutes on 2 cores
//	go run ./bench -out bench/out  # also writes results.md and latency.png
//	go run ./bench -topology leaf  # or cluster: across a 3-node hub (topology.go)
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// options are the command's flags.
type options struct {
	events      int    // events of the produce and end-to-end runs
	backlog     int    // outbox rows the relay drains
	keys        int    // distinct event keys
	payload     int    // bytes of payload per event (and per app row)
	subscribers int    // transactional subscribers, each handles every event
	workers     int    // SubscribeOptions.Workers
	writers     int    // goroutines running app transactions
	sync        string // SQLite synchronous mode
	busSync     string // Config.Synchronous of the buses of the main stages ("" = Boxcar's default)
	rounds      int    // rounds of the produce and end-to-end runs (medians reported)
	loads       string // offered loads, % of the measured maximum
	fixedRate   int    // an extra offered load, events/s
	levelDur    time.Duration
	out         string
	only        string
	cpuProfile  string
	loadTrace   string
	memProfile  string
	keep        bool
	verbose     bool

	handlerMS      string        // write wait: handler durations, ms
	writeRate      int           // write wait: app writes/s of each kind
	unboundedBatch time.Duration // write wait: MaxBatchTime of the comparison runs (0: none)
	maxBatch       time.Duration // SubscribeOptions.MaxBatchTime of the end-to-end, latency and load subscribers (0: Boxcar's default)
	wwBacklog      int           // write wait: events in the stream for the subscribers
	defaultsEvents int           // defaults: events per produce and end-to-end run
	schemaEvents   int           // schema: transactions per run, for each setting
	loadRates      string        // load: offered rates of the CPU runs
	idle           time.Duration // load: how long the idle bus is watched
	topology       string        // "leaf" or "cluster": run only the topology stage (topology.go)
	topoDur        time.Duration // topology: writing time per row
	topoProducers  int           // topology: rows from 1 to this many producers
	topoRate       int           // topology: offered events/s of the latency round (0: none)
	fanout         string        // fanout: subscriber counts
	scaleKeys      int           // scale: distinct keys, one event each
	scaleBacklog   int           // scale: events in the big outbox
	scaleSmall     int           // scale: events in the small outbox
	scaleLinger    time.Duration // scale: idle time after the distinct keys, before memory is read again
	scaleDupWindow time.Duration // scale: Config.DuplicateWindow (0: Boxcar's default)
	scaleHeapProf  string        // scale: prefix of in-use heap profiles ("": none)
}

// logger is Boxcar's logger: warnings to stderr with -v, else nothing.
func (o *options) logger() *slog.Logger {
	if !o.verbose {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func main() {
	var o options
	flag.IntVar(&o.events, "events", 100_000, "events per produce run and for the end-to-end run")
	flag.IntVar(&o.backlog, "backlog", 200_000, "outbox rows in the relay's backlog")
	flag.IntVar(&o.keys, "keys", 10_000, "distinct event keys")
	flag.IntVar(&o.payload, "payload", 200, "payload bytes per event (the app row carries the same)")
	flag.IntVar(&o.subscribers, "subscribers", 1, "transactional subscribers (each handles every event)")
	flag.IntVar(&o.workers, "workers", 8, "workers per subscriber (SubscribeOptions.Workers)")
	flag.IntVar(&o.writers, "writers", 4, "goroutines running app transactions through Bus.Tx")
	flag.StringVar(&o.sync, "sync", sqlite.SyncNormal, "SQLite synchronous mode of the app's connections: NORMAL or FULL")
	flag.StringVar(&o.busSync, "bus-sync", "", "Config.Synchronous of the bus in the produce, end-to-end, latency and write-wait stages: NORMAL or FULL (default: Boxcar's default, "+boxcar.DefaultSynchronous+")")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds of the produce runs (bare, Bus.Tx and with PublishTx in turn) and of the flat-out end-to-end run; medians are reported")
	flag.StringVar(&o.loads, "loads", "25,50,75", "offered loads for the latency runs, in % of the measured end-to-end maximum")
	flag.IntVar(&o.fixedRate, "rate", 3000, "one more offered load for the latency runs, events/s (0: none)")
	flag.DurationVar(&o.levelDur, "level-duration", 5*time.Second, "how long each offered load runs")
	flag.StringVar(&o.handlerMS, "handler-ms", "0,1,5,20", "write wait: per-event handler durations (a sleep after the handler's write), ms, comma-separated")
	flag.IntVar(&o.writeRate, "write-rate", 50, "write wait: app writes per second of each kind (Bus.Tx, own db.BeginTx), each run lasting -level-duration")
	flag.DurationVar(&o.maxBatch, "max-batch-time", 0, "SubscribeOptions.MaxBatchTime of the subscribers of the end-to-end, latency and load stages (0: Boxcar's default, "+boxcar.DefaultMaxBatchTime.String()+")")
	flag.DurationVar(&o.unboundedBatch, "unbounded-batch", time.Hour, "write wait: SubscribeOptions.MaxBatchTime of the comparison runs, approximating the old unbounded batches (0: defaults only)")
	flag.IntVar(&o.wwBacklog, "ww-backlog", 0, "write wait: events in the stream before the subscribers start, each at the first (0: 60,000 per second of -level-duration, plus 60,000)")
	flag.IntVar(&o.defaultsEvents, "defaults-events", 20_000, "defaults: events per produce and end-to-end run, for each synchronous mode")
	flag.IntVar(&o.schemaEvents, "schema-events", 20_000, "schema: Bus.Tx + PublishTx transactions per run, without and with a schema")
	flag.StringVar(&o.loadRates, "load-rates", "300,3000,10000", "load: offered rates for the CPU-per-event runs, events/s, comma-separated")
	flag.DurationVar(&o.idle, "idle", 60*time.Second, "load: how long the idle bus is watched (0: not)")
	flag.StringVar(&o.fanout, "fanout", "1,2,4,8,16", "fanout: transactional subscribers of the same events, one flat-out run of -events for each count, comma-separated (1 is always run: the baseline)")
	flag.IntVar(&o.scaleKeys, "scale-keys", 1_000_000, "scale: events end to end, each of a key of its own")
	flag.IntVar(&o.scaleBacklog, "scale-backlog", 5_000_000, "scale: events in the big outbox, drained by the relay and then by a subscriber (~1 KB of disk each)")
	flag.IntVar(&o.scaleSmall, "scale-small", 0, "scale: events in the small outbox the big one's drains are compared with (0: 100,000, or a fifth of -scale-backlog if that is less)")
	flag.DurationVar(&o.scaleLinger, "scale-linger", 2*time.Minute+10*time.Second, "scale: how long the bus idles after the distinct keys' run before its memory is read again: past the stream's duplicate window and the server's per-block subject state (2 minutes), what stays is what grows with the keys (0: not)")
	flag.DurationVar(&o.scaleDupWindow, "scale-dup-window", 0, "scale: Config.DuplicateWindow of the stage's buses (0: Boxcar's default, "+boxcar.DefaultDuplicateWindow.String()+"; the event stream keeps at most "+boxcar.EventStreamDuplicateWindow.String()+")")
	flag.StringVar(&o.scaleHeapProf, "scale-heapprofile", "", "scale: write in-use heap profiles (after a GC) at the end of each run, to files with this prefix")
	flag.StringVar(&o.out, "out", "", "directory for results.md and latency.png (none if empty)")
	flag.StringVar(&o.only, "only", "", "run only these stages, comma-separated: produce,relay,e2e,writewait,defaults,schema,load,floor,fanout,scale (latency needs e2e)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file")
	flag.StringVar(&o.loadTrace, "load-trace", "", "load: write a runtime execution trace of the bus's first paced run (the first of -load-rates) to this file")
	flag.StringVar(&o.memProfile, "memprofile", "", "write an allocation profile of the run to this file")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory")
	flag.BoolVar(&o.verbose, "v", false, "log Boxcar's warnings to stderr")
	flag.StringVar(&o.topology, "topology", "", "run only the topology stage: leaf (leaves of a 3-node hub) or cluster (instances on a 3-node cluster, R3), beside the single binary")
	flag.DurationVar(&o.topoDur, "topo-duration", 5*time.Second, "topology: how long the producers write in each row")
	flag.IntVar(&o.topoProducers, "topo-producers", 3, "topology: rows with 1 to this many producer instances")
	flag.IntVar(&o.topoRate, "topo-rate", 1000, "topology: offered events/s (over all producers) of each row's latency round")
	flag.Parse()
	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	log.SetFlags(0)
	log.SetPrefix("bench: ")
	if err := run(o); err != nil {
		log.Fatal(err)
	}
}

func (o *options) validate() error {
	o.sync, o.busSync = strings.ToUpper(o.sync), strings.ToUpper(o.busSync)
	for _, c := range []struct {
		flag      string
		v, lo, hi int // hi 0: no upper bound
	}{
		{"-events", o.events, 1000, 0}, {"-backlog", o.backlog, 1000, 0}, {"-keys", o.keys, 1, 0},
		{"-payload", o.payload, 16, 512 << 10}, {"-subscribers", o.subscribers, 1, 16},
		{"-workers", o.workers, 1, 1024}, {"-writers", o.writers, 1, 256}, {"-rounds", o.rounds, 1, 0},
		{"-write-rate", o.writeRate, 1, 10_000},
		{"-defaults-events", o.defaultsEvents, 1000, 0},
		{"-schema-events", o.schemaEvents, 1000, 0},
		{"-scale-keys", o.scaleKeys, 1000, 0}, {"-scale-backlog", o.scaleBacklog, 5000, 0},
	} {
		switch {
		case c.v < c.lo && c.hi == 0:
			return fmt.Errorf("%s %d: use at least %d", c.flag, c.v, c.lo)
		case c.v < c.lo || c.hi > 0 && c.v > c.hi:
			return fmt.Errorf("%s %d: use %d to %d", c.flag, c.v, c.lo, c.hi)
		}
	}
	switch {
	case o.topology != "" && o.topology != "leaf" && o.topology != "cluster":
		return fmt.Errorf("-topology %q: use leaf or cluster", o.topology)
	case o.topoProducers < 1 || o.topoProducers > 8:
		return fmt.Errorf("-topo-producers %d: use 1 to 8", o.topoProducers)
	case o.topoRate < 0:
		return fmt.Errorf("-topo-rate %d: use 0 (no latency round) or more", o.topoRate)
	case o.topoDur < time.Second:
		return fmt.Errorf("-topo-duration %v: use at least 1s", o.topoDur)
	case o.sync != sqlite.SyncNormal && o.sync != sqlite.SyncFull:
		return fmt.Errorf("-sync %q: use NORMAL or FULL", o.sync)
	case o.busSync != "" && o.busSync != sqlite.SyncNormal && o.busSync != sqlite.SyncFull:
		return fmt.Errorf("-bus-sync %q: use NORMAL or FULL (or leave it out for Boxcar's default)", o.busSync)
	case o.levelDur < time.Second:
		return fmt.Errorf("-level-duration %v: use at least 1s", o.levelDur)
	case o.unboundedBatch < 0:
		return fmt.Errorf("-unbounded-batch %v: use 0 (none) or a duration", o.unboundedBatch)
	case o.scaleLinger < 0 || o.scaleDupWindow < 0:
		return fmt.Errorf("-scale-linger %v, -scale-dup-window %v: use 0 or a positive duration", o.scaleLinger, o.scaleDupWindow)
	case o.wwBacklog != 0 && o.wwBacklog < 1000:
		return fmt.Errorf("-ww-backlog %d: use at least 1000 (0: from -level-duration)", o.wwBacklog)
	}
	if o.scaleSmall == 0 {
		o.scaleSmall = min(100_000, o.scaleBacklog/5)
	}
	if o.scaleSmall < 1000 || o.scaleSmall >= o.scaleBacklog {
		return fmt.Errorf("-scale-small %d: use at least 1000 and less than -scale-backlog (%d)", o.scaleSmall, o.scaleBacklog)
	}
	if o.wwBacklog == 0 {
		// Subscribers with 0 ms handlers handled up to ~50,000 events/s
		// here while the app wrote beside them.
		o.wwBacklog = int(60_000 * (o.levelDur.Seconds() + 1))
	}
	if _, err := o.loadPercents(); err != nil {
		return err
	}
	if _, err := o.handlerDelays(); err != nil {
		return err
	}
	if _, err := o.fanoutCounts(); err != nil {
		return err
	}
	return nil
}

// fanoutCounts are the fanout stage's subscriber counts, in order, 1 first
// (the baseline of the others) whether or not the flag names it.
func (o *options) fanoutCounts() ([]int, error) {
	ns, err := parseList("-fanout", o.fanout, 1, 64, "subscriber counts")
	if err != nil {
		return nil, err
	}
	counts := []int{1}
	for _, n := range ns {
		if !slices.Contains(counts, n) {
			counts = append(counts, n)
		}
	}
	return counts, nil
}

// handlerDelays are the write-wait stage's handler durations.
func (o *options) handlerDelays() ([]time.Duration, error) {
	ns, err := parseList("-handler-ms", o.handlerMS, 0, 1000, "milliseconds")
	ds := make([]time.Duration, len(ns))
	for i, n := range ns {
		ds[i] = time.Duration(n) * time.Millisecond
	}
	return ds, err
}

func (o *options) loadPercents() ([]int, error) {
	return parseList("-loads", o.loads, 1, 100, "percentages")
}

// parseList parses the comma-separated integers of flag name, each from lo
// to hi (in unit, for the error).
func parseList(name, s string, lo, hi int, unit string) ([]int, error) {
	var ns []int
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < lo || n > hi {
			return nil, fmt.Errorf("%s %q: use %s from %d to %d, comma-separated", name, s, unit, lo, hi)
		}
		ns = append(ns, n)
	}
	return ns, nil
}

func (o *options) runs(stage string) bool {
	if o.only == "" {
		return true
	}
	for s := range strings.SplitSeq(o.only, ",") {
		if strings.TrimSpace(s) == stage {
			return true
		}
	}
	return false
}

// settle keeps a stage's tail out of the next stage's measurements: it
// removes the stage's files (unless -keep), flushes the page cache's dirty
// pages to disk (a stage leaves hundreds of megabytes that the kernel
// would otherwise write back during the next one, slowing its fsyncs),
// collects the garbage and waits settleTime. Measured: the end-to-end stage
// made 38-39k events/s alone, 33.5-35k right after the produce stage even
// with the sync, and 39-42k after the sync and a 5 s pause.
func settle(dir string, keep bool) {
	tidy(dir, keep)
	runtime.GC()
	time.Sleep(settleTime)
}

// tidy removes dir (unless keep) and flushes the page cache's dirty pages.
func tidy(dir string, keep bool) {
	if !keep {
		os.RemoveAll(dir)
	}
	syncDisks()
}

const settleTime = 5 * time.Second

func run(o options) error {
	ctx := context.Background()
	tmp, err := os.MkdirTemp("", "boxcar-bench-")
	if err != nil {
		return err
	}
	if o.keep {
		log.Printf("keeping %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	if o.memProfile != "" {
		defer func() {
			f, err := os.Create(o.memProfile)
			if err != nil {
				log.Print(err)
				return
			}
			defer f.Close()
			if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
				log.Print(err)
			}
		}()
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if o.topology != "" {
		return runTopology(o, tmp)
	}
	syncDisks() // the page cache's dirty pages from before (an earlier run) are not this run's to write
	w := newWorkload(o)
	rep := &report{opts: o, start: time.Now(), loadBefore: loadAverage()}
	busSync := o.busSync
	if busSync == "" {
		busSync = boxcar.DefaultSynchronous + " (the default)"
	}
	log.Printf("%d CPUs, %s, SQLite synchronous=%s (Boxcar's writer: %s), %d writers, %d keys, %d-byte payloads",
		runtime.NumCPU(), runtime.Version(), o.sync, busSync, o.writers, o.keys, o.payload)

	stages := []struct {
		name string
		run  func(ctx context.Context, dir string, w *workload, rep *report) error
	}{
		{"produce", benchProduce},
		{"relay", benchRelay},
		{"e2e", benchEndToEnd},
		{"writewait", benchWriteWait},
		{"defaults", benchDefaults},
		{"schema", benchSchema},
		{"load", benchLoad},
		{"floor", benchFloor},
		{"fanout", benchFanout},
		{"scale", benchScale},
	}
	for _, st := range stages {
		if !o.runs(st.name) {
			continue
		}
		dir := filepath.Join(tmp, st.name)
		t0 := time.Now()
		if err := st.run(ctx, dir, w, rep); err != nil {
			return fmt.Errorf("%s: %w", st.name, err)
		}
		log.Printf("stage %s took %v", st.name, time.Since(t0).Round(time.Second))
		settle(dir, o.keep)
	}
	rep.elapsed = time.Since(rep.start)
	rep.loadAfter = loadAverage()
	fmt.Println()
	fmt.Print(rep.text())
	if o.out != "" {
		if err := rep.write(o.out); err != nil {
			return err
		}
		log.Printf("wrote %s and %s", filepath.Join(o.out, "results.md"), filepath.Join(o.out, "latency.png"))
	}
	return nil
}
