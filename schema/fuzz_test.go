package schema

import (
	"strings"
	"testing"
)

// fuzzSeeds are schemas that reach every part of Parse and the checker:
// drafts, references and their cycles, deep nesting, big enums, numbers
// at the edges, keywords outside the subset.
var fuzzSeeds = []string{
	`{}`,
	`{"type":"object","properties":{"a":{"type":"string"}},"required":["a"],"additionalProperties":false}`,
	`{"$defs":{"n":{"type":"object","properties":{"next":{"$ref":"#/$defs/n"}}}},"$ref":"#/$defs/n"}`,
	`{"$defs":{"a":{"$ref":"#/$defs/b"},"b":{"$ref":"#/$defs/a"}},"$ref":"#/$defs/a"}`,
	`{"type":"array","items":{"$ref":"#"}}`,
	`{"enum":[1,2,3,"a",null,true,{"x":[1]},[1,2]]}`,
	`{"const":{"a":1}}`,
	`{"type":"number","minimum":1e999999999,"maximum":-1e-99999999999999999999999,"multipleOf":0.0001}`,
	`{"$schema":"http://json-schema.org/draft-04/schema#","type":"number","maximum":3,"exclusiveMaximum":true}`,
	`{"$schema":"http://json-schema.org/draft-07/schema#","definitions":{"a":{"type":"string"}},"items":[{"$ref":"#/definitions/a"}],"additionalItems":false}`,
	`{"oneOf":[{"type":"string"},{"type":"integer"}],"not":{"const":1},"if":{"type":"string"},"then":{"maxLength":1}}`,
	`{"patternProperties":{"^x":{"type":"string"}},"additionalProperties":false,"prefixItems":[{}],"items":false}`,
	`{"$ref":"#/$defs/a","maxLength":2,"$defs":{"a":{"type":"string","format":"email","pattern":"^a"}}}`,
	`{"type":["string","null"],"minLength":1,"maxLength":0}`,
	`{"properties":{"a~b/c":{"$ref":"#/properties/a~0b~1c"}}}`,
	`{"$defs":{"a":{"$anchor":"x","type":"string"}},"$ref":"#x"}`,
	`{"$ref":"https://example.com/s.json"}`,
	`{"anyOf":[{"type":"null"},{"$ref":"#/$defs/a"}],"$defs":{"a":{"allOf":[{"type":"string"},{"not":{"const":"x"}}]}}}`,
	`{"$defs":{"a":{"allOf":[{"$ref":"#/$defs/a"}]}},"$ref":"#/$defs/a"}`,
	`{"oneOf":[{"type":"string"},{"type":"integer"}],"anyOf":[{"minLength":1},{"minimum":1}],"allOf":[{"type":["string","integer"]}]}`,
	`{"a":1,"a":2}`,
	`[`,
	strings.Repeat(`{"items":`, 70) + `{}` + strings.Repeat(`}`, 70),
	`{"enum":[` + strings.Repeat(`"v",`, 2000) + `"v"]}`,
}

// FuzzParse: Parse never panics or hangs, and what it accepts has a stable
// canonical form, validates its own canonical form as data without
// panicking, and is compatible with itself.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		s, err := Parse(raw)
		if err != nil {
			return
		}
		again, err := Parse(s.Canonical())
		if err != nil {
			t.Fatalf("canonical form does not parse: %v\n%s", err, s.Canonical())
		}
		if again.Fingerprint() != s.Fingerprint() {
			t.Fatalf("canonical form is not a fixed point:\n%s\n%s", s.Canonical(), again.Canonical())
		}
		_ = s.Validate(raw)
		if c := CheckReader(s, again); len(c) != 0 {
			t.Fatalf("a schema is incompatible with itself: %v", c)
		}
	})
}

// FuzzCheckReader: the checker never panics or hangs on any pair of
// schemas Parse accepts, and finds no change between a schema and itself.
func FuzzCheckReader(f *testing.F) {
	for i, a := range fuzzSeeds {
		f.Add([]byte(a), []byte(fuzzSeeds[(i+1)%len(fuzzSeeds)]))
		f.Add([]byte(a), []byte(`{"type":"object"}`))
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		r, err := Parse(a)
		if err != nil {
			return
		}
		w, err := Parse(b)
		if err != nil {
			return
		}
		for _, c := range append(CheckReader(r, w), Check(FullTransitive, r, []*Schema{w, r, w})...) {
			if c.Rule == "" || c.Message == "" {
				t.Fatalf("change without rule or message: %+v", c)
			}
		}
		if c := CheckReader(w, w); len(c) != 0 {
			t.Fatalf("a schema is incompatible with itself: %v", c)
		}
		_ = Diff(r, w)
	})
}
