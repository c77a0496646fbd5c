// Package schematest holds test helpers for event schemas: compatibility
// assertions for a schema change, and contract tests that run a consumer's
// handler over the example payloads of every version of an event type, so
// that a consumer proves it still reads what older producers wrote.
//
//	func TestSignupHandlerReadsEveryVersion(t *testing.T) {
//		schemas := schematest.Dir(t, "../schemas")
//		schematest.ForEachExample(t, schemas, "user.signed_up", func(t testing.TB, version int, payload []byte) {
//			if err := handleSignup(payload); err != nil {
//				t.Errorf("v%d example: %v", version, err)
//			}
//		})
//	}
//
// A consumer that reads one version through upcasters tests the way it
// runs: Registry registers the directory in a temporary database, the test
// registers the consumer's upcasters on it, and ForEachMessage hands it
// each example as a boxcar.Message for schema.Decode. A producer asserts
// that the events its code builds validate against the version they name
// (AssertValid). example_test.go has both.
package schematest

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/schema"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// Source is where the helpers find schemas and examples: a
// *schema.Registry (an application database) or a *schema.Set (a schema
// directory, see Dir).
type Source interface {
	Get(ctx context.Context, typ string, version int) (*schema.Schema, error)
	Versions(ctx context.Context, typ string) ([]*schema.Schema, error)
	Examples(ctx context.Context, typ string, version int) ([][]byte, error)
}

// Dir loads a schema directory (schema.LoadDir), failing the test if it
// does not load.
func Dir(t testing.TB, dir string) *schema.Set {
	t.Helper()
	s, err := schema.LoadDir(dir)
	if err != nil {
		t.Fatalf("schematest: load %s: %v", dir, err)
	}
	return s
}

// Registry opens a registry in a new SQLite file in the test's temporary
// directory and registers the schema directory dir in it
// (Registry.RegisterDir), failing the test if any of it is refused. A
// consumer's contract test registers its upcasters on it and reads every
// version's examples through them, as the consumer does in production
// (see ForEachMessage).
func Registry(t testing.TB, dir string) *schema.Registry {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "schematest.db"))
	if err != nil {
		t.Fatalf("schematest: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	reg, err := schema.NewRegistry(t.Context(), db)
	if err != nil {
		t.Fatalf("schematest: %v", err)
	}
	if _, err := reg.RegisterDir(t.Context(), dir); err != nil {
		t.Fatalf("schematest: register %s: %v", dir, err)
	}
	return reg
}

// Parse parses a schema, failing the test if it is invalid.
func Parse(t testing.TB, raw []byte) *schema.Schema {
	t.Helper()
	s, err := schema.Parse(raw)
	if err != nil {
		t.Fatalf("schematest: %v", err)
	}
	return s
}

// AssertCompatible fails the test, listing the breaking changes, unless
// schema next may follow schema previous under mode. It reports whether it
// passed.
func AssertCompatible(t testing.TB, previous, next []byte, mode schema.Mode) bool {
	t.Helper()
	p, n := Parse(t, previous), Parse(t, next)
	changes := schema.Check(mode, n, []*schema.Schema{p})
	if len(changes) > 0 {
		t.Errorf("schematest: the new schema breaks %s:\n%s", mode, schema.FormatChanges(changes))
		return false
	}
	return true
}

// AssertIncompatible fails the test unless schema next breaks mode after
// schema previous with a change of each of the given rules (any change if
// none are given). It returns the changes.
func AssertIncompatible(t testing.TB, previous, next []byte, mode schema.Mode, rules ...string) []schema.Change {
	t.Helper()
	p, n := Parse(t, previous), Parse(t, next)
	changes := schema.Check(mode, n, []*schema.Schema{p})
	if len(changes) == 0 {
		t.Errorf("schematest: the new schema is compatible under %s, want it refused", mode)
		return nil
	}
	for _, rule := range rules {
		found := false
		for _, c := range changes {
			found = found || c.Rule == rule
		}
		if !found {
			t.Errorf("schematest: no change of rule %s under %s; the changes are:\n%s", rule, mode, schema.FormatChanges(changes))
		}
	}
	return changes
}

// AssertValid fails the test unless payload is valid under version of typ
// in src. It reports whether it passed.
func AssertValid(t testing.TB, src Source, typ string, version int, payload []byte) bool {
	t.Helper()
	s, err := src.Get(t.Context(), typ, version)
	if err != nil {
		t.Fatalf("schematest: %v", err)
	}
	if err := s.Validate(payload); err != nil {
		t.Errorf("schematest: %v", err)
		return false
	}
	return true
}

// AssertInvalid fails the test if payload is valid under version of typ in
// src. It returns the validation error.
func AssertInvalid(t testing.TB, src Source, typ string, version int, payload []byte) error {
	t.Helper()
	s, err := src.Get(t.Context(), typ, version)
	if err != nil {
		t.Fatalf("schematest: %v", err)
	}
	err = s.Validate(payload)
	if err == nil {
		t.Errorf("schematest: %s accepts %s, want it rejected", s, payload)
	}
	return err
}

// ForEachExample calls fn with every example payload of every version of
// typ in src, oldest version first: a consumer's test passes its handler
// each one. With a *testing.T each example runs as a subtest named
// "v<version>/<n>". A type without any example fails the test: a contract
// test over nothing would pass whatever the handler does.
func ForEachExample(t testing.TB, src Source, typ string, fn func(t testing.TB, version int, payload []byte)) {
	t.Helper()
	versions, err := src.Versions(t.Context(), typ)
	if err != nil {
		t.Fatalf("schematest: %v", err)
	}
	total := 0
	for _, v := range versions {
		examples, err := src.Examples(t.Context(), typ, v.Version())
		if err != nil {
			t.Fatalf("schematest: %v", err)
		}
		for i, payload := range examples {
			total++
			version := v.Version()
			if tt, ok := t.(*testing.T); ok {
				tt.Run(fmt.Sprintf("v%d/%d", version, i+1), func(t *testing.T) { fn(t, version, payload) })
			} else {
				fn(t, version, payload)
			}
		}
	}
	if total == 0 {
		t.Errorf("schematest: %s has no examples in any of its %d versions: add some (N.examples/*.json or Registry.AddExample)", typ, len(versions))
	}
}

// ForEachMessage is ForEachExample for a consumer: fn gets each example as
// the boxcar.Message a subscriber would receive for it (Type, Key "example",
// SchemaVersion and Data set), so that a test can pass it through the same
// schema.Decode (or handler) the consumer runs.
func ForEachMessage(t testing.TB, src Source, typ string, fn func(t testing.TB, m boxcar.Message)) {
	t.Helper()
	ForEachExample(t, src, typ, func(t testing.TB, version int, payload []byte) {
		fn(t, boxcar.Message{Type: typ, Key: "example", SchemaVersion: version, Data: payload})
	})
}
