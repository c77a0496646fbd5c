package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// parentConfig is what the flags set.
type parentConfig struct {
	Kills, Events int
	Keys, Writers int
	MinLife       time.Duration
	MaxLife       time.Duration
	Targeted      float64
	RollbackRate  float64
	FailRate      float64
	Seed          int64
	Dir           string
	Keep          bool
	DrainTimeout  time.Duration
	AckWait       time.Duration // 0: Boxcar's default
	PruneDelay    time.Duration // 0: Boxcar's default
	// LoseWrites is the probability, after each kill, of putting the
	// JetStream store back to a copy taken up to SnapshotEvery lives ago:
	// acked writes lost, as in a power loss with lazy fsync.
	LoseWrites     float64
	SnapshotEvery  int
	Exe            string    // the binary to run as the child (this one)
	Out            io.Writer // progress lines
	ProgressEvery  int       // print a progress line every so many lives (0: 25)
	ChildExtraEnvs []string  // extra environment for the child (tests)
	// Instances >= 2 runs the multi-process mode (multi.go): that many
	// instances as leaves of a 3-node hub; HubAway is the probability, per
	// kill, of taking the hub away for a while instead.
	Instances int
	HubAway   float64
}

func defaultParentConfig() parentConfig {
	return parentConfig{
		Kills:        25,
		Events:       20_000,
		Keys:         200,
		Writers:      4,
		MinLife:      150 * time.Millisecond,
		MaxLife:      2500 * time.Millisecond,
		Targeted:     0.5,
		RollbackRate: 0.05,
		FailRate:     0.01,
		DrainTimeout: 5 * time.Minute,
	}
}

// target is a probe at which the parent makes a child die, with the
// probability per hit that makes it fire within a typical life.
type target struct {
	point boxcar.Probe
	prob  float64
}

var targets = []target{
	{boxcar.ProbeAfterCommit, 0.005},       // per Bus.Tx commit
	{boxcar.ProbeRelayAfterAck, 0.2},       // per acked batch
	{boxcar.ProbeRelayMidBatch, 0.1},       // per batch of two or more
	{boxcar.ProbeHandlerAfterCommit, 0.03}, // per acker round (one or more subscriber transactions)
	{boxcar.ProbeRetrying, 0.2},            // per key that starts waiting to retry
	{boxcar.Probe("random"), 0},            // no point: a kill at a random instant
	{boxcar.Probe("random-early"), 0},      // a kill while the child is still opening
	{boxcar.Probe("random-backlog"), 0},    // no writes: kill while catching up
}

// result is the figure of a run.
type result struct {
	Kills            int
	KillsAt          map[string]int
	Events           int64
	Lost             int64
	Duplicates       int64
	OrderViolations  int64
	StreamDuplicates int64
	RolledBackLeaked int64
	Details          []string // one line per problem found (capped)
	Instances        int      // multi-process mode: how many (0 otherwise)
	HubOutages       int      // multi-process mode: times the hub was taken away
}

func (r result) OK() bool {
	return r.Lost == 0 && r.Duplicates == 0 && r.OrderViolations == 0 && r.StreamDuplicates == 0 && r.RolledBackLeaked == 0
}

func (r result) Line() string {
	line := fmt.Sprintf("kills=%d events=%d lost=%d duplicates=%d order_violations=%d stream_duplicates=%d rolled_back_leaked=%d",
		r.Kills, r.Events, r.Lost, r.Duplicates, r.OrderViolations, r.StreamDuplicates, r.RolledBackLeaked)
	if r.Instances >= 2 {
		line = fmt.Sprintf("instances=%d %s hub_outages=%d", r.Instances, line, r.HubOutages)
	}
	return line
}

