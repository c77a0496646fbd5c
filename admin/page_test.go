package admin_test

import (
	"bytes"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/admin"
)

// hostile is what an attacker would put in an event to run script in an
// operator's browser.
const hostile = `<script>alert(1)</script>`

// wantPage fails unless r is an HTML page of status that holds every one of
// parts.
func wantPage(t *testing.T, what string, r response, status int, parts ...string) {
	t.Helper()
	if r.status != status || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Fatalf("%s: %d %s, want an HTML page %d", what, r.status, r.header.Get("Content-Type"), status)
	}
	for _, p := range parts {
		if !bytes.Contains(r.body, []byte(p)) {
			t.Fatalf("%s: the page lacks %q:\n%s", what, p, r.body)
		}
	}
}

// form posts fields (name, value pairs) to the page action at path on srv.
func (b *bundle) form(srv *httptest.Server, path string, fields ...string) response {
	b.t.Helper()
	v := url.Values{}
	for i := 0; i+1 < len(fields); i += 2 {
		v.Set(fields[i], fields[i+1])
	}
	return b.do(srv, "POST", path, v.Encode(), "Content-Type", "application/x-www-form-urlencoded")
}

// The page shows health with its reasons, the relay, every subscriber, the
// dead letters and the outbox; each page answers, and bad paths or
// parameters get an error page with the API's status.
func TestPageShowsTheBus(t *testing.T) {
	t.Parallel()
	b := setup(t, admin.Options{Token: writeToken})
	b.subscribeBilling(boxcar.SubscribeOptions{ParkKeys: true})
	b.publish("good", "1", "2")
	b.publish("bad-key-7", `{"order":7}`, `{"order":8}`)
	letters := b.waitLetters(2)

	r := b.get("/", nil)
	wantPage(t, "overview", r, 200, "<title>Boxcar: ", "billing", "bad-key-7", "relay cursor", "outbox lag", "writer held for",
		`class="state ok"`, "parked<br><small>keys", "end to end", "since start")
	csp := r.header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'nonce-") || strings.Contains(csp, "unsafe-inline") || r.header.Get("X-Frame-Options") != "DENY" {
		t.Fatalf("page headers: %v", r.header)
	}
	seq := letters[0].Seq
	wantPage(t, "letter", b.get(fmt.Sprintf("/deadletters/%d", seq), nil), 200, "bad-key-7", "Error history", "bad address for bad-key-7",
		"&#34;order&#34;: 7", "Redrive to billing")
	wantPage(t, "parked letter", b.get(fmt.Sprintf("/deadletters/%d", letters[1].Seq), nil), 200, "parked behind dead letter")
	wantPage(t, "letters", b.get("/deadletters?subscriber=billing&reason=parked", nil), 200, "Redrive every pending letter of billing")
	wantPage(t, "subscriber", b.get("/subscribers/billing", nil), 200, "Subscriber billing", "Pause", "Replay", "parked keys</dt><dd>1<")
	wantPage(t, "outbox", b.get("/outbox", nil), 200, "None: the relay is caught up.")
	for path, status := range map[string]int{
		"/deadletters/0": 400, "/deadletters/x": 400, "/deadletters/999": 404, "/deadletters?state=lost": 400,
		"/deadletters?bogus=1": 400, "/subscribers/nobody": 404, "/subscribers/a.b": 400, "/nothing": 404, "/outbox?limit=0": 400,
		"/?x=1": 400,
	} {
		wantPage(t, path, b.get(path, nil), status)
	}
	// A flash that is not the handler's shows nothing.
	if r := b.get("/?flash=0123456789abcdef0123456789abcdef", nil); r.status != 200 || bytes.Contains(r.body, []byte(`id="flash"`)) {
		t.Fatalf("a forged flash: %s", r)
	}
	if r := b.get("/?refresh=on", nil); !bytes.Contains(r.body, []byte(`http-equiv="refresh"`)) {
		t.Fatal("refresh=on sets no refresh")
	}
}

