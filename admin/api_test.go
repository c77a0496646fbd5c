package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/admin"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// NewHandler refuses options it cannot serve safely, naming the field, and
// a nil bus.
func TestNewHandlerRefusesBadOptions(t *testing.T) {
	t.Parallel()
	for name, opts := range map[string]admin.Options{
		"short token":         {Token: "short"},
		"token with a space":  {Token: "a token with spaces in it"},
		"short read token":    {Token: writeToken, ReadToken: "x"},
		"read token is token": {Token: writeToken, ReadToken: writeToken},
	} {
		if _, err := admin.NewHandler(nil, opts); err == nil || !strings.Contains(err.Error(), "Options.") {
			t.Errorf("%s: %v, want an error naming the field", name, err)
		}
	}
	if _, err := admin.NewHandler(nil, admin.Options{Token: writeToken}); err == nil || !strings.Contains(err.Error(), "bus is nil") {
		t.Errorf("nil bus: %v", err)
	}
}

// Every read route answers with the library's types as the contract says;
// unknown subscribers, letters, replays and routes are not_found; lists are
// [] when empty, never null.
func TestReadRoutes(t *testing.T) {
	t.Parallel()
	b := setup(t, admin.Options{Token: writeToken})
	b.subscribeBilling(boxcar.SubscribeOptions{})
	if _, err := b.bus.Subscribe(b.ctx, "audit", boxcar.HandlerFunc(func(ctx context.Context, m boxcar.Message) error { return nil }),
		boxcar.SubscribeOptions{Types: []string{"order.placed"}}); err != nil {
		t.Fatal(err)
	}
	b.publish("good", "1", "2", "3")
	b.publish("bad", `{"n":4}`)
	letter := b.waitLetters(1)[0]

	var status struct {
		Stats  boxcar.Stats  `json:"stats"`
		Health boxcar.Health `json:"health"`
	}
	want(t, "status", b.get("/api/status", &status), 200, "")
	if status.Stats.RelayCursor != 4 || len(status.Stats.Subscribers) != 2 || status.Health.State == "" || len(status.Health.Components) < 4 {
		t.Fatalf("status %+v", status)
	}
	var subs struct{ Items []boxcar.SubscriberInfo }
	want(t, "subscribers", b.get("/api/subscribers", &subs), 200, "")
	if len(subs.Items) != 2 || subs.Items[0].Name != "audit" || subs.Items[1].Name != "billing" || subs.Items[0].Kind != "plain" {
		t.Fatalf("subscribers %+v", subs)
	}
	var billing boxcar.SubscriberInfo
	want(t, "billing", b.get("/api/subscribers/billing", &billing), 200, "")
	if billing.Name != "billing" || billing.Kind != "tx" || !billing.Running || billing.Stats == nil || billing.Stats.DeadLettered != 1 {
		t.Fatalf("billing %+v", billing)
	}
	want(t, "unknown subscriber", b.get("/api/subscribers/nobody", nil), 404, "not_found")
	want(t, "malformed subscriber", b.get("/api/subscribers/a%2F..%2Fb", nil), 400, "invalid")
	want(t, "no replay", b.get("/api/subscribers/billing/replay", nil), 404, "not_found")

	var list struct {
		Items []boxcar.DeadLetter
		Next  uint64
	}
	want(t, "dead letters", b.get("/api/deadletters", &list), 200, "")
	if len(list.Items) != 1 || list.Items[0].Key != "bad" || list.Next != 0 {
		t.Fatalf("dead letters %+v", list)
	}
	filtered := "/api/deadletters?subscriber=billing&type=order.placed&key=bad&reason=permanent&state=pending&limit=5"
	if want(t, "filtered", b.get(filtered, &list), 200, ""); len(list.Items) != 1 {
		t.Fatalf("filtered dead letters %+v", list)
	}
	for _, empty := range []string{"/api/deadletters?key=good", "/api/deadletters?state=redriven", "/api/outbox", "/api/outbox/dead"} {
		r := b.get(empty, nil)
		if want(t, empty, r, 200, ""); !bytes.Contains(r.body, []byte(`"items":[]`)) {
			t.Fatalf("%s: %s, want an empty list", empty, r.body)
		}
	}
	var dl boxcar.DeadLetter
	want(t, "dead letter", b.get(fmt.Sprintf("/api/deadletters/%d", letter.Seq), &dl), 200, "")
	if dl.Seq != letter.Seq || dl.Key != "bad" || string(dl.Data) != `{"n":4}` || dl.State != boxcar.DeadLetterPending || dl.Reason != "permanent" {
		t.Fatalf("dead letter %+v", dl)
	}
	want(t, "unknown letter", b.get("/api/deadletters/999", nil), 404, "not_found")
	var dead struct {
		Items []boxcar.OutboxDeadLetter
		Total int
	}
	if want(t, "outbox dead", b.get("/api/outbox/dead?after_seq=0&limit=10", &dead), 200, ""); dead.Total != 0 {
		t.Fatalf("outbox dead %+v", dead)
	}
	want(t, "unknown route", b.get("/api/nothing", nil), 404, "not_found")
	want(t, "wrong method", b.post("/api/status", "", nil), 404, "not_found")
	want(t, "GET of a write route", b.get(fmt.Sprintf("/api/deadletters/%d/redrive", letter.Seq), nil), 404, "not_found")
}

