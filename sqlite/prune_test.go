package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
)

// seq is a plain rowid (max+1): pruning everything the relay has published
// must still never let a seq be handed out twice, or a new event would get a
// seq at or below the relay's cursor and never be published.
func TestPruneKeepsSeqIncreasing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := Open(filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	insert := func(tx *sql.Tx) int64 {
		t.Helper()
		res, err := tx.ExecContext(ctx, InsertOutbox, "id", "t", "k", nil, []byte("x"), 1)
		if err != nil {
			t.Fatal(err)
		}
		seq, err := res.LastInsertId()
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	inTx := func(fn func(tx *sql.Tx)) {
		t.Helper()
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		fn(tx)
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	var last int64
	inTx(func(tx *sql.Tx) {
		for range 10 {
			last = insert(tx)
		}
	})
	if last != 10 {
		t.Fatalf("last seq %d, want 10", last)
	}
	// The relay published everything: prune up to and past the newest row.
	for range 3 {
		inTx(func(tx *sql.Tx) {
			if _, err := PruneOutbox(ctx, tx, last+5, 4); err != nil {
				t.Fatal(err)
			}
		})
	}
	minSeq, maxSeq, err := OutboxBounds(ctx, db)
	if err != nil || minSeq != 10 || maxSeq != 10 {
		t.Fatalf("after pruning: bounds %d..%d (%v), want only the newest row, 10", minSeq, maxSeq, err)
	}
	// A rolled-back insert does not move the max either.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	insert(tx)
	tx.Rollback()
	inTx(func(tx *sql.Tx) {
		if seq := insert(tx); seq != 11 {
			t.Fatalf("next seq after pruning %d, want 11", seq)
		}
	})
}

// OutboxSeqBack counts rows, not seqs: a row set aside (deleted) leaves a
// hole that was never a stream message, and counting seqs across it would
// go back one row too few after a stream lost writes (relay.goBack).
func TestOutboxSeqBackCountsRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openMigrated(t, filepath.Join(t.TempDir(), "b.db"))
	for range 10 {
		if _, err := db.ExecContext(ctx, InsertOutbox, "id", "t", "k", nil, []byte("x"), 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := SetOutboxRowAside(ctx, db, 9, "too_large", "test", 1); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		upTo, n int64
		want    int64
		ok      bool
	}{
		{10, 1, 10, true},
		{10, 2, 8, true}, // 9 was set aside
		{10, 9, 1, true},
		{10, 10, 0, false}, // fewer rows than that
		{8, 0, 8, true},
	} {
		got, ok, err := OutboxSeqBack(ctx, db, c.upTo, c.n)
		if err != nil || got != c.want || ok != c.ok {
			t.Errorf("OutboxSeqBack(%d, %d) = %d, %v, %v; want %d, %v", c.upTo, c.n, got, ok, err, c.want, c.ok)
		}
	}
}
