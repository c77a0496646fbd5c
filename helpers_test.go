package boxcar

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/boxcar-bus/boxcar/internal/lossyjs"
	"github.com/boxcar-bus/boxcar/internal/waitfor"
	bjs "github.com/boxcar-bus/boxcar/jetstream"
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
	return setupOptions(t, cfg, sqlite.Options{})
}

// setupOptions is setup with the database opened with opts.
func setupOptions(t testing.TB, cfg Config, opts sqlite.Options) *testBundle {
	t.Helper()
	dir := t.TempDir()
	tb := &testBundle{t: t, dir: dir, dbPath: filepath.Join(dir, "app.db"), cfg: cfg}
	if tb.cfg.Dir == "" {
		tb.cfg.Dir = filepath.Join(dir, "nats")
	}
	tb.db = openDBOptions(t, tb.dbPath, opts)
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
	return openDBOptions(t, path, sqlite.Options{})
}

func openDBOptions(t testing.TB, path string, opts sqlite.Options) *sql.DB {
	t.Helper()
	db, err := sqlite.OpenOptions(path, opts)
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

// withLossyJetStream makes cfg's bus publish through a lossyjs wrapper of
// its real JetStream context, so that a test can lose or refuse publishes;
// the func returned gives the wrapper of the bus opened last.
func withLossyJetStream(cfg Config) (Config, func() *lossyjs.JetStream) {
	var mu sync.Mutex
	var lossy *lossyjs.JetStream
	cfg.seams = &testSeams{wrapJetStream: func(js jetstream.JetStream) jetstream.JetStream {
		mu.Lock()
		defer mu.Unlock()
		lossy = lossyjs.Wrap(js)
		return lossy
	}}
	return cfg, func() *lossyjs.JetStream {
		mu.Lock()
		defer mu.Unlock()
		return lossy
	}
}

// dropAcks makes cfg's bus lose the acks of its subscribers while the
// counter it returns is above zero (each lost ack takes one).
func dropAcks(cfg Config) (Config, *atomic.Int64) {
	var left atomic.Int64
	if cfg.seams == nil {
		cfg.seams = &testSeams{}
	}
	cfg.seams.ack = func(m jetstream.Msg) error {
		for {
			n := left.Load()
			if n <= 0 {
				return m.Ack()
			}
			if left.CompareAndSwap(n, n-1) {
				return nil // lost on its way
			}
		}
	}
	return cfg, &left
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
	waitfor.Cond(t, what, limit, 20*time.Millisecond, cond)
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
	return checkAppliedUpTo(t, db, subscriber, committedCounters(t, db))
}

// committedCounters returns each key's last committed counter: the events
// the writers committed for it.
func committedCounters(t testing.TB, db *sql.DB) map[string]int {
	t.Helper()
	want := map[string]int{}
	rows, err := db.Query(`SELECT key, n FROM counters`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		var n int
		if err := rows.Scan(&k, &n); err != nil {
			t.Fatal(err)
		}
		want[k] = n
	}
	return want
}

// checkAppliedUpTo checks that subscriber, in db, applied each key's
// counter values 1..want[key] exactly once and in order, and returns the
// number of rows checked.
func checkAppliedUpTo(t testing.TB, db *sql.DB, subscriber string, want map[string]int) int {
	t.Helper()
	next := map[string]int{}
	rows, err := db.Query(`SELECT key, n FROM applied WHERE subscriber = ? ORDER BY id`, subscriber)
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
	tail   []string // the last lines it logged, for a failure's message
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
			c.mu.Lock()
			c.tail = append(c.tail, sc.Text())
			if len(c.tail) > 100 {
				c.tail = c.tail[1:]
			}
			c.mu.Unlock()
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
			if l, ok := c.unread(func(l string) bool { return strings.HasPrefix(l, prefix) }); ok {
				return l
			}
			t.Fatalf("child exited (%v) before printing %q", c.exitErr(), prefix)
		case <-timeout:
			t.Fatalf("child did not print %q", prefix)
		}
	}
}

// unread returns the first line left in c.lines that match accepts, if
// any. Once c.waited is closed every line the child wrote is there (the
// scanner ends before the wait), unless c.lines was full.
func (c *child) unread(match func(string) bool) (string, bool) {
	for {
		select {
		case l := <-c.lines:
			if match(l) {
				return l, true
			}
		default:
			return "", false
		}
	}
}

// logged returns the last lines the child logged.
func (c *child) logged() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.tail, "\n")
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

// publishN commits n counted events of key, one transaction each.
func publishN(t testing.TB, bus *Bus, key string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := publishCounted(context.Background(), bus, "order.placed", key); err != nil {
			t.Fatal(err)
		}
	}
}

// updateStream edits the event stream's configuration in place.
func updateStream(t testing.TB, bus *Bus, edit func(*jetstream.StreamConfig)) {
	t.Helper()
	ctx := context.Background()
	s, err := bus.js.Stream(ctx, bus.StreamName())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	edit(&cfg)
	if _, err := bus.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("update stream: %v", err)
	}
}

// copyDir copies the tree at src to dst (which must not exist).
func copyDir(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(target)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatalf("copy %s to %s: %v", src, dst, err)
	}
}

// restoreDir replaces dir by the copy at from.
func restoreDir(t testing.TB, from, dir string) {
	t.Helper()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	copyDir(t, from, dir)
}

// poolConns is the size of the database pool in the disk-full test: every
// connection of the pool gets the page limit, the bus's write connection
// (one of them) included.
const poolConns = 4

