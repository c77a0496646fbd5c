package schema

import (
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// knownFormats are the formats the validator asserts; any other format is
// an annotation it ignores, and so does the checker.
var knownFormats = map[string]bool{
	"json-pointer": true, "relative-json-pointer": true, "uuid": true, "duration": true, "period": true,
	"ipv4": true, "ipv6": true, "hostname": true, "email": true, "date": true, "time": true,
	"date-time": true, "uri": true, "iri": true, "uri-reference": true, "iri-reference": true,
	"uri-template": true, "semver": true,
}

// bound is one side of a numeric range.
type bound struct {
	ok   bool
	val  decimal
	lit  string
	excl bool
}

// lowerBound is n's effective lower bound from minimum and
// exclusiveMinimum (a boolean modifier in draft 4, a number after).
func lowerBound(n *node, d draft) bound { return numBound(n, d, "minimum", "exclusiveMinimum", 1) }

func upperBound(n *node, d draft) bound { return numBound(n, d, "maximum", "exclusiveMaximum", -1) }

// numBound: tighter is +1 when a larger value is a tighter bound.
func numBound(n *node, d draft, inclKw, exclKw string, tighter int) bound {
	var b bound
	if v := n.get(inclKw); v != nil && v.kind == kindNumber {
		b = bound{ok: true, val: parseDecimal(v.s), lit: v.s}
	}
	e := n.get(exclKw)
	switch {
	case e == nil:
	case e.kind == kindBool && d == draft4:
		b.excl = b.ok && e.b
	case e.kind == kindNumber:
		ev := parseDecimal(e.s)
		if !b.ok || ev.cmp(b.val)*tighter >= 0 {
			b = bound{ok: true, val: ev, lit: e.s, excl: true}
		}
	}
	return b
}

// implies reports whether every number within writer bound w is within
// reader bound r (r.ok).
func implies(w, r bound, tighter int) bool {
	if !w.ok {
		return false
	}
	switch w.val.cmp(r.val) * tighter {
	case 1:
		return true
	case 0:
		return !r.excl || w.excl
	}
	return false
}

// String renders a lower (or upper) bound as "≥ 18", "< 5" or "none".
func (b bound) String(lower bool) string {
	if !b.ok {
		return "none"
	}
	op := map[[2]bool]string{{true, false}: "≥ ", {true, true}: "> ", {false, false}: "≤ ", {false, true}: "< "}[[2]bool{lower, b.excl}]
	return op + b.lit
}

func (c *checkContext) numbers(r, w *node, path string, integersOnly bool) {
	for _, side := range []struct {
		lower   bool
		rule    string
		tighter int
	}{{true, "minimum-changed", 1}, {false, "maximum-changed", -1}} {
		var rb, wb bound
		if side.lower {
			rb, wb = lowerBound(r, c.r.draft), lowerBound(w, c.w.draft)
		} else {
			rb, wb = upperBound(r, c.r.draft), upperBound(w, c.w.draft)
		}
		if !rb.ok || implies(wb, rb, side.tighter) {
			continue
		}
		name := "lower bound"
		outside := "below " + rb.lit
		if rb.excl {
			outside = rb.lit + " or less"
		}
		if !side.lower {
			name = "upper bound"
			outside = "above " + rb.lit
			if rb.excl {
				outside = rb.lit + " or more"
			}
		}
		c.add(path, side.rule, c.prefix(path)+c.boundChange(name, rb.String(side.lower), wb.String(side.lower), wb.ok)+": "+c.why("values "+outside))
	}
	rm := r.get("multipleOf")
	if rm == nil || rm.kind != kindNumber {
		return
	}
	if ok, _ := isMultiple("1", rm.s); integersOnly && ok {
		return // every integer is a multiple of 1, 0.5, 0.25 ...
	}
	wm := w.get("multipleOf")
	if wm != nil && wm.kind == kindNumber {
		if ok, known := isMultiple(wm.s, rm.s); ok {
			return
		} else if !known {
			c.unsupported(path, "multipleOf", "numbers too large to divide")
			return
		}
	}
	wLit := "none"
	if wm != nil {
		wLit = wm.s
	}
	c.add(path, "multiple-of-changed", c.prefix(path)+c.boundChange("multipleOf", rm.s, wLit, wm != nil)+": "+c.why("values that are not multiples of "+rm.s))
}

// isMultiple reports whether a is an integer multiple of b; known is false
// for literals too large to divide cheaply.
func isMultiple(a, b string) (ok, known bool) {
	da, db := parseDecimal(a), parseDecimal(b)
	for _, d := range []decimal{da, db} {
		if d.exp > 400 || d.exp < -400 || len(d.digits) > 400 {
			return false, false
		}
	}
	ra, ok1 := new(big.Rat).SetString(a)
	rb, ok2 := new(big.Rat).SetString(b)
	if !ok1 || !ok2 || rb.Sign() == 0 {
		return false, false
	}
	return new(big.Rat).Quo(ra, rb).IsInt(), true
}

// boundChange words a reader-side limit the writer does not keep, from old
// to new: "maximum changed from 150 to 120", "minLength 3 added".
func (c *checkContext) boundChange(name, rv, wv string, writerHas bool) string {
	if !writerHas {
		return fmt.Sprintf("%s %s %s", name, rv, c.addedRemovedWord())
	}
	return fmt.Sprintf("%s changed from %s to %s", name, c.oldOf(rv, wv), c.newOf(rv, wv))
}

// intLimits compares a pair of count keywords (minLength/maxLength, ...):
// the reader's range must contain the writer's.
func (c *checkContext) intLimits(r, w *node, path, minKw, maxKw, fewer, more string) {
	if rv := r.get(minKw); rv != nil && rv.kind == kindNumber {
		wv := w.get(minKw)
		if wv == nil || wv.kind != kindNumber || parseDecimal(wv.s).cmp(parseDecimal(rv.s)) < 0 {
			wLit := "0"
			if wv != nil {
				wLit = wv.s
			}
			c.add(path, kebab(minKw)+"-changed", c.prefix(path)+c.boundChange(minKw, rv.s, wLit, wv != nil)+": "+c.why(fmt.Sprintf(fewer, rv.s)))
		}
	}
	if rv := r.get(maxKw); rv != nil && rv.kind == kindNumber {
		wv := w.get(maxKw)
		if wv == nil || wv.kind != kindNumber || parseDecimal(wv.s).cmp(parseDecimal(rv.s)) > 0 {
			wLit := "none"
			if wv != nil {
				wLit = wv.s
			}
			c.add(path, kebab(maxKw)+"-changed", c.prefix(path)+c.boundChange(maxKw, rv.s, wLit, wv != nil)+": "+c.why(fmt.Sprintf(more, rv.s)))
		}
	}
}

// kebab turns "minLength" into "min-length".
func kebab(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 'A' && r <= 'Z' {
			b.WriteByte('-')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (c *checkContext) stringRules(r, w *node, path string) {
	c.intLimits(r, w, path, "minLength", "maxLength", "strings shorter than %s characters", "strings longer than %s characters")
	if rp, ok := r.str("pattern"); ok {
		if wp, _ := w.str("pattern"); wp != rp {
			why := "added: " + rp
			if wp != "" {
				why = fmt.Sprintf("changed from %s to %s", c.oldOf(rp, wp), c.newOf(rp, wp))
			} else if !c.readerIsNew {
				why = "removed: " + rp
			}
			c.unsupported(path, "pattern", why)
		}
	}
	rf, _ := r.str("format")
	if !knownFormats[rf] {
		return
	}
	if wf, _ := w.str("format"); wf != rf {
		msg := fmt.Sprintf("format `%s` %s", rf, c.addedRemovedWord())
		if wf != "" {
			msg = fmt.Sprintf("format changed from `%s` to `%s`", c.oldOf(rf, wf), c.newOf(rf, wf))
		}
		c.add(path, "format-changed", c.prefix(path)+msg+": "+c.why("strings that are not `"+rf+"`"))
	}
}

func (c *checkContext) arrays(r, w *node, path string) {
	c.intLimits(r, w, path, "minItems", "maxItems", "arrays of fewer than %s items", "arrays of more than %s items")
	if u := r.get("uniqueItems"); u != nil && u.kind == kindBool && u.b {
		if wu := w.get("uniqueItems"); wu == nil || wu.kind != kindBool || !wu.b {
			c.add(path, "unique-items-changed", c.prefix(path)+"uniqueItems "+c.addedRemovedWord()+": "+c.why("arrays with repeated items"))
		}
	}
	ri, wi := r.get("items"), w.get("items")
	if ri == nil || ri.kind == kindArray {
		return // absent, or the array form (reported as outside the subset)
	}
	if wi == nil || wi.kind == kindArray {
		wi = trueNode
	}
	c.check(ri, wi, path+"/items")
}

// propertiesOf is n's "properties" (nil if absent).
func propertiesOf(n *node) map[string]*node {
	if p := n.get("properties"); p != nil && p.kind == kindObject {
		return p.obj
	}
	return nil
}

// requiredOf is n's "required" as a set.
func requiredOf(n *node) map[string]bool {
	out := map[string]bool{}
	if r := n.get("required"); r != nil && r.kind == kindArray {
		for _, e := range r.arr {
			if e.kind == kindString {
				out[e.s] = true
			}
		}
	}
	return out
}

// additionalOf is n's additionalProperties, trueNode when absent (the open
// content model).
func additionalOf(n *node) *node {
	if a := n.get("additionalProperties"); a != nil {
		return a
	}
	return trueNode
}

// objects compares the object keywords: see "The open content model" in
// the package documentation for the reasoning behind each case.
func (c *checkContext) objects(r, w *node, path string) {
	rProps, wProps := propertiesOf(r), propertiesOf(w)
	rAdd, wAdd := additionalOf(r), additionalOf(w)
	names := map[string]bool{}
	for n := range rProps {
		names[n] = true
	}
	for n := range wProps {
		names[n] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, name := range sorted {
		rp, rHas := rProps[name]
		wp, wHas := wProps[name]
		ppath := path + "/properties/" + escapePointer(name)
		pl := describePath(ppath)
		switch {
		case rHas && wHas:
			c.check(rp, wp, ppath)
		case rHas: // the writer's additionalProperties governs the name
			switch {
			case isFalse(wAdd):
			case isTrue(wAdd):
				if c.proves(rp, trueNode, ppath) {
					break
				}
				if c.readerIsNew {
					c.add(ppath, "property-added-to-open-content-model", fmt.Sprintf(
						"%s added to an open content model: %s allows additional properties, so data written with %s may already hold `%s` with any value, which %s rejects; declare it unconstrained ({}) in %s, or register under mode NONE if no stored event holds `%s`; close models with additionalProperties:false from a type's first version so that optional properties can be added later",
						pl, c.wl, c.wl, name, c.rl, c.rl, name))
				} else {
					c.add(ppath, "property-removed-from-open-content-model", fmt.Sprintf(
						"%s removed from an open content model: %s allows additional properties, so data written with %s may hold `%s` with any value, which consumers on %s reject; keep it declared in %s with %s's schema, or close %s's model with additionalProperties:false",
						pl, c.wl, c.wl, name, c.rl, c.wl, c.rl, c.wl))
				}
			default:
				c.check(rp, wAdd, ppath)
			}
		default: // the reader's additionalProperties governs the name
			switch {
			case isFalse(wp):
			case isFalse(rAdd):
				if c.readerIsNew {
					c.add(ppath, "property-removed-from-closed-content-model", fmt.Sprintf(
						"%s removed from a closed content model: %s has additionalProperties:false, so it rejects data written with %s that holds `%s`; keep it declared in %s (as {} if it no longer matters)",
						pl, c.rl, c.wl, name, c.rl))
				} else {
					c.add(ppath, "property-added-to-closed-content-model", fmt.Sprintf(
						"%s added, but %s has additionalProperties:false: consumers on %s reject data that holds `%s`; upgrade consumers first (mode BACKWARD), or publish it as a new event type",
						pl, c.rl, c.rl, name))
				}
			case !isTrue(rAdd):
				c.check(rAdd, wp, ppath)
			}
		}
	}
	rReq, wReq := requiredOf(r), requiredOf(w)
	req := make([]string, 0, len(rReq))
	for n := range rReq {
		req = append(req, n)
	}
	sort.Strings(req)
	for _, name := range req {
		if wReq[name] {
			continue
		}
		ppath := path + "/properties/" + escapePointer(name)
		pl := describePath(ppath)
		_, wHas := wProps[name]
		switch {
		case c.readerIsNew && wHas:
			c.add(ppath, "property-made-required", fmt.Sprintf("%s made required: data written with %s may lack it, which %s rejects; keep it optional", pl, c.wl, c.rl))
		case c.readerIsNew:
			c.add(ppath, "required-property-added", fmt.Sprintf("required %s added: data written with %s lacks it, which %s rejects; add it as optional", pl, c.wl, c.rl))
		case wHas:
			c.add(ppath, "property-made-optional", fmt.Sprintf("%s made optional: consumers on %s require it, and data written with %s may lack it", pl, c.rl, c.wl))
		default:
			c.add(ppath, "required-property-removed", fmt.Sprintf("%s removed: consumers on %s require it", pl, c.rl))
		}
	}
	apath := path + "/additionalProperties"
	switch {
	case isFalse(rAdd) && !isFalse(wAdd):
		what := "an object"
		if path != "" {
			what = describePath(path)
		}
		if c.readerIsNew {
			c.add(apath, "additional-properties-narrowed", fmt.Sprintf("%s closes the content model of %s (additionalProperties:false) that %s left open: data written with %s may hold undeclared properties, which %s rejects; a model open in one version stays open", c.rl, what, c.wl, c.wl, c.rl))
		} else {
			c.add(apath, "additional-properties-widened", fmt.Sprintf("%s opens the content model of %s that %s closed (additionalProperties:false): consumers on %s reject undeclared properties, which %s allows", c.wl, what, c.rl, c.rl, c.wl))
		}
	case !isTrue(rAdd):
		c.check(rAdd, wAdd, apath)
	}
	c.intLimits(r, w, path, "minProperties", "maxProperties", "objects with fewer than %s properties", "objects with more than %s properties")
}

// proves reports whether r reads everything w allows, without reporting.
// The pairs a failed attempt met are forgotten: the memo takes a pair met
// again as compatible, which only a pair whose failure is on record may be
// (an allOf writer tried branch by branch, then as a whole, meets the same
// failing pairs again).
func (c *checkContext) proves(r, w *node, path string) bool {
	saved, marked := c.changes, len(c.memoLog)
	c.changes = nil
	c.check(r, w, path)
	ok := len(c.changes) == 0
	c.changes = saved
	if !ok {
		for _, key := range c.memoLog[marked:] {
			delete(c.memo, key)
		}
		c.memoLog = c.memoLog[:marked]
	}
	return ok
}

// Nodes of the values of the finite types.
var (
	nullValue  = &node{kind: kindNull}
	trueValue  = &node{kind: kindBool, b: true}
	falseValue = &node{kind: kindBool}
)

func init() {
	for _, n := range []*node{nullValue, trueValue, falseValue} {
		n.sum = sumOf(n)
	}
}

// firstLeafMessage is the validator's most specific message in err.
func firstLeafMessage(err error) string {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return err.Error()
	}
	var leaves []*jsonschema.ValidationError
	collectLeaves(ve, &leaves)
	path, msg := describeFailure(leaves[0])
	if path == "" {
		return msg
	}
	return "at " + path + ": " + msg
}

// finiteValues lists the values w allows when they are few: its const
// (draft 4 has none: it is an unknown keyword there), its enum, or the
// values of null and boolean types.
func finiteValues(w *node, d draft) ([]*node, bool) {
	if v := w.get("const"); v != nil && d != draft4 {
		return []*node{v}, true
	}
	if v := w.get("enum"); v != nil && v.kind == kindArray {
		return v.arr, true
	}
	t := typesOf(w)
	if t&^(tNull|tBoolean) != 0 {
		return nil, false
	}
	var out []*node
	if t&tNull != 0 {
		out = append(out, nullValue)
	}
	if t&tBoolean != 0 {
		out = append(out, falseValue, trueValue)
	}
	return out, true
}

// maxListedValues bounds the values a message lists.
const maxListedValues = 5

// checkValues validates each value the writer allows against the reader's
// subschema: exact, whatever keywords the reader uses.
func (c *checkContext) checkValues(r, w *node, vals []*node, path string) {
	rs, err := c.r.subschema(r.ptr)
	if err != nil {
		c.unsupported(path, "enum", "the reader's subschema does not compile alone: "+err.Error())
		return
	}
	c.steps += len(vals) // validating values is work too
	ws, werr := c.w.subschema(w.ptr)
	var rejected []*node
	var reason string
	for _, v := range vals {
		a := v.toAny()
		if werr == nil && ws.Validate(a) != nil {
			continue // the writer's other keywords rule it out
		}
		if err := rs.Validate(a); err != nil {
			if reason == "" {
				reason = firstLeafMessage(err)
			}
			rejected = append(rejected, v)
		}
	}
	if len(rejected) == 0 {
		return
	}
	listed := make([]string, 0, maxListedValues)
	for i, v := range rejected {
		if i == maxListedValues {
			listed = append(listed, fmt.Sprintf("and %d more", len(rejected)-i))
			break
		}
		listed = append(listed, shortJSON(v))
	}
	list := strings.Join(listed, ", ")
	values := plural(len(rejected), "value", "values")
	rEnum, rConst := r.get("enum"), r.get("const")
	var rejectedTypes typeSet
	for _, v := range rejected {
		rejectedTypes |= valueType(v)
	}
	rTypes := typesOf(r)
	switch {
	case rEnum == nil && rConst == nil && w.get("enum") == nil && w.get("const") == nil && rejectedTypes&^rTypes == rejectedTypes:
		// The writer's values come from its type (null, boolean), and the
		// reader's type excludes them.
		wTypes := typesOf(w)
		c.add(path, "type-changed", c.prefix(path)+fmt.Sprintf("type changed from %s to %s", c.oldOf(typeNames(rTypes), typeNames(wTypes)), c.newOf(typeNames(rTypes), typeNames(wTypes)))+": "+c.why(typeValues(rejectedTypes)))
	case rConst != nil && w.get("const") != nil:
		wc := w.get("const")
		c.add(path, "const-changed", c.prefix(path)+fmt.Sprintf("const changed from %s to %s", c.oldOf(shortJSON(rConst), shortJSON(wc)), c.newOf(shortJSON(rConst), shortJSON(wc)))+": "+c.why(shortJSON(wc)))
	case rEnum != nil && rEnum.kind == kindArray && noneIn(rejected, rEnum):
		if c.readerIsNew {
			c.add(path, "enum-value-removed", c.prefix(path)+fmt.Sprintf("enum %s %s removed: data written with %s may hold %s, which %s rejects", values, list, c.wl, plural(len(rejected), "it", "them"), c.rl))
		} else {
			c.add(path, "enum-value-added", c.prefix(path)+fmt.Sprintf("enum %s %s added: consumers on %s reject %s", values, list, c.rl, plural(len(rejected), "it", "them")))
		}
	default:
		c.add(path, "value-rejected", c.prefix(path)+fmt.Sprintf("%s %s allowed by %s %s rejected by %s (%s)", values, list, c.wl, plural(len(rejected), "is", "are"), c.rl, reason))
	}
}

// valueType is the type bit of a JSON value.
func valueType(v *node) typeSet {
	switch v.kind {
	case kindNull:
		return tNull
	case kindBool:
		return tBoolean
	case kindNumber:
		if parseDecimal(v.s).isInteger() {
			return tInteger
		}
		return tFraction
	case kindString:
		return tString
	case kindArray:
		return tArray
	}
	return tObject
}

// noneIn reports whether no value is among enum's.
func noneIn(vals []*node, enum *node) bool {
	in := map[[16]byte]bool{}
	for _, e := range enum.arr {
		in[e.sum] = true
	}
	for _, v := range vals {
		if in[v.sum] {
			return false
		}
	}
	return true
}
