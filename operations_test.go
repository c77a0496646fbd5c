package boxcar

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// Replay for recovery: the consumer goes back, the dedupe table skips what
// was applied, and only the events whose effects were lost run again; the
// live flow goes on after it.
func TestReplayWithDedupeRunsOnlyWhatWasLost(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	sub, err := tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 10)
	waitApplied(t, tb.db, "ledger", 10)
	// An operator lost the effects of events 6..10 (and their dedupe rows).
	if _, err := tb.db.Exec(`DELETE FROM boxcar_dedupe WHERE event_id IN (SELECT event_id FROM applied WHERE n > 5);
		DELETE FROM applied WHERE n > 5`); err != nil {
		t.Fatal(err)
	}
	st, err := tb.bus.Replay(ctx, ReplayRequest{Subscriber: "ledger", From: ReplayFrom{OutboxSeq: 1}, By: "ops"})
	if err != nil {
		t.Fatal(err)
	}
	if st.From != 1 || st.Through != 10 {
		t.Fatalf("replay %+v: want stream seqs 1 to 10", st)
	}
	publishN(t, tb.bus, "k", 2) // the live flow, after the replay
	waitApplied(t, tb.db, "ledger", 12)
	checkExactlyOnceInOrder(t, tb.db, "ledger")
	waitFor(t, "the replay to end", time.Minute, func() (bool, string) {
		p, err := tb.bus.ReplayProgress(ctx, "ledger")
		return err == nil && p.Done, fmt.Sprintf("%+v %v", p, err)
	})
	ss, _ := sub.Stats(ctx)
	if ss.Skipped < 5 {
		t.Fatalf("stats %+v: want the 5 applied events skipped by the dedupe table", ss)
	}
}

// Replay for a rebuild: every event runs again, marked as a replay, in
// order, without dedupe; a HandlerFunc needs NoDedupe; a point out of the
// stream or an unknown subscriber is refused, and nothing changes.
func TestReplayWithoutDedupeRebuilds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	var replays atomic.Int64
	var total atomic.Int64
	h := TxHandler(func(ctx context.Context, tx *sql.Tx, m Message) error {
		total.Add(1)
		if m.Replay {
			replays.Add(1)
		}
		return nil
	})
	if _, err := tb.bus.Subscribe(ctx, "projection", h, SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.bus.Subscribe(ctx, "mailer", HandlerFunc(func(ctx context.Context, m Message) error { return nil }), SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 20)
	waitFor(t, "the events", time.Minute, func() (bool, string) { return total.Load() == 20, fmt.Sprint(total.Load()) })
	for _, bad := range []ReplayRequest{
		{Subscriber: "nobody", From: ReplayFrom{StreamSeq: 1}, By: "ops"},
		{Subscriber: "projection", From: ReplayFrom{StreamSeq: 999}, By: "ops"},
		{Subscriber: "projection", From: ReplayFrom{}, By: "ops"},
		{Subscriber: "projection", From: ReplayFrom{StreamSeq: 1}},
		{Subscriber: "mailer", From: ReplayFrom{StreamSeq: 1}, By: "ops"},
	} {
		if _, err := tb.bus.Replay(ctx, bad); err == nil {
			t.Errorf("Replay(%+v) was accepted", bad)
		} else if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("Replay(%+v): %v, want ErrNotFound or ErrInvalidConfig", bad, err)
		}
	}
	if _, err := tb.bus.Replay(ctx, ReplayRequest{Subscriber: "projection", From: ReplayFrom{Time: time.Now().Add(-time.Hour)}, NoDedupe: true, By: "ops", Why: "rebuild"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the rebuild", time.Minute, func() (bool, string) { return replays.Load() == 20, fmt.Sprint(replays.Load()) })
	publishN(t, tb.bus, "k", 1)
	waitFor(t, "the live event", time.Minute, func() (bool, string) { return total.Load() == 41, fmt.Sprint(total.Load()) })
	if replays.Load() != 20 {
		t.Fatalf("%d events marked as replayed, want 20 (the live one is not)", replays.Load())
	}
}

// Every subscriber the database knows is listed, running here or not;
// pause holds its deliveries (across a restart), resume lets them go;
// retire removes it and its dedupe rows, once it is closed.
func TestSubscribersPauseResumeRetire(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	ledger, err := tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	old, err := tb.bus.Subscribe(ctx, "old", recordingHandler("old"), SubscribeOptions{Types: []string{"order.placed"}})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 3)
	waitApplied(t, tb.db, "old", 3)
	if err := old.Close(ctx); err != nil {
		t.Fatal(err)
	}
	subs, err := tb.bus.Subscribers(ctx)
	if err != nil || len(subs) != 2 || subs[0].Name != "ledger" || !subs[0].Running || subs[1].Running || subs[1].Kind != "tx" ||
		fmt.Sprint(subs[1].Types) != "[order.placed]" || subs[1].Stopped.IsZero() {
		t.Fatalf("Subscribers: %+v, %v", subs, err)
	}
	if err := tb.bus.PauseSubscriber(ctx, "ledger", time.Time{}, "ops", "maintenance"); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, tb.db, "ledger", 3)
	publishN(t, tb.bus, "k", 2)
	time.Sleep(300 * time.Millisecond) // paused: nothing may arrive meanwhile
	if n := countApplied(t, tb.db, "ledger"); n != 3 {
		t.Fatalf("a paused subscriber applied %d events, want 3", n)
	}
	subs, _ = tb.bus.Subscribers(ctx)
	if !subs[0].Paused {
		t.Fatalf("ledger is not shown paused: %+v", subs[0])
	}
	if err := ledger.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := countApplied(t, tb.db, "ledger"); n != 3 {
		t.Fatalf("the pause did not outlive a restart: %d events applied", n)
	}
	if err := tb.bus.ResumeSubscriber(ctx, "ledger", "ops", "done"); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, tb.db, "ledger", 5)
	if err := tb.bus.RetireSubscriber(ctx, "ledger", "ops", "x"); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("retiring a running subscriber: %v, want ErrInvalidConfig", err)
	}
	if err := tb.bus.RetireSubscriber(ctx, "nobody", "ops", "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("retiring an unknown subscriber: %v, want ErrNotFound", err)
	}
	if err := tb.bus.RetireSubscriber(ctx, "old", "ops", "replaced by ledger"); err != nil {
		t.Fatal(err)
	}
	var rows int
	tb.db.QueryRow(`SELECT count(*) FROM boxcar_dedupe WHERE subscriber = 'old'`).Scan(&rows)
	subs, _ = tb.bus.Subscribers(ctx)
	if rows != 0 || len(subs) != 1 {
		t.Fatalf("after retiring: %d dedupe rows left, subscribers %+v", rows, subs)
	}
	if _, err := tb.bus.events.Consumer(ctx, "old"); err == nil {
		t.Fatal("the retired subscriber's consumer is still there")
	}
}

