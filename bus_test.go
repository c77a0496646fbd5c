package boxcar

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
)

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "app.db"))
	for name, c := range map[string]struct {
		cfg  Config
		want string
	}{
		"no dir":             {Config{}, "Config.Dir is empty: set it to a writable directory"},
		"listen not loop":    {Config{Dir: "x", Listen: "0.0.0.0:4222", ListenInspectPassword: NewSecret()}, "not a loopback address"},
		"listen no password": {Config{Dir: "x", Listen: "127.0.0.1:4222"}, "Config.Listen is set without Config.ListenInspectPassword or Config.ListenAdminPassword"},
		"bad stream":         {Config{Dir: "x", Stream: "a.b"}, "Config.Stream"},
		"bad prefix":         {Config{Dir: "x", SubjectPrefix: "a*"}, "Config.SubjectPrefix"},
		"negative retention": {Config{Dir: "x", Retention: -time.Second}, "Config.Retention is negative"},
		"window > retention": {Config{Dir: "x", Retention: time.Minute, DuplicateWindow: time.Hour}, "exceeds Config.Retention"},
		"window < 100ms":     {Config{Dir: "x", DuplicateWindow: 50 * time.Millisecond}, "Config.DuplicateWindow 50ms is shorter than JetStream's least, 100ms"},
		"huge batch":         {Config{Dir: "x", RelayBatch: 1 << 20}, "Config.RelayBatch"},
	} {
		_, err := Open(ctx, db, c.cfg)
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want ErrInvalidConfig containing %q", name, err, c.want)
		}
	}
	if _, err := Open(ctx, nil, Config{Dir: "x"}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("nil db: got %v", err)
	}
}

// Misuse: a second Open on a Dir that another process holds fails with
// ErrDirLocked, and works once that process is gone.
func TestSecondOpenOnLockedDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbPath, natsDir := filepath.Join(dir, "app.db"), filepath.Join(dir, "nats")
	c := startChild(t, roleHold, "BOXCAR_DB="+dbPath, "BOXCAR_DIR="+natsDir)
	c.expect(t, "ready")
	db := openDB(t, dbPath)
	_, err := Open(context.Background(), db, Config{Dir: natsDir})
	if !errors.Is(err, ErrDirLocked) || !strings.Contains(err.Error(), "held by another process") {
		t.Fatalf("second Open on a held Dir: got %v, want ErrDirLocked saying another process holds it", err)
	}
	c.kill() // the kernel releases the lock of a dead process
	tb := &testBundle{t: t, dir: dir, dbPath: dbPath, db: db, cfg: Config{Dir: natsDir}}
	tb.open()
	tb.closeBus()
}

