package schema

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// Limits of what Parse accepts. They keep a hostile or broken schema from
// costing the registry, the checker or the validator more than a bounded
// amount of memory and time.
const (
	// MaxSchemaBytes is the largest schema document Parse accepts.
	MaxSchemaBytes = 256 << 10
	// MaxSchemaDepth is the deepest nesting of JSON arrays and objects Parse
	// accepts. Each level of nested object properties costs two (the
	// "properties" object and the property's schema), so this allows 32.
	MaxSchemaDepth = 64
)

// Format names a schema language. The registry stores it with every
// version, so that other languages can be added beside JSON Schema: each
// one is an implementation of the unexported dialect interface (parse,
// validate, compare), and a Schema holds the one of its format.
type Format string

// FormatJSONSchema is JSON Schema (drafts 4, 6, 7, 2019-09 and 2020-12; the
// default draft, when "$schema" is absent, is 2020-12). The name is the one
// Confluent's registry uses for its schemaType.
const FormatJSONSchema Format = "JSON"

// dialect is what a schema format provides. Only JSON Schema exists today;
// a protobuf or Avro dialect would parse descriptors and implement
// checkReader with its own rules (buf's WIRE_JSON, Avro's resolution).
type dialect interface {
	format() Format
	validate(s *Schema, data []byte) error
	// checkReader reports what an instance valid under w can be that r
	// rejects. r and w are of the same format.
	checkReader(c *checkContext, r, w *Schema)
}

// Schema is one parsed, compiled schema. It is immutable and safe for
// concurrent use; Parse compiles its validator once.
type Schema struct {
	typ     string
	version int
	*core
}

// core is what copies of a Schema with another identity share.
type core struct {
	dialect     dialect
	canonical   []byte
	fingerprint string
	*document
	draft    draft
	compiled *jsonschema.Schema
	// refusedNow is set on a stored schema that Parse refuses today and an
	// older Boxcar registered (see parseStored): why Parse refuses it. The
	// checker proves nothing about such a schema.
	refusedNow *ParseError

	// The compiler stays to compile subschemas the checker asks about
	// (validating an enum value against the reader's subschema).
	mu       sync.Mutex
	compiler *jsonschema.Compiler
	subs     map[string]*jsonschema.Schema
}

// Type is the event type the schema is registered or loaded for, "" for a
// schema from Parse.
func (s *Schema) Type() string { return s.typ }

// Version is the schema's version, 0 for a schema from Parse.
func (s *Schema) Version() int { return s.version }

// Format is the schema's language.
func (s *Schema) Format() Format { return s.dialect.format() }

// Canonical is the schema as canonical JSON: object keys sorted, no
// whitespace. It is what the registry stores. Do not modify it.
func (s *Schema) Canonical() []byte { return s.canonical }

// Fingerprint is the lowercase hex SHA-256 of Canonical: two documents that
// differ only in key order or whitespace have the same fingerprint.
func (s *Schema) Fingerprint() string { return s.fingerprint }

// Validate checks data against the schema. A payload that is not JSON or
// that the schema rejects gives a *ValidationError naming the failing path;
// so does one holding a number the validator cannot compare safely (more
// than 400 significant digits, an exponent beyond ±400, or a literal longer
// than 1000 bytes), whatever the schema: send such values as strings.
func (s *Schema) Validate(data []byte) error { return s.dialect.validate(s, data) }

// String names the schema: "user.signed_up v2 (sha256:1a2b3c4d)".
func (s *Schema) String() string {
	id := strings.TrimSuffix(identity(s.typ, s.version, ""), ": ")
	if id != "" {
		id += " "
	}
	return id + "(sha256:" + s.fingerprint[:8] + ")"
}

// withIdentity is s named as version v of typ, sharing the compiled core.
func (s *Schema) withIdentity(typ string, v int) *Schema {
	return &Schema{typ: typ, version: v, core: s.core}
}

// draft is a JSON Schema draft, in order of publication.
type draft int

const (
	draft4 draft = iota + 1
	draft6
	draft7
	draft2019
	draft2020
)

var drafts = map[string]draft{
	"json-schema.org/draft-04/schema":      draft4,
	"json-schema.org/draft-06/schema":      draft6,
	"json-schema.org/draft-07/schema":      draft7,
	"json-schema.org/draft/2019-09/schema": draft2019,
	"json-schema.org/draft/2020-12/schema": draft2020,
}

func (d draft) jsonschema() *jsonschema.Draft {
	switch d {
	case draft4:
		return jsonschema.Draft4
	case draft6:
		return jsonschema.Draft6
	case draft7:
		return jsonschema.Draft7
	case draft2019:
		return jsonschema.Draft2019
	}
	return jsonschema.Draft2020
}