// A payload, key and header made to run script render inert: escaped as
// text, with no element of theirs in the page, on every page that shows them.
func TestPageEscapesHostileEvents(t *testing.T) {
	t.Parallel()
	b := setup(t, admin.Options{Token: writeToken})
	b.subscribeBilling(boxcar.SubscribeOptions{})
	err := b.bus.Publish(b.ctx, boxcar.Event{Type: "order.placed", Key: hostile, Data: []byte(hostile + `<img src=x onerror=alert(2)>`),
		Headers: map[string]string{"X-Fail": hostile, "X-Note": `"><script>alert(3)</script>`}})
	if err != nil {
		t.Fatal(err)
	}
	seq := b.waitLetters(1)[0].Seq
	escaped := "&lt;script&gt;alert(1)&lt;/script&gt;"
	for _, path := range []string{"/", fmt.Sprintf("/deadletters/%d", seq), "/deadletters", "/subscribers/billing"} {
		r := b.get(path, nil)
		wantPage(t, path, r, 200, escaped)
		if n := bytes.Count(r.body, []byte("<script")); n != 1 {
			t.Fatalf("%s: %d script elements, want only the page's own:\n%s", path, n, r.body)
		}
		for _, bad := range []string{"<img", "alert(2)>", "alert(3)</script>"} {
			if bytes.Contains(r.body, []byte(bad)) {
				t.Fatalf("%s: the page holds %q unescaped", path, bad)
			}
		}
	}
	wantPage(t, "payload", b.get(fmt.Sprintf("/deadletters/%d", seq), nil), 200, "&lt;img src=x onerror=alert(2)&gt;", "X-Note")
}

// The lists of pending letters (the overview's, a subscriber's, the
// letters page's with state=pending) show the letters that wait behind more
// letters acted on than a page holds, and page on from the last shown.
func TestPagesShowPendingLettersBehindActedOnOnes(t *testing.T) {
	t.Parallel()
	b := setup(t, admin.Options{Token: writeToken})
	b.subscribeBilling(boxcar.SubscribeOptions{})
	for i := range 25 {
		b.publish(fmt.Sprintf("bad-%02d", i), "x")
	}
	letters := b.waitLetters(25) // in the stream's order, which need not be the keys'
	for _, dl := range letters[:20] {
		if _, err := b.bus.Discard(b.ctx, dl.Seq, "t", "handled by hand"); err != nil {
			t.Fatal(err)
		}
	}
	key := func(i int) string { return ">" + letters[i].Key + "<" } // as a table cell
	for _, path := range []string{"/", "/subscribers/billing", "/deadletters?state=pending"} {
		r := b.get(path, nil)
		wantPage(t, path, r, 200, key(20), key(24))
		if bytes.Contains(r.body, []byte(key(19))) {
			t.Fatalf("%s shows a discarded letter", path)
		}
	}
	r := b.get("/deadletters?state=pending&limit=2", nil)
	wantPage(t, "a page of 2", r, 200, key(20), key(21), "Next page")
	if bytes.Contains(r.body, []byte(key(22))) {
		t.Fatal("a page of 2 shows a third letter")
	}
	next := regexp.MustCompile(`href="([^"]*)">Next page`).FindSubmatch(r.body)
	r = b.get(resolve(t, b.srv.URL+"/deadletters", html.UnescapeString(string(next[1]))), nil)
	wantPage(t, "the next page", r, 200, key(22), key(23))
	if bytes.Contains(r.body, []byte(key(21))) || bytes.Contains(r.body, []byte(key(24))) {
		t.Fatalf("the next page holds letters of another:\n%s", r.body)
	}
}

