package schema

import (
	"bytes"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boxcar-bus/boxcar/sqlite"
)

// Schemas an older Boxcar registered that Parse refuses now (1aa79c7,
// 38fd614), in canonical form, as the registry stored them.
const (
	storedLoop     = `{"allOf":[{"$ref":"#"}],"type":"string"}`
	storedOutsized = `{"maximum":-1e99999999,"type":"integer"}`
	storedSignupV1 = `{"additionalProperties":false,"properties":{"email":{"type":"string"}},"required":["email"],"type":"object"}` // signupV1
)

// setupStored is a database file whose registry holds version 1 of each
// type in rows, written with SQL as an older Boxcar wrote them, and the
// Registry NewRegistry opens on it.
func setupStored(t *testing.T, rows map[string]string) (registryBundle, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "app.db")
	db := openDB(t, path)
	if err := sqlite.Migrate(t.Context(), db); err != nil {
		t.Fatal(err)
	}
	for typ, canonical := range rows {
		storeAsOlderBoxcar(t, db, typ, 1, canonical)
	}
	reg, err := NewRegistry(t.Context(), db)
	return registryBundle{ctx: t.Context(), path: path, db: db, reg: reg}, err
}

func storeAsOlderBoxcar(t *testing.T, db *sql.DB, typ string, version int, canonical string) {
	t.Helper()
	sum := sha256.Sum256([]byte(canonical))
	if _, err := db.ExecContext(t.Context(),
		`INSERT INTO boxcar_schemas(type, version, format, schema, fingerprint, created_ns) VALUES (?, ?, 'JSON', ?, ?, 1)`,
		typ, version, canonical, hex.EncodeToString(sum[:])); err != nil {
		t.Fatal(err)
	}
}

func TestRegistryLoadsStoredSchemasParseNowRefuses(t *testing.T) {
	t.Parallel()
	b, err := setupStored(t, map[string]string{"legacy.loop": storedLoop, "legacy.number": storedOutsized, "user.signed_up": storedSignupV1})
	if err != nil {
		t.Fatalf("NewRegistry on a database an older Boxcar wrote: %v", err)
	}
	for typ, raw := range map[string]string{"legacy.loop": storedLoop, "legacy.number": storedOutsized} {
		s, err := b.reg.Latest(b.ctx, typ)
		if err != nil || s.Version() != 1 || string(s.Canonical()) != raw {
			t.Fatalf("Latest(%s) = %v, %v", typ, s, err)
		}
	}
	// Payloads are validated as the validator always did: it ignores a
	// number it cannot hold, and fails every payload on the loop.
	s, _ := b.reg.Get(b.ctx, "legacy.number", 1)
	if err := s.Validate([]byte(`5`)); err != nil {
		t.Errorf("legacy.number v1 Validate(5) = %v, want nil", err)
	}
	if err := s.Validate([]byte(`"5"`)); !errors.Is(err, ErrInvalidPayload) {
		t.Errorf(`legacy.number v1 Validate("5") = %v, want ErrInvalidPayload`, err)
	}
	s, _ = b.reg.Get(b.ctx, "legacy.loop", 1)
	if err := s.Validate([]byte(`"a"`)); !errors.Is(err, ErrInvalidPayload) {
		t.Errorf(`legacy.loop v1 Validate("a") = %v, want ErrInvalidPayload`, err)
	}
	// A schema Parse accepts is unaffected.
	mustRegister(t, b.reg, "user.signed_up", signupV2, 2, true)
	// Refresh, and a second Registry on the file, load them too.
	if err := b.reg.Refresh(b.ctx, ""); err != nil {
		t.Errorf("Refresh: %v", err)
	}
	if _, err := NewRegistry(b.ctx, openDB(t, b.path)); err != nil {
		t.Errorf("second NewRegistry: %v", err)
	}
}

