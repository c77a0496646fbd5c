package schema

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/boxcar-bus/boxcar/sqlite"
)

// openDB opens a real SQLite file in the test's directory.
func openDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

type registryBundle struct {
	ctx  context.Context
	path string
	db   *sql.DB
	reg  *Registry
}

func setupRegistry(t *testing.T) registryBundle {
	t.Helper()
	path := filepath.Join(t.TempDir(), "app.db")
	db := openDB(t, path)
	reg, err := NewRegistry(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	return registryBundle{ctx: t.Context(), path: path, db: db, reg: reg}
}

const (
	signupV1 = `{"type":"object","additionalProperties":false,"required":["email"],"properties":{"email":{"type":"string"}}}`
	signupV2 = `{"type":"object","additionalProperties":false,"required":["email"],"properties":{"email":{"type":"string"},"plan":{"enum":["free","pro"]}}}`
)

func mustRegister(t *testing.T, reg *Registry, typ, raw string, wantVersion int, wantCreated bool) {
	t.Helper()
	v, created, err := reg.Register(t.Context(), typ, []byte(raw))
	if err != nil || v != wantVersion || created != wantCreated {
		t.Fatalf("Register(%s) = %d, %v, %v; want %d, %v", typ, v, created, err, wantVersion, wantCreated)
	}
}

func TestRegisterIsIdempotent(t *testing.T) {
	t.Parallel()
	b := setupRegistry(t)
	mustRegister(t, b.reg, "user.signed_up", signupV1, 1, true)
	// Same schema, other key order and whitespace: the same version.
	mustRegister(t, b.reg, "user.signed_up", `{ "properties": {"email": {"type": "string"}}, "required": ["email"], "additionalProperties": false, "type": "object" }`, 1, false)
	mustRegister(t, b.reg, "user.signed_up", signupV2, 2, true)
	mustRegister(t, b.reg, "user.signed_up", signupV2, 2, false)
	// An older version again: that version, nothing written.
	mustRegister(t, b.reg, "user.signed_up", signupV1, 1, false)
	latest, err := b.reg.Latest(b.ctx, "user.signed_up")
	if err != nil || latest.Version() != 2 || latest.Type() != "user.signed_up" {
		t.Fatalf("Latest = %v, %v; want v2", latest, err)
	}
	var rows int
	b.db.QueryRow(`SELECT count(*) FROM boxcar_schemas`).Scan(&rows)
	if rows != 2 {
		t.Errorf("%d rows, want 2", rows)
	}
	// A second type numbers its own versions.
	mustRegister(t, b.reg, "order.placed", `{"type":"object"}`, 1, true)
	types, err := b.reg.Types(b.ctx)
	if err != nil || strings.Join(types, ",") != "order.placed,user.signed_up" {
		t.Errorf("Types = %v, %v", types, err)
	}
}

func TestRegisterRefuses(t *testing.T) {
	t.Parallel()
	b := setupRegistry(t)
	mustRegister(t, b.reg, "user.signed_up", signupV1, 1, true)

	// Removing a property from a closed model breaks BACKWARD_TRANSITIVE.
	_, _, err := b.reg.Register(b.ctx, "user.signed_up", []byte(`{"type":"object","additionalProperties":false,"properties":{}}`))
	var ie *IncompatibleError
	if !errors.As(err, &ie) || !errors.Is(err, ErrIncompatible) {
		t.Fatalf("Register = %v, want an *IncompatibleError", err)
	}
	if ie.Type != "user.signed_up" || ie.Version != 2 || ie.Mode != BackwardTransitive || len(ie.Changes) == 0 || ie.Changes[0].Rule != "property-removed-from-closed-content-model" {
		t.Errorf("IncompatibleError = %+v", ie)
	}
	for _, part := range []string{"user.signed_up: new version 2 is incompatible under BACKWARD_TRANSITIVE", "BACKWARD against v1: /properties/email"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error %q lacks %q", err, part)
		}
	}
	if _, _, err := b.reg.Register(b.ctx, "user.signed_up", []byte(`{"type":`)); !errors.Is(err, ErrInvalidSchema) || !strings.Contains(err.Error(), "user.signed_up") {
		t.Errorf("malformed schema: %v", err)
	}
	if _, _, err := b.reg.Register(b.ctx, "user signed up", []byte(`{}`)); !errors.Is(err, ErrInvalidType) {
		t.Errorf("bad type name: %v", err)
	}
	if v, _ := b.reg.Versions(b.ctx, "user.signed_up"); len(v) != 1 {
		t.Errorf("%d versions after refusals, want 1", len(v))
	}
	// Under NONE the same change registers.
	if err := b.reg.SetMode(b.ctx, "user.signed_up", None); err != nil {
		t.Fatal(err)
	}
	mustRegister(t, b.reg, "user.signed_up", `{"type":"object","additionalProperties":false,"properties":{}}`, 2, true)
}

