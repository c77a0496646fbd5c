package schema

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/boxcar-bus/boxcar"
)

// Decode reads m, an event of typ, as version want of typ's schema into a
// T: the payload is lifted from the version it was published as
// (Message.SchemaVersion) to want (see Lift), then decoded with
// encoding/json. Any failure is a *DecodeError, which matches
// boxcar.ErrSchema: returned from a handler, it dead-letters the event at
// once with reason "schema". It is what TxHandler and HandlerFunc run
// before the handler, and what a consumer's contract test can call on the
// examples of every version (package schematest).
func Decode[T any](reg *Registry, typ string, want int, m boxcar.Message) (T, error) {
	var v T
	if m.Type != typ {
		return v, newDecodeError(typ, m.SchemaVersion, want,
			fmt.Sprintf("got an event of type %s: subscribe with SubscribeOptions.Types: []string{%q}", m.Type, typ), nil)
	}
	data, err := reg.Lift(typ, m.SchemaVersion, want, m.Data)
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return v, newDecodeError(typ, m.SchemaVersion, want, fmt.Sprintf("decode into %T", v), err)
	}
	return v, nil
}

// TxHandler makes a boxcar.TxHandler that reads events of typ as version
// version of its schema, decoded into the consumer's Go type T: every event
// reaches fn in that one shape, whatever version it was published as —
// older ones lifted by the upcasters (Registry.Upcast), newer ones if the
// consumer's version accepts them. The version is the handler's to name,
// here, next to the type T that has its shape: it does not follow the
// registry's latest, so registering a v4 never changes what a v3 handler
// is given. m is the message as delivered (its Data and SchemaVersion are
// the published ones); v is the payload in version.
//
// A payload that cannot be lifted or decoded is not given to fn: the
// handler returns a *DecodeError, and the event is dead-lettered at once
// with reason "schema" while other keys go on (boxcar.ErrSchema).
//
// Subscribe it with SubscribeOptions.Types: []string{typ}: an event of
// another type is refused the same way. TxHandler checks, before anything
// runs, that version is registered and that each step from an older
// version to it either has an upcaster or is proven compatible by the
// checker (the newer version reads every payload of the older one), so a
// missing upcaster fails at start and not at the first old event.
// Register schemas and upcasters first.
func TxHandler[T any](reg *Registry, typ string, version int, fn func(ctx context.Context, tx *sql.Tx, m boxcar.Message, v T) error) (boxcar.Handler, error) {
	if err := reg.checkReader(typ, version); err != nil {
		return boxcar.Handler{}, err
	}
	return boxcar.TxHandler(func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
		v, err := Decode[T](reg, typ, version, m)
		if err != nil {
			return err
		}
		return fn(ctx, tx, m, v)
	}), nil
}

// HandlerFunc is TxHandler's twin for a non-transactional handler
// (boxcar.HandlerFunc: at-least-once, for external side effects).
func HandlerFunc[T any](reg *Registry, typ string, version int, fn func(ctx context.Context, m boxcar.Message, v T) error) (boxcar.Handler, error) {
	if err := reg.checkReader(typ, version); err != nil {
		return boxcar.Handler{}, err
	}
	return boxcar.HandlerFunc(func(ctx context.Context, m boxcar.Message) error {
		v, err := Decode[T](reg, typ, version, m)
		if err != nil {
			return err
		}
		return fn(ctx, m, v)
	}), nil
}

// checkReader checks that a handler of typ at version can read every older
// version: version is known, and each step below it has an upcaster or is
// proven compatible (CheckReader finds no change).
func (r *Registry) checkReader(typ string, version int) error {
	if r == nil {
		return fmt.Errorf("schema: handler of %s v%d: the registry is nil", typ, version)
	}
	if err := ValidateType(typ); err != nil {
		return err
	}
	versions := r.known(typ)
	switch {
	case len(versions) == 0:
		return fmt.Errorf("%w: handler of %s v%d: %s has no schema registered in this process: register its versions first", ErrUnknownType, typ, version, typ)
	case version < 1 || version > len(versions):
		return fmt.Errorf("%w: handler of %s v%d: %s has versions 1 to %d: name one of them", ErrUnknownVersion, typ, version, typ, len(versions))
	}
	for v := 1; v < version; v++ {
		if r.upcaster(typ, v) != nil {
			continue
		}
		if changes := CheckReader(versions[v], versions[v-1]); len(changes) > 0 {
			lines := make([]string, len(changes))
			for i, c := range changes {
				lines[i] = "\n  - " + c.String()
			}
			return fmt.Errorf("schema: handler of %s v%d: v%d does not read every v%d payload and no upcaster from v%d is registered (Registry.Upcast):%s",
				typ, version, v+1, v, v, strings.Join(lines, ""))
		}
	}
	return nil
}