// Every malformed parameter is refused with invalid, and changes nothing.
func TestInvalidParametersAreRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, admin.Options{Token: writeToken})
	b.subscribeBilling(boxcar.SubscribeOptions{})
	b.publish("bad", "1")
	seq := b.waitLetters(1)[0].Seq
	for _, path := range []string{
		"/api/deadletters/0", "/api/deadletters/abc", "/api/deadletters/-1", "/api/deadletters/1.5", "/api/deadletters/+1",
		"/api/deadletters/99999999999999999999999",
		"/api/deadletters?limit=0", "/api/deadletters?limit=1001", "/api/deadletters?limit=x", "/api/deadletters?limit=1&limit=2",
		"/api/deadletters?state=lost", "/api/deadletters?reason=bogus", "/api/deadletters?after=-1", "/api/deadletters?after=x",
		"/api/deadletters?subscriber=a.b", "/api/deadletters?subscriber=a*", "/api/deadletters?type=order..placed",
		"/api/deadletters?subcriber=billing", "/api/deadletters?key=" + strings.Repeat("k", 513), "/api/deadletters?%zz",
		"/api/outbox?after=x", "/api/outbox?limit=0", "/api/outbox?limit=5000", "/api/outbox?before=1",
		"/api/outbox/dead?after_seq=-1", "/api/outbox/dead?after_id=" + strings.Repeat("x", 65), "/api/outbox/dead?limit=-3",
		"/api/status?verbose=1", "/api/subscribers/billing?x=1", "/api/subscribers/" + strings.Repeat("n", 65),
	} {
		want(t, "GET "+path, b.get(path, nil), 400, "invalid")
	}
	for _, path := range []string{"/api/deadletters/0/redrive", "/api/deadletters/abc/redrive", "/api/deadletters/-1/discard",
		"/api/subscribers/a*b/pause", "/api/subscribers/a.b/replay"} {
		want(t, "POST "+path, b.post(path, `{}`, nil), 400, "invalid")
	}
	if dl := b.letter(seq); dl.State != boxcar.DeadLetterPending {
		t.Fatalf("after the refused requests the letter is %s", dl.State)
	}
}

// Writes need the write token: none is 401 with WWW-Authenticate, a wrong
// one (the read token too) 403, and a handler without Token refuses every
// write with 403. Nothing is done.
func TestWritesNeedTheWriteToken(t *testing.T) {
	t.Parallel()
	b := setup(t, admin.Options{Token: writeToken, ReadToken: readToken})
	b.subscribeBilling(boxcar.SubscribeOptions{})
	b.publish("bad", "1")
	seq := b.waitLetters(1)[0].Seq
	path := fmt.Sprintf("/api/deadletters/%d/redrive", seq)

	r := b.do(b.srv, "POST", path, `{}`)
	want(t, "no credential", r, 401, "unauthorized")
	if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("401 without WWW-Authenticate: Bearer: %v", r.header)
	}
	want(t, "Basic credential", b.do(b.srv, "POST", path, `{}`, "Authorization", "Basic "+writeToken), 401, "unauthorized")
	want(t, "wrong token", b.do(b.srv, "POST", path, `{}`, "Authorization", "Bearer "+writeToken+"x"), 403, "forbidden")
	want(t, "read token", b.do(b.srv, "POST", path, `{}`, "Authorization", "Bearer "+readToken), 403, "forbidden")
	readOnly := b.serve(admin.Options{})
	want(t, "read-only handler", b.do(readOnly, "POST", path, `{}`, "Authorization", "Bearer "+writeToken), 403, "forbidden")
	want(t, "read-only handler, pause", b.do(readOnly, "POST", "/api/subscribers/billing/pause", `{}`), 403, "forbidden")
	if dl := b.letter(seq); dl.State != boxcar.DeadLetterPending {
		t.Fatalf("a refused write changed the letter: %s", dl.State)
	}
	if info, _ := b.bus.Subscribers(b.ctx); info[0].Paused {
		t.Fatal("a refused pause paused")
	}
	want(t, "read-only handler reads", b.do(readOnly, "GET", "/api/subscribers", ""), 200, "")
}

