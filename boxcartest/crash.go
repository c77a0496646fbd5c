// Package boxcartest crash-tests an application's own handlers on Boxcar:
// the torture of cmd/torture, run on the app's code instead of Boxcar's test
// workload.
//
// Crash runs the app's subscribers in a child process (the test binary,
// re-executed to run the same test), feeds it a workload through the app's
// own publish code, SIGKILLs it at random instants and at the instants of
// the data path where a crash is hardest to survive (boxcar.Probe: after an
// outbox commit, in the middle of a relay batch, after the stream's ack,
// after a handler commit, while a key waits to retry), restarts it again and
// again, lets a last child drain the bus, and then checks:
//
//   - Boxcar's promises, on the app's handlers: every committed event was
//     handled by each TxHandler subscriber exactly once (its committed run:
//     the kit records it in the handler's transaction) and by each HandlerFunc
//     subscriber at least once; for each subscriber, each key's events were
//     first handled in commit order; nothing of a rolled-back transaction
//     reached a handler; nothing was dead-lettered;
//   - the app's own invariant (Config.Check), over its database: "every
//     order has exactly one invoice", "each subscription has its user's
//     latest email".
//
// It reports the figure as the torture does:
//
//	kills=20 items=5000 events=5000 lost=0 duplicates=0 order_violations=0 leaked=0 dead_letters=0 check=ok
//
// # What it proves, and what it cannot
//
// A passing run shows that, for this workload and these kills, the app's
// handlers and publish code keep the app's invariant across crashes at the
// instants that matter, retries (the kit fails 1% of first attempts after
// the handler ran, so its writes must roll back) and rolled-back producer
// transactions (the kit runs 2% of the items once in a transaction it rolls
// back). It catches handler state kept outside the transaction (a counter in
// memory, a cache that outlives a rolled-back attempt), effects written
// through another connection or transaction, handlers that depend on an
// order Boxcar does not promise (across keys), and invariants that only hold
// without duplicates.
//
// It cannot see effects outside the database: an email sent, an HTTP call, a
// file written. Those are at-least-once (a HandlerFunc's effect is repeated
// after a crash between the effect and the ack); the kit checks that such a
// subscriber was called at least once, not that the external system
// deduplicated on Message.ID. It kills processes, which the OS survives: a
// power loss, which can also take back what SQLite or JetStream had not
// fsynced, is not simulated (see Config.Synchronous and Config.SyncAlways).
// It samples instants: a passing run is evidence, not a proof for every
// interleaving; more kills and events make it stronger. And it checks only
// what Config.Check checks.
//
// # How the child runs
//
// The child is the test binary, re-executed with -test.run naming the test
// that called Crash (and an environment variable): the test runs again in
// the child, its Crash call becomes the child, and the functions in Config
// are the app's real code. So the test must call Crash with the same Config
// in every run (its own code before the call runs in the child too), and
// call it once per test or subtest. The child's log (stdout, stderr, Boxcar's
// errors) is child.log in Config.Dir, and its last lines are in the failure
// message.
package boxcartest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/boxcar-bus/boxcar"
)

