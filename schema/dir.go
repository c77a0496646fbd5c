package schema

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ModeFile is the name of the file, in a type's directory, that holds the
// type's compatibility mode (one line, e.g. "FULL").
const ModeFile = "mode"

// Set is the schemas of a directory, as LoadDir reads them:
//
//	schemas/
//	  user.signed_up/
//	    1.json            version 1 of the type's schema
//	    2.json            version 2 (versions run 1, 2, 3 ... without gaps)
//	    mode              optional: the type's mode, e.g. FULL (default BACKWARD_TRANSITIVE)
//	    2.examples/       optional: example payloads of version 2
//	      minimal.json
//
// Files at the top level are ignored (a README may live there); in a type's
// directory, files whose names start with "." or end in ".md" are ignored
// and any other unexpected name is an error, so that a typo ("3.jsn") is not
// silently skipped.
type Set struct {
	dir   string
	types map[string]*dirType
}

type dirType struct {
	mode     Mode
	modeSet  bool
	versions []*Schema
	files    []string    // files[i] is the file of versions[i]
	examples [][]example // examples[i] are those of versions[i]
}

type example struct {
	file string
	data []byte
}

// LoadDir reads a schema directory (see Set). Every problem is reported,
// each naming its file; the error wraps ErrInvalidDir or *ParseError.
//
// A file that Parse refuses is refused, also one that an older Boxcar
// registered before Parse refused it (see Registry.RegisterDir): LoadDir
// reads no registry, so it cannot tell that file from a new one, and the
// checker cannot reason about it.
func LoadDir(dir string) (*Set, error) {
	s, problems := loadDir(dir, nil)
	if err := joinProblems(problems); err != nil {
		return nil, err
	}
	return s, nil
}

// joinProblems is LoadDir's error for problems: each one's, nil for none.
func joinProblems(problems []Problem) error {
	errs := make([]error, len(problems))
	for i, p := range problems {
		errs[i] = p.Err
	}
	return errors.Join(errs...)
}

// storedCheck reports whether s, read from a file that Parse refuses and
// parseStored loads (s.refusedNow says why Parse refuses it), is version v
// of typ unchanged, as a registry stores it already.
type storedCheck func(typ string, v int, s *Schema) (bool, error)

// loadDir reads what it can of dir and returns the problems it found. A
// file that Parse refuses is a problem unless isStored (nil: none) says it
// is a stored version: then it loads as the registry loaded that version.
func loadDir(dir string, isStored storedCheck) (*Set, []Problem) {
	set := &Set{dir: dir, types: map[string]*dirType{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return set, []Problem{dirProblem("", 0, dir, "%v", err)}
	}
	var problems []Problem
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		typ := e.Name()
		tdir := filepath.Join(dir, typ)
		if err := ValidateType(typ); err != nil {
			problems = append(problems, dirProblem("", 0, tdir, "directory name is not an event type: %v", err))
			continue
		}
		t, ps := loadType(typ, tdir, isStored)
		problems = append(problems, ps...)
		if t != nil {
			set.types[typ] = t
		}
	}
	return set, problems
}

func loadType(typ, tdir string, isStored storedCheck) (*dirType, []Problem) {
	entries, err := os.ReadDir(tdir)
	if err != nil {
		return nil, []Problem{dirProblem(typ, 0, tdir, "%v", err)}
	}
	var problems []Problem
	t := &dirType{mode: DefaultMode}
	files := map[int]string{}
	exampleDirs := map[int]string{}
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(tdir, name)
		if strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".md") {
			continue
		}
		if name == ModeFile && !e.IsDir() {
			m, err := readMode(path)
			if err != nil {
				problems = append(problems, dirProblem(typ, 0, path, "%v", err))
				continue
			}
			t.mode, t.modeSet = m, true
			continue
		}
		base, isExamples := strings.CutSuffix(name, ".examples")
		if !isExamples {
			base, _ = strings.CutSuffix(name, ".json")
		}
		v, ok := parseVersion(base)
		switch {
		case ok && isExamples && e.IsDir():
			exampleDirs[v] = path
		case ok && !isExamples && !e.IsDir() && strings.HasSuffix(name, ".json"):
			files[v] = path
		default:
			problems = append(problems, dirProblem(typ, 0, path, "unexpected name: a type's directory holds N.json (N = 1, 2, ...), N.examples/ and %s", ModeFile))
		}
	}
	if len(files) == 0 {
		return nil, append(problems, dirProblem(typ, 0, tdir, "no schema: add %s", filepath.Join(tdir, "1.json")))
	}
	for v := 1; v <= maxKey(files); v++ {
		path, ok := files[v]
		if !ok {
			problems = append(problems, dirProblem(typ, v, filepath.Join(tdir, strconv.Itoa(v)+".json"), "missing: versions run 1, 2, 3 ... without gaps"))
			return nil, problems
		}
		raw, err := readLimited(path, MaxSchemaBytes)
		if err != nil {
			problems = append(problems, dirProblem(typ, v, path, "%v", err))
			return nil, problems
		}
		s, err := Parse(raw)
		if err != nil && isStored != nil {
			if stored, serr := parseStored(raw); serr == nil && stored.refusedNow != nil {
				ok, cerr := isStored(typ, v, stored)
				if cerr != nil {
					problems = append(problems, Problem{Type: typ, Version: v, File: path, Err: cerr})
					return nil, problems
				}
				if ok {
					s, err = stored, nil
				}
			}
		}
		if err != nil {
			var pe *ParseError
			if errors.As(err, &pe) {
				pe.Type, pe.Version, pe.File = typ, v, path
			}
			problems = append(problems, Problem{Type: typ, Version: v, File: path, Err: err})
			return nil, problems
		}
		t.versions = append(t.versions, s.withIdentity(typ, v))
		t.files = append(t.files, path)
		t.examples = append(t.examples, nil)
	}
	for v, edir := range exampleDirs {
		if v > len(t.versions) {
			problems = append(problems, dirProblem(typ, v, edir, "examples of version %d, which has no %d.json", v, v))
			continue
		}
		ex, ps := loadExamples(typ, v, edir)
		problems = append(problems, ps...)
		t.examples[v-1] = ex
	}
	return t, problems
}