// With ReadToken, reads need the read or the write token (Bearer on the
// API; the page also takes it as a Basic password, and asks for one).
func TestReadTokenGuardsReads(t *testing.T) {
	t.Parallel()
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "boxcar_outbox_pending_events 0") })
	b := setup(t, admin.Options{Token: writeToken, ReadToken: readToken, Metrics: metrics})
	want(t, "metrics without credential", b.get("/metrics", nil), 401, "")
	if r := b.get("/metrics", nil, "Authorization", "Bearer "+readToken); r.status != 200 || !bytes.Contains(r.body, []byte("boxcar_outbox_pending_events")) {
		t.Fatalf("the Metrics hook: %s", r)
	}
	r := b.get("/api/status", nil)
	want(t, "no credential", r, 401, "unauthorized")
	if r.header.Get("WWW-Authenticate") == "" {
		t.Fatal("401 without WWW-Authenticate")
	}
	want(t, "wrong token", b.get("/api/status", nil, "Authorization", "Bearer nope-nope-nope-nope"), 403, "forbidden")
	want(t, "read token", b.get("/api/status", nil, "Authorization", "Bearer "+readToken), 200, "")
	want(t, "write token", b.get("/api/health", nil, "Authorization", "Bearer "+writeToken), 200, "")
	basic := "Basic " + b64("ops:"+readToken)
	want(t, "Basic on the API", b.get("/api/status", nil, "Authorization", basic), 401, "unauthorized")

	r = b.get("/", nil)
	if r.status != 401 || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic") {
		t.Fatalf("page without credential: %d %v, want 401 asking for Basic", r.status, r.header)
	}
	if r := b.get("/", nil, "Authorization", "Basic "+b64("ops:wrong")); r.status != 401 {
		t.Fatalf("page with a wrong password: %d, want 401 (asked again)", r.status)
	}
	if r := b.get("/", nil, "Authorization", basic); r.status != 200 || !bytes.Contains(r.body, []byte("Health")) {
		t.Fatalf("page with the read token: %s", r)
	}
}

// Bodies are bounded and strict: too large, malformed, unknown fields,
// wrong types, two values are refused with invalid, as are bad operator
// names; nothing is done. An empty body is an empty object.
func TestBodiesAreBoundedAndStrict(t *testing.T) {
	t.Parallel()
	b := setup(t, admin.Options{Token: writeToken})
	b.subscribeBilling(boxcar.SubscribeOptions{})
	b.publish("bad", "1")
	seq := b.waitLetters(1)[0].Seq
	path := fmt.Sprintf("/api/deadletters/%d/redrive", seq)
	for name, body := range map[string]string{
		"over the limit": `{"why":"` + strings.Repeat("x", admin.MaxBodyBytes) + `"}`,
		"unknown field":  `{"why":"x","force":true}`,
		"malformed":      `{"why":`,
		"wrong type":     `{"why":1}`,
		"two values":     `{} {}`,
		"an array":       `[]`,
		"long why":       `{"why":"` + strings.Repeat("x", 1025) + `"}`,
	} {
		want(t, name, b.post(path, body, nil), 400, "invalid")
	}
	for name, op := range map[string]string{"control character": "al\tice", "too long": strings.Repeat("a", 65)} {
		r := b.do(b.srv, "POST", path, `{}`, "Authorization", "Bearer "+writeToken, admin.OperatorHeader, op)
		want(t, "operator "+name, r, 400, "invalid")
	}
	want(t, "pause, unknown field in from", b.post("/api/subscribers/billing/replay", `{"from":{"stream_seq":1,"seq":2}}`, nil), 400, "invalid")
	if dl := b.letter(seq); dl.State != boxcar.DeadLetterPending {
		t.Fatalf("a refused body changed the letter: %s", dl.State)
	}
	b.broken.Store(false)
	var res boxcar.RedriveResult
	if want(t, "empty body", b.post(path, "", &res), 200, ""); len(res.Redriven) != 1 {
		t.Fatalf("redrive with an empty body: %+v", res)
	}
}

