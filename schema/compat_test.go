package schema

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
)

func mustParse(t testing.TB, raw string) *Schema {
	t.Helper()
	s, err := Parse([]byte(raw))
	if err != nil {
		t.Fatalf("Parse(%s): %v", raw, err)
	}
	return s
}

// rulesOf is the sorted, distinct rules of changes.
func rulesOf(changes []Change) []string {
	var out []string
	for _, c := range changes {
		if !slices.Contains(out, c.Rule) {
			out = append(out, c.Rule)
		}
	}
	sort.Strings(out)
	return out
}

func union(a, b []string) []string {
	out := append(append([]string(nil), a...), b...)
	sort.Strings(out)
	return slices.Compact(out)
}

// obj is an object schema with the given properties (JSON text), required
// names and additionalProperties ("" for absent).
func obj(props string, required []string, additional string) string {
	s := `{"type":"object","properties":{` + props + `}`
	if len(required) > 0 {
		s += `,"required":["` + strings.Join(required, `","`) + `"]`
	}
	if additional != "" {
		s += `,"additionalProperties":` + additional
	}
	return s + "}"
}

// compatCase is a change from old to new and the rules each direction must
// report: backward with new as the reader of old, forward the reverse.
type compatCase struct {
	name               string
	old, new           string
	backward, forward  []string
	path, messageParts string // optional: a path and a message fragment one change must have
}

