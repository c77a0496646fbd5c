// Package boxcarotel traces Boxcar's events with OpenTelemetry: a create
// span at PublishTx, a publish span per relay batch and a process span per
// handler call, after the messaging semantic conventions, with the trace
// context carried in each event's headers (W3C traceparent and tracestate)
// through the outbox, the stream, dead-letter redrives and replays, and
// across crashes: the context is written in the same transaction as the
// event.
//
//	bus, err := boxcar.Open(ctx, db, boxcar.Config{
//		Dir:     "data",
//		Tracing: boxcarotel.New(boxcarotel.Config{TracerProvider: tp}),
//	})
//
// It is a module of its own (github.com/boxcar-bus/boxcar/otel), so that
// Boxcar itself does not depend on OpenTelemetry; it uses the root
// package's public API only (boxcar.Tracing).
package boxcarotel
