package boxcar

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	bjs "github.com/boxcar-bus/boxcar/jetstream"
)

// Tracing follows events through the bus for a tracing system: PublishTx,
// the relay and the subscribers call it at each step of an event's life, and
// the trace context travels in the event's headers, through the outbox, the
// stream, dead letters, redrives and replays. Set it as Config.Tracing; the
// module github.com/boxcar-bus/boxcar/otel implements it with OpenTelemetry
// (a module of its own, so that Boxcar itself does not depend on it).
//
// Its methods run on Boxcar's hot paths, from many goroutines at once: they
// must be safe for concurrent use and quick, must not use the bus or its
// database, and must neither change nor keep the Messages they are given.
// A nil end function is allowed (nothing to end).
type Tracing interface {
	// Create is called by PublishTx for each event once it is validated
	// and has its ID, before it is written (m has ID, Type, Key, Headers,
	// Data and Time; Seq is not known yet). The headers it returns are added
	// to the event's own, replacing those of the same names: they are what
	// travels with the event (a trace context: W3C traceparent and
	// tracestate). They follow the rules of Event.Headers; if they break one,
	// or take the event past the stream's limits, PublishTx refuses the call
	// (ErrInvalidEvent) and writes nothing. end is called once, with the
	// outcome of the write: nil when the event is written into the caller's
	// transaction, which publishes it if and only if it commits.
	Create(ctx context.Context, m Message) (headers map[string]string, end func(error))
	// Publish is called by the relay as it sends a batch of events to the
	// stream, in outbox order (each with ID, Type, Key, Headers, Data, Time
	// and Seq). end is called once: with nil when the stream has acked the
	// whole batch, or with the error that stopped the relay (which then asks
	// the stream what it holds and sends the rest again, in a new batch), or
	// with the context's error when the bus closes first.
	Publish(ctx context.Context, batch []Message) (end func(error))
	// Process is called around each call of a subscriber's handler: the
	// handler runs with the context it returns, and end is called with the
	// handler's result (a panic or a timeout as an error). Events the dedupe
	// table skips are not handled and not traced. A TxHandler's writes
	// commit after end, with the rest of its batch; a batch that rolls back
	// runs its handlers again (see TxHandler), and each run is a call.
	Process(ctx context.Context, subscriber string, m Message) (context.Context, func(error))
}

// createTrace collects the end functions of one PublishTx call's Create
// callbacks, to end them with the write's outcome.
type createTrace struct {
	ends []func(error)
}

// create calls Config.Tracing's Create for event i (ID id) and returns the
// event's headers with the tracer's added; they are checked as PublishTx
// checks the event's own.
func (t *createTrace) create(ctx context.Context, b *Bus, i int, id string, e *Event, now time.Time) (map[string]string, error) {
	added, end := b.cfg.Tracing.Create(ctx, Message{ID: id, Type: e.Type, Key: e.Key, Headers: e.Headers, Data: e.Data, Time: now})
	if end != nil {
		t.ends = append(t.ends, end)
	}
	if len(added) == 0 {
		return e.Headers, nil
	}
	h := maps.Clone(e.Headers)
	if h == nil {
		h = make(map[string]string, len(added))
	}
	for k, v := range added {
		if err := bjs.ValidateHeader(k, v); err != nil {
			return nil, &eventError{index: i, field: "Headers", err: fmt.Errorf("from Config.Tracing: %w", err)}
		}
		h[k] = v
	}
	block := bjs.HeaderBlockSize(e.Type, e.Key, h)
	if block > bjs.MaxHeaderBlock {
		return nil, &eventError{index: i, field: "Headers", err: fmt.Errorf("%w: with Boxcar's own and Config.Tracing's, the header block would be %d bytes, and JetStream stores at most %d", ErrHeadersTooLarge, block, bjs.MaxHeaderBlock)}
	}
	if block+len(e.Data) > b.maxPayload {
		return nil, &eventError{index: i, field: "Data", err: fmt.Errorf("%w: %d bytes of data and a %d-byte header block with Config.Tracing's headers, the server's max payload is %d", ErrPayloadTooLarge, len(e.Data), block, b.maxPayload)}
	}
	return h, nil
}

// end ends every create callback of the call with err.
func (t *createTrace) end(err error) {
	for _, end := range t.ends {
		end(err)
	}
	t.ends = nil
}

// traceSend tells Config.Tracing that the relay sends r.out as a batch; the
// batch's end waits in r.traced until the batch is acked (traceAcked) or
// abandoned (traceEndAll).
func (r *relay) traceSend(ctx context.Context) {
	tr := r.b.cfg.Tracing
	if tr == nil {
		return
	}
	batch := make([]Message, len(r.out))
	for i, o := range r.out {
		batch[i] = Message{ID: o.ID, Type: o.Type, Key: o.Key, Headers: o.Headers, Data: o.Data, Seq: o.Seq, Time: time.Unix(0, o.CreatedNS)}
	}
	r.traced = append(r.traced, tr.Publish(ctx, batch))
}

// traceAcked ends the oldest batch in flight: the stream acked it.
func (r *relay) traceAcked() {
	if len(r.traced) == 0 {
		return
	}
	end := r.traced[0]
	r.traced[0] = nil
	r.traced = r.traced[1:]
	if end != nil {
		end(nil)
	}
}

// traceEndAll ends every batch still in flight with err: the relay gave up
// on them (it resyncs with the stream and sends again what it lacks) or is
// stopping.
func (r *relay) traceEndAll(err error) {
	if err == nil {
		err = errors.New("boxcar: relay stopped")
	}
	for _, end := range r.traced {
		if end != nil {
			end(err)
		}
	}
	clear(r.traced)
	r.traced = r.traced[:0]
}

// noEnd is the end of an untraced handler call.
func noEnd(error) {}

// traceProcess starts Config.Tracing's Process around a handler call of
// subscriber for m: the handler runs with the context it returns; the
// caller calls end with the handler's result.
func (b *Bus) traceProcess(ctx context.Context, subscriber string, m Message) (context.Context, func(error)) {
	tr := b.cfg.Tracing
	if tr == nil {
		return ctx, noEnd
	}
	hctx, end := tr.Process(ctx, subscriber, m)
	if hctx == nil {
		hctx = ctx
	}
	if end == nil {
		end = noEnd
	}
	return hctx, end
}
