package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// When both kinds of writer wait, they take turns: every app write waiting
// when a background write ends goes before the next background write,
// whatever the number of background writes queued before them; app writes
// that arrive meanwhile wait for the next turn.
func TestGateTakesTurns(t *testing.T) {
	t.Parallel()
	var g gate
	ctx := context.Background()
	if err := g.lock(ctx, bgClass, 0); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	start := func(name string, bg bool) {
		granted, _ := g.enter(bg)
		wg.Go(func() {
			<-granted
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
			g.unlock()
		})
	}
	// Queued in this order while a background write holds the gate.
	start("bg1", bgClass)
	start("bg2", bgClass)
	start("bg3", bgClass)
	start("app1", appClass)
	start("app2", appClass)
	g.unlock()
	wg.Wait()
	if got := strings.Join(order, " "); got != "app1 app2 bg1 bg2 bg3" {
		t.Fatalf("granted in order %s, want app1 app2 bg1 bg2 bg3", got)
	}
	// A steady stream of app writes does not starve a background write:
	// those that arrive during an app turn wait for the next one.
	order = nil
	if err := g.lock(ctx, bgClass, 0); err != nil {
		t.Fatal(err)
	}
	start("app3", appClass)
	start("bg4", bgClass)
	granted, _ := g.enter(appClass) // app4, queued after bg4
	g.unlock()                      // an app turn: app3, then app4, both waiting now
	<-granted
	mu.Lock()
	order = append(order, "app4")
	mu.Unlock()
	start("app5", appClass) // arrives during app4's hold
	start("bg5", bgClass)
	g.unlock()
	wg.Wait()
	if got := strings.Join(order, " "); got != "app3 app4 bg4 app5 bg5" {
		t.Fatalf("granted in order %s, want app3 app4 bg4 app5 bg5", got)
	}
}

// A goroutine that holds the gate and asks for it again is refused at once.
func TestGateRefusesItsHolder(t *testing.T) {
	t.Parallel()
	var g gate
	ctx := context.Background()
	if err := g.lock(ctx, appClass, 0); err != nil {
		t.Fatal(err)
	}
	if err := g.lock(ctx, bgClass, 0); !errors.Is(err, ErrReentrant) {
		t.Fatalf("second lock on the holder's goroutine: got %v, want ErrReentrant", err)
	}
	// Another goroutine waits, with its context.
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	errc := make(chan error)
	go func() { errc <- g.lock(cctx, bgClass, 0) }()
	if err := <-errc; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("another goroutine: got %v, want its context's deadline", err)
	}
	g.unlock()
	if app, bg := g.waiting(); app != 0 || bg != 0 {
		t.Fatalf("%d app and %d background waiters left after a withdrawn wait", app, bg)
	}
}

// An app's own transaction on a database from Open waits for Boxcar's
// writer in the queue, not in SQLite's busy handler, and at most its busy
// timeout, failing then with "database is locked" as SQLite would.
func TestAppTransactionsQueueForTheWriter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "q.db")
	db, err := OpenOptions(path, Options{BusyTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE t(x)`); err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(ctx, db, WriterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(ctx)

	// Held (by another goroutine: this one would be refused as the
	// holder) past the busy timeout: the app's transaction gives up.
	release := holdLock(t, w)
	if _, err := db.BeginTx(ctx, nil); err == nil || !strings.Contains(err.Error(), "database is locked") {
		t.Fatalf("BeginTx while the writer is held past the busy timeout: got %v, want database is locked", err)
	}
	// Held briefly: it waits in the queue and gets the writer when it is
	// released.
	got := make(chan error, 1)
	go func() {
		tx, err := db.BeginTx(ctx, nil)
		if err == nil {
			_, err = tx.Exec(`INSERT INTO t VALUES(1)`)
			if err == nil {
				err = tx.Commit()
			}
		}
		got <- err
	}()
	waitWaiting(t, w, 1)
	release()
	if err := <-got; err != nil {
		t.Fatalf("the queued transaction: %v", err)
	}
	// A statement outside a transaction queues too.
	release = holdLock(t, w)
	go func() {
		_, err := db.Exec(`INSERT INTO t VALUES(2)`)
		got <- err
	}()
	waitWaiting(t, w, 1)
	release()
	if err := <-got; err != nil {
		t.Fatalf("the queued statement: %v", err)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM t`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("%d rows (%v), want 2", n, err)
	}
}

