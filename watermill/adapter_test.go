package boxcarwm_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/boxcar-bus/boxcar"
	boxcarwm "github.com/boxcar-bus/boxcar/watermill"
)

// bundle is what an adapter test needs: a bus with an app table, a
// publisher, and a way to subscribe.
type bundle struct {
	t   *testing.T
	bus *boxcar.Bus
	db  *sql.DB
	pub *boxcarwm.Publisher
}

func setup(t *testing.T) *bundle {
	t.Helper()
	bus := openBus(t)
	b := &bundle{t: t, bus: bus, db: bus.DB()}
	if _, err := b.db.Exec(`CREATE TABLE applied (uuid TEXT NOT NULL, note TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	pub, err := boxcarwm.NewPublisher(bus, boxcarwm.PublisherConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.pub = pub
	return b
}

// subscribe subscribes a new Subscriber of group to topic, closed at the end
// of the test.
func (b *bundle) subscribe(group, topic string, tweak ...func(*boxcarwm.SubscriberConfig)) (*boxcarwm.Subscriber, <-chan *message.Message) {
	b.t.Helper()
	cfg := suiteConfig(group)
	for _, f := range tweak {
		f(&cfg)
	}
	sub, err := boxcarwm.NewSubscriber(b.bus, cfg, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() {
		if err := sub.Close(); err != nil {
			b.t.Errorf("close subscriber: %v", err)
		}
	})
	ch, err := sub.Subscribe(context.Background(), topic)
	if err != nil {
		b.t.Fatal(err)
	}
	return sub, ch
}

// recv returns the next message of ch. The bound only keeps a broken
// adapter from hanging the test; no result depends on it.
func recv(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case msg, ok := <-ch:
		if !ok {
			t.Fatal("the subscription's channel closed")
		}
		return msg
	case <-time.After(time.Minute):
		t.Fatal("no message within a minute")
	}
	return nil
}

func (b *bundle) applied(uuid string) int {
	b.t.Helper()
	var n int
	if err := b.db.QueryRow(`SELECT count(*) FROM applied WHERE uuid = ?`, uuid).Scan(&n); err != nil {
		b.t.Fatal(err)
	}
	return n
}

// apply writes a row for msg in its handler transaction.
func apply(t *testing.T, msg *message.Message, note string) {
	t.Helper()
	tx, ok := boxcarwm.TxFromContext(msg.Context())
	if !ok {
		t.Fatal("a received message carries no transaction")
	}
	if _, err := tx.ExecContext(msg.Context(), `INSERT INTO applied(uuid, note) VALUES(?, ?)`, msg.UUID, note); err != nil {
		t.Fatal(err)
	}
}

// A message published with the app's transaction in its context is
// published if and only if that transaction commits.
func TestPublishInTheAppTransaction(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	publishIn := func(commit bool) *message.Message {
		tx, err := b.db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		msg := message.NewMessage(watermill.NewUUID(), []byte(fmt.Sprint(commit)))
		msg.SetContext(boxcarwm.WithTx(ctx, tx))
		if err := b.pub.Publish("orders.placed", msg); err != nil {
			t.Fatal(err)
		}
		if commit {
			err = tx.Commit()
		} else {
			err = tx.Rollback()
		}
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	publishIn(false)
	committed := publishIn(true)
	_, ch := b.subscribe("g", "orders.placed")
	// One key (the topic): had the rolled-back message been written, it
	// would come first.
	got := recv(t, ch)
	got.Ack()
	if got.UUID != committed.UUID || string(got.Payload) != "true" {
		t.Fatalf("received %s %q, want the committed message %s", got.UUID, got.Payload, committed.UUID)
	}
}

// Ack commits the handler's transaction with the dedupe row; Nack rolls it
// back and the message comes again. UUID, metadata and payload come back as
// they were published.
func TestAckCommitsNackRollsBack(t *testing.T) {
	t.Parallel()
	b := setup(t)
	msg := message.NewMessage(watermill.NewUUID(), []byte("payload"))
	msg.Metadata.Set("tenant", "acme")
	msg.Metadata.Set("Mixed-Case", "kept")
	if err := b.pub.Publish("invoices.issued", msg); err != nil {
		t.Fatal(err)
	}
	_, ch := b.subscribe("billing", "invoices.issued")

	first := recv(t, ch)
	if first.UUID != msg.UUID || string(first.Payload) != "payload" ||
		first.Metadata.Get("tenant") != "acme" || first.Metadata.Get("Mixed-Case") != "kept" || len(first.Metadata) != 2 {
		t.Fatalf("received %s %q %v, want %s %q %v", first.UUID, first.Payload, first.Metadata, msg.UUID, msg.Payload, msg.Metadata)
	}
	ev, ok := boxcarwm.EventFromContext(first.Context())
	if !ok || ev.Type != "invoices.issued" || ev.Key != "invoices.issued" || ev.ID == "" {
		t.Fatalf("EventFromContext = %+v, %v: want the event of type and key invoices.issued", ev, ok)
	}
	apply(t, first, "nacked")
	first.Nack()

	second := recv(t, ch)
	if second.UUID != msg.UUID {
		t.Fatalf("after a Nack received %s, want %s again", second.UUID, msg.UUID)
	}
	apply(t, second, "acked")
	second.Ack()
	<-second.Context().Done() // canceled once the handler returned

	// A later message shows the first's commit is done (one key: in order).
	next := message.NewMessage(watermill.NewUUID(), nil)
	if err := b.pub.Publish("invoices.issued", next); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, ch); got.UUID != next.UUID {
		t.Fatalf("received %s after the Ack, want the next message %s", got.UUID, next.UUID)
	} else {
		got.Ack()
	}
	var notes []string
	rows, err := b.db.Query(`SELECT note FROM applied WHERE uuid = ?`, msg.UUID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var n string
		rows.Scan(&n)
		notes = append(notes, n)
	}
	if strings.Join(notes, ",") != "acked" {
		t.Fatalf("rows of the message: %v, want only the acked delivery's", notes)
	}
}

// An acked message is not delivered again to its group, even by a new
// subscriber of the group after the old one closed; a new group receives it.
func TestAckedIsNotDeliveredAgain(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := message.NewMessage(watermill.NewUUID(), nil)
	if err := b.pub.Publish("t", a); err != nil {
		t.Fatal(err)
	}
	sub, ch := b.subscribe("g", "t")
	recv(t, ch).Ack()
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	c := message.NewMessage(watermill.NewUUID(), nil)
	if err := b.pub.Publish("t", c); err != nil {
		t.Fatal(err)
	}
	_, ch = b.subscribe("g", "t")
	if got := recv(t, ch); got.UUID != c.UUID {
		t.Fatalf("the group's new subscriber received %s, want %s (%s was acked)", got.UUID, c.UUID, a.UUID)
	} else {
		got.Ack()
	}
	_, other := b.subscribe("other", "t")
	for _, want := range []string{a.UUID, c.UUID} {
		got := recv(t, other)
		got.Ack()
		if got.UUID != want {
			t.Fatalf("a new group received %s, want %s", got.UUID, want)
		}
	}
}

// A message held unacked when its subscription closes is rolled back and
// delivered again, to the group's next subscriber.
func TestCloseGivesBackTheMessageInFlight(t *testing.T) {
	t.Parallel()
	b := setup(t)
	msg := message.NewMessage(watermill.NewUUID(), nil)
	if err := b.pub.Publish("t", msg); err != nil {
		t.Fatal(err)
	}
	sub, ch := b.subscribe("g", "t")
	held := recv(t, ch)
	apply(t, held, "held")
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if _, open := <-ch; open {
		t.Fatal("the channel is open after Close")
	}
	<-held.Context().Done()
	_, ch = b.subscribe("g", "t")
	again := recv(t, ch)
	if again.UUID != msg.UUID {
		t.Fatalf("received %s, want %s again", again.UUID, msg.UUID)
	}
	if n := b.applied(msg.UUID); n != 0 {
		t.Fatalf("%d rows of the closed delivery committed, want 0", n)
	}
	apply(t, again, "acked")
	again.Ack()
}

// Subscriptions of one group share its messages: each message goes to one
// of them, and a subscription gets its next message only after it acked
// the one it holds.
func TestGroupSharesWork(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 20
	want := map[string]bool{}
	for range n {
		msg := message.NewMessage(watermill.NewUUID(), nil)
		msg.Metadata.Set("key", watermill.NewShortUUID()) // keys of their own
		want[msg.UUID] = true
		if err := b.pub.Publish("jobs", msg); err != nil {
			t.Fatal(err)
		}
	}
	_, ch1 := b.subscribe("workers", "jobs")
	_, ch2 := b.subscribe("workers", "jobs")
	got := map[string]int{}
	for range n {
		var msg *message.Message
		select {
		case msg = <-ch1:
		case msg = <-ch2:
		case <-time.After(time.Minute):
			t.Fatal("no message within a minute")
		}
		got[msg.UUID]++
		msg.Ack()
	}
	for id := range want {
		if got[id] != 1 {
			t.Fatalf("message %s received %d times by the group, want once", id, got[id])
		}
	}
}

// The publisher refuses, before writing anything, what Boxcar cannot carry,
// with an error that says why; a later valid message is the next one
// delivered.
func TestPublishRefuses(t *testing.T) {
	t.Parallel()
	b := setup(t)
	withMeta := func(k, v string) *message.Message {
		m := message.NewMessage(watermill.NewUUID(), nil)
		m.Metadata.Set(k, v)
		return m
	}
	cases := []struct {
		name  string
		topic string
		msgs  []*message.Message
		is    []error
		says  string
	}{
		{"topic with a slash", "orders/placed", []*message.Message{message.NewMessage("u", nil)}, []error{boxcarwm.ErrInvalidTopic, boxcar.ErrInvalidType}, "orders/placed"},
		{"empty topic", "", []*message.Message{message.NewMessage("u", nil)}, []error{boxcarwm.ErrInvalidTopic}, "empty"},
		{"metadata name with a space", "t", []*message.Message{withMeta("bad name", "v")}, []error{boxcarwm.ErrInvalidMetadata, boxcar.ErrInvalidEvent}, "bad name"},
		{"reserved metadata", "t", []*message.Message{withMeta(boxcarwm.UUIDHeader, "v")}, []error{boxcarwm.ErrInvalidMetadata}, "reserved"},
		{"Boxcar's own header", "t", []*message.Message{withMeta("Boxcar-Seq", "1")}, []error{boxcarwm.ErrInvalidMetadata}, "Boxcar-"},
		{"value with a newline", "t", []*message.Message{withMeta("k", "a\nb")}, []error{boxcarwm.ErrInvalidMetadata}, "CR or LF"},
		{"second message bad", "t", []*message.Message{message.NewMessage("ok", nil), withMeta("k", " padded")}, []error{boxcarwm.ErrInvalidMetadata}, "space"},
		{"metadata over JetStream's header block", "t", []*message.Message{withMeta("big", strings.Repeat("v", 70<<10))}, []error{boxcar.ErrHeadersTooLarge}, "header block"},
		{"payload too large", "t", []*message.Message{message.NewMessage("big", make([]byte, boxcar.DefaultMaxEventBytes+1))}, []error{boxcar.ErrPayloadTooLarge}, "big"},
	}
	for _, c := range cases {
		err := b.pub.Publish(c.topic, c.msgs...)
		if err == nil {
			t.Fatalf("%s: Publish returned nil", c.name)
		}
		for _, want := range c.is {
			if !errors.Is(err, want) {
				t.Errorf("%s: error %q does not match %v", c.name, err, want)
			}
		}
		if !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: error %q does not say %q", c.name, err, c.says)
		}
	}
	good := message.NewMessage(watermill.NewUUID(), nil)
	if err := b.pub.Publish("t", good); err != nil {
		t.Fatal(err)
	}
	_, ch := b.subscribe("g", "t")
	if got := recv(t, ch); got.UUID != good.UUID {
		t.Fatalf("received %s, want %s: a refused message was written", got.UUID, good.UUID)
	} else {
		got.Ack()
	}
	if err := b.pub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.pub.Publish("t", good); !errors.Is(err, boxcarwm.ErrPublisherClosed) {
		t.Fatalf("Publish after Close: %v, want ErrPublisherClosed", err)
	}
}

// The key is the "key" metadata (or PublisherConfig.KeyMetadata), else the
// topic; an event published by Boxcar itself arrives with its event ID as
// the UUID.
func TestKeysAndBoxcarEvents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	custom, err := boxcarwm.NewPublisher(b.bus, boxcarwm.PublisherConfig{KeyMetadata: "order_id"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m1 := message.NewMessage(watermill.NewUUID(), nil)
	m1.Metadata.Set("key", "user-1")
	m2 := message.NewMessage(watermill.NewUUID(), nil)
	m2.Metadata.Set("order_id", "order-7")
	m3 := message.NewMessage(watermill.NewUUID(), nil)
	if err := b.pub.Publish("k", m1); err != nil {
		t.Fatal(err)
	}
	if err := custom.Publish("k", m2, m3); err != nil {
		t.Fatal(err)
	}
	if err := b.bus.Publish(context.Background(), boxcar.Event{Type: "k", Key: "native", Data: []byte("n")}); err != nil {
		t.Fatal(err)
	}
	_, ch := b.subscribe("g", "k")
	want := map[string]string{m1.UUID: "user-1", m2.UUID: "order-7", m3.UUID: "k"}
	for range 4 {
		msg := recv(t, ch)
		ev, ok := boxcarwm.EventFromContext(msg.Context())
		if !ok {
			t.Fatal("no event in the message's context")
		}
		msg.Ack()
		if ev.Key == "native" {
			if msg.UUID != ev.ID || string(msg.Payload) != "n" || len(msg.Metadata) != 0 {
				t.Fatalf("Boxcar's own event arrived as %s %q %v, want UUID %s", msg.UUID, msg.Payload, msg.Metadata, ev.ID)
			}
			continue
		}
		if k, ok := want[msg.UUID]; !ok || ev.Key != k {
			t.Fatalf("message %s has key %q, want %q", msg.UUID, ev.Key, k)
		}
		delete(want, msg.UUID)
	}
}

// With MaxNacks, the MaxNacks-th Nack dead-letters the message and its key
// moves on.
func TestMaxNacksDeadLetters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	poison := message.NewMessage(watermill.NewUUID(), nil)
	next := message.NewMessage(watermill.NewUUID(), nil)
	if err := b.pub.Publish("p", poison, next); err != nil {
		t.Fatal(err)
	}
	_, ch := b.subscribe("g", "p", func(c *boxcarwm.SubscriberConfig) { c.MaxNacks = 3 })
	for i := range 3 {
		msg := recv(t, ch)
		if msg.UUID != poison.UUID {
			t.Fatalf("delivery %d: %s, want the nacked %s", i+1, msg.UUID, poison.UUID)
		}
		msg.Nack()
	}
	got := recv(t, ch)
	got.Ack()
	if got.UUID != next.UUID {
		t.Fatalf("after 3 Nacks received %s, want the next message %s", got.UUID, next.UUID)
	}
	st, err := b.bus.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	name := boxcarwm.SubscriberName("p", "g")
	for _, s := range st.Subscribers {
		if s.Name == name && s.DeadLettered != 1 {
			t.Fatalf("subscriber %s dead-lettered %d, want 1", name, s.DeadLettered)
		}
	}
}

func TestConfigRefused(t *testing.T) {
	t.Parallel()
	bus := openBus(t)
	if _, err := boxcarwm.NewSubscriber(bus, boxcarwm.SubscriberConfig{}, nil); !errors.Is(err, boxcar.ErrInvalidConfig) || !strings.Contains(err.Error(), "Group") {
		t.Fatalf("NewSubscriber without a group: %v, want ErrInvalidConfig naming Group", err)
	}
	if _, err := boxcarwm.NewSubscriber(nil, boxcarwm.SubscriberConfig{Group: "g"}, nil); err == nil {
		t.Fatal("NewSubscriber(nil bus) returned nil")
	}
	if _, err := boxcarwm.NewPublisher(nil, boxcarwm.PublisherConfig{}, nil); err == nil {
		t.Fatal("NewPublisher(nil bus) returned nil")
	}
	sub, err := boxcarwm.NewSubscriber(bus, boxcarwm.SubscriberConfig{Group: "g"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Subscribe(context.Background(), "a b"); !errors.Is(err, boxcarwm.ErrInvalidTopic) {
		t.Fatalf("Subscribe to an invalid topic: %v, want ErrInvalidTopic", err)
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Subscribe(context.Background(), "t"); !errors.Is(err, boxcarwm.ErrSubscriberClosed) {
		t.Fatalf("Subscribe after Close: %v, want ErrSubscriberClosed", err)
	}
}

func TestSubscriberName(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 300)
	names := map[string]bool{}
	for _, c := range [][2]string{{"t", "g"}, {"g", "t"}, {"a.b", "g"}, {"a_b", "g"}, {long, long}, {long + "y", long}, {"t", "grüppe/1"}} {
		n := boxcarwm.SubscriberName(c[0], c[1])
		if n != boxcarwm.SubscriberName(c[0], c[1]) {
			t.Fatalf("SubscriberName(%q, %q) is not deterministic", c[0], c[1])
		}
		if len(n) > 64 || strings.Trim(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != "" {
			t.Fatalf("SubscriberName(%q, %q) = %q: not a Boxcar subscriber name", c[0], c[1], n)
		}
		if names[n] {
			t.Fatalf("SubscriberName(%q, %q) = %q collides", c[0], c[1], n)
		}
		names[n] = true
	}
}

// A subscription nobody reads does not hold SQLite's writer: past
// DeliveryWait its message is rolled back and offered again later, so the
// app's transactions go on; once the consumer reads, the message arrives.
func TestIdleConsumerDoesNotHoldTheWriter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	msg := message.NewMessage(watermill.NewUUID(), nil)
	if err := b.pub.Publish("idle", msg); err != nil {
		t.Fatal(err)
	}
	// HandlerTimeout far beyond the bound below: only DeliveryWait can let
	// the writer go.
	_, ch := b.subscribe("g", "idle", func(c *boxcarwm.SubscriberConfig) { c.HandlerTimeout = 10 * time.Minute })
	// The message was offered and not taken (a failure the subscriber
	// counts) before the app writes: the writer is contended from here on.
	name := boxcarwm.SubscriberName("idle", "g")
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		if failures(t, b.bus, name) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the message was not offered (or the offer never gave up) within a minute")
		}
	}
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := b.bus.Tx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO applied(uuid, note) VALUES('app', ?)`, fmt.Sprint(i))
			return err
		})
		cancel()
		if err != nil {
			t.Fatalf("app transaction %d while the consumer does not read: %v", i, err)
		}
	}
	got := recv(t, ch)
	got.Ack()
	if got.UUID != msg.UUID {
		t.Fatalf("received %s, want %s", got.UUID, msg.UUID)
	}
}

