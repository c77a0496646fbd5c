package boxcarwm

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/boxcar-bus/boxcar"
)

// The registry holds, per bus, the consumer groups this process runs: a
// Boxcar bus runs one subscriber of a name at a time, so every Watermill
// subscription of one (topic, group) on one bus, from whichever Subscriber
// instance, must share one Boxcar subscriber. Entries live while a group
// has subscriptions; a bus with none has no entry, so nothing outlives the
// Subscribers' Close.
var registry struct {
	mu   sync.Mutex
	hubs map[*boxcar.Bus]*hub
}

// hub is the groups of one bus. Guarded by registry.mu.
type hub struct {
	bus    *boxcar.Bus
	groups map[string]*group // by Boxcar subscriber name
}

// hubOf returns bus's hub, made if create. Call without registry.mu.
func hubOf(bus *boxcar.Bus, create bool) *hub {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	return hubLocked(bus, create)
}

func hubLocked(bus *boxcar.Bus, create bool) *hub {
	h := registry.hubs[bus]
	if h == nil && create {
		if registry.hubs == nil {
			registry.hubs = map[*boxcar.Bus]*hub{}
		}
		h = &hub{bus: bus, groups: map[string]*group{}}
		registry.hubs[bus] = h
	}
	return h
}

// inFlightTx returns the transaction of the one message in flight on topic
// in this bus's groups, for a message a router produced from it. served
// reports whether any group of the bus consumes topic.
func (h *hub) inFlightTx(topic string) (tx *sql.Tx, served bool, err error) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	n := 0
	for _, g := range h.groups {
		if g.topic != topic {
			continue
		}
		served = true
		for d := range g.inFlight {
			tx = d.tx
			n++
		}
	}
	switch {
	case !served:
		return nil, false, nil
	case n == 0:
		return nil, true, fmt.Errorf("%w: the router marked it as produced from topic %s, which a Boxcar subscriber of this bus consumes, but no message of it is in flight (past HandlerTimeout, or nacked?)", ErrNoDelivery, topic)
	case n > 1:
		return nil, true, fmt.Errorf("%w: %d messages of topic %s are in flight: set the produced message's context from the consumed one (msg.SetContext(in.Context()))", ErrNoDelivery, n, topic)
	}
	return tx, true, nil
}

// group is one consumer group on one topic: one Boxcar subscriber and the
// Watermill subscriptions that share its messages.
type group struct {
	h      *hub
	name   string // the Boxcar subscriber's
	topic  string
	cfg    SubscriberConfig
	logger watermill.LoggerAdapter

	opened  chan struct{} // closed once Subscribe returned
	openErr error
	sub     *boxcar.Subscription

	// offerMu is held while a message is offered to the subscriptions'
	// channels; a channel is closed only under it, so no offer sends on a
	// closed channel.
	offerMu sync.Mutex

	// Guarded by registry.mu.
	consumers []*consumer
	changed   chan struct{} // closed (and replaced) when consumers change
	inFlight  map[*delivery]struct{}
	closing   bool
	closed    chan struct{} // closed once a closing group left the hub
	nacks     map[string]int
}

// delivery is one message on its way through a group.
type delivery struct{ tx *sql.Tx }

// attach adds subscription c to its (topic, group) on bus, opening the
// group's Boxcar subscriber if c is its first subscription.
func attach(bus *boxcar.Bus, topic string, cfg SubscriberConfig, c *consumer, logger watermill.LoggerAdapter) (*group, error) {
	name := SubscriberName(topic, cfg.Group)
	for {
		registry.mu.Lock()
		h := hubLocked(bus, true)
		g := h.groups[name]
		if g != nil && g.closing {
			// Its last subscription is stopping it: wait, then open it anew.
			closed := g.closed
			registry.mu.Unlock()
			<-closed
			continue
		}
		if g != nil {
			g.addLocked(c)
			registry.mu.Unlock()
			<-g.opened
			if g.openErr != nil {
				return nil, g.openErr
			}
			return g, nil
		}
		g = &group{
			h: h, name: name, topic: topic, cfg: cfg, logger: logger,
			opened: make(chan struct{}), changed: make(chan struct{}), closed: make(chan struct{}),
			inFlight: map[*delivery]struct{}{}, nacks: map[string]int{},
		}
		h.groups[name] = g
		g.addLocked(c)
		registry.mu.Unlock()

		g.sub, g.openErr = bus.Subscribe(c.ctx, name, boxcar.TxHandler(g.handle), cfg.options(topic))
		if g.openErr != nil {
			registry.mu.Lock()
			g.closing = true
			g.leaveLocked()
			registry.mu.Unlock()
		}
		close(g.opened)
		if g.openErr != nil {
			return nil, g.openErr
		}
		logger.Info("Started the group's Boxcar subscriber", watermill.LogFields{"topic": topic, "group": cfg.Group, "boxcar_subscriber": name})
		return g, nil
	}
}

