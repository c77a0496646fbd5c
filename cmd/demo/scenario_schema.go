package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/schema"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// The article's fourth failure mode, schema drift: producer and consumer
// are decoupled in code but coupled in data shape. Halfway through the
// signups the auth service renames email to email_address.
//
// The naive side decodes payloads with plain encoding/json and no
// registry. It runs on the same bus as the Boxcar side (an in-process
// Boxcar without Config.Schemas), so that the transport is not the
// difference: nothing refuses the rename, and billing silently stores an
// empty invoice address for every renamed event.
//
// On Boxcar's side the schemas live in a directory (schemas/TYPE/N.json)
// registered at start. The rename as a new version is refused by
// "boxcar schema check" and at registration, with the checker's reasons,
// and the renamed producer's PublishTx is refused against v1. The team
// then makes the break deliberately: v2 under mode NONE, with an upcaster
// from v1 that the consumers ship. The consumers, upgraded first, read v2
// through typed handlers: the v1 events already in the stream, and those
// an old producer instance still publishes, reach them through the
// upcaster. No process is killed: this fault is a deploy, not a crash.
var scenarioSchemaDrift = &scenario{
	num:       5,
	name:      "schema-drift",
	failure:   "schema drift: a rename",
	naiveWay:  "plain JSON decoding, no registry",
	boxcarWay: "the registry refuses the rename; an upcaster lifts v1",
	wrong:     "billed at an empty address",
	fault: func(cfg config) string {
		return fmt.Sprintf("auth renames email → email_address after signup #%d", cfg.DriftUsers/2)
	},
	run:   runSchemaDrift,
	count: func(o outcome) (int, int) { return o.StaleEmail + o.NotBilled, o.Users },
}

// signupV1 and signupV2 are the two shapes of user.signed_up's payload.
type signupV1 = userEvent

type signupV2 struct {
	UserID       string `json:"user_id"`
	EmailAddress string `json:"email_address"`
}

// The schemas of user.signed_up, as files in the repository.
const (
	driftSchemaV1 = `{
  "type": "object",
  "additionalProperties": false,
  "required": ["user_id", "email"],
  "properties": {
    "user_id": {"type": "string"},
    "email": {"type": "string", "format": "email"}
  }
}
`
	driftSchemaV2 = `{
  "type": "object",
  "additionalProperties": false,
  "required": ["user_id", "email_address"],
  "properties": {
    "user_id": {"type": "string"},
    "email_address": {"type": "string", "format": "email"}
  }
}
`
	// driftModeFile makes the rename deliberate: NONE for the step to v2,
	// which has an upcaster.
	driftModeFile = "# v2 renames email to email_address: a break, lifted by an upcaster from v1\nNONE\n"
)

// renameEmail is the upcaster v1 → v2 the consumers ship.
func renameEmail(data json.RawMessage) (json.RawMessage, error) {
	var v signupV1
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, err
	}
	return json.Marshal(signupV2{UserID: v.UserID, EmailAddress: v.Email})
}

// driftSide is one side's bus and services in this process.
type driftSide struct {
	dir  string
	db   *sql.DB
	bus  *boxcar.Bus
	mail *mailbox
}

func runSchemaDrift(ctx context.Context, r *runner, sc *scenario, side string) (res sideResult, err error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	dir, err := r.sideDir(sc, side)
	if err != nil {
		return sideResult{}, err
	}
	s := &driftSide{dir: dir}
	if s.db, err = sqlite.Open(filepath.Join(dir, "app.db")); err != nil {
		return sideResult{}, err
	}
	defer s.db.Close()
	if _, err := s.db.ExecContext(ctx, appSchema); err != nil {
		return sideResult{}, err
	}
	if s.mail, err = openMailbox(dir); err != nil {
		return sideResult{}, err
	}
	defer s.mail.close()
	r.prog.step(sc, side, "signing up")
	if side == roleNaive {
		res, err = s.runNaive(ctx, r.cfg.DriftUsers)
	} else {
		res, err = s.runBoxcar(ctx, r, sc, r.cfg.DriftUsers)
	}
	if err != nil {
		return sideResult{}, err
	}
	if res.out, err = check(ctx, dir); err != nil {
		return sideResult{}, err
	}
	res.took = time.Since(start)
	return res, nil
}

