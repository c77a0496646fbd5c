package sqlite

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
)

// A row whose created_ns is not an integer (edited by hand: SQLite keeps
// text in an INTEGER column) ends ReadOutbox's read with a *BadRowError
// naming its seq, after the rows before it, instead of a Scan error that
// names no row; boxcar_outbox_dead lists such a row once it is set aside.
func TestReadOutboxNamesARowItCannotRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openMigrated(t, t.TempDir()+"/r.db")
	for _, created := range []any{int64(1), "yesterday", int64(3)} {
		if _, err := db.ExecContext(ctx, InsertOutbox, "id", "order.placed", "k", nil, []byte("x"), created); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := ReadOutbox(ctx, db, 0, 10, nil)
	var bad *BadRowError
	if !errors.As(err, &bad) || bad.Seq != 2 || bad.Column != "created_ns" || !strings.Contains(err.Error(), `"yesterday"`) {
		t.Fatalf("ReadOutbox: %v; want a *BadRowError for seq 2, created_ns, naming the value", err)
	}
	if len(rows) != 1 || rows[0].Seq != 1 || rows[0].CreatedNS != 1 {
		t.Fatalf("rows before the bad one: %+v, want seq 1", rows)
	}
	if _, err := SetOutboxRowAside(ctx, db, 2, "bad_created_ns", err.Error(), 9); err != nil {
		t.Fatal(err)
	}
	rows, err = ReadOutbox(ctx, db, 1, 10, nil)
	if err != nil || len(rows) != 1 || rows[0].Seq != 3 {
		t.Fatalf("after setting it aside: %+v, %v; want seq 3", rows, err)
	}
	dead, total, _, err := DeadOutboxRows(ctx, db, 0, "", 10, 0)
	if err != nil || total != 1 || len(dead) != 1 || dead[0].Seq != 2 || dead[0].CreatedNS != 0 || dead[0].Reason != "bad_created_ns" {
		t.Fatalf("DeadOutboxRows: %+v, %d in all, %v; want seq 2 listed with CreatedNS 0", dead, total, err)
	}
}

// PendingOutbox lists rows without their data, and allocates none for it:
// 64 rows of 1 MiB allocate well under one. Before, each row's size was
// carried as the capacity of an empty Data of that size: a page of a
// thousand 1 MiB events allocated a gigabyte. Not parallel: the allocation
// count is the process's.
func TestPendingOutboxAllocatesNoData(t *testing.T) {
	ctx := context.Background()
	db := openMigrated(t, t.TempDir()+"/p.db")
	data := make([]byte, 1<<20)
	for range 64 {
		if _, err := db.ExecContext(ctx, InsertOutbox, "id", "order.placed", "k", nil, data, int64(1)); err != nil {
			t.Fatal(err)
		}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	rows, err := PendingOutbox(ctx, db, 0, 1000)
	runtime.ReadMemStats(&after)
	if err != nil || len(rows) != 64 || rows[0].Size != 1<<20 || rows[0].Data != nil {
		t.Fatalf("PendingOutbox: %d rows, %v; want 64 of size 1 MiB, without data", len(rows), err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Fatalf("listing 64 rows of 1 MiB allocated %d bytes; want under 1 MiB (no data)", alloc)
	}
}
