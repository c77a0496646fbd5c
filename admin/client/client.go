// Package client is a Go client of Boxcar's admin API (docs/ADMIN_API.md):
// the JSON API that admin.Handler serves under /api/ where the app mounts
// it. The boxcar CLI uses it for its online mode; scripts and other tools
// can too.
//
// Every method sends one request and decodes the root package's types
// (boxcar.Stats, boxcar.DeadLetter, ...). An error answered by the API is
// an *APIError, which matches the root package's sentinels with errors.Is
// (not_found is boxcar.ErrNotFound, read_only boxcar.ErrReadOnly, ...). A
// server that cannot be reached gives an error matching ErrUnreachable; an
// answer that is not the admin API's JSON (an HTML page, a proxy's error, a
// wrong --url) one matching ErrUnexpectedResponse.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/boxcar-bus/boxcar"
)

// Errors of requests that did not get an answer of the admin API.
var (
	// ErrUnreachable: the request did not get an HTTP answer (connection
	// refused, DNS, TLS, timeout).
	ErrUnreachable = errors.New("admin API unreachable")
	// ErrUnexpectedResponse: the answer is not the admin API's (not JSON,
	// not the expected shape, too large): the URL is probably not where
	// the admin handler is mounted.
	ErrUnexpectedResponse = errors.New("not an answer of Boxcar's admin API")
)

// MaxResponseBytes bounds the body of an answer the client reads. A page
// of dead letters carries their payloads: lower the limit of the request
// rather than raising this.
const MaxResponseBytes = 256 << 20

// APIError is an error the admin API answered: {"error": ..., "code": ...}.
type APIError struct {
	StatusCode int    // the HTTP status
	Code       string // invalid, unauthorized, forbidden, not_found, read_only, closed, internal
	Message    string // the "error" field
}

// Error returns the API's message and code.
func (e *APIError) Error() string { return fmt.Sprintf("%s (%s)", e.Message, e.Code) }

// Is matches the root package's sentinel of the API's code: not_found is
// boxcar.ErrNotFound, read_only boxcar.ErrReadOnly, closed boxcar.ErrClosed,
// invalid boxcar.ErrInvalidConfig and boxcar.ErrInvalidEvent.
func (e *APIError) Is(target error) bool {
	switch e.Code {
	case "not_found":
		return target == boxcar.ErrNotFound
	case "read_only":
		return target == boxcar.ErrReadOnly
	case "closed":
		return target == boxcar.ErrClosed
	case "invalid":
		return target == boxcar.ErrInvalidConfig || target == boxcar.ErrInvalidEvent
	}
	return false
}

// Options configures a Client.
type Options struct {
	// Token is sent as "Authorization: Bearer <Token>" on every request:
	// the write token (Options.Token of the handler) for writes, or the
	// read token for reads when the handler has one. Empty: none sent.
	Token string
	// Operator names the person acting (X-Boxcar-Operator), recorded with
	// every write. Empty: not sent (the API records "anonymous").
	Operator string
	// HTTPClient sends the requests. Default: a client with a 30s timeout.
	HTTPClient *http.Client
}

// Client talks to one admin handler. It is safe for concurrent use.
type Client struct {
	base *url.URL
	opts Options
}