func (s *driftSide) open(ctx context.Context, schemas boxcar.SchemaValidator) error {
	cfg := boxcar.Config{Dir: filepath.Join(s.dir, "nats")}
	if schemas != nil {
		cfg.Schemas = schemas
	}
	bus, err := boxcar.Open(ctx, s.db, cfg)
	s.bus = bus
	return err
}

func (s *driftSide) close() error {
	if s.bus == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.bus.Close(ctx)
}

// signUp commits user i and its event, whose payload payload builds.
func (s *driftSide) signUp(ctx context.Context, i, version int, payload func(id, email string) any) error {
	id, email := userID(i), emailOf(i, 0)
	return s.bus.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, sqlInsertUser, id, email); err != nil {
			return err
		}
		return s.bus.PublishTx(ctx, tx, boxcar.Event{Type: typeSignedUp, Key: id, SchemaVersion: version, Data: mustJSON(payload(id, email))})
	})
}

func v1Payload(id, email string) any { return signupV1{UserID: id, Email: email} }
func v2Payload(id, email string) any { return signupV2{UserID: id, EmailAddress: email} }

// drained waits until every subscriber handled every event.
func (s *driftSide) drained(ctx context.Context) error {
	return (&boxcarApp{bus: s.bus}).waitDrained(ctx, time.Minute)
}