func TestRegisterAgainstAStoredSchemaParseNowRefuses(t *testing.T) {
	t.Parallel()
	b, err := setupStored(t, map[string]string{"legacy.loop": storedLoop, "legacy.number": storedOutsized})
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	for _, tc := range []struct {
		typ, next, construct string
	}{
		// The old checker read storedLoop as {"type":"string"}, and the
		// stored maximum as a bound: both would pass.
		{"legacy.loop", `{"type":"string"}`, "leads back to the root"},
		{"legacy.number", `{"type":"integer","maximum":0}`, "number -1e99999999"},
	} {
		_, _, err := b.reg.Register(b.ctx, tc.typ, []byte(tc.next))
		var ie *IncompatibleError
		if !errors.As(err, &ie) || len(ie.Changes) != 1 || ie.Changes[0].Rule != "unsupported" || ie.Changes[0].Version != 1 {
			t.Fatalf("Register(%s, %s) = %v, want one unsupported change against v1", tc.typ, tc.next, err)
		}
		for _, part := range []string{
			"stored version 1 of " + tc.typ + " holds a construct the checker cannot reason about",
			tc.construct,
			"Registry.SetMode", "NONE",
		} {
			if !strings.Contains(err.Error(), part) {
				t.Errorf("Register(%s) error lacks %q:\n%v", tc.typ, part, err)
			}
		}
		// Forward modes read the new version with the stored one: refused
		// the same way.
		stored, err := b.reg.Versions(b.ctx, tc.typ)
		if err != nil {
			t.Fatal(err)
		}
		if changes := Check(Forward, mustParse(t, tc.next).withIdentity(tc.typ, 2), stored); len(changes) != 1 || changes[0].Rule != "unsupported" {
			t.Errorf("Check(FORWARD, %s) = %v", tc.typ, changes)
		}
	}
	if v, _ := b.reg.Versions(b.ctx, "legacy.loop"); len(v) != 1 {
		t.Errorf("%d versions of legacy.loop after the refusal, want 1", len(v))
	}
	// The way past it: NONE for the next version, then a mode that checks
	// against the latest only.
	if err := b.reg.SetMode(b.ctx, "legacy.loop", None); err != nil {
		t.Fatal(err)
	}
	mustRegister(t, b.reg, "legacy.loop", `{"type":"string"}`, 2, true)
	if err := b.reg.SetMode(b.ctx, "legacy.loop", Backward); err != nil {
		t.Fatal(err)
	}
	mustRegister(t, b.reg, "legacy.loop", `{"type":["string","null"]}`, 3, true)
}

func TestRegisterStillRefusesWhatParseRefuses(t *testing.T) {
	t.Parallel()
	b, err := setupStored(t, map[string]string{"legacy.loop": storedLoop})
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	for _, tc := range []struct{ typ, raw, reason string }{
		{"fresh.loop", storedLoop, "leads back to the root"},
		{"fresh.number", storedOutsized, "number -1e99999999 is outside what Boxcar validates"},
		// Also as a new version of a type that has such a version stored.
		{"legacy.loop", `{"allOf":[{"$ref":"#"}],"type":["string","null"]}`, "leads back to the root"},
	} {
		_, _, err := b.reg.Register(b.ctx, tc.typ, []byte(tc.raw))
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Type != tc.typ || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("Register(%s, %s) = %v, want a *ParseError saying %q", tc.typ, tc.raw, err, tc.reason)
		}
	}
	var rows int
	b.db.QueryRow(`SELECT count(*) FROM boxcar_schemas`).Scan(&rows)
	if rows != 1 {
		t.Errorf("%d rows, want the 1 stored", rows)
	}
}

