package boxcarwm

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/boxcar-bus/boxcar"
)

// UUIDHeader is the event header that carries a Watermill message's UUID
// (Boxcar's own event IDs are ULIDs). It is the header watermill-nats uses
// for the same purpose, so a watermill-nats consumer reading Boxcar's stream
// directly finds the UUID where it looks for it. Metadata of that name is
// refused.
const UUIDHeader = "_watermill_message_uuid"

// DefaultKeyMetadata is the metadata entry whose value is an event's key
// when PublisherConfig.KeyMetadata is empty.
const DefaultKeyMetadata = "key"

// Errors of the adapter. Boxcar's own (boxcar.ErrInvalidEvent,
// boxcar.ErrPayloadTooLarge, boxcar.ErrHeadersTooLarge, boxcar.ErrClosed)
// come wrapped as they are: test for them with errors.Is.
var (
	// ErrPublisherClosed: Publish after Close.
	ErrPublisherClosed = errors.New("boxcarwm: publisher is closed")
	// ErrSubscriberClosed: Subscribe after Close.
	ErrSubscriberClosed = errors.New("boxcarwm: subscriber is closed")
	// ErrInvalidTopic: the topic is not a valid Boxcar event type (see
	// Publisher).
	ErrInvalidTopic = errors.New("boxcarwm: invalid topic")
	// ErrInvalidMetadata: a metadata entry (or the UUID) cannot travel as a
	// Boxcar header (see Publisher). The error also matches
	// boxcar.ErrInvalidEvent.
	ErrInvalidMetadata = errors.New("boxcarwm: invalid metadata")
	// ErrNoDelivery: a message produced by a Watermill router handler that
	// consumes from a Boxcar subscriber of this bus was published after the
	// consumed message's transaction ended (HandlerTimeout, Close, Nack), or
	// while several such messages were in flight on its topic, so that the
	// publisher could not tell which transaction it belongs to. Publish it
	// with WithTx or with the consumed message's context.
	ErrNoDelivery = errors.New("boxcarwm: the consumed message's transaction is not in flight")
)

type txKey struct{}

// WithTx returns a context that makes the Publisher write messages carrying
// it (msg.SetContext) into the outbox inside tx: they are published if and
// only if tx commits. tx must be a transaction on the bus's database.
// WithTx(ctx, nil) makes them go in a transaction of their own, even when a
// router produced them (see Publisher).
func WithTx(ctx context.Context, tx *sql.Tx) context.Context {
	return context.WithValue(ctx, txKey{}, tx)
}

// TxFromContext returns the transaction in ctx: the one WithTx put there, or,
// in a message received from a Subscriber, the handler's transaction, which
// commits with the message's dedupe row when the message is acked and rolls
// back when it is nacked. A message published with a context derived from a
// received message's context (for example msg.SetContext(in.Context())) is
// written in that transaction.
func TxFromContext(ctx context.Context) (*sql.Tx, bool) {
	tx, ok := ctx.Value(txKey{}).(*sql.Tx)
	return tx, ok && tx != nil
}

// PublisherConfig configures a Publisher. The zero value is ready to use.
type PublisherConfig struct {
	// KeyMetadata is the metadata entry whose value is the event's key:
	// Boxcar handles the events of one key in publish order, and different
	// keys independently (a failing or nacked message holds back only its
	// own key). Default "key" (DefaultKeyMetadata). A message without it (or
	// with an empty value) gets the topic as its key, so that a topic without
	// keys is one ordered sequence, as Watermill's ordered Pub/Subs promise.
	KeyMetadata string
}

