package schema

import (
	"fmt"
	"sort"
	"strings"
)

// maxCheckSteps bounds the subschema comparisons of one reader check, so
// that no pair of schemas (a fan-out of references, huge property lists)
// can make the checker run long. Past it the check reports "unsupported".
const maxCheckSteps = 50000

// Type bits. "number" is tInteger|tFraction: a reader of numbers reads
// integers, a reader of integers does not read 1.5.
const (
	tNull typeSet = 1 << iota
	tBoolean
	tInteger
	tFraction // numbers that are not integers
	tString
	tArray
	tObject
	tAll = tNull | tBoolean | tInteger | tFraction | tString | tArray | tObject
)

type typeSet uint8

var typeBits = map[string]typeSet{
	"null": tNull, "boolean": tBoolean, "integer": tInteger, "number": tInteger | tFraction,
	"string": tString, "array": tArray, "object": tObject,
}

// unsupportedKeywords are the keywords outside the checker's subset, with
// the types of instance they constrain (tAll: every instance).
var unsupportedKeywords = map[string]typeSet{
	"allOf": tAll, "anyOf": tAll, "oneOf": tAll, "not": tAll, "if": tAll,
	"$dynamicRef": tAll, "$recursiveRef": tAll,
	"patternProperties": tObject, "propertyNames": tObject, "dependentSchemas": tObject,
	"dependentRequired": tObject, "dependencies": tObject, "unevaluatedProperties": tObject,
	"prefixItems": tArray, "additionalItems": tArray, "contains": tArray, "unevaluatedItems": tArray,
}

// supportedKeywords are the keywords the checker compares.
var supportedKeywords = map[string]bool{
	"type": true, "enum": true, "const": true, "$ref": true,
	"properties": true, "required": true, "additionalProperties": true, "items": true,
	"minimum": true, "maximum": true, "exclusiveMinimum": true, "exclusiveMaximum": true, "multipleOf": true,
	"minLength": true, "maxLength": true, "pattern": true, "format": true,
	"minItems": true, "maxItems": true, "uniqueItems": true, "minProperties": true, "maxProperties": true,
}

// trueNode is the schema that accepts everything: an absent
// additionalProperties or items.
var trueNode = &node{kind: kindBool, b: true, ptr: "\x00true"}

func init() { trueNode.sum = sumOf(trueNode) }

func (jsonSchemaDialect) checkReader(c *checkContext, r, w *Schema) {
	c.check(r.root, w.root, "")
	if c.exhausted {
		c.add("", "unsupported", fmt.Sprintf("cannot prove compatibility: the schemas need more than %d comparisons", c.budget))
	}
}

// check reports what an instance valid under writer subschema w can be
// that reader subschema r rejects. path is the structural schema path.
func (c *checkContext) check(r, w *node, path string) {
	if c.exhausted {
		return
	}
	if c.steps++; c.steps > c.budget {
		c.exhausted = true
		return
	}
	// Each pair is compared once, before and after following references;
	// a pair met again is done, or in progress up the stack (a recursive
	// schema), where assuming it compatible is the coinductive reading.
	if c.seen(r, w) || c.same(r, w) {
		return
	}
	r0, w0 := r, w
	w, wDropped, ok := c.derefWriter(w, path)
	if !ok || isFalse(w) {
		return
	}
	for range MaxSchemaDepth { // Parse refuses $ref cycles; this only bounds a chain
		ref, isRef := r.str("$ref")
		if !isRef {
			break
		}
		target, err := c.r.resolve(ref)
		if err != nil {
			c.unsupported(path, "$ref", "the reader's "+err.Error())
			return
		}
		if c.r.draft >= draft2019 && hasConstraints(r, true) {
			// From 2019-09 a $ref applies beside its siblings: the reader
			// needs both, so the writer must satisfy each.
			c.check(target, w0, path)
			c.check(c.siblings(r), w0, path)
			return
		}
		r = target
	}
	if (r != r0 || w != w0) && (c.seen(r, w) || c.same(r, w)) || acceptsAll(r) {
		return
	}
	c.withoutWriterKeywords(wDropped, path, func() { c.compare(r, w, path) })
}

