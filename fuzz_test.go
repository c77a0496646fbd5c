package boxcar

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"
)

// FuzzEventRoundTrip publishes arbitrary events through the whole path (the
// SQLite outbox, the relay, the embedded JetStream stream, a subscriber) and
// checks that what PublishTx accepts arrives exactly as it was published:
// type, key, headers and data byte for byte. Validation must never panic, and
// must refuse, at the edge, anything that would not survive the trip.
func FuzzEventRoundTrip(f *testing.F) {
	f.Add("order.placed", "k1", "Tenant", "acme", []byte("payload"))
	f.Add("user.signed_up", "user 42.eu *>", "X-Trace", "", []byte{})
	f.Add("a.b-c_d.E9", "ключ 🔑", "Trace-Parent", "00-abc-01", []byte{0, 1, 2, 0xff})
	f.Add("order.placed", "~not-encoded", "K", " leading space", []byte("x"))
	f.Add("order.placed", "k", "K", "trailing space ", []byte("x"))
	f.Add("order.placed", "k", "K", "\tleading tab", []byte("x"))
	f.Add("order.placed", "k", "K", "bad utf-8 \xff", []byte("x"))
	f.Add("order.placed", "bad utf-8 \xff", "K", "v", []byte("x"))
	f.Add("order.placed", "k", "Boxcar-Key", "reserved", []byte("x"))
	f.Add("order.placed", "k", "nats-msg-id", "reserved", []byte("x"))
	f.Add("order.placed", "k", "Bad Name", "v", []byte("x"))
	f.Add("order.placed", "k", "K", "line\r\nbreak", []byte("x"))
	f.Add("order.*", "k", "K", "v", []byte("x"))
	f.Add("order..placed", "k", "K", "v", []byte("x"))
	f.Add("order.placed", "", "K", "v", []byte("x"))
	f.Add("order.placed", strings.Repeat("k", 513), "K", "v", []byte("x"))
	f.Add("order.placed", "k", "", "v", []byte("x"))
	f.Add("order.placed", "k", "K", "v\x00nul", []byte("x"))
	// Regression: keys with spaces, tabs, CR or LF around or in them lost
	// them in the Boxcar-Key header, and every subscriber dead-lettered the
	// event as malformed.
	f.Add("order.placed", " 1", "K", "v", []byte("x"))
	f.Add("order.placed", "k\t", "K", "v", []byte("x"))
	f.Add("order.placed", "a\r\nb", "K", "v", []byte("x"))
	f.Add("order.placed", " ", "K", "v", []byte("x"))

	tb := setup(f, Config{})
	got := make(chan Message, 1)
	_, err := tb.bus.Subscribe(context.Background(), "fuzz", HandlerFunc(func(ctx context.Context, m Message) error {
		got <- m
		return nil
	}), SubscribeOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, typ, key, hk, hv string, data []byte) {
		e := Event{Type: typ, Key: key, Data: data}
		if hk != "" || hv != "" {
			e.Headers = map[string]string{hk: hv}
		}
		err := tb.bus.Publish(context.Background(), e)
		if errors.Is(err, ErrInvalidEvent) {
			return
		}
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		var m Message
		select {
		case m = <-got:
		case <-time.After(30 * time.Second):
			t.Fatalf("event %+v never arrived", e)
		}
		if m.Type != e.Type || m.Key != e.Key || !bytes.Equal(m.Data, e.Data) {
			t.Fatalf("sent type %q key %q data %q, got type %q key %q data %q", e.Type, e.Key, e.Data, m.Type, m.Key, m.Data)
		}
		if len(m.Headers) != len(e.Headers) || !maps.Equal(m.Headers, e.Headers) {
			t.Fatalf("sent headers %q, got %q", e.Headers, m.Headers)
		}
	})
}
