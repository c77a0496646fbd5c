package schema

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRefuses(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat(`{"items":`, MaxSchemaDepth) + `{}` + strings.Repeat(`}`, MaxSchemaDepth)
	big := `{"enum":["` + strings.Repeat("x", MaxSchemaBytes) + `"]}`
	tests := []struct {
		name, raw string
		path      string // the ParseError's Path
		reason    string // a fragment of the message
	}{
		{"malformed", `{"type":`, "", "malformed JSON"},
		{"trailing data", `{} {}`, "", "data after the top-level value"},
		{"duplicate key", `{"type":"string","type":"integer"}`, "", `duplicate key "type"`},
		{"array", `[]`, "", "the document is a JSON array"},
		{"boolean", `true`, "", "the document is a JSON boolean"},
		{"unknown draft", `{"$schema":"https://example.com/my-draft"}`, "/$schema", `unknown draft "https://example.com/my-draft"`},
		{"remote ref", `{"properties":{"a":{"$ref":"https://example.com/a.json"}}}`, "/properties/a/$ref", "points outside the document"},
		{"relative ref", `{"$ref":"other.json#/x"}`, "/$ref", "points outside the document"},
		{"ref that does not resolve", `{"$ref":"#/$defs/nope"}`, "/$ref", "does not resolve"},
		{"ref to a non-schema", `{"$defs":{"a":{"type":"string"}},"$ref":"#/$defs/a/type"}`, "/$ref", "points to a JSON string"},
		{"ref cycle", `{"$defs":{"a":{"$ref":"#/$defs/b"},"b":{"$ref":"#/$defs/a"}},"$ref":"#/$defs/a"}`, "/$ref", "$ref cycle"},
		{"ref loop through anyOf", `{"$defs":{"x":{"anyOf":[{"$ref":"#/$defs/x"},{"type":"string"}]}},"$ref":"#/$defs/x"}`, "/$defs/x/anyOf/0/$ref", "leads back to /$defs/x without going into a property or an item"},
		{"ref loop through allOf to the root", `{"allOf":[{"$ref":"#"}],"type":"string"}`, "/allOf/0/$ref", "leads back to the root"},
		{"ref loop through not", `{"not":{"$ref":"#"}}`, "/not/$ref", "validating would never end"},
		{"ref loop through a 2019 ref's sibling", `{"$defs":{"a":{"$ref":"#/$defs/b","anyOf":[{"$ref":"#/$defs/a"}]},"b":{"type":"string"}},"$ref":"#/$defs/a"}`, "/$defs/a/anyOf/0/$ref", "leads back to /$defs/a"},
		{"number the validator ignores", `{"type":"integer","maximum":-1e99999999}`, "/maximum", "number -1e99999999 is outside what Boxcar validates"},
		{"number in an enum", `{"enum":[1,` + strings.Repeat("9", 401) + `]}`, "/enum/1", "at most 400 digits"},
		{"nested id", `{"properties":{"a":{"$id":"https://example.com/a"}}}`, "/properties/a/$id", "a Boxcar schema is one self-contained document"},
		{"nested schema", `{"$defs":{"a":{"$schema":"https://json-schema.org/draft/2020-12/schema"}}}`, "/$defs/a/$schema", "$schema in a subschema"},
		{"too deep", deep, "", "nesting deeper than 64"},
		{"too large", big, "", "the limit is 262144 (MaxSchemaBytes)"},
		{"bad keyword type", `{"type":"strin"}`, "/type", "value must be one of"},
		{"bad regexp", `{"pattern":"(?<x"}`, "/pattern", "not valid regex"},
		{"remote metaschema ref through $schema is refused as a draft", `{"$schema":"http://example.com/schema"}`, "/$schema", "unknown draft"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tc.raw))
			if !errors.Is(err, ErrInvalidSchema) {
				t.Fatalf("Parse: %v, want ErrInvalidSchema", err)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse: %T, want *ParseError", err)
			}
			if pe.Path != tc.path || !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("Parse: path %q, error %q; want path %q and %q", pe.Path, err, tc.path, tc.reason)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{
		`{}`,
		`{"$schema":"http://json-schema.org/draft-07/schema#","definitions":{"a":{"type":"string"}},"properties":{"a":{"$ref":"#/definitions/a"}}}`,
		`{"$schema":"http://json-schema.org/draft-04/schema#","type":"number","minimum":0,"exclusiveMinimum":true}`,
		`{"$schema":"https://json-schema.org/draft/2019-09/schema","type":"object"}`,
		`{"$id":"https://example.com/user.json","$defs":{"a":{"type":"string"}},"properties":{"a":{"$ref":"#/$defs/a"}}}`,
		`{"properties":{"a~b/c":{"type":"string"}},"$defs":{"x":{"$ref":"#/properties/a~0b~1c"}}}`,
		`{"type":"object","properties":{"children":{"type":"array","items":{"$ref":"#"}}}}`,
		`{"$defs":{"a":{"$anchor":"here","type":"string"}},"$ref":"#here"}`,
		`{"$defs":{"n":{"anyOf":[{"type":"null"},{"type":"object","properties":{"next":{"$ref":"#/$defs/n"}}}]}},"$ref":"#/$defs/n"}`,
		`{"$defs":{"a":{"$ref":"#/$defs/b"},"b":{"type":"string"}},"allOf":[{"$ref":"#/$defs/a"},{"$ref":"#/$defs/b"}]}`,
		// Before 2019-09 a $ref's siblings are ignored: no loop.
		`{"$schema":"http://json-schema.org/draft-07/schema#","definitions":{"a":{"$ref":"#/definitions/b","anyOf":[{"$ref":"#/definitions/a"}]},"b":{"type":"string"}},"$ref":"#/definitions/a"}`,
	} {
		if _, err := Parse([]byte(raw)); err != nil {
			t.Errorf("Parse(%s): %v", raw, err)
		}
	}
}

