package schema_test

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/schema"
)

// Lift's rules, one case each, on a registry in a real SQLite file:
// v1 --rename--> v2 --defaultPlan--> v3 --(no upcaster)--> v4, where v4
// adds an optional property to v3's closed model (a compatible step).
func TestLift(t *testing.T) {
	t.Parallel()
	b := setupBus(t)
	b.registerThreeVersions()
	signupV4 := strings.Replace(signupV3Plan, `"plan":{"enum":["free","pro"]}`, `"plan":{"enum":["free","pro"]},"referrer":{"type":"string"}`, 1)
	b.register(typSignup, signupV4, 4)

	for _, c := range []struct {
		name     string
		from, to int
		data     string
		want     string // the lifted payload, or
		wantErr  string // a part of the error
	}{
		{"same version", 2, 2, `{"user_id":"a","email_address":"a@example.com"}`, `{"user_id":"a","email_address":"a@example.com"}`, ""},
		{"one step", 1, 2, `{"user_id":"a","email":"a@example.com"}`, `{"email_address":"a@example.com","user_id":"a"}`, ""},
		{"chained", 1, 3, `{"user_id":"a","email":"a@example.com"}`, `{"email_address":"a@example.com","plan":"free","user_id":"a"}`, ""},
		{"chained, then the identity", 1, 4, `{"user_id":"a","email":"a@example.com"}`, `{"email_address":"a@example.com","plan":"free","user_id":"a"}`, ""},
		{"no version, sniffed as v1", 0, 3, `{"user_id":"a","email":"a@example.com"}`, `{"email_address":"a@example.com","plan":"free","user_id":"a"}`, ""},
		{"no version, valid as the target", 0, 3, `{"user_id":"a","email_address":"a@example.com","plan":"pro"}`, `{"user_id":"a","email_address":"a@example.com","plan":"pro"}`, ""},
		{"no version, matching none", 0, 3, `{"nick":"x"}`, "", "(no version) as v3"},
		{"newer, readable by the older", 3, 2, `{"user_id":"a","email_address":"a@example.com"}`, `{"user_id":"a","email_address":"a@example.com"}`, ""},
		{"newer, not readable", 4, 3, `{"user_id":"a","email_address":"a@example.com","plan":"pro","referrer":"b"}`, "", "upgrade the consumer"},
		{"an upcaster's input v2 rejects", 1, 2, `{"user_id":"a","email":"a@example.com","extra":1}`, "", "returned a payload v2 rejects"},
		{"unknown target", 1, 5, `{}`, "", "versions 1 to 4"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := b.reg.Lift(typSignup, c.from, c.to, []byte(c.data))
			if c.wantErr != "" {
				var de *schema.DecodeError
				if !errors.Is(err, boxcar.ErrSchema) || !errors.As(err, &de) || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("Lift = %s, %v; want a DecodeError (ErrSchema) containing %q", got, err, c.wantErr)
				}
				if de.Type != typSignup || de.Want != c.to || de.Version != c.from {
					t.Errorf("DecodeError = %+v, want type %s, v%d as v%d", de, typSignup, c.from, c.to)
				}
				return
			}
			if err != nil || string(got) != c.want {
				t.Fatalf("Lift = %s, %v; want %s", got, err, c.want)
			}
		})
	}
}