var compatCases = []compatCase{
	{name: "identical", old: `{"type":"string"}`, new: `{"type":"string"}`},
	{name: "key order and whitespace", old: `{"type":"object","properties":{"a":{"type":"string"}}}`, new: `{ "properties": { "a": { "type": "string" } }, "type": "object" }`},
	{name: "annotations ignored", old: `{"type":"string","title":"a","description":"x"}`, new: `{"type":"string","title":"b","examples":["q"],"$comment":"c","default":"d"}`},
	{name: "type changed", old: obj(`"age":{"type":"integer"}`, nil, ""), new: obj(`"age":{"type":"string"}`, nil, ""),
		backward: []string{"type-changed"}, forward: []string{"type-changed"},
		path: "/properties/age", messageParts: "property `age`: type changed from integer to string"},
	{name: "integer widened to number", old: `{"type":"integer"}`, new: `{"type":"number"}`, forward: []string{"type-changed"}},
	{name: "number narrowed to integer", old: `{"type":"number"}`, new: `{"type":"integer"}`, backward: []string{"type-changed"},
		messageParts: "non-integer numbers"},
	{name: "null added to type array", old: `{"type":"string"}`, new: `{"type":["string","null"]}`, forward: []string{"type-changed"}},
	{name: "type added where any was allowed", old: `{}`, new: `{"type":"string"}`, backward: []string{"type-changed"}},
	{name: "minimum raised", old: `{"type":"integer","minimum":0}`, new: `{"type":"integer","minimum":18}`, backward: []string{"minimum-changed"},
		messageParts: "lower bound changed from ≥ 0 to ≥ 18"},
	{name: "minimum added", old: `{"type":"integer"}`, new: `{"type":"integer","minimum":1}`, backward: []string{"minimum-changed"}},
	{name: "maximum lowered", old: `{"type":"number","maximum":150}`, new: `{"type":"number","maximum":120}`, backward: []string{"maximum-changed"}},
	{name: "minimum made exclusive", old: `{"type":"number","minimum":0}`, new: `{"type":"number","exclusiveMinimum":0}`, backward: []string{"minimum-changed"}},
	{name: "draft 4 exclusive maximum", old: `{"$schema":"http://json-schema.org/draft-04/schema#","type":"number","maximum":10}`,
		new: `{"$schema":"http://json-schema.org/draft-04/schema#","type":"number","maximum":10,"exclusiveMaximum":true}`, backward: []string{"maximum-changed"}},
	{name: "equal bounds written differently", old: `{"type":"number","maximum":1}`, new: `{"type":"number","maximum":1.0}`},
	{name: "multipleOf", old: `{"type":"integer","multipleOf":2}`, new: `{"type":"integer","multipleOf":4}`, backward: []string{"multiple-of-changed"}},
	{name: "multipleOf of integers", old: `{"type":"integer"}`, new: `{"type":"integer","multipleOf":0.5}`},
	{name: "multipleOf added to numbers", old: `{"type":"number"}`, new: `{"type":"number","multipleOf":0.5}`, backward: []string{"multiple-of-changed"}},
	{name: "minLength raised", old: `{"type":"string","minLength":1}`, new: `{"type":"string","minLength":3}`, backward: []string{"min-length-changed"}},
	{name: "maxLength added", old: `{"type":"string"}`, new: `{"type":"string","maxLength":3}`, backward: []string{"max-length-changed"}},
	{name: "format added", old: `{"type":"string"}`, new: `{"type":"string","format":"email"}`, backward: []string{"format-changed"}},
	{name: "format changed", old: `{"type":"string","format":"email"}`, new: `{"type":"string","format":"uri"}`,
		backward: []string{"format-changed"}, forward: []string{"format-changed"}},
	{name: "unknown format is an annotation", old: `{"type":"string"}`, new: `{"type":"string","format":"x-currency"}`},
	{name: "pattern added", old: `{"type":"string"}`, new: `{"type":"string","pattern":"^a"}`, backward: []string{"unsupported"},
		messageParts: "cannot prove compatibility of `pattern` at the root"},
	{name: "same pattern", old: `{"type":"string","pattern":"^a"}`, new: `{"type":"string","pattern":"^a","maxLength":9}`, backward: []string{"max-length-changed"}},
	{name: "minItems raised", old: `{"type":"array","minItems":0}`, new: `{"type":"array","minItems":2}`, backward: []string{"min-items-changed"}},
	{name: "maxItems lowered", old: `{"type":"array","maxItems":5}`, new: `{"type":"array","maxItems":4}`, backward: []string{"max-items-changed"}},
	{name: "uniqueItems added", old: `{"type":"array"}`, new: `{"type":"array","uniqueItems":true}`, backward: []string{"unique-items-changed"}},
	{name: "items type changed", old: obj(`"tags":{"type":"array","items":{"type":"integer"}}`, nil, ""), new: obj(`"tags":{"type":"array","items":{"type":"string"}}`, nil, ""),
		backward: []string{"type-changed"}, forward: []string{"type-changed"}, path: "/properties/tags/items", messageParts: "property `tags[]`"},
	{name: "nested property", old: obj(`"address":`+obj(`"zip":{"type":"string"}`, nil, ""), nil, ""), new: obj(`"address":`+obj(`"zip":{"type":"integer"}`, nil, ""), nil, ""),
		backward: []string{"type-changed"}, forward: []string{"type-changed"}, path: "/properties/address/properties/zip", messageParts: "property `address.zip`"},
	{name: "enum value removed", old: `{"enum":["a","b","c"]}`, new: `{"enum":["a","b"]}`, backward: []string{"enum-value-removed"}, forward: nil,
		messageParts: `enum value "c" removed`},
	{name: "enum value added", old: `{"enum":["a","b"]}`, new: `{"enum":["a","b","c"]}`, forward: []string{"enum-value-added"}},
	{name: "enum equal by value", old: `{"enum":[1,2]}`, new: `{"enum":[2.0,1]}`},
	{name: "enum added", old: `{"type":"string"}`, new: `{"type":"string","enum":["a"]}`, backward: []string{"enum-added"}},
	{name: "enum checked against reader keywords", old: `{"enum":["a","bb"]}`, new: `{"type":"string","maxLength":1}`, backward: []string{"value-rejected"}, forward: []string{"enum-removed"}},
	{name: "enum filtered by writer type", old: `{"type":"string","enum":["a",1]}`, new: `{"type":"string","enum":["a"]}`},
	{name: "const changed", old: `{"const":"v1"}`, new: `{"const":"v2"}`, backward: []string{"const-changed"}, forward: []string{"const-changed"}},
	{name: "const added", old: `{"type":"string"}`, new: `{"const":"x"}`, backward: []string{"const-added"}},
	{name: "const within enum", old: `{"const":"a"}`, new: `{"enum":["a","b"]}`, forward: []string{"value-rejected"}},
	{name: "boolean type is finite", old: `{"type":"boolean"}`, new: `{"const":true}`, backward: []string{"value-rejected"}},
	{name: "minProperties raised", old: `{"type":"object"}`, new: `{"type":"object","minProperties":1}`, backward: []string{"min-properties-changed"}},
	{name: "maxProperties lowered", old: `{"type":"object","maxProperties":3}`, new: `{"type":"object","maxProperties":2}`, backward: []string{"max-properties-changed"}},
	{name: "property forbidden", old: obj(`"p":{"type":"string"}`, nil, ""), new: obj(`"p":false`, nil, ""), backward: []string{"schema-false"}},
	{name: "additionalProperties schema changed", old: obj(``, nil, `{"type":"string"}`), new: obj(``, nil, `{"type":"integer"}`),
		backward: []string{"type-changed"}, forward: []string{"type-changed"}, path: "/additionalProperties"},
	{name: "property under a writer's additionalProperties schema", old: obj(``, nil, `{"type":"string"}`),
		new:      obj(`"p":{"type":"string","maxLength":3}`, nil, `{"type":"string"}`),
		backward: []string{"max-length-changed"}, path: "/properties/p"},
	{name: "reader oneOf", old: `{"type":"string"}`, new: `{"oneOf":[{"type":"string"},{"type":"integer"}]}`,
		backward: []string{"unsupported"}, forward: []string{"unsupported"}, messageParts: "cannot prove compatibility of `oneOf` at the root"},
	{name: "writer keyword dropped when the rest proves it", old: `{"type":"string","maxLength":5}`, new: `{"type":"string","maxLength":3,"not":{"const":"x"}}`,
		backward: []string{"max-length-changed", "unsupported"}, forward: nil},
	{name: "writer anyOf within reader type", old: `{"type":"string"}`, new: `{"type":"string","anyOf":[{"maxLength":1},{"minLength":5}]}`, backward: []string{"unsupported"}},
	{name: "nullable via anyOf", old: `{"type":"string"}`, new: `{"anyOf":[{"type":"string"},{"type":"null"}]}`,
		forward: []string{"type-changed"}, messageParts: "type changed from string to null: consumers on v1 reject null, which v2 allows"},
	{name: "nullable ref changed", old: `{"$defs":{"a":{"type":"integer"}},"type":"object","properties":{"x":{"anyOf":[{"type":"null"},{"$ref":"#/$defs/a"}]}}}`,
		new:      `{"$defs":{"a":{"type":"string"}},"type":"object","properties":{"x":{"anyOf":[{"type":"null"},{"$ref":"#/$defs/a"}]}}}`,
		backward: []string{"type-changed"}, forward: []string{"type-changed"}, path: "/properties/x", messageParts: "type changed from integer to [null, string]"},
	{name: "reader allOf split exactly", old: obj(`"a":{"type":"string"}`, nil, ""), new: `{"allOf":[{"type":"object"},{"required":["a"]}]}`,
		backward: []string{"property-made-required"}, forward: []string{"unsupported"}},
	{name: "reader allOf of compatible parts", old: obj(`"a":{"type":"string","maxLength":3}`, []string{"a"}, ""),
		new: `{"allOf":[{"type":"object"},{"properties":{"a":{"type":"string"}}}],"required":["a"]}`, forward: []string{"unsupported"}},
	{name: "writer oneOf of disjoint types", old: `{"type":["string","integer"]}`, new: `{"oneOf":[{"type":"string"},{"type":"integer"}]}`,
		backward: []string{"unsupported"}},
	{name: "reader anyOf with no branch alone", old: `{"type":["string","integer"]}`, new: `{"anyOf":[{"type":"string"},{"type":"integer"}]}`,
		backward: []string{"unsupported"}, messageParts: "no branch alone reads everything"},
	{name: "reader anyOf with one branch", old: `{"type":"string","maxLength":3}`, new: `{"anyOf":[{"type":"string"},{"type":"integer"}]}`,
		forward: []string{"max-length-changed", "type-changed"}},
	{name: "identical subschemas outside the subset", old: obj(`"x":{"oneOf":[{"type":"string"},{"type":"null"}]}`, nil, ""), new: obj(`"x":{"oneOf":[{"type":"string"},{"type":"null"}]}`, nil, "")},
	{name: "array keywords do not matter for strings", old: `{"type":"string"}`, new: `{"type":"string","contains":{"const":1}}`},
	{name: "ref target changed", old: `{"$defs":{"id":{"type":"integer"}},"type":"object","properties":{"id":{"$ref":"#/$defs/id"}}}`,
		new:      `{"$defs":{"id":{"type":"string"}},"type":"object","properties":{"id":{"$ref":"#/$defs/id"}}}`,
		backward: []string{"type-changed"}, forward: []string{"type-changed"}, path: "/properties/id"},
	{name: "ref inlined", old: `{"definitions":{"id":{"type":"integer"}},"type":"object","properties":{"id":{"$ref":"#/definitions/id"}}}`,
		new: obj(`"id":{"type":"integer"}`, nil, "")},
	{name: "recursive schema changed deep down",
		old:      `{"$defs":{"n":{"type":"object","properties":{"v":{"type":"integer"},"next":{"$ref":"#/$defs/n"}}}},"$ref":"#/$defs/n"}`,
		new:      `{"$defs":{"n":{"type":"object","properties":{"v":{"type":"number"},"next":{"$ref":"#/$defs/n"}}}},"$ref":"#/$defs/n"}`,
		forward:  []string{"type-changed"},
		path:     "/properties/v",
		backward: nil},
	{name: "recursive schema unchanged", old: `{"type":"object","properties":{"children":{"type":"array","items":{"$ref":"#"}}}}`,
		new: `{"properties":{"children":{"items":{"$ref":"#"},"type":"array"}},"type":"object"}`},
	{name: "2019 ref with siblings in reader", old: `{"$defs":{"s":{"type":"string"}},"type":"object","properties":{"a":{"$ref":"#/$defs/s"}}}`,
		new:      `{"$defs":{"s":{"type":"string"}},"type":"object","properties":{"a":{"$ref":"#/$defs/s","maxLength":2}}}`,
		backward: []string{"max-length-changed"}},
}

