// Package signup is the signup story of cmd/demo as importable code: the
// auth service's writes (a user and its event, in one transaction) and the
// billing service's transactional handler (a subscription row per user,
// whose invoice address follows the user's email changes, in order). The
// demo runs them; crash_test.go crash-tests them with package boxcartest.
package signup

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/boxcar-bus/boxcar"
)

// The event types of the story.
const (
	TypeSignedUp     = "user.signed_up"
	TypeEmailChanged = "user.email_changed"
)

// UserEvent is the payload of both event types.
type UserEvent struct {
	UserID string `json:"user_id"`
	Email  string `json:"email"`
}

// Schema is the application's own tables, in the same SQLite file as
// Boxcar's so that a handler's writes commit with its dedupe row.
const Schema = `
CREATE TABLE IF NOT EXISTS users (
	id    TEXT PRIMARY KEY,
	email TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
	name TEXT PRIMARY KEY,
	n    INTEGER NOT NULL
);
INSERT OR IGNORE INTO counters(name, n) VALUES ('signups', 0);
CREATE TABLE IF NOT EXISTS subscriptions (
	user_id TEXT PRIMARY KEY,
	plan    TEXT NOT NULL,
	email   TEXT NOT NULL
);`

// The services' SQL (the demo's naive side runs the same statements).
const (
	InsertUserSQL  = `INSERT INTO users(id, email) VALUES (?, ?)`
	ChangeEmailSQL = `UPDATE users SET email = ? WHERE id = ?`
	// Not idempotent by nature: run twice, it counts twice.
	CountSignupSQL = `UPDATE counters SET n = n + 1 WHERE name = 'signups'`
	SubscribeSQL   = `INSERT INTO subscriptions(user_id, plan, email) VALUES (?, 'free', ?)
		ON CONFLICT(user_id) DO NOTHING`
	BillingEmailSQL = `INSERT INTO subscriptions(user_id, plan, email) VALUES (?, 'free', ?)
		ON CONFLICT(user_id) DO UPDATE SET email = excluded.email`
)

// SignUp is the auth service's signup: the user's row and its
// user.signed_up event, in the caller's transaction.
func SignUp(ctx context.Context, bus *boxcar.Bus, tx *sql.Tx, id, email string) error {
	if _, err := tx.ExecContext(ctx, InsertUserSQL, id, email); err != nil {
		return err
	}
	return bus.PublishTx(ctx, tx, boxcar.Event{Type: TypeSignedUp, Key: id, Data: mustJSON(UserEvent{UserID: id, Email: email})})
}

// ChangeEmail is the auth service's email change: the user's new address
// and its user.email_changed event, in the caller's transaction.
func ChangeEmail(ctx context.Context, bus *boxcar.Bus, tx *sql.Tx, id, email string) error {
	if _, err := tx.ExecContext(ctx, ChangeEmailSQL, email, id); err != nil {
		return err
	}
	return bus.PublishTx(ctx, tx, boxcar.Event{Type: TypeEmailChanged, Key: id, Data: mustJSON(UserEvent{UserID: id, Email: email})})
}

// BillingSubscriber is the billing service's subscriber name.
const BillingSubscriber = "billing"

// BillingOptions are the billing subscriber's options: the two types.
func BillingOptions() boxcar.SubscribeOptions {
	return boxcar.SubscribeOptions{Types: []string{TypeSignedUp, TypeEmailChanged}}
}

// Billing is the billing service's handler: a subscription row at signup;
// its invoice address follows the user's email changes, in order.
type Billing struct {
	// OnEvent, if set, is called for each event once decoded, before its
	// write (the demo counts there, and pauses for its crashes).
	OnEvent func()
}

// Handle is a boxcar.TxHandler function.
func (b Billing) Handle(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
	var ev UserEvent
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		return boxcar.Permanent(err)
	}
	if b.OnEvent != nil {
		b.OnEvent()
	}
	q := SubscribeSQL
	if m.Type == TypeEmailChanged {
		q = BillingEmailSQL
	}
	_, err := tx.ExecContext(ctx, q, ev.UserID, ev.Email)
	return err
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("signup: %v", err))
	}
	return b
}
