package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// blockingSyncer is a syncer of a real file whose fsyncs can be held: each
// one reports on entered and waits for release (closed: none wait).
type blockingSyncer struct {
	*walSyncer
	entered chan int      // the fsync's number, from 1
	release chan struct{} // one receive per held fsync
	started atomic.Int64
}

func newBlockingSyncer(t *testing.T) *blockingSyncer {
	t.Helper()
	path := filepath.Join(t.TempDir(), "x.db-wal")
	if err := os.WriteFile(path, []byte("wal"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := &blockingSyncer{walSyncer: startSyncer(path), entered: make(chan int, 16), release: make(chan struct{})}
	b.fsyncFile = func(f *os.File) error {
		n := b.started.Add(1)
		b.entered <- int(n)
		<-b.release
		return f.Sync()
	}
	t.Cleanup(b.stop)
	return b
}

// waitAsked waits until n syncs in all have been asked for.
func (b *blockingSyncer) waitAsked(t *testing.T, n uint64) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		b.mu.Lock()
		asked := b.asked
		b.mu.Unlock()
		if asked >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d syncs asked after a minute, want %d", asked, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A sync called while another caller's fsync runs must not return at the end
// of that fsync (it began before the call, so it may not cover the caller's
// commit): it returns after a second one, which began after it asked.
func TestSyncWaitsForAnFsyncThatBeganAfterIt(t *testing.T) {
	t.Parallel()
	s := newBlockingSyncer(t)
	ctx := context.Background()
	errs := make(chan error, 2)
	go func() { errs <- s.sync(ctx) }() // the leader of fsync 1
	if n := <-s.entered; n != 1 {
		t.Fatalf("first fsync is number %d", n)
	}
	var returnedAfter atomic.Int64 // fsyncs started when the second caller returned
	go func() {
		err := s.sync(ctx)
		returnedAfter.Store(s.started.Load())
		errs <- err
	}()
	s.waitAsked(t, 2)       // the second caller asked, and waits
	s.release <- struct{}{} // fsync 1 ends
	if err := <-errs; err != nil {
		t.Fatalf("leader: %v", err)
	}
	select {
	case n := <-s.entered:
		if n != 2 {
			t.Fatalf("second fsync is number %d", n)
		}
	case err := <-errs:
		t.Fatalf("the second caller returned (%v) after an fsync that began before it asked, with no fsync of its own", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no second fsync after 10 s: the waiting caller never led one")
	}
	s.release <- struct{}{}
	if err := <-errs; err != nil {
		t.Fatalf("second caller: %v", err)
	}
	if n := returnedAfter.Load(); n != 2 {
		t.Fatalf("second caller returned when %d fsyncs had started, want 2", n)
	}
	if got := s.fsyncs(); got != 2 {
		t.Fatalf("fsyncs() = %d, want 2", got)
	}
}

// Callers that ask while one fsync runs share the next: one fsync for all of
// them, led by one of them.
func TestSyncCallersShareTheNextFsync(t *testing.T) {
	t.Parallel()
	s := newBlockingSyncer(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.sync(ctx); err != nil {
			t.Error(err)
		}
	})
	<-s.entered
	const waiters = 8
	for range waiters {
		wg.Go(func() {
			if err := s.sync(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	s.waitAsked(t, 1+waiters)
	close(s.release) // no fsync waits from now on
	wg.Wait()
	if got := s.fsyncs(); got != 2 {
		t.Fatalf("%d fsyncs for one leader and %d callers that asked during its fsync, want 2", got, waiters)
	}
}

// A caller waiting for another's fsync stops at its context's end; the
// fsync, and the callers it covers, go on.
func TestSyncWaiterHonoursItsContext(t *testing.T) {
	t.Parallel()
	s := newBlockingSyncer(t)
	leader := make(chan error, 1)
	go func() { leader <- s.sync(context.Background()) }()
	<-s.entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.sync(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiter's sync with an expired context: %v, want context.DeadlineExceeded", err)
	}
	close(s.release)
	if err := <-leader; err != nil {
		t.Fatalf("leader: %v", err)
	}
}

// A caller that may linger rides the next fsync someone else begins, and
// runs one itself only when nobody does within its linger.
func TestSyncWithinRidesAnotherCallersFsync(t *testing.T) {
	t.Parallel()
	s := newBlockingSyncer(t)
	close(s.release)
	ctx := context.Background()
	lazy := make(chan error, 1)
	go func() { lazy <- s.syncWithin(ctx, time.Hour) }()
	s.waitAsked(t, 1)
	if got := s.fsyncs(); got != 0 {
		t.Fatalf("%d fsyncs before anyone but the lingering caller asked, want 0", got)
	}
	if err := s.sync(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-lazy:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the lingering caller did not return after another caller's fsync")
	}
	if got := s.fsyncs(); got != 1 {
		t.Fatalf("%d fsyncs, want 1 shared", got)
	}
	// Alone, it fsyncs after its linger.
	if err := s.syncWithin(ctx, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if got := s.fsyncs(); got != 2 {
		t.Fatalf("%d fsyncs after a lone lingering caller, want 2", got)
	}
}

// stop while an fsync runs closes the file after it, not under it; a sync
// after stop still fsyncs (opening the file for the round).
func TestSyncerStopDuringAnFsync(t *testing.T) {
	t.Parallel()
	s := newBlockingSyncer(t)
	ctx := context.Background()
	leader := make(chan error, 1)
	go func() { leader <- s.sync(ctx) }() // opens the file and keeps it
	<-s.entered
	s.release <- struct{}{}
	if err := <-leader; err != nil {
		t.Fatal(err)
	}
	go func() { leader <- s.sync(ctx) }()
	<-s.entered
	s.stop()
	s.mu.Lock()
	open := s.f != nil
	s.mu.Unlock()
	if !open {
		t.Fatal("stop closed the WAL file while a leader was syncing it")
	}
	s.release <- struct{}{}
	if err := <-leader; err != nil {
		t.Fatalf("the fsync stop ran beside: %v", err)
	}
	s.mu.Lock()
	open = s.f != nil
	s.mu.Unlock()
	if open {
		t.Fatal("the WAL file is still open after the round that ran beside stop")
	}
	close(s.release)
	if err := s.sync(ctx); err != nil {
		t.Fatalf("sync after stop: %v", err)
	}
	if got := s.fsyncs(); got != 3 {
		t.Fatalf("%d fsyncs, want 3 (one before stop, one beside it, one after)", got)
	}
}

// A failed fsync ends durability for good: Linux may drop the pages it could
// not write and reports the error once, so a later fsync that succeeds
// would prove nothing about the commits before it. Every later sync fails
// with ErrWALSyncFailed at once, without another fsync, and the writer's
// stats say why. (Before, the syncer reopened the file and the next sync
// succeeded: acks and publishes went on over commits that may be gone.)
func TestSyncFailureIsPermanent(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "x.db-wal")
	if err := os.WriteFile(path, []byte("wal"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startSyncer(path)
	t.Cleanup(s.stop)
	var calls atomic.Int64
	eio := errors.New("input/output error")
	s.fsyncFile = func(f *os.File) error {
		if calls.Add(1) == 2 {
			return eio
		}
		return f.Sync()
	}
	ctx := context.Background()
	if err := s.sync(ctx); err != nil {
		t.Fatalf("first sync: %v", err)
	}
	if s.failure() != nil {
		t.Fatalf("failure() = %v after a good fsync", s.failure())
	}
	err := s.sync(ctx)
	if !errors.Is(err, ErrWALSyncFailed) || !errors.Is(err, eio) {
		t.Fatalf("the failing sync returned %v, want ErrWALSyncFailed wrapping the fsync's error", err)
	}
	for i := range 3 {
		if err := s.syncWithin(ctx, time.Millisecond); !errors.Is(err, ErrWALSyncFailed) {
			t.Fatalf("sync %d after the failure returned %v, want ErrWALSyncFailed", i, err)
		}
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d fsyncs, want 2: none after the failure (it would prove nothing)", n)
	}
	if got := s.failure(); !errors.Is(got, ErrWALSyncFailed) {
		t.Errorf("failure() = %v, want the failed fsync", got)
	}
	if n := s.fsyncs(); n != 1 {
		t.Errorf("fsyncs() = %d, want 1 (the good one)", n)
	}
}

// Failing to open the WAL is not a failed fsync: nothing was synced, so
// nothing was lost, and the next sync tries again.
func TestSyncOpenFailureIsRetried(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "x.db-wal")
	if err := os.Mkdir(path, 0o700); err != nil { // a directory: opening it O_RDWR fails
		t.Fatal(err)
	}
	s := startSyncer(path)
	t.Cleanup(s.stop)
	ctx := context.Background()
	if err := s.sync(ctx); err == nil || errors.Is(err, ErrWALSyncFailed) {
		t.Fatalf("sync of a WAL that cannot be opened returned %v, want an open error that is not ErrWALSyncFailed", err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("wal"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.sync(ctx); err != nil {
		t.Fatalf("sync once the WAL opens: %v", err)
	}
	if s.failure() != nil || s.fsyncs() != 1 {
		t.Fatalf("failure() = %v, fsyncs() = %d; want nil and 1", s.failure(), s.fsyncs())
	}
}

// After a failed fsync, a SyncFull Tx fails before it runs, with nothing
// committed (committing and then failing would make a caller that retries
// apply it twice); Durable fails too; and the database opened again in this
// process remembers the failure (its page cache still holds the pages the
// kernel could not write). A SyncNormal Tx still commits: it never waited
// for the fsync.
func TestWALSyncFailureOutlivesTheWriter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	wb := setupWriterConfig(t, WriterConfig{Synchronous: SyncFull})
	wb.w.syncer.fsyncFile = func(*os.File) error { return errors.New("input/output error") }
	insert := func(w *Writer, key string) (ran bool, err error) {
		err = w.Tx(ctx, func(tx *sql.Tx) error {
			ran = true
			_, err := tx.Exec(`INSERT INTO counters(key, n) VALUES(?, 1)`, key)
			return err
		})
		return ran, err
	}
	if ran, err := insert(wb.w, "a"); !ran || !errors.Is(err, ErrWALSyncFailed) || errors.Is(err, ErrTxNotRun) || !strings.Contains(err.Error(), "committed, but") {
		t.Fatalf("the Tx whose fsync fails: ran %v, %v; want run, committed, and ErrWALSyncFailed without ErrTxNotRun", ran, err)
	}
	if ran, err := insert(wb.w, "b"); ran || !errors.Is(err, ErrWALSyncFailed) || !errors.Is(err, ErrTxNotRun) {
		t.Fatalf("a SyncFull Tx after the failure: ran %v, %v; want not run, ErrWALSyncFailed and ErrTxNotRun", ran, err)
	}
	var n int
	if err := wb.db.QueryRow(`SELECT count(*) FROM counters`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d rows (%v), want 1: only the first Tx committed", n, err)
	}

	// The same database, opened again in this process: its writer fsyncs
	// for real, and still reports nothing durable.
	db2, err := Open(wb.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db2.Close() })
	w2, err := NewWriter(ctx, db2, WriterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w2.Close(context.Background()) })
	if err := w2.Durable(ctx); !errors.Is(err, ErrWALSyncFailed) {
		t.Fatalf("Durable of the database opened again: %v, want ErrWALSyncFailed", err)
	}
	if !errors.Is(w2.Stats().WALSyncFailure, ErrWALSyncFailed) {
		t.Fatalf("WALSyncFailure of the database opened again: %v", w2.Stats().WALSyncFailure)
	}
	if ran, err := insert(w2, "c"); !ran || err != nil {
		t.Fatalf("a SyncNormal Tx after the failure: ran %v, %v; want it committed", ran, err)
	}
}

// SyncFull Tx calls queued for the write lock while the fsync fails are not
// run either: the group that takes them finds the failure first.
func TestQueuedSyncFullTxNotRunAfterTheFsyncFails(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	wb := setupWriterConfig(t, WriterConfig{Synchronous: SyncFull})
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	wb.w.syncer.fsyncFile = func(*os.File) error {
		once.Do(func() { close(entered) })
		<-release
		return errors.New("input/output error")
	}
	var ranB, ranC atomic.Bool
	tx := func(key string, ran *atomic.Bool) <-chan error {
		done := make(chan error, 1)
		go func() {
			done <- wb.w.Tx(ctx, func(tx *sql.Tx) error {
				ran.Store(true)
				_, err := tx.Exec(`INSERT INTO counters(key, n) VALUES(?, 1)`, key)
				return err
			})
		}()
		return done
	}
	var ranA atomic.Bool
	a := tx("a", &ranA)
	<-entered // a committed; its fsync runs
	if err := wb.w.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	b, c := tx("b", &ranB), tx("c", &ranC)
	deadline := time.Now().Add(time.Minute)
	for wb.w.Stats().TxQueued < 2 {
		if time.Now().After(deadline) {
			t.Fatal("b and c never queued")
		}
		time.Sleep(time.Millisecond)
	}
	close(release) // a's fsync fails
	if err := <-a; !errors.Is(err, ErrWALSyncFailed) || errors.Is(err, ErrTxNotRun) {
		t.Fatalf("a: %v, want committed but not durable", err)
	}
	wb.w.Unlock()
	for name, done := range map[string]<-chan error{"b": b, "c": c} {
		if err := <-done; !errors.Is(err, ErrTxNotRun) || !errors.Is(err, ErrWALSyncFailed) {
			t.Errorf("%s, queued while the fsync failed: %v, want ErrTxNotRun", name, err)
		}
	}
	if ranB.Load() || ranC.Load() {
		t.Errorf("the queued calls ran (b %v, c %v)", ranB.Load(), ranC.Load())
	}
	var n int
	if err := wb.db.QueryRow(`SELECT count(*) FROM counters`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d rows (%v), want 1", n, err)
	}
}