// Config is a crash test of an app's handlers. Publish and at least one
// Subscriber are required; every other field has a default.
type Config struct {
	// Setup prepares the app's database in each child, before the bus
	// opens: its schema (CREATE TABLE IF NOT EXISTS ...). It runs in every
	// life, so it must be idempotent. Default: nothing.
	Setup func(ctx context.Context, db *sql.DB) error
	// Subscribers are the app's subscribers under test, subscribed in each
	// child as the app subscribes them.
	Subscribers []Subscriber
	// Publish is the app's publish code for item i of the workload (0 <= i
	// < Items): it writes the app's state in tx and publishes its events
	// with bus.PublishTx(ctx, tx, ...), as the app does in a request. The
	// kit runs it in Bus.Tx and records i in the same transaction, so each
	// item commits exactly once across the kills. Items run on Writers
	// goroutines at once; item i starts only once every item up to
	// i-Writers has committed (an item can rely on the state of those
	// before it, further back than Writers). A returned error fails the run.
	Publish func(ctx context.Context, bus *boxcar.Bus, tx *sql.Tx, i int) error
	// Check is the app's invariant over its database, run by the parent
	// after the drain; an error fails the run. Default: nothing (Boxcar's
	// own checks only).
	Check func(ctx context.Context, db *sql.DB) error

	// Items is how many times Publish is called with a new i. Default 1000.
	Items int
	// Kills is how many times the child is killed at least. Default 10.
	Kills int
	// Writers is how many items run at once. Default 4.
	Writers int
	// Bus is the app's bus configuration. The kit sets Dir (under Dir
	// below), Probe (the kill points) and PruneDelay (a long one: the outbox
	// is the record of what was committed); Logger defaults to Boxcar's
	// errors in the child's log. Default: Boxcar's defaults.
	Bus boxcar.Config
	// FailRate is the share of events whose first attempt, by each
	// subscriber, fails after the handler ran (its writes roll back; a
	// HandlerFunc's effect stays and the event is handled again). Default
	// 0.01; negative: none (and no kill while a key retries).
	FailRate float64
	// RollbackRate is the share of items first run in a transaction that
	// the kit rolls back on purpose, before the one that commits: their
	// events must reach no handler. Default 0.02; negative: none.
	RollbackRate float64
	// Targeted is the share of lives killed at a probe rather than at a
	// random instant. Default 0.5.
	Targeted float64
	// MinLife and MaxLife bound a life that ends at a random instant.
	// Defaults 150ms and 2s.
	MinLife, MaxLife time.Duration
	// DrainTimeout bounds the last child's drain. Default 2 minutes.
	DrainTimeout time.Duration
	// Seed makes the choice of kills repeatable. Default 0: from the clock
	// (the figure's line says it).
	Seed int64
	// Dir is the work directory: the database, the store, child.log.
	// Default: a t.TempDir() of the parent's (Result.Dir). Code before
	// Crash runs in every child too, and a child exits without the test's
	// cleanups: a t.TempDir() made there is left behind, empty, by each one.
	Dir string
}

// Subscriber is one of the app's subscribers. Set exactly one of Tx and
// Func.
type Subscriber struct {
	// Name is the subscriber's name, as the app subscribes it.
	Name string
	// Tx is a transactional handler (boxcar.TxHandler): checked exactly
	// once per committed event.
	Tx func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error
	// Func is a non-transactional handler (boxcar.HandlerFunc): checked at
	// least once per committed event (the kit records each successful call
	// in a transaction of its own, after the handler).
	Func func(ctx context.Context, m boxcar.Message) error
	// Options are the app's SubscribeOptions (Types says which events it
	// must have handled).
	Options boxcar.SubscribeOptions
}

// Result is the figure of a run.
type Result struct {
	Dir     string // the work directory (Config.Dir)
	Seed    int64
	Kills   int
	KillsAt map[string]int // by who killed ("fault": the child at a probe; "parent") and where
	Items   int            // workload items committed
	Events  int64          // events committed (outbox rows)
	// Lost counts, per subscriber, committed events of its types it never
	// handled (and that were not dead-lettered).
	Lost int64
	// Duplicates counts, per TxHandler subscriber, committed runs beyond
	// the first for an event.
	Duplicates int64
	// OrderViolations counts, per subscriber, events first handled after a
	// later event of their key.
	OrderViolations int64
	// Leaked counts handled events that no committed transaction wrote
	// (from a rolled-back one).
	Leaked int64
	// DeadLetters counts events dead-lettered by a subscriber.
	DeadLetters int64
	// CheckErr is Config.Check's error.
	CheckErr error
	// Details has a line per problem found (the first 50) and per
	// subscriber.
	Details []string
}

// OK reports whether the run found nothing wrong.
func (r Result) OK() bool {
	return r.Lost == 0 && r.Duplicates == 0 && r.OrderViolations == 0 && r.Leaked == 0 && r.DeadLetters == 0 && r.CheckErr == nil
}

// String is the figure's line.
func (r Result) String() string {
	check := "ok"
	if r.CheckErr != nil {
		check = "failed"
	}
	return fmt.Sprintf("kills=%d items=%d events=%d lost=%d duplicates=%d order_violations=%d leaked=%d dead_letters=%d check=%s",
		r.Kills, r.Items, r.Events, r.Lost, r.Duplicates, r.OrderViolations, r.Leaked, r.DeadLetters, check)
}