// TestCompatibilityRules checks every rule in every mode: the modes are the
// two directions combined, and with two versions a transitive mode is its
// plain one.
func TestCompatibilityRules(t *testing.T) {
	t.Parallel()
	for _, tc := range compatCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			old, next := mustParse(t, tc.old), mustParse(t, tc.new)
			if got := rulesOf(CheckReader(next, old)); !slices.Equal(got, tc.backward) {
				t.Errorf("CheckReader(new, old) rules = %v, want %v: %s", got, tc.backward, FormatChanges(CheckReader(next, old)))
			}
			want := map[Mode][]string{
				Backward: tc.backward, BackwardTransitive: tc.backward,
				Forward: tc.forward, ForwardTransitive: tc.forward,
				Full: union(tc.backward, tc.forward), FullTransitive: union(tc.backward, tc.forward),
				None: nil,
			}
			for _, mode := range modes {
				changes := Check(mode, next, []*Schema{old})
				if got := rulesOf(changes); !slices.Equal(got, want[mode]) {
					t.Errorf("%s: rules = %v, want %v:\n%s", mode, got, want[mode], FormatChanges(changes))
				}
				for _, c := range changes {
					if c.Version != 1 || c.Message == "" || (c.Direction != DirectionBackward && c.Direction != DirectionForward) {
						t.Errorf("%s: change %+v: want Version 1, a message and a direction", mode, c)
					}
				}
			}
			if tc.path == "" && tc.messageParts == "" {
				return
			}
			all := Check(Full, next, []*Schema{old})
			found := false
			for _, c := range all {
				found = found || ((tc.path == "" || c.Path == tc.path) && strings.Contains(c.Message, tc.messageParts))
			}
			if !found {
				t.Errorf("no change with path %q and message containing %q in:\n%s", tc.path, tc.messageParts, FormatChanges(all))
			}
		})
	}
}