func TestModes(t *testing.T) {
	t.Parallel()
	b := setupRegistry(t)
	if m, err := b.reg.Mode(b.ctx, "a.b"); err != nil || m != DefaultMode {
		t.Errorf("Mode of a new type = %s, %v", m, err)
	}
	if err := b.reg.SetMode(b.ctx, "a.b", "full"); err != nil {
		t.Fatal(err)
	}
	if m, _ := b.reg.Mode(b.ctx, "a.b"); m != Full {
		t.Errorf("Mode = %s, want FULL", m)
	}
	if err := b.reg.SetMode(b.ctx, "a.b", "SOMETIMES"); !errors.Is(err, ErrInvalidMode) {
		t.Errorf("SetMode(SOMETIMES) = %v", err)
	}
	// The transitive mode checks against v1 a chain built under other modes.
	closed := func(props string) string { return obj(props, []string{"a"}, "false") }
	const a, bb, c = `"a":{"type":"string"}`, `"b":{"type":"string"}`, `"c":{"type":"string"}`
	mustRegister(t, b.reg, "t.chain", closed(a+","+bb), 1, true)
	b.reg.SetMode(b.ctx, "t.chain", Forward)
	mustRegister(t, b.reg, "t.chain", closed(a), 2, true)
	b.reg.SetMode(b.ctx, "t.chain", BackwardTransitive)
	_, _, err := b.reg.Register(b.ctx, "t.chain", []byte(closed(a+","+c)))
	var ie *IncompatibleError
	if !errors.As(err, &ie) || ie.Changes[0].Version != 1 {
		t.Fatalf("Register v3 under BACKWARD_TRANSITIVE = %v, want a change against v1", err)
	}
	b.reg.SetMode(b.ctx, "t.chain", Backward)
	mustRegister(t, b.reg, "t.chain", closed(a+","+c), 3, true)
}

func TestRegisteredVersionsNeverChange(t *testing.T) {
	t.Parallel()
	b := setupRegistry(t)
	mustRegister(t, b.reg, "user.signed_up", signupV1, 1, true)
	if _, err := b.db.Exec(`UPDATE boxcar_schemas SET schema = '{}' WHERE type = 'user.signed_up'`); err == nil || !strings.Contains(err.Error(), "never changed") {
		t.Errorf("UPDATE = %v, want refused", err)
	}
	if _, err := b.db.Exec(`DELETE FROM boxcar_schemas`); err == nil || !strings.Contains(err.Error(), "never deleted") {
		t.Errorf("DELETE = %v, want refused", err)
	}
}

// Concurrent registrations of one type through two databases on one file
// and many goroutines: each distinct schema gets exactly one version, and
// version numbers have no gaps and no duplicates.
func TestConcurrentRegistrations(t *testing.T) {
	t.Parallel()
	b := setupRegistry(t)
	other, err := NewRegistry(b.ctx, openDB(t, b.path))
	if err != nil {
		t.Fatal(err)
	}
	regs := []*Registry{b.reg, other}
	const schemas, attempts = 8, 4
	type result struct {
		schema, version int
		created         bool
	}
	results := make(chan result, schemas*attempts)
	var wg sync.WaitGroup
	for i := range schemas * attempts {
		wg.Go(func() {
			n := i % schemas
			// Each schema adds an unconstrained property: all compatible.
			raw := fmt.Sprintf(`{"type":"object","properties":{"p%d":{}}}`, n)
			v, created, err := regs[i%2].Register(b.ctx, "race.type", []byte(raw))
			if err != nil {
				t.Errorf("Register: %v", err)
				return
			}
			results <- result{n, v, created}
		})
	}
	wg.Wait()
	close(results)
	versionOf := map[int]int{}
	createdCount := map[int]int{}
	for r := range results {
		if v, ok := versionOf[r.schema]; ok && v != r.version {
			t.Errorf("schema %d got versions %d and %d", r.schema, v, r.version)
		}
		versionOf[r.schema] = r.version
		if r.created {
			createdCount[r.schema]++
		}
	}
	seen := map[int]bool{}
	for s, v := range versionOf {
		if createdCount[s] != 1 {
			t.Errorf("schema %d created %d times", s, createdCount[s])
		}
		if seen[v] {
			t.Errorf("version %d given twice", v)
		}
		seen[v] = true
	}
	for v := 1; v <= schemas; v++ {
		if !seen[v] {
			t.Errorf("version %d missing", v)
		}
	}
	// The other registry finds every version by number, and Latest after
	// Refresh.
	if _, err := other.Get(b.ctx, "race.type", schemas); err != nil {
		t.Error(err)
	}
	if err := b.reg.Refresh(b.ctx, ""); err != nil {
		t.Fatal(err)
	}
	if l, _ := b.reg.Latest(b.ctx, "race.type"); l.Version() != schemas {
		t.Errorf("Latest after Refresh = %v", l)
	}
}

