package schema_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/boxcar-bus/boxcar"
	bjs "github.com/boxcar-bus/boxcar/jetstream"
	"github.com/boxcar-bus/boxcar/schema"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// These tests run the registry through a real bus: a SQLite file in the
// test's directory and the embedded nats-server that boxcar.Open starts.

// busBundle is a database file, its registry, and the paths to open buses
// on them.
type busBundle struct {
	t   testing.TB
	ctx context.Context
	dir string
	db  *sql.DB
	reg *schema.Registry
}

func setupBus(t testing.TB) *busBundle {
	t.Helper()
	dir := t.TempDir()
	db, err := sqlite.Open(filepath.Join(dir, "app.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(`CREATE TABLE accounts (user_id TEXT PRIMARY KEY, email TEXT NOT NULL, plan TEXT NOT NULL, read_from INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	reg, err := schema.NewRegistry(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	return &busBundle{t: t, ctx: t.Context(), dir: dir, db: db, reg: reg}
}

// open opens a bus on the bundle's database and store; schemas is its
// Config.Schemas (nil: none). It is closed at the end of the test, or by
// the func returned.
func (b *busBundle) open(schemas boxcar.SchemaValidator) (*boxcar.Bus, func()) {
	b.t.Helper()
	cfg := boxcar.Config{Dir: filepath.Join(b.dir, "nats")}
	if schemas != nil {
		cfg.Schemas = schemas
	}
	bus, err := boxcar.Open(b.ctx, b.db, cfg)
	if err != nil {
		b.t.Fatal(err)
	}
	var once sync.Once
	closeBus := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := bus.Close(ctx); err != nil {
				b.t.Errorf("close bus: %v", err)
			}
		})
	}
	b.t.Cleanup(closeBus)
	return bus, closeBus
}

func (b *busBundle) register(typ, raw string, want int) {
	b.t.Helper()
	v, _, err := b.reg.Register(b.ctx, typ, []byte(raw))
	if err != nil || v != want {
		b.t.Fatalf("Register %s = v%d, %v; want v%d", typ, v, err, want)
	}
}

