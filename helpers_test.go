package boxcar

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/boxcar-bus/boxcar/sqlite"
)

// childEnv selects a child-process role: the test binary re-executes itself
// with it set, and TestMain runs the role instead of the tests. Crash tests
// SIGKILL these children.
const childEnv = "BOXCAR_TEST_CHILD"

func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(runChild(role))
	}
	goleak.VerifyTestMain(m)
}

// appSchema is the application side of the tests: a per-key counter the
// writers bump in the same transaction as the event, and the log of what
// handlers applied, in the order they applied it (id).
const appSchema = `
CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS applied (
	id         INTEGER PRIMARY KEY,
	subscriber TEXT NOT NULL,
	event_id   TEXT NOT NULL,
	type       TEXT NOT NULL,
	key        TEXT NOT NULL,
	n          INTEGER NOT NULL
);`

// testBundle is what a test needs: a database file, a bus on it, and the
// paths to reopen both.
type testBundle struct {
	t      testing.TB
	dir    string
	dbPath string
	db     *sql.DB
	bus    *Bus
	cfg    Config
}

// setup opens a database in a fresh temp dir and a bus on it; both are
// closed at the end of the test.
func setup(t testing.TB, cfg Config) *testBundle {
	t.Helper()
	dir := t.TempDir()
	tb := &testBundle{t: t, dir: dir, dbPath: filepath.Join(dir, "app.db"), cfg: cfg}
	if tb.cfg.Dir == "" {
		tb.cfg.Dir = filepath.Join(dir, "nats")
	}
	tb.db = openDB(t, tb.dbPath)
	tb.open()
	t.Cleanup(func() {
		if tb.bus != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := tb.bus.Close(ctx); err != nil {
				t.Errorf("close bus: %v", err)
			}
		}
	})
	return tb
}

func openDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(appSchema); err != nil {
		t.Fatal(err)
	}
	return db
}

func (tb *testBundle) open() {
	tb.t.Helper()
	bus, err := Open(context.Background(), tb.db, tb.cfg)
	if err != nil {
		tb.t.Fatalf("open bus: %v", err)
	}
	tb.bus = bus
}

// reopen closes the bus and opens a new one on the same files.
func (tb *testBundle) reopen() {
	tb.t.Helper()
	tb.closeBus()
	tb.open()
}

func (tb *testBundle) closeBus() {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := tb.bus.Close(ctx); err != nil {
		tb.t.Fatalf("close bus: %v", err)
	}
	tb.bus = nil
}

// publishCounted commits one event of key in a transaction that also bumps
// the key's counter; the event's data is the counter, so a handler can check
// it sees each key's events in commit order.
func publishCounted(ctx context.Context, bus *Bus, typ, key string) error {
	return bus.Tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `INSERT INTO counters(key, n) VALUES(?, 1)
			ON CONFLICT(key) DO UPDATE SET n = n + 1 RETURNING n`, key).Scan(&n); err != nil {
			return err
		}
		return bus.PublishTx(ctx, tx, Event{Type: typ, Key: key, Data: []byte(strconv.Itoa(n))})
	})
}

// recordingHandler applies each event by logging it in applied, in the
// handler's transaction.
func recordingHandler(subscriber string) Handler {
	return TxHandler(func(ctx context.Context, tx *sql.Tx, m Message) error {
		n, err := strconv.Atoi(string(m.Data))
		if err != nil {
			return Permanent(err)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO applied(subscriber, event_id, type, key, n) VALUES(?, ?, ?, ?, ?)`,
			subscriber, m.ID, m.Type, m.Key, n)
		return err
	})
}

// waitFor polls cond until it holds or the wait runs out. The wait is a
// liveness bound (the test's deadline budget), not a performance assertion.
func waitFor(t testing.TB, what string, limit time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s; last state: %s", limit, what, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// countApplied returns how many events subscriber applied.
func countApplied(t testing.TB, db *sql.DB, subscriber string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM applied WHERE subscriber = ?`, subscriber).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitApplied waits until subscriber applied want events.
func waitApplied(t testing.TB, db *sql.DB, subscriber string, want int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s to apply %d events", subscriber, want), 3*time.Minute, func() (bool, string) {
		n := countApplied(t, db, subscriber)
		return n >= want, fmt.Sprintf("applied %d", n)
	})
}

// checkExactlyOnceInOrder checks, for subscriber, that every key's events
// were applied exactly once each, in commit order: the counters applied for
// a key, in the order applied, are exactly 1, 2, ..., counters.n. It returns
// the number of events checked.
func checkExactlyOnceInOrder(t testing.TB, db *sql.DB, subscriber string) int {
	t.Helper()
	want := map[string]int{}
	rows, err := db.Query(`SELECT key, n FROM counters`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		var n int
		if err := rows.Scan(&k, &n); err != nil {
			t.Fatal(err)
		}
		want[k] = n
	}
	rows.Close()
	next := map[string]int{}
	rows, err = db.Query(`SELECT key, n FROM applied WHERE subscriber = ? ORDER BY id`, subscriber)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	total, bad := 0, 0
	for rows.Next() {
		var k string
		var n int
		if err := rows.Scan(&k, &n); err != nil {
			t.Fatal(err)
		}
		total++
		if n != next[k]+1 {
			if bad < 10 {
				t.Errorf("%s: key %q: applied counter %d after %d (want %d: duplicate, loss or reorder)", subscriber, k, n, next[k], next[k]+1)
			}
			bad++
		}
		next[k] = max(next[k], n)
	}
	for k, n := range want {
		if next[k] != n {
			if bad < 20 {
				t.Errorf("%s: key %q: applied up to %d of %d events", subscriber, k, next[k], n)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Fatalf("%s: %d violations of exactly-once in commit order", subscriber, bad)
	}
	return total
}

// child is a running child process of the test binary.
type child struct {
	cmd    *exec.Cmd
	lines  chan string
	waited chan struct{}
	mu     sync.Mutex
	err    error
}

// startChild re-executes the test binary in role with env (KEY=VALUE).
func startChild(t testing.TB, role string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), childEnv+"="+role), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, lines: make(chan string, 1024), waited: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case c.lines <- sc.Text():
			default: // nobody reads: drop
			}
		}
		io.Copy(io.Discard, out)
		err := cmd.Wait()
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.waited)
	}()
	t.Cleanup(func() { c.kill() })
	return c
}

// expect waits for a line starting with prefix and returns it.
func (c *child) expect(t testing.TB, prefix string) string {
	t.Helper()
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case l := <-c.lines:
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-c.waited:
			t.Fatalf("child exited (%v) before printing %q", c.exitErr(), prefix)
		case <-timeout:
			t.Fatalf("child did not print %q", prefix)
		}
	}
}

// kill sends SIGKILL and waits for the child to die.
func (c *child) kill() {
	c.cmd.Process.Kill()
	<-c.waited
}

// wait waits for the child to exit by itself.
func (c *child) wait(t testing.TB) error {
	t.Helper()
	select {
	case <-c.waited:
		return c.exitErr()
	case <-time.After(2 * time.Minute):
		t.Fatal("child did not exit")
		return nil
	}
}

func (c *child) exitErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}
