package boxcar

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	bjs "github.com/boxcar-bus/boxcar/jetstream"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// Faults beyond kills: publish errors and timeouts, lost JetStream writes, a
// full disk, hung handlers, hostile messages. Each test drives the fault
// through the real embedded server and a real SQLite file.

// A stream limit refuses new messages (MaxMsgs with DiscardNew) for a while,
// in the middle of a run: the relay backs off, keeps the order, and resumes by
// itself when the limit is lifted. Every event is in the stream once, in
// outbox order, and applied once.
func TestFaultStreamRefusesThenRecovers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{RelayBatch: 64})
	if _, err := tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "before", 30)
	waitRelayed(t, tb.bus, 30)
	updateStream(t, tb.bus, func(c *jetstream.StreamConfig) {
		c.MaxMsgs = 100
		c.Discard = jetstream.DiscardNew
	})
	runWriters(t, tb.bus, 3, 500, 17, func(int) string { return "order.placed" })
	waitFor(t, "the relay to hit the limit", time.Minute, func() (bool, string) {
		st, err := tb.bus.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.RelayFailures >= 3 && st.RelayCursor == 100, fmt.Sprintf("%+v", st)
	})
	// While refused: exactly the first 100 events, in order.
	checkStreamIsOutbox(t, streamEvents(t, tb.bus), 1, 100)
	updateStream(t, tb.bus, func(c *jetstream.StreamConfig) {
		c.MaxMsgs = -1
		c.Discard = jetstream.DiscardOld
	})
	waitRelayed(t, tb.bus, 530)
	checkStreamIsOutbox(t, streamEvents(t, tb.bus), 1, 530)
	waitApplied(t, tb.db, "ledger", 530)
	checkExactlyOnceInOrder(t, tb.db, "ledger")
}

// Publishes time out mid-stream: the stream stops listening on its subjects
// and a silent subscriber swallows the publishes, so no ack ever comes (the
// relay cannot know whether they were stored). The relay backs off and
// resyncs; when the stream listens again, it resumes, and the stream holds
// every event once, in outbox order.
func TestFaultPublishTimeouts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{RelayBatch: 50, PublishTimeout: 300 * time.Millisecond})
	if _, err := tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "before", 40)
	waitRelayed(t, tb.bus, 40)

	blackHole, err := tb.bus.nc.Subscribe("boxcar.>", func(*nats.Msg) {}) // never answers
	if err != nil {
		t.Fatal(err)
	}
	updateStream(t, tb.bus, func(c *jetstream.StreamConfig) { c.Subjects = []string{"boxcar_paused.>"} })
	runWriters(t, tb.bus, 2, 200, 9, func(int) string { return "order.placed" })
	waitFor(t, "publishes to time out", time.Minute, func() (bool, string) {
		st, err := tb.bus.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.RelayFailures >= 2, fmt.Sprintf("%+v", st)
	})
	if c := tb.bus.relay.cursor.Load(); c != 40 {
		t.Fatalf("cursor moved to %d while nothing was acked", c)
	}
	updateStream(t, tb.bus, func(c *jetstream.StreamConfig) { c.Subjects = []string{"boxcar.>"} })
	if err := blackHole.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	waitRelayed(t, tb.bus, 240)
	checkStreamIsOutbox(t, streamEvents(t, tb.bus), 1, 240)
	waitApplied(t, tb.db, "ledger", 240)
	checkExactlyOnceInOrder(t, tb.db, "ledger")
}

// JetStream writes acked and then lost, as after a power loss with lazy
// fsync: the store directory is put back to an earlier copy while the bus is
// down. On start the relay sees the stream is behind its outbox and
// republishes what is missing; the subscriber, whose consumer state went back
// too, skips what it had applied. Nothing lost, nothing twice.
func TestFaultLostJetStreamWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	subscribe := func() {
		if _, err := tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	subscribe()
	publishN(t, tb.bus, "a", 60)
	runWriters(t, tb.bus, 2, 40, 5, func(int) string { return "order.placed" })
	waitApplied(t, tb.db, "ledger", 100)
	tb.closeBus()
	snapshot := filepath.Join(tb.dir, "nats-snapshot")
	copyDir(t, tb.cfg.Dir, snapshot)

	tb.open()
	subscribe()
	runWriters(t, tb.bus, 2, 150, 5, func(int) string { return "order.placed" })
	waitApplied(t, tb.db, "ledger", 250)
	tb.closeBus()
	restoreDir(t, snapshot, tb.cfg.Dir) // events 101..250 vanish from the stream

	tb.open()
	if n := len(streamEvents(t, tb.bus)); n != 250 {
		// The relay republishes at Open; by now the stream must be whole.
		waitRelayed(t, tb.bus, 250)
	}
	subscribe()
	publishN(t, tb.bus, "after", 20)
	waitRelayed(t, tb.bus, 270)
	checkStreamIsOutbox(t, streamEvents(t, tb.bus), 1, 270)
	waitApplied(t, tb.db, "ledger", 270)
	checkExactlyOnceInOrder(t, tb.db, "ledger")
}

