package schema_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boxcar-bus/boxcar/schema"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// commandEnv makes the test binary run schema.Command with the JSON args it
// holds instead of the tests: "boxcar schema" as a real process, with its
// real exit status.
const commandEnv = "BOXCAR_SCHEMA_COMMAND_ARGS"

func TestMain(m *testing.M) {
	if raw := os.Getenv(commandEnv); raw != "" {
		var args []string
		if err := json.Unmarshal([]byte(raw), &args); err != nil {
			os.Stderr.WriteString(err.Error())
			os.Exit(3)
		}
		os.Exit(schema.Command(context.Background(), os.Stdout, os.Stderr, args))
	}
	os.Exit(m.Run())
}

// runCommand runs Command in a child process and returns its exit status
// and output.
func runCommand(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	raw, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), commandEnv+"="+string(raw))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatal(err)
	}
	return code, out.String(), errOut.String()
}

// cmdBundle is a schema directory, and a database whose registry holds the
// directory's first version.
type cmdBundle struct {
	dir, db string
}

func setupCommand(t *testing.T) cmdBundle {
	t.Helper()
	b := setupBus(t)
	dir := writeFiles(t, filepath.Join(b.dir, "schemas"), map[string]string{
		"user.signed_up/1.json":              signupV1,
		"user.signed_up/1.examples/ada.json": `{"user_id":"u1","email":"ada@example.com"}`,
		"order.placed/1.json":                `{"type":"object","additionalProperties":false,"properties":{"total":{"type":"number"}}}`,
	})
	if _, err := b.reg.RegisterDir(b.ctx, dir); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string]string{"user.signed_up/2.json": signupV2})
	return cmdBundle{dir: dir, db: filepath.Join(b.dir, "app.db")}
}

func run(fn func(stdout, stderr *bytes.Buffer) int) (int, string, string) {
	var out, errOut bytes.Buffer
	code := fn(&out, &errOut)
	return code, out.String(), errOut.String()
}

func TestRunCheck(t *testing.T) {
	t.Parallel()
	c := setupCommand(t)
	ctx := t.Context()
	check := func(dir, db string) (int, string, string) {
		return run(func(o, e *bytes.Buffer) int { return schema.RunCheck(ctx, o, e, dir, db) })
	}
	// The directory alone, and against the database: v2 would register.
	for _, db := range []string{"", c.db} {
		code, out, errOut := check(c.dir, db)
		if code != schema.ExitOK || !strings.HasSuffix(out, "2 types, 3 versions, 1 example: ok\n") || errOut != "" {
			t.Errorf("check (db %q) = %d, %q, %q; want 0 and ok", db, code, out, errOut)
		}
	}
	// An incompatible v3: exit 1, the checker's changes in the report.
	writeFiles(t, c.dir, map[string]string{"user.signed_up/3.json": signupV2Renamed})
	code, out, _ := check(c.dir, c.db)
	if code != schema.ExitProblems || !strings.Contains(out, "FAIL ") || !strings.Contains(out, "required-property-added") || !strings.Contains(out, "3.json") {
		t.Errorf("check of an incompatible v3 = %d:\n%s", code, out)
	}
	os.Remove(filepath.Join(c.dir, "user.signed_up", "3.json"))
	// v1 edited in the directory: the database disagrees, exit 1.
	writeFiles(t, c.dir, map[string]string{"order.placed/1.json": `{"type":"object"}`})
	if code, out, _ := check(c.dir, c.db); code != schema.ExitProblems || !strings.Contains(out, "differs from version 1 in the registry") {
		t.Errorf("check of a changed v1 against the database = %d:\n%s", code, out)
	}
	// Usage and I/O errors: exit 2, nothing created.
	missing := filepath.Join(t.TempDir(), "missing.db")
	if code, _, errOut := check(c.dir, missing); code != schema.ExitUsage || !strings.Contains(errOut, "missing.db") {
		t.Errorf("check against a missing database = %d, %q", code, errOut)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("check created %s", missing)
	}
	if code, _, errOut := check(filepath.Join(c.dir, "nope"), ""); code != schema.ExitUsage || !strings.Contains(errOut, "nope") {
		t.Errorf("check of a missing directory = %d, %q", code, errOut)
	}
	plain := filepath.Join(t.TempDir(), "plain.db")
	db, err := sqlite.Open(plain)
	if err != nil {
		t.Fatal(err)
	}
	db.Exec(`CREATE TABLE t (x)`)
	db.Close()
	if code, _, errOut := check(c.dir, plain); code != schema.ExitUsage || !strings.Contains(errOut, "has no schema registry") {
		t.Errorf("check against a database without a registry = %d, %q", code, errOut)
	}
}

