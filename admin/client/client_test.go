package client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/boxcar-bus/boxcar"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// request is what the server saw of one request.
type request struct {
	method, uri, body, auth, operator, ctype string
}

// recorder is a server that records the requests and answers each with
// the next of its answers (status, body).
type recorder struct {
	mu      sync.Mutex
	seen    []request
	status  int
	answer  string
	srv     *httptest.Server
	baseURL string
}

func newRecorder(t *testing.T, status int, answer string) *recorder {
	r := &recorder{status: status, answer: answer}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.seen = append(r.seen, request{req.Method, req.RequestURI, string(b), req.Header.Get("Authorization"), req.Header.Get("X-Boxcar-Operator"), req.Header.Get("Content-Type")})
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(r.status)
		io.WriteString(w, r.answer)
	}))
	t.Cleanup(r.srv.Close)
	r.baseURL = r.srv.URL + "/mount/admin/"
	return r
}

func (r *recorder) last(t *testing.T) request {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.seen) == 0 {
		t.Fatal("no request")
	}
	return r.seen[len(r.seen)-1]
}

func newClient(t *testing.T, base string) *Client {
	t.Helper()
	c, err := New(base, Options{Token: "tok", Operator: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// The requests are the contract's (docs/ADMIN_API.md) to the letter: the
// routes below the mount point, only the filters set, bodies with exactly
// the documented fields, the credentials in their headers.
func TestRequestsFollowTheContract(t *testing.T) {
	ctx := context.Background()
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name   string
		answer string
		call   func(c *Client) error
		want   request
	}{
		{"status", `{}`, func(c *Client) error { _, err := c.Status(ctx); return err },
			request{method: "GET", uri: "/mount/admin/api/status"}},
		{"dead letters filtered", `{"items":[],"next":0}`, func(c *Client) error {
			_, _, err := c.DeadLetters(ctx, boxcar.DeadLetterFilter{Subscriber: "billing", Key: "a b/c", After: 7, Limit: 5})
			return err
		}, request{method: "GET", uri: "/mount/admin/api/deadletters?after=7&key=a+b%2Fc&limit=5&subscriber=billing"}},
		{"dead letters unfiltered", `{"items":[]}`, func(c *Client) error { _, _, err := c.DeadLetters(ctx, boxcar.DeadLetterFilter{}); return err },
			request{method: "GET", uri: "/mount/admin/api/deadletters"}},
		{"pause until", `{"ok":true}`, func(c *Client) error { return c.Pause(ctx, "billing", at, "why not") },
			request{method: "POST", uri: "/mount/admin/api/subscribers/billing/pause", body: `{"until":"2026-12-01T10:00:00Z","why":"why not"}`}},
		{"pause", `{"ok":true}`, func(c *Client) error { return c.Pause(ctx, "billing", time.Time{}, "") },
			request{method: "POST", uri: "/mount/admin/api/subscribers/billing/pause", body: `{"why":""}`}},
		{"replay from outbox seq", `{"subscriber":"billing"}`, func(c *Client) error {
			_, err := c.Replay(ctx, "billing", boxcar.ReplayFrom{OutboxSeq: 12}, true, "rebuild")
			return err
		}, request{method: "POST", uri: "/mount/admin/api/subscribers/billing/replay", body: `{"from":{"outbox_seq":12},"no_dedupe":true,"why":"rebuild"}`}},
		{"replay from time", `{}`, func(c *Client) error {
			_, err := c.Replay(ctx, "billing", boxcar.ReplayFrom{Time: at}, false, "")
			return err
		}, request{method: "POST", uri: "/mount/admin/api/subscribers/billing/replay", body: `{"from":{"time":"2026-12-01T10:00:00Z"},"no_dedupe":false,"why":""}`}},
		{"redrive all", `{"redriven":[3],"done":0}`, func(c *Client) error { _, err := c.RedriveAll(ctx, "billing", "k", "w"); return err },
			request{method: "POST", uri: "/mount/admin/api/deadletters/redrive", body: `{"subscriber":"billing","key":"k","why":"w"}`}},
		{"discard", `{"discarded":true}`, func(c *Client) error { _, err := c.Discard(ctx, 9, "junk"); return err },
			request{method: "POST", uri: "/mount/admin/api/deadletters/9/discard", body: `{"why":"junk"}`}},
		{"outbox dead page", `{"items":[],"total":0}`, func(c *Client) error { _, _, _, err := c.OutboxDead(ctx, 4, "01ABC", 10); return err },
			request{method: "GET", uri: "/mount/admin/api/outbox/dead?after_id=01ABC&after_seq=4&limit=10"}},
		{"a name escaped", `{}`, func(c *Client) error { _, err := c.Subscriber(ctx, "a/b c"); return err },
			request{method: "GET", uri: "/mount/admin/api/subscribers/a%2Fb%20c"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := newRecorder(t, 200, c.answer)
			if err := c.call(newClient(t, rec.baseURL)); err != nil {
				t.Fatal(err)
			}
			got := rec.last(t)
			if got.method != c.want.method || got.uri != c.want.uri || got.body != c.want.body {
				t.Fatalf("sent %s %s %s\nwant %s %s %s", got.method, got.uri, got.body, c.want.method, c.want.uri, c.want.body)
			}
			if got.auth != "Bearer tok" || got.operator != "alice" {
				t.Errorf("credentials %q, operator %q", got.auth, got.operator)
			}
			if (got.body != "") != (got.ctype == "application/json") {
				t.Errorf("content type %q with body %q", got.ctype, got.body)
			}
		})
	}
}

// The API's errors match the root package's sentinels; what is not the
// API's is ErrUnexpectedResponse; answers that lack what a write returns
// are not taken as success.
func TestErrors(t *testing.T) {
	ctx := context.Background()
	for code, sentinel := range map[string]error{"not_found": boxcar.ErrNotFound, "read_only": boxcar.ErrReadOnly, "closed": boxcar.ErrClosed, "invalid": boxcar.ErrInvalidConfig} {
		rec := newRecorder(t, 404, `{"error":"boxcar: nope","code":"`+code+`"}`)
		_, err := newClient(t, rec.baseURL).DeadLetter(ctx, 1)
		var apiErr *APIError
		if !errors.Is(err, sentinel) || !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Message != "boxcar: nope" {
			t.Errorf("code %s: %v, want %v", code, err, sentinel)
		}
		if errors.Is(err, ErrUnexpectedResponse) {
			t.Errorf("code %s: an API error taken for garbage", code)
		}
	}
	rec := newRecorder(t, 200, `{}`)
	c := newClient(t, rec.baseURL)
	if err := c.Resume(ctx, "b", ""); !errors.Is(err, ErrUnexpectedResponse) {
		t.Errorf("resume answered {}: %v", err)
	}
	if _, err := c.Discard(ctx, 1, ""); !errors.Is(err, ErrUnexpectedResponse) {
		t.Errorf("discard answered {}: %v", err)
	}
	if _, err := c.Health(ctx); !errors.Is(err, ErrUnexpectedResponse) {
		t.Errorf("health answered {}: %v", err)
	}
	rec = newRecorder(t, 503, `{"state":"stalled","components":[]}`)
	if h, err := newClient(t, rec.baseURL).Health(ctx); err != nil || h.State != boxcar.HealthStalled {
		t.Errorf("health 503 with a Health: %+v %v", h, err)
	}
	rec = newRecorder(t, 503, `{"error":"boxcar: closed","code":"closed"}`)
	if _, err := newClient(t, rec.baseURL).Health(ctx); !errors.Is(err, boxcar.ErrClosed) {
		t.Errorf("health of a closed bus: %v", err)
	}
	rec = newRecorder(t, 200, strings.Repeat(" ", 10)+`{"items":[]}`)
	if _, err := newClient(t, rec.baseURL).Subscribers(ctx); err != nil {
		t.Errorf("JSON after spaces: %v", err)
	}
}

func TestNewRefuses(t *testing.T) {
	for _, c := range []struct {
		url  string
		opts Options
	}{
		{"127.0.0.1:8080", Options{}},
		{"file:///etc/passwd", Options{}},
		{"http:///nohost", Options{}},
		{"http://h/admin#frag", Options{}},
		{"http://h/admin", Options{Operator: "bob\nX-Evil: 1"}},
		{"http://h/admin", Options{Token: "tok\r\n"}},
	} {
		if _, err := New(c.url, c.opts); err == nil {
			t.Errorf("New(%q, %+v) accepted", c.url, c.opts)
		}
	}
}