// documentURL is where the compiler believes the schema lives. It is never
// fetched: the document is added as a resource and the loader refuses all.
const documentURL = "urn:boxcar:schema"

// refusingLoader is the compiler's URL loader: schemas are self-contained,
// and nothing is ever fetched, from the network or from files.
type refusingLoader struct{}

// Load refuses u.
func (refusingLoader) Load(u string) (any, error) {
	return nil, fmt.Errorf("boxcar never loads schemas from outside the document (%s): inline it under $defs", u)
}

// printer renders the validator's messages.
var printer = message.NewPrinter(language.English)

// Parse parses and compiles a JSON Schema document. It refuses, with a
// *ParseError that says why: malformed JSON (including duplicate keys), a
// document that is not an object, more than MaxSchemaBytes or nesting
// deeper than MaxSchemaDepth, a number beyond the limits of Validate, an
// unknown "$schema" draft, a "$ref" that is
// not a fragment of this document ("#..."), a "$ref" that leads back to
// where it is applied without going into a property or an item (validating
// would never end), a nested "$id" or "$schema", and anything the
// validator will not compile (a bad regular expression, a
// keyword of the wrong type). Nothing is ever fetched.
func Parse(raw []byte) (*Schema, error) { return parse(raw, false) }

// parseStored is Parse for a schema the registry stored. It loads a schema
// that fails only checks Parse gained after older Boxcars registered
// schemas (a number beyond the limits of Validate, a $ref that leads back
// without going into a property or an item), so that a database an older
// Boxcar wrote still opens: the validator treats such a schema as it always
// did, and refusedNow marks it for the checker, which cannot reason about
// it. Anything else Parse refuses, it refuses.
func parseStored(raw []byte) (*Schema, error) { return parse(raw, true) }

// unprovable says, for a schema parseStored loaded that Parse refuses
// today, what the checker cannot reason about and how to get past it; ""
// for every other schema.
func (s *Schema) unprovable() string {
	if s.refusedNow == nil {
		return ""
	}
	what := "a stored version"
	if s.version > 0 && s.typ != "" {
		what = fmt.Sprintf("stored version %d of %s", s.version, s.typ)
	}
	why := s.refusedNow.Reason
	if s.refusedNow.Path != "" {
		why = "at " + s.refusedNow.Path + ": " + why
	}
	return what + " holds a construct the checker cannot reason about (" + why + "): an older Boxcar registered it, and Parse refuses it now." +
		" To register a new version without checking it against that one, set the type's mode to NONE (Registry.SetMode, or the schema directory's mode file) for that registration," +
		" then to BACKWARD, FORWARD or FULL, which check against the latest version only (a transitive mode checks every later version against it too)"
}

func parse(raw []byte, stored bool) (*Schema, error) {
	if len(raw) > MaxSchemaBytes {
		return nil, &ParseError{Reason: fmt.Sprintf("%d bytes, the limit is %d (MaxSchemaBytes)", len(raw), MaxSchemaBytes)}
	}
	root, err := decodeDocument(raw, MaxSchemaDepth)
	if err != nil {
		if errors.Is(err, errTooDeep) {
			return nil, &ParseError{Reason: strings.TrimPrefix(err.Error(), errTooDeep.Error()+": ") + " (MaxSchemaDepth)"}
		}
		return nil, &ParseError{Reason: "malformed JSON", Err: err}
	}
	if root.kind != kindObject {
		return nil, &ParseError{Reason: fmt.Sprintf("the document is a JSON %s: a schema is an object (use {} to accept anything)", kindName(root.kind))}
	}
	var refusedNow *ParseError
	if n := outsizedNode(root); n != nil {
		refusedNow = &ParseError{Path: n.ptr, Reason: fmt.Sprintf("number %s is outside what Boxcar validates (at most %d digits and exponents of ±%d)", shortJSON(n), maxNumberDigits, maxNumberExponent)}
		if !stored {
			return nil, refusedNow
		}
	}
	d := draft2020
	if v := root.get("$schema"); v != nil {
		if v.kind != kindString {
			return nil, &ParseError{Path: "/$schema", Reason: "$schema is not a string"}
		}
		var ok bool
		if d, ok = draftOf(v.s); !ok {
			return nil, &ParseError{Path: "/$schema", Reason: fmt.Sprintf("unknown draft %q: use one of https://json-schema.org/draft/2020-12/schema, https://json-schema.org/draft/2019-09/schema, http://json-schema.org/draft-07/schema#, http://json-schema.org/draft-06/schema#, http://json-schema.org/draft-04/schema#", v.s)}
		}
	}
	doc := &document{root: root, anchors: collectAnchors(root, d)}
	if err := checkReferences(doc, d); err != nil {
		return nil, err
	}
	if err := inPlaceLoop(doc, d); err != nil {
		if !stored {
			return nil, err
		}
		if refusedNow == nil {
			refusedNow = err
		}
	}
	var canon bytes.Buffer
	writeCanonical(&canon, root)
	sum := sha256.Sum256(canon.Bytes())

	decoded, err := jsonschema.UnmarshalJSON(bytes.NewReader(canon.Bytes()))
	if err != nil {
		return nil, &ParseError{Reason: "canonical form does not decode", Err: err}
	}
	c := jsonschema.NewCompiler()
	c.UseLoader(refusingLoader{})
	c.DefaultDraft(d.jsonschema())
	c.AssertFormat()
	if err := c.AddResource(documentURL, decoded); err != nil {
		return nil, &ParseError{Reason: "cannot add the document to the compiler", Err: err}
	}
	compiled, err := c.Compile(documentURL)
	if err != nil {
		return nil, compileError(err)
	}
	return &Schema{core: &core{
		dialect:     jsonSchemaDialect{},
		canonical:   canon.Bytes(),
		fingerprint: hex.EncodeToString(sum[:]),
		document:    doc,
		draft:       d,
		compiled:    compiled,
		refusedNow:  refusedNow,
		compiler:    c,
		subs:        map[string]*jsonschema.Schema{},
	}}, nil
}

