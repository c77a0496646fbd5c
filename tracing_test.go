package boxcar

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordingTracing is a Tracing that stamps each event with a header naming
// its creation and records every callback, for the tests of the hooks (the
// OpenTelemetry module tests the real thing).
type recordingTracing struct {
	header string // the header Create adds: "created-<event ID>"
	extra  map[string]string

	mu        sync.Mutex
	created   []string // event IDs, then "end:<ID>:<error>"
	published [][]Message
	pubEnds   []error
	processed []string // "<subscriber> <event ID> <header> attempt=<n> end=<error>"
}

func (r *recordingTracing) Create(ctx context.Context, m Message) (map[string]string, func(error)) {
	r.mu.Lock()
	r.created = append(r.created, m.ID)
	r.mu.Unlock()
	h := map[string]string{r.header: "created-" + m.ID}
	for k, v := range r.extra {
		h[k] = v
	}
	return h, func(err error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.created = append(r.created, fmt.Sprintf("end:%s:%v", m.ID, err))
	}
}

func (r *recordingTracing) Publish(ctx context.Context, batch []Message) func(error) {
	r.mu.Lock()
	r.published = append(r.published, slices.Clone(batch))
	i := len(r.published) - 1
	r.pubEnds = append(r.pubEnds, errors.New("not ended"))
	r.mu.Unlock()
	return func(err error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.pubEnds[i] = err
	}
}

type tracedKey struct{}

func (r *recordingTracing) Process(ctx context.Context, subscriber string, m Message) (context.Context, func(error)) {
	return context.WithValue(ctx, tracedKey{}, m.ID), func(err error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.processed = append(r.processed, fmt.Sprintf("%s %s %s attempt=%d end=%v", subscriber, m.ID, m.Headers[r.header], m.Attempt, err))
	}
}

func (r *recordingTracing) snapshot() (created []string, published [][]Message, pubEnds []error, processed []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.created), slices.Clone(r.published), slices.Clone(r.pubEnds), slices.Clone(r.processed)
}