// A redrive of a letter redriven before, or discarded, does nothing and
// says so (done); a discard of a letter acted on reports false. The library
// records the operator as by, with the remote address.
func TestRedriveAndDiscardAreIdempotent(t *testing.T) {
	t.Parallel()
	b := setup(t, admin.Options{Token: writeToken})
	b.subscribeBilling(boxcar.SubscribeOptions{})
	b.publish("bad1", "1")
	b.publish("bad2", "2")
	letters := b.waitLetters(2)
	b.broken.Store(false)
	first, second := letters[0].Seq, letters[1].Seq

	var res boxcar.RedriveResult
	want(t, "redrive", b.post(fmt.Sprintf("/api/deadletters/%d/redrive", first), `{"why":"fixed in v2"}`, &res), 200, "")
	if len(res.Redriven) != 1 || res.Redriven[0] != first || res.Done != 0 {
		t.Fatalf("redrive: %+v", res)
	}
	r := b.post(fmt.Sprintf("/api/deadletters/%d/redrive", first), `{}`, &res)
	if want(t, "second redrive", r, 200, ""); len(res.Redriven) != 0 || res.Done != 1 || !bytes.Contains(r.body, []byte(`"redriven":[]`)) {
		t.Fatalf("second redrive: %s", r.body)
	}
	var disc struct{ Discarded bool }
	if want(t, "discard of a redriven letter", b.post(fmt.Sprintf("/api/deadletters/%d/discard", first), `{}`, &disc), 200, ""); disc.Discarded {
		t.Fatal("a redriven letter was discarded")
	}
	r = b.do(b.srv, "POST", fmt.Sprintf("/api/deadletters/%d/discard", second), `{"why":"obsolete"}`, "Authorization", "Bearer "+writeToken)
	if want(t, "discard", r, 200, ""); !bytes.Contains(r.body, []byte(`"discarded":true`)) {
		t.Fatalf("discard: %s", r.body)
	}
	if want(t, "second discard", b.post(fmt.Sprintf("/api/deadletters/%d/discard", second), `{}`, &disc), 200, ""); disc.Discarded {
		t.Fatal("second discard reported true")
	}
	if want(t, "redrive after discard", b.post(fmt.Sprintf("/api/deadletters/%d/redrive", second), `{}`, &res), 200, ""); len(res.Redriven) != 0 || res.Done != 1 {
		t.Fatalf("redrive of a discarded letter: %+v", res)
	}
	host := strings.TrimPrefix(b.srv.URL, "http://")
	host = host[:strings.LastIndex(host, ":")]
	if a := b.letter(first).Action; a == nil || !strings.HasPrefix(a.By, "alice via admin API from "+host+":") || a.Why != "fixed in v2" {
		t.Fatalf("redrive recorded as %+v", a)
	}
	if a := b.letter(second).Action; a == nil || !strings.HasPrefix(a.By, "anonymous via admin API from ") || a.Action != "discard" {
		t.Fatalf("discard recorded as %+v", a)
	}
}

// Concurrent redrives of one letter: one redrives it, every other reports
// it done; all succeed.
func TestConcurrentRedrivesOfOneLetter(t *testing.T) {
	t.Parallel()
	b := setup(t, admin.Options{Token: writeToken})
	b.subscribeBilling(boxcar.SubscribeOptions{})
	b.publish("bad", "1")
	seq := b.waitLetters(1)[0].Seq
	b.broken.Store(false)
	const n = 8
	results := make([]boxcar.RedriveResult, n)
	responses := make([]response, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", fmt.Sprintf("%s/api/deadletters/%d/redrive", b.srv.URL, seq), strings.NewReader(`{}`))
			req.Header.Set("Authorization", "Bearer "+writeToken)
			res, err := b.srv.Client().Do(req)
			if err != nil {
				responses[i].status = -1
				return
			}
			defer res.Body.Close()
			responses[i].status = res.StatusCode
			responses[i].body, _ = io.ReadAll(res.Body)
			json.Unmarshal(responses[i].body, &results[i])
		})
	}
	wg.Wait()
	redriven, done := 0, 0
	for i := range n {
		if responses[i].status != 200 {
			t.Fatalf("redrive %d: %s", i, responses[i])
		}
		redriven += len(results[i].Redriven)
		done += results[i].Done
	}
	if redriven != 1 || done != n-1 {
		t.Fatalf("%d concurrent redrives: %d redriven, %d done; want 1 and %d", n, redriven, done, n-1)
	}
}