// An upcaster that fails or panics fails the lift with an error naming the
// step, and does not bring the consumer down.
func TestLiftUpcasterFailures(t *testing.T) {
	t.Parallel()
	b := setupBus(t)
	if err := b.reg.SetMode(b.ctx, typSignup, schema.None); err != nil {
		t.Fatal(err)
	}
	b.register(typSignup, signupV1, 1)
	b.register(typSignup, signupV2Renamed, 2)
	b.register(typSignup, signupV3Plan, 3)
	if err := b.reg.Upcast(typSignup, 1, func(json.RawMessage) (json.RawMessage, error) { return nil, errors.New("no email to rename") }); err != nil {
		t.Fatal(err)
	}
	if err := b.reg.Upcast(typSignup, 2, func(json.RawMessage) (json.RawMessage, error) { panic("boom") }); err != nil {
		t.Fatal(err)
	}
	_, err := b.reg.Lift(typSignup, 1, 3, []byte(`{"user_id":"a","email":"a@example.com"}`))
	var de *schema.DecodeError
	if !errors.As(err, &de) || de.Step != 1 || !strings.Contains(err.Error(), "no email to rename") || !strings.Contains(err.Error(), "from v1 to v2") {
		t.Errorf("Lift with a failing upcaster = %v; want step 1 named", err)
	}
	_, err = b.reg.Lift(typSignup, 2, 3, []byte(`{"user_id":"a","email_address":"a@example.com"}`))
	if !errors.As(err, &de) || de.Step != 2 || !strings.Contains(err.Error(), "panic: boom") {
		t.Errorf("Lift with a panicking upcaster = %v; want step 2 and the panic", err)
	}
}

func TestUpcastRefuses(t *testing.T) {
	t.Parallel()
	b := setupBus(t)
	b.register(typSignup, signupV1, 1)
	b.register(typSignup, signupV2, 2)
	id := func(d json.RawMessage) (json.RawMessage, error) { return d, nil }
	for _, c := range []struct {
		typ  string
		from int
		fn   schema.Upcaster
		want error
		text string
	}{
		{"no.such", 1, id, schema.ErrUnknownType, "register its versions first"},
		{typSignup, 2, id, schema.ErrUnknownVersion, "register v3 first"},
		{typSignup, 0, id, schema.ErrUnknownVersion, "versions 1 to 2"},
		{typSignup, math.MaxInt, id, schema.ErrUnknownVersion, "versions 1 to 2"},
		{"bad..type", 1, id, schema.ErrInvalidType, ""},
		{typSignup, 1, nil, nil, "nil"},
	} {
		err := b.reg.Upcast(c.typ, c.from, c.fn)
		if err == nil || c.want != nil && !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
			t.Errorf("Upcast(%s, %d) = %v; want %v containing %q", c.typ, c.from, err, c.want, c.text)
		}
	}
	if err := b.reg.Upcast(typSignup, 1, id); err != nil {
		t.Fatal(err)
	}
	if err := b.reg.Upcast(typSignup, 1, id); err == nil || !strings.Contains(err.Error(), "registered already") {
		t.Errorf("a second upcaster of one step = %v", err)
	}
}

func TestDecode(t *testing.T) {
	t.Parallel()
	b := setupBus(t)
	b.registerThreeVersions()
	m := boxcar.Message{Type: typSignup, SchemaVersion: 1, Data: []byte(`{"user_id":"a","email":"a@example.com"}`)}
	v, err := schema.Decode[signupV3](b.reg, typSignup, 3, m)
	if err != nil || v != (signupV3{UserID: "a", EmailAddress: "a@example.com", Plan: "free"}) {
		t.Errorf("Decode = %+v, %v", v, err)
	}
	m.Type = "order.placed"
	if _, err := schema.Decode[signupV3](b.reg, typSignup, 3, m); !errors.Is(err, boxcar.ErrSchema) || !strings.Contains(err.Error(), "SubscribeOptions.Types") {
		t.Errorf("Decode of another type = %v", err)
	}
	// A Go type that does not fit the schema's shape.
	m.Type = typSignup
	if _, err := schema.Decode[struct{ Plan int }](b.reg, typSignup, 3, m); !errors.Is(err, boxcar.ErrSchema) || !strings.Contains(err.Error(), "decode into") {
		t.Errorf("Decode into a mismatched type = %v", err)
	}
}