func (g *group) addLocked(c *consumer) {
	g.consumers = append(g.consumers, c)
	g.changedLocked()
}

// changedLocked wakes an offer in progress, to look at the consumers again.
func (g *group) changedLocked() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// leaveLocked removes a closing group from its hub, and the hub from the
// registry once it has no groups.
func (g *group) leaveLocked() {
	if g.h.groups[g.name] == g {
		delete(g.h.groups, g.name)
	}
	if len(g.h.groups) == 0 && registry.hubs[g.h.bus] == g.h {
		delete(registry.hubs, g.h.bus)
	}
	close(g.closed)
}

// detach ends subscription c: a message it holds is given back, its channel
// is closed, and if it was the group's last subscription the group's Boxcar
// subscriber stops.
func (g *group) detach(c *consumer) error {
	registry.mu.Lock()
	for i, x := range g.consumers {
		if x == c {
			g.consumers = append(g.consumers[:i], g.consumers[i+1:]...)
			break
		}
	}
	close(c.done) // the handler waiting for c's Ack returns
	g.changedLocked()
	last := len(g.consumers) == 0 && !g.closing
	if last {
		g.closing = true
	}
	registry.mu.Unlock()

	g.offerMu.Lock() // no offer is sending to c.out now, nor will again
	close(c.out)
	g.offerMu.Unlock()
	if !last {
		return nil
	}
	<-g.opened
	var err error
	if g.sub != nil {
		ctx, cancel := context.WithTimeout(context.Background(), g.cfg.CloseTimeout)
		err = g.sub.Close(ctx)
		cancel()
		if errors.Is(err, boxcar.ErrClosed) {
			err = nil // the bus closed it already
		}
	}
	registry.mu.Lock()
	g.leaveLocked()
	registry.mu.Unlock()
	g.logger.Info("Stopped the group's Boxcar subscriber", watermill.LogFields{"topic": g.topic, "group": g.cfg.Group, "boxcar_subscriber": g.name})
	if err != nil {
		return fmt.Errorf("boxcarwm: stop Boxcar subscriber %s: %w", g.name, err)
	}
	return nil
}

// Errors a group's handler gives Boxcar: each rolls the transaction back and
// has the event delivered again after the backoff.
var (
	errNacked       = errors.New("boxcarwm: nacked by the Watermill consumer")
	errNotTaken     = errors.New("boxcarwm: no Watermill subscription of the group took the message within SubscriberConfig.DeliveryWait (none reading its channel, or all busy): offered again after the backoff")
	errConsumerGone = errors.New("boxcarwm: the Watermill subscription ended before it acked the message")
)

// handle is the group's Boxcar TxHandler: it hands the event, as a Watermill
// message carrying tx, to a free subscription and returns once the consumer
// acks (nil: Boxcar commits tx with the dedupe row, then acks the event) or
// nacks (an error: Boxcar rolls tx back and retries), or the subscription or
// ctx ends.
func (g *group) handle(ctx context.Context, tx *sql.Tx, ev boxcar.Message) error {
	d := &delivery{tx: tx}
	registry.mu.Lock()
	g.inFlight[d] = struct{}{}
	registry.mu.Unlock()
	defer func() {
		registry.mu.Lock()
		delete(g.inFlight, d)
		registry.mu.Unlock()
	}()

	c, msg, cancel, err := g.offer(ctx, tx, ev)
	if err != nil {
		return err
	}
	defer func() {
		cancel()
		registry.mu.Lock()
		c.busy = false
		g.changedLocked()
		registry.mu.Unlock()
	}()
	select {
	case <-msg.Acked():
	case <-msg.Nacked():
	case <-c.done:
	case <-ctx.Done():
	}
	// An Ack or Nack given before the subscription or ctx ended wins, even
	// when both are ready by the time select chose.
	select {
	case <-msg.Acked():
		g.forgetNacks(ev.ID)
		return nil
	case <-msg.Nacked():
		return g.nacked(ev.ID)
	default:
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("boxcarwm: message %s not acked within SubscriberConfig.HandlerTimeout, or the subscriber is closing: %w", msg.UUID, err)
	}
	return errConsumerGone
}

