package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/boxcar-bus/boxcar"
)

// refreshSeconds is the auto-refresh period the page's toggle sets.
const refreshSeconds = 10

// How much of each list the overview shows; the list pages page on.
const (
	overviewLetters = 20
	overviewOutbox  = 20
)

// routePage registers the status page's routes and its forms'.
func (h *handler) routePage() {
	m := h.mux
	// Every page but the error's reads letters.
	m.HandleFunc("GET /{$}", h.page("overview", h.overviewPage))
	m.HandleFunc("GET /subscribers/{name}", h.page("subscriber", h.subscriberPage))
	m.HandleFunc("GET /deadletters", h.page("deadletters", h.deadLettersPage))
	m.HandleFunc("GET /deadletters/{seq}", h.page("deadletter", h.deadLetterPage))
	m.HandleFunc("GET /outbox", h.page("outbox", h.outboxPage))
	h.routeActions()
	m.HandleFunc("/", h.pageRead(func(w http.ResponseWriter, r *http.Request) {
		h.errorPage(w, r, notFoundf("no page %s %s", r.Method, r.URL.Path))
	}))
}

// pageFunc builds a page's data from a request whose query q holds only the
// page's own parameters.
type pageFunc func(r *http.Request, q url.Values) (title string, data any, err error)

// pageRead checks the read credential of a page (Bearer, or the HTTP Basic
// password browsers ask for), then serves next.
func (h *handler) pageRead(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h.checkRead(r, true); err != nil {
			// 401 for a wrong password too: the browser asks again.
			w.Header().Set("WWW-Authenticate", `Basic realm="boxcar admin", charset="UTF-8"`)
			h.render.write(w, http.StatusUnauthorized, "error", h.viewOf(r, "Sign in", errorView{Status: http.StatusUnauthorized, Code: codeUnauthorized, Message: err.Error()}))
			return
		}
		next(w, r)
	}
}

// page serves a page: the credential, the common parameters (flash,
// refresh), the page's data, the template.
func (h *handler) page(name string, build pageFunc) http.HandlerFunc {
	return h.pageRead(func(w http.ResponseWriter, r *http.Request) {
		release, err := h.letterTurn(w, r, h.pageTurns, pageTurnWrite)
		if err != nil {
			h.errorPage(w, r, err)
			return
		}
		defer release()
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			h.errorPage(w, r, invalidf("malformed query: %v", err))
			return
		}
		v := h.viewOf(r, "", nil)
		if id := q.Get("flash"); id != "" {
			if f, ok := h.flash.get(id); ok {
				v.Flash = &f
			}
		}
		if q.Get("refresh") == "on" {
			v.Refresh = refreshSeconds
		}
		v.Toggle = toggleOf(r.URL.Path, q)
		q.Del("flash")
		q.Del("refresh")
		v.Title, v.Page, err = build(r, q)
		if err != nil {
			h.errorPage(w, r, err)
			return
		}
		h.render.write(w, http.StatusOK, name, v)
	})
}

// toggleOf is the link of the page at path with auto-refresh switched.
func toggleOf(path string, q url.Values) string {
	t := url.Values{}
	for k, v := range q {
		if k != "flash" && k != "refresh" {
			t[k] = v
		}
	}
	if q.Get("refresh") != "on" {
		t.Set("refresh", "on")
	}
	base := path[len(path)-len(lastSegment(path)):]
	if base == "" {
		base = "./"
	}
	if len(t) == 0 {
		return base
	}
	return base + "?" + t.Encode()
}

func lastSegment(path string) string {
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] == '/' {
			return path[i+1:]
		}
	}
	return path
}

func (h *handler) viewOf(r *http.Request, title string, page any) view {
	return view{Title: title, Root: rootOf(r.URL.Path), CanWrite: h.opts.Token != "", Now: time.Now(), Page: page}
}

// errorView is the error page's data.
type errorView struct {
	Status  int
	Code    string
	Message string
	Back    string // a link relative to the root, "" for none
}

func (h *handler) errorPage(w http.ResponseWriter, r *http.Request, err error) {
	h.errorPageBack(w, r, err, "")
}

func (h *handler) errorPageBack(w http.ResponseWriter, r *http.Request, err error, back string) {
	ae := errorOf(err)
	v := h.viewOf(r, fmt.Sprintf("%d %s", ae.status, http.StatusText(ae.status)), errorView{Status: ae.status, Code: ae.code, Message: ae.msg, Back: back})
	h.render.write(w, ae.status, "error", v)
}

// onlyParams refuses parameters other than allowed (and flash, refresh).
func onlyParams(q url.Values, allowed ...string) error {
	for k, v := range q {
		if !slices.Contains(allowed, k) {
			return invalidf("unknown query parameter %q", k)
		}
		if len(v) > 1 {
			return invalidf("query parameter %q is given %d times: give it once", k, len(v))
		}
	}
	return nil
}

// overview is the data of the page at /.
type overview struct {
	Stats   boxcar.Stats
	Health  boxcar.Health
	Relay   []boxcar.ComponentHealth // relay and outbox
	Subs    []subscriberView
	SubsErr string
	Letters letterList
	Outbox  outboxView
}