// The same with a store lost before anything was stored in it: the stream
// comes back empty, the relay republishes the whole outbox.
func TestFaultLostJetStreamStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	tb.closeBus()
	snapshot := filepath.Join(tb.dir, "nats-empty")
	copyDir(t, tb.cfg.Dir, snapshot)
	tb.open()
	publishN(t, tb.bus, "a", 70)
	waitRelayed(t, tb.bus, 70)
	tb.closeBus()
	restoreDir(t, snapshot, tb.cfg.Dir)
	tb.open()
	if _, err := tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "b", 5)
	waitRelayed(t, tb.bus, 75)
	checkStreamIsOutbox(t, streamEvents(t, tb.bus), 1, 75)
	waitApplied(t, tb.db, "ledger", 75)
	checkExactlyOnceInOrder(t, tb.db, "ledger")
}

// The disk fills up: PublishTx returns the error, the application's
// transaction rolls back with its rows, nothing is half-written (not even one
// event of a multi-event call), subscribers and relay wait, and the bus
// carries on when space returns.
func TestFaultSQLiteDiskFull(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	tb.db.SetMaxOpenConns(poolConns)
	tb.db.SetMaxIdleConns(poolConns)
	if _, err := tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 20)
	waitApplied(t, tb.db, "ledger", 20)
	maxSeq := maxOutboxSeq(t, tb.db)

	limitPages(t, tb, 0)
	big := make([]byte, 900<<10)
	// Bus.Tx: the app row and the event go together.
	err := tb.bus.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE counters SET n = n + 1 WHERE key = 'k'`); err != nil {
			return err
		}
		return tb.bus.PublishTx(ctx, tx, Event{Type: "order.placed", Key: "k", Data: big})
	})
	if err == nil || !sqlite.IsFull(err) {
		t.Fatalf("PublishTx on a full disk: got %v, want SQLITE_FULL", err)
	}
	// The app's own transaction, several events in one call: the first fits,
	// the second does not.
	tx, err := tb.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE counters SET n = n + 1 WHERE key = 'k'`); err != nil {
		t.Fatal(err)
	}
	err = tb.bus.PublishTx(ctx, tx,
		Event{Type: "order.placed", Key: "k", Data: []byte("small")},
		Event{Type: "order.placed", Key: "k", Data: big})
	if err == nil || !sqlite.IsFull(err) {
		t.Fatalf("PublishTx of two events on a full disk: got %v, want SQLITE_FULL", err)
	}
	if err := tx.Commit(); err == nil {
		// SQLite may keep the transaction open after SQLITE_FULL; what it
		// commits must then hold no event of the failed call.
		t.Log("commit after SQLITE_FULL succeeded")
	}
	var n int
	if err := tb.db.QueryRow(`SELECT n FROM counters WHERE key = 'k'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if got := maxOutboxSeq(t, tb.db); got != maxSeq {
		t.Fatalf("outbox grew from %d to %d on a full disk", maxSeq, got)
	}
	// The Bus.Tx's counter bump rolled back; the app tx's may have committed.
	if n != 20 && n != 21 {
		t.Fatalf("counter is %d after the failed transactions, want 20 (or 21 if the app committed its own row)", n)
	}
	if n == 21 {
		// Put the counter back: the app committed a row without its event.
		if _, err := tb.db.Exec(`UPDATE counters SET n = 20 WHERE key = 'k'`); err != nil && !sqlite.IsFull(err) {
			t.Fatal(err)
		}
	}

	limitPages(t, tb, 1<<30) // space returns
	publishN(t, tb.bus, "k", 10)
	publishN(t, tb.bus, "m", 10)
	waitRelayed(t, tb.bus, maxOutboxSeq(t, tb.db))
	waitApplied(t, tb.db, "ledger", 40)
	checkExactlyOnceInOrder(t, tb.db, "ledger")
	seqs := streamEvents(t, tb.bus)
	if len(seqs) != 40 {
		t.Fatalf("stream holds %d events, want 40", len(seqs))
	}
}

// While the disk is full the subscriber's own transactions fail too: it
// retries without counting attempts against the events (the database failed,
// not the handler), and resumes when space returns.
func TestFaultSQLiteDiskFullWhileHandling(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	tb.db.SetMaxOpenConns(poolConns)
	tb.db.SetMaxIdleConns(poolConns)
	publishN(t, tb.bus, "k", 30)
	waitRelayed(t, tb.bus, 30)
	limitPages(t, tb, 0)
	var full atomic.Int64
	rec := recordingHandler("ledger")
	sub, err := tb.bus.Subscribe(ctx, "ledger", TxHandler(func(ctx context.Context, tx *sql.Tx, m Message) error {
		err := rec.tx(ctx, tx, m)
		if err == nil {
			// Ballast: every event needs a new page.
			_, err = tx.ExecContext(ctx, `INSERT INTO applied(subscriber, event_id, type, key, n) VALUES('ballast', ?, 'x', ?, 0)`,
				m.ID+strings.Repeat("x", 4000), m.Key)
		}
		if sqlite.IsFull(err) {
			full.Add(1)
		}
		return err
	}), SubscribeOptions{MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the subscriber to hit the full disk a few times", time.Minute, func() (bool, string) {
		return full.Load() >= 5, fmt.Sprint(full.Load())
	})
	limitPages(t, tb, 1<<30) // space returns
	waitApplied(t, tb.db, "ledger", 30)
	checkExactlyOnceInOrder(t, tb.db, "ledger")
	st, err := sub.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.DeadLettered != 0 {
		t.Fatalf("a full disk dead-lettered %d events (MaxAttempts 2): the database's failure is not the event's", st.DeadLettered)
	}
}

// A plain handler that hangs, ignoring its context, is abandoned at
// HandlerTimeout; the event is retried and the key goes on in order.
func TestFaultHungPlainHandler(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // cleanups run last first: before the bus's Close
	var mu sync.Mutex
	var got []int
	var hung atomic.Int32
	h := HandlerFunc(func(ctx context.Context, m Message) error {
		n, _ := strconv.Atoi(string(m.Data))
		if m.Key == "stuck" && n == 3 && hung.Add(1) == 1 {
			<-release // ignores ctx: only the timeout can free the key
			return nil
		}
		if m.Key == "stuck" {
			mu.Lock()
			got = append(got, n)
			mu.Unlock()
		}
		return nil
	})
	sub, err := tb.bus.Subscribe(ctx, "mailer", h, SubscribeOptions{HandlerTimeout: 200 * time.Millisecond, MinBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "stuck", 6)
	publishN(t, tb.bus, "free", 6)
	waitFor(t, "the stuck key to finish", time.Minute, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 6, fmt.Sprint(got)
	})
	mu.Lock()
	if fmt.Sprint(got) != "[1 2 3 4 5 6]" {
		t.Errorf("the stuck key was handled as %v, want [1 2 3 4 5 6]: the retry of 3, then the rest in order", got)
	}
	mu.Unlock()
	st, err := sub.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Failures < 1 || hung.Load() < 2 {
		t.Fatalf("the hung call was not timed out and retried: stats %+v, calls of event 3: %d", st, hung.Load())
	}
}

// A transactional handler that hangs, ignoring its context, must not hold
// the subscriber's transaction (and SQLite's single writer) forever: at
// HandlerTimeout its transaction is abandoned, the event is retried, the key
// goes on, and the rest of the bus (publishing, other keys) never stops.
func TestFaultHungTxHandler(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	lateErr := make(chan error, 1)
	var calls atomic.Int32
	rec := recordingHandler("ledger")
	h := TxHandler(func(ctx context.Context, tx *sql.Tx, m Message) error {
		if m.Key == "stuck" && string(m.Data) == "3" && calls.Add(1) == 1 {
			<-release // ignores ctx
			// Woken long after its transaction was abandoned: its writes
			// must go nowhere.
			_, err := tx.ExecContext(context.Background(), `INSERT INTO applied(subscriber, event_id, type, key, n) VALUES('ghost', ?, '', '', 0)`, m.ID)
			lateErr <- err
			return nil
		}
		return rec.tx(ctx, tx, m)
	})
	sub, err := tb.bus.Subscribe(ctx, "ledger", h, SubscribeOptions{HandlerTimeout: 200 * time.Millisecond, MinBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "stuck", 6)
	publishN(t, tb.bus, "free", 6)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runWriters(t, tb.bus, 2, 100, 7, func(int) string { return "order.placed" })
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("publishing is blocked behind the hung handler")
	}
	waitApplied(t, tb.db, "ledger", 112)
	checkExactlyOnceInOrder(t, tb.db, "ledger")
	st, err := sub.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() < 2 || st.DeadLettered != 0 {
		t.Fatalf("event 3 of the stuck key: %d calls, stats %+v; want a retry after the timeout and no dead letter", calls.Load(), st)
	}
	unblock()
	select {
	case err := <-lateErr:
		if !errors.Is(err, sql.ErrTxDone) {
			t.Fatalf("the abandoned handler wrote into its transaction after the timeout: err %v, want sql.ErrTxDone", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the abandoned handler did not return after it was released")
	}
	if n := countApplied(t, tb.db, "ghost"); n != 0 {
		t.Fatalf("the abandoned handler's write was committed (%d rows)", n)
	}
}

// Hostile input through a plain NATS client on the listener: messages with no
// headers, garbage headers, forged Boxcar headers that contradict the subject,
// a payload at the server's limit, a header block at the server's limit.
// Every one is dead-lettered with a reason, none is redelivered in a loop,
// and both kinds of subscriber keep handling real events around them.
func TestFaultHostileMessagesFromPlainClient(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	admin := NewSecret() // publishing foreign messages takes the admin user
	tb := setup(t, Config{Listen: "127.0.0.1:0", ListenAdminPassword: admin, Logger: testLogger()})
	txSub, err := tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var plainSeen atomic.Int64
	plainSub, err := tb.bus.Subscribe(ctx, "mailer", HandlerFunc(func(ctx context.Context, m Message) error {
		plainSeen.Add(1)
		return nil
	}), SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(tb.bus.ClientURL(), nats.UserInfo(ListenAdminUser, admin))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	maxPayload := int(nc.MaxPayload())
	bigHeader := nats.Header{}
	for i := 0; len(bigHeader) < 60; i++ { // JetStream refuses header blocks over 64 KiB

		bigHeader.Set("X-Junk-"+strconv.Itoa(i), strings.Repeat("j", 990))
	}
	hostile := []*nats.Msg{
		{Subject: "boxcar.order.placed.k", Data: []byte("no headers at all")},
		{Subject: "boxcar.order.placed.k", Header: nats.Header{"Weird": []string{"\x00\x01"}}, Data: []byte{0xff, 0xfe}},
		{Subject: "boxcar.order.placed.~~~", Header: nats.Header{bjs.HeaderSeq: []string{"1"}}},
		{Subject: "boxcar.order", Header: nats.Header{"Nats-Msg-Id": []string{"only-two-tokens"}}},
		{Subject: "boxcar.order.placed.k", Header: nats.Header{
			"Nats-Msg-Id": []string{"forged-1"}, bjs.HeaderType: []string{"order.paid"}, bjs.HeaderKey: []string{"k"},
			bjs.HeaderSeq: []string{"5"}, bjs.HeaderTime: []string{"1"}}}, // type contradicts the subject
		{Subject: "boxcar.order.placed.k", Header: nats.Header{
			"Nats-Msg-Id": []string{"forged-2"}, bjs.HeaderType: []string{"order.placed"}, bjs.HeaderKey: []string{"k"},
			bjs.HeaderSeq: []string{"99999999999999999999"}, bjs.HeaderTime: []string{"x"}}},
		{Subject: "boxcar.order.placed.k", Data: make([]byte, maxPayload-1024)},
		// At the server's limit: the dead letter's own headers must not push
		// its copy over it.
		{Subject: "boxcar.order.placed.k", Header: bigHeader, Data: make([]byte, maxPayload-headerBytes(bigHeader)-16)},
		// A header block just under JetStream's 64 KiB: the copy's own
		// headers would push it over.
		{Subject: "boxcar.order.placed.k", Header: nats.Header{"X-Fill": []string{strings.Repeat("f", 64<<10-200)}}, Data: []byte("x")},
	}
	for i, m := range hostile {
		if err := nc.PublishMsg(m); err != nil {
			t.Fatalf("hostile message %d: %v", i, err)
		}
		publishN(t, tb.bus, "k", 2) // real events between the junk
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	real := 2 * len(hostile)
	waitApplied(t, tb.db, "ledger", real)
	waitFor(t, "the plain subscriber to handle the real events", time.Minute, func() (bool, string) {
		return plainSeen.Load() >= int64(real), fmt.Sprint(plainSeen.Load())
	})
	dl := readDeadLetters(t, tb.bus, 2*len(hostile))
	for _, m := range dl {
		if m.Header.Get(bjs.HeaderReason) != "malformed" || m.Header.Get(bjs.HeaderError) == "" {
			t.Errorf("dead letter of %s from %s: no reason: %v", m.Header.Get(bjs.HeaderOrigSubj), m.Header.Get(bjs.HeaderSubscr), m.Header.Get(bjs.HeaderError))
		}
	}
	for _, sub := range []*Subscription{txSub, plainSub} {
		waitFor(t, sub.Name()+" to ack everything", time.Minute, func() (bool, string) {
			st, err := sub.Stats(ctx)
			return err == nil && st.Pending == 0 && st.Unacked == 0, fmt.Sprintf("%+v %v", st, err)
		})
		st, _ := sub.Stats(ctx)
		if st.DeadLettered != int64(len(hostile)) || st.Redelivered != 0 {
			t.Errorf("%s: stats %+v: want %d dead letters and no redelivery", sub.Name(), st, len(hostile))
		}
	}
	// Nothing else came back: the DLQ holds exactly one copy per subscriber.
	s, err := tb.bus.js.Stream(ctx, tb.bus.DLQStreamName())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(2*len(hostile)) {
		t.Errorf("DLQ holds %d messages, want %d", info.State.Msgs, 2*len(hostile))
	}
	checkExactlyOnceInOrder(t, tb.db, "ledger")
	if plainSeen.Load() != int64(real) {
		t.Errorf("plain subscriber handled %d, want %d", plainSeen.Load(), real)
	}
	// The relay's chain was broken by every foreign message; it resynced.
	checkStreamOrderIgnoringForeign(t, tb.bus, int64(real))
}

// Regression: Resync trusted any stream message carrying a Boxcar-Seq and a
// Nats-Msg-Id. A foreign message with a seq above the outbox's moved the
// cursor forward past events never published (lost); one naming an existing
// row with another ID moved it back, and the relay republished or, as the
// chain then never matched, retried for ever. Resync now checks the claim
// against the outbox.
func TestResyncIgnoresForgedEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	publishN(t, tb.bus, "k", 10)
	waitRelayed(t, tb.bus, 10)
	forge := func(id string, seq int64) {
		m := nats.NewMsg("boxcar.order.placed.k")
		m.Header.Set(jetstream.MsgIDHeader, id)
		m.Header.Set(bjs.HeaderSeq, strconv.FormatInt(seq, 10))
		m.Header.Set(bjs.HeaderType, "order.placed")
		m.Header.Set(bjs.HeaderKey, "k")
		m.Header.Set(bjs.HeaderTime, "1")
		if _, err := tb.bus.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	forge("forged-back", 3)      // an existing row, another ID
	forge("forged-ahead", 1_000) // beyond the outbox
	tb.reopen()                  // Open resyncs with the stream's end
	if c := tb.bus.relay.cursor.Load(); c != 10 {
		t.Fatalf("after resync the cursor is %d, want 10: a forged message was taken for the stream's end", c)
	}
	if _, err := tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 5)
	waitRelayed(t, tb.bus, 15)
	checkStreamOrderIgnoringForeign(t, tb.bus, 15)
	waitApplied(t, tb.db, "ledger", 15)
	checkExactlyOnceInOrder(t, tb.db, "ledger")
}

// Regression (found by FuzzEventRoundTrip): PublishTx accepted events that
// could not arrive as sent. A header name nats.go refuses ("Tenant@") made
// the relay's publish fail at every retry, holding every later event behind
// it for ever; values with spaces or tabs around them lost them, invalid
// UTF-8 came back as U+FFFD. They are refused at the edge now, nothing is
// written, and the bus goes on.
func TestHostileEventsRefusedAtTheEdge(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	if _, err := tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, h := range []map[string]string{
		{"Tenant@": "acme"}, {"A(b)": "v"}, {"x/y": "v"}, {"a=b": "v"}, {"a{b}": "v"}, {`a\b`: "v"}, {`a"b`: "v"},
		{"K": " leading"}, {"K": "trailing "}, {"K": "\ttab"}, {"K": "bad \xff utf-8"},
	} {
		err := tb.bus.Tx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO counters(key, n) VALUES('k', 1) ON CONFLICT(key) DO UPDATE SET n = n + 1`); err != nil {
				return err
			}
			return tb.bus.PublishTx(ctx, tx, Event{Type: "order.placed", Key: "k", Headers: h, Data: []byte("1")})
		})
		if !errors.Is(err, ErrInvalidEvent) || !strings.Contains(err.Error(), "Headers") {
			t.Errorf("headers %q: got %v, want an ErrInvalidEvent naming Event.Headers", h, err)
		}
	}
	if got := maxOutboxSeq(t, tb.db); got != 0 {
		t.Fatalf("outbox holds seq %d after refused events", got)
	}
	publishN(t, tb.bus, "k", 3)
	waitRelayed(t, tb.bus, 3)
	waitApplied(t, tb.db, "ledger", 3)
	checkExactlyOnceInOrder(t, tb.db, "ledger")
}

// Regression (found by FuzzEventRoundTrip): a key with spaces, tabs, CR or
// LF around or inside it is valid, and the subject carries it exactly, but
// its Boxcar-Key header arrives trimmed: decode found the header and subject
// "contradicting" and every subscriber dead-lettered the event as malformed.
func TestKeysWithWhitespaceArrive(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	sub, err := tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{" 1", "k\t", "a\r\nb", " ", "\t x \t"}
	for _, k := range keys {
		publishN(t, tb.bus, k, 2)
	}
	waitApplied(t, tb.db, "ledger", 2*len(keys))
	checkExactlyOnceInOrder(t, tb.db, "ledger")
	st, err := sub.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.DeadLettered != 0 {
		t.Fatalf("%d events dead-lettered", st.DeadLettered)
	}
	rows, err := tb.db.Query(`SELECT DISTINCT key FROM applied`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]bool{}
	for rows.Next() {
		var k string
		rows.Scan(&k)
		got[k] = true
	}
	for _, k := range keys {
		if !got[k] {
			t.Errorf("key %q arrived changed (applied keys: %v)", k, got)
		}
	}
}

// Lost JetStream writes where the loss is uneven: the stream's message
// blocks go back to an earlier state while the consumers' state files keep
// what they acknowledged since (their files were flushed, the blocks were
// not). The relay republishes the missing events under new stream
// sequences; the subscriber must still see each of them.
func TestFaultLostStreamWritesConsumerAhead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	subscribe := func() {
		if _, err := tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	subscribe()
	publishN(t, tb.bus, "a", 50)
	waitApplied(t, tb.db, "ledger", 50)
	tb.closeBus()
	msgs := filepath.Join(tb.cfg.Dir, "jetstream", "jetstream", "$G", "streams", "BOXCAR", "msgs")
	if _, err := os.Stat(msgs); err != nil {
		t.Fatalf("store layout changed: %v", err)
	}
	snapshot := filepath.Join(tb.dir, "msgs-snapshot")
	copyDir(t, msgs, snapshot)

	tb.open()
	subscribe()
	publishN(t, tb.bus, "b", 50)
	waitApplied(t, tb.db, "ledger", 100)
	tb.closeBus()
	restoreDir(t, snapshot, msgs) // the stream loses 51..100; the consumer remembers acking them

	tb.open()
	subscribe()
	publishN(t, tb.bus, "c", 10)
	waitRelayed(t, tb.bus, 110)
	checkStreamIsOutbox(t, streamEvents(t, tb.bus), 1, 110)
	waitApplied(t, tb.db, "ledger", 110)
	checkExactlyOnceInOrder(t, tb.db, "ledger")
}