// Lifecycle: Close waits for a handler in flight, leaves it to finish its
// event, and leaves no goroutine behind.
func TestCloseWaitsForHandlersAndLeavesNoGoroutines(t *testing.T) {
	// Not parallel: goleak looks at every goroutine of the process.
	defer goleak.VerifyNone(t)
	ctx := context.Background()
	dir := t.TempDir()
	db := openDB(t, filepath.Join(dir, "app.db"))
	defer db.Close() // before goleak looks: database/sql has a goroutine per DB
	bus, err := Open(ctx, db, Config{Dir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	// Published before anyone subscribes, so that the handler in flight when
	// Close starts is the first: the publishes do not wait for the write
	// lock behind the slow handler's transaction.
	for i := 0; i < 5; i++ {
		if err := bus.Publish(ctx, Event{Type: "a", Key: "k", Data: []byte("1")}); err != nil {
			t.Fatal(err)
		}
	}
	// The plain subscriber first: Subscribe records the subscriber through
	// the writer, which would wait behind the slow handler's transaction.
	if _, err := bus.Subscribe(ctx, "plain", HandlerFunc(func(ctx context.Context, m Message) error { return nil }), SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	var once sync.Once
	var finished bool
	if _, err := bus.Subscribe(ctx, "slow", TxHandler(func(ctx context.Context, tx *sql.Tx, m Message) error {
		once.Do(func() { close(started) })
		time.Sleep(300 * time.Millisecond)
		finished = true
		return recordingHandler("slow").tx(ctx, tx, m)
	}), SubscribeOptions{BatchSize: 1, Workers: 1}); err != nil {
		t.Fatal(err)
	}
	<-started
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := bus.Close(cctx); err != nil {
		t.Fatal(err)
	}
	if !finished {
		t.Fatal("Close returned before the handler in flight finished")
	}
	if got := countApplied(t, db, "slow"); got != 1 {
		t.Fatalf("the handler in flight committed %d events, want 1", got)
	}
	if err := bus.Close(cctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// Lifecycle: when Close's context runs out, handlers' contexts are canceled.
func TestCloseCancelsHandlersAtDeadline(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	started := make(chan struct{})
	var once sync.Once
	canceled := make(chan struct{})
	if _, err := tb.bus.Subscribe(ctx, "stuck", HandlerFunc(func(ctx context.Context, m Message) error {
		once.Do(func() { close(started) })
		<-ctx.Done()
		close(canceled)
		return ctx.Err()
	}), SubscribeOptions{HandlerTimeout: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if err := tb.bus.Publish(ctx, Event{Type: "a", Key: "k"}); err != nil {
		t.Fatal(err)
	}
	<-started
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	err := tb.bus.Close(cctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close past its deadline: got %v, want DeadlineExceeded", err)
	}
	select {
	case <-canceled:
	default:
		t.Fatal("the handler's context was not canceled")
	}
	tb.bus = nil
}

// Embedding: the embedded server opens no TCP listener unless configured,
// and its fatal log lines do not exit the process.
func TestEmbeddedServerDefaults(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	tb := setup(t, Config{Logger: logs.logger()})
	srv := tb.bus.srv.Underlying()
	if srv.Addr() != nil || tb.bus.ClientURL() != "" {
		t.Fatalf("embedded server listens on %v without Config.Listen", srv.Addr())
	}
	if !srv.ReadyForConnections(time.Second) {
		t.Fatal("server not ready")
	}
	srv.Fatalf("simulated fatal condition %d", 42)
	// Still alive, and the line went to our logger.
	if err := tb.bus.Publish(context.Background(), Event{Type: "a", Key: "k"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "simulated fatal condition 42") {
		t.Fatalf("fatal line not logged; logs:\n%s", logs.String())
	}
}

// Embedding: the embedded server installs no signal handlers: a process
// with an open bus that receives SIGHUP dies of it, as it would without
// Boxcar (a handler would swallow it).
func TestEmbeddedServerInstallsNoSignalHandlers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := startChild(t, roleSignal, "BOXCAR_DB="+filepath.Join(dir, "app.db"), "BOXCAR_DIR="+filepath.Join(dir, "nats"))
	c.expect(t, "ready")
	err := c.wait(t)
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) && ee.ExitCode() == 5 {
		t.Fatal("SIGHUP is ignored in this environment (started under nohup?), so a child cannot show that Boxcar installs no handler for it: run the tests without nohup")
	}
	if err == nil || !strings.Contains(err.Error(), "hangup") {
		t.Fatalf("child with an open bus: got exit %v, want death by SIGHUP", err)
	}
}

// Regression (issue "Nothing stuck, nothing silent", item 4): a Close whose
// context had expired returned without releasing Config.Dir, and an Open of
// the same Dir in this process failed ("in use by another process") until
// the old Bus was garbage-collected. Now the embedded server's shutdown
// finishes in the background and releases the Dir; meanwhile Open says that
// a Bus of this process is still closing.
func TestLateCloseReleasesDir(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	publishN(t, tb.bus, "k", 3)
	waitRelayed(t, tb.bus, 3)
	old := tb.bus
	expired, cancel := context.WithCancel(ctx)
	cancel()
	if err := old.Close(expired); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Close with an expired context: got %v, want nil or the context's error", err)
	}
	tb.bus = nil
	var bus *Bus
	waitFor(t, "Open of the same Dir after a late Close", time.Minute, func() (bool, string) {
		b, err := Open(ctx, tb.db, tb.cfg)
		if err == nil {
			bus = b
			return true, ""
		}
		if !errors.Is(err, ErrDirLocked) || !strings.Contains(err.Error(), "held by a Bus of this process that is still closing: wait for its Close") {
			t.Fatalf("Open while the previous Bus closes: got %v, want ErrDirLocked saying a Bus of this process is still closing", err)
		}
		return false, err.Error()
	})
	tb.bus = bus
	// The reopened bus has the events the old one relayed.
	if got := streamEvents(t, bus); len(got) != 3 {
		t.Fatalf("after reopening, the stream holds outbox seqs %v, want 1..3", got)
	}
	runtime.KeepAlive(old) // the old Bus must not release the Dir by being collected
}

// Bus.Tx calls racing Close: ErrClosed means nothing of the call ran. A
// group that committed while Close stopped the syncer was reported as
// ErrClosed, its events in the outbox for the next Open: a caller that
// retried after reopening published twice.
func TestTxRacingCloseNeverReportsACommitClosed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	bus := tb.bus
	var mu sync.Mutex
	var closedKeys []string
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				key := fmt.Sprint(g, "-", i)
				err := bus.Tx(ctx, func(tx *sql.Tx) error {
					if _, err := tx.Exec(`INSERT INTO counters(key, n) VALUES(?, 1)`, key); err != nil {
						return err
					}
					return bus.PublishTx(ctx, tx, Event{Type: "order.placed", Key: key, Data: []byte("1")})
				})
				if errors.Is(err, ErrClosed) {
					mu.Lock()
					closedKeys = append(closedKeys, key)
					mu.Unlock()
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := bus.Close(cctx); err != nil {
		t.Fatal(err)
	}
	tb.bus = nil
	wg.Wait()
	committed := 0
	for _, k := range closedKeys {
		var n int
		if err := tb.db.QueryRow(`SELECT count(*) FROM counters WHERE key = ?`, k).Scan(&n); err != nil {
			t.Fatal(err)
		}
		committed += n
	}
	if committed > 0 {
		t.Fatalf("%d of %d Bus.Tx calls that returned ErrClosed were committed, their events in the outbox", committed, len(closedKeys))
	}
}

// Nothing leaves the database before it is on disk (issue 6, item 11): the
// relay publishes an event only after an fsync of the WAL that followed its
// commit, and a subscriber acks only after one that followed its handler's
// commit. A quiet bus fsyncs only when asked, so a publish or ack that did
// not wait for one finds the count where it was at the commit.
func TestPublishAndAckWaitForTheWALFsync(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	bus := tb.bus
	syncs := func() uint64 { return bus.w.Stats().WALSyncs }
	type seen struct {
		what  string
		syncs uint64
	}
	got := make(chan seen, 16)
	for _, subj := range []string{bus.cfg.SubjectPrefix + ".>", "$JS.ACK.>"} {
		what := "publish"
		if strings.HasPrefix(subj, "$JS.ACK") {
			what = "ack"
		}
		s, err := bus.Conn().Subscribe(subj, func(*nats.Msg) { got <- seen{what, syncs()} })
		if err != nil {
			t.Fatal(err)
		}
		defer s.Unsubscribe()
	}
	if err := bus.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	var atHandler atomic.Uint64
	_, err := bus.Subscribe(ctx, "ledger", TxHandler(func(ctx context.Context, tx *sql.Tx, m Message) error {
		atHandler.Store(syncs())
		return nil
	}), SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Let the bus settle: the subscriber's own start writes are behind us.
	time.Sleep(200 * time.Millisecond)
	var atCommit uint64
	if err := bus.Tx(ctx, func(tx *sql.Tx) error {
		return bus.PublishTx(ctx, tx, Event{Type: "order.placed", Key: "k", Data: []byte("{}")})
	}); err != nil {
		t.Fatal(err)
	}
	atCommit = syncs()
	for _, want := range []string{"publish", "ack"} {
		select {
		case s := <-got:
			if s.what != want {
				t.Fatalf("saw %s, want %s first", s.what, want)
			}
			base := atCommit
			if want == "ack" {
				base = atHandler.Load()
			}
			if s.syncs <= base {
				t.Errorf("%s with %d WAL fsyncs, as many as at its commit (%d): it did not wait for one", want, s.syncs, base)
			}
		case <-time.After(time.Minute):
			t.Fatalf("no %s within a minute", want)
		}
	}
}
