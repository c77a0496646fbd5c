package boxcar

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/boxcar-bus/boxcar/internal/lossyjs"
	bjs "github.com/boxcar-bus/boxcar/jetstream"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// No loss, publish side: a rolled-back transaction publishes nothing; its app rows and
// events vanish together.
func TestRollbackPublishesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	if _, err := tb.bus.Subscribe(ctx, "audit", recordingHandler("audit"), SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	for i := 0; i < 50; i++ {
		key := "user-" + strconv.Itoa(i)
		err := tb.bus.Tx(ctx, func(tx *sql.Tx) error {
			if err := tb.bus.PublishTx(ctx, tx, Event{Type: "user.signed_up", Key: key, Data: []byte("1")}); err != nil {
				return err
			}
			if i%2 == 0 {
				return boom // roll back
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO counters(key, n) VALUES(?, 1)`, key)
			return err
		})
		if i%2 == 0 && !errors.Is(err, boom) {
			t.Fatalf("tx %d: got %v, want the handler's error", i, err)
		}
		if i%2 == 1 && err != nil {
			t.Fatal(err)
		}
	}
	// A caller-owned transaction rolled back explicitly.
	tx, err := tb.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.bus.PublishTx(ctx, tx, Event{Type: "user.signed_up", Key: "ghost", Data: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	tx.Rollback()

	waitApplied(t, tb.db, "audit", 25)
	// A marker published after everything else: once it is applied, any
	// leaked event would have been applied before it.
	if err := tb.bus.Publish(ctx, Event{Type: "user.signed_up", Key: "marker", Data: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, tb.db, "audit", 26)
	var leaked int
	tb.db.QueryRow(`SELECT count(*) FROM applied a WHERE key <> 'marker' AND NOT EXISTS
		(SELECT 1 FROM counters c WHERE c.key = a.key)`).Scan(&leaked)
	if leaked != 0 {
		t.Fatalf("%d events of rolled-back transactions were handled", leaked)
	}
	if got := len(streamEvents(t, tb.bus)); got != 26 {
		t.Fatalf("stream holds %d events, want 26", got)
	}
}

// The invariant the relay's single cursor relies on: seq is commit order.
// Concurrent writers on their own connections commit while a reader follows
// the outbox by cursor; a commit with a seq at or below what the reader
// already saw would be skipped by the relay.
func TestOutboxSeqIsCommitOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	const writers, perWriter = 6, 300
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				// Caller-owned transactions, contending in SQLite itself.
				tx, err := tb.db.BeginTx(ctx, nil)
				if err != nil {
					errs <- err
					return
				}
				if err := tb.bus.PublishTx(ctx, tx, Event{Type: "t", Key: "k" + strconv.Itoa(w), Data: []byte("x")}); err != nil {
					tx.Rollback()
					errs <- err
					return
				}
				if i%5 == 0 {
					tx.Rollback() // gaps are allowed, reordering is not
					continue
				}
				if err := tx.Commit(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	reader := openDB(t, tb.dbPath)
	var cursor int64
	seen := map[int64]bool{}
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		default:
		}
		rows, err := sqlite.ReadOutbox(ctx, reader, 0, 1_000_000, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if !seen[r.Seq] && r.Seq <= cursor {
				t.Fatalf("seq %d became visible after the reader had seen seq %d", r.Seq, cursor)
			}
			seen[r.Seq] = true
		}
		if len(rows) > 0 {
			cursor = rows[len(rows)-1].Seq
		}
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if want := writers * perWriter * 4 / 5; len(seen) != want {
		t.Fatalf("saw %d committed rows, want %d", len(seen), want)
	}
}

// The relay is killed after JetStream acked a batch and before it saved its
// cursor; it restarts after the duplicate window has passed. The stream must
// still hold each event once.
func TestRelayCrashAfterAckBeyondDuplicateWindow(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbPath, natsDir := filepath.Join(dir, "app.db"), filepath.Join(dir, "nats")
	const events = 200
	c := startChild(t, roleRelayKill, "BOXCAR_DB="+dbPath, "BOXCAR_DIR="+natsDir,
		"BOXCAR_DUP_WINDOW_MS=1000", "BOXCAR_EVENTS="+strconv.Itoa(events))
	err := c.wait(t)
	var ee interface{ ExitCode() int }
	if !errors.As(err, &ee) || ee.ExitCode() != -1 || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("child should have died by SIGKILL at the fault point, got %v", err)
	}
	db := openDB(t, dbPath)
	saved, err := sqlite.Cursor(context.Background(), db, "BOXCAR")
	if err != nil {
		t.Fatal(err)
	}
	if saved != 0 {
		t.Fatalf("the cursor was saved (%d) before the kill: the test would not exercise the crash window", saved)
	}
	time.Sleep(1500 * time.Millisecond) // let the 1s duplicate window pass

	tb := &testBundle{t: t, dir: dir, dbPath: dbPath, db: db, cfg: Config{Dir: natsDir, DuplicateWindow: time.Second}}
	tb.open()
	defer tb.closeBus()
	// More events after the restart, so the relay has to go on from the
	// right place.
	for i := 0; i < 20; i++ {
		if err := tb.bus.Publish(context.Background(), Event{Type: "order.placed", Key: "after", Data: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	waitRelayed(t, tb.bus, events+20)
	checkStreamIsOutbox(t, streamEvents(t, tb.bus), 1, events+20)
}

// Publishes fail in the middle of pipelined batches (a message is lost on
// its way, so the chain refuses every later one). The relay resyncs and the
// stream ends up in outbox order, nothing missing, nothing twice.
func TestRelayPublishFailureMidBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg, lossy := withLossyJetStream(Config{RelayBatch: 100})
	tb := setup(t, cfg)
	lossy().SetDrop(lossyjs.DropTimes(15, func() bool { return rand.Float64() < 0.02 }))
	const events = 3000
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < events/4; i++ {
				if err := publishCounted(ctx, tb.bus, "order.placed", "k"+strconv.Itoa(i%13)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	waitRelayed(t, tb.bus, events)
	st, err := tb.bus.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.RelayFailures == 0 {
		t.Fatal("no publish failed: the fault was not exercised")
	}
	checkStreamIsOutbox(t, streamEvents(t, tb.bus), 1, events)
	t.Logf("relay failures survived: %d", st.RelayFailures)
}

// Regression: in the middle of a drain the relay saved its cursor (once
// CursorSaveInterval had passed) through the single writer, waiting for the
// lock with no bound, so a Bus.Tx function that ran long (an HTTP call
// inside a transaction) stopped the relay publishing events committed
// before that transaction began, for as long as it ran. The mid-drain save
// now runs only if the writer is free (the saved cursor is lazy: the
// stream's end is the truth); the cursor is saved once the writer is free.
func TestRelayGoesOnPublishingWhileATxHoldsTheWriter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	acked := make(chan struct{})
	held := make(chan struct{})
	var once sync.Once
	cfg := Config{RelayBatch: 5, Probe: func(p Probe) {
		if p == ProbeRelayAfterAck {
			once.Do(func() { close(acked); <-held })
		}
	}}
	tb := setup(t, cfg)
	time.Sleep(200 * time.Millisecond) // CursorSaveInterval (100ms) has passed since Open
	events := make([]Event, 20)
	for i := range events {
		events[i] = Event{Type: "order.placed", Key: "k", Data: []byte(fmt.Sprint(i))}
	}
	if err := tb.bus.Publish(ctx, events...); err != nil {
		t.Fatal(err)
	}
	<-acked // the relay has sent two batches and the first is acked
	release := make(chan struct{})
	txDone := make(chan error, 1)
	inside := make(chan struct{})
	go func() {
		txDone <- tb.bus.Tx(ctx, func(tx *sql.Tx) error {
			close(inside)
			<-release // a slow transaction of the app's
			return nil
		})
	}()
	<-inside
	close(held)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && tb.bus.relay.cursor.Load() < 20 {
		time.Sleep(20 * time.Millisecond)
	}
	cursor := tb.bus.relay.cursor.Load()
	inStream := len(streamEvents(t, tb.bus))
	close(release)
	if err := <-txDone; err != nil {
		t.Fatal(err)
	}
	if inStream < 20 {
		t.Fatalf("3s into a slow Bus.Tx, the relay's cursor is %d and the stream holds %d of the 20 events committed before it began: the relay waits for the writer to save its cursor", cursor, inStream)
	}
	waitFor(t, "the relay to save its cursor once the writer is free", 10*time.Second, func() (bool, string) {
		saved, err := sqlite.Cursor(ctx, tb.db, "BOXCAR")
		if err != nil {
			t.Fatal(err)
		}
		return saved == 20, fmt.Sprintf("saved cursor %d", saved)
	})
}

// An event that fails validation leaves nothing written and the caller's
// transaction usable.
func TestPublishRejectsBadEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{MaxEventBytes: 1000})
	cases := []struct {
		name  string
		ev    Event
		field string
		is    error
	}{
		{"empty type", Event{Key: "k"}, "Event.Type", ErrInvalidType},
		{"type with space", Event{Type: "user signed", Key: "k"}, "Event.Type", ErrInvalidType},
		{"type with wildcard", Event{Type: "user.*", Key: "k"}, "Event.Type", ErrInvalidType},
		{"type with empty token", Event{Type: "user..x", Key: "k"}, "Event.Type", ErrInvalidType},
		{"empty key", Event{Type: "user.x"}, "Event.Key", ErrInvalidKey},
		{"key too long", Event{Type: "user.x", Key: strings.Repeat("k", 513)}, "Event.Key", ErrInvalidKey},
		{"key not utf-8", Event{Type: "user.x", Key: "\xff"}, "Event.Key", ErrInvalidKey},
		{"payload over limit", Event{Type: "user.x", Key: "k", Data: make([]byte, 1001)}, "Event.Data", ErrPayloadTooLarge},
		{"reserved header", Event{Type: "user.x", Key: "k", Headers: map[string]string{"Nats-Msg-Id": "x"}}, "Event.Headers", ErrInvalidEvent},
		{"header with newline", Event{Type: "user.x", Key: "k", Headers: map[string]string{"a": "b\nc"}}, "Event.Headers", ErrInvalidEvent},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tx, err := tb.db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			if _, err := tx.ExecContext(ctx, `INSERT INTO counters(key, n) VALUES(?, 1)`, c.name); err != nil {
				t.Fatal(err)
			}
			good := Event{Type: "user.ok", Key: "k"}
			err = tb.bus.PublishTx(ctx, tx, good, c.ev)
			if !errors.Is(err, c.is) || !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("got %v, want an error matching %v and ErrInvalidEvent", err, c.is)
			}
			if !strings.Contains(err.Error(), c.field) || !strings.Contains(err.Error(), "event 1") {
				t.Fatalf("error %q does not name %s of event 1", err, c.field)
			}
			// Nothing of the call was written, and tx is still usable.
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM boxcar_outbox`).Scan(&n); err != nil {
				t.Fatalf("tx unusable after a validation error: %v", err)
			}
			if n != 0 {
				t.Fatalf("%d outbox rows written by a refused call", n)
			}
			if err := tb.bus.PublishTx(ctx, tx, good); err != nil {
				t.Fatalf("tx unusable after a validation error: %v", err)
			}
		})
	}
	// Keys may hold anything subject-hostile: they are encoded.
	for _, key := range []string{"a.b", "*", ">", "with space", "ünïcødé", "~tilde", "a\tb"} {
		if err := tb.bus.Publish(ctx, Event{Type: "user.x", Key: key}); err != nil {
			t.Errorf("key %q: %v", key, err)
		}
	}
}

