package schema

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/boxcar-bus/boxcar"
)

// An Upcaster lifts a payload of one version of an event type to the next
// version (v1 → v2). It gets a payload valid under the older version and
// returns one that the newer version accepts; Lift checks that it does.
// It must be a pure function of its input: it runs on the consumer's path,
// once per event and attempt, inside the handler's transaction for a
// TxHandler.
type Upcaster func(data json.RawMessage) (json.RawMessage, error)

// Upcast registers fn as the upcaster of typ from version from to from+1,
// in this process (upcasters are code: they are not stored). Register the
// versions first: both from and from+1 must be known, so that a typo in a
// type name or a version fails here and not at the first old event. Each
// step has at most one upcaster; chains are made of steps (v1 → v2 → v3).
//
// A step without an upcaster is the identity: Lift passes the payload on
// and checks it against the newer version, which is what a compatible
// (BACKWARD) step needs. A breaking step (a renamed field, a changed type)
// needs one, and the typed handlers refuse to start without it (see
// TxHandler).
func (r *Registry) Upcast(typ string, from int, fn Upcaster) error {
	if fn == nil {
		return fmt.Errorf("schema: upcast %s v%d → v%d: the upcaster is nil", typ, from, from+1)
	}
	if err := ValidateType(typ); err != nil {
		return err
	}
	versions := r.known(typ)
	if len(versions) == 0 {
		return fmt.Errorf("%w: upcast %s v%d → v%d: %s has no registered schema: register its versions first", ErrUnknownType, typ, from, from+1, typ)
	}
	if from < 1 || from >= len(versions) { // not from+1 > len: from+1 may overflow
		return fmt.Errorf("%w: upcast %s v%d → v%d: %s has versions 1 to %d: register v%d first", ErrUnknownVersion, typ, from, from+1, typ, len(versions), max(from+1, 2))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	steps := r.upcasters[typ]
	if steps == nil {
		steps = map[int]Upcaster{}
		r.upcasters[typ] = steps
	}
	if steps[from] != nil {
		return fmt.Errorf("schema: upcast %s v%d → v%d: an upcaster is registered already", typ, from, from+1)
	}
	steps[from] = fn
	return nil
}

// upcaster returns the upcaster of typ from version from, or nil.
func (r *Registry) upcaster(typ string, from int) Upcaster {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.upcasters[typ][from]
}

// Lift returns data, a payload of version from of typ, as a payload of
// version to, or a *DecodeError (which matches boxcar.ErrSchema). It is
// what the typed handlers read with, and it uses memory only:
//   - from == to: data as it is (it was validated at publish);
//   - from < to: each step's upcaster in turn (the identity where a step
//     has none), and the result of each step is validated against the
//     version it is meant to be, so a handler never sees a payload its
//     version rejects, even from a faulty upcaster;
//   - from > to (a producer ahead of this consumer): data, if version to
//     accepts it — the forward read that FORWARD and FULL modes promise —
//     else an error: upgrade the consumer;
//   - from == 0 (published without a registry, or before typ had a
//     schema): the newest version from 1 to to that accepts data is taken
//     as its version, then lifted from there.
func (r *Registry) Lift(typ string, from, to int, data []byte) ([]byte, error) {
	fail := func(reason string, err error) ([]byte, error) {
		return nil, newDecodeError(typ, from, to, reason, err)
	}
	versions := r.known(typ)
	switch {
	case len(versions) == 0:
		return fail("", fmt.Errorf("%w: %s has no schema registered in this process", ErrUnknownType, typ))
	case to < 1 || to > len(versions):
		return fail("", fmt.Errorf("%w: %s v%d: this process knows versions 1 to %d", ErrUnknownVersion, typ, to, len(versions)))
	case from < 0:
		return fail("", fmt.Errorf("%w: %s v%d", ErrUnknownVersion, typ, from))
	case from == to:
		return data, nil
	case from > to:
		if err := versions[to-1].Validate(data); err != nil {
			return fail(fmt.Sprintf("a v%d payload that v%d, the version this consumer reads, does not accept: upgrade the consumer", from, to), err)
		}
		return data, nil
	case from == 0:
		var first error
		for v := to; v >= 1; v-- {
			err := versions[v-1].Validate(data)
			if err == nil {
				return r.lift(typ, versions, v, to, data, 0)
			}
			if first == nil {
				first = err
			}
		}
		return fail(fmt.Sprintf("a payload without a schema version that no version from 1 to %d accepts", to), first)
	}
	return r.lift(typ, versions, from, to, data, from)
}

// lift runs the steps from → to (from < to). reported is the version the
// error names as the payload's (0 when it was found by trying versions).
func (r *Registry) lift(typ string, versions []*Schema, from, to int, data []byte, reported int) ([]byte, error) {
	for v := from; v < to; v++ {
		next := versions[v]
		up := r.upcaster(typ, v)
		if up == nil {
			if err := next.Validate(data); err != nil {
				e := newDecodeError(typ, reported, to, fmt.Sprintf("no upcaster from v%d to v%d, and v%d does not accept the v%d payload as it is (Registry.Upcast)", v, v+1, v+1, v), err)
				e.Step = v
				return nil, e
			}
			continue
		}
		out, err := callUpcaster(up, data)
		if err != nil {
			e := newDecodeError(typ, reported, to, fmt.Sprintf("the upcaster from v%d to v%d failed", v, v+1), err)
			e.Step = v
			return nil, e
		}
		if err := next.Validate(out); err != nil {
			e := newDecodeError(typ, reported, to, fmt.Sprintf("the upcaster from v%d to v%d returned a payload v%d rejects", v, v+1, v+1), err)
			e.Step = v
			return nil, e
		}
		data = out
	}
	return data, nil
}

// callUpcaster runs an upcaster; a panic is its error, as a handler's is.
func callUpcaster(up Upcaster, data []byte) (out []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return up(json.RawMessage(data))
}

// DecodeError is a payload a consumer could not read as the version it
// wants: it could not be upcast, validated or decoded into the consumer's
// Go type. It matches boxcar.ErrSchema, so a handler that returns it has
// its event dead-lettered at once with reason "schema".
type DecodeError struct {
	// Type is the event type; Version the schema version the event was
	// published as (0: none); Want the version the consumer reads.
	Type    string
	Version int
	Want    int
	// Step is the version the failing upcast step started from (0: not an
	// upcast step).
	Step int
	// Path is the JSON pointer of the failing location in the payload,
	// when a schema rejected it.
	Path string
	// Reason says what failed.
	Reason string
	// Err is the underlying error: a *ValidationError, an upcaster's or
	// encoding/json's error, ErrUnknownVersion, ...
	Err error
}

func newDecodeError(typ string, version, want int, reason string, err error) *DecodeError {
	e := &DecodeError{Type: typ, Version: version, Want: want, Reason: reason, Err: err}
	var ve *ValidationError
	if errors.As(err, &ve) {
		e.Path = pointerOrRoot(ve.Path)
	}
	return e
}

// Error names the type, the versions, the path and what failed.
func (e *DecodeError) Error() string {
	var b strings.Builder
	b.WriteString("schema: read ")
	b.WriteString(e.Type)
	if e.Version > 0 {
		fmt.Fprintf(&b, " v%d", e.Version)
	} else {
		b.WriteString(" (no version)")
	}
	if e.Want > 0 {
		fmt.Fprintf(&b, " as v%d", e.Want)
	}
	if e.Path != "" {
		b.WriteString(" at ")
		b.WriteString(e.Path)
	}
	if e.Reason != "" {
		b.WriteString(": ")
		b.WriteString(e.Reason)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap gives boxcar.ErrSchema and the underlying error.
func (e *DecodeError) Unwrap() []error {
	if e.Err == nil {
		return []error{boxcar.ErrSchema}
	}
	return []error{boxcar.ErrSchema, e.Err}
}
