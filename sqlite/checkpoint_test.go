package sqlite

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/boxcar-bus/boxcar/internal/waitfor"
)

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func writeBlobs(t *testing.T, w *Writer, n, size int) {
	t.Helper()
	ctx := context.Background()
	blob := make([]byte, size)
	for i := range n {
		blob[0] = byte(i)
		if err := w.Tx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO blobs(b) VALUES(?)`, blob)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// The checkpointer copies commits into the database file in the background,
// before the WAL is long: the file grows by what was written while the WAL
// is far below walRestartPages.
func TestBackgroundCheckpointCopiesCommits(t *testing.T) {
	t.Parallel()
	wb := setupWriter(t)
	if _, err := wb.db.Exec(`CREATE TABLE blobs(b BLOB)`); err != nil {
		t.Fatal(err)
	}
	before := fileSize(t, wb.path)
	const n, size = 100, 4000 // about 100 pages: far below walRestartPages
	writeBlobs(t, wb.w, n, size)
	want := before + n*size
	deadline := time.Now().Add(10 * time.Second)
	for s := fileSize(t, wb.path); s < want; s = fileSize(t, wb.path) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for the database file to take the commits: file %d bytes, want >= %d", s, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Under sustained writes the WAL stays bounded: past walRestartPages the
// checkpointer completes a checkpoint under the write lock, and the WAL
// starts over (the write connection's backstop is four times further).
func TestWALStaysBoundedUnderLoad(t *testing.T) {
	t.Parallel()
	wb := setupWriter(t)
	if _, err := wb.db.Exec(`CREATE TABLE blobs(b BLOB)`); err != nil {
		t.Fatal(err)
	}
	const n, size = 20000, 8000 // about 3 pages per commit: 60,000 frames and more
	writeBlobs(t, wb.w, n, size)
	const frame = 4096 + 24
	const limit = 3 * walRestartPages * frame
	wal := fileSize(t, wb.path+"-wal")
	if wal > limit {
		t.Fatalf("WAL is %d bytes after %d commits of %d bytes, want <= %d (the write connection's backstop alone lets it reach %d)", wal, n, size, limit, walBackstopPages*frame)
	}
	// What the WAL cannot hold is in the database file.
	if db := fileSize(t, wb.path); db < n*size-limit {
		t.Fatalf("database file %d bytes, want >= %d", db, n*size-limit)
	}
}

// walIndex reads the WAL's length in frames (mxFrame) and how many of them
// checkpoints have copied (nBackfill) from the database's shared memory
// file, which SQLite maps: the header at 0 (mxFrame at 16), its copy at 48,
// then the checkpoint info (nBackfill at 96), in the machine's byte order.
func walIndex(t *testing.T, path string) (mxFrame, nBackfill uint32) {
	t.Helper()
	b, err := os.ReadFile(path + "-shm")
	if err != nil || len(b) < 100 {
		t.Fatalf("read the WAL index: %d bytes, %v", len(b), err)
	}
	return binary.NativeEndian.Uint32(b[16:]), binary.NativeEndian.Uint32(b[96:])
}

// Once checkpoints are forbidden (a checkpoint's fsync failed), no
// connection of the database runs one: not one whose transaction was open at
// the failure (its commit would checkpoint past 1,000 pages), not one of
// another database object on the same file, not a Writer made later.
func TestForbiddenCheckpointsHoldEverywhere(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "c.db")
	db := openMigrated(t, path)
	if _, err := db.Exec(`CREATE TABLE blobs (b BLOB)`); err != nil {
		t.Fatal(err)
	}
	bigRows := func(e interface {
		ExecContext(context.Context, string, ...any) (sql.Result, error)
	}, n int) {
		t.Helper()
		for range n {
			if _, err := e.ExecContext(ctx, `INSERT INTO blobs VALUES (zeroblob(8000))`); err != nil {
				t.Fatal(err)
			}
		}
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	bigRows(tx, 600) // ~1,200 pages, past the default checkpoint threshold
	forbidCheckpoints(stateOf(db).path)
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if frames, copied := walIndex(t, path); frames < 1000 || copied != 0 {
		t.Fatalf("after the commit of a transaction open at the failure: WAL %d frames, %d copied; want >= 1000, none", frames, copied)
	}
	db2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	bigRows(db2, 600)
	if frames, copied := walIndex(t, path); copied != 0 {
		t.Fatalf("after another database object's commits: WAL %d frames, %d copied; want none", frames, copied)
	}
	// Nor one the app asks for.
	var busy, walPages, copiedPages int
	if err := db2.QueryRow(`PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &walPages, &copiedPages); !errors.Is(err, ErrCheckpointsForbidden) {
		t.Fatalf("the app's checkpoint: %v, want ErrCheckpointsForbidden", err)
	}
	w, err := NewWriter(ctx, db2, WriterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Durable(ctx); !errors.Is(err, ErrWALSyncFailed) || !errors.Is(err, errCheckpointFsync) {
		t.Fatalf("Durable of a Writer made after the failure: %v, want ErrWALSyncFailed for a checkpoint", err)
	}
	for range 50 {
		if err := w.Tx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO blobs VALUES (zeroblob(8000))`)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(10 * checkpointDelay)
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	bigRows(db2, 10)
	if frames, copied := walIndex(t, path); copied != 0 {
		t.Fatalf("after a Writer made later and its Close: WAL %d frames, %d copied; want none", frames, copied)
	}
}

// While a Writer runs, the app's own connections run no checkpoint of their
// own (SQLite would ignore its failed fsync), and their commits wake the
// Writer's checkpointer, which copies what they wrote.
func TestAppCommitsWakeTheCheckpointer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	wb := setupWriter(t)
	for i := range 50 {
		if _, err := wb.db.ExecContext(ctx, `INSERT INTO counters VALUES (?, 1)`, fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitCopied(t, wb.path, "the app's commits")
	// One commit that takes longer to write than the checkpointer waits
	// after the commit hook: the commit wakes it again once written.
	tx, err := wb.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10000 {
		if _, err := tx.ExecContext(ctx, `INSERT INTO counters VALUES (?, zeroblob(8000))`, fmt.Sprint("big", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	waitCopied(t, wb.path, "a big commit of the app's")
	// A second Writer on the database, closed: the first one's checkpointer
	// is still woken.
	w2, err := NewWriter(ctx, wb.db, WriterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := wb.db.ExecContext(ctx, `INSERT INTO counters VALUES (?, 1)`, fmt.Sprint("after", i)); err != nil {
			t.Fatal(err)
		}
	}
	waitCopied(t, wb.path, "the app's commits after a second Writer closed")
	var ckpt int
	c, err := wb.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.QueryRowContext(ctx, `PRAGMA wal_autocheckpoint`).Scan(&ckpt); err != nil || ckpt != 0 {
		t.Fatalf("an app connection's wal_autocheckpoint while the Writer runs: %d (%v), want 0", ckpt, err)
	}
}

// waitCopied waits until checkpoints have copied the whole WAL.
func waitCopied(t *testing.T, path, after string) {
	t.Helper()
	waitfor.Cond(t, "the checkpointer to copy the WAL after "+after, 10*time.Second, 5*time.Millisecond, func() (bool, string) {
		frames, copied := walIndex(t, path)
		return frames > 0 && copied == frames, fmt.Sprintf("WAL %d frames, %d copied", frames, copied)
	})
}

// A checkpoint the app ran that failed its fsync forbids checkpoints of the
// database (the conn wrapper sees the error); the Writer's checkpointer then
// ends durability at its next round, as for its own failure.
func TestCheckpointerStopsWhenAnotherCheckpointFailed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	wb := setupWriter(t)
	forbidCheckpoints(stateOf(wb.db).path) // what after() does on the app's failed checkpoint
	waitfor.Cond(t, "the checkpointer to end durability", 10*time.Second, 5*time.Millisecond, func() (bool, string) {
		// Commits wake the checkpointer.
		if err := wb.w.Tx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO counters VALUES (?, 1)`, time.Now().String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		err := wb.w.Stats().WALSyncFailure
		return errors.Is(err, errCheckpointElsewhere), fmt.Sprint(err)
	})
	if err := wb.w.Durable(ctx); !errors.Is(err, ErrWALSyncFailed) {
		t.Fatalf("Durable: %v, want ErrWALSyncFailed", err)
	}
}