// runParent runs the whole torture: lives and kills until both targets are
// met, the final drain, the checks.
func runParent(ctx context.Context, cfg parentConfig) (res result, err error) {
	res.KillsAt = map[string]int{}
	if cfg.ProgressEvery == 0 {
		cfg.ProgressEvery = 25
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), 0x70127))
	dir := cfg.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "boxcar-torture-"); err != nil {
			return res, err
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	defer func() {
		if err == nil && res.OK() && !cfg.Keep && cfg.Dir == "" {
			os.RemoveAll(dir)
		} else {
			fmt.Fprintf(cfg.Out, "work directory kept: %s (child log: %s)\n", dir, filepath.Join(dir, "child.log"))
		}
	}()
	logf, err := os.OpenFile(filepath.Join(dir, "child.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return res, err
	}
	defer logf.Close()
	fmt.Fprintf(cfg.Out, "torture: dir=%s seed=%d kills>=%d events>=%d keys=%d writers=%d\n",
		dir, cfg.Seed, cfg.Kills, cfg.Events, cfg.Keys, cfg.Writers)

	if cfg.Instances >= 2 {
		res.Instances = cfg.Instances
		err := runMulti(ctx, cfg, dir, logf, &res)
		return res, err
	}
	counter := &committedCounter{path: filepath.Join(dir, "app.db")}
	defer counter.close()
	start := time.Now()
	var committed int64
	for life := 1; res.Kills < cfg.Kills || committed < int64(cfg.Events); life++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		left := int64(cfg.Events) - committed
		budget := int64(0)
		if left > 0 {
			budget = (left + int64(max(cfg.Kills-res.Kills, 1)) - 1) / int64(max(cfg.Kills-res.Kills, 1))
			budget = max(budget, 200)
		}
		tg := target{point: "random"}
		if rng.Float64() < cfg.Targeted {
			tg = targets[rng.IntN(len(targets))]
		}
		life := int64(life)
		lifeSpan := cfg.MinLife + time.Duration(rng.Int64N(int64(cfg.MaxLife-cfg.MinLife)+1))
		env := childEnv(cfg, dir, "run", life, budget)
		switch tg.point {
		case "random":
		case "random-early":
			lifeSpan = time.Duration(rng.Int64N(int64(300 * time.Millisecond)))
		case "random-backlog":
			env = childEnv(cfg, dir, "run", life, 0)
		default:
			env = append(env, envFault+"="+string(tg.point), envFaultP+"="+strconv.FormatFloat(tg.prob, 'g', -1, 64))
			lifeSpan = 2 * cfg.MaxLife // the parent kills it if the point never fires
		}
		how, err := runLife(ctx, cfg.Exe, env, logf, lifeSpan, life)
		if err != nil {
			return res, fmt.Errorf("life %d (%s): %w", life, tg.point, err)
		}
		res.Kills++
		res.KillsAt[how+":"+string(tg.point)]++
		if cfg.LoseWrites > 0 {
			if err := loseWrites(dir, rng, cfg, life, &res); err != nil {
				return res, err
			}
		}
		if committed, err = counter.count(ctx); err != nil {
			return res, err
		}
		if life%int64(cfg.ProgressEvery) == 0 {
			fmt.Fprintf(cfg.Out, "torture: life %d kills=%d committed=%d elapsed=%s\n", life, res.Kills, committed, time.Since(start).Round(time.Second))
		}
	}
	res.Events = committed
	fmt.Fprintf(cfg.Out, "torture: %d kills, %d events committed in %s; draining\n", res.Kills, committed, time.Since(start).Round(time.Second))
	fmt.Fprintf(cfg.Out, "torture: kills by cause:point (and store restores): %s\n", formatCounts(res.KillsAt))

	drainStart := time.Now()
	drainErr := runDrain(ctx, cfg.Exe, childEnv(cfg, dir, "drain", 0, 0), logf, cfg.DrainTimeout+time.Minute)
	fmt.Fprintf(cfg.Out, "torture: drain took %s\n", time.Since(drainStart).Round(time.Millisecond))
	v, err := verify(ctx, dir, &res)
	if err != nil {
		return res, fmt.Errorf("verify: %w", err)
	}
	for _, l := range v {
		fmt.Fprintln(cfg.Out, l)
	}
	for _, d := range res.Details {
		fmt.Fprintln(cfg.Out, "PROBLEM:", d)
	}
	if drainErr != nil {
		return res, fmt.Errorf("drain: %w", drainErr)
	}
	fmt.Fprintf(cfg.Out, "torture: total %s\n", time.Since(start).Round(time.Second))
	return res, nil
}

