package boxcar_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// Publish a user's signup in the same transaction as the user row, and
// create the subscription in a transactional subscriber: both sides commit
// atomically with their own state.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "boxcar-example")
	defer os.RemoveAll(dir)

	db, err := sqlite.Open(filepath.Join(dir, "app.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	db.Exec(`CREATE TABLE users(id TEXT PRIMARY KEY, email TEXT);
		CREATE TABLE subscriptions(user_id TEXT PRIMARY KEY)`)

	bus, err := boxcar.Open(ctx, db, boxcar.Config{Dir: filepath.Join(dir, "nats")})
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Close(ctx)

	done := make(chan string, 1)
	_, err = bus.Subscribe(ctx, "billing", boxcar.TxHandler(func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO subscriptions(user_id) VALUES(?)`, m.Key); err != nil {
			return err
		}
		done <- m.Key
		return nil
	}), boxcar.SubscribeOptions{Types: []string{"user.signed_up"}})
	if err != nil {
		log.Fatal(err)
	}

	err = bus.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO users(id, email) VALUES(?, ?)`, "u42", "ada@example.com"); err != nil {
			return err
		}
		return bus.PublishTx(ctx, tx, boxcar.Event{Type: "user.signed_up", Key: "u42", Data: []byte(`{"email":"ada@example.com"}`)})
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("billing subscribed", <-done)
	// Output: billing subscribed u42
}

// A rolled-back transaction publishes nothing; a non-transactional handler
// gets the event ID as its idempotency key.
func ExampleBus_PublishTx() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "boxcar-example")
	defer os.RemoveAll(dir)
	db, _ := sqlite.Open(filepath.Join(dir, "app.db"))
	defer db.Close()
	bus, err := boxcar.Open(ctx, db, boxcar.Config{Dir: filepath.Join(dir, "nats")})
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Close(ctx)

	got := make(chan boxcar.Message, 10)
	bus.Subscribe(ctx, "email", boxcar.HandlerFunc(func(ctx context.Context, m boxcar.Message) error {
		got <- m // send the email with m.ID as idempotency key
		return nil
	}), boxcar.SubscribeOptions{})

	tx, _ := db.BeginTx(ctx, nil)
	bus.PublishTx(ctx, tx, boxcar.Event{Type: "user.signed_up", Key: "u1", Data: []byte("rolled back")})
	tx.Rollback()

	bus.Publish(ctx, boxcar.Event{Type: "user.signed_up", Key: "u2", Data: []byte("committed")})

	m := <-got
	fmt.Println(m.Key, string(m.Data), len(m.ID))
	select {
	case m := <-got:
		fmt.Println("unexpected", m.Key)
	case <-time.After(200 * time.Millisecond):
	}
	// Output: u2 committed 26
}

// Mistakes are refused before anything is written, naming the field.
func ExampleBus_Publish_invalid() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "boxcar-example")
	defer os.RemoveAll(dir)
	db, _ := sqlite.Open(filepath.Join(dir, "app.db"))
	defer db.Close()
	bus, err := boxcar.Open(ctx, db, boxcar.Config{Dir: filepath.Join(dir, "nats")})
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Close(ctx)

	fmt.Println(bus.Publish(ctx, boxcar.Event{Type: "user.signed_up"}))
	fmt.Println(bus.Publish(ctx, boxcar.Event{Type: "user.*", Key: "u1"}))
	// Output:
	// boxcar: event 0: Event.Key: invalid event key: key is empty: set it to the entity the event is about (e.g. the user ID); events of one key are handled in order
	// boxcar: event 0: Event.Type: invalid event type: type "user.*" has '*': use ASCII letters, digits, '_' and '-' between dots
}

// The README's quick start is examples/quickstart/main.go, word for word:
// the program compiles with the module (go vet ./... builds it), so the
// README's copy does too.
func TestReadmeQuickStartIsTheExample(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	program, err := os.ReadFile("examples/quickstart/main.go")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```go\n"+string(program)+"```\n") {
		t.Fatal("README.md's quick start differs from examples/quickstart/main.go: copy the file into the README's go block")
	}
}