// A redrive of a subscriber's letters, of one key or all, redrives the
// pending ones and counts the others as done; it needs a subscriber.
func TestRedriveOfAKeyAndOfASubscriber(t *testing.T) {
	t.Parallel()
	b := setup(t, admin.Options{Token: writeToken})
	b.subscribeBilling(boxcar.SubscribeOptions{})
	b.publish("bad1", "1", "2")
	b.publish("bad2", "3")
	b.waitLetters(3)
	b.broken.Store(false)
	var res boxcar.RedriveResult
	if want(t, "one key", b.post("/api/deadletters/redrive", `{"subscriber":"billing","key":"bad1","why":"fixed"}`, &res), 200, ""); len(res.Redriven) != 2 || res.Done != 0 {
		t.Fatalf("redrive of key bad1: %+v", res)
	}
	if want(t, "all", b.post("/api/deadletters/redrive", `{"subscriber":"billing"}`, &res), 200, ""); len(res.Redriven) != 1 || res.Done != 2 {
		t.Fatalf("redrive of billing: %+v", res)
	}
	want(t, "no subscriber", b.post("/api/deadletters/redrive", `{"key":"bad1"}`, nil), 400, "invalid")
	want(t, "malformed subscriber", b.post("/api/deadletters/redrive", `{"subscriber":"bil ling"}`, nil), 400, "invalid")
	want(t, "unknown field", b.post("/api/deadletters/redrive", `{"subscriber":"billing","seq":1}`, nil), 400, "invalid")
}

// A redrive of the letters of a subscriber the database never knew (a
// misspelt name) is not_found, through the API and the page's form, not an
// empty success; a known subscriber without letters of a key redrives
// nothing and succeeds.
func TestRedriveOfAnUnknownSubscriberIsNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t, admin.Options{Token: writeToken})
	b.subscribeBilling(boxcar.SubscribeOptions{})
	b.publish("bad1", "1")
	b.waitLetters(1)
	r := b.post("/api/deadletters/redrive", `{"subscriber":"biling"}`, nil)
	if want(t, "unknown subscriber", r, 404, "not_found"); !bytes.Contains(r.body, []byte(`biling`)) {
		t.Fatalf("the refusal does not name the subscriber: %s", r.body)
	}
	want(t, "unknown subscriber's key", b.post("/api/deadletters/redrive", `{"subscriber":"biling","key":"bad1"}`, nil), 404, "not_found")
	r = b.do(b.srv, "POST", "/actions/deadletters/redrive", url.Values{"token": {writeToken}, "subscriber": {"biling"}}.Encode(),
		"Content-Type", "application/x-www-form-urlencoded")
	want(t, "unknown subscriber by the page", r, 404, "")
	var res boxcar.RedriveResult
	if want(t, "a key without letters", b.post("/api/deadletters/redrive", `{"subscriber":"billing","key":"bad2"}`, &res), 200, ""); len(res.Redriven) != 0 || res.Done != 0 {
		t.Fatalf("redrive of a key without letters: %+v", res)
	}
	if dl := b.waitLetters(1)[0]; dl.State != boxcar.DeadLetterPending {
		t.Fatalf("the letter of billing is %s", dl.State)
	}
}

