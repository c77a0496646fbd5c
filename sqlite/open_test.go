package sqlite

import (
	"database/sql"
	"os"
	"path/filepath"
	"testing"
)

// Regression: the path went into the URI unescaped, so "my?db.sqlite" and
// "my#db.sqlite" both opened "my", and "a%20b.db" opened "a b.db".
func TestOpenEscapesPath(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"my?db.sqlite", "my#db.sqlite", "a%20b.db", "100%.db", "sp ace.db"} {
		dir := t.TempDir()
		path := filepath.Join(dir, name)
		db, err := Open(path)
		if err != nil {
			t.Fatalf("Open(%q): %v", name, err)
		}
		if _, err := db.Exec(`CREATE TABLE t(x)`); err != nil {
			t.Fatal(err)
		}
		db.Close()
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if _, err := os.Stat(path); err != nil {
			t.Errorf("Open(%q) did not create that file; the directory holds %q", name, names)
		}
		if len(names) != 1 {
			t.Errorf("Open(%q) left %q, want only %q", name, names, name)
		}
	}
}

// Regression: every Open registered a driver (and a watcher) that was never
// removed: memory grew with every database opened and closed.
func TestOpenRegistersNothing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	before := len(sql.Drivers())
	for i := range 50 {
		db, err := Open(filepath.Join(dir, "r.db"))
		if err != nil {
			t.Fatalf("open #%d: %v", i, err)
		}
		db.Close()
	}
	if after := len(sql.Drivers()); after != before {
		t.Fatalf("50 Opens registered %d drivers", after-before)
	}
}

// The database file is created readable by its owner only, and SQLite gives
// its -wal and -shm files the same mode.
func TestOpenCreatesPrivateFiles(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "p.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE t(x); INSERT INTO t VALUES(1)`); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if mode := fi.Mode().Perm(); mode&0o077 != 0 {
			t.Errorf("%s has mode %v, want no access for group and others", filepath.Base(p), mode)
		}
	}
}
