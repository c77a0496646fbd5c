package boxcarotel_test

import (
	"context"
	"database/sql"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/boxcar-bus/boxcar"
	boxcarotel "github.com/boxcar-bus/boxcar/otel"
)

// From the app's span to the handler: the create span is the app span's
// child and its context is the event's traceparent; the relay's publish
// span (CLIENT) links to it; the process span (CONSUMER) links to it, and is
// its child only with ProcessParent; the handler's own spans and the create
// span of an event it publishes are children of the process span. Every span
// has the semantic conventions' attributes.
func TestOneTraceFromTheAppThroughCreatePublishProcess(t *testing.T) {
	t.Parallel()
	for _, parent := range []bool{false, true} {
		name := "link"
		if parent {
			name = "parent"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, "", boxcarotel.Config{ProcessParent: parent}, boxcar.Config{})
			ctx := context.Background()
			seen := make(chan boxcar.Message, 1)
			_, err := b.bus.Subscribe(ctx, "billing", boxcar.TxHandler(func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
				_, charge := b.app.Start(ctx, "charge")
				charge.End()
				if err := b.bus.PublishTx(ctx, tx, boxcar.Event{Type: "invoice.issued", Key: m.Key}); err != nil {
					return err
				}
				seen <- m
				return nil
			}), boxcar.SubscribeOptions{Types: []string{"user.signed_up"}})
			if err != nil {
				t.Fatal(err)
			}
			appCtx, request := b.app.Start(ctx, "POST /signup")
			b.signUp(t, appCtx, "u1")
			request.End()
			var m boxcar.Message
			select {
			case m = <-seen:
			case <-time.After(time.Minute):
				t.Fatal("the event was not handled")
			}
			spans := b.waitSpans(t, "create, publish, process and the handler's spans", func(s []sdktrace.ReadOnlySpan) bool {
				return len(named(s, "process user.signed_up")) == 1 && len(named(s, "create invoice.issued")) == 1 && len(named(s, "publish user.signed_up")) == 1
			})
			app := one(t, spans, "POST /signup").SpanContext()
			create := one(t, spans, "create user.signed_up")
			publish := one(t, spans, "publish user.signed_up")
			process := one(t, spans, "process user.signed_up")

			if create.Parent().SpanID() != app.SpanID() || create.SpanContext().TraceID() != app.TraceID() {
				t.Errorf("create span's parent %v, want the app's span %v", create.Parent(), app)
			}
			if create.SpanKind() != trace.SpanKindProducer {
				t.Errorf("create span kind %v, want producer", create.SpanKind())
			}
			wantAttrs(t, create, semconv.MessagingSystemKey.String("boxcar"), semconv.MessagingOperationName("create"),
				semconv.MessagingOperationTypeCreate, semconv.MessagingDestinationName("user.signed_up"),
				semconv.MessagingMessageID(m.ID), semconv.MessagingMessageBodySize(len(`{"plan":"free"}`)), boxcarotel.KeyAttribute.String("u1"))
			if got, want := m.Headers["traceparent"], traceparent(create.SpanContext()); got != want {
				t.Errorf("the event's traceparent %q, want the create span's %q", got, want)
			}

			if publish.SpanKind() != trace.SpanKindClient || publish.Parent().IsValid() {
				t.Errorf("publish span kind %v parent %v: want a client span, a root", publish.SpanKind(), publish.Parent())
			}
			if !linked(publish, create.SpanContext()) {
				t.Errorf("publish span links %v: want the create span's context", publish.Links())
			}
			if l := publish.Links(); len(l) != 1 || l[0].Attributes[0] != semconv.MessagingMessageID(m.ID) {
				t.Errorf("publish span links %v: want one, with the event's ID", l)
			}
			wantAttrs(t, publish, semconv.MessagingSystemKey.String("boxcar"), semconv.MessagingOperationName("publish"),
				semconv.MessagingOperationTypeSend, semconv.MessagingDestinationName("user.signed_up"), semconv.MessagingBatchMessageCount(1))

			if process.SpanKind() != trace.SpanKindConsumer {
				t.Errorf("process span kind %v, want consumer", process.SpanKind())
			}
			if !linked(process, create.SpanContext()) {
				t.Errorf("process span links %v: want the create span's context", process.Links())
			}
			if parent {
				if process.Parent().SpanID() != create.SpanContext().SpanID() || process.SpanContext().TraceID() != app.TraceID() {
					t.Errorf("process span's parent %v in trace %v: want the create span, in the app's trace", process.Parent(), process.SpanContext().TraceID())
				}
			} else if process.Parent().IsValid() || process.SpanContext().TraceID() == app.TraceID() {
				t.Errorf("process span's parent %v in trace %v: want a root of its own trace", process.Parent(), process.SpanContext().TraceID())
			}
			wantAttrs(t, process, semconv.MessagingSystemKey.String("boxcar"), semconv.MessagingOperationName("process"),
				semconv.MessagingOperationTypeProcess, semconv.MessagingDestinationName("user.signed_up"),
				semconv.MessagingConsumerGroupName("billing"), semconv.MessagingMessageID(m.ID), boxcarotel.AttemptAttribute.Int(1))
			if process.Status().Code != codes.Unset {
				t.Errorf("process span status %v, want unset", process.Status())
			}

			for _, child := range []string{"charge", "create invoice.issued"} {
				if s := one(t, spans, child); s.Parent().SpanID() != process.SpanContext().SpanID() {
					t.Errorf("span %q's parent %v, want the process span %v", child, s.Parent().SpanID(), process.SpanContext().SpanID())
				}
			}
		})
	}
}

