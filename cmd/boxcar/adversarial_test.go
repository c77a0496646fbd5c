package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/boxcar-bus/boxcar"
)

// closedURL is the URL of a port nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + l.Addr().String() + "/admin"
	l.Close()
	return u
}

// Bad command lines print the usage and exit 2, before anything is
// reached (the URL given is a closed port: reaching it would exit 3).
func TestUsageErrors(t *testing.T) {
	env := map[string]string{"BOXCAR_URL": closedURL(t)}
	for _, args := range [][]string{
		{},
		{"frob"},
		{"status", "--bogus"},
		{"status", "extra"},
		{"status", "-o", "yaml"},
		{"health", "now"},
		{"subscribers", "frob"},
		{"subscribers", "show"},
		{"subscribers", "pause"},
		{"subscribers", "pause", "a", "b"},
		{"subscribers", "pause", "billing", "--until", "never"},
		{"subscribers", "pause", "billing", "--until", "-1h"},
		{"subscribers", "pause", "billing", "--until", ""}, // "$END" unset: not until a resume
		{"dlq"},
		{"dlq", "frob"},
		{"dlq", "show"},
		{"dlq", "show", "abc"},
		{"dlq", "show", "0"},
		{"dlq", "show", "-1"},
		{"dlq", "ls", "--limit", "0"},
		{"dlq", "ls", "--limit", "1001"},
		{"dlq", "ls", "--limit", "x"},
		{"dlq", "ls", "--after", "-3"},
		{"dlq", "redrive"},
		{"dlq", "redrive", "1", "--subscriber", "billing"},
		{"dlq", "redrive", "--key", "k"},
		{"dlq", "redrive", "--subscriber", "billing", "--key", ""}, // "$KEY" unset: not every key
		{"dlq", "discard", "1"},
		{"replay"},
		{"replay", "billing"},
		{"replay", "billing", "--from-stream-seq", "1", "--from-outbox-seq", "2"},
		{"replay", "billing", "--from-time", "yesterday"},
		{"replay", "billing", "--from-stream-seq", "-5"},
		{"replay", "billing", "--watch", "--detach"},
		{"replay", "billing", "--watch", "--from-stream-seq", "1"},
		{"outbox"},
		{"outbox", "ls", "--after-id", "x"},
		{"outbox", "ls", "--limit", "5000"},
		{"status", "--timeout", "soon"},
	} {
		r := runCLI(context.Background(), env, args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "usage") {
			t.Errorf("boxcar %q: %s\nwant exit 2 and the usage", args, r)
		}
	}
}

// Help goes to stdout and exits 0, and never shows a secret from the
// environment.
func TestHelp(t *testing.T) {
	env := map[string]string{"BOXCAR_TOKEN": "sekret-token-value", "BOXCAR_STORE_KEY": "sekret-store-key"}
	for _, args := range [][]string{{"help"}, {"-h"}, {"status", "-h"}, {"help", "dlq", "ls"}, {"dlq", "redrive", "--help"}, {"help", "schema"}, {"replay", "-h"}} {
		r := runCLI(context.Background(), env, args...)
		if r.code != exitOK || !strings.Contains(r.stdout, "usage:") {
			t.Errorf("boxcar %q: %s", args, r)
		}
		if strings.Contains(r.stdout+r.stderr, "sekret") {
			t.Errorf("boxcar %q shows a secret:\n%s", args, r)
		}
	}
	mustContain(t, "replay -h", runCLI(context.Background(), nil, "replay", "-h").stdout, "--from-stream-seq", "Ctrl-C stops the watching, not the replay")
}

