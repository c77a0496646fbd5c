package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkReadOutbox is the relay's read of the rows after its cursor, as
// the relay makes it at everyday load: one new row committed (through the
// Writer, as Bus.Tx does) before each read (stale), against the same read
// with nothing committed in between (warm). In WAL mode a connection drops
// its whole page cache when another connection committed since its last
// read, so the stale read pays for reading the table's pages again.
func BenchmarkReadOutbox(b *testing.B) {
	ctx := context.Background()
	db, err := Open(filepath.Join(b.TempDir(), "app.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if err := Migrate(ctx, db); err != nil {
		b.Fatal(err)
	}
	w, err := NewWriter(ctx, db, WriterConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close(ctx)
	insert := func(n int) {
		rows := make([]OutboxRow, n)
		for i := range rows {
			rows[i] = OutboxRow{ID: "01JXXXXXXXXXXXXXXXXXXXXXXX", Type: "order.placed", Key: "k", Data: make([]byte, 200), CreatedNS: time.Now().UnixNano()}
		}
		if err := w.Tx(ctx, func(tx *sql.Tx) error { return InsertEvents(ctx, tx, rows) }); err != nil {
			b.Fatal(err)
		}
	}
	insert(100_000) // a table of some size, as a busy outbox before pruning
	var buf []OutboxRow
	read := func(after int64) int64 {
		buf, err = ReadOutbox(ctx, db, after, 256, buf[:0])
		if err != nil {
			b.Fatal(err)
		}
		if len(buf) == 0 {
			return after
		}
		return buf[len(buf)-1].Seq
	}
	cursor := read(0)
	for cursor = 0; ; {
		next := read(cursor)
		if next == cursor {
			break
		}
		cursor = next
	}
	b.Run("warm", func(b *testing.B) {
		for b.Loop() {
			read(cursor)
		}
	})
	b.Run("stale", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			insert(1)
			b.StartTimer()
			cursor = read(cursor)
		}
	})
}