// seen reports whether the pair was met before, and marks it.
func (c *checkContext) seen(r, w *node) bool {
	key := [2]*node{r, w}
	if c.memo[key] {
		return true
	}
	c.memo[key] = true
	c.memoLog = append(c.memoLog, key)
	return false
}

// derefWriter follows the writer's $ref chain. The siblings of a 2019-09+
// $ref are dropped (returned): that widens the writer, so a reader that
// reads the wider writer reads the real one.
func (c *checkContext) derefWriter(w *node, path string) (*node, []string, bool) {
	var dropped []string
	for range MaxSchemaDepth {
		ref, isRef := w.str("$ref")
		if !isRef {
			break
		}
		target, err := c.w.resolve(ref)
		if err != nil {
			c.unsupported(path, "$ref", "the writer's "+err.Error())
			return nil, nil, false
		}
		if c.w.draft >= draft2019 && hasConstraints(w, true) {
			dropped = append(dropped, "$ref")
		}
		w = target
	}
	return w, dropped, true
}

// siblings is n (an object with $ref) without its $ref.
func (c *checkContext) siblings(n *node) *node {
	return c.part(n, "-$ref", func(k string) bool { return k != "$ref" })
}

// withoutWriterKeywords compares r with w minus the writer keywords outside
// the subset. Dropping a writer keyword only widens what the writer
// allows, so success proves compatibility; a failure may be one the
// dropped keyword rules out, so it is reported as unprovable.
func (c *checkContext) withoutWriterKeywords(dropped []string, path string, compare func()) {
	if len(dropped) == 0 {
		compare()
		return
	}
	saved := c.changes
	c.changes = nil
	compare()
	failed := len(c.changes) > 0
	c.changes = saved
	if failed {
		for _, k := range dropped {
			c.unsupported(path, k, "the writer's `"+k+"` may exclude what the reader rejects")
		}
	}
}

func (c *checkContext) unsupported(path, keyword, why string) {
	msg := fmt.Sprintf("cannot prove compatibility of `%s` at %s", keyword, pointerOrRoot(path))
	if why != "" {
		msg += " (" + why + ")"
	}
	c.add(path, "unsupported", msg)
}

// compare is check once both sides are plain subschemas.
func (c *checkContext) compare(r, w *node, path string) {
	if isFalse(r) {
		c.add(path, "schema-false", c.prefix(path)+fmt.Sprintf("%s forbids it (false)", c.rl)+"; "+c.why("any value here"))
		return
	}
	if vals, finite := finiteValues(w, c.w.draft); finite {
		c.checkValues(r, w, vals, path)
		return
	}
	if c.splitWriter(r, w, path) || c.splitReader(r, w, path) {
		return
	}
	wTypes := typesOf(w)
	if outside := keywordsOutside(r, c.r.draft, wTypes); len(outside) > 0 {
		for _, k := range outside {
			c.unsupported(path, k, "")
		}
		return
	}
	dropped := keywordsOutside(w, c.w.draft, tAll)
	for _, k := range dropped {
		if !droppable(w, k) {
			c.unsupported(path, k, "the writer's `"+k+"` changes what its other keywords mean")
			return
		}
	}
	c.withoutWriterKeywords(dropped, path, func() { c.compareSubset(r, w, wTypes, path) })
}

// droppable reports whether ignoring the writer's keyword k widens the
// writer. It does not when a supported keyword's meaning depends on k:
// additionalProperties applies to names patternProperties does not match,
// items (2020-12) to positions after prefixItems.
func droppable(w *node, k string) bool {
	switch k {
	case "patternProperties":
		return isTrue(w.get("additionalProperties"))
	case "prefixItems":
		return isTrue(w.get("items"))
	}
	return true
}

