package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
)

// jsonSchemaDialect is the JSON Schema format.
type jsonSchemaDialect struct{}

func (jsonSchemaDialect) format() Format { return FormatJSONSchema }

// maxOtherFailures bounds ValidationError.Others.
const maxOtherFailures = 9

// Limits of the numbers a payload or a schema may hold. The validator
// compares numbers as exact fractions: past these it panics (1e99999999
// against a minimum), ignores the keyword (a maximum of -1e99999999) or
// takes a long time (tens of milliseconds for each 1e999999), so a small
// hostile payload could crash or stall a publisher. float64 reaches 1e308.
const (
	maxNumberLen      = 1000 // bytes of the literal
	maxNumberDigits   = 400  // significant digits
	maxNumberExponent = 400  // |e| of digits × 10^e
)

func (jsonSchemaDialect) validate(s *Schema, data []byte) error {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return &ValidationError{Type: s.typ, Version: s.version, Message: "not JSON: " + err.Error()}
	}
	if path, lit, ok := outsizedNumber(v, ""); ok {
		if len(lit) > 40 {
			lit = lit[:37] + "..."
		}
		return &ValidationError{Type: s.typ, Version: s.version, Path: path, Message: fmt.Sprintf(
			"number %s is outside what Boxcar validates (at most %d digits and exponents of ±%d; send it as a string)", lit, maxNumberDigits, maxNumberExponent)}
	}
	err = s.compiled.Validate(v)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return &ValidationError{Type: s.typ, Version: s.version, Message: err.Error()}
	}
	var leaves []*jsonschema.ValidationError
	collectLeaves(ve, &leaves)
	out := &ValidationError{Type: s.typ, Version: s.version}
	for i, l := range leaves {
		path, msg := describeFailure(l)
		if i == 0 {
			out.Path, out.Message = path, msg
			continue
		}
		if len(out.Others) == maxOtherFailures {
			break
		}
		out.Others = append(out.Others, pointerOrRoot(path)+": "+msg)
	}
	return out
}

// collectLeaves gathers the failures that have no causes: the specific ones,
// in the validator's order (schema order, depth first).
func collectLeaves(e *jsonschema.ValidationError, out *[]*jsonschema.ValidationError) {
	if len(e.Causes) == 0 {
		*out = append(*out, e)
		return
	}
	for _, c := range e.Causes {
		collectLeaves(c, out)
	}
}

func describeFailure(e *jsonschema.ValidationError) (path, msg string) {
	var b strings.Builder
	for _, tok := range e.InstanceLocation {
		b.WriteByte('/')
		b.WriteString(escapePointer(tok))
	}
	path = b.String()
	switch k := e.ErrorKind.(type) {
	case *kind.Required:
		if len(k.Missing) == 1 {
			path += "/" + escapePointer(k.Missing[0])
		}
	case *kind.AdditionalProperties:
		if len(k.Properties) == 1 {
			path += "/" + escapePointer(k.Properties[0])
		}
	}
	return path, e.ErrorKind.LocalizedString(printer)
}

// outsizedNumber finds a number in v, a decoded payload, beyond the
// limits above: its JSON pointer and literal.
func outsizedNumber(v any, path string) (string, string, bool) {
	switch v := v.(type) {
	case json.Number:
		if outsized(string(v)) {
			return path, string(v), true
		}
	case []any:
		for i, e := range v {
			if p, lit, ok := outsizedNumber(e, path+"/"+strconv.Itoa(i)); ok {
				return p, lit, true
			}
		}
	case map[string]any:
		for k, e := range v {
			if p, lit, ok := outsizedNumber(e, path+"/"+escapePointer(k)); ok {
				return p, lit, true
			}
		}
	}
	return "", "", false
}

// outsized reports whether the number literal lit is beyond the limits.
func outsized(lit string) bool {
	if len(lit) > maxNumberLen {
		return true
	}
	if len(lit) <= maxNumberDigits && !strings.ContainsAny(lit, "eE") {
		return false // its digits and exponent are bounded by its length
	}
	d := parseDecimal(lit)
	return len(d.digits) > maxNumberDigits || d.exp > maxNumberExponent || d.exp < -maxNumberExponent
}