// Pause and resume show in /api/subscribers; a pause until a time past, or
// a time that is not RFC 3339, is refused; an unknown subscriber is
// not_found.
func TestPauseAndResume(t *testing.T) {
	t.Parallel()
	b := setup(t, admin.Options{Token: writeToken})
	b.subscribeBilling(boxcar.SubscribeOptions{})
	info := func() boxcar.SubscriberInfo {
		var s boxcar.SubscriberInfo
		want(t, "billing", b.get("/api/subscribers/billing", &s), 200, "")
		return s
	}
	want(t, "pause in the past", b.post("/api/subscribers/billing/pause", `{"until":"2000-01-01T00:00:00Z"}`, nil), 400, "invalid")
	want(t, "pause until tomorrow", b.post("/api/subscribers/billing/pause", `{"until":"tomorrow"}`, nil), 400, "invalid")
	if info().Paused {
		t.Fatal("a refused pause paused")
	}
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	body := fmt.Sprintf(`{"until":%q,"why":"deploy"}`, until.Format(time.RFC3339))
	if r := b.post("/api/subscribers/billing/pause", body, nil); r.status != 200 || string(bytes.TrimSpace(r.body)) != `{"ok":true}` {
		t.Fatalf("pause: %s", r)
	}
	if s := info(); !s.Paused || s.PausedUntil.Sub(until).Abs() > 5*time.Second {
		t.Fatalf("after pause: paused %v until %v, want until %v", s.Paused, s.PausedUntil, until)
	}
	want(t, "resume", b.post("/api/subscribers/billing/resume", `{"why":"done"}`, nil), 200, "")
	if info().Paused {
		t.Fatal("still paused after resume")
	}
	want(t, "pause until resumed", b.post("/api/subscribers/billing/pause", `{}`, nil), 200, "")
	if !info().Paused {
		t.Fatal("not paused")
	}
	want(t, "pause of nobody", b.post("/api/subscribers/nobody/pause", `{}`, nil), 404, "not_found")
	want(t, "resume of nobody", b.post("/api/subscribers/nobody/resume", `{}`, nil), 404, "not_found")
}