// A payload over what the page shows is cut: a text cut inside a
// character still shows as text, and the page says how much of the payload
// it shows (not the length of its hex dump).
func TestPageCutsALargePayload(t *testing.T) {
	t.Parallel()
	b := setup(t, admin.Options{Token: writeToken})
	b.subscribeBilling(boxcar.SubscribeOptions{})
	b.publish("bad-text", strings.Repeat("€", 70<<10/3)) // 3 bytes each: 64 KiB cuts one
	b.publish("bad-bin", strings.Repeat("\xff\x00\x01", 70<<10/3))
	for _, dl := range b.waitLetters(2) {
		kind := map[string]string{"bad-text": "text", "bad-bin": "binary (hex)"}[dl.Key]
		r := b.get(fmt.Sprintf("/deadletters/%d", dl.Seq), nil)
		wantPage(t, dl.Key, r, 200, "<h2>Payload <small>"+html.EscapeString(kind)+", 70.0 KiB, the first 64.0 KiB shown (the API has it all)</small>")
	}
}

// The forms that redrive every letter of a key carry it intact to the
// action, whatever it holds: a browser submits a field's line breaks as
// CRLF, and a NUL reaches the page as U+FFFD. On the letter's page and on
// the list filtered by the key, the form redrives the letter.
func TestPageRedrivesAKeyOfAnyCharacters(t *testing.T) {
	t.Parallel()
	b := setup(t, admin.Options{Token: writeToken})
	b.subscribeBilling(boxcar.SubscribeOptions{})
	keys := []string{"bad\nline two", "bad\x00nul", "bad\r\ncrlf"}
	for _, k := range keys {
		b.publish(k, "1")
	}
	letters := b.waitLetters(len(keys))
	form := regexp.MustCompile(`(?s)<form class="write" method="post" action="[^"]*actions/deadletters/redrive">(.*?)</form>`)
	hidden := regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)
	for i, dl := range letters {
		page := fmt.Sprintf("/deadletters/%d", dl.Seq)
		if i == 1 {
			page = "/deadletters?" + url.Values{"subscriber": {"billing"}, "key": {dl.Key}}.Encode()
		}
		m := form.FindSubmatch(b.get(page, nil).body)
		if m == nil {
			t.Fatalf("%s: no form to redrive the key", page)
		}
		fields := []string{"token", writeToken}
		for _, f := range hidden.FindAllSubmatch(m[1], -1) {
			// What a browser submits: the HTML parser reads CR and CRLF as
			// LF; the form's encoding sends each LF as CRLF.
			v := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(html.UnescapeString(string(f[2])))
			fields = append(fields, string(f[1]), strings.ReplaceAll(v, "\n", "\r\n"))
		}
		r := b.form(b.srv, "/actions/deadletters/redrive", fields...)
		if r.status != http.StatusSeeOther {
			t.Fatalf("%s: the key's form: %s", page, r)
		}
		wantPage(t, page, b.get(resolve(t, b.srv.URL+"/actions/deadletters/redrive", r.header.Get("Location")), nil), 200,
			fmt.Sprintf("redriven: 1 letter(s) [%d]", dl.Seq))
	}
	r := b.form(b.srv, "/actions/deadletters/redrive", "token", writeToken, "subscriber", "billing", "key64", "!!")
	wantPage(t, "a bad key64", r, 400, "key64")
}

