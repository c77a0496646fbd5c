package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3" // "sqlite3", a database not from Open
)

func TestShield(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sh, ok := ShieldOf(c)
	if !ok {
		t.Fatal("ShieldOf: no shield on a connection from Open")
	}
	if _, err := c.ExecContext(ctx, `CREATE TABLE big(n INTEGER)`); err != nil {
		t.Fatal(err)
	}
	long := `WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM c WHERE n < 1000000) INSERT INTO big SELECT n FROM c`
	run := func() error {
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		time.AfterFunc(20*time.Millisecond, cancel)
		_, err := c.ExecContext(cctx, long)
		return err
	}

	// Off: the cancel interrupts the running statement.
	if err := run(); !errors.Is(err, context.Canceled) {
		t.Fatalf("unshielded: %v, want the statement interrupted (context.Canceled)", err)
	}
	// On: it runs to its end; a context canceled before a statement still
	// stops it.
	sh.Set(true)
	if err := run(); err != nil {
		t.Fatalf("shielded: %v, want the statement to finish", err)
	}
	var n int
	if err := c.QueryRowContext(ctx, `SELECT count(*) FROM big`).Scan(&n); err != nil || n != 1000000 {
		t.Fatalf("big has %d rows (%v), want 1000000", n, err)
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.ExecContext(done, `DELETE FROM big`); !errors.Is(err, context.Canceled) {
		t.Fatalf("shielded, canceled before: %v, want context.Canceled", err)
	}
	// Prepared statements are shielded with their connection.
	st, err := c.PrepareContext(ctx, long)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sctx, scancel := context.WithCancel(ctx)
	time.AfterFunc(20*time.Millisecond, scancel)
	if _, err := st.ExecContext(sctx); err != nil {
		t.Fatalf("shielded prepared statement: %v, want it to finish", err)
	}
	scancel()

	other, err := sql.Open("sqlite3", filepath.Join(t.TempDir(), "o.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	oc, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	if sh, ok := ShieldOf(oc); ok || sh != nil {
		t.Fatal("ShieldOf: a shield on a database not from Open")
	}
	var none *Shield
	none.Set(true) // a nil Shield does nothing (and does not panic)
}
