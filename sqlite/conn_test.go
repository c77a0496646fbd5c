package sqlite

import (
	"context"
	"database/sql/driver"
	"path/filepath"
	"testing"
)

// The wrapper's bookkeeping around each statement (the gate, the shield,
// the guard, the checkpoint policy, the check for a failed fsync) runs on
// every statement of the app, the relay and the subscribers. It must not
// allocate: on one connection from Open, a statement run through the
// wrapper allocates no more than the same statement run by the driver, in
// a transaction and outside one.
func TestTheWrapperAllocatesNothingPerStatement(t *testing.T) {
	ctx := context.Background()
	db, err := Open(filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE t(n INTEGER)`); err != nil {
		t.Fatal(err)
	}
	sc, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	args := []driver.NamedValue{{Ordinal: 1, Value: int64(1)}}
	const insert = `INSERT INTO t(n) VALUES (?)`
	err = sc.Raw(func(dc any) error {
		c := dc.(*conn)
		per := func(exec func(context.Context, string, []driver.NamedValue) (driver.Result, error)) float64 {
			return testing.AllocsPerRun(200, func() {
				if _, err := exec(ctx, insert, args); err != nil {
					t.Fatal(err)
				}
			})
		}
		for _, where := range []string{"outside a transaction", "in a transaction"} {
			if where == "in a transaction" {
				tx, err := c.BeginTx(ctx, driver.TxOptions{})
				if err != nil {
					return err
				}
				defer tx.Rollback()
			}
			wrapped, own := per(c.ExecContext), per(c.SQLiteConn.ExecContext)
			t.Logf("%s: %.0f allocations per statement through the wrapper, %.0f by the driver", where, wrapped, own)
			if wrapped > own {
				t.Errorf("%s: a statement through the wrapper allocates %.0f times, the driver alone %.0f", where, wrapped, own)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The checks for SQLite's errors run after every statement (a failed
// fsync) and every handler call (a full disk), mostly on a nil error,
// which must cost no allocation.
func TestErrorChecksOnNilAllocateNothing(t *testing.T) {
	checks := map[string]func(error) bool{"isFsyncError": isFsyncError, "IsFull": IsFull, "IsDatabaseFailure": IsDatabaseFailure}
	for name, check := range checks {
		if n := testing.AllocsPerRun(100, func() { check(nil) }); n != 0 {
			t.Errorf("%s(nil) allocates %.0f times", name, n)
		}
	}
}