// TestOpenContentModel works through every combination of open or closed
// model, adding or removing a property, optional or required, constrained
// or not, in each direction. The package documentation has the table.
func TestOpenContentModel(t *testing.T) {
	t.Parallel()
	const base = `"a":{"type":"string"}`
	type row struct {
		model       string // "open", "closed", or a transition
		change      string // "add" or "remove"
		required    bool
		constrained bool
		backward    []string
		forward     []string
	}
	rows := []row{
		{"open", "add", false, true, []string{"property-added-to-open-content-model"}, nil},
		{"open", "add", false, false, nil, nil},
		{"open", "add", true, true, []string{"property-added-to-open-content-model", "required-property-added"}, nil},
		{"open", "add", true, false, []string{"required-property-added"}, nil},
		{"open", "remove", false, true, nil, []string{"property-removed-from-open-content-model"}},
		{"open", "remove", false, false, nil, nil},
		{"open", "remove", true, true, nil, []string{"property-removed-from-open-content-model", "required-property-removed"}},
		{"open", "remove", true, false, nil, []string{"required-property-removed"}},
		{"closed", "add", false, true, nil, []string{"property-added-to-closed-content-model"}},
		{"closed", "add", false, false, nil, []string{"property-added-to-closed-content-model"}},
		{"closed", "add", true, true, []string{"required-property-added"}, []string{"property-added-to-closed-content-model"}},
		{"closed", "add", true, false, []string{"required-property-added"}, []string{"property-added-to-closed-content-model"}},
		{"closed", "remove", false, true, []string{"property-removed-from-closed-content-model"}, nil},
		{"closed", "remove", false, false, []string{"property-removed-from-closed-content-model"}, nil},
		{"closed", "remove", true, true, []string{"property-removed-from-closed-content-model"}, []string{"required-property-removed"}},
		{"closed", "remove", true, false, []string{"property-removed-from-closed-content-model"}, []string{"required-property-removed"}},
		{"open→closed", "", false, false, []string{"additional-properties-narrowed"}, nil},
		{"closed→open", "", false, false, nil, []string{"additional-properties-widened"}},
		{"closed→open", "add", false, true, nil, []string{"additional-properties-widened", "property-added-to-closed-content-model"}},
		{"open→closed", "remove", false, true, []string{"additional-properties-narrowed", "property-removed-from-closed-content-model"}, nil},
	}
	for _, r := range rows {
		p := `"p":{}`
		if r.constrained {
			p = `"p":{"type":"integer"}`
		}
		var req []string
		if r.required {
			req = []string{"p"}
		}
		oldAdd, newAdd := "", ""
		switch r.model {
		case "closed":
			oldAdd, newAdd = "false", "false"
		case "open→closed":
			newAdd = "false"
		case "closed→open":
			oldAdd = "false"
		}
		var old, next string
		switch r.change {
		case "add":
			old, next = obj(base, nil, oldAdd), obj(base+","+p, req, newAdd)
		case "remove":
			old, next = obj(base+","+p, req, oldAdd), obj(base, nil, newAdd)
		default:
			old, next = obj(base, nil, oldAdd), obj(base, nil, newAdd)
		}
		name := fmt.Sprintf("%s/%s/required=%v/constrained=%v", r.model, r.change, r.required, r.constrained)
		t.Run(name, func(t *testing.T) {
			o, n := mustParse(t, old), mustParse(t, next)
			for _, d := range []struct {
				mode Mode
				want []string
			}{{Backward, r.backward}, {Forward, r.forward}, {Full, union(r.backward, r.forward)}} {
				changes := Check(d.mode, n, []*Schema{o})
				if got := rulesOf(changes); !slices.Equal(got, d.want) {
					t.Errorf("%s: %s → %s: rules %v, want %v:\n%s", d.mode, old, next, got, d.want, FormatChanges(changes))
				}
			}
		})
	}
}