// limitPages sets PRAGMA max_page_count on every connection of the pool of
// tb.db (max_page_count is per connection): 0 means "no room beyond what the
// file has now".
func limitPages(t testing.TB, tb *testBundle, pages int64) {
	t.Helper()
	ctx := context.Background()
	set := func(c *sql.Conn) {
		limit := pages
		if limit == 0 {
			if err := c.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&limit); err != nil {
				t.Fatal(err)
			}
		}
		var got int64
		if err := c.QueryRowContext(ctx, `PRAGMA max_page_count = `+strconv.FormatInt(limit, 10)).Scan(&got); err != nil {
			t.Fatal(err)
		}
	}
	if err := tb.bus.w.(*sqlite.Writer).Conn(ctx, func(c *sql.Conn) error { set(c); return nil }); err != nil {
		t.Fatal(err)
	}
	conns := make([]*sql.Conn, 0, poolConns-1)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range poolConns - 1 {
		c, err := tb.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		set(c)
	}
}

// headerBytes is the size of h on the wire.
func headerBytes(h nats.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	return n
}

func testLogger() *slog.Logger {
	if os.Getenv("BOXCAR_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// checkStreamOrderIgnoringForeign checks that the Boxcar events in the
// stream are outbox seqs 1..last in order, skipping messages without the
// Boxcar-Seq header or whose seq header is not a positive integer.
func checkStreamOrderIgnoringForeign(t testing.TB, bus *Bus, last int64) {
	t.Helper()
	var seqs []int64
	for _, m := range streamMessages(t, bus) {
		if id := m.Header.Get("Nats-Msg-Id"); id == "" || strings.HasPrefix(id, "forged-") {
			continue
		}
		n, err := strconv.ParseInt(m.Header.Get(bjs.HeaderSeq), 10, 64)
		if err != nil || n <= 0 {
			continue
		}
		seqs = append(seqs, n)
	}
	checkStreamIsOutbox(t, seqs, 1, last)
}

// streamMessages reads the whole event stream, in order.
func streamMessages(t testing.TB, bus *Bus) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	s, err := bus.js.Stream(ctx, bus.StreamName())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// streamEvents returns the outbox seq of each message of the event stream,
// in stream order; every message must carry one.
func streamEvents(t testing.TB, bus *Bus) []int64 {
	t.Helper()
	var seqs []int64
	for _, m := range streamMessages(t, bus) {
		n, err := strconv.ParseInt(m.Header.Get(bjs.HeaderSeq), 10, 64)
		if err != nil {
			t.Fatalf("stream message %d has no %s header: %v", m.Sequence, bjs.HeaderSeq, err)
		}
		seqs = append(seqs, n)
	}
	return seqs
}

// checkStreamIsOutbox checks that the stream holds the outbox seqs
// first..last each exactly once, in order.
func checkStreamIsOutbox(t testing.TB, seqs []int64, first, last int64) {
	t.Helper()
	if int64(len(seqs)) != last-first+1 {
		t.Errorf("stream holds %d events, want %d (seq %d..%d)", len(seqs), last-first+1, first, last)
	}
	for i, s := range seqs {
		if want := first + int64(i); s != want {
			t.Fatalf("stream position %d holds outbox seq %d, want %d (duplicate, gap or reorder); stream: %v", i, s, want, abbreviate(seqs))
		}
	}
}

// waitStreamIsOutbox waits until the stream holds as many events as the
// outbox seqs first..last, then checks that it holds those, each once, in
// order.
func waitStreamIsOutbox(t testing.TB, bus *Bus, first, last int64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("the stream to hold outbox seqs %d..%d", first, last), time.Minute, func() (bool, string) {
		seqs := streamEvents(t, bus)
		return int64(len(seqs)) >= last-first+1, abbreviate(seqs)
	})
	checkStreamIsOutbox(t, streamEvents(t, bus), first, last)
}

func abbreviate(s []int64) string {
	if len(s) <= 40 {
		return fmt.Sprint(s)
	}
	return fmt.Sprint(s[:20], "...", s[len(s)-20:])
}

// waitRelayed waits until the relay's cursor reaches seq.
func waitRelayed(t testing.TB, bus *Bus, seq int64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("relay cursor to reach %d", seq), time.Minute, func() (bool, string) {
		c := bus.relay.cursor.Load()
		return c >= seq, fmt.Sprintf("cursor %d", c)
	})
}

func maxOutboxSeq(t testing.TB, db *sql.DB) int64 {
	t.Helper()
	_, m, err := sqlite.OutboxBounds(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// runWriters commits total events over keys from writers goroutines, each
// event bumping its key's counter in the same transaction.
func runWriters(t testing.TB, bus *Bus, writers, total, keys int, typeOf func(i int) string) {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	var next atomic.Int64
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1))
				if i > total {
					return
				}
				key := "key-" + strconv.Itoa(rand.IntN(keys))
				if err := publishCounted(ctx, bus, typeOf(i), key); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// readDeadLetters waits for want messages in the dead-letter stream and
// returns them.
func readDeadLetters(t testing.TB, bus *Bus, want int) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	s, err := bus.js.Stream(ctx, bus.DLQStreamName())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, fmt.Sprintf("%d dead letters", want), time.Minute, func() (bool, string) {
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs >= uint64(want), fmt.Sprintf("%d dead letters", info.State.Msgs)
	})
	var out []*jetstream.RawStreamMsg
	for seq := uint64(1); len(out) < want; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// logBuffer collects a bus's logs for a test.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// logger logs everything, at debug level and up, into l.
func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// hasDedupeRow reports whether subscriber has a dedupe row for an event of
// key (looked up in the outbox, which keeps relayed rows for PruneDelay).
func hasDedupeRow(t testing.TB, db *sql.DB, subscriber, key string) bool {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM boxcar_dedupe d JOIN boxcar_outbox o ON o.id = d.event_id
		WHERE d.subscriber = ? AND o.key = ?`, subscriber, key).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}