func (h *handler) overviewPage(r *http.Request, q url.Values) (string, any, error) {
	if err := onlyParams(q); err != nil {
		return "", nil, err
	}
	ctx := r.Context()
	st, err := h.bus.Stats(ctx)
	if err != nil {
		return "", nil, err
	}
	hl, err := h.bus.Health(ctx)
	if err != nil {
		return "", nil, err
	}
	o := overview{Stats: st, Health: hl}
	for _, c := range hl.Components {
		if c.Component != "subscriber" {
			o.Relay = append(o.Relay, c)
		}
	}
	o.Subs, err = h.subscriberViews(ctx, hl)
	if err != nil {
		o.SubsErr = err.Error()
	}
	o.Letters = h.letterList(ctx, boxcar.DeadLetterFilter{State: boxcar.DeadLetterPending, Limit: overviewLetters})
	o.Outbox = h.outboxView(ctx, 0, 0, "", overviewOutbox)
	return "Boxcar: " + string(hl.State), o, nil
}

// subscriberView is a subscriber with what the page derives from it.
type subscriberView struct {
	boxcar.SubscriberInfo
	Health   *boxcar.ComponentHealth
	Depth    boxcar.DeadLetterDepth
	Lag      int64
	Rate     string // mean handled per second since it started here,
	RateOver string // over this long
	P50, P99 string // end-to-end latency, bucket bounds
	Replay   *replayProgress
}

func (h *handler) subscriberViews(ctx context.Context, hl boxcar.Health) ([]subscriberView, error) {
	subs, err := h.bus.Subscribers(ctx)
	if err != nil {
		return nil, err
	}
	depths, derr := h.bus.DeadLetterDepths(ctx)
	out := make([]subscriberView, 0, len(subs))
	for _, s := range subs {
		out = append(out, subscriberViewOf(s, hl, depths, time.Now()))
	}
	if derr != nil {
		return out, fmt.Errorf("dead-letter depths: %w", derr)
	}
	return out, nil
}

func subscriberViewOf(s boxcar.SubscriberInfo, hl boxcar.Health, depths map[string]boxcar.DeadLetterDepth, now time.Time) subscriberView {
	v := subscriberView{SubscriberInfo: s, Depth: depths[s.Name], Lag: int64(s.Pending) + int64(s.Unacked), Replay: replayProgressOf(s.Replay)}
	for i, c := range hl.Components {
		if c.Component == "subscriber" && c.Name == s.Name {
			v.Health = &hl.Components[i]
		}
	}
	if s.Stats != nil {
		v.Rate, v.RateOver = rateSince(s.Stats.Handled, s.Started, now)
		if e := s.Stats.EndToEnd; e.Count > 0 {
			v.P50 = "≤ " + fmtDuration(time.Duration(e.Quantile(0.5)*float64(time.Second)))
			v.P99 = "≤ " + fmtDuration(time.Duration(e.Quantile(0.99)*float64(time.Second)))
		}
	}
	return v
}

// rateSince is the mean rate of n events since start, and the time it is
// over: the counters count since the subscriber started in this process,
// and so does the rate (a difference between two page loads would not be
// a rate of anything).
func rateSince(n int64, start, now time.Time) (string, string) {
	el := now.Sub(start)
	if start.IsZero() || el <= 0 {
		return "", ""
	}
	return fmt.Sprintf("%.1f/s", float64(n)/el.Seconds()), fmtDuration(el)
}

// letterList is a page of dead letters, or why it could not be read.
type letterList struct {
	Filter boxcar.DeadLetterFilter
	Items  []boxcar.DeadLetter
	Next   string // the link to the next page, "" for none
	Err    string
	cause  error
}

// letterList reads a page of the letters f selects. The library ends a
// call's page short when its letters reach boxcar.MaxPageBytes, or when it
// read 10,000 letters the filter passed over; a page of the status page
// shows no payload, so it drops each call's payloads and headers and reads
// on, until the page is full, the stream ends or it went maxLetterScan seqs
// past f.After (the Next link goes on).
func (h *handler) letterList(ctx context.Context, f boxcar.DeadLetterFilter) letterList {
	l := letterList{Filter: f}
	limit := f.Limit
	if limit <= 0 {
		limit = defaultLimit
	}
	q := f
	q.Limit = limit
	var next uint64
	for {
		items, n, err := h.bus.DeadLetters(ctx, q)
		if err != nil {
			l.Err, l.cause = err.Error(), err
			return l
		}
		for i := range items {
			items[i].Data, items[i].Headers = nil, nil
		}
		l.Items, next = append(l.Items, items...), n
		if len(l.Items) == limit || next == 0 || next-f.After >= maxLetterScan {
			break
		}
		q.After, q.Limit = next, limit-len(l.Items)
	}
	if next != 0 {
		l.Next = "deadletters?" + filterQuery(f, next).Encode()
	}
	return l
}

// maxLetterScan bounds how far one list of a page reads on (in letters of
// the dead-letter stream) to fill a page of a state.
const maxLetterScan = 10_000

// filterQuery is f as the list's query, at page after.
func filterQuery(f boxcar.DeadLetterFilter, after uint64) url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"subscriber": f.Subscriber, "type": f.Type, "key": f.Key, "reason": f.Reason, "state": string(f.State)} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if after != 0 {
		q.Set("after", strconv.FormatUint(after, 10))
	}
	if f.Limit != 0 && f.Limit != defaultLimit {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	return q
}