// outsizedNode is the first number of the document beyond the limits of
// Validate, or nil.
func outsizedNode(n *node) *node {
	switch n.kind {
	case kindNumber:
		if outsized(n.s) {
			return n
		}
	case kindArray:
		for _, e := range n.arr {
			if o := outsizedNode(e); o != nil {
				return o
			}
		}
	case kindObject:
		for _, k := range n.keys {
			if o := outsizedNode(n.obj[k]); o != nil {
				return o
			}
		}
	}
	return nil
}

// draftOf recognizes a "$schema" URL: http or https, with or without an
// empty fragment.
func draftOf(u string) (draft, bool) {
	u = strings.TrimSuffix(u, "#")
	u, ok := strings.CutPrefix(u, "https://")
	if !ok {
		u, _ = strings.CutPrefix(u, "http://")
	}
	d, ok := drafts[u]
	return d, ok
}

func kindName(k valueKind) string {
	return [...]string{"null", "boolean", "number", "string", "array", "object"}[k]
}

// subschemaKeywords lists, per keyword, how its value holds subschemas.
const (
	holdsSchema      = iota + 1 // the value is a schema
	holdsSchemaMap              // an object of schemas
	holdsSchemaArray            // an array of schemas
	holdsSchemaOrArr            // a schema or an array of schemas (items before 2020-12)
	holdsSchemaOrStr            // dependencies: an object of schemas or arrays of names
)

var subschemaKeywords = map[string]int{
	"additionalProperties": holdsSchema, "additionalItems": holdsSchema, "contains": holdsSchema,
	"propertyNames": holdsSchema, "not": holdsSchema, "if": holdsSchema, "then": holdsSchema,
	"else": holdsSchema, "unevaluatedItems": holdsSchema, "unevaluatedProperties": holdsSchema,
	"contentSchema": holdsSchema,
	"properties":    holdsSchemaMap, "patternProperties": holdsSchemaMap, "$defs": holdsSchemaMap,
	"definitions": holdsSchemaMap, "dependentSchemas": holdsSchemaMap,
	"allOf": holdsSchemaArray, "anyOf": holdsSchemaArray, "oneOf": holdsSchemaArray, "prefixItems": holdsSchemaArray,
	"items":        holdsSchemaOrArr,
	"dependencies": holdsSchemaOrStr,
}

// forEachSubschema calls fn for every subschema directly under n.
func forEachSubschema(n *node, fn func(*node)) { forEachSubschemaOf(n, nil, fn) }

