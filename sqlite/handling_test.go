package sqlite

import (
	"context"
	"fmt"
	"slices"
	"testing"
)

// A handling row keeps its dead events, the newest MaxHandlingDead of
// them, in order, and a row saved without any reads back none.
func TestHandlingRowKeepsItsNewestDeadEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openMigrated(t, t.TempDir()+"/h.db")
	var dead []DeadEvent
	for i := range MaxHandlingDead + 5 {
		dead = append(dead, DeadEvent{StreamSeq: uint64(i + 1), ID: fmt.Sprintf("01ID%03d", i)})
	}
	save := func(h Handling) {
		t.Helper()
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if err := SaveHandling(ctx, tx, "billing", h, 1); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	save(Handling{StreamSeq: 7, Attempts: 2, Through: 6, Span: 4, Dead: dead})
	h, ok, err := HandlingOf(ctx, db, "billing")
	if err != nil || !ok {
		t.Fatalf("HandlingOf: %v, %v", ok, err)
	}
	if want := dead[5:]; h.StreamSeq != 7 || h.Attempts != 2 || h.Through != 6 || h.Span != 4 || !slices.Equal(h.Dead, want) {
		t.Fatalf("read back %+v; want stream seq 7, attempts 2, through 6, span 4 and the newest %d dead events (%v...)", h, MaxHandlingDead, want[:2])
	}
	save(Handling{Through: 9, Span: 4})
	if h, _, err := HandlingOf(ctx, db, "billing"); err != nil || h.Dead != nil || h.Through != 9 {
		t.Fatalf("a row saved without dead events reads back %+v, %v; want none, through 9", h, err)
	}
}
