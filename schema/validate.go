package schema

import (
	"bytes"
	"errors"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
)

// jsonSchemaDialect is the JSON Schema format.
type jsonSchemaDialect struct{}

func (jsonSchemaDialect) format() Format { return FormatJSONSchema }

// maxOtherFailures bounds ValidationError.Others.
const maxOtherFailures = 9

func (jsonSchemaDialect) validate(s *Schema, data []byte) error {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return &ValidationError{Type: s.typ, Version: s.version, Message: "not JSON: " + err.Error()}
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
