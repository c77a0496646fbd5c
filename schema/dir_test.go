package schema

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeTree writes files (path relative to root → content) and returns root.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "schemas")
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

func goodTree() map[string]string {
	return map[string]string{
		"README.md":                           "the schemas of the signup story",
		"user.signed_up/1.json":               signupV1,
		"user.signed_up/2.json":               signupV2,
		"user.signed_up/1.examples/min.json":  `{"email":"a@example.com"}`,
		"user.signed_up/2.examples/plan.json": `{"email":"a@example.com","plan":"pro"}`,
		"user.signed_up/NOTES.md":             "why v2",
		"order.placed/1.json":                 `{"type":"object","properties":{"total":{"type":"number"}}}`,
		"order.placed/mode":                   "# producers deploy first\nforward\n",
	}
}

func TestLoadDir(t *testing.T) {
	t.Parallel()
	root := writeTree(t, goodTree())
	set, err := LoadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(set.Types(), ","); got != "order.placed,user.signed_up" {
		t.Errorf("Types = %s", got)
	}
	if m, ok := set.Mode("order.placed"); m != Forward || !ok {
		t.Errorf("Mode(order.placed) = %s, %v", m, ok)
	}
	if m, ok := set.Mode("user.signed_up"); m != DefaultMode || ok {
		t.Errorf("Mode(user.signed_up) = %s, %v", m, ok)
	}
	ctx := t.Context()
	v2, err := set.Get(ctx, "user.signed_up", 2)
	if err != nil || v2.Version() != 2 || v2.Type() != "user.signed_up" {
		t.Fatalf("Get v2 = %v, %v", v2, err)
	}
	if l, _ := set.Latest(ctx, "user.signed_up"); l != v2 {
		t.Errorf("Latest = %v", l)
	}
	ex, err := set.Examples(ctx, "user.signed_up", 2)
	if err != nil || len(ex) != 1 || !strings.Contains(string(ex[0]), "pro") {
		t.Errorf("Examples = %q, %v", ex, err)
	}
	if f := set.File("user.signed_up", 1); f != filepath.Join(root, "user.signed_up", "1.json") {
		t.Errorf("File = %s", f)
	}
	if _, err := set.Get(ctx, "user.signed_up", 3); !errors.Is(err, ErrUnknownVersion) {
		t.Errorf("Get v3 = %v", err)
	}
	if _, err := set.Versions(ctx, "no.such"); !errors.Is(err, ErrUnknownType) {
		t.Errorf("Versions(no.such) = %v", err)
	}
}

func TestLoadDirErrorsNameTheFile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		edit  func(map[string]string)
		file  string // the path the error must name, relative to the root
		error string
	}{
		{"gap", func(f map[string]string) { f["user.signed_up/4.json"] = `{}` }, "user.signed_up/3.json", "missing: versions run 1, 2, 3"},
		{"typo", func(f map[string]string) { f["user.signed_up/3.jsn"] = `{}` }, "user.signed_up/3.jsn", "unexpected name"},
		{"leading zero", func(f map[string]string) { f["user.signed_up/03.json"] = `{}` }, "user.signed_up/03.json", "unexpected name"},
		{"bad schema", func(f map[string]string) { f["user.signed_up/2.json"] = `{"type":` }, "user.signed_up/2.json", "malformed JSON"},
		{"bad mode", func(f map[string]string) { f["order.placed/mode"] = "SOMETIMES" }, "order.placed/mode", "invalid compatibility mode"},
		{"two modes", func(f map[string]string) { f["order.placed/mode"] = "FULL\nNONE" }, "order.placed/mode", "found 2 lines"},
		{"bad type", func(f map[string]string) { f["user signed up/1.json"] = `{}` }, "user signed up", "not an event type"},
		{"no versions", func(f map[string]string) { f["empty.type/mode"] = "FULL" }, "empty.type", "no schema"},
		{"examples of a missing version", func(f map[string]string) { f["order.placed/5.examples/a.json"] = `{}` }, "order.placed/5.examples", "which has no 5.json"},
		{"example not json file", func(f map[string]string) { f["order.placed/1.examples/a.txt"] = `x` }, "order.placed/1.examples/a.txt", "examples are *.json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			files := goodTree()
			tc.edit(files)
			root := writeTree(t, files)
			_, err := LoadDir(root)
			if err == nil {
				t.Fatal("LoadDir succeeded")
			}
			want := filepath.Join(root, filepath.FromSlash(tc.file))
			if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), tc.error) {
				t.Errorf("LoadDir: %v\nwant it to name %s and say %q", err, want, tc.error)
			}
			if !errors.Is(err, ErrInvalidDir) && !errors.Is(err, ErrInvalidSchema) {
				t.Errorf("LoadDir: %v wraps neither ErrInvalidDir nor ErrInvalidSchema", err)
			}
		})
	}
	if _, err := LoadDir(filepath.Join(t.TempDir(), "absent")); err == nil {
		t.Error("LoadDir of a missing directory succeeded")
	}
}