// "boxcar schema ls" and "show" on such a database say which version the
// checker cannot reason about.
func TestCommandsWarnOfStoredSchemasParseNowRefuses(t *testing.T) {
	t.Parallel()
	b, err := setupStored(t, map[string]string{"legacy.loop": storedLoop, "user.signed_up": storedSignupV1})
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	want := "warning: stored version 1 of legacy.loop holds a construct the checker cannot reason about"
	var out, errOut bytes.Buffer
	if code := RunList(b.ctx, &out, &errOut, b.path); code != ExitOK || !strings.Contains(out.String(), "legacy.loop") || !strings.Contains(errOut.String(), want) || strings.Contains(errOut.String(), "user.signed_up") {
		t.Errorf("ls = %d:\n%s%s\nwant a warning %q", code, &out, &errOut, want)
	}
	out.Reset()
	errOut.Reset()
	if code := RunShow(b.ctx, &out, &errOut, b.path, "legacy.loop", 1); code != ExitOK || !strings.Contains(out.String(), `"$ref": "#"`) || !strings.Contains(errOut.String(), want) {
		t.Errorf("show = %d:\n%s%s\nwant a warning %q", code, &out, &errOut, want)
	}
	out.Reset()
	errOut.Reset()
	if code := RunShow(b.ctx, &out, &errOut, b.path, "user.signed_up", 1); code != ExitOK || errOut.Len() != 0 {
		t.Errorf("show of a schema Parse accepts = %d:\n%s%s", code, &out, &errOut)
	}
}

// registryRows is every row of the registry's tables, in order: what a
// call that should change nothing must leave as it found.
func registryRows(t *testing.T, db *sql.DB) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{
		`SELECT type, version, format, schema, fingerprint, created_ns FROM boxcar_schemas ORDER BY type, version`,
		`SELECT * FROM boxcar_schema_modes ORDER BY 1`,
		`SELECT * FROM boxcar_schema_examples ORDER BY 1, 2, 3`,
	} {
		rows, err := db.QueryContext(t.Context(), q)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintln(&b, vals...)
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
		b.WriteString("--\n")
	}
	return b.String()
}

