package main

import (
	"bytes"
	"context"
	"fmt"
	"html"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// pageCheck is one page and what its DOM must and must not hold.
type pageCheck struct {
	name  string // of the files written
	path  string // under the handler's root
	title string // a regexp of the document's title, which no event's content may change
	must  []string
}

// chromiumTimeout bounds one run of the browser.
const chromiumTimeout = 90 * time.Second

// textOf is s as a browser serializes text in the DOM: only &, < and >
// escaped.
var textOf = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace

func pagesToCheck(st state) []pageCheck {
	escKey := textOf(hostileKey)
	return []pageCheck{
		{name: "overview", path: "", title: `Boxcar: (ok|lagging|stalled|stopped|losing)`, must: []string{
			"billing", "shipping", "search", "bad-customer-7", escKey, `class="state ok">ok<`, `class="state stopped">stopped<`,
			"not running anywhere", "relay cursor", "outbox lag",
			"writer held for", "order.shipped", "parked<br><small>keys", "since start", "<progress", "end to end",
		}},
		{name: "letter-hostile", path: fmt.Sprintf("deadletters/%d", st.hostileSeq), title: fmt.Sprintf("Dead letter %d", st.hostileSeq), must: []string{
			escKey, textOf(`<img src=x onerror=`), "X-Note", textOf(`"><script>`), "no address on file", "Error history",
		}},
		{name: "letter-parked-head", path: fmt.Sprintf("deadletters/%d", st.badSeq), title: fmt.Sprintf("Dead letter %d", st.badSeq), must: []string{
			"bad-customer-7", "Trace-Id", "Redrive to billing", "Discard for good", "Redrive every pending letter of this key",
		}},
		{name: "subscriber-billing", path: "subscribers/billing", title: "Subscriber billing", must: []string{
			"Subscriber billing", "parked keys", "Pause", "Replay", "bad-customer-7",
		}},
		{name: "subscriber-shipping", path: "subscribers/shipping", title: "Subscriber shipping", must: []string{
			"order.placed", "<progress", "without dedupe", "Redrive its pending dead letters",
		}},
		{name: "deadletters", path: "deadletters?subscriber=billing", title: "Dead letters", must: []string{
			"Redrive every pending letter of billing", "bad-customer-7", escKey, "parked",
		}},
		{name: "outbox", path: "outbox", title: "Outbox", must: []string{"order.shipped", "customer-2"}},
	}
}

// checkPages dumps and screenshots every page and checks its DOM.
func checkPages(ctx context.Context, chromium, out, base string, st state) error {
	profile, err := os.MkdirTemp("", "boxcar-browsercheck-profile-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(profile)
	var problems []string
	for _, p := range pagesToCheck(st) {
		url := base + p.path
		dom, err := browse(ctx, chromium, profile, "--dump-dom", url)
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		domFile := filepath.Join(out, p.name+".html")
		if err := os.WriteFile(domFile, dom, 0o644); err != nil {
			return err
		}
		shot := filepath.Join(out, p.name+".png")
		if _, err := browse(ctx, chromium, profile, "--hide-scrollbars", "--window-size=1400,1800", "--screenshot="+shot, url); err != nil {
			return fmt.Errorf("%s: screenshot: %w", p.name, err)
		}
		found := checkDOM(p, dom)
		for _, f := range found {
			problems = append(problems, fmt.Sprintf("%s (%s): %s", p.name, url, f))
		}
		fmt.Printf("browser-check: %-20s %s, %s: %d problem(s)\n", p.name, domFile, shot, len(found))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w:\n  %s", errMissing, strings.Join(problems, "\n  "))
	}
	return nil
}

var (
	titleRE  = regexp.MustCompile(`(?s)<title>(.*?)</title>`)
	scriptRE = regexp.MustCompile(`(?i)<script`)
	credsRE  = regexp.MustCompile(`<span id="creds"[^>]*>`)
)

// checkDOM returns what is wrong with the DOM of page p.
func checkDOM(p pageCheck, dom []byte) []string {
	var bad []string
	if m := titleRE.FindSubmatch(dom); m == nil || !regexp.MustCompile("^"+p.title+"$").MatchString(html.UnescapeString(string(m[1]))) {
		bad = append(bad, fmt.Sprintf("the title is %q, want %q (an event's content changed it?)", m, p.title))
	}
	for _, s := range p.must {
		if !bytes.Contains(dom, []byte(s)) {
			bad = append(bad, fmt.Sprintf("lacks %q", s))
		}
	}
	// The page's own script is its only one; an event's markup adds no
	// element (an <img> or a <script> would be one).
	if n := len(scriptRE.FindAll(dom, -1)); n != 1 {
		bad = append(bad, fmt.Sprintf("%d script elements, want the page's own only", n))
	}
	if bytes.Contains(dom, []byte("<img")) {
		bad = append(bad, "holds an <img> element: an event's markup was not escaped")
	}
	if bytes.Contains(dom, []byte("<body>pwned")) {
		bad = append(bad, "a hostile header's script ran")
	}
	// The page's script ran (the Content-Security-Policy lets its nonce
	// through): it shows the token panel, hidden without script.
	if m := credsRE.Find(dom); m == nil || bytes.Contains(m, []byte("hidden")) {
		bad = append(bad, fmt.Sprintf("the page's own script did not run: token panel %q", m))
	}
	return bad
}

// browse runs the headless browser on url with args, returning its stdout.
func browse(ctx context.Context, chromium, profile string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, chromiumTimeout)
	defer cancel()
	all := append([]string{"--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
		"--user-data-dir=" + profile}, args...)
	cmd := exec.CommandContext(ctx, chromium, all...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w\n%s", chromium, strings.Join(args, " "), err, stderr.Bytes())
	}
	return stdout.Bytes(), nil
}