func TestCanonicalAndFingerprint(t *testing.T) {
	t.Parallel()
	a := mustParse(t, `{"type":"object","properties":{"b":{"type":"string"},"a":{"type":"integer","description":"caf\u00e9 <&>"}}}`)
	b := mustParse(t, "{\n  \"properties\": {\n    \"a\": {\"description\": \"café <&>\", \"type\": \"integer\"},\n    \"b\": {\"type\": \"string\"}\n  },\n  \"type\": \"object\"\n}\n")
	const want = `{"properties":{"a":{"description":"café <&>","type":"integer"},"b":{"type":"string"}},"type":"object"}`
	if string(a.Canonical()) != want || string(b.Canonical()) != want {
		t.Errorf("canonical forms:\n%s\n%s\nwant\n%s", a.Canonical(), b.Canonical(), want)
	}
	if a.Fingerprint() != b.Fingerprint() || len(a.Fingerprint()) != 64 {
		t.Errorf("fingerprints %s and %s", a.Fingerprint(), b.Fingerprint())
	}
	c := mustParse(t, `{"type":"object","properties":{"b":{"type":"string"},"a":{"type":"number"}}}`)
	if c.Fingerprint() == a.Fingerprint() {
		t.Error("a different schema has the same fingerprint")
	}
	// The canonical form parses to the same schema.
	if again := mustParse(t, string(a.Canonical())); again.Fingerprint() != a.Fingerprint() {
		t.Error("canonical form is not a fixed point")
	}
	if a.Format() != FormatJSONSchema || a.Type() != "" || a.Version() != 0 || !strings.HasPrefix(a.String(), "(sha256:") {
		t.Errorf("identity: %s %q %d %s", a.Format(), a.Type(), a.Version(), a)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	s := mustParse(t, `{"type":"object","required":["email"],"additionalProperties":false,"properties":{
		"email":{"type":"string","format":"email"},
		"age":{"type":"integer","minimum":0},
		"tags":{"type":"array","items":{"type":"string","maxLength":3}},
		"a/b":{"type":"string"}}}`)
	if err := s.Validate([]byte(`{"email":"a@example.com","age":3,"tags":["x"]}`)); err != nil {
		t.Fatalf("valid payload: %v", err)
	}
	tests := []struct {
		data, path, message string
	}{
		{`{"age":1}`, "/email", "missing property 'email'"},
		{`{"email":"nope"}`, "/email", "not valid email"},
		{`{"email":"a@example.com","age":-1}`, "/age", "minimum"},
		{`{"email":"a@example.com","tags":["ok","long"]}`, "/tags/1", "maxLength"},
		{`{"email":"a@example.com","a/b":1}`, "/a~1b", "want string"},
		{`{"email":"a@example.com","x":1}`, "/x", "additional properties 'x' not allowed"},
		{`{"email":"a@example.com","x":1,"y":2}`, "", "additional properties"},
		{`{"email":`, "", "not JSON"},
		{`{"email":"a@example.com"} {}`, "", "not JSON"},
		{`[]`, "", "want object"},
		// Numbers the validator cannot compare: it panicked on the first
		// and took tens of milliseconds for each of the second.
		{`{"email":"a@example.com","age":1e99999999}`, "/age", "number 1e99999999 is outside what Boxcar validates"},
		{`{"email":"a@example.com","tags":["x",-1e999999]}`, "/tags/1", "outside what Boxcar validates"},
		{`{"email":"a@example.com","age":1.` + strings.Repeat("0", 1000) + `}`, "/age", "outside what Boxcar validates"},
		{`{"email":"a@example.com","age":` + strings.Repeat("7", 401) + `}`, "/age", "at most 400 digits"},
	}
	for _, ok := range []string{`{"email":"a@example.com","age":1e400}`, `{"email":"a@example.com","age":` + strings.Repeat("7", 400) + `}`} {
		if err := s.Validate([]byte(ok)); err != nil {
			t.Errorf("Validate of a number within the limits: %v", err)
		}
	}
	for _, tc := range tests {
		err := s.Validate([]byte(tc.data))
		var ve *ValidationError
		if !errors.As(err, &ve) || !errors.Is(err, ErrInvalidPayload) {
			t.Errorf("Validate(%s) = %v, want a *ValidationError", tc.data, err)
			continue
		}
		if ve.Path != tc.path || !strings.Contains(ve.Message, tc.message) {
			t.Errorf("Validate(%s): path %q message %q; want %q and %q", tc.data, ve.Path, ve.Message, tc.path, tc.message)
		}
	}
	named := s.withIdentity("user.signed_up", 2)
	err := named.Validate([]byte(`{}`))
	if !strings.HasPrefix(err.Error(), "schema: user.signed_up v2: invalid payload at /email: ") {
		t.Errorf("error %q does not name the type, version and path", err)
	}
}

func TestDecimal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b string
		cmp  int
	}{
		{"1", "1.0", 0}, {"10", "1e1", 0}, {"0.5", "5e-1", 0}, {"-0", "0", 0},
		{"1", "2", -1}, {"-1", "-2", 1}, {"0.001", "0.01", -1}, {"100", "99.999", 1},
		{"1e999999999999999999999", "1e308", 1}, {"-1e999999999999999999999", "-1", -1}, {"1e-99999999999999999999", "0", 1},
	}
	for _, tc := range tests {
		if got := parseDecimal(tc.a).cmp(parseDecimal(tc.b)); got != tc.cmp {
			t.Errorf("cmp(%s, %s) = %d, want %d", tc.a, tc.b, got, tc.cmp)
		}
	}
	if !parseDecimal("2.0").isInteger() || parseDecimal("2.5").isInteger() || !parseDecimal("1e3").isInteger() {
		t.Error("isInteger")
	}
}

