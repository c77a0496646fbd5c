// Command example traces a signup through Boxcar with OpenTelemetry: the
// app's request span, the event's create span (its child, written into the
// event's headers with the outbox row), the relay's publish span and the
// billing handler's process span (both linked to the create span), and the
// handler's own span under the process span. Spans go to stdout as JSON;
// an app sends them to its collector with its exporter (OTLP) instead.
package main

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"log"
	"os"
	"path/filepath"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/boxcar-bus/boxcar"
	boxcarotel "github.com/boxcar-bus/boxcar/otel"
	"github.com/boxcar-bus/boxcar/sqlite"
)

func main() {
	if err := run(context.Background(), "data", os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, dir string, out io.Writer) error {
	// OpenTelemetry, as the app sets it up.
	exporter, err := stdouttrace.New(stdouttrace.WithWriter(out))
	if err != nil {
		return err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter))
	defer tp.Shutdown(ctx) // after the bus's Close (deferred below): exports the last spans
	otel.SetTracerProvider(tp)
	tracer := otel.Tracer("signup-service")

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	db, err := sqlite.Open(filepath.Join(dir, "app.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS users(id TEXT PRIMARY KEY);
		CREATE TABLE IF NOT EXISTS subscriptions(user_id TEXT PRIMARY KEY)`); err != nil {
		return err
	}
	// Boxcar: the tracing hooks, with the global TracerProvider.
	bus, err := boxcar.Open(ctx, db, boxcar.Config{
		Dir:     filepath.Join(dir, "nats"),
		Tracing: boxcarotel.New(boxcarotel.Config{}),
	})
	if err != nil {
		return err
	}
	defer bus.Close(ctx)

	handled := make(chan struct{}, 1)
	_, err = bus.Subscribe(ctx, "billing", boxcar.TxHandler(func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
		// ctx carries the process span: the handler's spans are its children.
		ctx, span := tracer.Start(ctx, "create subscription")
		defer span.End()
		_, err := tx.ExecContext(ctx, `INSERT INTO subscriptions(user_id) VALUES(?) ON CONFLICT DO NOTHING`, m.Key)
		handled <- struct{}{}
		return err
	}), boxcar.SubscribeOptions{Types: []string{"user.signed_up"}})
	if err != nil {
		return err
	}

	// The app's request: its span is the parent of the event's create span.
	ctx, request := tracer.Start(ctx, "POST /signup")
	id := "user-1"
	err = bus.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO users(id) VALUES(?) ON CONFLICT DO NOTHING`, id); err != nil {
			return err
		}
		return bus.PublishTx(ctx, tx, boxcar.Event{Type: "user.signed_up", Key: id, Data: []byte(`{"plan":"free"}`)})
	})
	request.End()
	if err != nil {
		return err
	}
	select {
	case <-handled:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("the event was not handled")
	}
}