// forEachSubschemaOf is forEachSubschema for the keywords keep keeps (nil:
// all of them).
func forEachSubschemaOf(n *node, keep func(string) bool, fn func(*node)) {
	if n.kind != kindObject {
		return
	}
	for _, k := range n.keys {
		if keep != nil && !keep(k) {
			continue
		}
		v := n.obj[k]
		switch subschemaKeywords[k] {
		case holdsSchema:
			fn(v)
		case holdsSchemaMap, holdsSchemaOrStr:
			if v.kind == kindObject {
				for _, name := range v.keys {
					if e := v.obj[name]; e.kind == kindObject || e.kind == kindBool {
						fn(e)
					}
				}
			}
		case holdsSchemaArray:
			if v.kind == kindArray {
				for _, e := range v.arr {
					fn(e)
				}
			}
		case holdsSchemaOrArr:
			if v.kind == kindArray {
				for _, e := range v.arr {
					fn(e)
				}
			} else {
				fn(v)
			}
		}
	}
}

// checkReferences walks every subschema: each reference must be a fragment
// of this document that resolves, no subschema may change the base URI or
// the draft, and no chain of references may loop without a schema between.
// (inPlaceLoop checks the loops that go through applicators.)
func checkReferences(doc *document, d draft) error {
	root := doc.root
	var walk func(n *node) error
	walk = func(n *node) error {
		if n.kind != kindObject {
			return nil
		}
		if n != root {
			for _, k := range []string{"$id", "id", "$schema"} {
				if k == "id" && d != draft4 {
					continue
				}
				if n.get(k) != nil {
					return &ParseError{Path: n.ptr + "/" + k, Reason: fmt.Sprintf("%s in a subschema: a Boxcar schema is one self-contained document; put shared parts under $defs and use \"$ref\": \"#/$defs/name\"", k)}
				}
			}
		}
		for _, k := range []string{"$ref", "$dynamicRef", "$recursiveRef"} {
			v := n.get(k)
			if v == nil {
				continue
			}
			if v.kind != kindString {
				return &ParseError{Path: n.ptr + "/" + k, Reason: k + " is not a string"}
			}
			if !strings.HasPrefix(v.s, "#") {
				return &ParseError{Path: n.ptr + "/" + k, Reason: fmt.Sprintf("%s %q points outside the document: Boxcar never fetches schemas; inline it under $defs and refer to it as \"#/$defs/name\"", k, v.s)}
			}
			if k == "$ref" {
				target, err := doc.resolve(v.s)
				if err != nil {
					return &ParseError{Path: n.ptr + "/" + k, Reason: err.Error()}
				}
				if err := refChainEnds(doc, target); err != nil {
					return &ParseError{Path: n.ptr + "/" + k, Reason: err.Error()}
				}
			}
		}
		var err error
		forEachSubschema(n, func(sub *node) {
			if err == nil {
				err = walk(sub)
			}
		})
		return err
	}
	return walk(root)
}

// inPlaceKeywords apply their subschemas to the instance itself rather than
// to a part of it (a property, an item).
var inPlaceKeywords = map[string]bool{
	"allOf": true, "anyOf": true, "oneOf": true, "not": true, "if": true, "then": true, "else": true,
	"dependentSchemas": true, "dependencies": true,
}

// inPlaceLoop fails if a "$ref" leads back to a subschema it is applied
// from without going into a part of the instance, as in
// {"anyOf": [{"type": "null"}, {"$ref": "#"}]}: the validator would apply
// the subschema to the same value again and again, and fails such values
// as a reference cycle (or, under "not", passes them); the checker would
// take the loop as proof of compatibility.
func inPlaceLoop(doc *document, d draft) *ParseError {
	const (
		visiting = 1
		done     = 2
	)
	state := map[*node]int{}
	var visit func(n *node) *ParseError
	visit = func(n *node) *ParseError {
		if n.kind != kindObject || state[n] == done {
			return nil
		}
		state[n] = visiting
		ref, isRef := n.str("$ref")
		if isRef {
			target, err := doc.resolve(ref)
			if err != nil {
				return nil // reported by checkReferences
			}
			if state[target] == visiting {
				return &ParseError{Path: n.ptr + "/$ref", Reason: fmt.Sprintf("$ref %q leads back to %s without going into a property or an item, so validating would never end: make the recursion go through properties, items or additionalProperties", ref, pointerOrRoot(target.ptr))}
			}
			if err := visit(target); err != nil {
				return err
			}
		}
		var err *ParseError
		if !isRef || d >= draft2019 { // before 2019-09, a $ref's siblings are ignored
			forEachSubschemaOf(n, func(k string) bool { return inPlaceKeywords[k] }, func(sub *node) {
				if err == nil {
					err = visit(sub)
				}
			})
		}
		state[n] = done
		return err
	}
	var all func(n *node) *ParseError
	all = func(n *node) *ParseError {
		if err := visit(n); err != nil {
			return err
		}
		var err *ParseError
		forEachSubschema(n, func(sub *node) {
			if err == nil {
				err = all(sub)
			}
		})
		return err
	}
	return all(doc.root)
}

