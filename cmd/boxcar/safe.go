package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// What the tool prints comes from events, handlers' errors and a server:
// any of it may be hostile. Nothing reaches the terminal as it is but
// printable characters: control characters (ANSI escape sequences, \r,
// C1 controls) and invisible format characters (bidi overrides) are
// escaped, and binary payloads are shown as a hex dump.

// printable reports whether r can go to a terminal as it is.
func printable(r rune) bool { return unicode.IsPrint(r) }

// cell returns s for one line of a table or a field: as it is if every
// character is printable, else quoted with Go's escapes ("\x1b[2J") so
// that it cannot be mistaken for plain text.
func cell(s string) string {
	if s == "" {
		return ""
	}
	plain := !strings.HasPrefix(s, `"`) && utf8.ValidString(s)
	for _, r := range s {
		plain = plain && printable(r)
	}
	if plain {
		return s
	}
	return strconv.Quote(s)
}

// short is cell(s) cut to n runes, for a table column.
func short(s string, n int) string {
	c := cell(s)
	if utf8.RuneCountInString(c) <= n {
		return c
	}
	r := []rune(c)
	return string(r[:n-1]) + "…"
}

// escapeText returns text with line breaks kept and every other
// non-printable character escaped (\r, \t, \x1b, \u202e), and reports
// whether it escaped any.
func escapeText(text string) (string, bool) {
	var b strings.Builder
	escaped := false
	for i := 0; i < len(text); {
		r, size := utf8.DecodeRuneInString(text[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, text[i])
			escaped = true
		case r == '\n' || printable(r):
			b.WriteString(text[i : i+size])
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			escaped = true
		}
		i += size
	}
	return b.String(), escaped
}

// maxShownPayload bounds the payload bytes dlq show prints (-o json has
// them all).
const maxShownPayload = 64 << 10

// renderPayload returns data for a terminal, indented by prefix: JSON
// indented, text with its control characters escaped, anything else
// (invalid UTF-8, NUL bytes) as a hex dump; and a line saying which.
func renderPayload(data []byte, prefix string) (about, body string) {
	shown, cut := data, ""
	if len(shown) > maxShownPayload {
		shown, cut = shown[:maxShownPayload], fmt.Sprintf(", the first %d shown (-o json has all)", maxShownPayload)
	}
	if len(data) == 0 {
		return "payload: empty", ""
	}
	if cut != "" {
		shown = trimPartialRune(shown)
	}
	if !utf8.Valid(shown) || bytes.IndexByte(shown, 0) >= 0 {
		return fmt.Sprintf("payload: %d bytes, binary: hex dump%s", len(data), cut), indent(hex.Dump(shown), prefix)
	}
	kind, text := "text", string(shown)
	if cut == "" && json.Valid(data) {
		var b bytes.Buffer
		if json.Indent(&b, data, "", "  ") == nil {
			kind, text = "JSON", b.String()
		}
	}
	text, escaped := escapeText(text)
	if escaped {
		kind += ", control characters shown escaped"
	}
	return fmt.Sprintf("payload: %d bytes, %s%s", len(data), kind, cut), indent(text, prefix)
}

// trimPartialRune drops an incomplete UTF-8 sequence at the end of b (a
// payload cut to maxShownPayload).
func trimPartialRune(b []byte) []byte {
	for i := 0; i < utf8.UTFMax && len(b) > 0; i++ {
		if utf8.Valid(b) {
			return b
		}
		b = b[:len(b)-1]
	}
	return b
}

func indent(text, prefix string) string {
	text = strings.TrimRight(text, "\n")
	return prefix + strings.ReplaceAll(text, "\n", "\n"+prefix) + "\n"
}

// jsonSafe escapes, in JSON that encoding/json wrote, the characters it
// leaves raw and a terminal could act on: DEL, C1 controls, invisible
// format characters (they can only be inside strings, so \uXXXX escapes
// keep the JSON equal).
func jsonSafe(b []byte) []byte {
	var out bytes.Buffer
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == '\n' || printable(r) && !(r == utf8.RuneError && size == 1) {
			out.Write(b[:size])
		} else if r > 0xffff {
			r1, r2 := utf16.EncodeRune(r)
			fmt.Fprintf(&out, `\u%04x\u%04x`, r1, r2)
		} else {
			fmt.Fprintf(&out, `\u%04x`, r)
		}
		b = b[size:]
	}
	return out.Bytes()
}