// Crash runs the crash test of cfg (see the package doc) and fails t unless
// every check passes; it returns the figure. In the child process it does
// the child's work and exits.
func Crash(t testing.TB, cfg Config) Result {
	t.Helper()
	res, p, err := crash(t, cfg)
	if p == nil {
		return res // in a child, another test's call
	}
	if err != nil {
		t.Fatalf("boxcartest: %v (%s, seed %d)\n%s", err, res, res.Seed, p.logTail())
	}
	if !res.OK() {
		msg := res.String()
		if res.CheckErr != nil {
			msg += "\nConfig.Check: " + res.CheckErr.Error()
		}
		t.Fatalf("boxcartest: %s (seed %d)\n%s", msg, res.Seed, p.logTail())
	}
	return res
}

// crash is Crash without the verdict: the run's figure and its error (a run
// that could not complete). In a child it runs the child and exits, or, for
// another test's call, returns a nil parent.
func crash(t testing.TB, cfg Config) (Result, *parent, error) {
	t.Helper()
	call := nextCall(t.Name())
	if os.Getenv(envChild) != "" {
		if os.Getenv(envTest) == t.Name() && os.Getenv(envCall) == fmt.Sprint(call) {
			os.Exit(childMain(cfg))
		}
		return Result{}, nil, nil
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		t.Fatalf("boxcartest: %v", err)
	}
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("boxcartest: %v", err)
	}
	p := &parent{cfg: cfg, exe: exe, test: t.Name(), call: call, logf: t.Logf}
	res, err := p.run(context.Background())
	t.Logf("boxcartest: %s (seed %d)", res, res.Seed)
	for _, d := range res.Details {
		t.Log(d)
	}
	return res, p, err
}

// calls counts Crash calls per test name in this process, so that a child
// runs the call it was started for.
var calls struct {
	sync.Mutex
	n map[string]int
}

func nextCall(name string) int {
	calls.Lock()
	defer calls.Unlock()
	if calls.n == nil {
		calls.n = map[string]int{}
	}
	calls.n[name]++
	return calls.n[name]
}

// runPattern is the -test.run pattern that runs exactly the test name.
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

func (c Config) withDefaults() Config {
	if c.Items == 0 {
		c.Items = 1000
	}
	if c.Kills == 0 {
		c.Kills = 10
	}
	if c.Writers == 0 {
		c.Writers = 4
	}
	if c.FailRate == 0 {
		c.FailRate = 0.01
	}
	if c.RollbackRate == 0 {
		c.RollbackRate = 0.02
	}
	if c.Targeted == 0 {
		c.Targeted = 0.5
	}
	if c.MinLife == 0 {
		c.MinLife = 150 * time.Millisecond
	}
	if c.MaxLife == 0 {
		c.MaxLife = 2 * time.Second
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 2 * time.Minute
	}
	if c.Seed == 0 {
		c.Seed = time.Now().UnixNano()
	}
	return c
}

func (c Config) validate() error {
	if c.Publish == nil {
		return errors.New("Config.Publish is nil: give the app's publish code for item i")
	}
	if len(c.Subscribers) == 0 {
		return errors.New("Config.Subscribers is empty: give the app's subscribers under test")
	}
	seen := map[string]bool{}
	for i, s := range c.Subscribers {
		if (s.Tx == nil) == (s.Func == nil) {
			return fmt.Errorf("Config.Subscribers[%d] (%q): set exactly one of Tx and Func", i, s.Name)
		}
		if seen[s.Name] {
			return fmt.Errorf("Config.Subscribers[%d]: %q twice", i, s.Name)
		}
		seen[s.Name] = true
	}
	if c.Items < 0 || c.Kills < 0 || c.Writers < 0 || c.MinLife < 0 || c.MaxLife < c.MinLife || c.Targeted > 1 || c.FailRate >= 1 || c.RollbackRate >= 1 {
		return errors.New("Config: Items, Kills, Writers and lives must not be negative, MaxLife >= MinLife, and the rates below 1")
	}
	return nil
}

// logTail is the end of the child's log, for a failure message.
func (p *parent) logTail() string {
	b, err := os.ReadFile(filepath.Join(p.cfg.Dir, "child.log"))
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return "last lines of " + filepath.Join(p.cfg.Dir, "child.log") + ":\n" + strings.Join(lines, "\n")
}