// Publish and PublishTx on a closed bus return ErrClosed.
func TestPublishOnClosedBus(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	bus := tb.bus
	tb.closeBus()
	if err := bus.Publish(ctx, Event{Type: "a", Key: "k"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish: got %v, want ErrClosed", err)
	}
	tx, err := tb.db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if err := bus.PublishTx(ctx, tx, Event{Type: "a", Key: "k"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("PublishTx: got %v, want ErrClosed", err)
	}
	if err := bus.Tx(ctx, func(*sql.Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Tx: got %v, want ErrClosed", err)
	}
	if _, err := bus.Stats(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Stats: got %v, want ErrClosed", err)
	}
	// Every operation of the bus says so too, not a raw "sql: database is
	// closed" or a NATS connection error an operator's tool cannot tell apart.
	calls := map[string]func() error{
		"Subscribe": func() error {
			_, err := bus.Subscribe(ctx, "s", HandlerFunc(func(context.Context, Message) error { return nil }), SubscribeOptions{})
			return err
		},
		"DeadLetters":      func() error { _, _, err := bus.DeadLetters(ctx, DeadLetterFilter{}); return err },
		"DeadLetter":       func() error { _, err := bus.DeadLetter(ctx, 1); return err },
		"DeadLetterDepths": func() error { _, err := bus.DeadLetterDepths(ctx); return err },
		"Redrive":          func() error { _, err := bus.Redrive(ctx, RedriveRequest{Seq: 1, By: "ops"}); return err },
		"Discard":          func() error { _, err := bus.Discard(ctx, 1, "ops", "why"); return err },
		"Health":           func() error { _, err := bus.Health(ctx); return err },
		"Subscribers":      func() error { _, err := bus.Subscribers(ctx); return err },
		"PauseSubscriber":  func() error { return bus.PauseSubscriber(ctx, "s", time.Time{}, "ops", "why") },
		"ResumeSubscriber": func() error { return bus.ResumeSubscriber(ctx, "s", "ops", "why") },
		"RetireSubscriber": func() error { return bus.RetireSubscriber(ctx, "s", "ops", "why") },
		"Replay": func() error {
			_, err := bus.Replay(ctx, ReplayRequest{Subscriber: "s", From: ReplayFrom{StreamSeq: 1}, By: "ops"})
			return err
		},
		"ReplayProgress":    func() error { _, err := bus.ReplayProgress(ctx, "s"); return err },
		"OutboxPending":     func() error { _, err := bus.OutboxPending(ctx, 0, 10); return err },
		"OutboxDeadLetters": func() error { _, _, _, err := bus.OutboxDeadLetters(ctx, 0, "", 10); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s on a closed bus: got %v, want ErrClosed", name, err)
		}
	}
}

// Commits on the caller's own transactions wake the relay through the
// commit hook; those on a database not opened by sqlite.Open are found by
// the poll. Either way every event arrives.
func TestCallerTransactionsAreRelayed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{RelayPollInterval: 50 * time.Millisecond})
	var published atomic.Int64
	for i := 0; i < 100; i++ {
		tx, err := tb.db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := tb.bus.PublishTx(ctx, tx, Event{Type: "a", Key: "k", Data: []byte("x")}, Event{Type: "b", Key: "k"}); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		published.Add(2)
	}
	waitRelayed(t, tb.bus, published.Load())
	checkStreamIsOutbox(t, streamEvents(t, tb.bus), 1, published.Load())
}

// Nothing silent (guarantee 5): while the relay cannot publish, Stats shows
// the outbox lag and age growing; once it can, both go back to zero. And an
// idle relay writes nothing: no commit reaches the database while the bus
// sits idle, however often the relay polls.
func TestOutboxLagAndIdleRelay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg, lossy := withLossyJetStream(Config{RelayPollInterval: 20 * time.Millisecond, CursorSaveInterval: time.Millisecond})
	tb := setup(t, cfg)
	lossy().SetRefuse(func(*nats.Msg) bool { return true })
	for i := 0; i < 7; i++ {
		if err := publishCounted(ctx, tb.bus, "order.placed", "k"); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	st, err := tb.bus.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.OutboxLag != 7 || st.OutboxAge < 50*time.Millisecond || st.RelayFailures == 0 {
		t.Fatalf("stats while the relay cannot publish: %+v, want lag 7, age >= 50ms, failures > 0", st)
	}
	lossy().SetRefuse(nil)
	waitFor(t, "the outbox lag to drain", time.Minute, func() (bool, string) {
		st, err = tb.bus.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.OutboxLag == 0 && st.OutboxAge == 0, fmt.Sprintf("%+v", st)
	})
	waitFor(t, "the cursor to be saved", time.Minute, func() (bool, string) {
		saved, err := sqlite.Cursor(ctx, tb.db, tb.bus.StreamName())
		return err == nil && saved == 7, fmt.Sprintf("saved cursor %d, %v", saved, err)
	})

	// Idle: data_version on a connection of its own changes when any other
	// connection commits.
	conn, err := tb.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	version := func() int64 {
		var v int64
		if err := conn.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	before := version()
	time.Sleep(500 * time.Millisecond) // 25 polls
	if after := version(); after != before {
		t.Fatalf("the idle bus committed to the database (data_version %d -> %d)", before, after)
	}
}

// The event stream's duplicate window is short whatever Config.DuplicateWindow
// says (JetStream keeps ~116 B per event within it, so a 2-minute window
// over a fast backlog drain held hundreds of MB), and the dead-letter
// stream, whose copies are deduped by Nats-Msg-Id, keeps the configured one.
func TestEventStreamDuplicateWindowIsShort(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, window := range []time.Duration{0, 500 * time.Millisecond, time.Hour} {
		tb := setup(t, Config{DuplicateWindow: window})
		wantDLQ := cmp.Or(window, DefaultDuplicateWindow)
		for stream, want := range map[string]time.Duration{
			"BOXCAR":     min(wantDLQ, EventStreamDuplicateWindow),
			"BOXCAR_DLQ": wantDLQ,
		} {
			st, err := tb.bus.JetStream().Stream(ctx, stream)
			if err != nil {
				t.Fatal(err)
			}
			if got := st.CachedInfo().Config.Duplicates; got != want {
				t.Errorf("Config.DuplicateWindow %v: stream %s has a duplicate window of %v, want %v", window, stream, got, want)
			}
		}
		tb.closeBus()
	}
	// With replicas too: the relay reads the stream's end from the leader
	// (jetstream.GetMsg), not from a follower that may lag.
	b := &Bus{cfg: Config{Replicas: 3, DuplicateWindow: DefaultDuplicateWindow}}
	if got := b.streamConfig().Duplicates; got != EventStreamDuplicateWindow {
		t.Errorf("3 replicas: the event stream's window is %v, want %v", got, EventStreamDuplicateWindow)
	}
}

// A stream deleted and made again since the cursor was saved holds none of
// the outbox, even when its last seq is not 0 (it was made with a first
// seq, or another instance wrote into it): the relay republishes what the
// outbox keeps. It tells the stream by its creation time, saved with the
// cursor.
func TestRelayRepublishesTheOutboxIntoAStreamMadeAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	publishN(t, tb.bus, "k", 10)
	waitRelayed(t, tb.bus, 10)
	js := tb.bus.JetStream()
	if err := js.DeleteStream(ctx, tb.bus.StreamName()); err != nil {
		t.Fatal(err)
	}
	cfg := tb.bus.streamConfig()
	cfg.FirstSeq = 20 // it ends at 19, above the event at the cursor (10)
	if _, _, err := bjs.EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	stream := tb.bus.StreamName()
	tb.closeBus()
	if _, m, err := sqlite.CursorMark(ctx, tb.db, stream); err != nil || m.Seq != 10 || m.CreatedNS == 0 {
		t.Fatalf("saved mark %+v %v, want stream seq 10 and a creation time", m, err)
	}
	tb.open()
	defer tb.closeBus()
	publishN(t, tb.bus, "k", 1)
	waitStreamIsOutbox(t, tb.bus, 1, 11)
}

// A stream that lost acked writes and holds no event to resync on (the
// older ones expired) says so by its last seq, which is below the one of
// the event at the saved cursor: the relay goes back and publishes the lost
// events again, instead of going on after them. The store is restored from
// a copy taken after event 5 (the way a power loss takes its unsynced tail)
// once events 6..10 were relayed, and events 1..5 expire meanwhile.
func TestRelayRepublishesWhatAStreamLostAfterItsEventsExpired(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const retention = 6 * time.Second
	tb := setup(t, Config{Retention: retention, DuplicateWindow: time.Second})
	publishN(t, tb.bus, "k", 5)
	waitRelayed(t, tb.bus, 5)
	stream := tb.bus.StreamName()
	tb.closeBus()
	copyOf := filepath.Join(t.TempDir(), "nats")
	copyDir(t, tb.cfg.Dir, copyOf)
	written := time.Now()
	tb.open()
	publishN(t, tb.bus, "k", 5)
	waitRelayed(t, tb.bus, 10)
	tb.closeBus()
	if _, m, err := sqlite.CursorMark(ctx, tb.db, stream); err != nil || m.Seq != 10 {
		t.Fatalf("saved mark %+v %v, want stream seq 10", m, err)
	}
	restoreDir(t, copyOf, tb.cfg.Dir)
	time.Sleep(time.Until(written.Add(retention + 500*time.Millisecond))) // events 1..5 expire
	tb.open()
	defer tb.closeBus()
	publishN(t, tb.bus, "k", 1)
	waitStreamIsOutbox(t, tb.bus, 6, 11)
}

// Regression: guarantee 2 says a crash between a publish ack and the
// cursor save never republishes, however long the process stayed down. On
// start the relay reads the stream's last event to learn where its cursor
// belongs; down longer than Config.Retention, the events it published after
// the save have expired and there is none to read, though the stream's
// LastSeq shows they were stored. Resync only handled a stream that ends
// before the saved mark, and the relay published those events again.
//
// The crash is played by the state it leaves: the stream holds outbox seqs
// 1..10, and the saved cursor is the one of before the last five publishes.
func TestCrashAfterAckThenDownLongerThanRetentionDoesNotRepublish(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{Retention: 2 * time.Second, DuplicateWindow: time.Second, CursorSaveInterval: 10 * time.Millisecond})
	savedRow := func(cursor int64) (row [4]int64) {
		t.Helper()
		waitFor(t, fmt.Sprintf("the cursor %d saved with its stream seq", cursor), time.Minute, func() (bool, string) {
			err := tb.db.QueryRow(`SELECT cursor, stream_seq, stream_seq_cursor, stream_created_ns FROM boxcar_relay`).Scan(&row[0], &row[1], &row[2], &row[3])
			return err == nil && row[0] == cursor && row[2] == cursor && row[1] > 0, fmt.Sprint(row, err)
		})
		return row
	}
	publishN(t, tb.bus, "k", 5)
	waitRelayed(t, tb.bus, 5)
	before := savedRow(5)
	publishN(t, tb.bus, "k", 5)
	waitRelayed(t, tb.bus, 10)
	savedRow(10)
	tb.closeBus()
	// What a SIGKILL right after the last five acks leaves.
	if _, err := tb.db.ExecContext(ctx, `UPDATE boxcar_relay SET cursor = ?, stream_seq = ?, stream_seq_cursor = ?, stream_created_ns = ?`,
		before[0], before[1], before[2], before[3]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // down longer than Retention: the events expire
	tb.open()
	publishN(t, tb.bus, "k", 1) // outbox seq 11
	waitFor(t, "the new event in the stream", time.Minute, func() (bool, string) {
		s, err := tb.bus.js.Stream(ctx, tb.bus.StreamName())
		if err != nil {
			return false, err.Error()
		}
		info, err := s.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		if info.State.LastSeq > 11 {
			t.Fatalf("the stream held outbox seqs 1..10 at stream seqs 1..10; after the restart and one more event it ends at stream seq %d, want 11: events were published twice",
				info.State.LastSeq)
		}
		return info.State.LastSeq == 11, fmt.Sprintf("%+v", info.State)
	})
	if c := tb.bus.relay.cursor.Load(); c != 11 {
		t.Fatalf("relay cursor %d, want 11", c)
	}
}
