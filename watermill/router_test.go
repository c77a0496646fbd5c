package boxcarwm_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	boxcarwm "github.com/boxcar-bus/boxcar/watermill"
)

// failingPublisher makes the router's first publish of produced messages
// fail after it wrote them, as a crash between the write and the ack would.
type failingPublisher struct {
	message.Publisher
	calls atomic.Int32
}

func (p *failingPublisher) Publish(topic string, msgs ...*message.Message) error {
	if err := p.Publisher.Publish(topic, msgs...); err != nil {
		return err
	}
	if p.calls.Add(1) == 1 {
		return errors.New("injected failure after the write")
	}
	return nil
}

// A router handler's produced messages are written in the consumed
// message's transaction, without any change to the handler: they commit
// with its Ack and roll back with its Nack. Published on their own, the
// produced message of the failed attempt would be delivered too (and the
// publish would wait for the writer the consumer holds).
func TestRouterProducedMessagesCommitWithTheInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sub, err := boxcarwm.NewSubscriber(b.bus, suiteConfig("forward"), nil)
	if err != nil {
		t.Fatal(err)
	}
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	failing := &failingPublisher{Publisher: b.pub}
	router.AddPublisherDecorators(func(pub message.Publisher) (message.Publisher, error) {
		failing.Publisher = pub
		return failing, nil
	})
	var attempt atomic.Int32
	router.AddHandler("forward", "orders.placed", sub, "orders.billed", b.pub, func(msg *message.Message) ([]*message.Message, error) {
		n := attempt.Add(1)
		apply(t, msg, "forward")
		return []*message.Message{message.NewMessage(watermill.NewUUID(), []byte{byte('0' + n)})}, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- router.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	<-router.Running()

	in := message.NewMessage(watermill.NewUUID(), nil)
	if err := b.pub.Publish("orders.placed", in); err != nil {
		t.Fatal(err)
	}
	_, out := b.subscribe("check", "orders.billed")
	got := recv(t, out)
	got.Ack()
	if string(got.Payload) != "2" {
		t.Fatalf("the first produced message is from attempt %s, want 2: attempt 1's was published although its input was nacked", got.Payload)
	}
	if n := b.applied(in.UUID); n != 1 {
		t.Fatalf("%d rows of the input committed, want 1", n)
	}
	// The input was acked: a second input is the next one handled.
	in2 := message.NewMessage(watermill.NewUUID(), nil)
	if err := b.pub.Publish("orders.placed", in2); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, out); string(got.Payload) != "3" {
		t.Fatalf("after the ack, the next produced message is from attempt %s, want 3", got.Payload)
	} else {
		got.Ack()
	}
}
