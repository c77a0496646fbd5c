package boxcar

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// Retention: what leaves the stream, and what the dedupe table must keep
// while the stream still holds an event.

// Regression: dedupe rows were pruned by their event ID's time (when
// PublishTx ran) while the stream expires events by the time they were
// stored; with relay lag in between, a replay found the event in the stream
// and no dedupe row, and applied it twice. A row now stays while its event
// is in the stream.
func TestDedupeRowsOutliveTheirEventsInTheStream(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg, lossy := withLossyJetStream(Config{Retention: 5 * time.Second, DuplicateWindow: 100 * time.Millisecond})
	tb := setup(t, cfg)
	sub, err := tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The relay lags: the event waits in the outbox longer than the
	// retention before the stream stores it.
	lossy().SetRefuse(func(*nats.Msg) bool { return true })
	publishN(t, tb.bus, "k", 1)
	time.Sleep(5500 * time.Millisecond)
	lossy().SetRefuse(nil)
	waitApplied(t, tb.db, "ledger", 1)
	// By its ID's time the row is past the retention; the stream holds the
	// event for a while yet. Prune now, then replay the stream to a
	// subscriber that knows nothing of what it acked (as after a crash):
	// only the dedupe table stands between the replay and a second apply.
	if err := sub.d.pruneDedupe(); err != nil {
		t.Fatal(err)
	}
	if err := sub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.db.Exec(`UPDATE boxcar_subscribers SET acked = ''`); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.bus.js.ResetConsumerToSequence(ctx, tb.bus.StreamName(), "ledger", 1); err != nil {
		t.Fatal(err)
	}
	sub, err = tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the replay to be handled", time.Minute, func() (bool, string) {
		st, err := sub.Stats(ctx)
		return err == nil && st.Pending == 0 && st.Unacked == 0 && st.Skipped+st.Handled >= 1, fmt.Sprintf("%+v %v", st, err)
	})
	checkExactlyOnceInOrder(t, tb.db, "ledger")
}

// DedupeRetention shorter than Retention is refused: a replay within the
// stream's window would apply events twice.
func TestDedupeRetentionShorterThanRetentionIsRefused(t *testing.T) {
	t.Parallel()
	db := openDB(t, t.TempDir()+"/app.db")
	_, err := Open(context.Background(), db, Config{Dir: t.TempDir(), Retention: time.Hour, DedupeRetention: time.Minute})
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("got %v, want ErrInvalidConfig", err)
	}
}

// Dedupe rows of events still in the outbox stay, even once the stream no
// longer holds them: a stream lost with its store is refilled from the
// outbox, and without the rows its subscribers applied those events again.
func TestDedupeRowsOutliveTheirEventsInTheOutbox(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{Retention: 2 * time.Second, DuplicateWindow: 100 * time.Millisecond})
	sub, err := tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 3)
	waitApplied(t, tb.db, "ledger", 3)
	waitFor(t, "the events to expire from the stream", time.Minute, func() (bool, string) {
		info, err := tb.bus.events.Info(ctx)
		return err == nil && info.State.Msgs == 0, fmt.Sprint(info.State)
	})
	time.Sleep(100 * time.Millisecond) // past DedupeRetention (= Retention) by their IDs too
	if err := sub.d.pruneDedupe(); err != nil {
		t.Fatal(err)
	}
	tb.closeBus()
	if err := os.RemoveAll(tb.cfg.Dir); err != nil { // the store is lost
		t.Fatal(err)
	}
	tb.open()
	if sub, err = tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the refilled events to be handled", time.Minute, func() (bool, string) {
		st, err := sub.Stats(ctx)
		return err == nil && st.Skipped+st.Handled >= 3, fmt.Sprintf("%+v %v", st, err)
	})
	checkExactlyOnceInOrder(t, tb.db, "ledger")
}
