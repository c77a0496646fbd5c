package boxcarotel

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/boxcar-bus/boxcar"
)

// ScopeName is the instrumentation scope of the spans: the name of the
// tracer this package asks its TracerProvider for.
const ScopeName = "github.com/boxcar-bus/boxcar/otel"

// SystemName is the value of messaging.system on every span. The semantic
// conventions list no value for Boxcar (nor for NATS).
const SystemName = "boxcar"

// Attributes of Boxcar's own, beside the semantic conventions'.
const (
	// KeyAttribute is the event's key (Event.Key): the entity it is about,
	// whose events are handled in order.
	KeyAttribute = attribute.Key("boxcar.key")
	// AttemptAttribute is the handler call's attempt (Message.Attempt): 1,
	// then 2 on the first retry of the event by this process.
	AttemptAttribute = attribute.Key("boxcar.attempt")
	// RedrivenAttribute is set, true, on the process span of a redriven
	// dead letter (Message.Redriven).
	RedrivenAttribute = attribute.Key("boxcar.redriven")
	// ReplayAttribute is set, true, on the process span of a replayed event
	// (Message.Replay).
	ReplayAttribute = attribute.Key("boxcar.replay")
)

// Config configures Tracing. Every field has a default.
type Config struct {
	// TracerProvider makes the tracer of the spans (scope ScopeName).
	// Default nil: the global one (otel.GetTracerProvider), resolved by New.
	TracerProvider trace.TracerProvider
	// Propagator writes the trace context into each event's headers at
	// PublishTx and reads it back at the relay and the subscribers. Default
	// nil: W3C Trace Context (propagation.TraceContext), whose lowercase
	// traceparent and tracestate headers other NATS clients read as they
	// are (NATS headers are case-sensitive). Not the global propagator,
	// which does nothing until the app sets one. To carry baggage too, pass
	// propagation.NewCompositeTextMapPropagator(propagation.TraceContext{},
	// propagation.Baggage{}).
	Propagator propagation.TextMapPropagator
	// ProcessParent makes each process span a child of the event's creation
	// span, besides the link: the app's request and every handler it causes
	// are then one trace. Default false: a process span is the root of a
	// trace of its own, linked to the creation, as the messaging semantic
	// conventions recommend for work that may run long after its cause
	// (a retry, a replay next week, a redriven dead letter): a trace does not
	// stay open for days, and one request's trace does not grow with every
	// subscriber's retries.
	ProcessParent bool
}

// Tracing records Boxcar's events as OpenTelemetry spans, after the
// messaging semantic conventions: set it as boxcar.Config.Tracing.
//
//   - "create <type>" (PRODUCER), at PublishTx, for each event: a child of
//     the span in PublishTx's context (the app's request), or, without one,
//     of the trace context the event's own headers carry. Its context is
//     written into the event's headers (traceparent, tracestate): the event's
//     creation context, which travels with it through the outbox, the
//     stream, dead letters, redrives and replays. Headers of the same names
//     the event had are replaced (they were the parent if the context had
//     no span).
//   - "publish <type>" (CLIENT; "publish" when the batch mixes types), for
//     each batch the relay sends to the stream, ended when the stream acked
//     it, linked to the creation context of each event of the batch.
//   - "process <type>" (CONSUMER), around each handler call, linked to the
//     event's creation context (and its child with Config.ProcessParent).
//     The handler's context carries it: the handler's own spans, and the
//     create spans of the events it publishes, are its children.
//
// A span that fails has status Error, the error recorded, and error.type:
// "permanent" (boxcar.Permanent), "schema" (boxcar.ErrSchema), "timeout",
// "canceled", or else the Go type of the error (semconv.ErrorType).
type Tracing struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	parent bool
}

var _ boxcar.Tracing = (*Tracing)(nil)

// New returns a Tracing for cfg.
func New(cfg Config) *Tracing {
	tp := cfg.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	prop := cfg.Propagator
	if prop == nil {
		prop = propagation.TraceContext{}
	}
	return &Tracing{
		tracer: tp.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL)),
		prop:   prop,
		parent: cfg.ProcessParent,
	}
}

var systemAttr = semconv.MessagingSystemKey.String(SystemName)