// ValidateEvent reads memory only: a version registered through another
// Registry (another process) is refused by number, and not the latest,
// until Refresh; a type new to this Registry appears at Refresh too.
func TestValidateEventSeesOtherRegistrationsAtRefresh(t *testing.T) {
	t.Parallel()
	b := setupBus(t)
	b.register(typSignup, signupV1, 1)
	other, err := schema.NewRegistry(b.ctx, b.db)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := other.Register(b.ctx, typSignup, []byte(signupV2)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := other.Register(b.ctx, "order.placed", []byte(`{"type":"object"}`)); err != nil {
		t.Fatal(err)
	}
	pro := []byte(`{"user_id":"a","email":"a@example.com","plan":"pro"}`)
	if _, err := b.reg.ValidateEvent(typSignup, 2, pro); !errors.Is(err, schema.ErrUnknownVersion) || !strings.Contains(err.Error(), "Refresh") {
		t.Errorf("ValidateEvent as v2 before Refresh = %v", err)
	}
	if v, err := b.reg.ValidateEvent(typSignup, 0, pro); !errors.Is(err, schema.ErrInvalidPayload) || v != 0 {
		t.Errorf("ValidateEvent as the latest before Refresh = %d, %v; want refused by v1", v, err)
	}
	if v, err := b.reg.ValidateEvent("order.placed", 0, []byte(`[]`)); v != 0 || err != nil {
		t.Errorf("ValidateEvent of a type unknown here = %d, %v; want published as it is", v, err)
	}
	if err := b.reg.Refresh(b.ctx, ""); err != nil {
		t.Fatal(err)
	}
	if v, err := b.reg.ValidateEvent(typSignup, 0, pro); v != 2 || err != nil {
		t.Errorf("ValidateEvent after Refresh = %d, %v; want v2", v, err)
	}
	if _, err := b.reg.ValidateEvent("order.placed", 0, []byte(`[]`)); !errors.Is(err, schema.ErrInvalidPayload) {
		t.Errorf("ValidateEvent of the new type after Refresh = %v, want validated", err)
	}
	if _, err := b.reg.ValidateEvent(typSignup, -1, pro); !errors.Is(err, schema.ErrUnknownVersion) {
		t.Errorf("ValidateEvent as v-1 = %v", err)
	}
	if _, err := b.reg.ValidateEvent("no.schema", 1, pro); !errors.Is(err, schema.ErrUnknownType) {
		t.Errorf("ValidateEvent naming a version of a type without schema = %v", err)
	}
}

// FuzzLiftAndValidate: whatever the payload and versions, the publish and
// consumer paths return a payload or an error that names the type, and
// never panic. go test -fuzz FuzzLiftAndValidate ./schema/
func FuzzLiftAndValidate(f *testing.F) {
	for _, seed := range []string{`{"user_id":"a","email":"a@example.com"}`, `{"user_id":"a","email_address":"a@example.com","plan":"pro"}`, `{"user_id":`, `null`, "\xff", `[]`, `{"email":{"email":1}}`} {
		f.Add([]byte(seed), 0, 3)
		f.Add([]byte(seed), 1, 2)
	}
	b := setupBus(f)
	b.registerThreeVersions()
	f.Fuzz(func(t *testing.T, data []byte, from, to int) {
		from, to = from%5, to%5
		out, err := b.reg.Lift(typSignup, from, to, data)
		switch {
		case err != nil && (!errors.Is(err, boxcar.ErrSchema) || !strings.Contains(err.Error(), typSignup)):
			t.Fatalf("Lift(%d, %d) = %v: not an ErrSchema naming the type", from, to, err)
		case err == nil && from != to && to >= 1:
			if _, verr := b.reg.ValidateEvent(typSignup, to, out); verr != nil {
				t.Fatalf("Lift(%d, %d) gave %s, which v%d rejects: %v", from, to, out, to, verr)
			}
		}
		if _, err := b.reg.ValidateEvent(typSignup, from, data); err != nil && !strings.Contains(err.Error(), typSignup) {
			t.Fatalf("ValidateEvent(v%d) = %v: does not name the type", from, err)
		}
	})
}
