package sqlite

import (
	"context"
	"database/sql"
	"os"
	"testing"
	"time"
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