// The open-content messages carry the fix.
func TestOpenContentModelMessages(t *testing.T) {
	t.Parallel()
	old := mustParse(t, obj(`"a":{"type":"string"}`, nil, ""))
	next := mustParse(t, obj(`"a":{"type":"string"},"email":{"type":"string"}`, nil, ""))
	changes := Check(Backward, next, []*Schema{old})
	if len(changes) != 1 {
		t.Fatalf("changes = %v, want one", changes)
	}
	for _, part := range []string{"property `email` added to an open content model", "v1 may already hold `email` with any value", "additionalProperties:false", "unconstrained ({})"} {
		if !strings.Contains(changes[0].Message, part) {
			t.Errorf("message %q lacks %q", changes[0].Message, part)
		}
	}
	if changes[0].Path != "/properties/email" {
		t.Errorf("path = %q", changes[0].Path)
	}
	// The example message of the issue.
	v1 := mustParse(t, obj(`"email":{"type":"string"}`, []string{"email"}, "false"))
	v2 := mustParse(t, obj(``, nil, "false"))
	got := Check(Forward, v2, []*Schema{v1})
	if len(got) != 1 || got[0].Message != "property `email` removed: consumers on v1 require it" {
		t.Errorf("forward changes = %v", got)
	}
}

// Transitive chains: a chain whose steps each passed the mode in force
// when they were registered, then checked under a stricter mode. (For JSON
// Schema, where compatibility is set inclusion, a chain of proven BACKWARD
// steps is also BACKWARD against every earlier version; the transitive
// modes catch the steps taken under other modes, and the old versions a
// consumer of a replay reads.)
func TestTransitiveChains(t *testing.T) {
	t.Parallel()
	closed := func(props string) string { return obj(props, []string{"a"}, "false") }
	const a, b, c = `"a":{"type":"string"}`, `"b":{"type":"string"}`, `"c":{"type":"string"}`
	tests := []struct {
		name      string
		chain     []string // v1, v2, ...; the last is the new one
		steps     []Mode   // the mode each step (v2, v3, ...) passes
		plain     Mode
		want      []string // rules under the transitive mode
		wantVersn int      // the version the transitive changes name
	}{{
		name:  "backward: v2 dropped b under FORWARD, v3 adds c",
		chain: []string{closed(a + "," + b), closed(a), closed(a + "," + c)},
		steps: []Mode{Forward, Backward}, plain: Backward,
		want: []string{"property-removed-from-closed-content-model"}, wantVersn: 1,
	}, {
		name:  "forward: v2 added b under BACKWARD, v3 narrows b",
		chain: []string{closed(a), closed(a + "," + b), closed(a + `,"b":{"type":"string","maxLength":3}`)},
		steps: []Mode{Backward, Forward}, plain: Forward,
		want: []string{"property-added-to-closed-content-model"}, wantVersn: 1,
	}, {
		name: "full: four versions, v2 widened a number under NONE",
		chain: []string{
			obj(`"n":{"type":"integer"}`, nil, "false"),
			obj(`"n":{"type":"number"}`, nil, "false"),
			obj(`"n":{"type":"number","title":"n"}`, nil, "false"),
			obj(`"n":{"type":"number","description":"n"}`, nil, "false"),
		},
		steps: []Mode{None, Full, Full}, plain: Full,
		want: []string{"type-changed"}, wantVersn: 1,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var chain []*Schema
			for _, raw := range tc.chain {
				chain = append(chain, mustParse(t, raw))
			}
			for i, m := range tc.steps {
				if got := Check(m, chain[i+1], chain[:i+1]); len(got) > 0 {
					t.Fatalf("step to v%d under %s: %s", i+2, m, FormatChanges(got))
				}
			}
			last, prev := chain[len(chain)-1], chain[:len(chain)-1]
			if got := Check(tc.plain, last, prev); len(got) > 0 {
				t.Errorf("%s: %s", tc.plain, FormatChanges(got))
			}
			transitive := tc.plain + "_TRANSITIVE"
			got := Check(transitive, last, prev)
			if rules := rulesOf(got); !slices.Equal(rules, tc.want) {
				t.Fatalf("%s: rules %v, want %v:\n%s", transitive, rules, tc.want, FormatChanges(got))
			}
			for _, c := range got {
				if c.Version != tc.wantVersn || !strings.Contains(c.Message, fmt.Sprintf("v%d", tc.wantVersn)) {
					t.Errorf("%s: change %v does not name v%d", transitive, c, tc.wantVersn)
				}
			}
			if None := Check(None, last, prev); None != nil {
				t.Errorf("NONE: %v", None)
			}
		})
	}
}

