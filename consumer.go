package boxcar

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	bjs "github.com/boxcar-bus/boxcar/jetstream"
)

// Message is an event as a subscriber receives it.
type Message struct {
	// ID is the event's unique ID (a ULID). Use it as the idempotency key of
	// external side effects.
	ID      string
	Type    string
	Key     string
	Headers map[string]string
	Data    []byte
	// Time is when the event was published (PublishTx ran).
	Time time.Time
	// Seq is the event's outbox seq: its position in commit order in the
	// outbox of the instance that published it.
	Seq int64
	// Origin is the instance that published the event (its
	// Config.InstanceID), and Partition its key's partition (see
	// Config.Partitions).
	Origin    string
	Partition int
	// StreamSeq is the event's sequence in the JetStream stream.
	StreamSeq uint64
	// Attempt is 1 on the first try of this event by this process, 2 on the
	// first retry, and so on. An event run alone after a restart counts the
	// attempts on it, alone, that the process did not outlive (see
	// docs/RUNBOOK.md, "An event kills the process").
	Attempt int
	// Delivered is how many times JetStream delivered the message (more
	// than 1 after a crash or a lost ack).
	Delivered uint64
	// SchemaVersion is the version of its type's schema the payload matched
	// at publish (Config.Schemas), 0 if none.
	SchemaVersion int
	// Redriven is true for a copy of a dead letter that an operator
	// redrove (Bus.Redrive) to this subscriber: the event's ID is the
	// original's.
	Redriven bool
	// Replay is true for an event a replay (Bus.Replay) brings back.
	Replay bool

	redriveFor  string // a redriven copy's subscriber
	release     string // a release of a parked key the copy belongs to
	releaseLast bool   // the release round's last copy
}

// Handler handles events for a subscriber. Make one with TxHandler or
// HandlerFunc.
type Handler struct {
	tx    func(ctx context.Context, tx *sql.Tx, m Message) error
	plain func(ctx context.Context, m Message) error
}

// TxHandler makes a transactional handler: fn runs inside a SQLite
// transaction of the bus's database, together with the subscriber's dedupe
// row for the event. If fn returns nil, its writes and the dedupe row commit
// together and only then is the message acked: a redelivery finds the row and
// is acked without running fn again (effectively once). If fn returns an
// error or panics, its writes are rolled back and the event is retried.
//
// Boxcar runs several events (of different keys, or consecutive events of
// one key) in one transaction. So fn must not call tx.Commit or
// tx.Rollback, must not keep tx after returning, and must not call Bus.Tx
// or Bus.Publish (use Bus.PublishTx with tx to publish follow-up events
// atomically with the handling).
//
// fn's effects are its writes in tx: only a committed run counts. fn can run
// more than once for an event without an attempt counted (Message.Attempt
// unchanged) when the transaction it ran in is rolled back for another
// reason: a transaction first runs its events without savepoints and, if
// one handler fails, runs them again with one savepoint each; a handler
// that hangs, a full disk or a crash roll back the whole transaction too.
// The failing event's fn runs once per attempt.
func TxHandler(fn func(ctx context.Context, tx *sql.Tx, m Message) error) Handler {
	return Handler{tx: fn}
}

// HandlerFunc makes a non-transactional handler for external side effects
// (an email, a webhook). It is at-least-once: after a crash between the side
// effect and the ack, the event is delivered again. Pass Message.ID to the
// external system as an idempotency key.
func HandlerFunc(fn func(ctx context.Context, m Message) error) Handler {
	return Handler{plain: fn}
}