// natsHeaderCarrier reads a nats.Header as another NATS consumer of the
// stream would: nats.go's headers are case-sensitive, so the names must be
// on the wire as the W3C spells them.
type natsHeaderCarrier nats.Header

func (c natsHeaderCarrier) Get(k string) string {
	if v := c[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}
func (c natsHeaderCarrier) Set(k, v string) { c[k] = []string{v} }
func (c natsHeaderCarrier) Keys() []string {
	var keys []string
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// The stream's message carries the creation context as lowercase W3C
// headers: a plain NATS client extracts it with the standard propagator.
func TestTraceparentOnTheWire(t *testing.T) {
	t.Parallel()
	b := setup(t, "", boxcarotel.Config{}, boxcar.Config{})
	ctx := context.Background()
	appCtx, request := b.app.Start(ctx, "POST /signup")
	b.signUp(t, appCtx, "u1")
	request.End()
	spans := b.waitSpans(t, "the publish span", func(s []sdktrace.ReadOnlySpan) bool { return len(named(s, "publish user.signed_up")) == 1 })
	create := one(t, spans, "create user.signed_up")
	stream, err := b.bus.JetStream().Stream(ctx, boxcar.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := stream.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := raw.Header["traceparent"], []string{traceparent(create.SpanContext())}; len(got) != 1 || got[0] != want[0] {
		t.Fatalf("the stream message's traceparent header %v, want %v (headers %v)", got, want, raw.Header)
	}
	sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(ctx, natsHeaderCarrier(raw.Header)))
	if !sc.IsRemote() || sc.SpanID() != create.SpanContext().SpanID() || sc.TraceID() != create.SpanContext().TraceID() {
		t.Fatalf("a NATS client extracts %v, want the create span's context %v", sc, create.SpanContext())
	}
}

// A handler that fails once, then succeeds: two process spans linked to the
// same creation, the first with status Error, the error recorded and its
// error.type, the second without; attempts 1 and 2.
func TestFailedAttemptThenSuccess(t *testing.T) {
	t.Parallel()
	b := setup(t, "", boxcarotel.Config{}, boxcar.Config{})
	ctx := context.Background()
	var calls atomic.Int64
	_, err := b.bus.Subscribe(ctx, "billing", boxcar.TxHandler(func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
		if calls.Add(1) == 1 {
			return errors.New("card declined")
		}
		return nil
	}), boxcar.SubscribeOptions{MinBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	b.signUp(t, ctx, "u1")
	spans := b.waitSpans(t, "two process spans", func(s []sdktrace.ReadOnlySpan) bool { return len(named(s, "process user.signed_up")) == 2 })
	create := one(t, spans, "create user.signed_up")
	process := named(spans, "process user.signed_up")
	failed, ok := process[0], process[1]
	if failed.Status().Code != codes.Error || failed.Status().Description != "card declined" {
		t.Errorf("failed attempt's status %v, want error \"card declined\"", failed.Status())
	}
	wantAttrs(t, failed, semconv.ErrorTypeKey.String("*errors.errorString"), boxcarotel.AttemptAttribute.Int(1))
	if ev := failed.Events(); len(ev) != 1 || ev[0].Name != semconv.ExceptionEventName {
		t.Errorf("failed attempt's events %v, want the recorded error", ev)
	}
	if ok.Status().Code != codes.Unset {
		t.Errorf("second attempt's status %v, want unset", ok.Status())
	}
	if _, has := attr(ok, semconv.ErrorTypeKey); has {
		t.Errorf("second attempt has error.type")
	}
	wantAttrs(t, ok, boxcarotel.AttemptAttribute.Int(2))
	for _, p := range process {
		if !linked(p, create.SpanContext()) {
			t.Errorf("process span (attempt %v) does not link to the creation", p.Attributes())
		}
	}
}

// A dead letter redriven: the failed span says "permanent"; the redriven
// copy's publish and process spans link to the original creation context
// (the copy keeps the event's headers), and no new create span is made.
func TestRedriveLinksToTheOriginalCreation(t *testing.T) {
	t.Parallel()
	b := setup(t, "", boxcarotel.Config{}, boxcar.Config{})
	ctx := context.Background()
	var fixed atomic.Bool
	_, err := b.bus.Subscribe(ctx, "billing", boxcar.TxHandler(func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
		if !fixed.Load() {
			return boxcar.Permanent(errors.New("unknown plan"))
		}
		return nil
	}), boxcar.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b.signUp(t, ctx, "u1")
	var letters []boxcar.DeadLetter
	deadline := time.Now().Add(time.Minute)
	for len(letters) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no dead letter")
		}
		time.Sleep(10 * time.Millisecond)
		if letters, _, err = b.bus.DeadLetters(ctx, boxcar.DeadLetterFilter{}); err != nil {
			t.Fatal(err)
		}
	}
	fixed.Store(true)
	if _, err := b.bus.Redrive(ctx, boxcar.RedriveRequest{Seq: letters[0].Seq, By: "ops", Why: "plan added"}); err != nil {
		t.Fatal(err)
	}
	spans := b.waitSpans(t, "the redriven copy's process span", func(s []sdktrace.ReadOnlySpan) bool { return len(named(s, "process user.signed_up")) == 2 })
	create := one(t, spans, "create user.signed_up")
	process := named(spans, "process user.signed_up")
	wantAttrs(t, process[0], semconv.ErrorTypeKey.String("permanent"))
	if process[0].Status().Code != codes.Error {
		t.Errorf("dead-lettered attempt's status %v, want error", process[0].Status())
	}
	wantAttrs(t, process[1], boxcarotel.RedrivenAttribute.Bool(true))
	if process[1].Status().Code != codes.Unset {
		t.Errorf("redriven copy's status %v, want unset", process[1].Status())
	}
	publish := named(spans, "publish user.signed_up")
	if len(publish) != 2 {
		t.Fatalf("%d publish spans, want 2 (the event, the redriven copy):\n%s", len(publish), describe(spans))
	}
	for _, s := range append(process, publish...) {
		if !linked(s, create.SpanContext()) {
			t.Errorf("span %q does not link to the original creation %v: links %v", s.Name(), create.SpanContext(), s.Links())
		}
	}
}

// A replay (without dedupe, a rebuild) hands the handler the event again:
// its process span links to the original creation and says it is a replay.
func TestReplayLinksToTheOriginalCreation(t *testing.T) {
	t.Parallel()
	b := setup(t, "", boxcarotel.Config{}, boxcar.Config{})
	ctx := context.Background()
	_, err := b.bus.Subscribe(ctx, "projection", boxcar.TxHandler(func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
		return nil
	}), boxcar.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b.signUp(t, ctx, "u1")
	b.waitSpans(t, "the first process span", func(s []sdktrace.ReadOnlySpan) bool { return len(named(s, "process user.signed_up")) == 1 })
	if _, err := b.bus.Replay(ctx, boxcar.ReplayRequest{Subscriber: "projection", From: boxcar.ReplayFrom{OutboxSeq: 1}, NoDedupe: true, By: "ops", Why: "rebuild"}); err != nil {
		t.Fatal(err)
	}
	spans := b.waitSpans(t, "the replay's process span", func(s []sdktrace.ReadOnlySpan) bool { return len(named(s, "process user.signed_up")) == 2 })
	create := one(t, spans, "create user.signed_up")
	process := named(spans, "process user.signed_up")
	if _, replay := attr(process[0], boxcarotel.ReplayAttribute); replay {
		t.Errorf("the first handling is marked a replay")
	}
	wantAttrs(t, process[1], boxcarotel.ReplayAttribute.Bool(true))
	for _, p := range process {
		if !linked(p, create.SpanContext()) {
			t.Errorf("process span does not link to the creation: %v", p.Links())
		}
	}
	if n := len(named(spans, "publish user.signed_up")); n != 1 {
		t.Errorf("%d publish spans, want 1: a replay publishes nothing", n)
	}
}

// Without a span in PublishTx's context, a trace context the event's own
// headers carry (an upstream system's, in a message's metadata) is the
// create span's parent.
func TestCreateContinuesTheEventsOwnContext(t *testing.T) {
	t.Parallel()
	b := setup(t, "", boxcarotel.Config{}, boxcar.Config{})
	ctx := context.Background()
	upstream := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	if err := b.bus.Publish(ctx, boxcar.Event{Type: "order.placed", Key: "o1", Headers: map[string]string{"traceparent": upstream}}); err != nil {
		t.Fatal(err)
	}
	spans := b.waitSpans(t, "the create span", func(s []sdktrace.ReadOnlySpan) bool { return len(named(s, "create order.placed")) == 1 })
	create := one(t, spans, "create order.placed")
	if got := create.Parent(); got.TraceID().String() != "0af7651916cd43dd8448eb211c80319c" || got.SpanID().String() != "b7ad6b7169203331" || !got.IsRemote() {
		t.Fatalf("create span's parent %v, want the upstream context", got)
	}
}