// A new subscriber can start at the end of the stream or at a time; one
// that ran before resumes where it was.
func TestNewSubscriberStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	publishN(t, tb.bus, "k", 5)
	waitRelayed(t, tb.bus, 5)
	mid := time.Now()
	time.Sleep(10 * time.Millisecond)
	publishN(t, tb.bus, "k", 3)
	waitRelayed(t, tb.bus, 8)
	if _, err := tb.bus.Subscribe(ctx, "fromnow", recordingHandler("fromnow"), SubscribeOptions{Start: StartNow}); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.bus.Subscribe(ctx, "fromtime", recordingHandler("fromtime"), SubscribeOptions{Start: StartAt(mid)}); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 1)
	waitApplied(t, tb.db, "fromtime", 4)
	waitApplied(t, tb.db, "fromnow", 1)
	if a, b := countApplied(t, tb.db, "fromnow"), countApplied(t, tb.db, "fromtime"); a != 1 || b != 4 {
		t.Fatalf("fromnow applied %d (want 1), fromtime %d (want 4)", a, b)
	}
}

// The outbox's pending events are listed with their age while the relay
// cannot publish them.
func TestOutboxPending(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg, lossy := withLossyJetStream(Config{})
	tb := setup(t, cfg)
	publishN(t, tb.bus, "k", 1)
	waitRelayed(t, tb.bus, 1)
	lossy().SetRefuse(func(*nats.Msg) bool { return true })
	publishN(t, tb.bus, "k", 3)
	pending, err := tb.bus.OutboxPending(ctx, 0, 10)
	if err != nil || len(pending) != 3 || pending[0].Seq != 2 || pending[0].Type != "order.placed" || pending[0].Size != 1 || pending[0].Age <= 0 {
		t.Fatalf("OutboxPending: %+v, %v", pending, err)
	}
	if _, err := tb.bus.OutboxPending(ctx, 0, 0); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("limit 0: %v, want ErrInvalidConfig", err)
	}
	lossy().SetRefuse(nil)
	waitRelayed(t, tb.bus, 4)
	if pending, _ := tb.bus.OutboxPending(ctx, 0, 10); len(pending) != 0 {
		t.Fatalf("%d pending after the relay caught up", len(pending))
	}
}
