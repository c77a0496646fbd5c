package schema_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boxcar-bus/boxcar/schema"
)

// writeFiles writes files (slash paths relative to root → content) under
// root, creating it.
func writeFiles(t *testing.T, root string, files map[string]string) string {
	t.Helper()
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

func countRows(t *testing.T, b *busBundle, table string) int {
	t.Helper()
	var n int
	if err := b.db.QueryRow(`SELECT count(*) FROM ` + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRegisterDir(t *testing.T) {
	t.Parallel()
	b := setupBus(t)
	dir := writeFiles(t, filepath.Join(b.dir, "schemas"), map[string]string{
		"user.signed_up/1.json":              signupV1,
		"user.signed_up/1.examples/ada.json": `{"user_id":"u1","email":"ada@example.com"}`,
		"order.placed/1.json":                `{"type":"object","properties":{"total":{"type":"number"}}}`,
		"order.placed/mode":                  "FORWARD\n",
	})
	regs, err := b.reg.RegisterDir(b.ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []schema.Registration{{Type: "order.placed", Version: 1, Created: true}, {Type: typSignup, Version: 1, Created: true, Examples: 1}}
	if len(regs) != 2 || regs[0] != want[0] || regs[1] != want[1] {
		t.Errorf("RegisterDir = %+v, want %+v", regs, want)
	}
	if m, err := b.reg.Mode(b.ctx, "order.placed"); m != schema.Forward || err != nil {
		t.Errorf("mode of order.placed = %s, %v; want the mode file's FORWARD", m, err)
	}
	// The same directory again: a no-op.
	regs, err = b.reg.RegisterDir(b.ctx, dir)
	if err != nil || len(regs) != 2 || regs[0].Created || regs[1].Created || regs[1].Examples != 0 {
		t.Errorf("RegisterDir again = %+v, %v; want nothing created", regs, err)
	}
	// A compatible v2 (an optional property in a closed model): registered.
	writeFiles(t, dir, map[string]string{"user.signed_up/2.json": signupV2})
	regs, err = b.reg.RegisterDir(b.ctx, dir)
	if err != nil || len(regs) != 3 || regs[2] != (schema.Registration{Type: typSignup, Version: 2, Created: true}) {
		t.Errorf("RegisterDir with a compatible v2 = %+v, %v", regs, err)
	}
	if v, err := b.reg.ValidateEvent(typSignup, 0, []byte(`{"user_id":"u","email":"a@example.com","plan":"pro"}`)); v != 2 || err != nil {
		t.Errorf("ValidateEvent after RegisterDir = %d, %v; want v2 at once", v, err)
	}
	// A v3 that renames email: refused with the checker's changes, nothing written.
	writeFiles(t, dir, map[string]string{"user.signed_up/3.json": signupV2Renamed})
	before := countRows(t, b, "boxcar_schemas")
	_, err = b.reg.RegisterDir(b.ctx, dir)
	var ie *schema.IncompatibleError
	if !errors.As(err, &ie) || ie.Version != 3 || ie.Mode != schema.DefaultMode {
		t.Fatalf("RegisterDir with a renaming v3 = %v; want an IncompatibleError for v3", err)
	}
	for _, want := range []string{filepath.Join("user.signed_up", "3.json"), "required-property-added", "email_address", "property-removed-from-closed-content-model"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal does not name %s:\n%v", want, err)
		}
	}
	if n := countRows(t, b, "boxcar_schemas"); n != before {
		t.Errorf("%d schema rows after the refusal, want %d", n, before)
	}
	// A registered version changed in the directory: refused before anything is written.
	writeFiles(t, dir, map[string]string{"user.signed_up/1.json": strings.Replace(signupV1, `"format":"email"`, `"minLength":3`, 1)})
	os.Remove(filepath.Join(dir, "user.signed_up", "3.json"))
	if _, err := b.reg.RegisterDir(b.ctx, dir); !errors.Is(err, schema.ErrInvalidDir) || !strings.Contains(err.Error(), "never changes") {
		t.Errorf("RegisterDir with a changed v1 = %v; want ErrInvalidDir", err)
	}
	if n := countRows(t, b, "boxcar_schemas"); n != before {
		t.Errorf("%d schema rows after the refusal, want %d", n, before)
	}
	// A broken directory: the load error, naming the file.
	writeFiles(t, dir, map[string]string{"user.signed_up/1.json": `{"type": 7}`})
	if _, err := b.reg.RegisterDir(b.ctx, dir); !errors.Is(err, schema.ErrInvalidSchema) || !strings.Contains(err.Error(), "1.json") {
		t.Errorf("RegisterDir with a malformed schema = %v", err)
	}
}

// An example that its version rejects fails RegisterDir, naming its file.
func TestRegisterDirRefusesABadExample(t *testing.T) {
	t.Parallel()
	b := setupBus(t)
	dir := writeFiles(t, filepath.Join(b.dir, "schemas"), map[string]string{
		"user.signed_up/1.json":               signupV1,
		"user.signed_up/1.examples/typo.json": `{"user_id":"u1","emial":"ada@example.com"}`,
	})
	_, err := b.reg.RegisterDir(b.ctx, dir)
	if !errors.Is(err, schema.ErrInvalidPayload) || !strings.Contains(err.Error(), "typo.json") || !strings.Contains(err.Error(), "/emial") {
		t.Errorf("RegisterDir with a bad example = %v", err)
	}
}