// compareSubset compares the keywords of the subset; the writer allows
// infinitely many values.
func (c *checkContext) compareSubset(r, w *node, wTypes typeSet, path string) {
	if rc := r.get("const"); rc != nil {
		c.add(path, c.addedOrRemoved("const"), c.prefix(path)+fmt.Sprintf("`const` %s %s", shortJSON(rc), c.addedRemovedWord())+"; "+c.why("other values"))
		return
	}
	if re := r.get("enum"); re != nil {
		c.add(path, c.addedOrRemoved("enum"), c.prefix(path)+fmt.Sprintf("`enum` %s %s", shortJSON(re), c.addedRemovedWord())+"; "+c.why("values outside it"))
		return
	}
	rTypes := typesOf(r)
	if missing := wTypes &^ rTypes; missing != 0 {
		c.add(path, "type-changed", c.prefix(path)+fmt.Sprintf("type changed from %s to %s", c.oldOf(typeNames(rTypes), typeNames(wTypes)), c.newOf(typeNames(rTypes), typeNames(wTypes)))+": "+c.why(typeValues(missing)))
	}
	common := wTypes & rTypes
	if common&(tInteger|tFraction) != 0 {
		c.numbers(r, w, path, common&tFraction == 0)
	}
	if common&tString != 0 {
		c.stringRules(r, w, path)
	}
	if common&tArray != 0 {
		c.arrays(r, w, path)
	}
	if common&tObject != 0 {
		c.objects(r, w, path)
	}
}

// addedOrRemoved is the rule for a reader keyword the writer lacks: added
// in the new version, or removed from the old one.
func (c *checkContext) addedOrRemoved(keyword string) string {
	return keyword + "-" + c.addedRemovedWord()
}

func (c *checkContext) addedRemovedWord() string {
	if c.readerIsNew {
		return "added"
	}
	return "removed"
}

// prefix is "property `a.b`: " for a path, "" at the root.
func (c *checkContext) prefix(path string) string {
	if l := describePath(path); l != "" {
		return l + ": "
	}
	return ""
}

// describePath names the place a structural path leads to.
func describePath(path string) string {
	if path == "" {
		return ""
	}
	toks := strings.Split(path[1:], "/")
	var name strings.Builder
	for i := 0; i < len(toks); i++ {
		switch toks[i] {
		case "properties":
			if i+1 < len(toks) {
				if name.Len() > 0 {
					name.WriteByte('.')
				}
				name.WriteString(unescapePointer(toks[i+1]))
				i++
			}
		case "items":
			name.WriteString("[]")
		case "additionalProperties":
			if i == len(toks)-1 {
				if name.Len() == 0 {
					return "additional properties"
				}
				return "additional properties of `" + name.String() + "`"
			}
			if name.Len() > 0 {
				name.WriteByte('.')
			}
			name.WriteByte('*')
		}
	}
	if strings.HasPrefix(name.String(), "[]") {
		return "items `" + name.String() + "`"
	}
	return "property `" + name.String() + "`"
}

// isFalse reports whether n is the schema false.
func isFalse(n *node) bool { return n != nil && n.kind == kindBool && !n.b }

// isTrue reports whether n is absent or accepts everything.
func isTrue(n *node) bool { return n == nil || acceptsAll(n) }

// acceptsAll reports whether the schema n accepts every instance: true, or
// an object of annotations only.
func acceptsAll(n *node) bool {
	if n.kind == kindBool {
		return n.b
	}
	return !hasConstraints(n, false)
}

// hasConstraints reports whether n has keywords that constrain instances
// (besides $ref when exceptRef).
func hasConstraints(n *node, exceptRef bool) bool {
	for _, k := range n.keys {
		if exceptRef && k == "$ref" {
			continue
		}
		if supportedKeywords[k] || unsupportedKeywords[k] != 0 || k == "then" || k == "else" {
			return true
		}
	}
	return false
}

