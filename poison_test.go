package boxcar

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	bjs "github.com/boxcar-bus/boxcar/jetstream"
)

// Poison events: what the stream would refuse is refused at PublishTx; what
// it refuses anyway is set aside by the relay. No single event holds the
// outbox.

// Regression: a 70 KB header value, or 4,000 small headers, passed
// PublishTx; the server refused the message (header block over 64 KiB) at
// every retry and every later event of every key waited behind it.
func TestPublishRefusesHeaderBlocksTheStreamRefuses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	many := map[string]string{}
	for i := range 4000 {
		many[fmt.Sprintf("X-Header-%04d", i)] = "1234567"
	}
	for name, h := range map[string]map[string]string{
		"one 70 KB value":     {"X-Big": strings.Repeat("v", 70<<10)},
		"4,000 small headers": many,
	} {
		err := tb.bus.Publish(ctx, Event{Type: "order.placed", Key: "k", Headers: h, Data: []byte("1")})
		if !errors.Is(err, ErrInvalidEvent) || !strings.Contains(err.Error(), "Event.Headers") {
			t.Errorf("%s: got %v, want an ErrInvalidEvent naming Event.Headers", name, err)
		}
	}
	if got := maxOutboxSeq(t, tb.db); got != 0 {
		t.Fatalf("the refused events wrote seq %d", got)
	}
	// Just under the limit passes and arrives.
	near := map[string]string{"X-Big": strings.Repeat("v", bjs.MaxHeaderBlock-bjs.HeaderBlockSize("order.placed", "k", map[string]string{"X-Big": ""}))}
	if err := tb.bus.Publish(ctx, Event{Type: "order.placed", Key: "k", Headers: near, Data: []byte("1")}); err != nil {
		t.Fatalf("a header block at the limit: %v", err)
	}
	publishN(t, tb.bus, "k", 3)
	waitRelayed(t, tb.bus, 4)
}

// Regression: Config.MaxEventBytes above the server's max payload was
// accepted while the embedded server stayed at 1 MiB: the first large event
// held the outbox for ever. The embedded server now takes what the config
// allows.
func TestLargeMaxEventBytesOnTheEmbeddedServer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{MaxEventBytes: 3 << 20})
	got := make(chan int, 1)
	if _, err := tb.bus.Subscribe(ctx, "big", HandlerFunc(func(ctx context.Context, m Message) error {
		got <- len(m.Data)
		return nil
	}), SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := tb.bus.Publish(ctx, Event{Type: "order.placed", Key: "k", Data: make([]byte, 2<<20)}); err != nil {
		t.Fatal(err)
	}
	waitRelayed(t, tb.bus, 1)
	if n := <-got; n != 2<<20 {
		t.Fatalf("the subscriber got %d bytes, want %d", n, 2<<20)
	}
	if err := tb.bus.Publish(ctx, Event{Type: "order.placed", Key: "k", Data: make([]byte, 4<<20)}); !errors.Is(err, ErrPayloadTooLarge) {
		t.Fatalf("an event over MaxEventBytes: got %v, want ErrPayloadTooLarge", err)
	}
}

// Regression: an external server's max payload was never read. Open
// refuses a MaxEventBytes it cannot carry, and says what to change.
func TestMaxEventBytesAboveTheExternalServersLimit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	secret := NewSecret()
	srv, err := bjs.Start(bjs.ServerConfig{Dir: filepath.Join(dir, "external"), Listen: "127.0.0.1:0", AdminPassword: secret})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	db := openDB(t, filepath.Join(dir, "app.db"))
	cfg := Config{NATSURL: srv.ClientURL(), NATSOptions: []nats.Option{nats.UserInfo(ListenAdminUser, secret)}, MaxEventBytes: 2 << 20}
	bus, err := Open(context.Background(), db, cfg)
	if err == nil {
		bus.Close(context.Background())
		t.Fatal("Open accepted MaxEventBytes of 2 MiB with a server whose max payload is 1 MiB")
	}
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "max_payload") {
		t.Fatalf("got %v, want ErrInvalidConfig naming the server's max_payload", err)
	}
	// The default fits, with room for the dead letters of the largest
	// events; a MaxEventBytes that fits without that room is taken, and
	// Open says their dead letters would be cut.
	const warning = "no room for the dead letter"
	for _, c := range []struct {
		maxEventBytes int
		warn          bool
	}{{0, false}, {1<<20 - bjs.HeaderReserve, true}} {
		var logs logBuffer
		cfg.MaxEventBytes, cfg.Logger = c.maxEventBytes, logs.logger()
		bus, err = Open(context.Background(), db, cfg)
		if err != nil {
			t.Fatalf("MaxEventBytes %d: %v", c.maxEventBytes, err)
		}
		if err := bus.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(logs.String(), warning); got != c.warn {
			t.Fatalf("MaxEventBytes %d: warned %v, want %v; log:\n%s", c.maxEventBytes, got, c.warn, logs.String())
		}
	}
}