// holdLock takes w's lock on a goroutine of its own and holds it until the
// func returned is called.
func holdLock(t *testing.T, w *Writer) (release func()) {
	t.Helper()
	locked, done := make(chan error), make(chan struct{})
	go func() {
		err := w.Lock(context.Background())
		locked <- err
		if err == nil {
			<-done
			w.Unlock()
		}
	}()
	if err := <-locked; err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() { once.Do(func() { close(done) }) }
	t.Cleanup(release)
	return release
}

// waitWaiting waits until n app writers wait for w's lock.
func waitWaiting(t *testing.T, w *Writer, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for w.Stats().AppWaiting != n {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %d app writers to queue; %d do", n, w.Stats().AppWaiting)
		}
		time.Sleep(time.Millisecond)
	}
}

// Regression: a write that SQLite rolled back as a whole (INSERT OR
// ROLLBACK) and whose error was swallowed let the statements after it run,
// and commit, one at a time. The guard refuses them, and the writer
// reports the transaction gone.
func TestWriteAfterSQLiteEndedTheTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	wb := setupWriter(t)
	if _, err := wb.db.Exec(`INSERT INTO counters(key, n) VALUES('taken', 1)`); err != nil {
		t.Fatal(err)
	}
	var later error
	err := wb.w.Write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`INSERT INTO counters(key, n) VALUES('before', 1)`); err != nil {
			return err
		}
		tx.Exec(`INSERT OR ROLLBACK INTO counters(key, n) VALUES('taken', 2)`) // fails, rolls back all; ignored
		_, later = tx.Exec(`INSERT INTO counters(key, n) VALUES('after', 1)`)
		return nil
	})
	if !errors.Is(err, ErrTxEnded) {
		t.Fatalf("Write: got %v, want ErrTxEnded", err)
	}
	if !errors.Is(later, ErrTxEnded) {
		t.Fatalf("the statement after the rollback: got %v, want ErrTxEnded (it must not run on its own)", later)
	}
	if got := fmt.Sprint(counterKeys(t, wb.db)); got != "[taken]" {
		t.Fatalf("committed keys %s, want [taken]: nothing of the ended transaction may commit", got)
	}
}

// With SyncFull a Tx returns only after an fsync of the WAL that began
// after its commit: what it committed survives a power loss. The fsync runs
// off the write lock (the connection itself commits with
// synchronous=NORMAL), one for all who asked while the last one ran. With
// SyncNormal (the default) Tx returns at the commit, and Durable, which the
// relay and subscribers wait for, fsyncs.
func TestWriterMakesCommitsDurable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	wb := setupWriterConfig(t, WriterConfig{Synchronous: SyncFull})
	var mode int
	if err := wb.w.Conn(ctx, func(c *sql.Conn) error {
		return c.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&mode)
	}); err != nil {
		t.Fatal(err)
	}
	if mode != 1 {
		t.Fatalf("write connection synchronous=%d, want 1 (NORMAL): the fsync is the syncer's", mode)
	}
	insert := func(w *Writer, key string) {
		t.Helper()
		if err := w.Tx(ctx, func(tx *sql.Tx) error {
			_, err := tx.Exec(`INSERT INTO counters(key, n) VALUES(?, 1)`, key)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		before := wb.w.Stats().WALSyncs
		insert(wb.w, fmt.Sprint(i))
		if after := wb.w.Stats().WALSyncs; after <= before {
			t.Fatalf("SyncFull: Tx %d returned with no fsync of the WAL since its commit (%d before, %d after)", i, before, after)
		}
	}
	// Many writers share fsyncs.
	var wg sync.WaitGroup
	before := wb.w.Stats().WALSyncs
	for i := range 200 {
		wg.Go(func() { insert(wb.w, fmt.Sprint("many-", i)) })
	}
	wg.Wait()
	if n := wb.w.Stats().WALSyncs - before; n >= 200 {
		t.Fatalf("200 concurrent Tx calls took %d fsyncs: they should share them", n)
	}

	normal := setupWriter(t).w
	insert(normal, "a")
	if n := normal.Stats().WALSyncs; n != 0 {
		t.Fatalf("SyncNormal: Tx waited for %d fsyncs, want none", n)
	}
	if err := normal.Durable(ctx); err != nil {
		t.Fatal(err)
	}
	if n := normal.Stats().WALSyncs; n == 0 {
		t.Fatal("SyncNormal: Durable returned without an fsync: what the relay publishes and subscribers ack must be on disk")
	}
}