// Where the app is: flags beat the environment; both modes at once, a bad
// URL or an operator name that would break a header are usage errors.
func TestConnectionChoice(t *testing.T) {
	f := newFixture(t, boxcar.Config{})
	f.closeBus()
	ctx := context.Background()
	files := []string{"--db", f.dbPath, "--dir", f.dir}
	r := runCLI(ctx, map[string]string{"BOXCAR_URL": closedURL(t)}, append([]string{"subscribers"}, files...)...)
	if r.code != exitOK || !strings.Contains(r.stdout, "no subscribers") {
		t.Fatalf("--db and --dir with BOXCAR_URL set: %s", r)
	}
	r = runCLI(ctx, map[string]string{"BOXCAR_DB": f.dbPath, "BOXCAR_DIR": f.dir}, "subscribers")
	if r.code != exitOK {
		t.Fatalf("BOXCAR_DB and BOXCAR_DIR: %s", r)
	}
	for _, c := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{nil, append([]string{"status", "--url", closedURL(t)}, files...), "not both"},
		{map[string]string{"BOXCAR_URL": "http://x", "BOXCAR_DB": f.dbPath}, []string{"status"}, "both BOXCAR_URL and BOXCAR_DB"},
		{nil, []string{"status"}, "where is the app?"},
		{nil, []string{"status", "--url", "ftp://host/admin"}, "want http:// or https://"},
		{nil, []string{"status", "--url", "http://host/admin?x=1"}, "without a query"},
		{nil, []string{"subscribers", "pause", "b", "--url", closedURL(t), "--operator", "bob\r\nX-Evil: 1"}, "control character"},
	} {
		r := runCLI(ctx, c.env, c.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%v %q: %s\nwant exit 2 and %q", c.env, c.args, r, c.want)
		}
	}
}

// A server that is not the admin API (a login page, a proxy's error, a
// wrong mount point, truncated or wrong JSON, a redirect, a hang) is a
// clear error, exit 3, for every command; its hostile text is escaped. An
// error the API answers is printed plainly, exit 4.
func TestServerAnswersGarbage(t *testing.T) {
	for _, c := range []struct {
		name   string
		status int
		ctype  string
		body   string
		code   int
		want   string
	}{
		{"login page", 200, "text/html", "<html><body>\x1b]0;pwned\x07Login</body></html>", exitUnreachable, `text/html: "<html><body>\x1b]0;pwned\aLogin`},
		{"proxy error", 502, "text/html", "<h1>Bad Gateway</h1>", exitUnreachable, "502 Bad Gateway"},
		{"internal HTML", 500, "text/html", "<h1>oops</h1>", exitUnreachable, "500 Internal Server Error"},
		{"wrong mount point", 404, "text/plain", "404 page not found\n", exitUnreachable, "404 page not found"},
		{"truncated JSON", 200, "application/json", `{"stats": {"outbox_lag": `, exitUnreachable, "unexpected EOF"},
		{"empty body", 200, "application/json", "", exitUnreachable, "an empty body"},
		{"wrong shape", 200, "application/json", `[1, 2, 3]`, exitUnreachable, "cannot unmarshal array"},
		{"two values", 200, "application/json", `{} {}`, exitUnreachable, "more than one JSON value"},
		{"error without code", 500, "application/json", `{"error": "x"}`, exitUnreachable, "not an answer of Boxcar's admin API"},
		{"API error", 500, "application/json", `{"error": "disk \u001b[2J full", "code": "internal"}`, exitFailed, `disk \x1b[2J full (internal)`},
		{"closed bus", 503, "application/json", `{"error": "boxcar: closed", "code": "closed"}`, exitUnreachable, "boxcar: closed (closed)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", c.ctype)
				w.WriteHeader(c.status)
				w.Write([]byte(c.body))
			}))
			defer srv.Close()
			env := map[string]string{"BOXCAR_URL": srv.URL, "BOXCAR_TOKEN": "t"}
			for _, args := range [][]string{
				{"status"}, {"health"}, {"subscribers"}, {"subscribers", "show", "a"}, {"dlq", "ls"}, {"dlq", "show", "1"},
				{"outbox", "ls"}, {"outbox", "ls", "--dead"}, {"replay", "a", "--watch"}, {"subscribers", "pause", "a"},
				{"dlq", "redrive", "1"}, {"dlq", "discard", "1", "--why", "w"}, {"replay", "a", "--from-stream-seq", "1"},
			} {
				if c.name == "empty body" && args[0] == "subscribers" && len(args) > 1 && args[1] == "pause" {
					continue // writes decode {"ok": true}: covered by "wrong shape"
				}
				r := runCLI(context.Background(), env, args...)
				if r.code != c.code || !strings.Contains(r.stderr, c.want) || strings.ContainsAny(r.stderr, "\x1b\a") {
					t.Errorf("boxcar %q: %s\nwant exit %d and %q, escaped", args, r, c.code, c.want)
				}
			}
		})
	}
}