func TestParseMode(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		got, err := ParseMode(" " + strings.ToLower(string(m)) + "\n")
		if err != nil || got != m {
			t.Errorf("ParseMode(%s) = %q, %v", m, got, err)
		}
	}
	if _, err := ParseMode("BACKWARDS"); err == nil || !strings.Contains(err.Error(), "BACKWARD_TRANSITIVE") {
		t.Errorf("ParseMode(BACKWARDS) = %v, want an error listing the modes", err)
	}
}

func TestDiffNamesBothDirections(t *testing.T) {
	t.Parallel()
	a := mustParse(t, obj(`"age":{"type":"integer"}`, nil, ""))
	b := mustParse(t, obj(`"age":{"type":"number"}`, []string{"age"}, ""))
	d := Diff(a, b)
	text := FormatChanges(d)
	for _, want := range []string{"BACKWARD against v1: /properties/age [property-made-required]", "FORWARD against v1: /properties/age [type-changed]"} {
		if !strings.Contains(text, want) {
			t.Errorf("Diff lacks %q:\n%s", want, text)
		}
	}
	if got := FormatChanges(Diff(a, a)); got != "no breaking changes\n" {
		t.Errorf("Diff(a, a) = %q", got)
	}
}

// A check past its budget of comparisons stops and says so; a check with
// very many changes lists the first ones and counts the rest.
func TestCheckerBounds(t *testing.T) {
	t.Parallel()
	var props []string
	for i := range 300 {
		props = append(props, fmt.Sprintf(`"p%d":{"type":"object","properties":{"x":{"type":"string"}}}`, i))
	}
	w := mustParse(t, obj(strings.Join(props, ","), nil, "false"))
	r := mustParse(t, obj(``, nil, `{"type":"object","properties":{"x":{"type":"string","maxLength":3}}}`))
	changes := CheckReader(r, w)
	if len(changes) != maxChanges || changes[maxChanges-1].Rule != "more-changes" || !strings.Contains(changes[maxChanges-1].Message, "201 more") {
		t.Errorf("%d changes, last %v; want %d, the last counting 201 more", len(changes), changes[len(changes)-1], maxChanges)
	}
	limited := checkPairBudget(r, w, true, 2, 1, DirectionBackward, 50)
	last := limited[len(limited)-1]
	if last.Rule != "unsupported" || !strings.Contains(last.Message, "more than 50 comparisons") {
		t.Errorf("with a budget of 50 the last change is %v", last)
	}
}