// refChainEnds follows "$ref"s from n and fails if they loop without
// reaching a schema that is more than a reference.
func refChainEnds(doc *document, n *node) error {
	seen := map[*node]bool{}
	for {
		ref, ok := n.str("$ref")
		if !ok {
			return nil
		}
		if seen[n] {
			return fmt.Errorf("$ref cycle through %s with no schema in between", pointerOrRoot(n.ptr))
		}
		seen[n] = true
		next, err := doc.resolve(ref)
		if err != nil {
			return err
		}
		n = next
	}
}

// document is a schema document's tree and its anchors.
type document struct {
	root    *node
	anchors map[string]*node // "$anchor" name → its subschema
}

// collectAnchors finds the "$anchor"s of a 2019-09+ document.
func collectAnchors(root *node, d draft) map[string]*node {
	anchors := map[string]*node{}
	if d < draft2019 {
		return anchors
	}
	var walk func(n *node)
	walk = func(n *node) {
		if a, ok := n.str("$anchor"); ok {
			if _, dup := anchors[a]; !dup {
				anchors[a] = n
			}
		}
		forEachSubschema(n, walk)
	}
	walk(root)
	return anchors
}

// resolve resolves a reference within the document: "#", a JSON pointer
// "#/a/b" or an anchor "#name".
func (doc *document) resolve(ref string) (*node, error) {
	frag, ok := strings.CutPrefix(ref, "#")
	if !ok {
		return nil, fmt.Errorf("$ref %q points outside the document", ref)
	}
	if unesc, err := url.PathUnescape(frag); err == nil {
		frag = unesc
	}
	if frag != "" && !strings.HasPrefix(frag, "/") {
		if n, ok := doc.anchors[frag]; ok {
			return n, nil
		}
		return nil, fmt.Errorf("$ref %q is neither a JSON pointer nor an anchor of the document", ref)
	}
	n := doc.root
	if frag == "" {
		return n, nil
	}
	for _, tok := range strings.Split(frag[1:], "/") {
		tok = unescapePointer(tok)
		switch n.kind {
		case kindObject:
			n = n.obj[tok]
		case kindArray:
			i, err := parseIndex(tok)
			if err != nil || i >= len(n.arr) {
				n = nil
			} else {
				n = n.arr[i]
			}
		default:
			n = nil
		}
		if n == nil {
			return nil, fmt.Errorf("$ref %q does not resolve in the document", ref)
		}
	}
	if n.kind != kindObject && n.kind != kindBool {
		return nil, fmt.Errorf("$ref %q points to a JSON %s, not a schema", ref, kindName(n.kind))
	}
	return n, nil
}

func parseIndex(tok string) (int, error) {
	if tok == "" || len(tok) > 9 || (len(tok) > 1 && tok[0] == '0') {
		return 0, errors.New("bad index")
	}
	i := 0
	for _, c := range []byte(tok) {
		if c < '0' || c > '9' {
			return 0, errors.New("bad index")
		}
		i = i*10 + int(c-'0')
	}
	return i, nil
}

// subschema compiles the subschema at ptr of the document, once.
func (c *core) subschema(ptr string) (*jsonschema.Schema, error) {
	if ptr == "" {
		return c.compiled, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.subs[ptr]; ok {
		return s, nil
	}
	frag := (&url.URL{Fragment: ptr}).EscapedFragment()
	s, err := c.compiler.Compile(documentURL + "#" + frag)
	if err != nil {
		return nil, err
	}
	c.subs[ptr] = s
	return s, nil
}

// compileError turns the compiler's error into a ParseError naming the
// first offending place: a keyword the draft's metaschema refuses, a bad
// regular expression, a reference that does not resolve.
func compileError(err error) *ParseError {
	var sve *jsonschema.SchemaValidationError
	if errors.As(err, &sve) {
		err = sve.Err // it has no Unwrap
	}
	var ve *jsonschema.ValidationError
	if errors.As(err, &ve) {
		var leaves []*jsonschema.ValidationError
		collectLeaves(ve, &leaves)
		path, msg := describeFailure(leaves[0])
		if len(leaves) > 1 {
			msg += fmt.Sprintf(" (and %d more)", len(leaves)-1)
		}
		return &ParseError{Path: path, Reason: "not valid under its draft's metaschema: " + msg}
	}
	return &ParseError{Reason: "the validator refuses it", Err: errors.New(strings.ReplaceAll(err.Error(), documentURL, "schema"))}
}
