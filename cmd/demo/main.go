// Command demo runs the article's signup story twice, the naive way and on
// Boxcar, and shows each of the article's failure modes happening to the
// first and being contained by the second:
//
//  1. dual write without an outbox loses events at a crash;
//  2. acking before processing loses them at a handler crash;
//  3. a producer that retries failed publishes reorders two email changes;
//  4. a consumer without a dedupe table double-counts after a crash;
//  5. a producer renames a field and a consumer silently stores empty
//     values (schema drift): Boxcar's registry refuses the rename, and an
//     upcaster lifts old events for the new consumer;
//  6. operations: a poison event is dead-lettered; the usual dead-letter
//     queue lets its key move on, and the redrive after the fix applies an
//     old address over a newer one; Boxcar parks the key, the redrive
//     releases it in order, and a replay without dedupe rebuilds billing
//     into a fresh table that matches the live one. The demo is the
//     operator, on the app's admin API, and prints each boxcar command.
//
// An auth service creates users and publishes user.signed_up and
// user.email_changed; an email service sends a welcome email through an
// external provider (a log file, the event ID as idempotency key), analytics
// counts signups, billing keeps a subscription row with the invoice address.
//
// The crashes (1 to 4) are real: the demo re-executes itself as child processes (the
// app, and for the naive side a NATS broker) and SIGKILLs them. A pause point
// in the child decides where the kill lands, so that it hits the window the
// article describes; nothing fakes a result. Counts come from the files the
// processes leave behind. The naive side uses the same libraries (plain
// SQLite, plain NATS JetStream); Boxcar's side uses only its public API.
//
//	go run ./cmd/demo                       # all six, default sizes
//	go run ./cmd/demo -scenario reorder     # one of dual-write, auto-ack, reorder, dedupe, schema-drift, operations
//	go run ./cmd/demo -scenario operations -serve   # and look at the status page
//	go run ./cmd/demo -users 10000 -crash-at 7000
//
// Progress goes to stderr, the table to stdout.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if os.Getenv(envChild) != "" {
		os.Exit(childMain())
	}
	cfg := defaultConfig()
	which := flag.String("scenario", "all", "scenario to run: all, or one of "+scenarioNames())
	flag.IntVar(&cfg.Users, "users", cfg.Users, "signups in the dual-write, auto-ack and dedupe scenarios")
	flag.IntVar(&cfg.CrashAt, "crash-at", cfg.CrashAt, "the signup / handled event after which the crash lands (0: a little past half of -users)")
	flag.IntVar(&cfg.ReorderUsers, "reorder-users", cfg.ReorderUsers, "users who change their email twice in the reorder scenario")
	flag.DurationVar(&cfg.Outage, "outage", cfg.Outage, "how long the broker stays down in the reorder scenario")
	flag.IntVar(&cfg.DriftUsers, "drift-users", cfg.DriftUsers, "signups in the schema-drift act (the rename comes after half of them)")
	flag.IntVar(&cfg.OpsUsers, "ops-users", cfg.OpsUsers, "signups in the operations act (every 10th user's first email change is poison)")
	flag.BoolVar(&cfg.Serve, "serve", false, "print the operations act's status page URL (its app's admin handler on 127.0.0.1) and keep it up at the act's end until Enter")
	flag.IntVar(&cfg.Writers, "writers", cfg.Writers, "concurrent auth requests")
	flag.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "give up on a side after this long")
	keep := flag.Bool("keep", false, "keep the work directory (databases, mail logs, stores) and print its path")
	flag.Parse()

	selected, err := selectScenarios(*which)
	if err == nil {
		err = cfg.validate()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(2)
	}
	// Ctrl-C stops the children and removes the work directory.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, selected, *keep, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		stop()
		os.Exit(1)
	}
}

func defaultConfig() config {
	return config{Users: 2000, ReorderUsers: 200, Outage: time.Second, DriftUsers: 200, OpsUsers: 100, Writers: 4, Timeout: 3 * time.Minute}
}