// The page's forms act only with the write token: without it 401, with a
// wrong one 403, on a read-only handler 403 (whose page shows its forms
// disabled, saying why); bad fields are refused. With the token the action
// is done, the browser is sent to the letter's page, which shows the result.
func TestPageFormsNeedTheToken(t *testing.T) {
	t.Parallel()
	b := setup(t, admin.Options{Token: writeToken})
	b.subscribeBilling(boxcar.SubscribeOptions{})
	b.publish("bad", "1")
	seq := b.waitLetters(1)[0].Seq
	path := fmt.Sprintf("/actions/deadletters/%d/redrive", seq)
	wantPage(t, "letter with a token", b.get(fmt.Sprintf("/deadletters/%d", seq), nil), 200, `name="token"`, `action="../actions/deadletters/`)

	wantPage(t, "no token", b.form(b.srv, path, "why", "x"), 401)
	wantPage(t, "wrong token", b.form(b.srv, path, "token", readToken), 403)
	wantPage(t, "unknown field", b.form(b.srv, path, "token", writeToken, "force", "1"), 400)
	wantPage(t, "a query", b.do(b.srv, "POST", path+"?token="+writeToken, ""), 400)
	wantPage(t, "bad until", b.form(b.srv, "/actions/subscribers/billing/pause", "token", writeToken, "until", "soon"), 400)
	wantPage(t, "bad start", b.form(b.srv, "/actions/subscribers/billing/replay", "token", writeToken, "from_kind", "offset", "from", "1"), 400)
	wantPage(t, "bad seq", b.form(b.srv, "/actions/deadletters/0/discard", "token", writeToken), 400)
	readOnly := b.serve(admin.Options{})
	wantPage(t, "read-only page", b.do(readOnly, "GET", fmt.Sprintf("/deadletters/%d", seq), ""), 200, "read-only: no token", "<fieldset disabled>")
	if r := b.do(readOnly, "GET", fmt.Sprintf("/deadletters/%d", seq), ""); bytes.Contains(r.body, []byte("<script")) {
		t.Fatal("the read-only page carries the token script")
	}
	wantPage(t, "read-only handler", b.form(readOnly, path, "token", writeToken), 403)
	if dl := b.letter(seq); dl.State != boxcar.DeadLetterPending {
		t.Fatalf("a refused form changed the letter: %s", dl.State)
	}
	if subs, _ := b.bus.Subscribers(b.ctx); subs[0].Paused || subs[0].Replay != nil {
		t.Fatalf("a refused form paused or replayed: %+v", subs[0])
	}

	b.broken.Store(false)
	r := b.form(b.srv, path, "token", writeToken, "operator", "bob", "why", "fixed")
	loc := r.header.Get("Location")
	if r.status != http.StatusSeeOther || !strings.HasPrefix(loc, fmt.Sprintf("../../../deadletters/%d?flash=", seq)) {
		t.Fatalf("redrive form: %d Location %q, want a relative 303 to the letter", r.status, loc)
	}
	next := resolve(t, b.srv.URL+path, loc)
	wantPage(t, "after the redrive", b.get(next, nil), 200, `id="flash"`, "redriven: 1 letter(s)", "redriven</span>", "bob via admin page from 127.0.0.1:")
	if a := b.letter(seq).Action; a == nil || a.Why != "fixed" || !strings.HasPrefix(a.By, "bob via admin page from ") {
		t.Fatalf("recorded as %+v", a)
	}
	r = b.form(b.srv, path, "token", writeToken)
	wantPage(t, "second redrive", b.get(resolve(t, b.srv.URL+path, r.header.Get("Location")), nil), 200, "nothing to do")
	var audited int
	for _, l := range b.logs.lines(t) {
		if l["route"] == "POST /actions/deadletters/{seq}/redrive" {
			audited++
		}
	}
	if audited != 7 { // no token, wrong, unknown field, query, read-only handler, ok, again
		t.Fatalf("%d audit lines of the redrive form, want 7: %v", audited, b.logs.lines(t))
	}
}