// SubscribeOptions configures a subscriber. Every field has a default (the
// Default* constants).
type SubscribeOptions struct {
	// Types are the event types to receive. Default: all.
	Types []string
	// Workers is how many keys are handled at once. Default 8. Transactional
	// handlers share SQLite's single writer: their events are grouped into
	// shared transactions (see BatchSize) rather than run side by side.
	Workers int
	// BatchSize is the most events one transactional worker commits in one
	// SQLite transaction. Default 256: at a few microseconds per event that
	// holds SQLite's writer for a few milliseconds at most, and a batch is
	// only as large as what is ready, so it grows with the load (the
	// figures for other sizes are in bench/RESULTS.md).
	BatchSize int
	// MaxInFlight bounds the messages fetched and not yet acked, across all
	// keys: memory stays bounded however far behind the subscriber is.
	// Default 1024.
	MaxInFlight int
	// MaxAttempts is how often an event is tried before it is dead-lettered.
	// Default 5. The key waits meanwhile; other keys go on.
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the wait before a retry, which doubles
	// at each attempt. Defaults 100ms and 10s.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// HandlerTimeout bounds one handler call through its context. Default 30s.
	HandlerTimeout time.Duration
	// Start is where the subscriber starts the first time it runs: at the
	// beginning of the stream's retention (StartBeginning, the default), at
	// its end (StartNow), or at a time (StartAt). A subscriber that ran
	// before resumes where it stopped.
	Start StartPosition
	// ParkKeys keeps per-key order through a dead letter: when an event is
	// dead-lettered, the later events of its key wait (durably, in the
	// dead-letter stream) until it is redriven or discarded, then follow it
	// in their original order (see Bus.Redrive). Default false: the key
	// goes on without the dead-lettered event.
	ParkKeys bool
	// MaxBatchTime bounds how long one transactional batch holds SQLite's
	// single writer: once it has, the batch commits what it handled and the
	// rest of its events wait for the next turn, after the app's writes that
	// queued meanwhile (Bus.Tx, and the app's own transactions on a database
	// from sqlite.Open). A handler call in progress is never cut short.
	// Default 10ms.
	MaxBatchTime time.Duration
	// AckWait is how long JetStream waits for an ack before it redelivers.
	// Default 30s. Boxcar ignores redeliveries of messages it still holds,
	// and resets the consumer to its ack floor at start, so a crashed
	// process's messages come back at once and in order.
	AckWait time.Duration
	// Group, if set, makes this subscriber one member of a group of
	// instances that share its work by key partition, keeping per-key
	// order (see GroupOptions and the README's "From one binary to a
	// cluster"). Default nil: this bus handles every event of the
	// subscriber.
	Group *GroupOptions
}

// withDefaults returns o with every zero field set to its default.
func (o SubscribeOptions) withDefaults() SubscribeOptions {
	if o.Workers == 0 {
		o.Workers = DefaultWorkers
	}
	if o.BatchSize == 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.MaxInFlight == 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.MinBackoff == 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.HandlerTimeout == 0 {
		o.HandlerTimeout = DefaultHandlerTimeout
	}
	if o.AckWait == 0 {
		o.AckWait = DefaultAckWait
	}
	if o.MaxBatchTime == 0 {
		o.MaxBatchTime = DefaultMaxBatchTime
	}
	return o
}

func (o SubscribeOptions) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
	}
	seen := map[string]bool{}
	for _, t := range o.Types {
		if err := bjs.ValidateType(t); err != nil {
			return bad("SubscribeOptions.Types: %v", err)
		}
		if seen[t] {
			return bad("SubscribeOptions.Types lists %q twice", t)
		}
		seen[t] = true
	}
	switch {
	case o.Workers < 0 || o.Workers > 1024:
		return bad("SubscribeOptions.Workers %d: use 1 to 1024", o.Workers)
	case o.BatchSize < 0 || o.BatchSize > 10_000:
		return bad("SubscribeOptions.BatchSize %d: use 1 to 10000", o.BatchSize)
	case o.MaxInFlight < 0 || o.MaxInFlight > 1_000_000:
		return bad("SubscribeOptions.MaxInFlight %d: use 1 to 1000000", o.MaxInFlight)
	case o.MaxAttempts < 0:
		return bad("SubscribeOptions.MaxAttempts is negative")
	case o.MinBackoff < 0 || o.MaxBackoff < 0 || o.MinBackoff > o.MaxBackoff:
		return bad("SubscribeOptions: need 0 <= MinBackoff (%v) <= MaxBackoff (%v)", o.MinBackoff, o.MaxBackoff)
	case o.HandlerTimeout < 0:
		return bad("SubscribeOptions.HandlerTimeout is negative")
	case o.MaxBatchTime < 0:
		return bad("SubscribeOptions.MaxBatchTime is negative")
	case o.AckWait < 0 || o.AckWait > 0 && o.AckWait < time.Second:
		return bad("SubscribeOptions.AckWait %v: use at least 1s", o.AckWait)
	}
	return nil
}