// Create starts the event's create span and returns its context as headers.
func (t *Tracing) Create(ctx context.Context, m boxcar.Message) (map[string]string, func(error)) {
	if !trace.SpanContextFromContext(ctx).IsValid() && len(m.Headers) > 0 {
		// No span in the context: a trace context the event already
		// carries (an upstream system's, in a message's metadata) is its
		// cause.
		ctx = t.prop.Extract(ctx, propagation.MapCarrier(m.Headers))
	}
	ctx, span := t.tracer.Start(ctx, "create "+m.Type,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithTimestamp(m.Time),
		trace.WithAttributes(
			systemAttr,
			semconv.MessagingOperationName("create"),
			semconv.MessagingOperationTypeCreate,
			semconv.MessagingDestinationName(m.Type),
			semconv.MessagingMessageID(m.ID),
			semconv.MessagingMessageBodySize(len(m.Data)),
			KeyAttribute.String(m.Key),
		))
	headers := propagation.MapCarrier{}
	t.prop.Inject(ctx, headers)
	return headers, func(err error) { end(span, err) }
}

// Publish starts the span of one relay batch, linked to the creation
// context of each of its events.
func (t *Tracing) Publish(ctx context.Context, batch []boxcar.Message) func(error) {
	links := make([]trace.Link, 0, len(batch))
	dest := ""
	for i, m := range batch {
		if sc := t.creation(ctx, m); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{semconv.MessagingMessageID(m.ID)}})
		}
		if i == 0 {
			dest = m.Type
		} else if m.Type != dest {
			dest = ""
		}
	}
	name := "publish"
	attrs := []attribute.KeyValue{
		systemAttr,
		semconv.MessagingOperationName("publish"),
		semconv.MessagingOperationTypeSend,
		semconv.MessagingBatchMessageCount(len(batch)),
	}
	if dest != "" {
		// One type: the batch has one destination.
		name += " " + dest
		attrs = append(attrs, semconv.MessagingDestinationName(dest))
	}
	_, span := t.tracer.Start(ctx, name,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithNewRoot(),
		trace.WithLinks(links...),
		trace.WithAttributes(attrs...))
	return func(err error) { end(span, err) }
}

// Process starts the span of one handler call, linked to the event's
// creation context, and returns the handler's context with it.
func (t *Tracing) Process(ctx context.Context, subscriber string, m boxcar.Message) (context.Context, func(error)) {
	// The extracted context keeps what the propagator carries besides the
	// span (baggage) for the handler, whether or not the span is a child.
	ctx = t.prop.Extract(ctx, propagation.MapCarrier(m.Headers))
	attrs := []attribute.KeyValue{
		systemAttr,
		semconv.MessagingOperationName("process"),
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingDestinationName(m.Type),
		semconv.MessagingConsumerGroupName(subscriber),
		semconv.MessagingMessageID(m.ID),
		semconv.MessagingMessageBodySize(len(m.Data)),
		KeyAttribute.String(m.Key),
		AttemptAttribute.Int(m.Attempt),
	}
	if m.Redriven {
		attrs = append(attrs, RedrivenAttribute.Bool(true))
	}
	if m.Replay {
		attrs = append(attrs, ReplayAttribute.Bool(true))
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...)}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
	}
	if !t.parent {
		opts = append(opts, trace.WithNewRoot())
	}
	ctx, span := t.tracer.Start(ctx, "process "+m.Type, opts...)
	return ctx, func(err error) { end(span, err) }
}

// creation is the creation context m's headers carry (invalid if none).
func (t *Tracing) creation(ctx context.Context, m boxcar.Message) trace.SpanContext {
	if len(m.Headers) == 0 {
		return trace.SpanContext{}
	}
	return trace.SpanContextFromContext(t.prop.Extract(ctx, propagation.MapCarrier(m.Headers)))
}

// end ends span with the outcome err.
func end(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		span.SetAttributes(errorType(err))
	}
	span.End()
}

// errorType is the error.type of err: Boxcar's classes first, then the Go
// type.
func errorType(err error) attribute.KeyValue {
	switch {
	case errors.Is(err, boxcar.ErrSchema):
		return semconv.ErrorTypeKey.String("schema")
	case boxcar.IsPermanent(err):
		return semconv.ErrorTypeKey.String("permanent")
	case errors.Is(err, context.DeadlineExceeded):
		return semconv.ErrorTypeKey.String("timeout")
	case errors.Is(err, context.Canceled):
		return semconv.ErrorTypeKey.String("canceled")
	}
	return semconv.ErrorType(err)
}
