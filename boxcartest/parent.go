package boxcartest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
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

// The child's orders, in its environment.
const (
	envChild  = "BOXCARTEST_CHILD" // "run" or "drain"
	envTest   = "BOXCARTEST_TEST"  // the test whose Crash call is the child
	envCall   = "BOXCARTEST_CALL"  // which call of that test
	envDir    = "BOXCARTEST_DIR"
	envLife   = "BOXCARTEST_LIFE"
	envWrite  = "BOXCARTEST_WRITE" // items to commit in this life
	envFault  = "BOXCARTEST_FAULT" // a boxcar.Probe to die at, or ""
	envFaultP = "BOXCARTEST_FAULT_P"
)

// target is a probe at which a child dies, with the probability per hit
// that makes it fire within a typical life (cmd/torture's).
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
}

// parent runs the lives, the drain and the checks.
type parent struct {
	cfg  Config
	exe  string
	test string
	call int
	logf func(format string, args ...any)
}

func (p *parent) run(ctx context.Context) (res Result, err error) {
	cfg := p.cfg
	res.Dir, res.Seed, res.KillsAt = cfg.Dir, cfg.Seed, map[string]int{}
	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), 0xb0c4))
	logf, err := os.OpenFile(filepath.Join(cfg.Dir, "child.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return res, err
	}
	defer logf.Close()
	counter := &itemCounter{path: filepath.Join(cfg.Dir, "app.db")}
	defer counter.close()

	start := time.Now()
	committed := 0
	for life := 1; res.Kills < cfg.Kills || committed < cfg.Items; life++ {
		left := cfg.Items - committed
		write := 0
		if left > 0 {
			kl := max(cfg.Kills-res.Kills, 1)
			write = max((left+kl-1)/kl, min(200, left))
		}
		where := "random"
		span := cfg.MinLife + time.Duration(rng.Int64N(int64(cfg.MaxLife-cfg.MinLife)+1))
		env := p.env("run", life, write)
		switch r := rng.Float64(); {
		case r < cfg.Targeted:
			tg := targets[rng.IntN(len(targets))]
			if tg.point == boxcar.ProbeRetrying && cfg.FailRate < 0 {
				break // nothing fails: no key retries
			}
			where = string(tg.point)
			env = append(env, envFault+"="+string(tg.point), envFaultP+"="+strconv.FormatFloat(tg.prob, 'g', -1, 64))
			span = 2 * cfg.MaxLife // the parent kills it if the point never fires
		case r < cfg.Targeted+0.05:
			where, span = "random-early", time.Duration(rng.Int64N(int64(300*time.Millisecond))) // while it opens
		case r < cfg.Targeted+0.1:
			where, env = "random-backlog", p.env("run", life, 0) // no writes: while it catches up
		}
		how, err := runLife(ctx, p.exe, p.args(), env, logf, span, life)
		if err != nil {
			return res, fmt.Errorf("life %d (%s): %w", life, where, err)
		}
		res.Kills++
		res.KillsAt[how+":"+where]++
		if committed, err = counter.count(ctx); err != nil {
			return res, err
		}
	}
	p.logf("boxcartest: %d kills, %d items committed in %s; draining", res.Kills, committed, time.Since(start).Round(time.Millisecond))
	p.logf("boxcartest: kills by who:where: %s", formatCounts(res.KillsAt))
	counter.close()

	drainErr := runDrain(ctx, p.exe, p.args(), p.env("drain", 0, cfg.Items), logf, cfg.DrainTimeout+time.Minute)
	if verr := verify(ctx, cfg, &res); verr != nil {
		return res, fmt.Errorf("verify: %w", verr)
	}
	if drainErr != nil {
		return res, fmt.Errorf("drain: %w", drainErr)
	}
	return res, nil
}

func (p *parent) args() []string { return []string{"-test.run=" + runPattern(p.test)} }

func (p *parent) env(mode string, life, write int) []string {
	return append(os.Environ(),
		envChild+"="+mode,
		envTest+"="+p.test,
		envCall+"="+strconv.Itoa(p.call),
		envDir+"="+p.cfg.Dir,
		envLife+"="+strconv.Itoa(life),
		envWrite+"="+strconv.Itoa(write),
	)
}

// runLife starts a child and SIGKILLs it after span unless a probe killed
// it first; it reports who ("fault" or "parent"). A child that ends any
// other way is an error.
func runLife(ctx context.Context, exe string, args, env []string, logf *os.File, span time.Duration, life int) (string, error) {
	fmt.Fprintf(logf, "--- life %d\n", life)
	cmd := exec.Command(exe, args...)
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
		if killed(cmd) {
			return "fault", nil
		}
		return "", fmt.Errorf("child ended by itself (%v)", err)
	case <-timer.C:
	case <-ctx.Done():
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	if !killed(cmd) {
		return "", fmt.Errorf("child ended by itself before the kill (%v)", cmd.ProcessState)
	}
	return "parent", ctx.Err()
}

func killed(cmd *exec.Cmd) bool {
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// runDrain runs the last child, without faults, until it exits.
func runDrain(ctx context.Context, exe string, args, env []string, logf *os.File, limit time.Duration) error {
	fmt.Fprintf(logf, "--- drain\n")
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	return cmd.Run()
}

// itemCounter counts committed items between lives. The database may not
// exist yet if the first lives were killed early.
type itemCounter struct {
	path string
	db   *sql.DB
}

func (c *itemCounter) count(ctx context.Context) (int, error) {
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
	var n int
	err := c.db.QueryRowContext(ctx, sqlCountItems).Scan(&n)
	if err != nil && strings.Contains(err.Error(), "no such table") {
		return 0, nil
	}
	return n, err
}

func (c *itemCounter) close() {
	if c.db != nil {
		c.db.Close()
		c.db = nil
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
