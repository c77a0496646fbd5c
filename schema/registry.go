package schema

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/boxcar-bus/boxcar/sqlite"
)

// MaxTypeLen is the longest event type name, in bytes.
const MaxTypeLen = 255

// ValidateType checks an event type name against Boxcar's rule: tokens of
// ASCII letters, digits, '_' and '-', separated by single dots, at most
// MaxTypeLen bytes, e.g. "user.signed_up". It is the rule the bus applies
// when publishing (types become NATS subject tokens).
func ValidateType(typ string) error {
	if typ == "" {
		return fmt.Errorf("%w: type is empty: name it like \"user.signed_up\"", ErrInvalidType)
	}
	if len(typ) > MaxTypeLen {
		return fmt.Errorf("%w: type is %d bytes, the limit is %d", ErrInvalidType, len(typ), MaxTypeLen)
	}
	for tok := range strings.SplitSeq(typ, ".") {
		if tok == "" {
			return fmt.Errorf("%w: type %q has an empty token: tokens are separated by single dots", ErrInvalidType, typ)
		}
		for i := 0; i < len(tok); i++ {
			c := tok[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
				return fmt.Errorf("%w: type %q has %q: use ASCII letters, digits, '_' and '-' between dots", ErrInvalidType, typ, rune(c))
			}
		}
	}
	return nil
}

// Registry is the schema registry in the application's SQLite database:
// the versions of each event type's schema, its compatibility mode and
// example payloads, and the upcasters registered in this process. It is
// safe for concurrent use.
//
// Every registered version is held in memory, compiled: NewRegistry loads
// them all, and Register (and RegisterDir) through this Registry adds the
// new ones at once. Lookups (Latest, Get, Versions) are served from there:
// a map lookup, no query, no parse. The publish path (ValidateEvent, as
// boxcar.Config.Schemas) and the consumer path (Lift, Decode and the typed
// handlers) use memory only and never touch the database.
//
// A version registered elsewhere (another process, another Registry on the
// same file) becomes visible here at Refresh; until then Get still finds it
// in the database when asked for by number, but ValidateEvent refuses an
// event that names it (it does not query on the publish path) and
// ValidateEvent of an event that names no version keeps validating against
// the latest version this Registry knows. In the usual deployment this
// never arises: each binary registers its own schemas at start
// (RegisterDir), before it opens the bus.
type Registry struct {
	db  *sql.DB
	now func() time.Time

	mu        sync.RWMutex
	types     map[string][]*Schema        // versions oldest first; only ever grows
	upcasters map[string]map[int]Upcaster // type → from version → upcaster
}

// NewRegistry opens the registry in db, creating its tables (sqlite.Migrate)
// if needed, and loads every registered version into memory. A version an
// older Boxcar registered that Parse refuses today (a $ref that leads back
// without going into a property or an item, a number beyond the limits of
// Validate) loads and validates payloads as it did, but the checker cannot
// reason about it: a new version checked against it is refused (an
// *IncompatibleError that says so and how to get past it), and "boxcar
// schema ls" and "show" warn of it. db should
// come from sqlite.Open, whose transactions begin IMMEDIATE: Register reads
// the latest version and inserts the next in one transaction, and an
// immediate one holds the write lock from its start, so concurrent
// registrations queue instead of failing.
func NewRegistry(ctx context.Context, db *sql.DB) (*Registry, error) {
	if err := sqlite.Migrate(ctx, db); err != nil {
		return nil, fmt.Errorf("schema: registry: %w", err)
	}
	return loadRegistry(ctx, db)
}

// loadRegistry is a Registry on db's tables as they are (no migration),
// loaded into memory.
func loadRegistry(ctx context.Context, db *sql.DB) (*Registry, error) {
	r := &Registry{db: db, now: time.Now, types: map[string][]*Schema{}, upcasters: map[string]map[int]Upcaster{}}
	if err := r.Refresh(ctx, ""); err != nil {
		return nil, err
	}
	return r, nil
}

