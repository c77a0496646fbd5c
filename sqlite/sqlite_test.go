package sqlite

import (
	"context"
	"io/fs"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

func TestOpenUsesWAL(t *testing.T) {
	t.Parallel()
	db, err := Open(filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mode string
	var sync, busy int
	db.QueryRow(`PRAGMA journal_mode`).Scan(&mode)
	db.QueryRow(`PRAGMA synchronous`).Scan(&sync)
	db.QueryRow(`PRAGMA busy_timeout`).Scan(&busy)
	if mode != "wal" || sync != 1 || busy != 10000 {
		t.Fatalf("journal_mode=%s synchronous=%d busy_timeout=%d, want wal, 1 (NORMAL), 10000", mode, sync, busy)
	}
	full, err := OpenOptions(filepath.Join(t.TempDir(), "b.db"), Options{Synchronous: SyncFull})
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()
	full.QueryRow(`PRAGMA synchronous`).Scan(&sync)
	if sync != 2 {
		t.Fatalf("synchronous=%d with SyncFull, want 2", sync)
	}
}

func TestOpenRefuses(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		path string
		o    Options
		want string
	}{
		{":memory:", Options{}, "needs a database file"},
		{"", Options{}, "needs a database file"},
		{filepath.Join(t.TempDir(), "x.db"), Options{Synchronous: "OFF"}, "Options.Synchronous"},
		{filepath.Join(t.TempDir(), "x.db"), Options{BusyTimeout: -1}, "BusyTimeout"},
	} {
		if db, err := OpenOptions(c.path, c.o); err == nil || !strings.Contains(err.Error(), c.want) {
			if db != nil {
				db.Close()
			}
			t.Errorf("OpenOptions(%q, %+v): got %v, want an error about %s", c.path, c.o, err, c.want)
		}
	}
}

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := Open(filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := 0; i < 3; i++ {
		if err := Migrate(ctx, db); err != nil {
			t.Fatalf("migrate #%d: %v", i+1, err)
		}
	}
	files, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	db.QueryRow(`SELECT count(*) FROM boxcar_migrations`).Scan(&n)
	if n != len(files) {
		t.Fatalf("%d migration records after three runs, want one per file (%d)", n, len(files))
	}
	for _, table := range []string{OutboxTable, RelayTable, DedupeTable} {
		if _, err := db.Exec(`SELECT count(*) FROM ` + table); err != nil {
			t.Errorf("table %s: %v", table, err)
		}
	}
}

// The watcher fires for commits that inserted outbox rows, not for other
// commits or rollbacks.
func TestWatchOutboxCommits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := Open(filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	db.Exec(`CREATE TABLE other(x)`)
	var fired atomic.Int64
	cancel, ok := WatchOutboxCommits(db, func() { fired.Add(1) })
	if !ok {
		t.Fatal("a database from Open is not watchable")
	}
	insert := func(commit bool) {
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(InsertOutbox, "id", "t", "k", nil, []byte("x"), 1); err != nil {
			t.Fatal(err)
		}
		if commit {
			tx.Commit()
		} else {
			tx.Rollback()
		}
	}
	insert(true)
	insert(false)
	db.Exec(`INSERT INTO other VALUES(1)`)
	insert(true)
	if got := fired.Load(); got != 2 {
		t.Fatalf("watcher fired %d times, want 2 (two committed outbox inserts)", got)
	}
	cancel()
	insert(true)
	if got := fired.Load(); got != 2 {
		t.Fatalf("watcher fired after cancel")
	}
}