// Defence in depth: an outbox row the stream refuses for good (here the
// operator lowered the stream's max message size after the event was
// written) is moved aside with its reason, counted, listed, and the relay
// goes on: the events after it, of its key and of others, arrive in order.
func TestRelaySetsAsideWhatTheStreamRefuses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	logs := &logBuffer{}
	tb := setup(t, Config{Logger: logs.logger()})
	if _, err := tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 2)
	waitRelayed(t, tb.bus, 2)
	updateStream(t, tb.bus, func(c *jetstream.StreamConfig) { c.MaxMsgSize = 2000 })
	if err := tb.bus.Publish(ctx, Event{Type: "order.placed", Key: "k", Data: []byte(strings.Repeat("9", 3000))}); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 3) // the key's later events
	publishN(t, tb.bus, "other", 3)
	waitApplied(t, tb.db, "ledger", 8)
	checkExactlyOnceInOrder(t, tb.db, "ledger") // counters 1,2 then 3,4,5 for k: the poison's counter is not in counters
	st, err := tb.bus.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.RelaySetAside != 1 || st.OutboxDead != 1 {
		t.Fatalf("stats %+v: want one event set aside", st)
	}
	dead, total, _, err := tb.bus.OutboxDeadLetters(ctx, 0, "", 10)
	if err != nil || total != 1 || len(dead) != 1 {
		t.Fatalf("OutboxDeadLetters: %v, %d in all, %v", dead, total, err)
	}
	if d := dead[0]; d.Key != "k" || d.Reason != "too_large" || len(d.Data) != 3000 || !strings.Contains(d.Error, "10054") {
		t.Fatalf("dead letter %+v: want key k, reason too_large, its 3000 bytes, the server's error", d)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "boxcar_outbox_dead") {
		t.Fatalf("no error-level log line names the set-aside event; log:\n%s", logs.String())
	}
	for _, m := range streamMessages(t, tb.bus) {
		if len(m.Data) >= 3000 {
			t.Fatal("the refused event is in the stream")
		}
	}
}

