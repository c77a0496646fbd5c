package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// writerBundle is a database file, opened with Open and migrated, and a
// Writer on it; both are closed at the end of the test.
type writerBundle struct {
	path string
	db   *sql.DB
	w    *Writer
}

func setupWriter(t *testing.T) *writerBundle {
	t.Helper()
	return setupWriterConfig(t, WriterConfig{})
}

// openMigrated opens a database file of Open's, with Boxcar's tables,
// closed at the end of the test.
func openMigrated(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return db
}

func setupWriterConfig(t *testing.T, cfg WriterConfig) *writerBundle {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "w.db")
	db := openMigrated(t, path)
	if _, err := db.Exec(`CREATE TABLE counters (key TEXT PRIMARY KEY, n INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(ctx, db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := w.Close(ctx); err != nil {
			t.Errorf("close writer: %v", err)
		}
	})
	return &writerBundle{path: path, db: db, w: w}
}

// Tx calls racing Close: a group that committed while Close stops the
// syncer must still be made durable and reported committed, not failed
// (a caller told "failed" or ErrClosed retries, and publishes twice).
func TestTxRacingCloseIsToldTheTruth(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	wrong := 0
	for round := range 50 {
		db, err := Open(filepath.Join(t.TempDir(), fmt.Sprint(round, ".db")))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(`CREATE TABLE k (k TEXT PRIMARY KEY)`); err != nil {
			t.Fatal(err)
		}
		w, err := NewWriter(ctx, db, WriterConfig{})
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		failed := map[string]error{}
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := 0; ; i++ {
					key := fmt.Sprint(g, "-", i)
					err := w.Tx(ctx, func(tx *sql.Tx) error {
						_, err := tx.Exec(`INSERT INTO k VALUES (?)`, key)
						return err
					})
					if err != nil {
						mu.Lock()
						failed[key] = err
						mu.Unlock()
					}
					if errors.Is(err, ErrClosed) {
						return
					}
				}
			})
		}
		time.Sleep(20 * time.Millisecond)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := w.Close(cctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		wg.Wait()
		for key, err := range failed {
			var n int
			if err := db.QueryRow(`SELECT count(*) FROM k WHERE k = ?`, key).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n == 1 {
				if wrong++; wrong < 4 {
					t.Errorf("round %d: Tx %s reported %v, but its write is committed", round, key, err)
				}
			}
		}
		db.Close()
	}
	if wrong > 0 {
		t.Errorf("%d committed Tx calls were reported as failed", wrong)
	}
}

// After Close, the syncer still makes a commit durable: Durable fsyncs
// itself instead of failing (a subscriber's last batch, committed while the
// bus closes, acks only if it is durable).
func TestDurableAfterClose(t *testing.T) {
	t.Parallel()
	wb := setupWriter(t)
	ctx := context.Background()
	if err := wb.w.Write(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`CREATE TABLE t (x)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	before := wb.w.Stats().WALSyncs
	wb.w.syncer.stop()
	if err := wb.w.Durable(ctx); err != nil {
		t.Fatalf("Durable after the syncer stopped: %v", err)
	}
	if after := wb.w.Stats().WALSyncs; after <= before {
		t.Fatalf("Durable after stop did not fsync (%d fsyncs before, %d after)", before, after)
	}
}

// A Tx call waiting for the write lock, which a transaction of the app's
// holds (left open by a goroutine gone away), returns ErrClosed as soon as
// the writer refuses Tx calls (Bus.Close), not after the busy timeout, nor
// never.
func TestRefuseTxWakesWaitingTx(t *testing.T) {
	t.Parallel()
	wb := setupWriter(t) // busy timeout 10s
	ctx := context.Background()
	txc := make(chan *sql.Tx, 1)
	go func() {
		tx, err := wb.db.BeginTx(ctx, nil)
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
	done := make(chan error, 1)
	go func() { done <- wb.w.Tx(ctx, func(tx *sql.Tx) error { return nil }) }()
	for wb.w.Stats().AppWaiting == 0 {
		time.Sleep(time.Millisecond)
	}
	if held := wb.w.Stats().LockHeldFor; held <= 0 {
		t.Errorf("LockHeldFor %v while a transaction holds the lock", held)
	}
	wb.w.RefuseTx()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("the waiting Tx returned %v, want ErrClosed", err)
	}
}