// Publisher is a Watermill message.Publisher that writes into Boxcar's
// outbox. Make it with NewPublisher; it is safe for concurrent use.
//
// Each message becomes one event:
//   - Type: the topic, which must be a valid Boxcar event type: dot-separated
//     tokens of ASCII letters, digits, '_' and '-' (e.g. "orders.placed" or
//     Watermill's test topics "topic-<uuid>"). Topics are not rewritten: a
//     Boxcar subscriber of type T and a Watermill subscriber of topic T see
//     the same events. Another topic is refused with ErrInvalidTopic.
//   - Key: the KeyMetadata entry, else the topic (see PublisherConfig).
//   - Headers: the metadata, as it is, plus UUIDHeader with the message's
//     UUID (left out when the UUID is empty: a subscriber then sees the
//     Boxcar event ID as the UUID). Metadata names must be printable ASCII
//     without spaces or any of "()/,:;<=>?@[\]{}, not start with "Boxcar-"
//     or "Nats-", and not be UUIDHeader; values valid UTF-8 without CR or
//     LF, not starting or ending with a space or tab. Another entry is
//     refused with ErrInvalidMetadata.
//   - Data: the payload.
//
// Where it is written, message by message:
//  1. in the transaction in the message's context (WithTx, or the context
//     of a message received from a Subscriber): published if and only if that
//     transaction commits;
//  2. else, for a message produced by a Watermill router handler whose input
//     came from a Subscriber on the same bus (the router marks it with the
//     handler's subscribe topic): in the consumed message's transaction, so
//     that the produced messages commit with the input's ack (the router
//     publishes them before it acks); if that transaction is no longer in
//     flight, Publish fails with ErrNoDelivery rather than publish them on
//     their own. The router's mark is the topic alone: a router handler
//     that consumes a topic from another Pub/Sub while a Subscriber of the
//     same bus consumes that topic too must set its produced messages'
//     context with WithTx (nil for a transaction of their own);
//  3. else in a transaction of its own (Bus.Publish), committed before
//     Publish returns.
//
// Consecutive messages that go to the same transaction are written with one
// PublishTx call (with case 3: one transaction for them); messages of one
// Publish call that go to different transactions are not atomic together.
// Every message is checked first: on a refusal nothing of the call is
// written, except when Boxcar's own checks (sizes) refuse a message after an
// earlier group of the same call committed on its own.
type Publisher struct {
	bus    *boxcar.Bus
	cfg    PublisherConfig
	logger watermill.LoggerAdapter
	closed atomic.Bool
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher returns a Publisher writing into bus's outbox. logger may be
// nil (no logs).
func NewPublisher(bus *boxcar.Bus, cfg PublisherConfig, logger watermill.LoggerAdapter) (*Publisher, error) {
	if bus == nil {
		return nil, errors.New("boxcarwm: NewPublisher: bus is nil: pass the *boxcar.Bus from boxcar.Open")
	}
	if cfg.KeyMetadata == "" {
		cfg.KeyMetadata = DefaultKeyMetadata
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	return &Publisher{bus: bus, cfg: cfg, logger: logger}, nil
}

// run is a group of consecutive messages that go to one transaction.
type run struct {
	tx     *sql.Tx // nil: a transaction of its own
	ctx    context.Context
	events []boxcar.Event
	uuids  []string
}

// Publish writes msgs to topic; see Publisher for where. It returns once
// they are in the outbox (case 3: committed; cases 1 and 2: written in the
// transaction, to be published if it commits).
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	if p.closed.Load() {
		return ErrPublisherClosed
	}
	if err := validateTopic(topic); err != nil {
		return err
	}
	var runs []*run
	for _, msg := range msgs {
		ev, err := p.event(topic, msg)
		if err != nil {
			return err
		}
		ctx := msg.Context()
		tx, err := p.txOf(ctx)
		if err != nil {
			return fmt.Errorf("boxcarwm: publish message %s to %s: %w", msg.UUID, topic, err)
		}
		if n := len(runs); n > 0 && runs[n-1].tx == tx && (tx != nil || runs[n-1].ctx == ctx) {
			runs[n-1].events = append(runs[n-1].events, ev)
			runs[n-1].uuids = append(runs[n-1].uuids, msg.UUID)
			continue
		}
		runs = append(runs, &run{tx: tx, ctx: ctx, events: []boxcar.Event{ev}, uuids: []string{msg.UUID}})
	}
	for _, r := range runs {
		var err error
		if r.tx != nil {
			err = p.bus.PublishTx(r.ctx, r.tx, r.events...)
		} else {
			err = p.bus.Publish(r.ctx, r.events...)
		}
		if err != nil {
			return fmt.Errorf("boxcarwm: publish %d message(s) to %s (first %s): %w", len(r.events), topic, r.uuids[0], err)
		}
		p.logger.Trace("Published to the Boxcar outbox", watermill.LogFields{
			"topic": topic, "messages": len(r.events), "in_tx": r.tx != nil,
		})
	}
	return nil
}

// txOf returns the transaction a message with context ctx is written in,
// nil for one of its own.
func (p *Publisher) txOf(ctx context.Context) (*sql.Tx, error) {
	if tx, set := ctx.Value(txKey{}).(*sql.Tx); set {
		return tx, nil // nil: WithTx(ctx, nil), a transaction of its own
	}
	topic := message.SubscribeTopicFromCtx(ctx)
	if topic == "" {
		return nil, nil
	}
	h := hubOf(p.bus, false)
	if h == nil {
		return nil, nil
	}
	tx, served, err := h.inFlightTx(topic)
	if !served {
		return nil, nil // the router consumes from something else
	}
	return tx, err
}

// event turns msg into an event for topic, or says why it cannot.
func (p *Publisher) event(topic string, msg *message.Message) (boxcar.Event, error) {
	ev := boxcar.Event{Type: topic, Data: msg.Payload, Key: msg.Metadata.Get(p.cfg.KeyMetadata)}
	if ev.Key == "" {
		ev.Key = topic
	}
	if len(msg.Metadata) > 0 || msg.UUID != "" {
		ev.Headers = make(map[string]string, len(msg.Metadata)+1)
	}
	for k, v := range msg.Metadata {
		if k == UUIDHeader {
			return ev, &metadataError{fmt.Sprintf("message %s: metadata %q is reserved for the message UUID", msg.UUID, k)}
		}
		if err := validateHeader(k, v); err != nil {
			return ev, &metadataError{fmt.Sprintf("message %s: %v", msg.UUID, err)}
		}
		ev.Headers[k] = v
	}
	if msg.UUID != "" {
		if err := validateHeader(UUIDHeader, msg.UUID); err != nil {
			return ev, &metadataError{fmt.Sprintf("message UUID %q: %v", msg.UUID, err)}
		}
		ev.Headers[UUIDHeader] = msg.UUID
	}
	return ev, nil
}

// metadataError is a message's metadata (or UUID) Boxcar cannot carry.
type metadataError struct{ detail string }

func (e *metadataError) Error() string { return ErrInvalidMetadata.Error() + ": " + e.detail }
func (e *metadataError) Unwrap() []error {
	return []error{ErrInvalidMetadata, boxcar.ErrInvalidEvent}
}

// Close makes later Publish calls fail with ErrPublisherClosed. Publish is
// synchronous, so nothing is pending: every Publish that returned nil is in
// the outbox. It does not close the bus, which belongs to the application.
func (p *Publisher) Close() error {
	p.closed.Store(true)
	return nil
}
