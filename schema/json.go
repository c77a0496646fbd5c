package schema

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// valueKind is the JSON type of a node.
type valueKind uint8

const (
	kindNull valueKind = iota
	kindBool
	kindNumber
	kindString
	kindArray
	kindObject
)

// node is one JSON value of a schema document, decoded by decodeDocument.
// Nodes are immutable once built, so a *Schema can be shared by goroutines.
type node struct {
	kind valueKind
	b    bool
	s    string // a string's value, or a number's literal as written
	arr  []*node
	keys []string // object keys, sorted
	obj  map[string]*node
	ptr  string // JSON pointer of this value from the document root ("" is the root)
	// sum identifies the value: equal sums mean equal JSON values (numbers
	// compared by value, so 1 and 1.0 are equal; object keys in any order).
	sum [16]byte
}

// get returns the member key of an object node, or nil.
func (n *node) get(key string) *node {
	if n == nil || n.kind != kindObject {
		return nil
	}
	return n.obj[key]
}

// str returns the member key of an object node if it is a string.
func (n *node) str(key string) (string, bool) {
	v := n.get(key)
	if v == nil || v.kind != kindString {
		return "", false
	}
	return v.s, true
}

// toAny converts the node to the form the validator takes (json.Number for
// numbers).
func (n *node) toAny() any {
	switch n.kind {
	case kindNull:
		return nil
	case kindBool:
		return n.b
	case kindNumber:
		return json.Number(n.s)
	case kindString:
		return n.s
	case kindArray:
		out := make([]any, len(n.arr))
		for i, e := range n.arr {
			out[i] = e.toAny()
		}
		return out
	default:
		out := make(map[string]any, len(n.obj))
		for k, v := range n.obj {
			out[k] = v.toAny()
		}
		return out
	}
}

// errTooDeep is returned by decodeDocument past maxDepth.
var errTooDeep = errors.New("too deep")

// decodeDocument decodes one JSON value, refusing trailing data, duplicate
// object keys and nesting deeper than maxDepth, and computes every node's
// pointer and sum.
func decodeDocument(raw []byte, maxDepth int) (*node, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	root, err := decodeValue(d, "", 0, maxDepth)
	if err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, fmt.Errorf("data after the top-level value at byte %d", d.InputOffset())
	}
	return root, nil
}

func decodeValue(d *json.Decoder, ptr string, depth, maxDepth int) (*node, error) {
	tok, err := d.Token()
	if err != nil {
		if err == io.EOF {
			return nil, errors.New("unexpected end of JSON")
		}
		return nil, err
	}
	n := &node{ptr: ptr}
	switch t := tok.(type) {
	case nil:
		n.kind = kindNull
	case bool:
		n.kind, n.b = kindBool, t
	case json.Number:
		n.kind, n.s = kindNumber, string(t)
	case string:
		n.kind, n.s = kindString, t
	case json.Delim:
		if depth >= maxDepth {
			return nil, fmt.Errorf("%w: nesting deeper than %d at %s", errTooDeep, maxDepth, pointerOrRoot(ptr))
		}
		if t == '[' {
			n.kind = kindArray
			for d.More() {
				e, err := decodeValue(d, ptr+"/"+strconv.Itoa(len(n.arr)), depth+1, maxDepth)
				if err != nil {
					return nil, err
				}
				n.arr = append(n.arr, e)
			}
		} else {
			n.kind = kindObject
			n.obj = map[string]*node{}
			for d.More() {
				kt, err := d.Token()
				if err != nil {
					return nil, err
				}
				key := kt.(string) // the decoder only gives strings here
				if _, dup := n.obj[key]; dup {
					return nil, fmt.Errorf("duplicate key %q at %s", key, pointerOrRoot(ptr))
				}
				v, err := decodeValue(d, ptr+"/"+escapePointer(key), depth+1, maxDepth)
				if err != nil {
					return nil, err
				}
				n.obj[key] = v
				n.keys = append(n.keys, key)
			}
			sort.Strings(n.keys)
		}
		if _, err := d.Token(); err != nil { // the closing delimiter
			return nil, err
		}
	}
	n.sum = sumOf(n)
	return n, nil
}

// sumOf hashes a node from its children's sums: linear in the document.
func sumOf(n *node) [16]byte {
	h := sha256.New()
	var lenBuf [8]byte
	writeStr := func(s string) {
		binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(s)))
		h.Write(lenBuf[:])
		h.Write([]byte(s))
	}
	h.Write([]byte{byte(n.kind)})
	switch n.kind {
	case kindBool:
		if n.b {
			h.Write([]byte{1})
		} else {
			h.Write([]byte{0})
		}
	case kindNumber:
		writeStr(parseDecimal(n.s).key())
	case kindString:
		writeStr(n.s)
	case kindArray:
		for _, e := range n.arr {
			h.Write(e.sum[:])
		}
	case kindObject:
		for _, k := range n.keys {
			writeStr(k)
			h.Write(n.obj[k].sum[:])
		}
	}
	var out [16]byte
	copy(out[:], h.Sum(nil))
	return out
}