// keywordsOutside lists n's keywords outside the subset that constrain the
// instance types in types (sorted). Keywords without their governing one
// (then without if, additionalItems without an array of items) are inert.
func keywordsOutside(n *node, d draft, types typeSet) []string {
	if n.kind != kindObject {
		return nil
	}
	var out []string
	for _, k := range n.keys {
		t := unsupportedKeywords[k]
		if k == "items" && n.obj[k].kind == kindArray {
			t = tArray
		}
		if k == "additionalItems" {
			if items := n.get("items"); items == nil || items.kind != kindArray || d >= draft2020 {
				t = 0
			}
		}
		if t&types != 0 {
			out = append(out, k)
		}
	}
	return out
}

// typesOf is the instance types n allows by its "type" keyword.
func typesOf(n *node) typeSet {
	t := n.get("type")
	if t == nil {
		return tAll
	}
	switch t.kind {
	case kindString:
		return typeBits[t.s]
	case kindArray:
		var s typeSet
		for _, e := range t.arr {
			if e.kind == kindString {
				s |= typeBits[e.s]
			}
		}
		return s
	}
	return tAll
}

// typeNames renders a type set as in schemas: "integer", "[null, string]".
func typeNames(t typeSet) string {
	if t == tAll {
		return "any type"
	}
	var names []string
	for _, e := range []struct {
		bits typeSet
		name string
	}{{tNull, "null"}, {tBoolean, "boolean"}, {tInteger | tFraction, "number"}, {tInteger, "integer"}, {tString, "string"}, {tArray, "array"}, {tObject, "object"}} {
		if t&e.bits == e.bits {
			names = append(names, e.name)
			t &^= e.bits
		}
	}
	if len(names) == 1 {
		return names[0]
	}
	return "[" + strings.Join(names, ", ") + "]"
}

// typeValues names the values of a type set, for "data may hold ...".
func typeValues(t typeSet) string {
	var names []string
	for _, e := range []struct {
		bits typeSet
		name string
	}{{tNull, "null"}, {tBoolean, "booleans"}, {tInteger | tFraction, "numbers"}, {tInteger, "integers"}, {tFraction, "non-integer numbers"}, {tString, "strings"}, {tArray, "arrays"}, {tObject, "objects"}} {
		if t&e.bits == e.bits {
			names = append(names, e.name)
			t &^= e.bits
		}
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// same reports whether r and w are the same subschema: equal JSON of the
// same draft (a $ref's siblings, const and more mean different things in
// others), and every $ref in it leads to the same subschema in both
// documents.
func (c *checkContext) same(r, w *node) bool {
	if r.sum != w.sum || c.r.draft != c.w.draft {
		return false
	}
	seen := map[[2]*node]bool{}
	var sameRefs func(r, w *node) bool
	sameRefs = func(r, w *node) bool {
		if seen[[2]*node{r, w}] {
			return true
		}
		seen[[2]*node{r, w}] = true
		for _, ref := range c.refsIn(r) {
			rt, err1 := c.r.resolve(ref)
			wt, err2 := c.w.resolve(ref)
			if err1 != nil || err2 != nil || rt.sum != wt.sum || !sameRefs(rt, wt) {
				return false
			}
		}
		return true
	}
	return sameRefs(r, w)
}

// refsIn lists the "$ref" values in the subschemas of n, sorted, once
// each; remembered, as identical subtrees are met again and again.
func (c *checkContext) refsIn(n *node) []string {
	if refs, ok := c.refs[n]; ok {
		return refs
	}
	refs := refsIn(n)
	if c.refs == nil {
		c.refs = map[*node][]string{}
	}
	c.refs[n] = refs
	return refs
}

func refsIn(n *node) []string {
	set := map[string]bool{}
	var walk func(n *node)
	walk = func(n *node) {
		if ref, ok := n.str("$ref"); ok {
			set[ref] = true
		}
		forEachSubschema(n, walk)
	}
	walk(n)
	out := make([]string, 0, len(set))
	for r := range set {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}
