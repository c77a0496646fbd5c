// Command example is a Watermill router app moved onto Boxcar by changing
// its constructors only: the handlers, the router and the messages are the
// app's as they were on Watermill's GoChannel. What changed is marked
// "Boxcar:". The orders it publishes and the invoices its handler produces
// now go through the SQLite outbox and the embedded JetStream: they survive
// a crash, an invoice is produced exactly once per order (it is written in
// the transaction that consumes the order), and each topic keeps its order.
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/sqlite"
	boxcarwm "github.com/boxcar-bus/boxcar/watermill"
)

func main() {
	if err := run(context.Background(), "data", os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, dir string, out io.Writer) error {
	logger := watermill.NopLogger{}

	// Before:
	//	pubSub := gochannel.NewGoChannel(gochannel.Config{}, logger)
	//	var publisher message.Publisher = pubSub
	//	newSubscriber := func(group string) (message.Subscriber, error) { return pubSub, nil }
	//
	// Boxcar: a database and a bus, then the adapter's constructors.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	db, err := sqlite.Open(filepath.Join(dir, "app.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	bus, err := boxcar.Open(ctx, db, boxcar.Config{Dir: filepath.Join(dir, "nats")})
	if err != nil {
		return err
	}
	defer bus.Close(ctx)
	publisher, err := boxcarwm.NewPublisher(bus, boxcarwm.PublisherConfig{}, logger)
	if err != nil {
		return err
	}
	newSubscriber := func(group string) (message.Subscriber, error) {
		return boxcarwm.NewSubscriber(bus, boxcarwm.SubscriberConfig{Group: group}, logger)
	}

	// The app, unchanged from here on.
	router, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		return err
	}
	billing, err := newSubscriber("billing")
	if err != nil {
		return err
	}
	router.AddHandler("bill", "orders.placed", billing, "invoices.issued", publisher,
		func(msg *message.Message) ([]*message.Message, error) {
			order := string(msg.Payload)
			invoice := message.NewMessage(watermill.NewUUID(), []byte("invoice for "+order))
			invoice.Metadata.Set("order", order)
			return []*message.Message{invoice}, nil
		})
	mailer, err := newSubscriber("mailer")
	if err != nil {
		return err
	}
	mailed := make(chan struct{})
	n := 0
	router.AddConsumerHandler("mail", "invoices.issued", mailer, func(msg *message.Message) error {
		fmt.Fprintf(out, "mail: %s (order %s)\n", msg.Payload, msg.Metadata.Get("order"))
		if n++; n == 3 {
			close(mailed)
		}
		return nil
	})

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(runCtx) }()
	<-router.Running()

	for _, order := range []string{"order-1", "order-2", "order-3"} {
		if err := publisher.Publish("orders.placed", message.NewMessage(watermill.NewUUID(), []byte(order))); err != nil {
			return err
		}
	}
	<-mailed
	stop()
	return <-routerDone // the router closes its subscribers and publishers
}
