package schematest_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/boxcar-bus/boxcar/schema"
	"github.com/boxcar-bus/boxcar/schema/schematest"
	"github.com/boxcar-bus/boxcar/sqlite"
)

const (
	v1 = `{"type":"object","additionalProperties":false,"required":["email"],"properties":{"email":{"type":"string"}}}`
	v2 = `{"type":"object","additionalProperties":false,"required":["email"],"properties":{"email":{"type":"string"},"plan":{"enum":["free","pro"]}}}`
)

// recorder is a testing.TB that records failures instead of failing, so
// the helpers' own failures can be asserted. Fatal stops the helper's
// goroutine as testing does.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	errors []string
	fatal  bool
}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	r.mu.Lock()
	r.fatal = true
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *recorder) Helper() {}

// run calls fn with a recorder on its own goroutine (Fatalf ends it).
func run(t *testing.T, fn func(tb testing.TB)) *recorder {
	rec := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(rec)
	}()
	<-done
	return rec
}

func writeDir(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, body := range files {
		path := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestAssertCompatible(t *testing.T) {
	t.Parallel()
	if rec := run(t, func(tb testing.TB) { schematest.AssertCompatible(tb, []byte(v1), []byte(v2), schema.Backward) }); len(rec.errors) != 0 {
		t.Errorf("a compatible change failed: %v", rec.errors)
	}
	rec := run(t, func(tb testing.TB) { schematest.AssertCompatible(tb, []byte(v1), []byte(v2), schema.Full) })
	if len(rec.errors) != 1 || !strings.Contains(rec.errors[0], "property-added-to-closed-content-model") {
		t.Errorf("an incompatible change: %v", rec.errors)
	}
	rec = run(t, func(tb testing.TB) { schematest.AssertCompatible(tb, []byte(`{`), []byte(v2), schema.Full) })
	if !rec.fatal {
		t.Error("a malformed schema did not stop the test")
	}
	rec = run(t, func(tb testing.TB) {
		schematest.AssertIncompatible(tb, []byte(v1), []byte(v2), schema.Forward, "property-added-to-closed-content-model")
	})
	if len(rec.errors) != 0 {
		t.Errorf("AssertIncompatible with the right rule: %v", rec.errors)
	}
	rec = run(t, func(tb testing.TB) { schematest.AssertIncompatible(tb, []byte(v1), []byte(v2), schema.Backward) })
	if len(rec.errors) != 1 {
		t.Errorf("AssertIncompatible of a compatible change: %v", rec.errors)
	}
	rec = run(t, func(tb testing.TB) {
		schematest.AssertIncompatible(tb, []byte(v1), []byte(v2), schema.Forward, "type-changed")
	})
	if len(rec.errors) != 1 || !strings.Contains(rec.errors[0], "no change of rule type-changed") {
		t.Errorf("AssertIncompatible with the wrong rule: %v", rec.errors)
	}
}

func TestAssertValidWithDirAndRegistry(t *testing.T) {
	t.Parallel()
	dir := writeDir(t, map[string]string{"user.signed_up/1.json": v1, "user.signed_up/2.json": v2})
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "app.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	reg, err := schema.NewRegistry(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	for _, raw := range []string{v1, v2} {
		if _, _, err := reg.Register(t.Context(), "user.signed_up", []byte(raw)); err != nil {
			t.Fatal(err)
		}
	}
	for name, src := range map[string]schematest.Source{"dir": schematest.Dir(t, dir), "registry": reg} {
		t.Run(name, func(t *testing.T) {
			if rec := run(t, func(tb testing.TB) {
				schematest.AssertValid(tb, src, "user.signed_up", 2, []byte(`{"email":"a@example.com","plan":"pro"}`))
			}); len(rec.errors) != 0 {
				t.Errorf("valid payload: %v", rec.errors)
			}
			rec := run(t, func(tb testing.TB) {
				schematest.AssertValid(tb, src, "user.signed_up", 1, []byte(`{"email":"a@example.com","plan":"pro"}`))
			})
			if len(rec.errors) != 1 || !strings.Contains(rec.errors[0], "user.signed_up v1") {
				t.Errorf("invalid payload: %v", rec.errors)
			}
			if rec := run(t, func(tb testing.TB) {
				schematest.AssertInvalid(tb, src, "user.signed_up", 1, []byte(`{}`))
			}); len(rec.errors) != 0 {
				t.Errorf("AssertInvalid of an invalid payload: %v", rec.errors)
			}
			if rec := run(t, func(tb testing.TB) { schematest.AssertValid(tb, src, "user.signed_up", 9, []byte(`{}`)) }); !rec.fatal {
				t.Error("an unknown version did not stop the test")
			}
		})
	}
}

func TestForEachExample(t *testing.T) {
	t.Parallel()
	dir := writeDir(t, map[string]string{
		"user.signed_up/1.json":               v1,
		"user.signed_up/2.json":               v2,
		"user.signed_up/1.examples/a.json":    `{"email":"a@example.com"}`,
		"user.signed_up/2.examples/a.json":    `{"email":"a@example.com","plan":"free"}`,
		"user.signed_up/2.examples/b.json":    `{"email":"b@example.com","plan":"pro"}`,
		"order.placed/1.json":                 `{}`,
		"order.placed/1.examples/README.md":   "no examples yet",
		"user.signed_up/2.examples/.DS_Store": "",
	})
	set := schematest.Dir(t, dir)
	var got []string
	schematest.ForEachExample(t, set, "user.signed_up", func(t testing.TB, version int, payload []byte) {
		got = append(got, fmt.Sprintf("v%d %s", version, payload))
		// The handler under test: it must read every version's examples.
		if !strings.Contains(string(payload), "@example.com") {
			t.Errorf("handler rejects %s", payload)
		}
	})
	want := []string{`v1 {"email":"a@example.com"}`, `v2 {"email":"a@example.com","plan":"free"}`, `v2 {"email":"b@example.com","plan":"pro"}`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("examples seen:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// With a plain testing.TB the examples run without subtests; a type
	// without examples fails.
	rec := run(t, func(tb testing.TB) {
		schematest.ForEachExample(tb, set, "order.placed", func(testing.TB, int, []byte) {})
	})
	if len(rec.errors) != 1 || !strings.Contains(rec.errors[0], "order.placed has no examples") {
		t.Errorf("a type without examples: %v", rec.errors)
	}
}
