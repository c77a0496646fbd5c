package main

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode"

	"github.com/boxcar-bus/boxcar"
)

func TestCell(t *testing.T) {
	for in, want := range map[string]string{
		"plain key":         "plain key",
		"ünïcode ключ":      "ünïcode ключ",
		"\x1b[2Jx":          `"\x1b[2Jx"`,
		"a\rb":              `"a\rb"`,
		"tab\there":         `"tab\there"`,
		"\u202eevil":        `"\u202eevil"`,
		"c1\u009b31m":       `"c1\u009b31m"`,
		`"quoted"`:          `"\"quoted\""`, // a value that starts with a quote is quoted, so "…" is never ambiguous
		"bad \xff utf8":     `"bad \xff utf8"`,
		"line\nbreak":       `"line\nbreak"`,
		"zero\u200bwidth":   `"zero\u200bwidth"`,
		"\U000e0041tagchar": `"\U000e0041tagchar"`,
	} {
		if got := cell(in); got != want {
			t.Errorf("cell(%q) = %s, want %s", in, got, want)
		}
	}
	if got := short("abcdefghij", 5); got != "abcd…" {
		t.Errorf("short: %q", got)
	}
}

// Whatever a payload holds, the text shown has no character a terminal
// acts on but newlines; binary is a hex dump; JSON is indented.
func TestRenderPayload(t *testing.T) {
	about, body := renderPayload([]byte(`{"a":{"b":[1,2]},"s":"\u001b[2J"}`), "  ")
	if !strings.Contains(about, "JSON") || !strings.Contains(body, "\n      \"b\": [") || !strings.Contains(body, `"\u001b[2J"`) {
		t.Errorf("JSON payload: %s\n%s", about, body)
	}
	// JSON strings may hold C1 controls and bidi overrides raw.
	about, body = renderPayload([]byte("{\"s\":\"\u009b2J\u202e\"}"), "")
	if !strings.Contains(about, "escaped") || !strings.Contains(body, `\u009b2J\u202e`) {
		t.Errorf("JSON with C1: %s\n%q", about, body)
	}
	about, body = renderPayload([]byte{0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a}, "")
	if !strings.Contains(about, "binary: hex dump") || !strings.Contains(body, "89 50 4e 47 0d 0a 1a 0a") {
		t.Errorf("binary: %s\n%s", about, body)
	}
	about, _ = renderPayload([]byte("text\x00with NUL"), "")
	if !strings.Contains(about, "binary") {
		t.Errorf("a NUL byte: %s", about)
	}
	about, body = renderPayload(append([]byte(strings.Repeat("é", maxShownPayload)), 'x'), "")
	if !strings.Contains(about, "the first 65536 shown") || strings.Contains(about, "binary") || strings.ContainsRune(body, unicode.ReplacementChar) {
		t.Errorf("a long text cut inside a rune: %s", about)
	}
	if about, body = renderPayload(nil, ""); about != "payload: empty" || body != "" {
		t.Errorf("empty: %q %q", about, body)
	}
	for _, hostile := range []string{"\x1b]52;c;SGVsbG8=\x07", "a\rb", "\x7f", "\u0085", "\u2028x", "\ufeff"} {
		_, body := renderPayload([]byte(hostile), "")
		for _, r := range body {
			if r != '\n' && !unicode.IsPrint(r) {
				t.Errorf("renderPayload(%q) printed %U raw: %q", hostile, r, body)
			}
		}
	}
}

// jsonSafe escapes what encoding/json leaves raw and keeps the JSON equal.
func TestJSONSafe(t *testing.T) {
	in := map[string]string{"k": "del\x7f c1\u0085\u009b bidi\u202e tag\U000e0041 ok é"}
	raw, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	safe := jsonSafe(raw)
	for _, r := range string(safe) {
		if !unicode.IsPrint(r) {
			t.Fatalf("jsonSafe left %U: %q", r, safe)
		}
	}
	var back map[string]string
	if err := json.Unmarshal(safe, &back); err != nil || back["k"] != in["k"] {
		t.Fatalf("jsonSafe changed the value: %q (%v)", back["k"], err)
	}
	if !strings.Contains(string(safe), `\udb40\udc41`) || !strings.Contains(string(safe), "ok é") {
		t.Errorf("jsonSafe: %s", safe)
	}
}

// The bar counts from the replay's first seq; on a terminal it redraws one
// line in place, elsewhere it prints a line per change.
func TestProgressBar(t *testing.T) {
	var b strings.Builder
	p := &progressBar{w: &b, tty: true, name: "billing", from: 5}
	st := boxcar.ReplayStatus{From: 5, Through: 14, At: 4}
	p.show(st)
	st.At = 9
	p.show(st)
	p.show(st) // unchanged: not drawn again
	st.At, st.Done = 14, true
	p.show(st)
	p.end("done")
	want := "\rreplay billing [>                             ]   0%  at stream seq 4 of 14\x1b[K" +
		"\rreplay billing [===============>              ]  50%  at stream seq 9 of 14\x1b[K" +
		"\rreplay billing [==============================] 100%  at stream seq 14 of 14\x1b[K\ndone\n"
	if b.String() != want {
		t.Errorf("terminal bar:\n%q\nwant\n%q", b.String(), want)
	}
	b.Reset()
	p = &progressBar{w: &b, name: "billing", from: 5}
	p.show(boxcar.ReplayStatus{Through: 14, At: 9})
	p.show(boxcar.ReplayStatus{Through: 14, At: 9})
	p.end("")
	if got := strings.Count(b.String(), "\n"); got != 1 || strings.Contains(b.String(), "\r") {
		t.Errorf("log bar: %q", b.String())
	}
}