// On a shared stream (Config.NATSURL: atomic batches, BatchPublisher) the
// operator lowered the stream's max message size, and one Publish committed
// small events around one the stream now refuses; the relay reads them in
// one batch. The server's answer to the batch's commit does not name the
// refused message (10054 when it is the last, 10176 "incomplete batch" when
// it was staged before): the relay must set aside that event alone, not the
// batch's first, and must not retry the batch for ever. The others are in
// the stream once each, in outbox order.
func TestSharedRelaySetsAsideOnlyTheRefusedEvent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		sizes []int // data sizes of the events of one Publish call
	}{
		{"refused event last", []int{10, 10, 3000}},
		{"refused event in the middle", []int{10, 3000, 10}},
		{"refused event first", []int{3000, 10, 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			ext := startExternalServer(t)
			tb := setup(t, Config{NATSURL: ext.ClientURL(), InstanceID: "a", Logger: testLogger()})
			publishN(t, tb.bus, "k", 2)
			waitRelayed(t, tb.bus, 2)
			updateStream(t, tb.bus, func(c *jetstream.StreamConfig) { c.MaxMsgSize = 2000 })
			var events []Event
			var refused int64
			for i, n := range tc.sizes {
				events = append(events, Event{Type: "order.placed", Key: "k", Data: []byte(strings.Repeat("9", n))})
				if n == 3000 {
					refused = int64(3 + i) // after the two relayed above
				}
			}
			if err := tb.bus.Publish(ctx, events...); err != nil {
				t.Fatal(err)
			}
			publishN(t, tb.bus, "other", 2)
			last := maxOutboxSeq(t, tb.db) // 7
			deadline := time.Now().Add(20 * time.Second)
			for time.Now().Before(deadline) && tb.bus.relay.cursor.Load() < last {
				time.Sleep(50 * time.Millisecond)
			}
			st, err := tb.bus.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			dead, total, _, err := tb.bus.OutboxDeadLetters(ctx, 0, "", 10)
			if err != nil {
				t.Fatal(err)
			}
			var deadSizes []int
			for _, d := range dead {
				deadSizes = append(deadSizes, len(d.Data))
			}
			if c := tb.bus.relay.cursor.Load(); c < last {
				t.Fatalf("after 20s the relay's cursor is %d of %d (failures %d, set aside %d, dead sizes %v): the refused event holds every later one",
					c, last, st.RelayFailures, st.RelaySetAside, deadSizes)
			}
			if total != 1 || len(dead) != 1 || len(dead[0].Data) != 3000 {
				t.Fatalf("%d events set aside, data sizes %v: want only the 3000-byte one; stream holds outbox seqs %v", total, deadSizes, streamEvents(t, tb.bus))
			}
			if d := dead[0]; d.Reason != "too_large" || !strings.Contains(d.Error, "10054") {
				t.Fatalf("dead letter %+v: want reason too_large and the server's refusal of the message (10054)", d)
			}
			var want []int64
			for s := int64(1); s <= last; s++ {
				if s != refused {
					want = append(want, s)
				}
			}
			if got := streamEvents(t, tb.bus); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("stream holds outbox seqs %v, want %v: each event but the refused one, once, in order", got, want)
			}
		})
	}
}

// Outbox rows written or edited by hand, bypassing PublishTx: what no retry
// can send is set aside (boxcar_outbox_dead, with the reason) and the relay
// goes on with the next rows. A row is never sent changed.