// waitFor polls cond until it holds; the limit is a liveness bound, not a
// timing assertion.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited a minute for %s: %s", what, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// streamMsgs is how many messages a stream of bus holds.
func streamMsgs(t *testing.T, bus *boxcar.Bus, name string) uint64 {
	t.Helper()
	s, err := bus.JetStream().Stream(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

const (
	typSignup = "user.signed_up"
	// signupV1 is closed, so that optional properties can be added.
	signupV1 = `{"type":"object","additionalProperties":false,"required":["user_id","email"],
		"properties":{"user_id":{"type":"string"},"email":{"type":"string","format":"email"}}}`
	signupV2 = `{"type":"object","additionalProperties":false,"required":["user_id","email"],
		"properties":{"user_id":{"type":"string"},"email":{"type":"string","format":"email"},"plan":{"enum":["free","pro"]}}}`
)

// TestValidationAtPublish: with the registry as Config.Schemas, a valid
// event is delivered with the version it matched; an invalid one is
// refused with an error naming the type, the version and the failing
// path, nothing of it is written, and the caller's transaction goes on
// and commits.
func TestValidationAtPublish(t *testing.T) {
	t.Parallel()
	b := setupBus(t)
	b.register(typSignup, signupV1, 1)
	b.register(typSignup, signupV2, 2)
	bus, _ := b.open(b.reg)

	got := make(chan boxcar.Message, 16)
	if _, err := bus.Subscribe(b.ctx, "audit", boxcar.HandlerFunc(func(_ context.Context, m boxcar.Message) error {
		got <- m
		return nil
	}), boxcar.SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}

	// The app's own transaction: its row, a refused event, then a valid one.
	tx, err := b.db.BeginTx(b.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(b.ctx, `INSERT INTO accounts VALUES ('u1', 'ada@example.com', 'pro', 2)`); err != nil {
		t.Fatal(err)
	}
	err = bus.PublishTx(b.ctx, tx, boxcar.Event{Type: typSignup, Key: "u1", Data: []byte(`{"user_id":"u1","email":"ada@example.com","plan":"gold"}`)})
	var ve *schema.ValidationError
	switch {
	case !errors.Is(err, boxcar.ErrSchema) || !errors.Is(err, boxcar.ErrInvalidEvent) || !errors.Is(err, schema.ErrInvalidPayload):
		t.Fatalf("PublishTx of an invalid payload = %v; want ErrSchema, ErrInvalidEvent and ErrInvalidPayload", err)
	case !errors.As(err, &ve) || ve.Type != typSignup || ve.Version != 2 || ve.Path != "/plan":
		t.Errorf("ValidationError = %+v; want user.signed_up v2 at /plan", ve)
	}
	t.Logf("refused: %v", err)
	for _, want := range []string{"user.signed_up", "v2", "/plan"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	// Named version 1, which has no plan: refused at /plan as v1.
	err = bus.PublishTx(b.ctx, tx, boxcar.Event{Type: typSignup, Key: "u1", SchemaVersion: 1, Data: []byte(`{"user_id":"u1","email":"ada@example.com","plan":"pro"}`)})
	if !errors.As(err, &ve) || ve.Version != 1 || ve.Path != "/plan" {
		t.Errorf("PublishTx as v1 = %v; want refused as v1 at /plan", err)
	}
	if err := bus.PublishTx(b.ctx, tx, boxcar.Event{Type: typSignup, Key: "u1", Data: []byte(`{"user_id":"u1","email":"ada@example.com","plan":"pro"}`)}); err != nil {
		t.Fatalf("PublishTx of a valid payload in the same transaction: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("the caller's transaction does not commit: %v", err)
	}

	// More refusals, through Publish: not JSON, an unknown version.
	if err := bus.Publish(b.ctx, boxcar.Event{Type: typSignup, Key: "u2", Data: []byte(`{"user_id":`)}); !errors.Is(err, boxcar.ErrSchema) ||
		!strings.Contains(err.Error(), "user.signed_up v2") || !strings.Contains(err.Error(), "not JSON") {
		t.Errorf("Publish of a payload that is not JSON = %v", err)
	}
	if err := bus.Publish(b.ctx, boxcar.Event{Type: typSignup, Key: "u2", SchemaVersion: 3, Data: []byte(`{}`)}); !errors.Is(err, schema.ErrUnknownVersion) || !strings.Contains(err.Error(), "v3") {
		t.Errorf("Publish as v3 = %v, want ErrUnknownVersion naming v3", err)
	}
	// A valid event named as v1, and a type without a schema.
	if err := bus.Publish(b.ctx,
		boxcar.Event{Type: typSignup, Key: "u3", SchemaVersion: 1, Data: []byte(`{"user_id":"u3","email":"bob@example.com"}`)},
		boxcar.Event{Type: "audit.note", Key: "n1", Data: []byte(`not JSON, no schema`)},
	); err != nil {
		t.Fatal(err)
	}

	want := map[string]int{"u1": 2, "u3": 1, "n1": 0}
	for range want {
		select {
		case m := <-got:
			v, ok := want[m.Key]
			if !ok || m.SchemaVersion != v {
				t.Errorf("delivered %s %s with SchemaVersion %d; want %d (known: %v)", m.Type, m.Key, m.SchemaVersion, v, ok)
			}
			if m.Headers[bjs.HeaderSchemaVersion] != "" {
				t.Errorf("the schema version header leaks into Message.Headers: %v", m.Headers)
			}
			delete(want, m.Key)
		case <-time.After(time.Minute):
			t.Fatalf("waited a minute for %v", want)
		}
	}
	// Nothing of the refused events was written: the stream holds the three.
	waitFor(t, "the stream to settle", func() (bool, string) {
		n := streamMsgs(t, bus, bus.StreamName())
		return n == 3, fmt.Sprintf("%d messages", n)
	})
	var rows int
	if err := b.db.QueryRow(`SELECT count(*) FROM accounts`).Scan(&rows); err != nil || rows != 1 {
		t.Errorf("app rows = %d, %v; want the one the transaction committed", rows, err)
	}
}

// The signup story over three versions: v2 renames email to
// email_address, v3 requires a plan; both steps break, so the type is
// NONE and each step has an upcaster.
const (
	signupV2Renamed = `{"type":"object","additionalProperties":false,"required":["user_id","email_address"],
		"properties":{"user_id":{"type":"string"},"email_address":{"type":"string","format":"email"}}}`
	signupV3Plan = `{"type":"object","additionalProperties":false,"required":["user_id","email_address","plan"],
		"properties":{"user_id":{"type":"string"},"email_address":{"type":"string","format":"email"},"plan":{"enum":["free","pro"]}}}`
)

// signupV3 is the v3 consumer's Go type.
type signupV3 struct {
	UserID       string `json:"user_id"`
	EmailAddress string `json:"email_address"`
	Plan         string `json:"plan"`
}

// renameEmail is the v1 → v2 upcaster.
func renameEmail(data json.RawMessage) (json.RawMessage, error) {
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	m["email_address"] = m["email"]
	delete(m, "email")
	return json.Marshal(m)
}

// defaultPlan is the v2 → v3 upcaster.
func defaultPlan(data json.RawMessage) (json.RawMessage, error) {
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	m["plan"] = "free"
	return json.Marshal(m)
}

func (b *busBundle) registerThreeVersions() {
	b.t.Helper()
	if err := b.reg.SetMode(b.ctx, typSignup, schema.None); err != nil {
		b.t.Fatal(err)
	}
	b.register(typSignup, signupV1, 1)
	b.register(typSignup, signupV2Renamed, 2)
	b.register(typSignup, signupV3Plan, 3)
	if err := b.reg.Upcast(typSignup, 1, renameEmail); err != nil {
		b.t.Fatal(err)
	}
	if err := b.reg.Upcast(typSignup, 2, defaultPlan); err != nil {
		b.t.Fatal(err)
	}
}

// TestTypedHandlerSeesOneShape: events of v1, v2 and v3, and older ones
// published before the bus had a registry, all reach a v3 TxHandler in the
// v3 shape; one that no version accepts is dead-lettered at once with
// reason schema, and the other keys, and later events of its own key, go
// on.
func TestTypedHandlerSeesOneShape(t *testing.T) {
	t.Parallel()
	b := setupBus(t)
	b.registerThreeVersions()

	// Before the app used the registry: one payload in v1's shape, one in
	// no version's.
	legacy, closeLegacy := b.open(nil)
	if err := legacy.Publish(b.ctx,
		boxcar.Event{Type: typSignup, Key: "u0", Data: []byte(`{"user_id":"u0","email":"old@example.com"}`)},
		boxcar.Event{Type: typSignup, Key: "bad", Data: []byte(`{"user_id":"bad","nick":"x"}`)},
	); err != nil {
		t.Fatal(err)
	}
	closeLegacy()

	bus, _ := b.open(b.reg)
	if err := bus.Publish(b.ctx,
		boxcar.Event{Type: typSignup, Key: "u1", SchemaVersion: 1, Data: []byte(`{"user_id":"u1","email":"one@example.com"}`)},
		boxcar.Event{Type: typSignup, Key: "u2", SchemaVersion: 2, Data: []byte(`{"user_id":"u2","email_address":"two@example.com"}`)},
		boxcar.Event{Type: typSignup, Key: "u3", Data: []byte(`{"user_id":"u3","email_address":"three@example.com","plan":"pro"}`)},
		// The dead-lettered event's key goes on.
		boxcar.Event{Type: typSignup, Key: "bad", Data: []byte(`{"user_id":"bad","email_address":"fixed@example.com","plan":"pro"}`)},
	); err != nil {
		t.Fatal(err)
	}

	h, err := schema.TxHandler(b.reg, typSignup, 3, func(ctx context.Context, tx *sql.Tx, m boxcar.Message, v signupV3) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO accounts VALUES (?, ?, ?, ?) ON CONFLICT(user_id) DO UPDATE SET email = excluded.email`,
			v.UserID, v.EmailAddress, v.Plan, m.SchemaVersion)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Subscribe(b.ctx, "accounts", h, boxcar.SubscribeOptions{Types: []string{typSignup}}); err != nil {
		t.Fatal(err)
	}

	want := map[string]string{
		"u0":  "old@example.com free 0",
		"u1":  "one@example.com free 1",
		"u2":  "two@example.com free 2",
		"u3":  "three@example.com pro 3",
		"bad": "fixed@example.com pro 3",
	}
	waitFor(t, "every account", func() (bool, string) {
		var n int
		b.db.QueryRow(`SELECT count(*) FROM accounts`).Scan(&n)
		return n == len(want), fmt.Sprintf("%d accounts", n)
	})
	rows, err := b.db.Query(`SELECT user_id, email, plan, read_from FROM accounts`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, email, plan string
		var from int
		if err := rows.Scan(&id, &email, &plan, &from); err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprintf("%s %s %d", email, plan, from); got != want[id] {
			t.Errorf("account %s = %q, want %q", id, got, want[id])
		}
	}

	waitFor(t, "the dead letter", func() (bool, string) {
		n := streamMsgs(t, bus, bus.DLQStreamName())
		return n == 1, fmt.Sprintf("%d dead letters", n)
	})
	s, err := bus.JetStream().Stream(b.ctx, bus.DLQStreamName())
	if err != nil {
		t.Fatal(err)
	}
	dead, err := s.GetMsg(b.ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dead letter: %s: %s", dead.Header.Get(bjs.HeaderReason), dead.Header.Get(bjs.HeaderError))
	if r := dead.Header.Get(bjs.HeaderReason); r != "schema" {
		t.Errorf("Boxcar-Dead-Reason = %q, want schema", r)
	}
	if a := dead.Header.Get(bjs.HeaderAttempts); a != "1" {
		t.Errorf("attempts = %s, want 1: a schema failure is not retried", a)
	}
	if e := dead.Header.Get(bjs.HeaderError); !strings.Contains(e, "user.signed_up (no version) as v3") || !strings.Contains(e, "/nick") {
		t.Errorf("the dead letter's error %q does not name the type, the versions and the path", e)
	}
	if !strings.Contains(string(dead.Data), `"nick"`) {
		t.Errorf("the dead letter holds %s, want the original payload", dead.Data)
	}
}

// A typed handler refuses to start when a breaking step has no upcaster,
// or when its version is not registered.
func TestTypedHandlerChecksItsVersion(t *testing.T) {
	t.Parallel()
	b := setupBus(t)
	if err := b.reg.SetMode(b.ctx, typSignup, schema.None); err != nil {
		t.Fatal(err)
	}
	b.register(typSignup, signupV1, 1)
	b.register(typSignup, signupV2Renamed, 2)
	noop := func(context.Context, boxcar.Message, signupV3) error { return nil }
	_, err := schema.HandlerFunc(b.reg, typSignup, 2, noop)
	if err == nil || !strings.Contains(err.Error(), "no upcaster from v1") || !strings.Contains(err.Error(), "email_address") {
		t.Errorf("handler of v2 without the v1 upcaster = %v; want refused, naming the step and the property", err)
	}
	if _, err := schema.HandlerFunc(b.reg, typSignup, 3, noop); !errors.Is(err, schema.ErrUnknownVersion) {
		t.Errorf("handler of v3 = %v, want ErrUnknownVersion", err)
	}
	if _, err := schema.HandlerFunc(b.reg, "order.placed", 1, noop); !errors.Is(err, schema.ErrUnknownType) {
		t.Errorf("handler of an unknown type = %v, want ErrUnknownType", err)
	}
	// v1 needs nothing; with the upcaster, v2 starts.
	if _, err := schema.HandlerFunc(b.reg, typSignup, 1, noop); err != nil {
		t.Errorf("handler of v1: %v", err)
	}
	if err := b.reg.Upcast(typSignup, 1, renameEmail); err != nil {
		t.Fatal(err)
	}
	if _, err := schema.HandlerFunc(b.reg, typSignup, 2, noop); err != nil {
		t.Errorf("handler of v2 with the upcaster: %v", err)
	}
}

// TestPublishRefusesOutsizedNumbers: a payload holding a number the
// validator cannot compare (1e99999999 against a minimum panicked inside
// PublishTx) is refused like any invalid payload, and the publisher goes
// on.
func TestPublishRefusesOutsizedNumbers(t *testing.T) {
	t.Parallel()
	b := setupBus(t)
	b.register("order.placed", `{"type":"object","properties":{"amount":{"type":"number","minimum":0}}}`, 1)
	bus, _ := b.open(b.reg)
	err := bus.Publish(b.ctx, boxcar.Event{Type: "order.placed", Key: "o1", Data: []byte(`{"amount":1e99999999}`)})
	var ve *schema.ValidationError
	if !errors.Is(err, boxcar.ErrSchema) || !errors.As(err, &ve) || ve.Path != "/amount" {
		t.Fatalf("Publish of an outsized number = %v; want ErrSchema at /amount", err)
	}
	if err := bus.Publish(b.ctx, boxcar.Event{Type: "order.placed", Key: "o1", Data: []byte(`{"amount":12.5}`)}); err != nil {
		t.Fatalf("Publish after the refusal: %v", err)
	}
}
