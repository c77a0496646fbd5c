package schema

import "fmt"

// part is the object n with only the keywords keep keeps: the same node
// for the same n and name, so that the memo applies. Its ptr is n's, so a
// value checked against it is checked against all of n, which is stricter
// and what the reader applies anyway.
func (c *checkContext) part(n *node, name string, keep func(string) bool) *node {
	type key struct {
		n    *node
		name string
	}
	if c.parts == nil {
		c.parts = map[any]*node{}
	}
	if p, ok := c.parts[key{n, name}]; ok {
		return p
	}
	p := &node{kind: kindObject, ptr: n.ptr, obj: map[string]*node{}}
	for _, k := range n.keys {
		if keep(k) {
			p.keys = append(p.keys, k)
			p.obj[k] = n.obj[k]
		}
	}
	p.sum = sumOf(p)
	c.parts[key{n, name}] = p
	return p
}

// constraintKeywords lists the keywords of n that constrain instances.
func constraintKeywords(n *node) []string {
	var out []string
	for _, k := range n.keys {
		if supportedKeywords[k] || unsupportedKeywords[k] != 0 || k == "then" || k == "else" {
			out = append(out, k)
		}
	}
	return out
}

// schemaArray is n's keyword k if it is an array of schemas.
func schemaArray(n *node, k string) []*node {
	if v := n.get(k); v != nil && v.kind == kindArray {
		return v.arr
	}
	return nil
}

// splitWriter handles a writer that is only a disjunction. anyOf: every
// instance is valid under some branch, so the reader must read each branch
// (exact). oneOf: reading each branch suffices; a branch it does not read
// may hold only instances another branch also holds, which oneOf excludes,
// so that is unprovable. allOf: reading one branch suffices.
func (c *checkContext) splitWriter(r, w *node, path string) bool {
	keys := constraintKeywords(w)
	if len(keys) != 1 {
		return false
	}
	branches := schemaArray(w, keys[0])
	if branches == nil {
		return false
	}
	switch keys[0] {
	case "anyOf":
		for _, b := range branches {
			c.check(r, b, path)
		}
		return true
	case "oneOf":
		for _, b := range branches {
			if !c.proves(r, b, path) {
				c.unsupported(path, "oneOf", "the reader rejects some instances of a branch, which oneOf may exclude")
				return true
			}
		}
		return true
	case "allOf":
		for _, b := range branches {
			if c.proves(r, b, path) {
				return true
			}
		}
	}
	return false
}

// readerApplicators are the reader keywords that apply a subschema to the
// whole instance, independently of their siblings (unless unevaluated*
// keywords read their annotations).
var readerApplicators = []string{"allOf", "anyOf", "oneOf", "not", "if"}

// splitReader handles a reader that is a conjunction: the writer must
// satisfy each part, and of an allOf each branch (exact). A reader anyOf
// alone is read if one branch reads the writer (sufficient); oneOf, not and
// if are left to be reported as unsupported.
func (c *checkContext) splitReader(r, w *node, path string) bool {
	if r.get("unevaluatedProperties") != nil || r.get("unevaluatedItems") != nil {
		return false
	}
	var present []string
	for _, k := range readerApplicators {
		if r.get(k) != nil {
			present = append(present, k)
		}
	}
	if len(present) == 0 {
		return false
	}
	inGroup := func(k, applicator string) bool {
		return k == applicator || applicator == "if" && (k == "then" || k == "else")
	}
	rest := c.part(r, "-applicators", func(k string) bool {
		for _, a := range present {
			if inGroup(k, a) {
				return false
			}
		}
		return true
	})
	if len(present) > 1 || hasConstraints(rest, false) {
		c.check(rest, w, path)
		for _, a := range present {
			c.check(c.part(r, a, func(k string) bool { return inGroup(k, a) }), w, path)
		}
		return true
	}
	branches := schemaArray(r, present[0])
	if branches == nil {
		return false
	}
	switch present[0] {
	case "allOf":
		for _, b := range branches {
			c.check(b, w, path)
		}
		return true
	case "anyOf":
		// A branch that allows none of the writer's types rejects all of
		// its instances: if one branch remains, the writer must be read by
		// it (exact).
		wTypes := typesOf(w)
		var open []*node
		var union typeSet
		for _, b := range branches {
			t := c.r.typesThrough(b)
			union |= t
			if t&wTypes != 0 {
				open = append(open, b)
			}
		}
		switch len(open) {
		case 0:
			c.add(path, "type-changed", c.prefix(path)+fmt.Sprintf("type changed from %s to %s", c.oldOf(typeNames(union), typeNames(wTypes)), c.newOf(typeNames(union), typeNames(wTypes)))+": "+c.why(typeValues(wTypes)))
			return true
		case 1:
			c.check(open[0], w, path)
			return true
		}
		for _, b := range open {
			if c.proves(b, w, path) {
				return true
			}
		}
		c.unsupported(path, "anyOf", "no branch alone reads everything the writer allows")
		return true
	}
	return false
}

// typesThrough is the types n allows, following its $ref chain: at most
// those, so a type outside it is rejected.
func (c *core) typesThrough(n *node) typeSet {
	for range MaxSchemaDepth {
		if n.kind == kindBool {
			if n.b {
				return tAll
			}
			return 0
		}
		ref, ok := n.str("$ref")
		if !ok {
			break
		}
		t := typesOf(n) // a 2019+ sibling "type" narrows; earlier drafts ignore it
		target, err := c.resolve(ref)
		if err != nil {
			return tAll
		}
		if t != tAll && c.draft >= draft2019 {
			return t & c.typesThrough(target)
		}
		n = target
	}
	return typesOf(n)
}
