package boxcar

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// txOutcome is what one Tx call of a group returned, or its panic.
type txOutcome struct {
	err      error
	panicVal any
}

// runGroup makes fns one group commit: it holds the write lock, starts one Tx
// call per fn, each queued before the next starts (so the group runs them in
// this order), then lets go of the lock and returns what each call returned.
func runGroup(t *testing.T, b *Bus, fns ...func(tx *sql.Tx) error) []txOutcome {
	t.Helper()
	ctx := context.Background()
	if err := b.w.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	out := make([]txOutcome, len(fns))
	done := make(chan int, len(fns))
	for i, fn := range fns {
		go func() {
			defer func() {
				if p := recover(); p != nil {
					out[i].panicVal = p
				}
				done <- i
			}()
			out[i].err = b.Tx(ctx, fn)
		}()
		waitQueued(t, b, i+1)
	}
	b.w.Unlock()
	for range fns {
		<-done
	}
	return out
}

// waitQueued waits until n Tx calls wait in b's queue.
func waitQueued(t *testing.T, b *Bus, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d Tx calls queued", n), 10*time.Second, func() (bool, string) {
		q := b.w.Stats().TxQueued
		return q == n, fmt.Sprintf("%d queued", q)
	})
}

func insertCounter(key string) func(tx *sql.Tx) error {
	return func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO counters(key, n) VALUES(?, 1)`, key)
		return err
	}
}

func counterKeys(t *testing.T, db *sql.DB) string {
	t.Helper()
	rows, err := db.Query(`SELECT key FROM counters ORDER BY key`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(keys, ",")
}

// Calls of one group commit in one SQLite transaction, in arrival order, and
// each call's failure or panic undoes its own writes only.
func TestTxGroupCommitIsolatesEachCall(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	ctx := context.Background()
	boom := errors.New("boom")
	before := tb.bus.w.Stats()
	var sawA int
	out := runGroup(t, tb.bus,
		insertCounter("a"),
		func(tx *sql.Tx) error {
			if err := insertCounter("b")(tx); err != nil {
				return err
			}
			return boom
		},
		func(tx *sql.Tx) error {
			if err := insertCounter("c")(tx); err != nil {
				return err
			}
			panic("handler bug")
		},
		func(tx *sql.Tx) error {
			// Serializable in arrival order: the first call's write is visible.
			if err := tx.QueryRow(`SELECT count(*) FROM counters WHERE key = 'a'`).Scan(&sawA); err != nil {
				return err
			}
			return insertCounter("d")(tx)
		},
		func(tx *sql.Tx) error {
			if err := insertCounter("e")(tx); err != nil {
				return err
			}
			return tb.bus.PublishTx(ctx, tx, Event{Type: "group.done", Key: "e", Data: []byte("e")})
		},
		func(tx *sql.Tx) error {
			// Publishes, then fails: the event must not be sent.
			if err := tb.bus.PublishTx(ctx, tx, Event{Type: "group.rolled_back", Key: "f"}); err != nil {
				return err
			}
			return boom
		},
	)
	if out[0].err != nil || out[3].err != nil || out[4].err != nil {
		t.Fatalf("calls 0, 3, 4 returned %v, %v, %v; want nil", out[0].err, out[3].err, out[4].err)
	}
	if !errors.Is(out[1].err, boom) || !errors.Is(out[5].err, boom) {
		t.Fatalf("calls 1 and 5 returned %v and %v, want their own error", out[1].err, out[5].err)
	}
	if out[2].panicVal != "handler bug" {
		t.Fatalf("call 2: panic %v, error %v; want its panic raised again in its caller", out[2].panicVal, out[2].err)
	}
	if sawA != 1 {
		t.Fatalf("call 3 saw %d rows of call 0, want 1", sawA)
	}
	if got := counterKeys(t, tb.db); got != "a,d,e" {
		t.Fatalf("committed keys %q, want a,d,e", got)
	}
	after := tb.bus.w.Stats()
	if c, n := after.TxCommits-before.TxCommits, after.TxCalls-before.TxCalls; c != 1 || n != 3 {
		t.Fatalf("%d commits for %d calls, want the three successful calls in one commit", c, n)
	}
	// A marker published after the group: once it is in the stream, so is
	// everything committed before it.
	if err := tb.bus.Publish(ctx, Event{Type: "group.marker", Key: "m"}); err != nil {
		t.Fatal(err)
	}
	waitRelayed(t, tb.bus, maxOutboxSeq(t, tb.db))
	msgs := streamMessages(t, tb.bus)
	if len(msgs) != 2 || msgs[0].Subject != tb.bus.layout.Subject("main", "group.done", "e") || msgs[1].Subject != tb.bus.layout.Subject("main", "group.marker", "m") {
		var subjects []string
		for _, m := range msgs {
			subjects = append(subjects, m.Subject)
		}
		t.Fatalf("stream holds %v, want the committed event and the marker", subjects)
	}
}

// When SQLite ends the whole transaction under a call (as it does on a full
// disk or an interrupted statement; here an INSERT OR ROLLBACK that
// conflicts, whose error the call returns), the calls that ran before it in
// the group fail with it and nothing of them is committed; the calls after
// it run in a new transaction. (ROLLBACK run as SQL is another case: see
// TestSQLCommitInsideTxIsReportedUnknown.)
func TestTxGroupSharesTheFateOfItsTransaction(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	if _, err := tb.db.Exec(`INSERT INTO counters(key, n) VALUES('taken', 1)`); err != nil {
		t.Fatal(err)
	}
	out := runGroup(t, tb.bus,
		insertCounter("a"),
		func(tx *sql.Tx) error {
			if err := insertCounter("b")(tx); err != nil {
				return err
			}
			_, err := tx.Exec(`INSERT OR ROLLBACK INTO counters(key, n) VALUES('taken', 2)`)
			return err
		},
		insertCounter("c"),
	)
	if out[0].err == nil || !strings.Contains(out[0].err.Error(), "nothing of it was committed") {
		t.Fatalf("call 0 returned %v, want the shared transaction's failure", out[0].err)
	}
	if out[1].err == nil {
		t.Fatal("the call whose statement ended the transaction returned nil")
	}
	if out[2].err != nil {
		t.Fatalf("call 2 returned %v, want nil (a new transaction)", out[2].err)
	}
	if got := counterKeys(t, tb.db); got != "c,taken" {
		t.Fatalf("committed keys %q, want c and the row from before", got)
	}
	// The write connection is healthy afterwards.
	if err := tb.bus.Tx(context.Background(), insertCounter("d")); err != nil {
		t.Fatal(err)
	}
	if got := counterKeys(t, tb.db); got != "c,d,taken" {
		t.Fatalf("committed keys %q, want c,d,taken", got)
	}
}

// A call whose fn ends the shared transaction itself (tx.Commit inside fn, a
// misuse) leaves the other calls' outcome unknown, and they are told so
// instead of being told "committed" or "nothing committed".
func TestTxGroupCallThatCommitsTheTransaction(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	out := runGroup(t, tb.bus,
		insertCounter("a"),
		func(tx *sql.Tx) error { return tx.Commit() },
		insertCounter("c"),
	)
	for i := range 2 {
		if out[i].err == nil || !strings.Contains(out[i].err.Error(), "unknown") || !errors.Is(out[i].err, sql.ErrTxDone) {
			t.Fatalf("call %d returned %v, want an unknown outcome (sql.ErrTxDone)", i, out[i].err)
		}
	}
	if out[2].err != nil {
		t.Fatalf("call 2 returned %v, want nil", out[2].err)
	}
	if got := counterKeys(t, tb.db); got != "a,c" {
		t.Fatalf("committed keys %q, want a,c (the misused Commit did commit a)", got)
	}
}

// A call whose context ends while it waits for a group returns the
// context's error, and its fn never runs.
func TestTxCanceledWhileQueued(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	if err := tb.bus.w.Lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{}, 1)
	res := make(chan error, 1)
	go func() {
		res <- tb.bus.Tx(ctx, func(tx *sql.Tx) error {
			ran <- struct{}{}
			return nil
		})
	}()
	waitQueued(t, tb.bus, 1)
	cancel()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Fatalf("Tx returned %v, want context.Canceled", err)
	}
	tb.bus.w.Unlock()
	if err := tb.bus.Tx(context.Background(), insertCounter("after")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ran:
		t.Fatal("the canceled call's fn ran")
	default:
	}
	waitQueued(t, tb.bus, 0) // the canceled call left the queue
}

// Calls still queued when Close starts return ErrClosed without running.
func TestTxQueuedAtClose(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	b := tb.bus
	if err := b.w.Lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() {
		res <- b.Tx(context.Background(), func(tx *sql.Tx) error {
			return errors.New("fn ran after Close")
		})
	}()
	waitQueued(t, b, 1)
	closed := make(chan error, 1)
	go func() { closed <- b.Close(context.Background()) }()
	waitFor(t, "Close started", 10*time.Second, func() (bool, string) { return b.closed.Load(), "" })
	b.w.Unlock()
	if err := <-res; !errors.Is(err, ErrClosed) {
		t.Fatalf("queued Tx returned %v, want ErrClosed", err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	tb.bus = nil // closed here
}

// A caller's context canceled while its statement runs does not interrupt
// the statement (which would make SQLite roll back the transaction the
// whole group shares): the other calls commit, and so does the statement.
func TestTxGroupCallCanceledMidStatement(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	if _, err := tb.db.Exec(`CREATE TABLE big(n INTEGER)`); err != nil {
		t.Fatal(err)
	}
	const rows = 1_000_000 // a statement long enough to be canceled mid-run
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := runGroup(t, tb.bus,
		insertCounter("a"),
		func(tx *sql.Tx) error {
			time.AfterFunc(20*time.Millisecond, cancel)
			start := time.Now()
			_, err := tx.ExecContext(ctx, `WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM c WHERE n < ?)
				INSERT INTO big SELECT n FROM c`, rows)
			if ctx.Err() == nil {
				t.Errorf("the statement ended after %v, before its context was canceled: make it longer", time.Since(start))
			}
			return err
		},
		insertCounter("c"),
	)
	for i, o := range out {
		if o.err != nil || o.panicVal != nil {
			t.Fatalf("call %d returned %v (panic %v), want nil", i, o.err, o.panicVal)
		}
	}
	if got := counterKeys(t, tb.db); got != "a,c" {
		t.Fatalf("committed keys %q, want a,c", got)
	}
	var n int
	if err := tb.db.QueryRow(`SELECT count(*) FROM big`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != rows {
		t.Fatalf("big has %d rows, want %d: the statement was interrupted", n, rows)
	}
}