func TestValidateType(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"user.signed_up", "a", "A-1.b_2", strings.Repeat("a", MaxTypeLen)} {
		if err := ValidateType(ok); err != nil {
			t.Errorf("ValidateType(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "user..signed_up", ".a", "a.", "user signed", "user.*", "user.>", "café", strings.Repeat("a", MaxTypeLen+1)} {
		if err := ValidateType(bad); !errors.Is(err, ErrInvalidType) {
			t.Errorf("ValidateType(%q) = %v, want ErrInvalidType", bad, err)
		}
	}
}

// BenchmarkValidate is the publish-time cost for a small object payload:
// go test -run ^$ -bench Validate -benchmem ./schema/
func BenchmarkValidate(b *testing.B) {
	s := mustParse(b, `{"type":"object","additionalProperties":false,"required":["user_id","email"],"properties":{
		"user_id":{"type":"string","minLength":1,"maxLength":64},
		"email":{"type":"string","maxLength":254},
		"plan":{"enum":["free","pro","team"]},
		"age":{"type":"integer","minimum":0,"maximum":150},
		"marketing":{"type":"boolean"}}}`)
	payload := []byte(`{"user_id":"u_01HZX3","email":"ada@example.com","plan":"pro","age":36,"marketing":false}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		if err := s.Validate(payload); err != nil {
			b.Fatal(err)
		}
	}
}