// The hooks see each event's life: Create at PublishTx (its header travels
// in the event), Publish per relay batch with the headers, Process around
// every handler call (TxHandler and HandlerFunc) with the header, the
// handler's result and the context it returned; a failed attempt and its
// retry are two calls.
func TestTracingHooksFollowAnEvent(t *testing.T) {
	t.Parallel()
	rt := &recordingTracing{header: "traceparent"}
	tb := setup(t, Config{Tracing: rt})
	ctx := context.Background()
	got := make(chan string, 10)
	failed := false
	_, err := tb.bus.Subscribe(ctx, "billing", TxHandler(func(ctx context.Context, tx *sql.Tx, m Message) error {
		if ctx.Value(tracedKey{}) != m.ID {
			return Permanent(errors.New("the handler's context is not the one Process returned"))
		}
		if m.Key == "flaky" && !failed {
			failed = true
			return errors.New("first attempt fails")
		}
		got <- m.Headers["traceparent"]
		return nil
	}), SubscribeOptions{MinBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	plainCtx := make(chan bool, 2)
	_, err = tb.bus.Subscribe(ctx, "mailer", HandlerFunc(func(ctx context.Context, m Message) error {
		plainCtx <- ctx.Value(tracedKey{}) == m.ID
		return nil
	}), SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.bus.Publish(ctx, Event{Type: "order.placed", Key: "k1", Headers: map[string]string{"own": "x"}}, Event{Type: "order.placed", Key: "flaky"}); err != nil {
		t.Fatal(err)
	}
	// A batch whose handler fails runs the others again (see TxHandler):
	// the same header or call can come twice.
	seen := map[string]bool{}
	for len(seen) < 2 {
		select {
		case h := <-got:
			seen[h] = true
		case <-time.After(30 * time.Second):
			t.Fatal("events not handled")
		}
	}
	distinct := func(s []string) []string {
		s = slices.Clone(s)
		slices.Sort(s)
		return slices.Compact(s)
	}
	waitFor(t, "the traced calls", 10*time.Second, func() (bool, string) {
		c, p, e, pr := rt.snapshot()
		return len(c) == 4 && len(p) >= 1 && e[len(e)-1] == nil && len(distinct(pr)) == 5, fmt.Sprintf("created %v published %d ends %v processed %v", c, len(p), e, pr)
	})
	created, published, pubEnds, processed := rt.snapshot()
	headers := slices.Sorted(maps.Keys(seen))
	ids := []string{created[0], created[1]}
	if want := []string{ids[0], ids[1], "end:" + ids[0] + ":<nil>", "end:" + ids[1] + ":<nil>"}; !slices.Equal(created, want) {
		t.Fatalf("create callbacks %v, want %v", created, want)
	}
	if want := []string{"created-" + ids[0], "created-" + ids[1]}; !slices.Equal(headers, want) {
		t.Fatalf("handlers saw headers %v, want %v", headers, want)
	}
	var sent []string
	for i, b := range published {
		if pubEnds[i] != nil {
			t.Fatalf("publish batch %d ended with %v", i, pubEnds[i])
		}
		for _, m := range b {
			if m.Seq == 0 || m.Headers["traceparent"] != "created-"+m.ID {
				t.Fatalf("publish saw %+v: want its seq and the create header", m)
			}
			sent = append(sent, m.ID)
		}
	}
	if !slices.Equal(sent, ids) {
		t.Fatalf("published %v, want %v in order", sent, ids)
	}
	if published[0][0].Headers["own"] != "x" {
		t.Fatalf("the event's own header is gone: %v", published[0][0].Headers)
	}
	want := []string{
		"billing " + ids[0] + " created-" + ids[0] + " attempt=1 end=<nil>",
		"billing " + ids[1] + " created-" + ids[1] + " attempt=1 end=first attempt fails",
		"billing " + ids[1] + " created-" + ids[1] + " attempt=2 end=<nil>",
		"mailer " + ids[0] + " created-" + ids[0] + " attempt=1 end=<nil>",
		"mailer " + ids[1] + " created-" + ids[1] + " attempt=1 end=<nil>",
	}
	processed = distinct(processed)
	slices.Sort(want)
	for range 2 {
		if !<-plainCtx {
			t.Fatal("the HandlerFunc's context is not the one Process returned")
		}
	}
	if !slices.Equal(processed, want) {
		t.Fatalf("process callbacks\n%s\nwant\n%s", strings.Join(processed, "\n"), strings.Join(want, "\n"))
	}
}

// A header from the tracer that breaks the rules of Event.Headers, or that
// takes the event past the stream's limits, refuses the call before
// anything is written; the create callbacks end with the error.
func TestTracingBadHeadersRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		extra map[string]string
		data  int
	}{
		{"reserved name", map[string]string{"Nats-Msg-Id": "x"}, 0},
		{"newline in value", map[string]string{"tracestate": "a\nb"}, 0},
		{"past the header block", map[string]string{"tracestate": strings.Repeat("a", 70_000)}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rt := &recordingTracing{header: "traceparent", extra: tc.extra}
			tb := setup(t, Config{Tracing: rt})
			err := tb.bus.Publish(context.Background(), Event{Type: "order.placed", Key: "k"})
			if !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("Publish: %v, want ErrInvalidEvent", err)
			}
			if !strings.Contains(err.Error(), "Config.Tracing") {
				t.Fatalf("error %q does not name Config.Tracing", err)
			}
			if n := maxOutboxSeq(t, tb.db); n != 0 {
				t.Fatalf("outbox seq %d: something was written", n)
			}
			created, _, _, _ := rt.snapshot()
			if len(created) != 2 || !strings.HasPrefix(created[1], "end:"+created[0]+":boxcar: event 0") {
				t.Fatalf("create callbacks %v: want the event, then its end with the error", created)
			}
		})
	}
}
