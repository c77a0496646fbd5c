package sqlite

import (
	"context"
	"database/sql"
	"testing"
	"time"
)

// TryWrite runs its function when the writer is free, and returns at once,
// without running it or queueing, while another writer holds the lock (the
// relay's mid-drain cursor save behind an app's long transaction); once the
// lock is free again it runs.
func TestTryWriteDoesNotWaitForABusyWriter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	wb := setupWriter(t)
	bump := func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO counters(key, n) VALUES('k', 1) ON CONFLICT(key) DO UPDATE SET n = n + 1`)
		return err
	}
	count := func() int {
		var n int
		if err := wb.db.QueryRow(`SELECT coalesce(max(n), 0) FROM counters`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if ran, err := wb.w.TryWrite(ctx, bump); !ran || err != nil {
		t.Fatalf("TryWrite on a free writer: ran %v, %v", ran, err)
	}
	release := holdLock(t, wb.w)
	start := time.Now()
	ran, err := wb.w.TryWrite(ctx, bump)
	if ran || err != nil {
		t.Fatalf("TryWrite while another holds the lock: ran %v, %v; want not run, no error", ran, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("TryWrite waited %v for a busy writer", d)
	}
	if st := wb.w.Stats(); st.AppWaiting != 0 || st.BackgroundWaiting != 0 {
		t.Fatalf("after a TryWrite on a busy writer, writers wait: %+v", st)
	}
	release()
	waitFor := time.Now().Add(10 * time.Second)
	for {
		ran, err := wb.w.TryWrite(ctx, bump)
		if err != nil {
			t.Fatal(err)
		}
		if ran {
			break
		}
		if time.Now().After(waitFor) {
			t.Fatal("TryWrite never ran after the lock was released")
		}
		time.Sleep(time.Millisecond)
	}
	if n := count(); n != 2 {
		t.Fatalf("counter %d, want 2: the write skipped while busy must not have run", n)
	}
}
