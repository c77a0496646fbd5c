package boxcar

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// Inspect reads the files of an app that is down: what a running bus would
// report, with every write refused and nothing written; it refuses the
// files of a running app, a database without Boxcar's tables, and a Dir
// without a store, changing nothing.
func TestInspectReadsTheFilesOfAStoppedApp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg, lossy := withLossyJetStream(Config{})
	tb := setup(t, cfg)
	opts := SubscribeOptions{MaxAttempts: 1}
	if _, err := tb.bus.Subscribe(ctx, "billing", TxHandler(func(ctx context.Context, tx *sql.Tx, m Message) error {
		if m.Key == "bad" {
			return Permanent(errors.New("bad address"))
		}
		return nil
	}), opts); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "good", 3)
	publishN(t, tb.bus, "bad", 1)
	waitFor(t, "a dead letter", time.Minute, func() (bool, string) {
		dl, _, err := tb.bus.DeadLetters(ctx, DeadLetterFilter{})
		return err == nil && len(dl) == 1, fmt.Sprint(len(dl), err)
	})

	// While the app runs, Inspect is refused: the store is the app's.
	if _, err := Inspect(ctx, tb.db, tb.cfg); !errors.Is(err, ErrDirLocked) {
		t.Fatalf("Inspect of a running app's Dir: %v, want ErrDirLocked", err)
	}
	// One more event the stream refuses: pending in the outbox.
	lossy().SetRefuse(func(*nats.Msg) bool { return true })
	publishN(t, tb.bus, "k", 1)
	tb.closeBus()
	lossy().SetRefuse(nil)

	bus, err := Inspect(ctx, tb.db, tb.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close(ctx)
	st, err := bus.Stats(ctx)
	if err != nil || st.OutboxLag != 1 || st.RelayCursor != 4 {
		t.Fatalf("Stats %+v (%v): want the cursor at 4 and 1 event pending", st, err)
	}
	subs, err := bus.Subscribers(ctx)
	if err != nil || len(subs) != 1 || subs[0].Name != "billing" {
		t.Fatalf("Subscribers %+v (%v)", subs, err)
	}
	dl, _, err := bus.DeadLetters(ctx, DeadLetterFilter{Subscriber: "billing"})
	if err != nil || len(dl) != 1 || dl[0].Key != "bad" || dl[0].Reason != "permanent" {
		t.Fatalf("DeadLetters %+v (%v)", dl, err)
	}
	pending, err := bus.OutboxPending(ctx, 0, 10)
	if err != nil || len(pending) != 1 {
		t.Fatalf("OutboxPending %+v (%v)", pending, err)
	}
	h, err := bus.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := componentState(h, "relay", ""); st != HealthStopped {
		t.Fatalf("relay %s in an inspected bus, want stopped: %+v", st, h)
	}
	for name, err := range map[string]error{
		"Publish": bus.Publish(ctx, Event{Type: "order.placed", Key: "k", Data: []byte("1")}),
		"Redrive": func() error { _, err := bus.Redrive(ctx, RedriveRequest{Seq: dl[0].Seq, By: "test"}); return err }(),
		"Discard": func() error { _, err := bus.Discard(ctx, dl[0].Seq, "test", ""); return err }(),
		"Pause":   bus.PauseSubscriber(ctx, "billing", time.Time{}, "test", ""),
		"Retire":  bus.RetireSubscriber(ctx, "billing", "test", ""),
		"Replay":  func() error { _, err := bus.Replay(ctx, ReplayRequest{Subscriber: "billing", By: "test"}); return err }(),
		"Subscribe": func() error {
			_, err := bus.Subscribe(ctx, "other", HandlerFunc(func(context.Context, Message) error { return nil }), SubscribeOptions{})
			return err
		}(),
	} {
		if !errors.Is(err, ErrReadOnly) {
			t.Errorf("%s on an inspected bus: %v, want ErrReadOnly", name, err)
		}
	}
	time.Sleep(200 * time.Millisecond) // a relay, were one running, would have published
	if err := bus.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := maxOutboxSeq(t, tb.db); n != 5 {
		t.Fatalf("outbox max seq %d", n)
	}
	var cursor int64
	if err := tb.db.QueryRow(`SELECT cursor FROM boxcar_relay`).Scan(&cursor); err != nil || cursor != 4 {
		t.Fatalf("the relay's cursor is %d (%v) after Inspect, want 4: Inspect must not relay", cursor, err)
	}

	// Refusals, changing nothing.
	empty := openDB(t, filepath.Join(t.TempDir(), "other.db"))
	if _, err := Inspect(ctx, empty, tb.cfg); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Inspect of a database without Boxcar's tables: %v, want ErrInvalidConfig", err)
	}
	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := Inspect(ctx, tb.db, Config{Dir: missing}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Inspect of a Dir without a store: %v, want ErrInvalidConfig", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Inspect created the Dir it was given: %v", err)
	}
}
