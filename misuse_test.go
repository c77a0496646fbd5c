package boxcar

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/boxcar-bus/boxcar/sqlite"
	_ "github.com/mattn/go-sqlite3" // "sqlite3": a database not from sqlite.Open
)

// Misuse that used to hang or corrupt: calls back into the bus from code
// that holds its writer, errors of SQLite that end a transaction and are
// swallowed, databases Boxcar cannot serve, the app's writes locked out by
// a busy subscriber.

// Regression: Publish inside a Tx function waited for the lock its own
// group held: the bus deadlocked, and Close hung after it.
func TestPublishInsideTxFailsAtOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	var inner error
	done := make(chan error, 1)
	go func() {
		done <- tb.bus.Tx(ctx, func(tx *sql.Tx) error {
			inner = tb.bus.Publish(ctx, Event{Type: "order.placed", Key: "k", Data: []byte("1")})
			return nil
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Tx: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("a Tx whose function calls Publish never returned: the bus is deadlocked")
	}
	if !errors.Is(inner, ErrReentrant) || !strings.Contains(inner.Error(), "use the tx you were given") {
		t.Fatalf("Publish inside Tx: got %v, want ErrReentrant naming the fix", inner)
	}
	if got := maxOutboxSeq(t, tb.db); got != 0 {
		t.Fatalf("the refused Publish wrote seq %d", got)
	}
	// The bus is healthy: a Publish now works, and Close keeps its deadline.
	if err := tb.bus.Publish(ctx, Event{Type: "order.placed", Key: "k", Data: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := tb.bus.Close(cctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	tb.bus = nil
}

// Regression: Publish (or Tx) inside a TxHandler stalled every writer of
// the app for HandlerTimeout per attempt, and its write committed on every
// attempt. It fails at once now; the event is dead-lettered (retrying the
// same code cannot help), and nothing of the inner call is written.
func TestPublishInsideTxHandlerFailsAtOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	var calls atomic.Int64
	var innerErr atomic.Value
	sub, err := tb.bus.Subscribe(ctx, "nested", TxHandler(func(ctx context.Context, tx *sql.Tx, m Message) error {
		calls.Add(1)
		err := tb.bus.Publish(ctx, Event{Type: "order.followup", Key: m.Key, Data: []byte("x")})
		innerErr.Store(fmt.Sprint(err))
		return err
	}), SubscribeOptions{Types: []string{"order.placed"}, HandlerTimeout: time.Hour, MinBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 1)
	waitFor(t, "the event to be dead-lettered", time.Minute, func() (bool, string) {
		st, err := sub.Stats(ctx)
		return err == nil && st.DeadLettered == 1, fmt.Sprintf("%+v %v, handler calls %d", st, err, calls.Load())
	})
	if got, _ := innerErr.Load().(string); !strings.Contains(got, ErrReentrant.Error()) {
		t.Fatalf("the handler's Publish returned %q, want ErrReentrant", got)
	}
	if calls.Load() != 1 {
		t.Fatalf("the handler ran %d times, want once: ErrReentrant is permanent", calls.Load())
	}
	// Only the event itself is in the outbox: the inner Publish wrote nothing.
	if got := maxOutboxSeq(t, tb.db); got != 1 {
		t.Fatalf("outbox ends at seq %d, want 1", got)
	}
	dl := readDeadLetters(t, tb.bus, 1)
	if r := dl[0].Header.Get("Boxcar-Dead-Reason"); r != "permanent" {
		t.Fatalf("dead letter reason %q, want permanent", r)
	}
}

// A TxHandler that publishes from a goroutine of its own (errgroup style,
// with the handler's context): the goroutine-ID check cannot see it, and it
// waited for the writer its handler holds, with every other writer behind
// it. The handler's context is marked: refused at once.
func TestPublishFromGoroutineOfTxHandlerFailsAtOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	inner := make(chan error, 1)
	_, err := tb.bus.Subscribe(ctx, "nested", TxHandler(func(ctx context.Context, tx *sql.Tx, m Message) error {
		done := make(chan error)
		go func() { done <- tb.bus.Publish(ctx, Event{Type: "order.followup", Key: m.Key, Data: []byte("x")}) }()
		err := <-done
		select {
		case inner <- err:
		default:
		}
		return err
	}), SubscribeOptions{Types: []string{"order.placed"}, HandlerTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 1)
	if err := <-inner; !errors.Is(err, ErrReentrant) {
		t.Fatalf("Publish from a goroutine of a TxHandler, with its context: %v, want ErrReentrant", err)
	}
	// The app's own writes are not held up.
	if err := publishCounted(ctx, tb.bus, "order.other", "k2"); err != nil {
		t.Fatal(err)
	}
}

// The app's own transaction, on a database from sqlite.Open, and a Publish
// on the same goroutine: refused at once instead of waiting for itself
// (it used to fail after the 10 s busy timeout, "database is locked").
func TestPublishInsideOwnTransactionFailsAtOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	tx, err := tb.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if err := tb.bus.Publish(ctx, Event{Type: "order.placed", Key: "k", Data: []byte("1")}); !errors.Is(err, ErrReentrant) {
		t.Fatalf("Publish inside the app's own open transaction: got %v, want ErrReentrant", err)
	}
	// The right way works.
	if err := tb.bus.PublishTx(ctx, tx, Event{Type: "order.placed", Key: "k", Data: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	waitRelayed(t, tb.bus, 1)
}

// Regression: a Tx function that swallowed the error of a statement that
// rolls back the whole transaction (INSERT OR ROLLBACK) went on in
// autocommit: its later writes committed one by one, and every call of the
// group was told "no transaction is active". Now the call's later
// statements fail, the calls that shared the transaction are told nothing
// of it committed, and the calls after it run in a new one.
func TestTxCallThatSwallowsARollback(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	if _, err := tb.db.Exec(`INSERT INTO counters(key, n) VALUES('taken', 1)`); err != nil {
		t.Fatal(err)
	}
	var later error
	out := runGroup(t, tb.bus,
		insertCounter("a"),
		func(tx *sql.Tx) error {
			tx.Exec(`INSERT OR ROLLBACK INTO counters(key, n) VALUES('taken', 2)`) // error ignored
			_, later = tx.Exec(`INSERT INTO counters(key, n) VALUES('b', 1)`)
			return nil
		},
		insertCounter("c"),
	)
	if later == nil {
		t.Errorf("the statement after SQLite ended the transaction ran: it must fail")
	}
	for i := range 2 {
		if out[i].err == nil || !strings.Contains(out[i].err.Error(), "nothing of it was committed") {
			t.Errorf("call %d returned %v, want the shared transaction's failure", i, out[i].err)
		}
	}
	if out[2].err != nil {
		t.Errorf("call 2 returned %v, want nil (a new transaction)", out[2].err)
	}
	if got := counterKeys(t, tb.db); got != "c,taken" {
		t.Fatalf("committed keys %q, want c,taken: nothing of the ended transaction may commit", got)
	}
}

// Regression: a TxHandler that swallowed such an error had its later writes
// and its dedupe row commit on their own; its retry was then skipped as
// already handled (its effect lost), and the key retried for ever without
// counting attempts. Now nothing of the batch commits, the event counts its
// attempts and is dead-lettered after MaxAttempts, and other keys go on.
func TestTxHandlerThatSwallowsARollback(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	if _, err := tb.db.Exec(`CREATE TABLE taken(k TEXT PRIMARY KEY); INSERT INTO taken VALUES('x')`); err != nil {
		t.Fatal(err)
	}
	rec := recordingHandler("ledger")
	var badCalls atomic.Int64
	sub, err := tb.bus.Subscribe(ctx, "ledger", TxHandler(func(ctx context.Context, tx *sql.Tx, m Message) error {
		if m.Key == "bad" {
			badCalls.Add(1)
			tx.ExecContext(ctx, `INSERT OR ROLLBACK INTO taken VALUES('x')`) // error ignored
			tx.ExecContext(ctx, `INSERT INTO applied(subscriber, event_id, type, key, n) VALUES('ledger-bad', ?, '', 'bad', 0)`, m.ID)
			return nil
		}
		return rec.tx(ctx, tx, m)
	}), SubscribeOptions{MaxAttempts: 3, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		publishN(t, tb.bus, "good-"+fmt.Sprint(i), 3)
	}
	if err := tb.bus.Publish(ctx, Event{Type: "order.placed", Key: "bad", Data: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, tb.db, "ledger", 15)
	waitFor(t, "the bad event to be dead-lettered", time.Minute, func() (bool, string) {
		st, err := sub.Stats(ctx)
		return err == nil && st.DeadLettered == 1, fmt.Sprintf("%+v %v", st, err)
	})
	if n := countApplied(t, tb.db, "ledger-bad"); n != 0 {
		t.Fatalf("the bad handler's write after the rollback committed %d times", n)
	}
	if hasDedupeRow(t, tb.db, "ledger", "bad") {
		t.Fatal("the bad event has a dedupe row: its effects were not committed")
	}
	if badCalls.Load() != 3 {
		t.Fatalf("the bad handler ran %d times, want MaxAttempts (3)", badCalls.Load())
	}
	checkExactlyOnceInOrder(t, tb.db, "ledger")
}

// Regression: the app's own transaction (database from sqlite.Open) that
// SQLite ended on its own (INSERT OR ROLLBACK): a PublishTx with it ran in
// autocommit and committed the event by itself, while the app's Commit
// failed and its writes were gone. The guard covers the app's transactions
// too: PublishTx fails, nothing is in the outbox.
func TestPublishTxAfterSQLiteEndedTheAppsTx(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	if _, err := tb.db.Exec(`INSERT INTO counters(key, n) VALUES('taken', 1)`); err != nil {
		t.Fatal(err)
	}
	tx, err := tb.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`INSERT INTO counters(key, n) VALUES('mine', 1)`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`INSERT OR ROLLBACK INTO counters(key, n) VALUES('taken', 2)`); err == nil {
		t.Fatal("want a conflict")
	}
	// The app handles the conflict by publishing a rejection in the same tx.
	perr := tb.bus.PublishTx(ctx, tx, Event{Type: "order.rejected", Key: "taken", Data: []byte("1")})
	if !errors.Is(perr, sqlite.ErrTxEnded) {
		t.Errorf("PublishTx in a transaction SQLite ended: %v, want ErrTxEnded", perr)
	}
	if err := tx.Commit(); err == nil {
		t.Error("Commit of a transaction SQLite ended succeeded")
	}
	if got := maxOutboxSeq(t, tb.db); got != 0 {
		t.Fatalf("the transaction was rolled back but its event is in the outbox at seq %d", got)
	}
	// The connection is usable again.
	if err := publishCounted(ctx, tb.bus, "order.placed", "k"); err != nil {
		t.Fatal(err)
	}
}

// Regression: a Tx function that ended the shared transaction with SQL
// (COMMIT) instead of returning was told "nothing of it was committed",
// while its writes and its event were committed. Now every call of the
// group is told the outcome is unknown.
func TestSQLCommitInsideTxIsReportedUnknown(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	out := runGroup(t, tb.bus,
		insertCounter("a"),
		func(tx *sql.Tx) error {
			if _, err := tx.Exec(`INSERT INTO counters(key, n) VALUES('b', 1)`); err != nil {
				return err
			}
			_, err := tx.Exec(`COMMIT`)
			return err
		},
		insertCounter("c"),
	)
	for i := range 2 {
		if !errors.Is(out[i].err, sqlite.ErrTxEndedByStatement) || !strings.Contains(out[i].err.Error(), "unknown") {
			t.Errorf("call %d returned %v, want an unknown outcome (ErrTxEndedByStatement)", i, out[i].err)
		}
	}
	if out[2].err != nil {
		t.Errorf("call 2 returned %v, want nil (a new transaction)", out[2].err)
	}
	if got := counterKeys(t, tb.db); got != "a,b,c" {
		t.Fatalf("committed keys %q, want a,b,c (the COMMIT did commit)", got)
	}
}

// A TxHandler that runs COMMIT as SQL commits its writes without its
// event's dedupe row: running it again could apply it twice. It is
// dead-lettered at its first attempt, as permanent; other keys go on.
func TestTxHandlerThatCommitsWithSQL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	rec := recordingHandler("ledger")
	var badCalls atomic.Int64
	sub, err := tb.bus.Subscribe(ctx, "ledger", TxHandler(func(ctx context.Context, tx *sql.Tx, m Message) error {
		if m.Key == "bad" {
			badCalls.Add(1)
			_, err := tx.ExecContext(ctx, `COMMIT`)
			return err
		}
		return rec.tx(ctx, tx, m)
	}), SubscribeOptions{MaxAttempts: 5, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		publishN(t, tb.bus, "good-"+fmt.Sprint(i), 3)
	}
	if err := tb.bus.Publish(ctx, Event{Type: "order.placed", Key: "bad", Data: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, tb.db, "ledger", 9)
	waitFor(t, "the bad event to be dead-lettered", time.Minute, func() (bool, string) {
		st, err := sub.Stats(ctx)
		return err == nil && st.DeadLettered == 1, fmt.Sprintf("%+v %v", st, err)
	})
	if n := badCalls.Load(); n != 1 {
		t.Fatalf("the handler that commits with SQL ran %d times, want 1", n)
	}
	dl, _, err := tb.bus.DeadLetters(ctx, DeadLetterFilter{})
	if err != nil || len(dl) != 1 || dl[0].Reason != "permanent" {
		t.Fatalf("dead letters %+v (%v): want one, reason permanent", dl, err)
	}
	checkExactlyOnceInOrder(t, tb.db, "ledger")
}

// Regression: the app leaked a transaction (an early return without
// Rollback). Its other writes failed after the busy timeout, but a
// Bus.Publish waited for ever, and Close neither failed it nor woke it: it
// outlived Close. Now Close wakes it with ErrClosed, and without a Close it
// fails after the busy timeout with ErrBusy, saying how long the lock has
// been held; Stats shows the holder's age meanwhile.
func TestLeakedAppTxDoesNotHangPublish(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setupOptions(t, Config{}, sqlite.Options{BusyTimeout: 500 * time.Millisecond})
	// Begun on a goroutine that then goes away (on this one, a Publish is
	// refused at once with ErrReentrant), and never ended until the end.
	txc := make(chan *sql.Tx, 1)
	go func() {
		tx, err := tb.db.BeginTx(ctx, nil)
		if err != nil {
			t.Error(err)
		}
		txc <- tx
	}()
	tx := <-txc
	if tx == nil {
		t.FailNow()
	}
	defer tx.Rollback()
	err := tb.bus.Publish(ctx, Event{Type: "order.placed", Key: "k", Data: []byte("1")})
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "held for") {
		t.Fatalf("Publish while a leaked transaction holds the writer: %v, want ErrBusy saying how long it is held", err)
	}
	st, err := tb.bus.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.WriterHeldFor < 500*time.Millisecond {
		t.Errorf("Stats.WriterHeldFor %v with a transaction open for longer than the busy timeout", st.WriterHeldFor)
	}
	done := make(chan error, 1)
	go func() { done <- tb.bus.Publish(ctx, Event{Type: "order.placed", Key: "k", Data: []byte("2")}) }()
	waitFor(t, "the Publish to wait", time.Minute, func() (bool, string) {
		st, err := tb.bus.Stats(ctx)
		return err == nil && st.WriterWaiting > 0, fmt.Sprint(st.WriterWaiting, err)
	})
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := tb.bus.Close(cctx); err == nil {
		t.Error("Close returned nil while a transaction of the app's holds the writer")
	}
	tb.bus = nil
	// ErrClosed, or ErrBusy if the busy timeout came first on a slow
	// machine (sqlite's TestRefuseTxWakesWaitingTx checks the wake itself).
	if err := <-done; !errors.Is(err, ErrClosed) && !errors.Is(err, ErrBusy) {
		t.Fatalf("the Publish waiting at Close returned %v, want ErrClosed", err)
	}
}

// Regression: a database from a plain sql.Open kept journal_mode=delete;
// under concurrent writers most transactions failed with "database is
// locked". Open refuses it and says what to do.
func TestOpenRefusesADatabaseNotInWALMode(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db, err := sql.Open("sqlite3", filepath.Join(dir, "plain.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	bus, err := Open(context.Background(), db, Config{Dir: filepath.Join(dir, "nats")})
	if err == nil {
		bus.Close(context.Background())
		t.Fatal("Open accepted a database in journal_mode=delete")
	}
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "WAL") || !strings.Contains(err.Error(), "sqlite.Open") {
		t.Fatalf("got %v, want ErrInvalidConfig naming WAL and sqlite.Open", err)
	}
}

// A WAL database not from sqlite.Open works, and the log says once that its
// own commits are found by polling.
func TestOpenLogsPollingForAForeignDatabase(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "wal.db")+"?_journal_mode=WAL&_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(appSchema); err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	bus, err := Open(context.Background(), db, Config{Dir: filepath.Join(dir, "nats"), Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close(context.Background())
	if n := strings.Count(logs.String(), "found by the relay's poll"); n != 1 {
		t.Fatalf("the polling notice was logged %d times, want once; log:\n%s", n, logs.String())
	}
	// And it is served: an app transaction's event arrives.
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.PublishTx(context.Background(), tx, Event{Type: "order.placed", Key: "k", Data: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	waitRelayed(t, bus, 1)
}

// Regression: a subscriber's batch of slow handlers held the writer for
// the whole batch (up to BatchSize events), back to back with the next: the
// app's own transactions waited out SQLite's busy timeout and failed with
// "database is locked", Bus.Tx calls waited seconds. Batches now commit
// early, and the app's writes go between them: here they all commit while
// the subscriber still has most of its backlog to do.
func TestAppWritesGetTheWriterBetweenBatches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	const backlog = 60 // 1.2 s of handler time
	for i := range backlog {
		publishN(t, tb.bus, fmt.Sprintf("slow-%d", i), 1)
	}
	waitRelayed(t, tb.bus, backlog)
	rec := recordingHandler("slow")
	_, err := tb.bus.Subscribe(ctx, "slow", TxHandler(func(ctx context.Context, tx *sql.Tx, m Message) error {
		time.Sleep(20 * time.Millisecond)
		return rec.tx(ctx, tx, m)
	}), SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitApplied(t, tb.db, "slow", 1) // the subscriber is busy
	for i := range 5 {
		// The app's own transaction...
		tx, err := tb.db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatalf("app transaction %d: begin: %v", i, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO counters(key, n) VALUES(?, 1)`, fmt.Sprint("own-", i)); err != nil {
			t.Fatalf("app transaction %d: %v", i, err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatalf("app transaction %d: commit: %v", i, err)
		}
		// ... and Bus.Tx.
		if err := tb.bus.Tx(ctx, insertCounter(fmt.Sprint("bus-", i))); err != nil {
			t.Fatalf("Bus.Tx %d: %v", i, err)
		}
	}
	if n := countApplied(t, tb.db, "slow"); n > backlog/2 {
		t.Fatalf("the app's 10 writes finished only after the subscriber had applied %d of %d events: they waited for its batches", n, backlog)
	}
	waitApplied(t, tb.db, "slow", backlog)
}

// A TxHandler that overruns HandlerTimeout is abandoned and its batch's lock
// released. When it returns at last, it must not hand the gate's ownership
// back to its worker: a Tx that holds the gate meanwhile would lose its
// protection (a Publish inside it would wait for itself).
func TestAbandonedHandlerKeepsTheReentrancyGuard(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	started, returned := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	_, err := tb.bus.Subscribe(ctx, "slow", TxHandler(func(ctx context.Context, tx *sql.Tx, m Message) error {
		if first.CompareAndSwap(false, true) {
			close(started)
			time.Sleep(900 * time.Millisecond) // ignores ctx: abandoned at 200ms + grace
			close(returned)
		}
		return nil
	}), SubscribeOptions{HandlerTimeout: 200 * time.Millisecond, MinBackoff: 5 * time.Second, MaxBackoff: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 1)
	<-started
	waitFor(t, "the handler to be abandoned", time.Minute, func() (bool, string) {
		st, err := tb.bus.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(st.Subscribers) == 1 && st.Subscribers[0].Failures > 0, fmt.Sprintf("%+v", st.Subscribers)
	})
	var inner error
	if err := tb.bus.Tx(ctx, func(tx *sql.Tx) error {
		<-returned
		time.Sleep(100 * time.Millisecond) // the handler's deferred restore runs
		ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		inner = tb.bus.Publish(ictx, Event{Type: "order.placed", Key: "k", Data: []byte("1")})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(inner, ErrReentrant) {
		t.Fatalf("Publish inside Tx after an abandoned handler returned: %v, want ErrReentrant", inner)
	}
}

// The same, with the gate free when the abandoned handler returns: its
// worker must not become the owner of a gate it does not hold, which would
// refuse each of its later batches with ErrReentrant (on an idle bus, the
// retried event would never be handled).
func TestAbandonedHandlerDoesNotLockOutItsWorker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	logs := &logBuffer{}
	tb := setup(t, Config{Logger: logs.logger()})
	var calls atomic.Int64
	var handled atomic.Bool
	_, err := tb.bus.Subscribe(ctx, "slow", TxHandler(func(ctx context.Context, tx *sql.Tx, m Message) error {
		if calls.Add(1) == 1 {
			time.Sleep(900 * time.Millisecond) // abandoned before it returns
			return nil
		}
		handled.Store(true)
		return nil
	}), SubscribeOptions{Workers: 1, HandlerTimeout: 200 * time.Millisecond, MinBackoff: 1500 * time.Millisecond, MaxBackoff: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 1)
	waitFor(t, "the retried event to be handled", time.Minute, func() (bool, string) {
		return handled.Load(), fmt.Sprintf("handler calls %d; logs:\n%s", calls.Load(), logs.String())
	})
}

// Regression: a Tx function that ended its goroutine with runtime.Goexit
// (t.Fatal or t.FailNow inside it, in an app's test) never returned to its
// group commit: nothing released the write lock or ended the SQLite
// transaction, and every later writer failed with ErrBusy, for ever.
func TestGoexitInsideBusTxDoesNotWedgeTheBus(t *testing.T) {
	ctx := context.Background()
	tb := setupOptions(t, Config{}, sqlite.Options{BusyTimeout: time.Second})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tb.bus.Tx(ctx, func(tx *sql.Tx) error {
			runtime.Goexit()
			return nil
		})
	}()
	<-done
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := tb.bus.Publish(cctx, Event{Type: "order.placed", Key: "k", Data: []byte("1")}); err != nil {
		st, _ := tb.bus.Stats(ctx)
		// The bus cannot close cleanly now either; do not fail the cleanup on it.
		cl, ccancel := context.WithTimeout(ctx, time.Second)
		tb.bus.Close(cl)
		ccancel()
		tb.bus = nil
		t.Fatalf("Publish after a Tx function called runtime.Goexit: %v (writer held for %v)", err, st.WriterHeldFor)
	}
}

// A handler that calls runtime.Goexit (t.FailNow in an app's test) ends
// only the goroutine the bus runs it on: the call is treated as one that
// hung (abandoned at HandlerTimeout, retried with its attempt counted), and
// the key and the app's writers go on.
func TestGoexitInAHandlerIsRetried(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"tx", "plain"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			tb := setup(t, Config{})
			var calls, handled atomic.Int64
			var attempts sync.Map
			handle := func(m Message) {
				if calls.Add(1) == 1 {
					runtime.Goexit()
				}
				attempts.Store(string(m.Data), m.Attempt)
				handled.Add(1)
			}
			var h Handler = HandlerFunc(func(ctx context.Context, m Message) error { handle(m); return nil })
			if kind == "tx" {
				h = TxHandler(func(ctx context.Context, tx *sql.Tx, m Message) error { handle(m); return nil })
			}
			sub, err := tb.bus.Subscribe(ctx, "goexit", h, SubscribeOptions{HandlerTimeout: 300 * time.Millisecond, MinBackoff: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close(ctx)
			publishN(t, tb.bus, "k", 3)
			waitFor(t, "every event handled", time.Minute, func() (bool, string) {
				return handled.Load() == 3, fmt.Sprintf("calls %d, handled %d", calls.Load(), handled.Load())
			})
			if n := calls.Load(); n != 4 {
				t.Errorf("%d handler calls, want 4 (the one that exited, then each event once)", n)
			}
			first := ""
			attempts.Range(func(k, v any) bool {
				if v.(int) == 2 {
					first = k.(string)
				}
				return true
			})
			if first == "" {
				t.Error("no event was handled at attempt 2: the call that exited was not counted as an attempt")
			}
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := tb.bus.Publish(cctx, Event{Type: "order.placed", Key: "z", Data: []byte("1")}); err != nil {
				t.Fatalf("Publish after a handler called runtime.Goexit: %v", err)
			}
		})
	}
}