func TestRunListShowDiff(t *testing.T) {
	t.Parallel()
	c := setupCommand(t)
	ctx := t.Context()
	// ls: the directory has v2, the database not yet.
	for src, want := range map[string]string{c.dir: "user.signed_up  2 ", c.db: "user.signed_up  1 "} {
		code, out, errOut := run(func(o, e *bytes.Buffer) int { return schema.RunList(ctx, o, e, src) })
		if code != schema.ExitOK || !strings.HasPrefix(out, "TYPE") || !strings.Contains(out, want) || !strings.Contains(out, "BACKWARD_TRANSITIVE") || errOut != "" {
			t.Errorf("ls %s = %d:\n%s%s\nwant a line with %q", src, code, out, errOut, want)
		}
	}
	// show: the latest by default, with its file and examples.
	code, out, _ := run(func(o, e *bytes.Buffer) int { return schema.RunShow(ctx, o, e, c.dir, typSignup, 0) })
	if code != schema.ExitOK || !strings.Contains(out, "user.signed_up v2 of "+filepath.Join(c.dir, typSignup, "2.json")) || !strings.Contains(out, `  "additionalProperties": false`) {
		t.Errorf("show latest = %d:\n%s", code, out)
	}
	code, out, _ = run(func(o, e *bytes.Buffer) int { return schema.RunShow(ctx, o, e, c.db, typSignup, 1) })
	if code != schema.ExitOK || !strings.Contains(out, "examples: 1\n  {\"email\":\"ada@example.com\",\"user_id\":\"u1\"}") {
		t.Errorf("show v1 of the database = %d:\n%s", code, out)
	}
	if code, _, errOut := run(func(o, e *bytes.Buffer) int { return schema.RunShow(ctx, o, e, c.db, typSignup, 2) }); code != schema.ExitUsage || !strings.Contains(errOut, "v2") {
		t.Errorf("show of an unknown version = %d, %q", code, errOut)
	}
	// diff: v1 → v2 adds an optional property to a closed model, which
	// breaks FORWARD only.
	code, out, _ = run(func(o, e *bytes.Buffer) int { return schema.RunDiff(ctx, o, e, c.dir, typSignup, 0, 0) })
	if code != schema.ExitProblems || !strings.Contains(out, "v1 → v2") || !strings.Contains(out, "FORWARD against v1: /properties/plan [property-added-to-closed-content-model]") || strings.Contains(out, "BACKWARD against") {
		t.Errorf("diff = %d:\n%s", code, out)
	}
	code, out, _ = run(func(o, e *bytes.Buffer) int { return schema.RunDiff(ctx, o, e, c.dir, typSignup, 2, 2) })
	if code != schema.ExitOK || !strings.Contains(out, "no breaking changes") {
		t.Errorf("diff of a version with itself = %d:\n%s", code, out)
	}
	if code, _, errOut := run(func(o, e *bytes.Buffer) int { return schema.RunDiff(ctx, o, e, c.db, typSignup, 0, 0) }); code != schema.ExitUsage || !strings.Contains(errOut, "only version 1") {
		t.Errorf("diff of a type with one version = %d, %q", code, errOut)
	}
}

// "boxcar schema" as a process: its exit status and output.
func TestCommandAsAProcess(t *testing.T) {
	t.Parallel()
	c := setupCommand(t)
	for _, tc := range []struct {
		args []string
		code int
		out  string // in stdout, or
		err  string // in stderr
	}{
		{[]string{"check", c.dir, "-db", c.db}, schema.ExitOK, ": ok", ""},
		{[]string{"check", "-db", c.db, c.dir}, schema.ExitOK, ": ok", ""},
		{[]string{"ls", c.db}, schema.ExitOK, "order.placed", ""},
		{[]string{"show", c.dir, typSignup, "v1"}, schema.ExitOK, "user.signed_up v1", ""},
		{[]string{"diff", c.dir, typSignup, "1", "2"}, schema.ExitProblems, "property-added-to-closed-content-model", ""},
		{nil, schema.ExitUsage, "", "usage: boxcar schema"},
		{[]string{"check"}, schema.ExitUsage, "", "want one directory"},
		{[]string{"check", c.dir, "-nope"}, schema.ExitUsage, "", "-nope"},
		{[]string{"show", c.dir, typSignup, "x"}, schema.ExitUsage, "", `VERSION "x"`},
		{[]string{"frobnicate"}, schema.ExitUsage, "", `unknown command "frobnicate"`},
		{[]string{"help"}, schema.ExitOK, "usage: boxcar schema", ""},
	} {
		code, out, errOut := runCommand(t, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.out) || !strings.Contains(errOut, tc.err) {
			t.Errorf("boxcar schema %s = exit %d\nstdout: %s\nstderr: %s\nwant exit %d, %q in stdout, %q in stderr",
				strings.Join(tc.args, " "), code, out, errOut, tc.code, tc.out, tc.err)
		}
	}
	// A breaking change fails the check in CI.
	writeFiles(t, c.dir, map[string]string{"user.signed_up/3.json": signupV2Renamed})
	if code, out, _ := runCommand(t, "check", c.dir); code != schema.ExitProblems || !strings.Contains(out, "property `email` removed") {
		t.Errorf("check of a breaking v3 = exit %d:\n%s", code, out)
	}
}