// A definition shared by many properties is compared once per pair of
// definitions: one change, reported once, and no exhausted budget.
func TestCheckerSharedDefinitions(t *testing.T) {
	t.Parallel()
	def := func(last string) string {
		var props []string
		for i := range 50 {
			props = append(props, fmt.Sprintf(`"f%d":{"type":"string"}`, i))
		}
		props = append(props, `"last":{"type":"`+last+`"}`)
		return `{"type":"object","properties":{` + strings.Join(props, ",") + `}}`
	}
	doc := func(last string) string {
		var props []string
		for i := range 2000 {
			props = append(props, fmt.Sprintf(`"p%d":{"$ref":"#/$defs/d"}`, i))
		}
		return `{"$defs":{"d":` + def(last) + `},"type":"object","properties":{` + strings.Join(props, ",") + `}}`
	}
	old, next := mustParse(t, doc("integer")), mustParse(t, doc("string"))
	changes := CheckReader(next, old)
	if len(changes) != 1 || changes[0].Rule != "type-changed" || changes[0].Path != "/properties/p0/properties/last" {
		t.Errorf("changes:\n%s", FormatChanges(changes))
	}
	if c := CheckReader(old, mustParse(t, doc("integer"))); len(c) != 0 {
		t.Errorf("identical documents: %v", c)
	}
}

