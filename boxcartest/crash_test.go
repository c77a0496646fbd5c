package boxcartest

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/sqlite"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The app of these tests: orders placed (item i is order i, of one of 20
// customers: the key), an invoicing TxHandler that writes one invoice per
// order, and a notifier HandlerFunc.
const ordersSchema = `
CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, amount INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS invoices (order_id INTEGER PRIMARY KEY, amount INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS totals (name TEXT PRIMARY KEY, sum INTEGER NOT NULL);`

func ordersSetup(ctx context.Context, db *sql.DB) error {
	_, err := db.ExecContext(ctx, ordersSchema)
	return err
}

func placeOrder(ctx context.Context, bus *boxcar.Bus, tx *sql.Tx, i int) error {
	customer := "c" + strconv.Itoa(i%20)
	if _, err := tx.ExecContext(ctx, `INSERT INTO orders(id, customer, amount) VALUES (?, ?, ?)`, i, customer, i%7+1); err != nil {
		return err
	}
	return bus.PublishTx(ctx, tx, boxcar.Event{Type: "order.placed", Key: customer, Data: []byte(strconv.Itoa(i))})
}

func invoice(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO invoices(order_id, amount) SELECT id, amount FROM orders WHERE id = ?`, string(m.Data))
	return err
}

// everyOrderInvoicedOnce is the invariant.
func everyOrderInvoicedOnce(ctx context.Context, db *sql.DB) error {
	var orders, invoiced, missing int
	err := db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM invoices),
		(SELECT count(*) FROM orders o LEFT JOIN invoices i ON i.order_id = o.id WHERE i.order_id IS NULL OR i.amount != o.amount)`).Scan(&orders, &invoiced, &missing)
	if err != nil {
		return err
	}
	if orders != invoiced || missing != 0 {
		return fmt.Errorf("%d orders, %d invoices, %d orders without their invoice", orders, invoiced, missing)
	}
	return nil
}

func ordersConfig() Config {
	return Config{
		Setup: ordersSetup,
		Subscribers: []Subscriber{
			{Name: "invoicing", Tx: invoice, Options: boxcar.SubscribeOptions{Types: []string{"order.placed"}, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond}},
			{Name: "notifier", Func: func(ctx context.Context, m boxcar.Message) error { return nil }, Options: boxcar.SubscribeOptions{MinBackoff: time.Millisecond}},
		},
		Publish:  placeOrder,
		Check:    everyOrderInvoicedOnce,
		Items:    600,
		Kills:    4,
		MinLife:  100 * time.Millisecond,
		MaxLife:  800 * time.Millisecond,
		Targeted: 0.6,
		FailRate: 0.05,
	}
}

// A correct app passes: every order invoiced once, Boxcar's counts zero,
// the kills and items done.
func TestCrashPassesACorrectApp(t *testing.T) {
	t.Parallel()
	cfg := ordersConfig()
	res := Crash(t, cfg)
	if res.Kills < cfg.Kills || res.Items != cfg.Items || res.Events != int64(cfg.Items) {
		t.Fatalf("stopped short: %s", res)
	}
}

// A handler that keeps a running total in memory and writes it: right in
// one process without failures, wrong after a retry (the rolled-back
// attempt counted in memory) or a restart (the memory starts again from
// zero). Boxcar's own counts are clean (the handler runs exactly once per
// event); the app's invariant catches it.
func TestCrashCatchesStateOutsideTheTransaction(t *testing.T) {
	t.Parallel()
	cfg := ordersConfig()
	cfg.Items = 300
	cfg.Kills = 2
	var mu sync.Mutex
	total := 0 // the bug: state outside the transaction
	cfg.Subscribers = cfg.Subscribers[:1]
	cfg.Subscribers[0].Tx = func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
		var amount int
		if err := tx.QueryRowContext(ctx, `SELECT amount FROM orders WHERE id = ?`, string(m.Data)).Scan(&amount); err != nil {
			return err
		}
		mu.Lock()
		total += amount
		sum := total
		mu.Unlock()
		_, err := tx.ExecContext(ctx, `INSERT INTO totals(name, sum) VALUES ('invoiced', ?) ON CONFLICT(name) DO UPDATE SET sum = excluded.sum`, sum)
		return err
	}
	cfg.Check = func(ctx context.Context, db *sql.DB) error {
		var want, got int
		if err := db.QueryRowContext(ctx, `SELECT (SELECT sum(amount) FROM orders), (SELECT sum FROM totals WHERE name = 'invoiced')`).Scan(&want, &got); err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("invoiced total %d, orders total %d", got, want)
		}
		return nil
	}
	res, p, err := crash(t, cfg)
	if p == nil {
		return // in a child, another test's call
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.CheckErr == nil || !strings.Contains(res.CheckErr.Error(), "invoiced total") {
		t.Fatalf("the invariant's failure was not reported: %s (check: %v)", res, res.CheckErr)
	}
	if res.OK() || res.Lost != 0 || res.Duplicates != 0 || res.OrderViolations != 0 || res.Leaked != 0 || res.DeadLetters != 0 {
		t.Fatalf("want only the check failed: %s", res)
	}
}

// The checks can fail: on a clean run's database, a deleted record is
// lost, a copied one a duplicate, one moved after its key's later events an
// order violation, one of an unknown event leaked, a dead letter counted.
func TestVerifyCountsEachProblem(t *testing.T) {
	t.Parallel()
	cfg := ordersConfig()
	cfg.Items, cfg.Kills = 200, 1
	res := Crash(t, cfg)
	if res.Dir == "" {
		return // in a child, another test's call
	}
	cfg.Dir = res.Dir
	db, err := sqlite.Open(filepath.Join(cfg.Dir, "app.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{
		// lost: the last record of invoicing
		`DELETE FROM boxcartest_handled WHERE id = (SELECT max(id) FROM boxcartest_handled WHERE subscriber = 'invoicing')`,
		// not a duplicate: a HandlerFunc's record, again (at least once)
		`INSERT INTO boxcartest_handled(subscriber, event_id, key, seq, life) SELECT subscriber, event_id, key, seq, life FROM boxcartest_handled WHERE id = (SELECT min(id) FROM boxcartest_handled WHERE subscriber = 'notifier')`,
		// order: invoicing's first event of key c1 moved after the others
		`UPDATE boxcartest_handled SET id = (SELECT max(id) + 1 FROM boxcartest_handled) WHERE id = (SELECT min(id) FROM boxcartest_handled WHERE subscriber = 'invoicing' AND key = 'c1')`,
		// leaked
		`INSERT INTO boxcartest_handled(subscriber, event_id, key, seq, life) VALUES ('invoicing', 'not-an-event', 'c1', 999999, 9)`,
		// dead letter
		`INSERT INTO boxcartest_dead(subscriber, event_id, reason, error) VALUES ('invoicing', 'x', 'permanent', 'bad')`,
		// duplicate of a TxHandler's run
		`INSERT INTO boxcartest_handled(subscriber, event_id, key, seq, life) SELECT subscriber, event_id, key, seq, life FROM boxcartest_handled WHERE id = (SELECT min(id) FROM boxcartest_handled WHERE subscriber = 'invoicing')`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var got Result
	if err := verify(context.Background(), cfg, &got); err != nil {
		t.Fatal(err)
	}
	// The invariant holds: the records are the kit's.
	if got.Lost != 1 || got.Duplicates != 1 || got.OrderViolations != 1 || got.Leaked != 1 || got.DeadLetters != 1 || got.CheckErr != nil || got.OK() {
		t.Fatalf("verify did not see each problem once: %s\n%s", got, strings.Join(got.Details, "\n"))
	}
}