// Close does not give the write connection back to the pool: there it
// would run the app's statements as the writer's, past the gate.
func TestWriterCloseDropsItsConnection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	wb := setupWriter(t)
	if err := wb.w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	var conns []*sql.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 4 { // more than the pool keeps idle (2)
		c, err := wb.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if dc, ok := rawConn(c).(*conn); !ok || dc.writer.Load() {
			t.Fatalf("a connection of the pool after Close: writer's %v (a conn of Open's: %v)", ok && dc.writer.Load(), ok)
		}
	}
}

// Regression: a Tx function that called runtime.Goexit (t.FailNow in an
// app's test) never returned to its group, and nothing released the write
// lock or ended the transaction: every later writer waited for a lock
// nobody held. The goroutine running the group, which may be another
// caller's, ends; every other call of the group gets an error, nothing of
// the group is committed, and the writer goes on.
func TestTxFunctionThatCallsGoexitDoesNotWedgeTheWriter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupWriter(t)
	insert := func(key string) func(tx *sql.Tx) error {
		return func(tx *sql.Tx) error {
			_, err := tx.Exec(`INSERT INTO counters VALUES (?, 1)`, key)
			return err
		}
	}
	fns := map[string]func(tx *sql.Tx) error{
		"a": insert("a"),
		"b": func(tx *sql.Tx) error {
			if _, err := tx.Exec(`INSERT INTO counters VALUES ('b', 1)`); err != nil {
				return err
			}
			runtime.Goexit()
			return nil
		},
		"c": insert("c"),
	}
	// Queue the three in one group: hold the lock until all wait.
	if err := b.w.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	type result struct {
		returned bool
		err      error
	}
	var mu sync.Mutex
	results := map[string]result{}
	var wg sync.WaitGroup
	for i, name := range []string{"a", "b", "c"} {
		wg.Go(func() {
			var r result
			defer func() {
				mu.Lock()
				results[name] = r
				mu.Unlock()
			}()
			r.err = b.w.Tx(ctx, fns[name])
			r.returned = true
		})
		waitQueued(t, b.w, i+1)
	}
	b.w.Unlock()
	all := make(chan struct{})
	go func() { wg.Wait(); close(all) }()
	select {
	case <-all:
	case <-time.After(30 * time.Second):
		t.Fatal("the Tx calls grouped with one whose function called runtime.Goexit did not return in 30s")
	}
	exited := 0
	for _, name := range []string{"a", "b", "c"} {
		r := results[name]
		switch {
		case !r.returned:
			exited++ // the goroutine that ran the group
		case r.err == nil:
			t.Errorf("Tx %s: nil error, but its group's goroutine ended inside b's function", name)
		case name == "c" && !errors.Is(r.err, ErrTxNotRun):
			t.Errorf("Tx c, queued after b: %v, want ErrTxNotRun (it never ran)", r.err)
		case name != "c" && !strings.Contains(r.err.Error(), "Goexit"):
			t.Errorf("Tx %s: %v, want an error naming runtime.Goexit", name, r.err)
		}
	}
	if exited != 1 {
		t.Errorf("%d Tx callers did not return, want 1 (the one that ran the group): %+v", exited, results)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := b.w.Tx(cctx, insert("d")); err != nil {
		t.Fatalf("Tx after a Tx function called runtime.Goexit: %v", err)
	}
	if keys := counterKeys(t, b.db); fmt.Sprint(keys) != "[d]" {
		t.Errorf("rows %v, want [d]: nothing of the group that ended in Goexit is committed", keys)
	}
}

// Regression, the same on Write: a function that calls runtime.Goexit left
// its transaction open on the write connection, and no later write could
// begin.
func TestWriteFunctionThatCallsGoexitDoesNotWedgeTheWriter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupWriter(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.w.Write(ctx, func(tx *sql.Tx) error {
			if _, err := tx.Exec(`INSERT INTO counters VALUES ('a', 1)`); err != nil {
				return err
			}
			runtime.Goexit()
			return nil
		})
	}()
	<-done
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := b.w.Write(cctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO counters VALUES ('b', 1)`)
		return err
	}); err != nil {
		t.Fatalf("Write after a Write function called runtime.Goexit: %v", err)
	}
	var n int
	if err := b.db.QueryRow(`SELECT count(*) FROM counters WHERE key = 'a'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("the Goexit write's row: %d, %v; want it rolled back", n, err)
	}
}

func waitQueued(t *testing.T, w *Writer, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for w.Stats().TxQueued < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d Tx calls queued, want %d", w.Stats().TxQueued, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// counterKeys returns the keys of the counters table, in order.
func counterKeys(t *testing.T, db *sql.DB) []string {
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
	return keys
}