// writeCanonical writes n as canonical JSON: object keys sorted, no
// whitespace, strings escaped minimally, numbers as written.
func writeCanonical(b *bytes.Buffer, n *node) {
	switch n.kind {
	case kindNull:
		b.WriteString("null")
	case kindBool:
		if n.b {
			b.WriteString("true")
		} else {
			b.WriteString("false")
		}
	case kindNumber:
		b.WriteString(n.s)
	case kindString:
		writeJSONString(b, n.s)
	case kindArray:
		b.WriteByte('[')
		for i, e := range n.arr {
			if i > 0 {
				b.WriteByte(',')
			}
			writeCanonical(b, e)
		}
		b.WriteByte(']')
	case kindObject:
		b.WriteByte('{')
		for i, k := range n.keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONString(b, k)
			b.WriteByte(':')
			writeCanonical(b, n.obj[k])
		}
		b.WriteByte('}')
	}
}

// writeJSONString escapes only what JSON requires: the quote, the backslash
// and control characters. The decoder has already replaced invalid UTF-8.
func writeJSONString(b *bytes.Buffer, s string) {
	const hex = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x80 {
			r, size := utf8.DecodeRuneInString(s[i:])
			b.WriteRune(r)
			i += size
			continue
		}
		switch {
		case c == '"':
			b.WriteString(`\"`)
		case c == '\\':
			b.WriteString(`\\`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\t':
			b.WriteString(`\t`)
		case c < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		default:
			b.WriteByte(c)
		}
		i++
	}
	b.WriteByte('"')
}

// canonicalString is the canonical JSON of n, for messages.
func canonicalString(n *node) string {
	var b bytes.Buffer
	writeCanonical(&b, n)
	return b.String()
}

// shortJSON is the canonical JSON of n cut to a length fit for a message.
func shortJSON(n *node) string {
	s := canonicalString(n)
	if len(s) > 60 {
		cut := 57
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

// escapePointer escapes one JSON pointer token (RFC 6901).
func escapePointer(tok string) string {
	if !strings.ContainsAny(tok, "~/") {
		return tok
	}
	return strings.ReplaceAll(strings.ReplaceAll(tok, "~", "~0"), "/", "~1")
}

// unescapePointer reverses escapePointer.
func unescapePointer(tok string) string {
	if !strings.Contains(tok, "~") {
		return tok
	}
	return strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
}

func pointerOrRoot(ptr string) string {
	if ptr == "" {
		return "the root"
	}
	return ptr
}

// decimal is a JSON number as sign, significant digits and a power of ten,
// so numbers of any size compare exactly without big allocations
// (big.Rat.SetString("1e999999") takes milliseconds and megabytes).
type decimal struct {
	neg    bool
	digits string // no leading or trailing zeros; "" is zero
	exp    int64  // value = digits × 10^exp
}

// parseDecimal parses a JSON number literal. It never fails on what the
// JSON decoder accepted; an exponent beyond int64 is clamped.
func parseDecimal(lit string) decimal {
	var d decimal
	s := lit
	if strings.HasPrefix(s, "-") {
		d.neg, s = true, s[1:]
	}
	mant, expPart, hasExp := strings.Cut(strings.ToLower(s), "e")
	var exp int64
	if hasExp {
		e, err := strconv.ParseInt(strings.TrimPrefix(expPart, "+"), 10, 64)
		if err != nil { // out of range: clamp, the sign still tells
			e = 1 << 40
			if strings.HasPrefix(expPart, "-") {
				e = -e
			}
		}
		exp = e
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	digits := strings.TrimLeft(intPart+frac, "0")
	exp -= int64(len(frac))
	trimmed := strings.TrimRight(digits, "0")
	exp += int64(len(digits) - len(trimmed))
	d.digits, d.exp = trimmed, exp
	if d.digits == "" {
		d.neg, d.exp = false, 0
	}
	return d
}

// key is a canonical text of the value: equal numbers give equal keys.
func (d decimal) key() string {
	if d.digits == "" {
		return "0"
	}
	sign := ""
	if d.neg {
		sign = "-"
	}
	return sign + d.digits + "e" + strconv.FormatInt(d.exp, 10)
}

// cmp compares two decimals: -1, 0 or +1.
func (d decimal) cmp(o decimal) int {
	ds, os := d.sign(), o.sign()
	if ds != os {
		if ds < os {
			return -1
		}
		return 1
	}
	if ds == 0 {
		return 0
	}
	m := d.cmpAbs(o)
	if ds < 0 {
		return -m
	}
	return m
}

func (d decimal) sign() int {
	switch {
	case d.digits == "":
		return 0
	case d.neg:
		return -1
	}
	return 1
}

func (d decimal) cmpAbs(o decimal) int {
	// The magnitude is 0.digits × 10^(exp+len(digits)).
	da, oa := d.exp+int64(len(d.digits)), o.exp+int64(len(o.digits))
	if da != oa {
		if da < oa {
			return -1
		}
		return 1
	}
	a, b := d.digits, o.digits
	for len(a) < len(b) {
		a += "0"
	}
	for len(b) < len(a) {
		b += "0"
	}
	return strings.Compare(a, b)
}

// isInteger reports whether the value has no fractional part.
func (d decimal) isInteger() bool { return d.digits == "" || d.exp >= 0 }
