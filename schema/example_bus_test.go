package schema_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/schema"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// SignupV2 is the consumer's Go type: version 2 of user.signed_up.
type SignupV2 struct {
	UserID       string `json:"user_id"`
	EmailAddress string `json:"email_address"`
}

// The registry validates at publish, and a typed handler sees every event
// as the version it names: here v2, which renamed v1's email, so an
// upcaster lifts v1 events.
func ExampleTxHandler() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "boxcar-schema-example")
	defer os.RemoveAll(dir)
	db, err := sqlite.Open(filepath.Join(dir, "app.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	// At start: the schemas (from code here; reg.RegisterDir(ctx, "schemas")
	// reads them from the repository), then the bus.
	reg, err := schema.NewRegistry(ctx, db)
	if err != nil {
		log.Fatal(err)
	}
	v1 := `{"type":"object","additionalProperties":false,"required":["user_id","email"],
		"properties":{"user_id":{"type":"string"},"email":{"type":"string","format":"email"}}}`
	v2 := `{"type":"object","additionalProperties":false,"required":["user_id","email_address"],
		"properties":{"user_id":{"type":"string"},"email_address":{"type":"string","format":"email"}}}`
	reg.Register(ctx, "user.signed_up", []byte(v1))
	_, _, err = reg.Register(ctx, "user.signed_up", []byte(v2))
	fmt.Println(err != nil) // a rename breaks BACKWARD_TRANSITIVE (the error lists why)
	reg.SetMode(ctx, "user.signed_up", schema.None)
	reg.Register(ctx, "user.signed_up", []byte(v2)) // deliberately, with an upcaster:
	err = reg.Upcast("user.signed_up", 1, func(data json.RawMessage) (json.RawMessage, error) {
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, err
		}
		m["email_address"] = m["email"]
		delete(m, "email")
		return json.Marshal(m)
	})
	if err != nil {
		log.Fatal(err)
	}
	bus, err := boxcar.Open(ctx, db, boxcar.Config{Dir: filepath.Join(dir, "nats"), Schemas: reg})
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Close(ctx)

	// The consumer reads v2, whatever version was published.
	seen := make(chan string, 2)
	h, err := schema.TxHandler(reg, "user.signed_up", 2, func(ctx context.Context, tx *sql.Tx, m boxcar.Message, v SignupV2) error {
		seen <- fmt.Sprintf("published as v%d, read as v2: %s", m.SchemaVersion, v.EmailAddress)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := bus.Subscribe(ctx, "billing", h, boxcar.SubscribeOptions{Types: []string{"user.signed_up"}}); err != nil {
		log.Fatal(err)
	}

	// An invalid payload is refused at PublishTx, naming type, version and path.
	err = bus.Publish(ctx, boxcar.Event{Type: "user.signed_up", Key: "u1", Data: []byte(`{"user_id":"u1","email_address":"not an address"}`)})
	fmt.Println(err)
	// An old producer names v1; a new one publishes the latest.
	err = bus.Publish(ctx,
		boxcar.Event{Type: "user.signed_up", Key: "u1", SchemaVersion: 1, Data: []byte(`{"user_id":"u1","email":"ada@example.com"}`)},
		boxcar.Event{Type: "user.signed_up", Key: "u1", Data: []byte(`{"user_id":"u1","email_address":"ada@lovelace.example"}`)})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(<-seen)
	fmt.Println(<-seen)
	// Output:
	// true
	// boxcar: event 0: Event.Data: boxcar: payload does not match its schema: schema: user.signed_up v2: invalid payload at /email_address: 'not an address' is not valid email: missing @
	// published as v1, read as v2: ada@example.com
	// published as v2, read as v2: ada@lovelace.example
}
