package boxcar

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	bjs "github.com/boxcar-bus/boxcar/jetstream"
)

// fakeMsg is a stream message as decode sees it, without a server: the
// fuzzer controls every byte of the subject, the header block and the data.
type fakeMsg struct {
	subject string
	h       nats.Header
	data    []byte
}

func (m *fakeMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: 7, Consumer: 7}, NumDelivered: 1}, nil
}
func (m *fakeMsg) Data() []byte                     { return m.data }
func (m *fakeMsg) Headers() nats.Header             { return m.h }
func (m *fakeMsg) Subject() string                  { return m.subject }
func (m *fakeMsg) Reply() string                    { return "" }
func (m *fakeMsg) Ack() error                       { return nil }
func (m *fakeMsg) DoubleAck(context.Context) error  { return nil }
func (m *fakeMsg) Nak() error                       { return nil }
func (m *fakeMsg) NakWithDelay(time.Duration) error { return nil }
func (m *fakeMsg) InProgress() error                { return nil }
func (m *fakeMsg) Term() error                      { return nil }
func (m *fakeMsg) TermWithReason(string) error      { return nil }

// FuzzDecode feeds decode arbitrary subjects, header blocks (as they arrive
// on the wire, parsed by the NATS client) and payloads. It must never panic,
// and whatever it accepts must be a well-formed event: its subject is the
// one Boxcar would build for its type and key, it has an ID and a positive
// outbox seq, and no reserved header leaks into Message.Headers.
func FuzzDecode(f *testing.F) {
	good := "NATS/1.0\r\nNats-Msg-Id: 01HZX\r\nBoxcar-Type: order.placed\r\nBoxcar-Key: k1\r\nBoxcar-Seq: 12\r\nBoxcar-Time: 1700000000000000000\r\nTenant: acme\r\n\r\n"
	f.Add("boxcar.order.placed.k1", good, []byte("payload"))
	f.Add("boxcar.order.placed.~ay5iICo-w6k", strings.Replace(good, "Boxcar-Key: k1", "Boxcar-Key: k. *>é", 1), []byte{})
	f.Add("boxcar.order.placed.k1", "", []byte("no headers"))
	f.Add("boxcar.order", good, []byte(nil))
	f.Add("boxcar..k1", good, []byte("empty type token"))
	f.Add("other.order.placed.k1", good, []byte("foreign prefix"))
	f.Add("boxcar.order.placed.~~~", good, []byte("bad key token"))
	f.Add("boxcar.order.placed.k1", strings.Replace(good, "Boxcar-Seq: 12", "Boxcar-Seq: -1", 1), []byte("x"))
	f.Add("boxcar.order.placed.k1", strings.Replace(good, "Boxcar-Seq: 12", "Boxcar-Seq: 99999999999999999999", 1), []byte("x"))
	f.Add("boxcar.order.placed.k1", strings.Replace(good, "Boxcar-Time: 1700000000000000000", "Boxcar-Time: soon", 1), []byte("x"))
	f.Add("boxcar.order.placed.k1", strings.Replace(good, "Boxcar-Type: order.placed", "Boxcar-Type: order.paid", 1), []byte("x"))
	f.Add("boxcar.order.placed.k1", "NATS/1.0 503\r\n\r\n", []byte("status line"))
	f.Add("boxcar.order.placed.k1", "NATS/1.0\r\nNats-Msg-Id:\r\nbroken line without colon\r\n\r\n", []byte("x"))
	f.Fuzz(func(t *testing.T, subject, rawHeader string, data []byte) {
		var h nats.Header
		if rawHeader != "" {
			h, _ = nats.DecodeHeadersMsg([]byte(rawHeader))
		}
		m, err := decode("boxcar", &fakeMsg{subject: subject, h: h, data: data})
		if m.StreamSeq != 7 {
			t.Fatalf("stream seq %d, want 7 even for a malformed message (it names the dead letter)", m.StreamSeq)
		}
		if err != nil {
			return
		}
		if got := bjs.Subject("boxcar", m.Type, m.Key); got != subject {
			t.Fatalf("accepted subject %q as type %q key %q, whose subject is %q", subject, m.Type, m.Key, got)
		}
		if m.ID == "" || m.Seq <= 0 {
			t.Fatalf("accepted a message with ID %q and seq %d", m.ID, m.Seq)
		}
		for k := range m.Headers {
			if lk := strings.ToLower(k); strings.HasPrefix(lk, "boxcar-") || strings.HasPrefix(lk, "nats-") {
				t.Fatalf("reserved header %q in Message.Headers", k)
			}
		}
		if !bytes.Equal(m.Data, data) {
			t.Fatal("data changed")
		}
	})
}

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