func (c config) validate() error {
	switch {
	case c.Users < 1:
		return fmt.Errorf("-users %d: need at least 1", c.Users)
	case c.CrashAt < 0:
		return fmt.Errorf("-crash-at %d: use 0 (a little past half of -users) or 1 to -users", c.CrashAt)
	case c.CrashAt > c.Users:
		return fmt.Errorf("-crash-at %d is beyond -users %d: the crash would never happen", c.CrashAt, c.Users)
	case c.ReorderUsers < 1:
		return fmt.Errorf("-reorder-users %d: need at least 1", c.ReorderUsers)
	case c.DriftUsers < 2:
		return fmt.Errorf("-drift-users %d: need at least 2 (the rename comes after half of them)", c.DriftUsers)
	case c.OpsUsers < opsEvery:
		return fmt.Errorf("-ops-users %d: need at least %d (every %dth user's change is poison)", c.OpsUsers, opsEvery, opsEvery)
	case c.Outage < 0:
		return fmt.Errorf("-outage is negative")
	case c.Writers < 1 || c.Writers > 256:
		return fmt.Errorf("-writers %d: use 1 to 256", c.Writers)
	case c.Timeout <= 0:
		return fmt.Errorf("-timeout must be positive")
	}
	return nil
}

func scenarioNames() string {
	names := make([]string, len(scenarios))
	for i, sc := range scenarios {
		names[i] = sc.name
	}
	return strings.Join(names, ", ")
}

func selectScenarios(which string) ([]*scenario, error) {
	if which == "all" {
		return scenarios, nil
	}
	for _, sc := range scenarios {
		if sc.name == which || fmt.Sprint(sc.num) == which {
			return []*scenario{sc}, nil
		}
	}
	return nil, fmt.Errorf("-scenario %q: use all or one of %s", which, scenarioNames())
}

// run runs the scenarios under a new temporary directory and prints the
// table to out.
func run(ctx context.Context, cfg config, selected []*scenario, keep bool, out, errOut io.Writer) error {
	rows, took, dir, err := runScenarios(ctx, cfg, selected, newProgress(errOut))
	if dir != "" {
		if keep {
			fmt.Fprintln(errOut, "work directory kept:", dir)
		} else {
			os.RemoveAll(dir)
		}
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(out)
	printTable(out, rows)
	fmt.Fprintf(out, "%d scenario(s), %.1fs.\n", len(rows), took.Seconds())
	return nil
}

// runScenarios runs each selected scenario's naive side, then its Boxcar
// side, and returns their rows and the work directory.
func runScenarios(ctx context.Context, cfg config, selected []*scenario, prog *progress) (rows []row, took time.Duration, dir string, err error) {
	start := time.Now()
	exe, err := os.Executable()
	if err != nil {
		return nil, 0, "", err
	}
	dir, err = os.MkdirTemp("", "boxcar-demo-")
	if err != nil {
		return nil, 0, "", err
	}
	r := &runner{exe: exe, root: dir, cfg: cfg, prog: prog}
	if cfg.Serve {
		r.hold = holdOnEnter(prog)
	}
	prog.total = len(scenarios)
	defer prog.clear()
	for _, sc := range selected {
		rw := row{sc: sc, fault: sc.fault(cfg)}
		if rw.naive, err = r.runSide(ctx, sc, roleNaive); err != nil {
			return nil, 0, dir, fmt.Errorf("scenario %s, naive side: %w", sc.name, err)
		}
		if rw.boxcar, err = r.runSide(ctx, sc, roleBoxcar); err != nil {
			return nil, 0, dir, fmt.Errorf("scenario %s, Boxcar side: %w", sc.name, err)
		}
		nw, nof := sc.count(rw.naive.out)
		bw, _ := sc.count(rw.boxcar.out)
		prog.note("[%d/%d %s] naive: %d of %d %s; Boxcar: %d", sc.num, len(scenarios), sc.name, nw, nof, sc.wrong, bw)
		rows = append(rows, rw)
	}
	return rows, time.Since(start), dir, nil
}
