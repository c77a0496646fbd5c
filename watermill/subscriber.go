package boxcarwm

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/boxcar-bus/boxcar"
)

// Defaults of SubscriberConfig. A zero field means its default.
const (
	DefaultDeliveryWait = 50 * time.Millisecond
	DefaultMinBackoff   = 100 * time.Millisecond
	DefaultMaxBackoff   = time.Second
	DefaultCloseTimeout = 30 * time.Second
)

// SubscriberConfig configures a Subscriber. Group is required; every other
// field has a default.
type SubscriberConfig struct {
	// Group is the consumer group. Each (topic, group) is one durable Boxcar
	// subscriber (named SubscriberName(topic, group)) that receives every
	// event of the topic from the start of the stream's retention, and
	// resumes where it stopped after a restart. Watermill subscriptions of
	// one group on one topic on one bus, from any number of Subscriber
	// instances, share its messages; another group receives them all again.
	// ASCII is advised but any string works. Required.
	Group string

	// The fields below configure the group's Boxcar subscriber when its
	// first subscription in this process opens it; later subscriptions of
	// the group while it runs share it as it is.

	// DeliveryWait is how long a message waits for a Watermill consumer of
	// its group to take it from a subscription's channel. Default 50ms.
	// Meanwhile the message holds SQLite's single writer (it runs in the
	// handler's transaction), so a consumer that does not read its channel
	// must not hold the app's writes: past DeliveryWait the transaction
	// rolls back and the message is offered again after the backoff. A
	// router always reads its channel: its messages are taken at once.
	DeliveryWait time.Duration
	// HandlerTimeout bounds the time between a message's delivery and its
	// Ack or Nack; past it the message's context is canceled, the
	// transaction rolls back, an Ack that comes later is too late, and the
	// message is delivered again. Default boxcar.DefaultHandlerTimeout
	// (30s). The consumer holds SQLite's writer all this time: keep
	// handlers short.
	HandlerTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait before a nacked message (or
	// one no consumer took within DeliveryWait) is offered again; the wait
	// doubles at each try. Defaults 100ms and 1s. Only the message's key
	// waits: see PublisherConfig.KeyMetadata.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// MaxNacks, if set, dead-letters a message (Boxcar's dead-letter
	// stream, reason "permanent") at its MaxNacks-th Nack in this process,
	// and its key moves on. Default 0: a nacked message is delivered again
	// for ever, as Watermill's Nack means; use the router's Retry and
	// PoisonQueue middleware for policies (but see TxFromContext: Retry
	// reruns the handler in the same transaction).
	MaxNacks int
	// MaxInFlight bounds the events the group's Boxcar subscriber holds in
	// memory. Default boxcar.DefaultMaxInFlight.
	MaxInFlight int
	// AckWait is JetStream's redelivery timeout for the group's consumer.
	// Default boxcar.DefaultAckWait.
	AckWait time.Duration
	// CloseTimeout bounds the wait for the group's Boxcar subscriber to stop
	// when its last subscription closes (Watermill's Close has no context).
	// Default 30s.
	CloseTimeout time.Duration
}

func (c SubscriberConfig) withDefaults() SubscriberConfig {
	if c.DeliveryWait == 0 {
		c.DeliveryWait = DefaultDeliveryWait
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(DefaultMaxBackoff, c.MinBackoff)
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
	return c
}

func (c SubscriberConfig) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", boxcar.ErrInvalidConfig, fmt.Sprintf(format, a...))
	}
	switch {
	case c.Group == "":
		return bad("SubscriberConfig.Group is empty: name the consumer group (subscriptions of one group share its messages, each group receives them all)")
	case c.DeliveryWait < 0:
		return bad("SubscriberConfig.DeliveryWait is negative")
	case c.MaxNacks < 0:
		return bad("SubscriberConfig.MaxNacks is negative: use 0 to redeliver nacked messages for ever")
	case c.CloseTimeout < 0:
		return bad("SubscriberConfig.CloseTimeout is negative")
	}
	return nil // Boxcar checks the rest at Subscribe
}

// options are the Boxcar subscriber's options for the group of topic.
func (c SubscriberConfig) options(topic string) boxcar.SubscribeOptions {
	return boxcar.SubscribeOptions{
		Types: []string{topic},
		// One event per transaction: a Watermill consumer acks or nacks
		// each message on its own, and the transaction is the consumer's
		// (TxFromContext). In a batch of several, a Nack would roll back
		// the messages acked before it in the same transaction and deliver
		// them again, which Watermill's exactly-once contract forbids.
		BatchSize: 1,
		// Nacks are retried for ever; MaxNacks counts them itself, because
		// Boxcar also counts the deliveries no consumer took.
		MaxAttempts:    math.MaxInt32,
		MinBackoff:     c.MinBackoff,
		MaxBackoff:     c.MaxBackoff,
		HandlerTimeout: c.HandlerTimeout,
		MaxInFlight:    c.MaxInFlight,
		AckWait:        c.AckWait,
	}
}