// The pause, resume, replay and retire forms act and show their result.
func TestPageSubscriberForms(t *testing.T) {
	t.Parallel()
	b := setup(t, admin.Options{Token: writeToken})
	sub := b.subscribeBilling(boxcar.SubscribeOptions{})
	b.publish("good", "1", "2")
	waitFor(t, "billing caught up", func() (bool, string) {
		s, _ := b.bus.Subscribers(b.ctx)
		return s[0].AckFloor == 2, fmt.Sprint(s[0].AckFloor)
	})
	act := func(action string, fields ...string) string {
		t.Helper()
		path := "/actions/subscribers/billing/" + action
		r := b.form(b.srv, path, append([]string{"token", writeToken}, fields...)...)
		if r.status != http.StatusSeeOther {
			t.Fatalf("%s: %s", action, r)
		}
		return resolve(t, b.srv.URL+path, r.header.Get("Location"))
	}
	until := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	wantPage(t, "paused", b.get(act("pause", "until", until, "why", "deploy"), nil), 200, "billing paused until", ">Resume<")
	wantPage(t, "resumed", b.get(act("resume"), nil), 200, "billing resumed", ">Pause<")
	next := act("replay", "from_kind", "stream_seq", "from", "1", "no_dedupe", "on")
	wantPage(t, "replay", b.get(next, nil), 200, "replay of billing from stream seq 1 through 2 started", "<progress")
	if err := sub.Close(b.ctx); err != nil {
		t.Fatal(err)
	}
	next = act("retire", "why", "gone")
	if !strings.HasSuffix(strings.SplitN(next, "?", 2)[0], "/") {
		t.Fatalf("retire goes to %s, want the overview", next)
	}
	wantPage(t, "retired", b.get(next, nil), 200, "billing retired")
	if subs, _ := b.bus.Subscribers(b.ctx); len(subs) != 0 {
		t.Fatalf("after retire: %+v", subs)
	}
}

// Mounted under /boxcar/ with http.StripPrefix, every link of the pages
// and the redirect after an action stay under /boxcar/.
func TestMountedUnderAPrefix(t *testing.T) {
	t.Parallel()
	b := setup(t, admin.Options{Token: writeToken})
	b.subscribeBilling(boxcar.SubscribeOptions{})
	b.publish("bad", "1")
	seq := b.waitLetters(1)[0].Seq
	h, err := admin.NewHandler(b.bus, admin.Options{Token: writeToken})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/boxcar/", http.StripPrefix("/boxcar", h))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	href := regexp.MustCompile(`(?:href|action)="([^"]*)"`)
	for _, page := range []string{"/boxcar/", fmt.Sprintf("/boxcar/deadletters/%d", seq), "/boxcar/subscribers/billing", "/boxcar/deadletters?subscriber=billing"} {
		r := b.do(srv, "GET", page, "")
		wantPage(t, page, r, 200)
		links := href.FindAllSubmatch(r.body, -1)
		if len(links) < 4 {
			t.Fatalf("%s: %d links", page, len(links))
		}
		for _, m := range links {
			u := resolve(t, srv.URL+page, html.UnescapeString(string(m[1])))
			if !strings.HasPrefix(u, "/boxcar/") {
				t.Fatalf("%s: link %q leads to %s, out of /boxcar/", page, m[1], u)
			}
			if !strings.HasPrefix(u, "/boxcar/actions/") {
				if r := b.do(srv, "GET", u, ""); r.status != 200 {
					t.Fatalf("%s: link %q (%s): %d", page, m[1], u, r.status)
				}
			}
		}
	}
	want(t, "API under the prefix", b.do(srv, "GET", "/boxcar/api/status", ""), 200, "")
	path := fmt.Sprintf("/boxcar/actions/deadletters/%d/discard", seq)
	r := b.form(srv, path, "token", writeToken)
	next := resolve(t, srv.URL+path, r.header.Get("Location"))
	if r.status != http.StatusSeeOther || !strings.HasPrefix(next, fmt.Sprintf("/boxcar/deadletters/%d?flash=", seq)) {
		t.Fatalf("discard under the prefix: %d, goes to %s", r.status, next)
	}
	wantPage(t, "after discard", b.do(srv, "GET", next, ""), 200, fmt.Sprintf("letter %d discarded", seq))
}

// resolve resolves the link ref found at base, returning its path and query.
func resolve(t *testing.T, base, ref string) string {
	t.Helper()
	bu, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	ru, err := url.Parse(ref)
	if err != nil {
		t.Fatalf("link %q: %v", ref, err)
	}
	return bu.ResolveReference(ru).RequestURI()
}
