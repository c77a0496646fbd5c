// Command quickstart is the README's quick start, whole: an app that signs a
// user up and publishes the event in the same transaction, a transactional
// subscriber (billing) and an at-least-once one (email).
package main

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"time"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/sqlite"
)

func main() {
	ctx := context.Background()
	db, err := sqlite.Open("app.db") // WAL, busy timeout, and the settings Boxcar relies on
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS users(id TEXT PRIMARY KEY, email TEXT NOT NULL);
		CREATE TABLE IF NOT EXISTS subscriptions(user_id TEXT PRIMARY KEY)`); err != nil {
		log.Fatal(err)
	}
	bus, err := boxcar.Open(ctx, db, boxcar.Config{Dir: "data"}) // migrates boxcar_* tables, starts embedded JetStream
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Close(ctx)

	// Transactional: the subscription row and the dedupe row commit together, then the ack.
	_, err = bus.Subscribe(ctx, "billing", boxcar.TxHandler(func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO subscriptions(user_id) VALUES(?)`, m.Key)
		return err
	}), boxcar.SubscribeOptions{Types: []string{"user.signed_up"}})
	if err != nil {
		log.Fatal(err)
	}
	// External side effects: at-least-once; m.ID is the idempotency key.
	mailed := make(chan string, 1)
	_, err = bus.Subscribe(ctx, "email", boxcar.HandlerFunc(func(ctx context.Context, m boxcar.Message) error {
		fmt.Printf("welcome mail to %s (idempotency key %s)\n", m.Key, m.ID)
		mailed <- m.Key
		return nil
	}), boxcar.SubscribeOptions{Types: []string{"user.signed_up"}})
	if err != nil {
		log.Fatal(err)
	}

	id := fmt.Sprintf("user-%d", time.Now().UnixNano())
	err = bus.Tx(ctx, func(tx *sql.Tx) error { // or your own tx and bus.PublishTx(ctx, tx, ev)
		if _, err := tx.ExecContext(ctx, `INSERT INTO users(id, email) VALUES(?, ?)`, id, id+"@example.com"); err != nil {
			return err
		}
		return bus.PublishTx(ctx, tx, boxcar.Event{Type: "user.signed_up", Key: id, Data: []byte(`{"plan":"free"}`)})
	})
	if err != nil {
		log.Fatal(err)
	}
	select {
	case <-mailed:
	case <-time.After(10 * time.Second):
		log.Fatal("the event did not arrive")
	}
}