func childEnv(cfg parentConfig, dir, mode string, life, write int64) []string {
	env := append(os.Environ(),
		envChild+"="+mode,
		envDir+"="+dir,
		envWrite+"="+strconv.FormatInt(write, 10),
		envLife+"="+strconv.FormatInt(life, 10),
		envKeys+"="+strconv.Itoa(cfg.Keys),
		envWriters+"="+strconv.Itoa(cfg.Writers),
		envRollback+"="+strconv.FormatFloat(cfg.RollbackRate, 'g', -1, 64),
		envFail+"="+strconv.FormatFloat(cfg.FailRate, 'g', -1, 64),
		envDrainFor+"="+cfg.DrainTimeout.String(),
	)
	if cfg.AckWait > 0 {
		env = append(env, envAckWait+"="+cfg.AckWait.String())
	}
	if cfg.PruneDelay > 0 {
		env = append(env, envPrune+"="+cfg.PruneDelay.String())
	}
	return append(env, cfg.ChildExtraEnvs...)
}

// runLife starts a child and SIGKILLs it after span unless a fault point
// killed it first. It reports who killed it ("fault" or "parent"); a child
// that ends any other way is an error.
func runLife(ctx context.Context, exe string, env []string, logf *os.File, span time.Duration, life int64) (string, error) {
	fmt.Fprintf(logf, "--- life %d\n", life)
	cmd := exec.Command(exe)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return "", err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	timer := time.NewTimer(span)
	defer timer.Stop()
	select {
	case err := <-exited:
		if isSIGKILL(cmd) {
			return "fault", nil
		}
		return "", fmt.Errorf("child ended by itself (%v); see %s", err, logf.Name())
	case <-timer.C:
	case <-ctx.Done():
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	if !isSIGKILL(cmd) {
		return "", fmt.Errorf("child ended by itself before the kill (%v); see %s", cmd.ProcessState, logf.Name())
	}
	return "parent", ctx.Err()
}

func isSIGKILL(cmd *exec.Cmd) bool {
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// runDrain runs the last child, without faults, until it exits.
func runDrain(ctx context.Context, exe string, env []string, logf *os.File, limit time.Duration) error {
	fmt.Fprintf(logf, "--- drain\n")
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w; see %s", err, logf.Name())
	}
	return nil
}

// committedCounter counts committed events. The database may not exist yet
// if the first lives were killed early; once it does, it stays open.
type committedCounter struct {
	path string
	db   *sql.DB
}

func (c *committedCounter) count(ctx context.Context) (int64, error) {
	if c.db == nil {
		if _, err := os.Stat(c.path); errors.Is(err, os.ErrNotExist) {
			return 0, nil
		}
		db, err := sqlite.Open(c.path)
		if err != nil {
			return 0, err
		}
		c.db = db
	}
	var n int64
	err := c.db.QueryRowContext(ctx, `SELECT count(*) FROM app_events WHERE doomed = 0`).Scan(&n)
	if err != nil && strings.Contains(err.Error(), "no such table") {
		return 0, nil
	}
	return n, err
}

func (c *committedCounter) close() {
	if c.db != nil {
		c.db.Close()
	}
}

func formatCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%d", k, m[k])
	}
	return b.String()
}

// loseWrites, with the child dead, takes a copy of the JetStream store every
// SnapshotEvery lives, and with probability LoseWrites puts the store back to
// the last copy: the stream and the consumers lose what they acked since, as
// after a power loss with lazy fsync. The outbox still holds those events
// (PruneDelay), and the next life must notice and republish them.
func loseWrites(dir string, rng *rand.Rand, cfg parentConfig, life int64, res *result) error {
	store, snap := filepath.Join(dir, "nats"), filepath.Join(dir, "nats-snapshot")
	if _, err := os.Stat(store); err != nil {
		return nil // not created yet
	}
	every := int64(max(cfg.SnapshotEvery, 1))
	if _, err := os.Stat(snap); err == nil && rng.Float64() < cfg.LoseWrites {
		if err := os.RemoveAll(store); err != nil {
			return err
		}
		if err := os.CopyFS(store, os.DirFS(snap)); err != nil {
			return fmt.Errorf("restore the store copy: %w", err)
		}
		res.KillsAt["lost-writes:store-restored"]++
		return nil
	}
	if life%every == 0 {
		if err := os.RemoveAll(snap); err != nil {
			return err
		}
		if err := os.CopyFS(snap, os.DirFS(store)); err != nil {
			return fmt.Errorf("copy the store: %w", err)
		}
	}
	return nil
}
