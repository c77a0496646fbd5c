package schema

import (
	"context"
	"fmt"
	"strings"
)

// Problem is one thing CheckDir found wrong.
type Problem struct {
	// Type, Version and File say where, as far as known.
	Type    string
	Version int
	File    string
	// Change is set for a breaking change between versions.
	Change *Change
	// Err is set for everything else: a file that does not load, an example
	// that its version rejects, a directory that disagrees with a registry.
	Err error
}

// String renders the problem on one line.
func (p Problem) String() string {
	where := p.File
	if where == "" {
		where = strings.TrimSuffix(identity(p.Type, p.Version, ""), ": ")
	}
	if p.Change != nil {
		return where + ": " + p.Change.String()
	}
	msg := p.Err.Error()
	// Errors that already name the file need not name it twice.
	if p.File != "" && strings.Contains(msg, p.File) {
		return msg
	}
	return where + ": " + msg
}

// Report is the result of CheckDir.
type Report struct {
	Dir      string
	Types    int // event types checked
	Versions int // schema versions checked
	Examples int // examples validated
	Problems []Problem
}

// OK reports whether the check found no problem.
func (r Report) OK() bool { return len(r.Problems) == 0 }

// String is the report as "boxcar schema check" prints it: one line a
// problem, then a summary line.
func (r Report) String() string {
	var b strings.Builder
	for _, p := range r.Problems {
		b.WriteString("FAIL ")
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "schema check %s: %d %s, %d %s, %d %s: ", r.Dir,
		r.Types, plural(r.Types, "type", "types"), r.Versions, plural(r.Versions, "version", "versions"),
		r.Examples, plural(r.Examples, "example", "examples"))
	if r.OK() {
		b.WriteString("ok\n")
	} else {
		fmt.Fprintf(&b, "%d %s\n", len(r.Problems), plural(len(r.Problems), "problem", "problems"))
	}
	return b.String()
}

// CheckDir checks a schema directory (see Set): every file loads, every
// type's chain of versions is compatible under its mode (each version
// against those before it), and every example validates against its
// version. With registries (for example the one in a copy of production's
// database), it also checks that the directory agrees with each: the
// versions registered there are the directory's first ones, unchanged, and
// the directory's newer versions are compatible with the registered ones
// under the registry's mode as well as the directory's — that is, the
// directory's schemas would register.
//
// A file that Parse refuses is a problem, with registries too, even where
// it is a version an older Boxcar registered, which RegisterDir passes
// over (it is registered already): the check proves a directory's chain
// of versions, and the checker cannot reason about that file, nor about a
// later version against it.
func CheckDir(ctx context.Context, dir string, against ...*Registry) Report {
	set, problems := loadDir(dir, nil)
	rep := set.Check(ctx, against...)
	rep.Problems = append(problems, rep.Problems...)
	return rep
}

// Check is CheckDir on a loaded set.
func (s *Set) Check(ctx context.Context, against ...*Registry) Report {
	rep := Report{Dir: s.dir}
	for _, typ := range s.Types() {
		t := s.types[typ]
		rep.Types++
		rep.Versions += len(t.versions)
		for i, v := range t.versions {
			for _, c := range Check(t.mode, v, t.versions[:i]) {
				rep.addChange(typ, v.version, t.files[i], c)
			}
			for _, ex := range t.examples[i] {
				rep.Examples++
				if err := v.Validate(ex.data); err != nil {
					rep.Problems = append(rep.Problems, Problem{Type: typ, Version: v.version, File: ex.file, Err: err})
				}
			}
		}
		for _, reg := range against {
			s.checkAgainst(ctx, &rep, typ, t, reg)
		}
	}
	return rep
}

func (r *Report) addChange(typ string, version int, file string, c Change) {
	r.Problems = append(r.Problems, Problem{Type: typ, Version: version, File: file, Change: &c})
}

// checkAgainst compares typ's versions in the directory with those in reg.
func (s *Set) checkAgainst(ctx context.Context, rep *Report, typ string, t *dirType, reg *Registry) {
	fail := func(v int, file, format string, args ...any) {
		rep.Problems = append(rep.Problems, Problem{Type: typ, Version: v, File: file, Err: fmt.Errorf(format, args...)})
	}
	if err := reg.Refresh(ctx, typ); err != nil {
		fail(0, "", "registry: %v", err)
		return
	}
	registered, err := reg.versions(ctx, typ, false)
	if err != nil {
		fail(0, "", "registry: %v", err)
		return
	}
	regMode, regModeSet, err := reg.mode(ctx, reg.db, typ)
	if err != nil {
		fail(0, "", "registry: %v", err)
		return
	}
	mismatch := false
	for i, rv := range registered {
		if i >= len(t.versions) {
			fail(rv.version, "", "the registry has version %d, the directory stops at %d: add it to the directory as %d.json", rv.version, len(t.versions), rv.version)
			continue
		}
		if dv := t.versions[i]; dv.fingerprint != rv.fingerprint {
			mismatch = true
			fail(dv.version, t.files[i], "differs from version %d in the registry (sha256 %s there, %s here): a registered version never changes; restore it and make the change a new version", rv.version, rv.fingerprint[:12], dv.fingerprint[:12])
		}
	}
	if regModeSet && t.modeSet && regMode != t.mode {
		fail(0, "", "mode is %s in the directory but %s in the registry, which Register applies: align them (Registry.SetMode)", t.mode, regMode)
	}
	if len(t.versions) <= len(registered) {
		return
	}
	// The directory's chain was checked under its own mode; against the
	// registry it needs checking again where that differs: under the
	// registry's mode, and against the registered versions where they are
	// not the directory's.
	var modes []Mode
	if mismatch {
		modes = append(modes, t.mode)
	}
	if regMode != t.mode {
		modes = append(modes, regMode)
	}
	chain := append([]*Schema(nil), registered...)
	for i := len(registered); i < len(t.versions); i++ {
		for _, m := range modes {
			for _, c := range Check(m, t.versions[i], chain) {
				c.Message += fmt.Sprintf(" (against the registry, mode %s)", m)
				rep.addChange(typ, t.versions[i].version, t.files[i], c)
			}
		}
		chain = append(chain, t.versions[i])
	}
}
