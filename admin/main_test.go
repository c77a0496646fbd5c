package admin_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/admin"
	"github.com/boxcar-bus/boxcar/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The tokens of the tests' handlers.
var (
	writeToken = boxcar.NewSecret()
	readToken  = boxcar.NewSecret()
)

// bundle is what a test needs: a real bus on a database file in a temp
// dir, the admin handler on it served by a real HTTP server, and the audit
// log.
type bundle struct {
	t      *testing.T
	ctx    context.Context
	dbPath string
	db     *sql.DB
	cfg    boxcar.Config
	bus    *boxcar.Bus
	srv    *httptest.Server
	logs   *syncBuffer
	broken atomic.Bool // billing fails the keys starting with "bad"
}

// setup opens the bus and serves the handler with opts (its Logger set to
// the bundle's log if nil). Everything is closed at the end of the test.
func setup(t *testing.T, opts admin.Options) *bundle {
	t.Helper()
	return setupConfig(t, boxcar.Config{}, opts)
}

// setupConfig is setup with the bus's Config cfg (its Dir set).
func setupConfig(t *testing.T, cfg boxcar.Config, opts admin.Options) *bundle {
	t.Helper()
	dir := t.TempDir()
	cfg.Dir = filepath.Join(dir, "nats")
	b := &bundle{t: t, ctx: context.Background(), logs: &syncBuffer{}, cfg: cfg}
	b.broken.Store(true)
	b.dbPath = filepath.Join(dir, "app.db")
	db, err := sqlite.Open(b.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	b.db = db
	t.Cleanup(func() { db.Close() })
	if b.bus, err = boxcar.Open(b.ctx, db, b.cfg); err != nil {
		t.Fatal(err)
	}
	bus := b.bus
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := bus.Close(ctx); err != nil && !errors.Is(err, boxcar.ErrClosed) {
			t.Errorf("close bus: %v", err)
		}
	})
	b.srv = b.serve(opts)
	return b
}

// serve serves a handler of opts on the bundle's bus.
func (b *bundle) serve(opts admin.Options) *httptest.Server {
	b.t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewJSONHandler(b.logs, nil))
	}
	h, err := admin.NewHandler(b.bus, opts)
	if err != nil {
		b.t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	b.t.Cleanup(srv.Close)
	return srv
}

// subscribeBilling subscribes "billing": a TxHandler that dead-letters at
// once (Permanent) the events whose key starts with "bad" or that carry an
// X-Fail header, while b.broken is set.
func (b *bundle) subscribeBilling(opts boxcar.SubscribeOptions) *boxcar.Subscription {
	b.t.Helper()
	s, err := b.bus.Subscribe(b.ctx, "billing", boxcar.TxHandler(func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
		if b.broken.Load() && (strings.HasPrefix(m.Key, "bad") || m.Headers["X-Fail"] != "") {
			return boxcar.Permanent(fmt.Errorf("bad address for %s", m.Key))
		}
		return nil
	}), opts)
	if err != nil {
		b.t.Fatal(err)
	}
	return s
}

// publish publishes one order.placed event of key per data.
func (b *bundle) publish(key string, data ...string) {
	b.t.Helper()
	for _, d := range data {
		if err := b.bus.Publish(b.ctx, boxcar.Event{Type: "order.placed", Key: key, Data: []byte(d)}); err != nil {
			b.t.Fatal(err)
		}
	}
}

// waitLetters waits until the bus holds n dead letters and returns them.
func (b *bundle) waitLetters(n int) []boxcar.DeadLetter {
	b.t.Helper()
	var letters []boxcar.DeadLetter
	waitFor(b.t, fmt.Sprintf("%d dead letters", n), func() (bool, string) {
		letters = letters[:0]
		for f := (boxcar.DeadLetterFilter{Limit: 1000}); ; { // pages end at boxcar.MaxPageBytes too
			page, next, err := b.bus.DeadLetters(b.ctx, f)
			if err != nil {
				return false, err.Error()
			}
			if letters = append(letters, page...); next == 0 {
				break
			}
			f.After = next
		}
		return len(letters) == n, fmt.Sprint(len(letters))
	})
	return letters
}

// letter returns dead letter seq as the library has it.
func (b *bundle) letter(seq uint64) boxcar.DeadLetter {
	b.t.Helper()
	dl, err := b.bus.DeadLetter(b.ctx, seq)
	if err != nil {
		b.t.Fatal(err)
	}
	return dl
}

// waitFor polls cond until it holds, or fails the test after a minute.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s; last state: %s", what, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// response is what a request got.
type response struct {
	status int
	header http.Header
	body   []byte
}

// code is the "code" of an error body.
func (r response) code() string {
	var e struct{ Code string }
	json.Unmarshal(r.body, &e)
	return e.Code
}

func (r response) String() string { return fmt.Sprintf("%d %s", r.status, r.body) }

// do sends a request to srv; headers are name, value pairs. It does not
// follow redirects.
func (b *bundle) do(srv *httptest.Server, method, path, body string, headers ...string) response {
	b.t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		b.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	c := *srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	res, err := c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: data}
}

// get reads path from the bundle's server, decoding a 200's JSON into v
// (if not nil).
func (b *bundle) get(path string, v any, headers ...string) response {
	b.t.Helper()
	r := b.do(b.srv, http.MethodGet, path, "", headers...)
	if v != nil && r.status == http.StatusOK {
		if err := json.Unmarshal(r.body, v); err != nil {
			b.t.Fatalf("GET %s: %v in %s", path, err, r.body)
		}
	}
	return r
}

// post writes to path on the bundle's server with the write token, as
// operator "alice".
func (b *bundle) post(path, body string, v any) response {
	b.t.Helper()
	r := b.do(b.srv, http.MethodPost, path, body, "Authorization", "Bearer "+writeToken, admin.OperatorHeader, "alice")
	if v != nil && r.status == http.StatusOK {
		if err := json.Unmarshal(r.body, v); err != nil {
			b.t.Fatalf("POST %s: %v in %s", path, err, r.body)
		}
	}
	return r
}

// want fails the test unless r has status and, for an error, code.
func want(t *testing.T, what string, r response, status int, code string) {
	t.Helper()
	if r.status != status || (code != "" && r.code() != code) {
		t.Fatalf("%s: %s, want %d %s", what, r, status, code)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// syncBuffer is a buffer for a logger, safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

// lines returns the JSON log lines written so far.
func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(s.buf.Bytes()), []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}