func loadExamples(typ string, v int, edir string) ([]example, []Problem) {
	entries, err := os.ReadDir(edir)
	if err != nil {
		return nil, []Problem{dirProblem(typ, v, edir, "%v", err)}
	}
	var out []example
	var problems []Problem
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(edir, name)
		if strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".md") {
			continue
		}
		if e.IsDir() || !strings.HasSuffix(name, ".json") {
			problems = append(problems, dirProblem(typ, v, path, "unexpected name: examples are *.json files"))
			continue
		}
		data, err := readLimited(path, maxExampleBytes)
		if err != nil {
			problems = append(problems, dirProblem(typ, v, path, "%v", err))
			continue
		}
		out = append(out, example{file: path, data: data})
	}
	return out, problems
}

// readMode reads a mode file: one mode name; blank lines and lines
// starting with '#' are ignored.
func readMode(path string) (Mode, error) {
	raw, err := readLimited(path, maxModeBytes)
	if err != nil {
		return "", err
	}
	var lines []string
	for l := range strings.SplitSeq(string(raw), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		return "", fmt.Errorf("%w: want one mode name, e.g. %s, found %d lines", ErrInvalidMode, Full, len(lines))
	}
	return ParseMode(lines[0])
}

// parseVersion parses "1", "2", ...: positive, no leading zero.
func parseVersion(s string) (int, bool) {
	if s == "" || s[0] == '0' || len(s) > 6 {
		return 0, false
	}
	v, err := strconv.Atoi(s)
	return v, err == nil && v > 0
}

func maxKey(m map[int]string) int {
	n := 0
	for k := range m {
		n = max(n, k)
	}
	return n
}

func dirProblem(typ string, v int, file, format string, args ...any) Problem {
	err := fmt.Errorf("%w: %s: %s", ErrInvalidDir, file, fmt.Sprintf(format, args...))
	return Problem{Type: typ, Version: v, File: file, Err: err}
}

// Dir is the directory the set was loaded from.
func (s *Set) Dir() string { return s.dir }

// Types returns the set's event types, sorted.
func (s *Set) Types() []string {
	out := make([]string, 0, len(s.types))
	for t := range s.types {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Mode returns typ's mode: from its mode file, else DefaultMode. set says
// whether the file exists.
func (s *Set) Mode(typ string) (m Mode, set bool) {
	t, ok := s.types[typ]
	if !ok {
		return DefaultMode, false
	}
	return t.mode, t.modeSet
}

func (s *Set) typ(typ string) (*dirType, error) {
	t, ok := s.types[typ]
	if !ok {
		return nil, fmt.Errorf("%w: %s has no directory in %s", ErrUnknownType, typ, s.dir)
	}
	return t, nil
}

// Versions returns typ's versions, oldest first. ctx is unused: the
// signature is Registry's, so that both serve the same callers (package
// schematest).
func (s *Set) Versions(_ context.Context, typ string) ([]*Schema, error) {
	t, err := s.typ(typ)
	if err != nil {
		return nil, err
	}
	return t.versions, nil
}

// Latest returns typ's newest version.
func (s *Set) Latest(ctx context.Context, typ string) (*Schema, error) {
	v, err := s.Versions(ctx, typ)
	if err != nil {
		return nil, err
	}
	return v[len(v)-1], nil
}

// Get returns version of typ.
func (s *Set) Get(_ context.Context, typ string, version int) (*Schema, error) {
	t, err := s.typ(typ)
	if err != nil {
		return nil, err
	}
	if version < 1 || version > len(t.versions) {
		return nil, fmt.Errorf("%w: %s v%d: %s has versions 1 to %d", ErrUnknownVersion, typ, version, s.dir, len(t.versions))
	}
	return t.versions[version-1], nil
}

// Examples returns the example payloads of version of typ, sorted by file
// name.
func (s *Set) Examples(ctx context.Context, typ string, version int) ([][]byte, error) {
	if _, err := s.Get(ctx, typ, version); err != nil {
		return nil, err
	}
	ex := s.types[typ].examples[version-1]
	out := make([][]byte, len(ex))
	for i, e := range ex {
		out[i] = e.data
	}
	return out, nil
}

// File returns the file version of typ was read from.
func (s *Set) File(typ string, version int) string {
	t, ok := s.types[typ]
	if !ok || version < 1 || version > len(t.files) {
		return ""
	}
	return t.files[version-1]
}

// maxExampleBytes bounds an example payload file (the largest event is
// 64 MiB); maxModeBytes a mode file.
const (
	maxExampleBytes = 64 << 20
	maxModeBytes    = 4 << 10
)

// readLimited reads the file at path, refusing one over limit bytes before
// it holds more than that in memory: a directory may hold a huge file, or
// a link to /dev/zero.
func readLimited(path string, limit int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > limit {
		return nil, fmt.Errorf("the file is over %d bytes, the limit for it", limit)
	}
	return raw, nil
}