// A replay request returns its status and its progress is readable until
// done; bad starting points are refused and changes nothing.
func TestReplayAndItsProgress(t *testing.T) {
	t.Parallel()
	b := setup(t, admin.Options{Token: writeToken})
	b.subscribeBilling(boxcar.SubscribeOptions{})
	if _, err := b.bus.Subscribe(b.ctx, "audit", boxcar.HandlerFunc(func(ctx context.Context, m boxcar.Message) error { return nil }), boxcar.SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	b.publish("good", "1", "2", "3", "4", "5")
	waitFor(t, "billing caught up", func() (bool, string) {
		var s boxcar.SubscriberInfo
		b.get("/api/subscribers/billing", &s)
		return s.AckFloor == 5, fmt.Sprint(s.AckFloor)
	})
	for name, body := range map[string]string{
		"no start":           `{}`,
		"two starts":         `{"from":{"stream_seq":1,"outbox_seq":2}}`,
		"negative outbox":    `{"from":{"outbox_seq":-1}}`,
		"bad time":           `{"from":{"time":"yesterday"}}`,
		"plain without flag": `{"from":{"stream_seq":1}}`,
	} {
		path := "/api/subscribers/billing/replay"
		if name == "plain without flag" {
			path = "/api/subscribers/audit/replay"
		}
		want(t, name, b.post(path, body, nil), 400, "invalid")
	}
	want(t, "past the stream", b.post("/api/subscribers/billing/replay", `{"from":{"stream_seq":999}}`, nil), 404, "not_found")
	want(t, "nobody", b.post("/api/subscribers/nobody/replay", `{"from":{"stream_seq":1}}`, nil), 404, "not_found")
	want(t, "no replay yet", b.get("/api/subscribers/billing/replay", nil), 404, "not_found")

	var st boxcar.ReplayStatus
	if want(t, "replay", b.post("/api/subscribers/billing/replay", `{"from":{"stream_seq":2},"no_dedupe":true,"why":"rebuild"}`, &st), 200, ""); st.From != 2 || st.Through != 5 || !st.NoDedupe || st.Subscriber != "billing" {
		t.Fatalf("replay: %+v", st)
	}
	var info boxcar.SubscriberInfo
	if b.get("/api/subscribers/billing", &info); info.Replay == nil || info.Replay.Through != 5 {
		t.Fatalf("replay in /api/subscribers: %+v", info.Replay)
	}
	// Done, or over: the subscriber forgets a finished replay at its next
	// bookkeeping round (every 10 s), and the route is then not_found.
	waitFor(t, "the replay done", func() (bool, string) {
		r := b.get("/api/subscribers/billing/replay", &st)
		if r.status == 404 && r.code() == "not_found" {
			b.get("/api/subscribers/billing", &info)
			return info.Replay == nil && info.AckFloor >= 5, r.String()
		}
		return r.status == 200 && st.Done && st.At >= 5, r.String()
	})
}

// Retire refuses a subscriber running here, retires a stopped one (it is
// then unknown), and is not_found the second time.
func TestRetire(t *testing.T) {
	t.Parallel()
	b := setup(t, admin.Options{Token: writeToken})
	sub := b.subscribeBilling(boxcar.SubscribeOptions{})
	want(t, "retire a running one", b.post("/api/subscribers/billing/retire", `{}`, nil), 400, "invalid")
	if err := sub.Close(b.ctx); err != nil {
		t.Fatal(err)
	}
	want(t, "retire", b.post("/api/subscribers/billing/retire", `{"why":"replaced by invoicing"}`, nil), 200, "")
	want(t, "after retire", b.get("/api/subscribers/billing", nil), 404, "not_found")
	want(t, "retire again", b.post("/api/subscribers/billing/retire", `{}`, nil), 404, "not_found")
}

// /api/health is a probe: 200 while every component is ok, 503 with the
// Health body once a subscriber is stopped and behind.
func TestHealthProbe(t *testing.T) {
	t.Parallel()
	// A short window: the samples of when it was caught up leave it soon.
	b := setupConfig(t, boxcar.Config{Health: boxcar.HealthOptions{Interval: 100 * time.Millisecond, Window: 500 * time.Millisecond}}, admin.Options{})
	sub := b.subscribeBilling(boxcar.SubscribeOptions{})
	b.publish("good", "1")
	var h boxcar.Health
	waitFor(t, "health ok", func() (bool, string) {
		r := b.get("/api/health", &h)
		return r.status == 200 && h.State == boxcar.HealthOK, r.String()
	})
	if err := sub.Close(b.ctx); err != nil {
		t.Fatal(err)
	}
	b.publish("good", "2", "3")
	waitFor(t, "billing stopped", func() (bool, string) {
		r := b.get("/api/health", nil)
		if r.status != 503 || json.Unmarshal(r.body, &h) != nil {
			return false, r.String()
		}
		for _, c := range h.Components {
			if c.Name == "billing" {
				return c.State == boxcar.HealthStopped && h.State == boxcar.HealthStopped && len(c.Reasons) > 0, r.String()
			}
		}
		return false, r.String()
	})
}

// Every write is logged at info, with operator, remote address, route and
// result, by the time its response arrives; refused writes too; reads are
// not.
func TestAuditLog(t *testing.T) {
	t.Parallel()
	b := setup(t, admin.Options{Token: writeToken})
	b.subscribeBilling(boxcar.SubscribeOptions{})
	b.publish("bad", "1")
	seq := b.waitLetters(1)[0].Seq
	b.get("/api/status", nil)
	want(t, "discard", b.post(fmt.Sprintf("/api/deadletters/%d/discard", seq), `{"why":"spam"}`, nil), 200, "")
	lines := b.logs.lines(t)
	if len(lines) != 1 {
		t.Fatalf("%d audit lines after one read and one write: %v", len(lines), lines)
	}
	l := lines[0]
	if l["level"] != "INFO" || l["operator"] != "alice" || l["route"] != "POST /api/deadletters/{seq}/discard" || l["result"] != "ok" ||
		l["path"] != fmt.Sprintf("/api/deadletters/%d/discard", seq) || !strings.HasPrefix(fmt.Sprint(l["remote_addr"]), "127.0.0.1:") || l["status"] != float64(200) {
		t.Fatalf("audit line %v", l)
	}
	b.do(b.srv, "POST", "/api/subscribers/billing/pause", `{}`, admin.OperatorHeader, "mallory")
	lines = b.logs.lines(t)
	if l := lines[len(lines)-1]; len(lines) != 2 || l["operator"] != "mallory" || l["result"] != "unauthorized" || l["status"] != float64(401) {
		t.Fatalf("audit line of a refused write: %v", lines)
	}
}

// A handler on a boxcar.Inspect bus (the files of a closed app) reads, and
// refuses every write with read_only; on a closed bus everything is closed.
func TestInspectBusIsReadOnly(t *testing.T) {
	t.Parallel()
	b := setup(t, admin.Options{Token: writeToken})
	b.subscribeBilling(boxcar.SubscribeOptions{})
	b.publish("bad", "1")
	seq := b.waitLetters(1)[0].Seq
	want(t, "open bus, read", b.get("/api/status", nil), 200, "")
	if err := b.bus.Close(b.ctx); err != nil {
		t.Fatal(err)
	}
	want(t, "closed bus, read", b.get("/api/status", nil), 503, "closed")
	want(t, "closed bus, write", b.post(fmt.Sprintf("/api/deadletters/%d/redrive", seq), `{}`, nil), 503, "closed")
	if r := b.get("/", nil); r.status != 503 {
		t.Fatalf("page of a closed bus: %s", r)
	}

	inspected, err := boxcar.Inspect(b.ctx, b.db, b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inspected.Close(b.ctx) })
	b.bus = inspected
	b.srv = b.serve(admin.Options{Token: writeToken})
	var list struct{ Items []boxcar.DeadLetter }
	if want(t, "inspect, dead letters", b.get("/api/deadletters", &list), 200, ""); len(list.Items) != 1 || list.Items[0].Seq != seq {
		t.Fatalf("inspected dead letters %+v", list)
	}
	want(t, "inspect, status", b.get("/api/status", nil), 200, "")
	want(t, "inspect, subscriber", b.get("/api/subscribers/billing", nil), 200, "")
	for _, path := range []string{fmt.Sprintf("/api/deadletters/%d/redrive", seq), fmt.Sprintf("/api/deadletters/%d/discard", seq),
		"/api/subscribers/billing/pause", "/api/subscribers/billing/resume", "/api/subscribers/billing/retire"} {
		want(t, "inspect, "+path, b.post(path, `{}`, nil), 409, "read_only")
	}
	want(t, "inspect, replay", b.post("/api/subscribers/billing/replay", `{"from":{"stream_seq":1}}`, nil), 409, "read_only")
	if r := b.get(fmt.Sprintf("/deadletters/%d", seq), nil); r.status != 200 {
		t.Fatalf("page of an inspected bus: %s", r)
	}
	if dl := b.letter(seq); dl.State != boxcar.DeadLetterPending {
		t.Fatalf("inspected letter is %s", dl.State)
	}
}

