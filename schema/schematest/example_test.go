package schematest_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/schema"
	"github.com/boxcar-bus/boxcar/schema/schematest"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// Contract tests, as a producer's and a consumer's test files would hold
// them. The schemas live in the repository (testdata/schemas here; an app
// keeps them in schemas/ and registers them at start with RegisterDir):
// user.signed_up v1 has email; v2 renames it email_address and adds an
// optional plan, a breaking step registered under mode NONE with an
// upcaster that lifts v1 payloads.

const schemasDir = "testdata/schemas"

// The producer's side: the auth service's code that builds the event.

type signup struct {
	UserID string `json:"user_id"`
	Email  string `json:"email_address"`
	Plan   string `json:"plan,omitempty"`
}

// signupEvent is the producer's function under test: it names the version
// its code writes, so that a rollback or a newer registration elsewhere
// does not change what it is validated against.
func signupEvent(id, email, plan string) boxcar.Event {
	data, _ := json.Marshal(signup{UserID: id, Email: email, Plan: plan})
	return boxcar.Event{Type: "user.signed_up", Key: id, SchemaVersion: 2, Data: data}
}

// TestProducerEventsValidate fails in CI when the producer's code writes
// something its declared schema version rejects (a renamed JSON tag, a new
// plan the enum lacks), before any consumer sees it.
func TestProducerEventsValidate(t *testing.T) {
	schemas := schematest.Dir(t, schemasDir)
	for _, ev := range []boxcar.Event{
		signupEvent("u1", "ada@example.com", ""),
		signupEvent("u2", "grace@example.com", "pro"),
	} {
		schematest.AssertValid(t, schemas, ev.Type, ev.SchemaVersion, ev.Data)
	}
	// And what it must never write.
	schematest.AssertInvalid(t, schemas, "user.signed_up", 2, signupEvent("u3", "linus@example.com", "gold").Data)
}

// The consumer's side: billing reads user.signed_up as v2, and ships the
// upcaster that lifts v1 payloads.

func registerBillingUpcasters(reg *schema.Registry) error {
	return reg.Upcast("user.signed_up", 1, func(data json.RawMessage) (json.RawMessage, error) {
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, err
		}
		m["email_address"], m["plan"] = m["email"], "free"
		delete(m, "email")
		return json.Marshal(m)
	})
}

// applySignup is billing's handler body, the part the contract test runs
// on a real database; in production schema.TxHandler calls it with the
// decoded v2 payload.
func applySignup(ctx context.Context, tx *sql.Tx, _ boxcar.Message, v signup) error {
	if v.Email == "" {
		return boxcar.Permanent(errors.New("billing: no invoice address"))
	}
	plan := v.Plan
	if plan == "" {
		plan = "free"
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO subscriptions(user_id, email, plan) VALUES (?, ?, ?)`, v.UserID, v.Email, plan)
	return err
}

// consumerContract checks that billing reads every registered version's
// examples: each is decoded as v2 (through the upcasters) and applied in a
// transaction of a real SQLite file, which must then hold its row with an
// address. It is the test below, and is run once more without the upcaster
// to show that it fails then.
func consumerContract(t testing.TB, withUpcasters bool) {
	reg := schematest.Registry(t, schemasDir)
	if withUpcasters {
		if err := registerBillingUpcasters(reg); err != nil {
			t.Fatal(err)
		}
	}
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "billing.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE subscriptions (user_id TEXT PRIMARY KEY, email TEXT NOT NULL, plan TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	schematest.ForEachMessage(t, reg, "user.signed_up", func(t testing.TB, m boxcar.Message) {
		v, err := schema.Decode[signup](reg, "user.signed_up", 2, m)
		if err != nil {
			t.Errorf("billing cannot read this v%d example: %v", m.SchemaVersion, err)
			return
		}
		tx, err := db.BeginTx(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if err := applySignup(t.Context(), tx, m, v); err != nil {
			t.Errorf("billing refuses this v%d example: %v", m.SchemaVersion, err)
			return
		}
		var email string
		if err := tx.QueryRow(`SELECT email FROM subscriptions WHERE user_id = ?`, v.UserID).Scan(&email); err != nil || !strings.Contains(email, "@") {
			t.Errorf("after the v%d example the subscription's address is %q (%v)", m.SchemaVersion, email, err)
		}
	})
}

// TestConsumerReadsEveryVersion fails in CI when a registered version's
// examples no longer reach billing's handler: a new version without its
// upcaster, or a handler that stopped accepting an old shape.
func TestConsumerReadsEveryVersion(t *testing.T) {
	consumerContract(t, true)
}

// The contract test can fail: without the upcaster the v1 example does
// not reach billing (and schema.TxHandler would refuse to start).
func TestConsumerContractFailsWithoutTheUpcaster(t *testing.T) {
	rec := run(t, func(tb testing.TB) { consumerContract(tb, false) })
	if len(rec.errors) != 1 || !strings.Contains(rec.errors[0], "v1 example") || !strings.Contains(rec.errors[0], "no upcaster from v1 to v2") {
		t.Errorf("without the upcaster: %q; want the v1 example refused", rec.errors)
	}
}