// A pair the checker met in a failed attempt (a writer's allOf branch
// tried alone, a reader's anyOf branch) is not taken as compatible when
// it is met again: each pair below has an instance the writer allows and
// the reader rejects.
func TestCheckerDoesNotReuseFailedAttempts(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, reader, writer, instance string }{
		{"both wrapped in allOf", `{"allOf":[{"type":"string"}]}`, `{"allOf":[{"type":"integer"}]}`, `1`},
		{"base schema by allOf $ref",
			`{"$defs":{"base":{"type":"object","properties":{"id":{"type":"string"}},"required":["id"]}},"allOf":[{"$ref":"#/$defs/base"}]}`,
			`{"$defs":{"base":{"type":"object","properties":{"id":{"type":"string"}}}},"allOf":[{"$ref":"#/$defs/base"}]}`, `{}`},
		{"anyOf branches sharing a definition",
			`{"$defs":{"amount":{"type":"integer","minimum":0}},"anyOf":[{"type":"object","properties":{"amount":{"$ref":"#/$defs/amount"}},"required":["id"]},{"type":"object","properties":{"amount":{"$ref":"#/$defs/amount"}}}]}`,
			`{"type":"object","properties":{"amount":{"type":"integer"}}}`, `{"amount":-1}`},
		{"writer allOf of one definition twice", `{"type":"string"}`, `{"$defs":{"n":{"type":"integer"}},"allOf":[{"$ref":"#/$defs/n"},{"$ref":"#/$defs/n"}]}`, `1`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, w := mustParse(t, tc.reader), mustParse(t, tc.writer)
			if err := w.Validate([]byte(tc.instance)); err != nil {
				t.Fatalf("the writer rejects %s: %v", tc.instance, err)
			}
			if r.Validate([]byte(tc.instance)) == nil {
				t.Fatalf("the reader accepts %s", tc.instance)
			}
			if c := CheckReader(r, w); len(c) == 0 {
				t.Errorf("CheckReader finds no change, but the reader rejects %s, which the writer allows", tc.instance)
			}
		})
	}
}

// Versions may move from one draft to another, and the same keywords can
// mean different things in each: before 2019-09 a $ref's siblings are
// ignored, and draft 4 has no const. Each pair has an instance the writer
// allows and the reader rejects.
func TestCheckerAcrossDrafts(t *testing.T) {
	t.Parallel()
	const d4, d7 = `"$schema":"http://json-schema.org/draft-04/schema#",`, `"$schema":"http://json-schema.org/draft-07/schema#",`
	tests := []struct{ name, reader, writer, instance string }{
		{"ref siblings ignored by the draft 7 writer, applied by the 2020-12 reader",
			`{"type":"object","properties":{"a":{"$ref":"#/definitions/s","maxLength":2}},"definitions":{"s":{"type":"string"}}}`,
			`{` + d7 + `"type":"object","properties":{"a":{"$ref":"#/definitions/s","maxLength":2}},"definitions":{"s":{"type":"string"}}}`,
			`{"a":"abc"}`},
		{"const ignored by the draft 4 writer", `{"type":"integer"}`, `{` + d4 + `"const":1}`, `"abc"`},
		{"enum and const of a draft 4 writer", `{"const":1}`, `{` + d4 + `"enum":[1,2],"const":1}`, `2`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, w := mustParse(t, tc.reader), mustParse(t, tc.writer)
			if err := w.Validate([]byte(tc.instance)); err != nil {
				t.Fatalf("the writer rejects %s: %v", tc.instance, err)
			}
			if r.Validate([]byte(tc.instance)) == nil {
				t.Fatalf("the reader accepts %s", tc.instance)
			}
			if c := CheckReader(r, w); len(c) == 0 {
				t.Errorf("CheckReader finds no change, but the reader rejects %s, which the writer allows", tc.instance)
			}
		})
	}
}
