package boxcartest_test

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"testing"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/boxcartest"
)

// The app: its tables, its publish code, its handler.
const schema = `
CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, total INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS invoices (order_id INTEGER PRIMARY KEY, total INTEGER NOT NULL);`

// placeOrder writes an order and its event in the caller's transaction.
func placeOrder(ctx context.Context, bus *boxcar.Bus, tx *sql.Tx, id int, customer string, total int) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO orders(id, customer, total) VALUES (?, ?, ?)`, id, customer, total); err != nil {
		return err
	}
	return bus.PublishTx(ctx, tx, boxcar.Event{Type: "order.placed", Key: customer, Data: []byte(strconv.Itoa(id))})
}

// invoice is the invoicing service's handler: one invoice per order.
func invoice(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO invoices(order_id, total) SELECT id, total FROM orders WHERE id = ?`, string(m.Data))
	return err
}

// The crash test: the app's code under SIGKILLs, then its invariant.
func TestInvoicingSurvivesCrashes(t *testing.T) {
	boxcartest.Crash(t, boxcartest.Config{
		Setup: func(ctx context.Context, db *sql.DB) error {
			_, err := db.ExecContext(ctx, schema)
			return err
		},
		Subscribers: []boxcartest.Subscriber{
			{Name: "invoicing", Tx: invoice, Options: boxcar.SubscribeOptions{Types: []string{"order.placed"}}},
		},
		Publish: func(ctx context.Context, bus *boxcar.Bus, tx *sql.Tx, i int) error {
			return placeOrder(ctx, bus, tx, i, fmt.Sprintf("customer-%d", i%50), 100+i%7)
		},
		Check: func(ctx context.Context, db *sql.DB) error { // every order has exactly one invoice, of its total
			var bad int
			err := db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM orders o LEFT JOIN invoices i ON i.order_id = o.id
				WHERE i.order_id IS NULL OR i.total != o.total) + (SELECT count(*) FROM invoices WHERE order_id NOT IN (SELECT id FROM orders))`).Scan(&bad)
			if err == nil && bad > 0 {
				err = fmt.Errorf("%d orders without exactly their invoice", bad)
			}
			return err
		},
		Items: 1000, // Publish(i) for i in [0, 1000)
		Kills: 5,    // at least
	})
}