// runNaive: the producer renames the field halfway; the consumers decode
// with encoding/json into the shape they were written for.
func (s *driftSide) runNaive(ctx context.Context, n int) (sideResult, error) {
	if err := s.open(ctx, nil); err != nil {
		return sideResult{}, err
	}
	defer s.close()
	if err := s.subscribePlain(ctx); err != nil {
		return sideResult{}, err
	}
	half := n / 2
	if err := parallel(half, 4, func(i int) error { return s.signUp(ctx, i, 0, v1Payload) }); err != nil {
		return sideResult{}, err
	}
	// The rename ships: nothing refuses it.
	if err := parallel(n-half, 4, func(i int) error { return s.signUp(ctx, half+i, 0, v2Payload) }); err != nil {
		return sideResult{}, err
	}
	if err := s.drained(ctx); err != nil {
		return sideResult{}, err
	}
	var empty int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM subscriptions WHERE email = ''`).Scan(&empty); err != nil {
		return sideResult{}, err
	}
	failed, err := s.failures(ctx)
	if err != nil {
		return sideResult{}, err
	}
	mailed, err := mailedToEmpty(filepath.Join(s.dir, "mail.log"))
	if err != nil {
		return sideResult{}, err
	}
	return sideResult{
		stats: map[string]int64{"empty": int64(empty), "failures": failed},
		notes: []string{fmt.Sprintf("the rename shipped unchecked: billing stored %d subscriptions with an empty address, email sent %d welcomes to \"\", and %d handler calls failed: nothing noticed", empty, mailed, failed)},
	}, s.close()
}

// mailedToEmpty counts the send requests in a mail log whose address is
// empty.
func mailedToEmpty(path string) (int, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n := 0
	for l := range strings.SplitSeq(string(raw), "\n") {
		if f := strings.Split(l, "\t"); len(f) == 4 && f[2] == "" {
			n++
		}
	}
	return n, nil
}

// failures is how many handler calls failed or were dead-lettered, over
// every subscriber.
func (s *driftSide) failures(ctx context.Context) (int64, error) {
	st, err := s.bus.Stats(ctx)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, sub := range st.Subscribers {
		n += sub.Failures + sub.DeadLettered
	}
	return n, nil
}

// subscribePlain starts email, analytics and billing the naive way: each
// decodes the payload into the shape it was written for.
func (s *driftSide) subscribePlain(ctx context.Context) error {
	decode := func(m boxcar.Message) (userEvent, error) {
		var ev userEvent
		err := json.Unmarshal(m.Data, &ev) // an unknown field is ignored, a missing one is ""
		return ev, err
	}
	opts := boxcar.SubscribeOptions{Types: []string{typeSignedUp}}
	if _, err := s.bus.Subscribe(ctx, "email", boxcar.HandlerFunc(func(ctx context.Context, m boxcar.Message) error {
		ev, err := decode(m)
		if err != nil {
			return err
		}
		return s.mail.send(m.ID, ev.UserID, ev.Email, "welcome")
	}), opts); err != nil {
		return err
	}
	if _, err := s.bus.Subscribe(ctx, "analytics", boxcar.TxHandler(func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
		if _, err := decode(m); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, sqlCountSignup)
		return err
	}), opts); err != nil {
		return err
	}
	_, err := s.bus.Subscribe(ctx, "billing", boxcar.TxHandler(func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
		ev, err := decode(m)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, sqlSubscribe, ev.UserID, ev.Email)
		return err
	}), opts)
	return err
}

// runBoxcar: the same rename, against the registry.
func (s *driftSide) runBoxcar(ctx context.Context, r *runner, sc *scenario, n int) (sideResult, error) {
	schemas := filepath.Join(s.dir, "schemas")
	typeDir := filepath.Join(schemas, typeSignedUp)
	write := func(name, body string) error {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(typeDir, name)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(typeDir, name), []byte(body), 0o644)
	}
	if err := write("1.json", driftSchemaV1); err != nil {
		return sideResult{}, err
	}
	if err := write("1.examples/ada.json", `{"user_id": "u00000", "email": "ada@example.com"}`+"\n"); err != nil {
		return sideResult{}, err
	}
	reg, err := schema.NewRegistry(ctx, s.db)
	if err != nil {
		return sideResult{}, err
	}
	if _, err := reg.RegisterDir(ctx, schemas); err != nil {
		return sideResult{}, err
	}
	if err := s.open(ctx, reg); err != nil {
		return sideResult{}, err
	}
	defer s.close()
	var notes []string
	half := n / 2
	// The old producer, naming the version its code writes.
	if err := parallel(half, 4, func(i int) error { return s.signUp(ctx, i, 1, v1Payload) }); err != nil {
		return sideResult{}, err
	}

	// The rename as a new version: CI's check and the registration refuse it.
	r.prog.step(sc, roleBoxcar, "the rename, as 2.json")
	if err := write("2.json", driftSchemaV2); err != nil {
		return sideResult{}, err
	}
	var out, errOut bytes.Buffer
	code := schema.RunCheck(ctx, &out, &errOut, schemas, filepath.Join(s.dir, "app.db"))
	if code != schema.ExitProblems {
		return sideResult{}, fmt.Errorf("boxcar schema check of the rename exited %d, want %d:\n%s%s", code, schema.ExitProblems, out.String(), errOut.String())
	}
	notes = append(notes, fmt.Sprintf("boxcar schema check schemas -db app.db, with the rename as 2.json: exit %d", code))
	for l := range strings.SplitSeq(strings.TrimSpace(out.String()), "\n") {
		notes = append(notes, "  "+strings.ReplaceAll(l, s.dir+string(filepath.Separator), ""))
	}
	_, err = reg.RegisterDir(ctx, schemas)
	var ie *schema.IncompatibleError
	if !errors.As(err, &ie) {
		return sideResult{}, fmt.Errorf("RegisterDir of the rename = %v, want an IncompatibleError", err)
	}
	notes = append(notes, fmt.Sprintf("reg.RegisterDir at start: refused, %d breaking changes under %s: the app would not start with it", len(ie.Changes), ie.Mode))
	// The renamed producer's code shipped anyway: refused at PublishTx,
	// its whole signup transaction with it.
	err = s.signUp(ctx, n+1, 0, v2Payload)
	if !errors.Is(err, boxcar.ErrSchema) {
		return sideResult{}, fmt.Errorf("PublishTx of the renamed payload = %v, want ErrSchema", err)
	}
	notes = append(notes, "the renamed producer's PublishTx: "+err.Error())

	// The deliberate break: v2 under mode NONE, the consumers' upcaster.
	r.prog.step(sc, roleBoxcar, "v2 with an upcaster")
	if err := write(schema.ModeFile, driftModeFile); err != nil {
		return sideResult{}, err
	}
	regs, err := reg.RegisterDir(ctx, schemas)
	if err != nil || len(regs) != 2 || !regs[1].Created {
		return sideResult{}, fmt.Errorf("RegisterDir of the deliberate v2 = %+v, %v", regs, err)
	}
	if err := reg.Upcast(typeSignedUp, 1, renameEmail); err != nil {
		return sideResult{}, err
	}
	notes = append(notes, "v2 registered deliberately (mode NONE in the directory, reviewed like code) with an upcaster v1 → v2 in the consumers")
	// The consumers, upgraded first, read v2.
	if err := s.subscribeTyped(ctx, reg); err != nil {
		return sideResult{}, err
	}
	// The new producer publishes v2; an old instance, still running during
	// the rolling deploy, publishes v1 beside it.
	var oldAfter atomic.Int64
	if err := parallel(n-half, 4, func(i int) error {
		if i%2 == 0 {
			oldAfter.Add(1)
			return s.signUp(ctx, half+i, 1, v1Payload)
		}
		return s.signUp(ctx, half+i, 0, v2Payload)
	}); err != nil {
		return sideResult{}, err
	}
	if err := s.drained(ctx); err != nil {
		return sideResult{}, err
	}
	failed, err := s.failures(ctx)
	if err != nil {
		return sideResult{}, err
	}
	v1 := int64(half) + oldAfter.Load()
	return sideResult{
		stats: map[string]int64{"v1_before": int64(half), "v1_after": oldAfter.Load(), "v2_events": int64(n) - v1, "check_exit": int64(code), "failures": failed},
		notes: notes,
	}, s.close()
}

// subscribeTyped starts email, analytics and billing as typed handlers of
// v2: each gets the payload as a signupV2, whatever version it was
// published as, and none would start without the upcaster v2 needs.
func (s *driftSide) subscribeTyped(ctx context.Context, reg *schema.Registry) error {
	opts := boxcar.SubscribeOptions{Types: []string{typeSignedUp}}
	email, err := schema.HandlerFunc(reg, typeSignedUp, 2, func(ctx context.Context, m boxcar.Message, v signupV2) error {
		return s.mail.send(m.ID, v.UserID, v.EmailAddress, "welcome")
	})
	if err != nil {
		return err
	}
	analytics, err := schema.TxHandler(reg, typeSignedUp, 2, func(ctx context.Context, tx *sql.Tx, _ boxcar.Message, _ signupV2) error {
		_, err := tx.ExecContext(ctx, sqlCountSignup)
		return err
	})
	if err != nil {
		return err
	}
	billing, err := schema.TxHandler(reg, typeSignedUp, 2, func(ctx context.Context, tx *sql.Tx, _ boxcar.Message, v signupV2) error {
		_, err := tx.ExecContext(ctx, sqlSubscribe, v.UserID, v.EmailAddress)
		return err
	})
	if err != nil {
		return err
	}
	for name, h := range map[string]boxcar.Handler{"email": email, "analytics": analytics, "billing": billing} {
		if _, err := s.bus.Subscribe(ctx, name, h, opts); err != nil {
			return err
		}
	}
	return nil
}