// New returns a client of the admin handler mounted at baseURL (the
// handler's root: its API is at baseURL + "/api/..."), e.g.
// "http://127.0.0.1:8080/admin".
func New(baseURL string, opts Options) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("admin client: URL %q: %w", baseURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("admin client: URL %q: want http:// or https:// and a host, e.g. http://127.0.0.1:8080/admin", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("admin client: URL %q: give the handler's mount point, without a query or fragment", baseURL)
	}
	if err := checkHeaderValue("operator", opts.Operator); err != nil {
		return nil, err
	}
	if err := checkHeaderValue("token", opts.Token); err != nil {
		return nil, err
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	return &Client{base: u, opts: opts}, nil
}

// checkHeaderValue refuses a value that cannot be sent in a header as it
// is (a newline would end it).
func checkHeaderValue(what, v string) error {
	for _, r := range v {
		if r < ' ' || r == 0x7f || !unicode.IsPrint(r) && r != ' ' {
			return fmt.Errorf("admin client: the %s has a control character (%q): it cannot go in an HTTP header", what, r)
		}
	}
	return nil
}

// CloseIdleConnections closes the HTTP client's idle connections (see
// http.Client.CloseIdleConnections): call it when done with the client.
func (c *Client) CloseIdleConnections() { c.opts.HTTPClient.CloseIdleConnections() }

// URL returns the handler's root the client talks to.
func (c *Client) URL() string { return c.base.String() }

// do sends one request to path (below the handler's root, its segments
// escaped) with body (nil:
// none) encoded as JSON and decodes a 2xx answer into out (nil: ignored).
// Answers with a status in also are decoded into out too (the health
// probe's 503).
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any, also ...int) error {
	u := *c.base
	// path's segments are escaped (url.PathEscape): keep them so.
	u.RawPath = c.base.EscapedPath() + path
	p, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return fmt.Errorf("admin client: path %q: %w", path, err)
	}
	u.Path = p
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("admin client: encode %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return fmt.Errorf("admin client: %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.opts.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.opts.Token)
	}
	if c.opts.Operator != "" {
		req.Header.Set("X-Boxcar-Operator", c.opts.Operator)
	}
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %s %s: %w", ErrUnreachable, method, u.Redacted(), err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("%w: %s %s: reading the answer: %w", ErrUnreachable, method, u.Redacted(), err)
	}
	if len(raw) > MaxResponseBytes {
		return fmt.Errorf("%w: %s %s: the answer is larger than %d MiB: ask for fewer items (limit)", ErrUnexpectedResponse, method, u.Redacted(), MaxResponseBytes>>20)
	}
	return c.decode(method, u.Redacted(), resp, raw, out, also)
}

// decode turns an answer into out or an error.
func (c *Client) decode(method, where string, resp *http.Response, raw []byte, out any, also []int) error {
	ok := resp.StatusCode >= 200 && resp.StatusCode < 300
	for _, s := range also {
		ok = ok || resp.StatusCode == s
	}
	if !ok {
		var e struct {
			Error string `json:"error"`
			Code  string `json:"code"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Code != "" && e.Error != "" {
			return &APIError{StatusCode: resp.StatusCode, Code: e.Code, Message: e.Error}
		}
		return fmt.Errorf("%w: %s %s answered %s with %s", ErrUnexpectedResponse, method, where, resp.Status, describeBody(resp, raw))
	}
	if out == nil {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("%w: %s %s answered %s with %s: %v", ErrUnexpectedResponse, method, where, resp.Status, describeBody(resp, raw), err)
	}
	if dec.More() {
		return fmt.Errorf("%w: %s %s answered %s with more than one JSON value", ErrUnexpectedResponse, method, where, resp.Status)
	}
	return nil
}

// describeBody says what an unexpected body is, with its start quoted (it
// may be hostile: strconv.Quote escapes control characters).
func describeBody(resp *http.Response, raw []byte) string {
	ct := resp.Header.Get("Content-Type")
	if ct == "" {
		ct = "no content type"
	}
	if len(raw) == 0 {
		return "an empty body (" + ct + ")"
	}
	start := raw[:min(len(raw), 120)]
	more := ""
	if len(raw) > len(start) {
		more = "..."
	}
	return fmt.Sprintf("%d bytes of %s: %s%s", len(raw), ct, strconv.Quote(string(start)), more)
}

// Status is the answer of GET /api/status.
type Status struct {
	Stats  boxcar.Stats  `json:"stats"`
	Health boxcar.Health `json:"health"`
}

// Status returns the bus's Stats and Health.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.do(ctx, http.MethodGet, "/api/status", nil, nil, &st)
	return st, err
}

// Health returns the bus's Health, healthy or not (the API answers 503
// when its state is not ok; that is not an error here).
func (c *Client) Health(ctx context.Context) (boxcar.Health, error) {
	var h struct {
		boxcar.Health
		Error string `json:"error"`
		Code  string `json:"code"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/health", nil, nil, &h, http.StatusServiceUnavailable); err != nil {
		return boxcar.Health{}, err
	}
	if h.Code != "" { // a 503 of a closed bus
		return boxcar.Health{}, &APIError{StatusCode: http.StatusServiceUnavailable, Code: h.Code, Message: h.Error}
	}
	if h.State == "" {
		return boxcar.Health{}, fmt.Errorf("%w: GET /api/health: the answer has no state", ErrUnexpectedResponse)
	}
	return h.Health, nil
}
