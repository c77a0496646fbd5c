// Command torture proves Boxcar's guarantees under real crashes.
//
// The parent process runs the application as a child process (itself,
// re-executed): writers commit app rows and events over many keys, some
// transactions are rolled back on purpose, a transactional subscriber and a
// plain (at-least-once) subscriber record in SQLite every event they handle.
// The parent kills the child with SIGKILL at random instants and, through
// Config.Probe (a probe set only in the child), at targeted points: after an
// outbox commit before the relay wakes, after a publish ack before the cursor
// is saved, in the middle of a pipelined batch, after a handler commit before
// the ack, while a key waits to retry. It restarts the child again and again.
// At the end a last child drains the bus without faults, and the parent checks
// the databases and the stream:
//
//   - every committed event is applied exactly once by the transactional
//     subscriber and at least once by the plain one, and is in the stream;
//   - nothing of a rolled-back transaction is anywhere;
//   - per key, both subscribers handled events in commit order (each event
//     carries its key's counter, written in the same transaction);
//   - the stream holds each event once, in outbox order.
//
// The last line is the figure:
//
//	kills=N events=M lost=0 duplicates=0 order_violations=0 stream_duplicates=0 rolled_back_leaked=0
//
// and the exit status is non-zero when any count but N and M is not zero (or
// the run could not complete). Run it with -h for the flags.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	if os.Getenv(envChild) != "" {
		os.Exit(childMain())
	}
	cfg := defaultParentConfig()
	flag.IntVar(&cfg.Kills, "kills", cfg.Kills, "kill the child at least this many times")
	flag.IntVar(&cfg.Events, "events", cfg.Events, "commit at least this many events (rolled-back ones not counted)")
	flag.IntVar(&cfg.Keys, "keys", cfg.Keys, "number of event keys")
	flag.IntVar(&cfg.Writers, "writers", cfg.Writers, "writer goroutines in the child")
	flag.DurationVar(&cfg.MinLife, "min-life", cfg.MinLife, "shortest child life before a random kill")
	flag.DurationVar(&cfg.MaxLife, "max-life", cfg.MaxLife, "longest child life before a random kill")
	flag.Float64Var(&cfg.Targeted, "targeted", cfg.Targeted, "fraction of child lives that arm a fault point (kill at a named point)")
	flag.Float64Var(&cfg.RollbackRate, "rollback", cfg.RollbackRate, "fraction of writer transactions rolled back on purpose")
	flag.Float64Var(&cfg.FailRate, "fail", cfg.FailRate, "fraction of events whose handlers fail their first attempt (keys retry)")
	flag.Int64Var(&cfg.Seed, "seed", cfg.Seed, "random seed (0: from the clock)")
	flag.StringVar(&cfg.Dir, "dir", "", "work directory (default: a new temporary directory, removed after a passing run)")
	flag.BoolVar(&cfg.Keep, "keep", false, "keep the work directory after a passing run")
	flag.DurationVar(&cfg.DrainTimeout, "drain-timeout", cfg.DrainTimeout, "how long the final drain may take")
	flag.DurationVar(&cfg.AckWait, "ack-wait", 0, "subscribers' AckWait (0: Boxcar's default, 30s; 1s makes JetStream redeliver messages still held)")
	flag.Float64Var(&cfg.LoseWrites, "lose-writes", 0, "probability, after a kill, of restoring the JetStream store from an older copy (lost acked writes)")
	flag.IntVar(&cfg.SnapshotEvery, "snapshot-every", 10, "with -lose-writes: copy the store every so many lives")
	flag.DurationVar(&cfg.PruneDelay, "prune-delay", 0, "Config.PruneDelay (0: Boxcar's default; small values prune relayed outbox rows at once)")
	flag.IntVar(&cfg.Instances, "instances", 0, "multi-process mode: run this many instances (>= 2) as leaves of a 3-node hub on loopback, killing them one by one")
	flag.Float64Var(&cfg.HubAway, "hub-away", 0.05, "multi-process mode: probability, per kill, of taking the whole hub away for 0.5-3s instead")
	flag.Parse()
	if cfg.Seed == 0 {
		cfg.Seed = time.Now().UnixNano()
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "torture:", err)
		os.Exit(2)
	}
	cfg.Exe = exe
	cfg.Out = os.Stdout
	res, err := runParent(context.Background(), cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "torture:", err)
	}
	fmt.Println(res.Line())
	if err != nil || !res.OK() {
		os.Exit(1)
	}
}