// Register adds raw as the next version of typ's schema, if it is
// compatible with the previous versions under the type's mode, and returns
// its version. It is idempotent: a schema already registered for typ (same
// fingerprint, so key order and whitespace do not matter) returns its
// version and created=false — also when it is an older version than the
// latest: that version was accepted when it was registered, a producer
// rolled back to older code keeps publishing as that version, and no
// version is registered twice. Producers should validate with the version
// Register returned, not with Latest. That holds also for a version an
// older Boxcar registered that Parse refuses now (see NewRegistry): raw
// that is that version is a no-op, not a *ParseError.
//
// An incompatible schema gives an *IncompatibleError listing the breaking
// changes; an invalid one a *ParseError. Nothing is written then. The read
// of the latest version and the insert of the next are one immediate
// transaction: two registrations of one type, from any number of
// goroutines or processes, never both take a version number.
func (r *Registry) Register(ctx context.Context, typ string, raw []byte) (version int, created bool, err error) {
	if err := ValidateType(typ); err != nil {
		return 0, false, err
	}
	s, err := Parse(raw)
	if err != nil {
		var pe *ParseError
		if errors.As(err, &pe) {
			pe.Type = typ
		}
		v, serr := r.storedVersion(ctx, typ, raw)
		if serr != nil {
			return 0, false, errors.Join(err, fmt.Errorf("schema: register %s: reading the registered versions to compare: %w", typ, serr))
		}
		if v > 0 {
			return v, false, nil
		}
		return 0, false, err
	}
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, false, fmt.Errorf("schema: register %s: %w", typ, err)
	}
	defer tx.Rollback()
	rows, err := sqlite.SchemaVersions(ctx, tx, typ)
	if err != nil {
		return 0, false, fmt.Errorf("schema: register %s: %w", typ, err)
	}
	previous, err := r.fromRows(typ, rows)
	if err != nil {
		return 0, false, err
	}
	for _, p := range previous {
		if p.fingerprint == s.fingerprint {
			r.store(typ, previous)
			return p.version, false, nil
		}
	}
	mode, _, err := r.mode(ctx, tx, typ)
	if err != nil {
		return 0, false, err
	}
	next := s.withIdentity(typ, len(previous)+1)
	if changes := Check(mode, next, previous); len(changes) > 0 {
		return 0, false, &IncompatibleError{Type: typ, Version: next.version, Mode: mode, Changes: changes}
	}
	err = sqlite.InsertSchema(ctx, tx, sqlite.SchemaRow{
		Type: typ, Version: next.version, Format: string(next.Format()),
		Schema: next.canonical, Fingerprint: next.fingerprint, CreatedNS: r.now().UnixNano(),
	})
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		return 0, false, fmt.Errorf("schema: register %s v%d: %w", typ, next.version, err)
	}
	r.store(typ, append(previous[:len(previous):len(previous)], next))
	return next.version, true, nil
}

// storedVersion is, for raw that Parse refuses, the version of typ that is
// raw unchanged (the same fingerprint), or 0: a version an older Boxcar
// registered before Parse refused it. It reads the database, not memory
// alone, as Register does; outside a transaction, since a stored version
// never changes.
func (r *Registry) storedVersion(ctx context.Context, typ string, raw []byte) (int, error) {
	s, err := parseStored(raw)
	if err != nil || s.refusedNow == nil {
		return 0, nil // refused for another reason: no stored version is raw
	}
	versions, err := r.versions(ctx, typ, true)
	if err != nil {
		return 0, err
	}
	for _, v := range versions {
		if v.fingerprint == s.fingerprint {
			return v.version, nil
		}
	}
	return 0, nil
}

