package schema

import (
	"errors"
	"fmt"
	"strings"
)

// Errors returned by this package. Test for them with errors.Is; the typed
// errors below wrap them and say more.
var (
	// ErrInvalidSchema: a schema was refused by Parse (malformed JSON, not an
	// object, an unknown draft, a remote $ref, too large or too deep, or the
	// validator would not compile it). Wrapped by *ParseError.
	ErrInvalidSchema = errors.New("schema: invalid schema")
	// ErrInvalidPayload: data is not valid under its schema, or not JSON.
	// Wrapped by *ValidationError.
	ErrInvalidPayload = errors.New("schema: invalid payload")
	// ErrIncompatible: a new version breaks the type's compatibility mode.
	// Wrapped by *IncompatibleError, which holds the changes.
	ErrIncompatible = errors.New("schema: incompatible schema")
	// ErrUnknownType: no schema is registered for the event type.
	ErrUnknownType = errors.New("schema: unknown event type")
	// ErrUnknownVersion: the event type has no such version.
	ErrUnknownVersion = errors.New("schema: unknown schema version")
	// ErrInvalidType: an event type name breaks Boxcar's rule (dot-separated
	// tokens of ASCII letters, digits, '_' and '-', at most MaxTypeLen bytes).
	ErrInvalidType = errors.New("schema: invalid event type")
	// ErrInvalidMode: a compatibility mode name is not one of the Mode
	// constants.
	ErrInvalidMode = errors.New("schema: invalid compatibility mode")
	// ErrInvalidDir: a schema directory breaks the layout LoadDir reads.
	ErrInvalidDir = errors.New("schema: invalid schema directory")
)

// ParseError is a schema refused by Parse.
type ParseError struct {
	// Type and Version name the schema when known (registered or loaded
	// from a directory); File is the file it was read from, if any.
	Type    string
	Version int
	File    string
	// Path is the JSON pointer in the schema where the problem is, "" for
	// the whole document.
	Path string
	// Reason says what is wrong.
	Reason string
	// Err is the underlying error, if any.
	Err error
}

// Error names the schema, the path and what is wrong.
func (e *ParseError) Error() string {
	var b strings.Builder
	b.WriteString("schema: ")
	b.WriteString(identity(e.Type, e.Version, e.File))
	b.WriteString("invalid schema")
	if e.Path != "" {
		b.WriteString(" at ")
		b.WriteString(e.Path)
	}
	b.WriteString(": ")
	b.WriteString(e.Reason)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap gives ErrInvalidSchema and the underlying error.
func (e *ParseError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrInvalidSchema}
	}
	return []error{ErrInvalidSchema, e.Err}
}

// ValidationError is data that its schema rejects.
type ValidationError struct {
	// Type and Version name the schema when known.
	Type    string
	Version int
	// Path is the JSON pointer of the failing location in the data ("" is
	// the whole payload). For a missing required property, or one property
	// the schema does not allow, it is that property's path.
	Path string
	// Message says what is wrong there.
	Message string
	// Others are further failures, each "path: message", at most 9.
	Others []string
}

// Error names the schema, the path and what is wrong there.
func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("schema: ")
	b.WriteString(identity(e.Type, e.Version, ""))
	b.WriteString("invalid payload at ")
	b.WriteString(pointerOrRoot(e.Path))
	b.WriteString(": ")
	b.WriteString(e.Message)
	if len(e.Others) > 0 {
		fmt.Fprintf(&b, " (and %d more: %s)", len(e.Others), strings.Join(e.Others, "; "))
	}
	return b.String()
}

// Unwrap gives ErrInvalidPayload.
func (e *ValidationError) Unwrap() error { return ErrInvalidPayload }

// IncompatibleError is a new version refused because it breaks the type's
// compatibility mode. Nothing was written.
type IncompatibleError struct {
	Type    string
	Version int  // the version it would have become
	Mode    Mode // the type's mode
	Changes []Change
}

// Error names the type, the version and the mode, then lists the changes.
func (e *IncompatibleError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "schema: %s: new version %d is incompatible under %s (%d breaking %s):",
		e.Type, e.Version, e.Mode, len(e.Changes), plural(len(e.Changes), "change", "changes"))
	for _, c := range e.Changes {
		b.WriteString("\n  - ")
		b.WriteString(c.String())
	}
	return b.String()
}

// Unwrap gives ErrIncompatible.
func (e *IncompatibleError) Unwrap() error { return ErrIncompatible }

// identity is "user.signed_up v2 (file): " with the parts that are known.
func identity(typ string, version int, file string) string {
	var parts []string
	if typ != "" {
		parts = append(parts, typ)
	}
	if version > 0 {
		parts = append(parts, fmt.Sprintf("v%d", version))
	}
	if file != "" {
		parts = append(parts, "("+file+")")
	}
	if len(parts) == 0 {
		return ""
	}
	return strings.Join(parts, " ") + ": "
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