// The documented start, NewRegistry then RegisterDir, on a database an
// older Boxcar wrote and the schema directory it registered from: the
// files Parse refuses now are the stored versions, so there is nothing to
// do, and nothing is done.
func TestRegisterDirAcceptsStoredSchemasParseNowRefuses(t *testing.T) {
	t.Parallel()
	b, err := setupStored(t, map[string]string{"legacy.loop": storedLoop, "legacy.number": storedOutsized, "user.signed_up": storedSignupV1})
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	dir := writeTree(t, map[string]string{
		// The file as it was written, not canonical: the same fingerprint.
		"legacy.loop/1.json":    "{\n  \"type\": \"string\",\n  \"allOf\": [{\"$ref\": \"#\"}]\n}\n",
		"legacy.number/1.json":  storedOutsized,
		"user.signed_up/1.json": signupV1,
	})
	before := registryRows(t, b.db)
	regs, err := b.reg.RegisterDir(b.ctx, dir)
	if err != nil {
		t.Fatalf("RegisterDir of the directory the stored versions came from: %v", err)
	}
	want := []Registration{{Type: "legacy.loop", Version: 1}, {Type: "legacy.number", Version: 1}, {Type: "user.signed_up", Version: 1}}
	if fmt.Sprint(regs) != fmt.Sprint(want) {
		t.Errorf("RegisterDir = %+v, want %+v (nothing created)", regs, want)
	}
	// Register of such a schema is the same no-op.
	for typ, raw := range map[string]string{"legacy.loop": `{"type":"string","allOf":[{"$ref":"#"}]}`, "legacy.number": storedOutsized} {
		if v, created, err := b.reg.Register(b.ctx, typ, []byte(raw)); v != 1 || created || err != nil {
			t.Errorf("Register(%s, the stored v1) = %d, %v, %v; want 1, false, nil", typ, v, created, err)
		}
	}
	if after := registryRows(t, b.db); after != before {
		t.Errorf("the registry changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// An app restarted on the same file starts again.
	reg, err := NewRegistry(b.ctx, openDB(t, b.path))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.RegisterDir(b.ctx, dir); err != nil {
		t.Errorf("RegisterDir after a restart: %v", err)
	}
	// The schema still validates as it did.
	s, err := reg.Latest(b.ctx, "legacy.number")
	if err != nil || s.Validate([]byte(`5`)) != nil {
		t.Errorf("legacy.number v1 after RegisterDir: %v, %v", s, err)
	}
}

// A file that is not a stored version is refused as LoadDir refuses it,
// with the *ParseError naming the file, before anything of any type is
// written.
func TestRegisterDirStillRefusesFilesParseRefuses(t *testing.T) {
	t.Parallel()
	b, err := setupStored(t, map[string]string{"legacy.loop": storedLoop, "legacy.number": storedOutsized, "user.signed_up": storedSignupV1})
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	oneByteOff := strings.Replace(storedOutsized, "99999999", "99999998", 1)
	for _, tc := range []struct {
		name    string
		files   map[string]string
		typ     string
		version int
		reason  string
		// LoadDir stops at the first file Parse refuses; RegisterDir
		// passes a stored version's file and stops at the next.
		asLoadDir bool
	}{
		{"one byte off the stored v1", map[string]string{
			"legacy.number/1.json":  oneByteOff,
			"user.signed_up/1.json": signupV1,
			"user.signed_up/2.json": signupV2,
			"app.started/1.json":    `{"type":"object"}`,
		}, "legacy.number", 1, "number -1e99999998 is outside what Boxcar validates", true},
		{"a new version after the stored one", map[string]string{
			"legacy.loop/1.json":    storedLoop,
			"legacy.loop/2.json":    `{"allOf":[{"$ref":"#"}],"type":["string","null"]}`,
			"user.signed_up/1.json": signupV1,
			"user.signed_up/2.json": signupV2,
			"app.started/1.json":    `{"type":"object"}`,
		}, "legacy.loop", 2, "leads back to the root", false},
		{"a type with nothing stored", map[string]string{
			"fresh.loop/1.json":     storedLoop,
			"user.signed_up/1.json": signupV1,
			"user.signed_up/2.json": signupV2,
			"app.started/1.json":    `{"type":"object"}`,
		}, "fresh.loop", 1, "leads back to the root", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeTree(t, tc.files)
			file := filepath.Join(dir, tc.typ, fmt.Sprintf("%d.json", tc.version))
			before := registryRows(t, b.db)
			regs, err := b.reg.RegisterDir(b.ctx, dir)
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Type != tc.typ || pe.Version != tc.version || pe.File != file || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("RegisterDir = %+v, %v; want a *ParseError for %s saying %q", regs, err, file, tc.reason)
			}
			if len(regs) != 0 {
				t.Errorf("RegisterDir registered %+v", regs)
			}
			// As LoadDir says it.
			if _, lerr := LoadDir(dir); tc.asLoadDir && (lerr == nil || lerr.Error() != err.Error()) {
				t.Errorf("RegisterDir: %v\nLoadDir: %v", err, lerr)
			}
			if after := registryRows(t, b.db); after != before {
				t.Errorf("the registry changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
	// Register refuses the one-byte-off schema the same way.
	_, _, err = b.reg.Register(b.ctx, "legacy.number", []byte(oneByteOff))
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Type != "legacy.number" || !strings.Contains(err.Error(), "-1e99999998") {
		t.Errorf("Register(one byte off the stored v1) = %v, want a *ParseError", err)
	}
}

// LoadDir reads a directory without a registry, so it cannot know that a
// file is a stored version: it refuses what Parse refuses. "boxcar schema
// check" refuses it too, with -db as well: the checker proves nothing
// about such a file, nor about the versions after it.
func TestLoadDirAndCheckRefuseStoredSchemasParseNowRefuses(t *testing.T) {
	t.Parallel()
	b, err := setupStored(t, map[string]string{"legacy.loop": storedLoop})
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	dir := writeTree(t, map[string]string{"legacy.loop/1.json": storedLoop})
	file := filepath.Join(dir, "legacy.loop", "1.json")
	var pe *ParseError
	if _, err := LoadDir(dir); !errors.As(err, &pe) || pe.File != file {
		t.Errorf("LoadDir = %v, want a *ParseError for %s", err, file)
	}
	var out, errOut bytes.Buffer
	code := RunCheck(b.ctx, &out, &errOut, dir, b.path)
	if code != ExitProblems || !strings.Contains(out.String(), "FAIL schema: legacy.loop v1 ("+file+"): invalid schema at /allOf/0/$ref") || !strings.Contains(out.String(), "leads back to the root") {
		t.Errorf("check -db = %d:\n%s%s\nwant FAIL for %s", code, &out, &errOut, file)
	}
}