// Subscriber is a Watermill message.Subscriber backed by Boxcar: one
// durable, transactional Boxcar subscriber per topic and consumer group.
// Make it with NewSubscriber; it is safe for concurrent use.
//
// Each message received runs inside a transaction of the bus's database
// (TxFromContext(msg.Context())), together with the group's dedupe row for
// the event:
//   - Ack commits the transaction, then the event is acked in JetStream: a
//     redelivery (after a crash, a lost ack) finds the dedupe row and is
//     skipped, so an acked message is never delivered to the group again
//     and its writes in the transaction happen exactly once.
//   - Nack rolls the transaction back; the message is delivered again after
//     the backoff, before any later message of its key.
//   - A message neither acked nor nacked within HandlerTimeout, or whose
//     subscription ends (its context, Close) before it is acked, is rolled
//     back and delivered again, to the group's next free subscription.
//
// A subscription's channel carries one message at a time: the next comes
// after the previous one's Ack or Nack. Messages of one key (see
// PublisherConfig.KeyMetadata; by default the whole topic) come in publish
// order, also across subscriptions sharing a group.
//
// The transaction is SQLite's write transaction: while a consumer holds a
// message, the bus's other writers (the app's Bus.Tx, other subscribers)
// wait. Transactional consumers of one bus therefore handle one message at a
// time between them; keep handlers to their database work. A consumer must
// not call Bus.Tx or Bus.Publish, nor publish with a Publisher without the
// message's transaction (it would wait for itself until HandlerTimeout): a
// Publisher writes messages carrying the received message's context, and
// those a router produces from it, into its transaction.
type Subscriber struct {
	bus    *boxcar.Bus
	cfg    SubscriberConfig
	logger watermill.LoggerAdapter

	mu        sync.Mutex
	closed    bool
	consumers map[*consumer]struct{}
	watchers  sync.WaitGroup // one per subscription: its context
}

var _ message.Subscriber = (*Subscriber)(nil)

// NewSubscriber returns a Subscriber on bus for cfg.Group. logger may be nil
// (no logs). Close the Subscribers (and routers) before the bus.
func NewSubscriber(bus *boxcar.Bus, cfg SubscriberConfig, logger watermill.LoggerAdapter) (*Subscriber, error) {
	if bus == nil {
		return nil, errors.New("boxcarwm: NewSubscriber: bus is nil: pass the *boxcar.Bus from boxcar.Open")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	return &Subscriber{bus: bus, cfg: cfg, logger: logger, consumers: map[*consumer]struct{}{}}, nil
}

// consumer is one Subscribe call: its channel and context.
type consumer struct {
	s    *Subscriber
	g    *group
	ctx  context.Context // the Subscribe call's
	out  chan *message.Message
	done chan struct{} // closed when the subscription ends
	busy bool          // holds a message; guarded by registry.mu
	once sync.Once
	err  error // of the detach that ended it, set in once
}

// Subscribe returns a channel of topic's messages for the Subscriber's
// group. The channel is closed when ctx ends or the Subscriber closes. ctx
// also bounds opening the group's Boxcar subscriber, and each message's
// context derives from it.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if err := validateTopic(topic); err != nil {
		return nil, err
	}
	c := &consumer{s: s, ctx: ctx, out: make(chan *message.Message), done: make(chan struct{})}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, ErrSubscriberClosed
	}
	g, err := attach(s.bus, topic, s.cfg, c, s.logger)
	if err != nil {
		return nil, fmt.Errorf("boxcarwm: subscribe to %s for group %q: %w", topic, s.cfg.Group, err)
	}
	c.g = g
	s.mu.Lock()
	if s.closed {
		// Close ran meanwhile and did not see c.
		s.mu.Unlock()
		return nil, errors.Join(ErrSubscriberClosed, g.detach(c))
	}
	s.consumers[c] = struct{}{}
	s.watchers.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.watchers.Done()
		select {
		case <-ctx.Done():
			s.end(c)
		case <-c.done:
		}
	}()
	s.logger.Debug("Subscribed", watermill.LogFields{"topic": topic, "group": s.cfg.Group, "boxcar_subscriber": g.name})
	return c.out, nil
}

// end ends subscription c, once, and returns the error of closing its
// group's Boxcar subscriber if c was the group's last subscription.
func (s *Subscriber) end(c *consumer) error {
	c.once.Do(func() {
		c.err = c.g.detach(c)
		s.mu.Lock()
		delete(s.consumers, c)
		s.mu.Unlock()
	})
	return c.err
}

// Close ends every subscription of the Subscriber: their channels are
// closed when it returns, and a message they hold unacked is rolled back and
// delivered again (to another subscription of its group, or later). A group
// left without subscriptions stops its Boxcar subscriber, waiting up to
// CloseTimeout. Calling Close again does nothing.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	s.closed = true
	cs := make([]*consumer, 0, len(s.consumers))
	for c := range s.consumers {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	var errs []error
	for _, c := range cs {
		if err := s.end(c); err != nil {
			errs = append(errs, err)
		}
	}
	s.watchers.Wait()
	return errors.Join(errs...)
}