// A hostile or careless directory: a schema over MaxSchemaBytes, and
// schema, example and mode files that link to /dev/zero, are refused with
// the file named, without reading them whole (it read them before the size
// check: a link to /dev/zero grew without bound).
func TestLoadDirBoundsWhatItReads(t *testing.T) {
	t.Parallel()
	for _, file := range []string{"user.signed_up/2.json", "user.signed_up/1.examples/min.json", "order.placed/mode"} {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			root := writeTree(t, goodTree())
			path := filepath.Join(root, filepath.FromSlash(file))
			os.Remove(path)
			if err := os.Symlink("/dev/zero", path); err != nil {
				t.Fatal(err)
			}
			_, err := LoadDir(root)
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "the limit for it") {
				t.Fatalf("LoadDir with %s linked to /dev/zero: %v; want it refused, named, over the limit", file, err)
			}
		})
	}
	files := goodTree()
	files["user.signed_up/2.json"] = `{"description":"` + strings.Repeat("x", MaxSchemaBytes) + `"}`
	root := writeTree(t, files)
	if _, err := LoadDir(root); err == nil || !strings.Contains(err.Error(), "2.json") {
		t.Fatalf("LoadDir with a schema over MaxSchemaBytes: %v; want it refused, named", err)
	}
}

func TestCheckDir(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	root := writeTree(t, goodTree())
	rep := CheckDir(ctx, root)
	if !rep.OK() || rep.Types != 2 || rep.Versions != 3 || rep.Examples != 2 {
		t.Fatalf("report of a good tree:\n%s", rep)
	}
	if !strings.HasSuffix(rep.String(), ": 2 types, 3 versions, 2 examples: ok\n") {
		t.Errorf("report text %q", rep)
	}

	files := goodTree()
	// v3 drops email from a closed model: refused by BACKWARD_TRANSITIVE.
	files["user.signed_up/3.json"] = `{"type":"object","additionalProperties":false,"properties":{"plan":{"enum":["free","pro"]}}}`
	// An example its version rejects.
	files["user.signed_up/2.examples/bad.json"] = `{"email":"a@example.com","plan":"gold"}`
	// A file that does not load: reported beside the rest.
	files["broken.type/1.json"] = `[]`
	root = writeTree(t, files)
	rep = CheckDir(ctx, root)
	if rep.OK() {
		t.Fatal("report OK")
	}
	text := rep.String()
	for _, want := range []string{
		"FAIL " + filepath.Join(root, "user.signed_up", "3.json") + ": BACKWARD against v1: /properties/email [property-removed-from-closed-content-model]",
		"FAIL " + filepath.Join(root, "user.signed_up", "3.json") + ": BACKWARD against v2: /properties/email",
		"FAIL " + filepath.Join(root, "user.signed_up", "2.examples", "bad.json") + ": schema: user.signed_up v2: invalid payload at /plan",
		"FAIL schema: broken.type v1 (" + filepath.Join(root, "broken.type", "1.json") + "): invalid schema",
		"problems\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
}

// The directory against what an application database registered.
func TestCheckDirAgainstRegistry(t *testing.T) {
	t.Parallel()
	b := setupRegistry(t)
	mustRegister(t, b.reg, "user.signed_up", signupV1, 1, true)
	mustRegister(t, b.reg, "user.signed_up", signupV2, 2, true)
	root := writeTree(t, goodTree())
	if rep := CheckDir(b.ctx, root, b.reg); !rep.OK() {
		t.Fatalf("the directory agrees with the registry:\n%s", rep)
	}

	// Production changed version 1 in place? No: the repository did.
	files := goodTree()
	files["user.signed_up/1.json"] = `{"type":"object"}`
	files["user.signed_up/2.json"] = `{"type":"object","properties":{"x":{}}}`
	files["user.signed_up/1.examples/min.json"] = `{}`
	files["user.signed_up/2.examples/plan.json"] = `{}`
	rep := CheckDir(b.ctx, writeTree(t, files), b.reg)
	if !strings.Contains(rep.String(), "differs from version 1 in the registry") {
		t.Errorf("a changed version is not reported:\n%s", rep)
	}

	// The registry is ahead of the directory.
	mustRegister(t, b.reg, "user.signed_up", obj(`"email":{"type":"string"},"plan":{"enum":["free","pro"]},"ref":{"type":"string"}`, []string{"email"}, "false"), 3, true)
	rep = CheckDir(b.ctx, root, b.reg)
	if !strings.Contains(rep.String(), "the registry has version 3, the directory stops at 2") {
		t.Errorf("a registry ahead is not reported:\n%s", rep)
	}

	// The directory's new version under the registry's stricter mode.
	if err := b.reg.SetMode(b.ctx, "order.placed", Full); err != nil {
		t.Fatal(err)
	}
	mustRegister(t, b.reg, "order.placed", `{"type":"object","properties":{"total":{"type":"number"}}}`, 1, true)
	files = goodTree()
	files["order.placed/2.json"] = `{"type":"object","properties":{"total":{"type":"number"},"currency":{"type":"string"}}}`
	files["order.placed/mode"] = "FORWARD"
	text := CheckDir(b.ctx, writeTree(t, files), b.reg).String()
	for _, want := range []string{"mode is FORWARD in the directory but FULL in the registry", "[property-added-to-open-content-model]", "(against the registry, mode FULL)"} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
}
