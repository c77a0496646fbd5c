package admin

import (
	"bytes"
	"crypto/rand"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/boxcar-bus/boxcar"
)

//go:embed templates/*.html
var templateFS embed.FS

// The pages, each templates/<name>.html with templates/layout.html and
// the parts they share, templates/parts.html.
var pageNames = []string{"overview", "subscriber", "deadletters", "deadletter", "outbox", "error"}

// renderer holds the parsed pages.
type renderer struct {
	pages map[string]*template.Template
}

func newRenderer() (*renderer, error) {
	r := &renderer{pages: map[string]*template.Template{}}
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(viewFuncs).ParseFS(templateFS, "templates/layout.html", "templates/parts.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", name, err)
		}
		r.pages[name] = t
	}
	return r, nil
}

// view is what every page's template gets.
type view struct {
	Title    string
	Root     string // the relative path from this page to the handler's root
	Nonce    string // of the page's style and script (Content-Security-Policy)
	CanWrite bool   // the handler has a write token: forms work
	Flash    *flash
	Refresh  int    // seconds, 0 for none
	Toggle   string // the link that turns auto-refresh on or off
	Now      time.Time
	Page     any
}

// rootOf is the relative path from path up to the handler's root: "./" at
// the top, "../" one level down, ... It keeps links and redirects right
// under any prefix http.StripPrefix removed.
func rootOf(path string) string {
	depth := strings.Count(path, "/") - 1
	if depth <= 0 {
		return "./"
	}
	return strings.Repeat("../", depth)
}

// write renders page with status: the whole page into a buffer first, so
// that a template error is a clean 500.
func (rd *renderer) write(w http.ResponseWriter, status int, page string, v view) {
	var b [16]byte
	rand.Read(b[:])
	v.Nonce = base64.RawStdEncoding.EncodeToString(b[:])
	var buf bytes.Buffer
	if err := rd.pages[page].Execute(&buf, v); err != nil {
		http.Error(w, "admin: rendering "+page+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", fmt.Sprintf("default-src 'none'; style-src 'nonce-%s'; script-src 'nonce-%s'; "+
		"form-action 'self'; frame-ancestors 'none'; base-uri 'none'", v.Nonce, v.Nonce))
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// viewFuncs are the templates' helpers.
var viewFuncs = template.FuncMap{
	"dur":      fmtDuration,
	"ago":      func(t time.Time) string { return agoOf(t, time.Now()) },
	"stamp":    fmtTime,
	"seconds":  func(s float64) string { return fmtDuration(time.Duration(s * float64(time.Second))) },
	"bytes":    fmtBytes,
	"payload":  payloadOf,
	"headers":  sortedHeaders,
	"shorten":  shorten,
	"join":     strings.Join,
	"add":      func(a, b int64) int64 { return a + b },
	"stateOf":  func(s boxcar.HealthState) string { return string(s) },
	"progress": replayProgressOf,
	"pair":     func(root string, v any) rootAnd { return rootAnd{Root: root, V: v} },
	"key64":    key64Of,
}

// key64Of is a key for a form's hidden field: a browser submits a field's
// line breaks as CRLF, and the page's escaping turns NUL into U+FFFD, so a
// key with either would come back as another (and redrive nothing).
func key64Of(key string) string { return base64.RawURLEncoding.EncodeToString([]byte(key)) }

// rootAnd passes the page's root with a value to a part of a page.
type rootAnd struct {
	Root string
	V    any
}

func fmtDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%d µs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	case d < time.Minute:
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return d.Round(time.Second).String()
}

func agoOf(t, now time.Time) string {
	if t.IsZero() || t.Unix() <= 0 {
		return "never"
	}
	return fmtDuration(now.Sub(t)) + " ago"
}

func fmtTime(t time.Time) string {
	if t.IsZero() || t.Unix() <= 0 {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func fmtBytes(n int) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// shorten cuts s to n runes, for tables (the detail page shows it all).
func shorten(n int, s string) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}

// maxPayloadShown bounds the payload a page shows; the API has it all.
const maxPayloadShown = 64 << 10

// payloadView is a payload as the page shows it: as text (indented if
// JSON), or as a hex dump when it is not UTF-8. The template escapes it.
type payloadView struct {
	Text      string
	Kind      string // "JSON", "text" or "binary (hex)"
	Size      int
	Truncated bool
	Shown     int // bytes of the payload in Text (a hex dump is longer)
}

func payloadOf(data []byte) payloadView {
	p := payloadView{Size: len(data)}
	if len(data) > maxPayloadShown {
		data, p.Truncated = data[:maxPayloadShown], true
		// A text cut inside a character is still text.
		if cut := trimPartialRune(data); utf8.Valid(cut) {
			data = cut
		}
	}
	p.Shown = len(data)
	var indented bytes.Buffer
	switch {
	case !p.Truncated && json.Valid(data) && json.Indent(&indented, data, "", "  ") == nil:
		p.Text, p.Kind = indented.String(), "JSON"
	case utf8.Valid(data):
		p.Text, p.Kind = string(data), "text"
	default:
		p.Text, p.Kind = hex.Dump(data), "binary (hex)"
	}
	return p
}

// trimPartialRune drops the start of a UTF-8 sequence that the cut at the
// end of b left incomplete.
func trimPartialRune(b []byte) []byte {
	for i := 1; i < utf8.UTFMax && i <= len(b); i++ {
		if c := b[len(b)-i]; utf8.RuneStart(c) {
			if !utf8.FullRune(b[len(b)-i:]) {
				return b[:len(b)-i]
			}
			break
		}
	}
	return b
}

// header is one header, for a sorted table.
type header struct{ Name, Value string }

func sortedHeaders(h map[string]string) []header {
	out := make([]header, 0, len(h))
	for k, v := range h {
		out = append(out, header{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// replayProgress is a replay's place, for a <progress> bar.
type replayProgress struct {
	boxcar.ReplayStatus
	// Value and Max are the bar's: the events up to the ack floor of those
	// up to Through, from From. Without From (the library does not record
	// it in SubscriberInfo), the bar counts from the stream's seq 1, and
	// Title says so.
	Value, Max uint64
	Percent    int
	Label      string
	Title      string
}

func replayProgressOf(st *boxcar.ReplayStatus) *replayProgress {
	if st == nil {
		return nil
	}
	p := &replayProgress{ReplayStatus: *st, Label: fmt.Sprintf("at stream seq %d of %d", st.At, st.Through)}
	from := st.From
	if from == 0 {
		from = 1
		p.Title = "the bar counts from the stream's seq 1: where the replay started is not recorded"
	} else {
		p.Title = fmt.Sprintf("replaying stream seqs %d to %d", st.From, st.Through)
	}
	if st.Through >= from {
		p.Max = st.Through - from + 1
		if st.At >= from {
			p.Value = min(st.At-from+1, p.Max)
		}
	}
	if st.Done {
		p.Value = p.Max
	}
	if p.Max > 0 {
		p.Percent = int(math.Floor(100 * float64(p.Value) / float64(p.Max)))
	}
	return p
}
