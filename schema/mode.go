package schema

import (
	"fmt"
	"strings"
)

// Mode is a compatibility mode, as Confluent's schema registry defines them.
// The mode of an event type decides which new versions Register accepts.
type Mode string

// Compatibility modes. "Reads" below means: every instance valid under the
// writer's schema is valid under the reader's (see CheckReader).
const (
	// Backward: a consumer on the new version reads data written with the
	// previous one. Upgrade consumers first.
	Backward Mode = "BACKWARD"
	// BackwardTransitive: a consumer on the new version reads data written
	// with every previous version. The default: replay and dead-letter
	// redrive hand consumers events of any age.
	BackwardTransitive Mode = "BACKWARD_TRANSITIVE"
	// Forward: a consumer on the previous version reads data written with
	// the new one. Upgrade producers first.
	Forward Mode = "FORWARD"
	// ForwardTransitive: consumers on every previous version read data
	// written with the new one.
	ForwardTransitive Mode = "FORWARD_TRANSITIVE"
	// Full: Backward and Forward against the previous version.
	Full Mode = "FULL"
	// FullTransitive: Backward and Forward against every previous version.
	FullTransitive Mode = "FULL_TRANSITIVE"
	// None: any new version is accepted.
	None Mode = "NONE"
)

// DefaultMode is the mode of an event type that has none set.
const DefaultMode = BackwardTransitive

var modes = []Mode{Backward, BackwardTransitive, Forward, ForwardTransitive, Full, FullTransitive, None}

// ParseMode parses a mode name, ignoring case and surrounding space.
func ParseMode(s string) (Mode, error) {
	u := Mode(strings.ToUpper(strings.TrimSpace(s)))
	for _, m := range modes {
		if u == m {
			return m, nil
		}
	}
	names := make([]string, len(modes))
	for i, m := range modes {
		names[i] = string(m)
	}
	return "", fmt.Errorf("%w: %q: use one of %s", ErrInvalidMode, s, strings.Join(names, ", "))
}

// backward reports whether m checks that the new version reads old data.
func (m Mode) backward() bool {
	return m == Backward || m == BackwardTransitive || m == Full || m == FullTransitive
}

// forward reports whether m checks that old versions read new data.
func (m Mode) forward() bool {
	return m == Forward || m == ForwardTransitive || m == Full || m == FullTransitive
}

// transitive reports whether m checks against every previous version.
func (m Mode) transitive() bool {
	return m == BackwardTransitive || m == ForwardTransitive || m == FullTransitive
}

// Directions of a Change.
const (
	// DirectionBackward: the new version, as a reader, rejects data the
	// previous version allowed.
	DirectionBackward = "BACKWARD"
	// DirectionForward: the previous version, as a reader, rejects data the
	// new version allows.
	DirectionForward = "FORWARD"
)

// Change is one breaking change found by the checker.
type Change struct {
	// Path is a JSON pointer into the schema, following properties, items
	// and additionalProperties from the root; "$ref"s are followed without
	// appearing, so one path names the same place in both versions.
	Path string
	// Rule identifies the kind of change, e.g. "required-property-added",
	// "type-changed", "property-added-to-open-content-model", "unsupported".
	// The package documentation lists them.
	Rule string
	// Message says what changed, who it breaks and, where there is one, how
	// to fix it. It names the versions.
	Message string
	// Version is the previous version the new schema was checked against
	// (0 when CheckReader compared two schemas that have no version).
	Version int
	// Direction is DirectionBackward or DirectionForward ("" from
	// CheckReader).
	Direction string
}

// String renders the change on one line.
func (c Change) String() string {
	var b strings.Builder
	if c.Direction != "" {
		b.WriteString(c.Direction)
		if c.Version > 0 {
			fmt.Fprintf(&b, " against v%d", c.Version)
		}
		b.WriteString(": ")
	}
	fmt.Fprintf(&b, "%s [%s]: %s", pointerOrRoot(c.Path), c.Rule, c.Message)
	return b.String()
}

// Check reports the breaking changes of next against previous (oldest
// first) under mode: for a backward mode, next as a reader of each previous
// version's data; for a forward mode, each previous version as a reader of
// next's data; against the latest previous version only, or every one for
// a transitive mode. None gives nil; so do no previous versions.
//
// Versions are named by Version(), or for schemas that have none by their
// position (previous[i] is v(i+1), next is v(len(previous)+1)).
func Check(mode Mode, next *Schema, previous []*Schema) []Change {
	if mode == None || len(previous) == 0 {
		return nil
	}
	from := len(previous) - 1
	if mode.transitive() {
		from = 0
	}
	nextV := next.version
	if nextV == 0 {
		nextV = len(previous) + 1
	}
	var out []Change
	for i := len(previous) - 1; i >= from; i-- {
		prev := previous[i]
		prevV := prev.version
		if prevV == 0 {
			prevV = i + 1
		}
		if mode.backward() {
			out = append(out, checkPair(next, prev, true, nextV, prevV, DirectionBackward)...)
		}
		if mode.forward() {
			out = append(out, checkPair(prev, next, false, prevV, nextV, DirectionForward)...)
		}
	}
	return out
}

