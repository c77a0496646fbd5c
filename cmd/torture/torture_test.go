package main

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/boxcar-bus/boxcar/sqlite"
)

// TestMain lets the test binary serve as the torture child: the parent under
// test re-executes it with the child's environment.
func TestMain(m *testing.M) {
	if os.Getenv(envChild) != "" {
		os.Exit(childMain())
	}
	os.Exit(m.Run())
}

// TestTortureSmall runs a small torture: real child processes, real SIGKILLs
// (at random instants and at fault points), lost JetStream writes between
// lives, the full check at the end.
func TestTortureSmall(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := defaultParentConfig()
	cfg.Kills = 6
	cfg.Events = 3000
	cfg.Keys = 50
	cfg.MinLife = 100 * time.Millisecond
	cfg.MaxLife = 1500 * time.Millisecond
	cfg.Targeted = 0.7
	cfg.FailRate = 0.05
	cfg.LoseWrites = 0.3 // and put the JetStream store back now and then
	cfg.SnapshotEvery = 2
	cfg.Seed = time.Now().UnixNano()
	cfg.Dir = t.TempDir()
	cfg.Exe = exe
	var out strings.Builder
	cfg.Out = &out
	res, err := runParent(context.Background(), cfg)
	t.Log(out.String())
	if err != nil {
		t.Fatalf("torture (seed %d): %v", cfg.Seed, err)
	}
	if !res.OK() {
		t.Fatalf("torture (seed %d): %s", cfg.Seed, res.Line())
	}
	if res.Kills < cfg.Kills || res.Events < int64(cfg.Events) {
		t.Fatalf("torture stopped short: %s", res.Line())
	}
}

// TestVerifyCatchesProblems makes sure the checks can fail: a database with
// a lost event, a duplicate, a reordering and a leaked rollback.
func TestVerifyCatchesProblems(t *testing.T) {
	// Run a tiny clean torture to get a real store and database, then
	// corrupt the handled tables and check the counts move.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := defaultParentConfig()
	cfg.Kills = 1
	cfg.Events = 300
	cfg.Keys = 5
	cfg.Targeted = 0
	cfg.Seed = 1
	cfg.Dir = t.TempDir()
	cfg.Exe = exe
	res, err := runParent(context.Background(), cfg)
	if err != nil || !res.OK() {
		t.Fatalf("clean run: %v %s", err, res.Line())
	}
	db := openTestDB(t, cfg.Dir)
	mustExec(t, db, `DELETE FROM handled_tx WHERE id = (SELECT max(id) FROM handled_tx)`)                                                                            // lost
	mustExec(t, db, `INSERT INTO handled_tx(key, n, tag, doomed, event_id, seq, life) SELECT key, n, tag, doomed, event_id, seq, life FROM handled_tx WHERE id = 1`) // duplicate (and out of order)
	mustExec(t, db, `INSERT INTO handled_plain(key, n, tag, doomed, event_id, seq, life) VALUES ('k1', 1, 'nope', 1, 'x', 1, 99)`)                                   // leak
	db.Close()
	var got result
	if _, err := verify(context.Background(), cfg.Dir, &got); err != nil {
		t.Fatal(err)
	}
	if got.Lost != 1 || got.Duplicates != 1 || got.RolledBackLeaked != 1 || got.OK() {
		t.Fatalf("verify did not see the damage: %s\n%s", got.Line(), strings.Join(got.Details, "\n"))
	}
}

func openTestDB(t *testing.T, dir string) *sql.DB {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(dir, "app.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func mustExec(t *testing.T, db *sql.DB, q string) {
	t.Helper()
	if _, err := db.Exec(q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}