// nacked counts a Nack of event id and returns the handler's error: a
// permanent one at the MaxNacks-th.
func (g *group) nacked(id string) error {
	if g.cfg.MaxNacks == 0 {
		return errNacked
	}
	registry.mu.Lock()
	g.nacks[id]++
	n := g.nacks[id]
	if n >= g.cfg.MaxNacks {
		delete(g.nacks, id)
	}
	registry.mu.Unlock()
	if n >= g.cfg.MaxNacks {
		return boxcar.Permanent(fmt.Errorf("%w %d times (SubscriberConfig.MaxNacks)", errNacked, n))
	}
	return errNacked
}

func (g *group) forgetNacks(id string) {
	if g.cfg.MaxNacks == 0 {
		return
	}
	registry.mu.Lock()
	delete(g.nacks, id)
	registry.mu.Unlock()
}

// Indexes of the fixed cases of offer's select.
const (
	caseCtx = iota
	caseTimer
	caseChanged
	firstConsumer
)

// offer hands ev to the first free subscription that takes it from its
// channel within DeliveryWait. Each subscription gets a message of its own
// (its context derives from the Subscribe call's); the one taken is
// returned, with the func that cancels its context.
func (g *group) offer(ctx context.Context, tx *sql.Tx, ev boxcar.Message) (*consumer, *message.Message, context.CancelFunc, error) {
	g.offerMu.Lock()
	defer g.offerMu.Unlock()
	timer := time.NewTimer(g.cfg.DeliveryWait)
	defer timer.Stop()
	var (
		cases   []reflect.SelectCase
		free    []*consumer
		msgs    []*message.Message
		cancels []context.CancelFunc
	)
	cancelAll := func(except int) {
		for i, cancel := range cancels {
			if i != except {
				cancel()
			}
		}
		cancels, msgs = cancels[:0], msgs[:0]
	}
	for {
		registry.mu.Lock()
		changed := g.changed
		free = free[:0]
		for _, c := range g.consumers {
			if !c.busy {
				free = append(free, c)
			}
		}
		registry.mu.Unlock()
		cases = append(cases[:0],
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(timer.C)},
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(changed)})
		for _, c := range free {
			msg, cancel := watermillMessage(ctx, c.ctx, tx, ev)
			msgs, cancels = append(msgs, msg), append(cancels, cancel)
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectSend, Chan: reflect.ValueOf(c.out), Send: reflect.ValueOf(msg)})
		}
		chosen, _, _ := reflect.Select(cases)
		switch chosen {
		case caseCtx:
			cancelAll(-1)
			return nil, nil, nil, ctx.Err()
		case caseTimer:
			cancelAll(-1)
			return nil, nil, nil, errNotTaken
		case caseChanged:
			cancelAll(-1)
			continue
		}
		i := chosen - firstConsumer
		c, msg, cancel := free[i], msgs[i], cancels[i]
		cancelAll(i)
		registry.mu.Lock()
		c.busy = true
		registry.mu.Unlock()
		return c, msg, cancel, nil
	}
}

type eventKey struct{}

// EventFromContext returns the Boxcar event a received message was made
// from: its event ID (a ULID, the idempotency key for side effects outside
// the transaction), key, outbox seq and attempt.
func EventFromContext(ctx context.Context) (boxcar.Message, bool) {
	m, ok := ctx.Value(eventKey{}).(boxcar.Message)
	return m, ok
}

// watermillMessage makes the Watermill message of ev for a subscription
// whose Subscribe context is subCtx. Its context carries tx and ev, and ends
// with subCtx, with handlerCtx (HandlerTimeout, Close) or when cancel is
// called (once the message is acked or nacked).
func watermillMessage(handlerCtx, subCtx context.Context, tx *sql.Tx, ev boxcar.Message) (*message.Message, context.CancelFunc) {
	uuid, ok := ev.Headers[UUIDHeader]
	if !ok {
		uuid = ev.ID // published by Boxcar itself, not through a Publisher
	}
	msg := message.NewMessage(uuid, ev.Data)
	for k, v := range ev.Headers {
		if k != UUIDHeader {
			msg.Metadata.Set(k, v)
		}
	}
	ctx, cancel := context.WithCancel(context.WithValue(WithTx(subCtx, tx), eventKey{}, ev))
	stop := context.AfterFunc(handlerCtx, cancel)
	msg.SetContext(ctx)
	return msg, func() { stop(); cancel() }
}