func TestLookupsAreCached(t *testing.T) {
	t.Parallel()
	b := setupRegistry(t)
	mustRegister(t, b.reg, "user.signed_up", signupV1, 1, true)
	// A fresh registry loads from the database once, then serves memory.
	reg, err := NewRegistry(b.ctx, b.db)
	if err != nil {
		t.Fatal(err)
	}
	first, err := reg.Latest(b.ctx, "user.signed_up")
	if err != nil {
		t.Fatal(err)
	}
	again, _ := reg.Get(b.ctx, "user.signed_up", 1)
	if first != again || first.core != again.core {
		t.Error("Get after Latest parsed the schema again")
	}
	// Registering through the registry updates memory at once.
	mustRegister(t, reg, "user.signed_up", signupV2, 2, true)
	if l, _ := reg.Latest(b.ctx, "user.signed_up"); l.Version() != 2 {
		t.Errorf("Latest after Register = %v", l)
	}
	// Registered elsewhere: Get by number finds it, Latest after Refresh.
	mustRegister(t, b.reg, "order.placed", `{}`, 1, true)
	if _, err := reg.Get(b.ctx, "order.placed", 1); err != nil {
		t.Errorf("Get of a version registered elsewhere: %v", err)
	}
	if _, err := reg.Get(b.ctx, "user.signed_up", 3); !errors.Is(err, ErrUnknownVersion) {
		t.Errorf("Get v3 = %v, want ErrUnknownVersion", err)
	}
	if _, err := reg.Latest(b.ctx, "no.such"); !errors.Is(err, ErrUnknownType) {
		t.Errorf("Latest(no.such) = %v, want ErrUnknownType", err)
	}
	if _, err := reg.Versions(b.ctx, "no.such"); !errors.Is(err, ErrUnknownType) {
		t.Errorf("Versions(no.such) = %v, want ErrUnknownType", err)
	}
}

func TestExamples(t *testing.T) {
	t.Parallel()
	b := setupRegistry(t)
	mustRegister(t, b.reg, "user.signed_up", signupV1, 1, true)
	added, err := b.reg.AddExample(b.ctx, "user.signed_up", 1, []byte(`{"email": "a@example.com"}`))
	if err != nil || !added {
		t.Fatalf("AddExample = %v, %v", added, err)
	}
	if added, err := b.reg.AddExample(b.ctx, "user.signed_up", 1, []byte(`{  "email":"a@example.com"}`)); err != nil || added {
		t.Errorf("AddExample of the same example = %v, %v; want false", added, err)
	}
	if _, err := b.reg.AddExample(b.ctx, "user.signed_up", 1, []byte(`{"email": 1}`)); !errors.Is(err, ErrInvalidPayload) {
		t.Errorf("AddExample of an invalid example = %v", err)
	}
	if _, err := b.reg.AddExample(b.ctx, "user.signed_up", 2, []byte(`{}`)); !errors.Is(err, ErrUnknownVersion) {
		t.Errorf("AddExample to v2 = %v", err)
	}
	ex, err := b.reg.Examples(b.ctx, "user.signed_up", 1)
	if err != nil || len(ex) != 1 || string(ex[0]) != `{"email":"a@example.com"}` {
		t.Errorf("Examples = %q, %v", ex, err)
	}
}

// BenchmarkRegistryGetValidate is what validation at publish costs with
// the registry: a lookup in memory, then Validate.
// go test -run ^$ -bench RegistryGetValidate -benchmem ./schema/
func BenchmarkRegistryGetValidate(b *testing.B) {
	db := openDB(b, filepath.Join(b.TempDir(), "app.db"))
	reg, err := NewRegistry(b.Context(), db)
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := reg.Register(b.Context(), "user.signed_up", []byte(signupV2)); err != nil {
		b.Fatal(err)
	}
	payload := []byte(`{"email":"ada@example.com","plan":"pro"}`)
	b.ReportAllocs()
	for b.Loop() {
		s, err := reg.Get(b.Context(), "user.signed_up", 1)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Validate(payload); err != nil {
			b.Fatal(err)
		}
	}
}