// fromRows turns stored rows into schemas, reusing the compiled ones in
// memory (same fingerprint) and parsing the others. A stored schema that
// Parse refuses only by a check an older Boxcar lacked loads
// (parseStored): a database that Boxcar wrote keeps opening after an
// upgrade, and the checker refuses new versions against that one
// (Schema.refusedNow).
func (r *Registry) fromRows(typ string, rows []sqlite.SchemaRow) ([]*Schema, error) {
	r.mu.RLock()
	cached := r.types[typ]
	r.mu.RUnlock()
	out := make([]*Schema, len(rows))
	for i, row := range rows {
		if row.Version != i+1 {
			return nil, fmt.Errorf("schema: %s: stored versions skip from %d to %d", typ, i, row.Version)
		}
		if i < len(cached) && cached[i].fingerprint == row.Fingerprint {
			out[i] = cached[i]
			continue
		}
		if row.Format != string(FormatJSONSchema) {
			return nil, fmt.Errorf("schema: %s v%d: stored format %q is not one this build knows", typ, row.Version, row.Format)
		}
		s, err := parseStored(row.Schema)
		if err != nil {
			return nil, fmt.Errorf("schema: %s v%d: stored schema no longer parses: %w", typ, row.Version, err)
		}
		if s.fingerprint != row.Fingerprint {
			return nil, fmt.Errorf("schema: %s v%d: stored fingerprint %s does not match the stored schema's %s", typ, row.Version, row.Fingerprint, s.fingerprint)
		}
		out[i] = s.withIdentity(typ, row.Version)
	}
	return out, nil
}

// store remembers the versions of typ, unless memory already holds more:
// versions are never removed, so the longer list is the newer.
func (r *Registry) store(typ string, versions []*Schema) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(versions) > len(r.types[typ]) {
		r.types[typ] = versions
	}
}

