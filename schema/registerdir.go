package schema

import (
	"context"
	"errors"
	"fmt"
)

// Registration is what RegisterDir did with one version of a directory.
type Registration struct {
	Type    string
	Version int
	// Created is false for a version that was registered already (the
	// same schema: a no-op).
	Created bool
	// Examples is how many of the version's examples were new.
	Examples int
}

// RegisterDir registers the schemas of a directory (see Set), as an app
// does at start before it opens the bus: for each type, the mode from its
// mode file if it has one (Registry.SetMode: the repository decides), then
// each version in order (Register: the same schema again is a no-op, a
// changed one is a new version if it is compatible under the type's mode),
// then the examples of each version (AddExample).
//
// A file that Parse refuses is refused as LoadDir refuses it (a
// *ParseError naming the file, before anything is written), unless it is
// a version already registered, unchanged (the same fingerprint): a
// version an older Boxcar registered before Parse refused it, which the
// registry loads (see NewRegistry). That file is passed over, as Register
// passes over a schema registered already, so that an app whose schema
// directory holds it still starts after an upgrade.
//
// The directory and the registry must agree: the versions already
// registered must be the directory's first ones, unchanged, else nothing
// of that type is written and the error names the file (a registered
// version never changes: make the change a new N.json). A directory with
// fewer versions than the registry is fine (older code); the app then
// publishes as the directory's latest version only if it names it
// (Event.SchemaVersion), since 0 means the registry's latest.
//
// An incompatible version gives an error matching *IncompatibleError,
// with the checker's list of breaking changes; the versions and types
// before it stay registered (each was compatible). The registrations made
// are returned in every case.
func (r *Registry) RegisterDir(ctx context.Context, dir string) ([]Registration, error) {
	set, problems := loadDir(dir, func(typ string, v int, s *Schema) (bool, error) {
		registered, err := r.versions(ctx, typ, true)
		if err != nil {
			return false, err
		}
		return v <= len(registered) && registered[v-1].fingerprint == s.fingerprint, nil
	})
	if err := joinProblems(problems); err != nil {
		return nil, err
	}
	var out []Registration
	for _, typ := range set.Types() {
		regs, err := r.registerType(ctx, set, typ)
		out = append(out, regs...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func (r *Registry) registerType(ctx context.Context, set *Set, typ string) ([]Registration, error) {
	t := set.types[typ]
	registered, err := r.versions(ctx, typ, true)
	if err != nil {
		return nil, err
	}
	for i, rv := range registered {
		if i >= len(t.versions) {
			break
		}
		if dv := t.versions[i]; dv.fingerprint != rv.fingerprint {
			return nil, fmt.Errorf("%w: %s: %s v%d differs from the registered v%d (sha256 %s there, %s here): a registered version never changes; restore the file and make the change a new version",
				ErrInvalidDir, t.files[i], typ, dv.version, rv.version, rv.fingerprint[:12], dv.fingerprint[:12])
		}
	}
	if mode, modeSet := set.Mode(typ); modeSet {
		current, isSet, err := r.mode(ctx, r.db, typ)
		if err != nil {
			return nil, err
		}
		if !isSet || current != mode {
			if err := r.SetMode(ctx, typ, mode); err != nil {
				return nil, err
			}
		}
	}
	var out []Registration
	for i, s := range t.versions {
		v, created, err := r.Register(ctx, typ, s.Canonical())
		if err != nil {
			var pe *ParseError
			if errors.As(err, &pe) {
				pe.Version, pe.File = i+1, t.files[i]
			}
			return out, fmt.Errorf("schema: register %s: %w", t.files[i], err)
		}
		if v != i+1 {
			return out, fmt.Errorf("%w: %s: registered as %s v%d, not v%d: another process registered a version meanwhile; run boxcar schema check against the database", ErrInvalidDir, t.files[i], typ, v, i+1)
		}
		reg := Registration{Type: typ, Version: v, Created: created}
		for _, ex := range t.examples[i] {
			added, err := r.AddExample(ctx, typ, v, ex.data)
			if err != nil {
				return append(out, reg), fmt.Errorf("schema: example %s: %w", ex.file, err)
			}
			if added {
				reg.Examples++
			}
		}
		out = append(out, reg)
	}
	return out, nil
}