// Subscribe starts the subscriber name: a durable JetStream consumer of the
// events of opts.Types, kept across restarts (a restarted subscriber resumes
// where it stopped). name is ASCII letters, digits, '_' and '-'; one
// subscriber of a name may run per bus.
//
// A type added to opts.Types since the subscriber last ran is delivered from
// the beginning of the stream's retention, like a Kafka consumer that
// subscribes to a new topic starting at its earliest offset; events of the
// types it had are not delivered again. The added type's history is handled
// after, not interleaved with, the events of its keys already handled.
func (b *Bus) Subscribe(ctx context.Context, name string, h Handler, opts SubscribeOptions) (*Subscription, error) {
	if err := b.writable(); err != nil {
		return nil, err
	}
	if err := bjs.ValidateToken("subscriber name", name); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	if isSlotName(name) {
		return nil, fmt.Errorf("%w: subscriber name %q ends like a group slot's consumer (name_slotN): choose another", ErrInvalidConfig, name)
	}
	if (h.tx == nil) == (h.plain == nil) {
		return nil, fmt.Errorf("%w: handler is empty: make it with TxHandler or HandlerFunc", ErrInvalidConfig)
	}
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if opts.Group != nil {
		g := *opts.Group
		opts.Group = &g
		if err := b.validateGroup(name, h, opts); err != nil {
			return nil, err
		}
	}
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	if _, dup := b.subs[name]; dup {
		b.mu.Unlock()
		return nil, fmt.Errorf("%w: %q is already subscribed on this bus", ErrDuplicateSubscriber, name)
	}
	b.subs[name] = nil // reserve the name while provisioning
	b.mu.Unlock()

	var s *Subscription
	var err error
	if opts.Group != nil {
		s, err = b.subscribeGroup(ctx, name, h, opts)
	} else {
		s = newSubscription(b, name, h, opts)
		err = s.startOrWait(ctx)
	}
	b.mu.Lock()
	if err == nil && b.closed.Load() {
		err = ErrClosed
	}
	if err != nil {
		delete(b.subs, name)
		b.mu.Unlock()
		if s != nil {
			s.stopAll(ctx)
		}
		return nil, fmt.Errorf("boxcar: subscribe %s: %w", name, err)
	}
	b.subs[name] = s
	b.mu.Unlock()
	return s, nil
}

// fetchBatch is how many messages a pull asks for at once.
func fetchBatch(o SubscribeOptions) int { return min(o.MaxInFlight, 256) }

// messageOf reads a stream message: its metadata, then the event. An error
// means the message is malformed (not written by a Boxcar relay): it is
// dead-lettered, and the Message still carries its stream seq and
// deliveries.
func messageOf(l bjs.Layout, msg jetstream.Msg) (Message, error) {
	meta, err := msg.Metadata()
	if err != nil {
		return Message{}, fmt.Errorf("metadata: %w", err)
	}
	m := Message{StreamSeq: meta.Sequence.Stream, Delivered: meta.NumDelivered, Data: msg.Data()}
	in, err := bjs.Decode(l, msg.Subject(), msg.Headers(), msg.Data())
	if err != nil {
		return m, err
	}
	m.ID, m.Type, m.Key, m.Headers, m.Seq, m.SchemaVersion = in.ID, in.Type, in.Key, in.Headers, in.Seq, in.SchemaVersion
	m.Origin, m.Partition = in.Origin, in.Partition
	m.redriveFor, m.release, m.releaseLast, m.Redriven = in.RedriveFor, in.Release, in.ReleaseLast, in.RedriveFor != ""
	m.Time = time.Unix(0, in.CreatedNS)
	return m, nil
}

// subscriberStats are the counters of one subscriber.
type subscriberStats struct {
	handled       atomic.Int64
	skipped       atomic.Int64 // found in the dedupe table
	failures      atomic.Int64 // handler errors and panics
	deadLettered  atomic.Int64
	redelivered   atomic.Int64 // deliveries with NumDelivered > 1
	ignored       atomic.Int64 // redeliveries of messages still held or handled before
	recreated     atomic.Int64 // consumers created again after they vanished
	expired       atomic.Int64 // events that left the stream before they were handled
	deliveryGaps  atomic.Int64 // deliveries lost in transit, each followed by a consumer reset
	fetchRestarts atomic.Int64 // stuck fetches restarted (deliverygap.go)
	handlerTime   histogram    // of each handler call
	endToEnd      histogram    // from publish to handled, of each event handled
}