// versions returns the versions of typ, from memory or else the database;
// reload forces the database.
func (r *Registry) versions(ctx context.Context, typ string, reload bool) ([]*Schema, error) {
	if !reload {
		r.mu.RLock()
		v, ok := r.types[typ]
		r.mu.RUnlock()
		if ok {
			return v, nil
		}
	}
	if err := ValidateType(typ); err != nil {
		return nil, err
	}
	rows, err := sqlite.SchemaVersions(ctx, r.db, typ)
	if err != nil {
		return nil, fmt.Errorf("schema: load %s: %w", typ, err)
	}
	v, err := r.fromRows(typ, rows)
	if err != nil {
		return nil, err
	}
	if len(v) > 0 {
		r.store(typ, v)
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.types[typ], nil
}

// Latest returns the newest version of typ's schema (ErrUnknownType if it
// has none).
func (r *Registry) Latest(ctx context.Context, typ string) (*Schema, error) {
	v, err := r.versions(ctx, typ, false)
	if err != nil {
		return nil, err
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("%w: %s has no registered schema", ErrUnknownType, typ)
	}
	return v[len(v)-1], nil
}

// Get returns version of typ's schema. A version not in memory is looked
// for in the database (it may have been registered by another process);
// ErrUnknownVersion or ErrUnknownType if it is not there either.
func (r *Registry) Get(ctx context.Context, typ string, version int) (*Schema, error) {
	v, err := r.versions(ctx, typ, false)
	if err != nil {
		return nil, err
	}
	if version > len(v) && version > 0 {
		if v, err = r.versions(ctx, typ, true); err != nil {
			return nil, err
		}
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("%w: %s has no registered schema", ErrUnknownType, typ)
	}
	if version < 1 || version > len(v) {
		return nil, fmt.Errorf("%w: %s v%d: registered versions are 1 to %d", ErrUnknownVersion, typ, version, len(v))
	}
	return v[version-1], nil
}

// Versions returns every version of typ's schema, oldest first
// (ErrUnknownType if it has none). Do not modify the slice.
func (r *Registry) Versions(ctx context.Context, typ string) ([]*Schema, error) {
	v, err := r.versions(ctx, typ, false)
	if err != nil {
		return nil, err
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("%w: %s has no registered schema", ErrUnknownType, typ)
	}
	return v, nil
}

// Refresh reloads typ's versions from the database, to see versions
// registered by another process; "" reloads every type, those new to this
// Registry included. Versions already in memory are reused, not parsed
// again. Call it where another process's registrations should become
// visible to ValidateEvent and the typed handlers (for example from a
// ticker of the app's, or after "boxcar schema" registered from a
// directory); the publish path itself never reloads.
func (r *Registry) Refresh(ctx context.Context, typ string) error {
	types := []string{typ}
	if typ == "" {
		t, err := r.Types(ctx)
		if err != nil {
			return err
		}
		types = t
	}
	for _, t := range types {
		if _, err := r.versions(ctx, t, true); err != nil {
			return err
		}
	}
	return nil
}

// Types returns the event types that have a registered schema, sorted.
func (r *Registry) Types(ctx context.Context) ([]string, error) {
	t, err := sqlite.SchemaTypes(ctx, r.db)
	if err != nil {
		return nil, fmt.Errorf("schema: list types: %w", err)
	}
	return t, nil
}

// Mode returns typ's compatibility mode: the one set by SetMode, else
// DefaultMode.
func (r *Registry) Mode(ctx context.Context, typ string) (Mode, error) {
	if err := ValidateType(typ); err != nil {
		return "", err
	}
	m, _, err := r.mode(ctx, r.db, typ)
	return m, err
}

func (r *Registry) mode(ctx context.Context, q sqlite.Querier, typ string) (Mode, bool, error) {
	s, set, err := sqlite.SchemaMode(ctx, q, typ)
	if err != nil {
		return "", false, fmt.Errorf("schema: mode of %s: %w", typ, err)
	}
	if !set {
		return DefaultMode, false, nil
	}
	m, err := ParseMode(s)
	if err != nil {
		return "", false, fmt.Errorf("schema: mode of %s: stored %w", typ, err)
	}
	return m, true, nil
}

// SetMode sets typ's compatibility mode for the versions registered from
// now on. Versions already registered stay; they are not re-checked. A type
// may have its mode set before its first version.
func (r *Registry) SetMode(ctx context.Context, typ string, mode Mode) error {
	if err := ValidateType(typ); err != nil {
		return err
	}
	m, err := ParseMode(string(mode))
	if err != nil {
		return err
	}
	if err := sqlite.SetSchemaMode(ctx, r.db, typ, string(m), r.now().UnixNano()); err != nil {
		return fmt.Errorf("schema: set mode of %s: %w", typ, err)
	}
	return nil
}

// maxExampleDepth bounds the nesting of an example payload.
const maxExampleDepth = 1000

// AddExample stores an example payload of version of typ, after validating
// it against that version (a *ValidationError if it is not valid). It is
// idempotent: the same example (as canonical JSON) is stored once, and
// added is false the second time. Examples are stored as canonical JSON.
func (r *Registry) AddExample(ctx context.Context, typ string, version int, example []byte) (added bool, err error) {
	s, err := r.Get(ctx, typ, version)
	if err != nil {
		return false, err
	}
	if err := s.Validate(example); err != nil {
		return false, err
	}
	canon, fp, err := canonicalExample(example)
	if err != nil {
		return false, fmt.Errorf("schema: %s v%d: example: %w", typ, version, err)
	}
	added, err = sqlite.InsertSchemaExample(ctx, r.db, typ, version, fp, canon, r.now().UnixNano())
	if err != nil {
		return false, fmt.Errorf("schema: %s v%d: add example: %w", typ, version, err)
	}
	return added, nil
}

// Examples returns the examples of version of typ, in the order added.
func (r *Registry) Examples(ctx context.Context, typ string, version int) ([][]byte, error) {
	if _, err := r.Get(ctx, typ, version); err != nil {
		return nil, err
	}
	ex, err := sqlite.SchemaExamples(ctx, r.db, typ, version)
	if err != nil {
		return nil, fmt.Errorf("schema: %s v%d: examples: %w", typ, version, err)
	}
	return ex, nil
}

// canonicalExample is an example's canonical JSON and its fingerprint.
func canonicalExample(raw []byte) ([]byte, string, error) {
	n, err := decodeDocument(raw, maxExampleDepth)
	if err != nil {
		return nil, "", err
	}
	var b bytes.Buffer
	writeCanonical(&b, n)
	sum := sha256.Sum256(b.Bytes())
	return b.Bytes(), hex.EncodeToString(sum[:]), nil
}
