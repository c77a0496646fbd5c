//go:build linux

package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// The shim works through LD_PRELOAD and /proc/self/fd: Linux only.

// A checkpoint whose fsync of the database file fails ends durability for
// good (Durable fails with ErrWALSyncFailed), and no checkpoint runs again
// in the process: not the checkpointer's, not a connection's own, not
// SQLite's when the last connection closes. The WAL keeps every commit, and
// the next start copies all of it into the database. A retry would copy only
// what SQLite counts as not copied yet, and its fsync would succeed: pages of
// earlier copies that the kernel dropped with the error would be lost once
// the WAL started over.
//
// The child process runs with an LD_PRELOAD shim (testdata/failsync.c) that
// fails SQLite's first fsync of the database file after a trigger file
// appears, with EIO, once, as Linux reports a writeback error.
func TestCheckpointFsyncFailureKeepsTheWAL(t *testing.T) {
	runFsyncChild(t, checkpointFsyncChild)
}

// runFsyncChild runs child in a child process (the test binary, running t
// again) with the fsync shim, then opens its database again without it and
// checks that every row the child committed is there (read from the kept
// WAL, which a checkpoint then copies whole) and that the database is sound.
// In the child, it runs child with the database's directory.
func runFsyncChild(t *testing.T, child func(t *testing.T, dir string)) {
	t.Helper()
	if dir := os.Getenv("BOXCAR_FAILSYNC_CHILD"); dir != "" {
		child(t, dir)
		return
	}
	t.Parallel()
	test := t.Name()
	dir := t.TempDir()
	so := filepath.Join(dir, "failsync.so")
	if out, err := exec.Command("gcc", "-shared", "-fPIC", "-o", so, "testdata/failsync.c", "-ldl").CombinedOutput(); err != nil {
		t.Fatalf("build the fsync shim: %v\n%s", err, out)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.v")
	cmd.Env = append(os.Environ(), "BOXCAR_FAILSYNC_CHILD="+dir, "LD_PRELOAD="+so,
		"FAILSYNC_SUFFIX="+string(filepath.Separator)+"app.db", "FAILSYNC_TRIGGER="+filepath.Join(dir, "trigger"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`rows=(\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("the child reported no row count:\n%s", out)
	}
	want, _ := strconv.Atoi(string(m[1]))
	db, err := Open(filepath.Join(dir, "app.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM nums`).Scan(&n); err != nil || n != want {
		t.Fatalf("%d rows (%v) after a restart, want the %d committed", n, err, want)
	}
	var busy, walPages, copied int
	if err := db.QueryRow(`PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &walPages, &copied); err != nil || busy != 0 {
		t.Fatalf("checkpoint after the restart: busy %d, %v", busy, err)
	}
	var ok string
	if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
		t.Fatalf("integrity check: %q %v", ok, err)
	}
}

// A checkpoint the app runs itself (no Writer) that fails its fsync forbids
// every later checkpoint of the database in the process as well: the app's
// next one is refused, its commits past 1,000 pages do not checkpoint, and
// the WAL outlives the database's Close.
func TestAppCheckpointFsyncFailureForbidsCheckpoints(t *testing.T) {
	runFsyncChild(t, appCheckpointFsyncChild)
}

// openNums opens the child's database, with the table of rows it counts.
func openNums(t *testing.T, dir string) (db *sql.DB, path string) {
	t.Helper()
	path = filepath.Join(dir, "app.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE nums (i INTEGER)`); err != nil {
		t.Fatal(err)
	}
	return db, path
}

func appCheckpointFsyncChild(t *testing.T, dir string) {
	db, path := openNums(t, dir)
	rows := 0
	for range 100 {
		if _, err := db.Exec(`INSERT INTO nums VALUES (?)`, rows); err != nil {
			t.Fatal(err)
		}
		rows++
	}
	if err := os.WriteFile(os.Getenv("FAILSYNC_TRIGGER"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var busy, walPages, copied int
	if err := db.QueryRow(`PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &walPages, &copied); !isFsyncError(err) {
		t.Fatalf("the app's checkpoint with the shim's failed fsync: %v, want SQLite's fsync error", err)
	}
	salt0 := walSalt(t, path)
	if err := db.QueryRow(`pragma WAL_CHECKPOINT`).Scan(&busy, &walPages, &copied); !errors.Is(err, ErrCheckpointsForbidden) {
		t.Fatalf("the app's next checkpoint: %v, want ErrCheckpointsForbidden", err)
	}
	for range 600 {
		if _, err := db.Exec(`INSERT INTO nums VALUES (-1), (zeroblob(8000))`); err != nil {
			t.Fatal(err)
		}
		rows += 2
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if salt := walSalt(t, path); salt != salt0 {
		t.Fatalf("the WAL started over after the failed fsync (salt %x, then %x): a checkpoint ran", salt0, salt)
	}
	fmt.Printf("rows=%d\n", rows)
}

func checkpointFsyncChild(t *testing.T, dir string) {
	ctx := context.Background()
	db, path := openNums(t, dir)
	rows := 0
	insert := func(w *Writer, n int) {
		for range n {
			if err := w.Tx(ctx, func(tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, `INSERT INTO nums VALUES (?)`, rows)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			rows++
		}
	}
	w, err := NewWriter(ctx, db, WriterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	insert(w, 200)
	trigger := os.Getenv("FAILSYNC_TRIGGER")
	if err := os.WriteFile(trigger, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Commits wake the checkpointer, whose fsync of the database fails.
	deadline := time.Now().Add(30 * time.Second)
	for w.Stats().WALSyncFailure == nil {
		if time.Now().After(deadline) {
			_, err := os.Stat(trigger)
			t.Fatalf("no durability failure 30 s after the trigger (trigger still there: %v)", err == nil)
		}
		insert(w, 1)
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := os.Stat(trigger); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a durability failure without the shim's failed fsync: %v", w.Stats().WALSyncFailure)
	}
	if err := w.Durable(ctx); !errors.Is(err, ErrWALSyncFailed) || !errors.Is(err, errCheckpointFsync) {
		t.Fatalf("Durable after the failed fsync: %v, want ErrWALSyncFailed for a checkpoint", err)
	}
	salt0 := walSalt(t, path)
	// The app's writes go on; no checkpoint runs (the next would succeed).
	insert(w, 200)
	// The app's own connections too, past their checkpoint threshold (1,000
	// pages by default).
	for range 600 {
		if _, err := db.Exec(`INSERT INTO nums VALUES (-1), (zeroblob(8000))`); err != nil {
			t.Fatal(err)
		}
		rows += 2
	}
	time.Sleep(20 * checkpointDelay)
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// The same database opened again in this process: still not durable,
	// still no checkpoint.
	db, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err = NewWriter(ctx, db, WriterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Durable(ctx); !errors.Is(err, errCheckpointFsync) {
		t.Fatalf("Durable of the database opened again: %v, want the checkpoint's failure", err)
	}
	insert(w, 100)
	time.Sleep(20 * checkpointDelay)
	insert(w, 1) // a checkpoint that had copied everything would let this start the WAL over
	w.Close(ctx)
	db.Close()
	if size := fileSize(t, path+"-wal"); size == 0 {
		t.Fatal("the WAL is empty after Close: a checkpoint ran")
	}
	if salt := walSalt(t, path); salt != salt0 {
		t.Fatalf("the WAL started over after the failed fsync (salt %x, then %x): a checkpoint ran", salt0, salt)
	}
	fmt.Printf("rows=%d\n", rows)
}

// walSalt returns the salts of the WAL's header, which SQLite changes each
// time it starts the WAL over.
func walSalt(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path + "-wal")
	if err != nil || len(b) < 24 {
		t.Fatalf("read the WAL header: %d bytes, %v", len(b), err)
	}
	return string(b[16:24])
}