// insertHandMadeRow writes an outbox row by hand, bypassing PublishTx's
// validation, and returns its seq.
func insertHandMadeRow(t *testing.T, tb *testBundle, typ string, headers, created any) int64 {
	t.Helper()
	res, err := tb.db.Exec(`INSERT INTO boxcar_outbox(id, type, key, headers, data, created_ns) VALUES(?, ?, ?, ?, ?, ?)`,
		ulid.Make().String(), typ, "k", headers, []byte("x"), created)
	if err != nil {
		t.Fatal(err)
	}
	seq, err := res.LastInsertId()
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// checkRowSetAside publishes events after the hand-made row seq, waits for
// the relay to pass them all, and checks that the row, and only it, was set
// aside with reason and an error containing errText, and that the stream
// holds every other event once, in outbox order.
func checkRowSetAside(t *testing.T, tb *testBundle, logs *logBuffer, seq int64, reason, errText string) {
	t.Helper()
	ctx := context.Background()
	publishN(t, tb.bus, "k", 2) // the key's later events
	publishN(t, tb.bus, "other", 2)
	last := maxOutboxSeq(t, tb.db)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && tb.bus.relay.cursor.Load() < last {
		time.Sleep(20 * time.Millisecond)
	}
	st, err := tb.bus.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c := tb.bus.relay.cursor.Load(); c < last {
		var first string
		for l := range strings.SplitSeq(logs.String(), "\n") {
			if strings.Contains(l, "level=WARN") && strings.Contains(l, "relay") {
				first = l
				break
			}
		}
		t.Fatalf("after 20s the relay's cursor is %d of %d (failures %d, set aside %d): one hand-made row holds every later event; first warning: %s",
			c, last, st.RelayFailures, st.RelaySetAside, first)
	}
	if st.RelaySetAside != 1 || st.OutboxDead != 1 {
		t.Fatalf("stats: set aside %d, outbox dead %d; want 1 and 1", st.RelaySetAside, st.OutboxDead)
	}
	dead, total, _, err := tb.bus.OutboxDeadLetters(ctx, 0, "", 10)
	if err != nil || total != 1 || len(dead) != 1 {
		t.Fatalf("OutboxDeadLetters: %+v, %d in all, %v; want the one row", dead, total, err)
	}
	if d := dead[0]; d.Seq != seq || d.Reason != reason || !strings.Contains(d.Error, errText) || string(d.Data) != "x" {
		t.Fatalf("set aside %+v: want seq %d, reason %s, an error containing %q, its data", d, seq, reason, errText)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "boxcar_outbox_dead") {
		t.Fatalf("no error-level log line names the set-aside row; log:\n%s", logs.String())
	}
	// The outbox's rows, in order: the row set aside left it (and if it had
	// the largest seq then, the next event was given that seq again).
	var want []int64
	rows, err := tb.db.Query(`SELECT seq FROM boxcar_outbox ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s int64
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		want = append(want, s)
	}
	rows.Close()
	if got := streamEvents(t, tb.bus); fmt.Sprint(got) != fmt.Sprint(want) || len(want) != 6 {
		t.Fatalf("stream holds outbox seqs %v, want the outbox's %v (6 events): each event but the hand-made one, once, in order", got, want)
	}
	for _, m := range streamMessages(t, tb.bus) {
		if m.Header.Get(jetstream.MsgIDHeader) == dead[0].ID {
			t.Fatalf("the row set aside is in the stream (stream seq %d)", m.Sequence)
		}
	}
}

// Regression: an outbox row whose type holds a space ("order placed")
// gives a subject nats.go refuses before sending (nats.ErrBadSubject). That
// was not counted as permanent, so the relay retried the row for ever and
// every later event waited behind it. The relay refuses the type itself
// (jetstream.CheckOutgoing) and sets the row aside as bad_type.
func TestRelaySetsAsideARowWithABadType(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	tb := setup(t, Config{Logger: logs.logger()})
	publishN(t, tb.bus, "k", 2)
	waitRelayed(t, tb.bus, 2)
	seq := insertHandMadeRow(t, tb, "order placed", nil, time.Now().UnixNano())
	checkRowSetAside(t, tb, logs, seq, "bad_type", `"order placed"`)
}

// Regression: other hand-edited rows held every later event. A created_ns
// that is not an integer failed the Scan of the whole outbox read, so no
// row could even be named; a reserved Nats- header in the headers JSON was
// copied onto the message and the server refused it (10060 "expected
// stream does not match") at every retry. Each such row is set aside, by
// its own seq, with the column at fault; so are headers that are not JSON
// (once published without them, which sent a changed event) and a Boxcar
// header that Boxcar sets from the row's columns.
func TestRelaySetsAsideHandEditedRows(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		headers any
		created any
		reason  string
		errText string
	}{
		{"created_ns not an integer", nil, "yesterday", "bad_created_ns", `"yesterday"`},
		{"a reserved Nats- header", []byte(`{"Nats-Expected-Stream":"ELSEWHERE"}`), time.Now().UnixNano(), "bad_headers", "Nats-Expected-Stream"},
		{"headers not JSON", []byte(`{"a":1}`), time.Now().UnixNano(), "bad_headers", "JSON"},
		{"a header Boxcar sets", []byte(`{"Boxcar-Seq":"99"}`), time.Now().UnixNano(), "bad_headers", "Boxcar-Seq"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			logs := &logBuffer{}
			tb := setup(t, Config{Logger: logs.logger()})
			publishN(t, tb.bus, "k", 2)
			waitRelayed(t, tb.bus, 2)
			seq := insertHandMadeRow(t, tb, "order.placed", tc.headers, tc.created)
			checkRowSetAside(t, tb, logs, seq, tc.reason, tc.errText)
		})
	}
}