// /api/outbox lists the events the relay has not published, oldest first,
// paged by after and limit; so does the outbox page. (Events left in the
// outbox of an app that stopped, read through boxcar.Inspect, where no
// relay runs.)
func TestOutboxListsWaitingEvents(t *testing.T) {
	t.Parallel()
	b := setup(t, admin.Options{})
	b.publish("first", "1")
	waitFor(t, "the relay caught up", func() (bool, string) {
		st, err := b.bus.Stats(b.ctx)
		return err == nil && st.RelayCursor == 1, fmt.Sprint(st.RelayCursor, err)
	})
	if err := b.bus.Close(b.ctx); err != nil {
		t.Fatal(err)
	}
	// What the app committed before it stopped, the relay not yet.
	tx, err := b.db.BeginTx(b.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var rows []sqlite.OutboxRow
	for i := range 3 {
		rows = append(rows, sqlite.OutboxRow{ID: fmt.Sprintf("01JTEST%019d", i), Type: "order.shipped", Key: fmt.Sprintf("k%d", i),
			Data: []byte("xy"), CreatedNS: time.Now().Add(-time.Minute).UnixNano()})
	}
	if err := sqlite.InsertEvents(b.ctx, tx, rows); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	inspected, err := boxcar.Inspect(b.ctx, b.db, b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inspected.Close(b.ctx) })
	b.bus = inspected
	b.srv = b.serve(admin.Options{})

	var list struct{ Items []boxcar.OutboxEvent }
	if want(t, "outbox", b.get("/api/outbox", &list), 200, ""); len(list.Items) != 3 || list.Items[0].Seq != 2 || list.Items[0].Key != "k0" ||
		list.Items[0].Size != 2 || list.Items[0].Age < time.Minute {
		t.Fatalf("outbox %+v", list)
	}
	if b.get("/api/outbox?limit=2", &list); len(list.Items) != 2 {
		t.Fatalf("outbox, limit 2: %+v", list)
	}
	if b.get("/api/outbox?after=3", &list); len(list.Items) != 1 || list.Items[0].Seq != 4 {
		t.Fatalf("outbox after 3: %+v", list)
	}
	var status struct{ Stats boxcar.Stats }
	if b.get("/api/status", &status); status.Stats.OutboxLag != 3 || status.Stats.OutboxAge < time.Minute {
		t.Fatalf("stats with 3 events waiting: %+v", status.Stats)
	}
	wantPage(t, "outbox page", b.get("/outbox?limit=2", nil), 200, "order.shipped", "k1", `href="./outbox?after=3&amp;limit=2"`)
}