// CheckReader reports why a consumer reading with schema reader might reject
// an instance valid under schema writer; nil means every such instance is
// accepted. This is the primitive the modes are made of. Messages treat the
// reader as the newer schema (a Backward check).
func CheckReader(reader, writer *Schema) []Change {
	return checkPair(reader, writer, true, reader.version, writer.version, "")
}

// Diff lists the breaking changes from a to b in both directions: b as a
// reader of a's data (DirectionBackward), then a as a reader of b's
// (DirectionForward). An empty result means a and b accept the same data,
// as far as the checker can prove. It is what "boxcar schema diff" prints.
func Diff(a, b *Schema) []Change {
	av, bv := a.version, b.version
	if av == 0 && bv == 0 {
		av, bv = 1, 2
	}
	out := checkPair(b, a, true, bv, av, DirectionBackward)
	return append(out, checkPair(a, b, false, av, bv, DirectionForward)...)
}

// FormatChanges renders changes one a line, or "no breaking changes".
func FormatChanges(changes []Change) string {
	if len(changes) == 0 {
		return "no breaking changes\n"
	}
	var b strings.Builder
	for _, c := range changes {
		b.WriteString(c.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// checkPair runs the reader check of two schemas and stamps the changes.
// readerIsNew chooses the wording: "data written with v1 lacks it" when the
// reader is the new version, "consumers on v1 require it" when it is the old.
func checkPair(r, w *Schema, readerIsNew bool, rv, wv int, direction string) []Change {
	return checkPairBudget(r, w, readerIsNew, rv, wv, direction, maxCheckSteps)
}

// maxChanges bounds the changes one check lists.
const maxChanges = 100

func checkPairBudget(r, w *Schema, readerIsNew bool, rv, wv int, direction string, budget int) []Change {
	c := &checkContext{
		r: r, w: w, readerIsNew: readerIsNew,
		rl: label(rv, "the reader"), wl: label(wv, "the writer"),
		memo: map[[2]*node]bool{}, budget: budget,
	}
	if u := unprovablePair(r, w); len(u) > 0 {
		for _, msg := range u {
			c.add("", "unsupported", "cannot prove compatibility: "+msg)
		}
	} else if r.dialect.format() != w.dialect.format() {
		c.add("", "schema-format-changed", fmt.Sprintf("schema format changed from %s to %s", c.oldOf(string(r.Format()), string(w.Format())), c.newOf(string(r.Format()), string(w.Format()))))
	} else {
		r.dialect.checkReader(c, r, w)
	}
	if n := len(c.changes); n > maxChanges {
		c.changes = append(c.changes[:maxChanges-1], Change{Rule: "more-changes",
			Message: fmt.Sprintf("%d more breaking changes not listed", n-maxChanges+1)})
	}
	other := wv
	if !readerIsNew {
		other = rv
	}
	for i := range c.changes {
		c.changes[i].Version = other
		c.changes[i].Direction = direction
	}
	return c.changes
}

// unprovablePair is what the checker cannot reason about in a pair: the
// versions of the two that an older Boxcar stored and Parse refuses now
// (see Schema.unprovable). The checker's reading of such a schema is not
// the validator's (it took a $ref loop as proof, and compared a number the
// validator ignores), so no pair with one is proven, except a schema with
// itself.
func unprovablePair(r, w *Schema) []string {
	if r.core == w.core {
		return nil
	}
	var out []string
	for _, s := range []*Schema{r, w} {
		if msg := s.unprovable(); msg != "" {
			out = append(out, msg)
		}
	}
	return out
}

func label(v int, anon string) string {
	if v == 0 {
		return anon
	}
	return fmt.Sprintf("v%d", v)
}

// checkContext is one reader check in progress.
type checkContext struct {
	r, w        *Schema
	rl, wl      string // labels of the reader's and writer's versions
	readerIsNew bool
	changes     []Change
	memo        map[[2]*node]bool // pairs of subschemas already compared
	memoLog     [][2]*node        // memo's pairs in the order met, for proves
	steps       int
	budget      int // steps allowed
	exhausted   bool
	parts       map[any]*node      // see part
	refs        map[*node][]string // see refsIn
}

func (c *checkContext) add(path, rule, msg string) {
	c.changes = append(c.changes, Change{Path: path, Rule: rule, Message: msg})
}

// oldOf and newOf pick, of a value on the reader's side and one on the
// writer's, the one of the older and of the newer version.
func (c *checkContext) oldOf(rv, wv string) string {
	if c.readerIsNew {
		return wv
	}
	return rv
}

func (c *checkContext) newOf(rv, wv string) string {
	if c.readerIsNew {
		return rv
	}
	return wv
}

// oldLabel and newLabel are the labels of the older and newer versions.
func (c *checkContext) oldLabel() string { return c.oldOf(c.rl, c.wl) }
func (c *checkContext) newLabel() string { return c.newOf(c.rl, c.wl) }

// why explains who breaks on what: "data written with v1 may hold X, which
// v2 rejects" when the reader is new, "consumers on v1 reject X, which v2
// allows" when it is old.
func (c *checkContext) why(what string) string {
	if c.readerIsNew {
		return fmt.Sprintf("data written with %s may hold %s, which %s rejects", c.wl, what, c.rl)
	}
	return fmt.Sprintf("consumers on %s reject %s, which %s allows", c.rl, what, c.wl)
}