// A health probe against garbage is not "unhealthy" (1) but unreachable
// (3); a redirect is not followed (it would carry the token elsewhere);
// a server that hangs fails at --timeout.
func TestProbeOfBadServers(t *testing.T) {
	html503 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(503)
		w.Write([]byte("<h1>Service Unavailable</h1>"))
	}))
	defer html503.Close()
	redirect := httptest.NewServer(http.RedirectHandler("http://evil.example/api/health", http.StatusFound))
	defer redirect.Close()
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer hang.Close()
	for _, c := range []struct {
		url, want string
	}{
		{html503.URL, "503 Service Unavailable"},
		{redirect.URL, "redirected to http://evil.example/api/health"},
		{hang.URL, "Timeout"},
		{closedURL(t), "connection refused"},
	} {
		r := runCLI(context.Background(), map[string]string{"BOXCAR_TOKEN": "t"}, "health", "--url", c.url, "--timeout", "300ms")
		if r.code != exitUnreachable || !strings.Contains(r.stderr, c.want) {
			t.Errorf("health of %s: %s\nwant exit 3 and %q", c.url, r, c.want)
		}
	}
}

// A write that went out and got no answer (the connection cut after the
// request, a hang past --timeout) says that the app may have done it and
// how to look, not only "unreachable"; a write that could not be sent (no
// server) does not.
func TestUnansweredWritesMayHaveBeenDone(t *testing.T) {
	cut := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // the request arrived whole
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	defer cut.Close()
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // then the server sees the client go
		<-r.Context().Done()
	}))
	defer hang.Close()
	writes := map[string][]string{
		"boxcar dlq show 7":            {"dlq", "redrive", "7"},
		"boxcar dlq ls --subscriber b": {"dlq", "redrive", "--subscriber", "b"},
		"boxcar dlq show 8":            {"dlq", "discard", "8", "--why", "w"},
		"boxcar subscribers show b":    {"subscribers", "pause", "b"},
		"boxcar replay b --watch":      {"replay", "b", "--from-stream-seq", "1"},
	}
	for look, args := range writes {
		for _, url := range []string{cut.URL, hang.URL} {
			r := runCLI(context.Background(), map[string]string{"BOXCAR_TOKEN": "t"}, append(args, "--url", url, "--timeout", "300ms")...)
			if r.code != exitUnreachable || !strings.Contains(r.stderr, "the app may have done it all the same ("+look+" shows whether it did)") {
				t.Errorf("boxcar %q, no answer from %s: %s\nwant exit 3 saying it may be done, and %q", args, url, r, look)
			}
		}
		r := runCLI(context.Background(), map[string]string{"BOXCAR_TOKEN": "t"}, append(args, "--url", closedURL(t))...)
		if r.code != exitUnreachable || strings.Contains(r.stderr, "may have done it") {
			t.Errorf("boxcar %q, not sent: %s\nwant exit 3 without a maybe", args, r)
		}
	}
}

// The token goes in clear over http to a host that is not loopback: the
// tool says so.
func TestTokenInClearWarning(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r := runCLI(ctx, map[string]string{"BOXCAR_TOKEN": "t"}, "status", "--url", "http://192.0.2.1:9/admin", "--timeout", "1ms")
	if !strings.Contains(r.stderr, "warning: the token goes in clear to 192.0.2.1") {
		t.Errorf("no warning: %s", r)
	}
	r = runCLI(ctx, map[string]string{"BOXCAR_TOKEN": "t"}, "status", "--url", closedURL(t))
	if strings.Contains(r.stderr, "warning") {
		t.Errorf("a warning for loopback: %s", r)
	}
}