func failures(t *testing.T, bus *boxcar.Bus, name string) int64 {
	t.Helper()
	st, err := bus.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Subscribers {
		if s.Name == name {
			return s.Failures
		}
	}
	return 0
}

// WithTx(ctx, nil) publishes in a transaction of its own, even a message a
// router marked as produced from a topic a Subscriber of the bus consumes,
// and with nothing of that topic in flight.
func TestWithNilTxPublishesOnItsOwn(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, ch := b.subscribe("g", "marked")
	routerMarked := func() *message.Message {
		// A router's handler context, made by a router consuming the topic
		// from Watermill's GoChannel.
		var got *message.Message
		goChannel := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
		r, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
		if err != nil {
			t.Fatal(err)
		}
		r.AddConsumerHandler("mark", "marked", goChannel, func(msg *message.Message) error {
			got = message.NewMessage(watermill.NewUUID(), nil)
			got.SetContext(msg.Context())
			return nil
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		<-r.Running()
		if err := goChannel.Publish("marked", message.NewMessage(watermill.NewUUID(), nil)); err != nil {
			t.Fatal(err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		return got
	}
	marked := routerMarked()
	if message.SubscribeTopicFromCtx(marked.Context()) != "marked" {
		t.Fatal("the router did not mark the message's context with its subscribe topic")
	}
	if err := b.pub.Publish("marked", marked); !errors.Is(err, boxcarwm.ErrNoDelivery) {
		t.Fatalf("Publish of a router-marked message with nothing in flight: %v, want ErrNoDelivery", err)
	}
	// The router canceled the handler context when it stopped; its values stay.
	marked.SetContext(boxcarwm.WithTx(context.WithoutCancel(marked.Context()), nil))
	if err := b.pub.Publish("marked", marked); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, ch); got.UUID != marked.UUID {
		t.Fatalf("received %s, want %s", got.UUID, marked.UUID)
	} else {
		got.Ack()
	}
}

// Subscriptions of one (topic, group) share one Boxcar subscriber, which
// stops with the group's last subscription; once every Subscriber closed,
// nothing of the bus stays registered (goroutines: see TestMain).
func TestCloseLeavesNothingRegistered(t *testing.T) {
	t.Parallel()
	b := setup(t)
	newSub := func(group string) *boxcarwm.Subscriber {
		s, err := boxcarwm.NewSubscriber(b.bus, suiteConfig(group), nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s1, s2, s3 := newSub("g"), newSub("g"), newSub("h")
	for _, c := range []struct {
		s     *boxcarwm.Subscriber
		topic string
	}{{s1, "a"}, {s1, "a"}, {s2, "a"}, {s2, "b"}, {s3, "a"}} {
		if _, err := c.s.Subscribe(context.Background(), c.topic); err != nil {
			t.Fatal(err)
		}
	}
	running := func() map[string]bool {
		st, err := b.bus.Stats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]bool{}
		for _, s := range st.Subscribers {
			names[s.Name] = true
		}
		return names
	}
	want := []string{boxcarwm.SubscriberName("a", "g"), boxcarwm.SubscriberName("b", "g"), boxcarwm.SubscriberName("a", "h")}
	if n, _ := boxcarwm.GroupsOf(b.bus); n != 3 || len(running()) != 3 {
		t.Fatalf("%d groups and Boxcar subscribers %v, want the 3 of %v", n, running(), want)
	}
	for _, name := range want {
		if !running()[name] {
			t.Fatalf("Boxcar subscriber %s is not running: %v", name, running())
		}
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	if !running()[want[0]] {
		t.Fatal("closing one Subscriber of group g stopped the group's subscriber that the other still uses")
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if r := running(); r[want[0]] || r[want[1]] || !r[want[2]] {
		t.Fatalf("after group g's Subscribers closed, Boxcar subscribers %v, want only %s", r, want[2])
	}
	if err := s3.Close(); err != nil {
		t.Fatal(err)
	}
	if n, registered := boxcarwm.GroupsOf(b.bus); n != 0 || registered || len(running()) != 0 {
		t.Fatalf("after every Close: %d groups, registered %v, Boxcar subscribers %v", n, registered, running())
	}
}
