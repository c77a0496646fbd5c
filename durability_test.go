package boxcar

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/boxcar-bus/boxcar/sqlite"
)

// failingDisk wraps the bus's real writer as a disk whose WAL fsyncs fail
// once failed is set: Durable fails with sqlite.ErrWALSyncFailed for good,
// as the real writer's syncer does after a failed fsync (its own test,
// sqlite.TestSyncFailureIsPermanent, fails a real one), and Stats says so.
type failingDisk struct {
	writer
	failed *atomic.Bool
}

var errDiskFailed = fmt.Errorf("%w: injected: input/output error", sqlite.ErrWALSyncFailed)

func (d failingDisk) Durable(ctx context.Context) error {
	if d.failed.Load() {
		return errDiskFailed
	}
	return d.writer.Durable(ctx)
}

func (d failingDisk) DurableWithin(ctx context.Context, linger time.Duration) error {
	if d.failed.Load() {
		return errDiskFailed
	}
	return d.writer.DurableWithin(ctx, linger)
}

func (d failingDisk) Stats() sqlite.WriterStats {
	st := d.writer.Stats()
	if d.failed.Load() {
		st.WALSyncFailure = errDiskFailed
	}
	return st
}

// Once the WAL could not be made durable, the bus publishes nothing more and
// acks nothing more (a power loss could take those commits back), and says
// so in Health and Stats; after a restart everything goes on, each event
// handled once. Before, the relay and the acker retried the fsync and went
// on at the first that succeeded.
func TestWALSyncFailureStopsPublishingAndAcking(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var failed atomic.Bool
	var holdAcks atomic.Pointer[chan struct{}] // while set, ack rounds wait for it
	cfg := Config{Health: HealthOptions{Interval: 50 * time.Millisecond, Window: time.Second}}
	cfg.seams = &testSeams{
		writer: func(w writer) writer { return failingDisk{writer: w, failed: &failed} },
		durable: func() error {
			if g := holdAcks.Load(); g != nil {
				<-*g
			}
			return nil
		},
	}
	tb := setup(t, cfg)
	if _, err := tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "a", 3)
	waitFor(t, "the first 3 events handled and acked", time.Minute, func() (bool, string) {
		handled, _, unacked, _, pending := ackState(t, tb, "ledger")
		return handled == 3 && unacked == 0 && pending == 0, fmt.Sprintf("handled %d, unacked %d, pending %d", handled, unacked, pending)
	})

	// Two events are handled and committed, their acks held; then the disk fails.
	hold := make(chan struct{})
	holdAcks.Store(&hold)
	publishN(t, tb.bus, "b", 2)
	waitFor(t, "the next 2 events handled, not acked", time.Minute, func() (bool, string) {
		handled, _, unacked, _, _ := ackState(t, tb, "ledger")
		return handled == 5 && unacked == 2, fmt.Sprintf("handled %d, unacked %d", handled, unacked)
	})
	failed.Store(true)
	holdAcks.Store(nil)
	close(hold)
	publishN(t, tb.bus, "c", 1) // committed after the failure: never published by this bus

	waitFor(t, "Health to say why nothing moves", time.Minute, func() (bool, string) {
		h, err := tb.bus.Health(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range h.Components {
			if c.Component == "relay" && c.State == HealthStopped && len(c.Reasons) == 1 &&
				strings.Contains(c.Reasons[0], "no outbox event is published, no transactional ack is sent") && strings.Contains(c.Reasons[0], "input/output error") {
				return h.State == HealthStopped, fmt.Sprintf("bus state %s", h.State)
			}
		}
		return false, fmt.Sprintf("%+v", h.Components)
	})
	st, err := tb.bus.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.WALSyncFailed, "input/output error") || st.RelayPublished != 5 || st.OutboxLag != 1 {
		t.Fatalf("Stats: WALSyncFailed %q, RelayPublished %d, OutboxLag %d; want the failure, 5 published, 1 waiting", st.WALSyncFailed, st.RelayPublished, st.OutboxLag)
	}
	// The acker has had its rounds meanwhile (Health's wait is many of its
	// retries): the two committed events are still unacked.
	if handled, _, unacked, _, _ := ackState(t, tb, "ledger"); handled != 5 || unacked != 2 {
		t.Fatalf("handled %d, unacked %d after the failure; want 5 and 2 (no ack without a good fsync)", handled, unacked)
	}
	if got := len(streamEvents(t, tb.bus)); got != 5 {
		t.Fatalf("the stream holds %d events, want 5: the one committed after the failure must not be published", got)
	}

	// A restart (a disk that works again): the held events come back and
	// are skipped by the dedupe table, the last one is relayed and handled.
	tb.closeBus()
	tb.cfg.seams = nil
	tb.open()
	if _, err := tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the rest after the restart", time.Minute, func() (bool, string) {
		handled, skipped, unacked, _, pending := ackState(t, tb, "ledger")
		return handled == 1 && skipped == 2 && unacked == 0 && pending == 0,
			fmt.Sprintf("handled %d, skipped %d, unacked %d, pending %d", handled, skipped, unacked, pending)
	})
	if got := checkExactlyOnceInOrder(t, tb.db, "ledger"); got != 6 {
		t.Fatalf("checked %d events, want 6", got)
	}
}

// A key that would be parked after a failed fsync is not dead-lettered at
// all while the park row cannot be made durable: the letter would be
// published again at every retry (a new copy past the dead-letter stream's
// duplicate window). The retries do not call the handler again (it returned
// Permanent). After a restart it is dead-lettered once, and parked.
func TestNoDeadLetterWhileTheParkRowCannotBeDurable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var failed atomic.Bool
	logs := &logBuffer{}
	cfg := Config{Logger: logs.logger()}
	cfg.seams = &testSeams{writer: func(w writer) writer { return failingDisk{writer: w, failed: &failed} }}
	tb := setup(t, cfg)
	var calls atomic.Int64
	poison := TxHandler(func(ctx context.Context, tx *sql.Tx, m Message) error {
		calls.Add(1)
		failed.Store(true) // the disk fails while the event is handled
		return Permanent(errors.New("poison"))
	})
	opts := SubscribeOptions{ParkKeys: true, MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}
	if _, err := tb.bus.Subscribe(ctx, "ledger", poison, opts); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "p", 1)
	waitFor(t, "the poison event's dead-letter retries", time.Minute, func() (bool, string) {
		n := strings.Count(logs.String(), "could not dead-letter (and park) the event; will retry")
		return n >= 3, fmt.Sprintf("%d dead-letter retries, %d handler calls", n, calls.Load())
	})
	if n := calls.Load(); n != 1 {
		t.Errorf("the handler returned Permanent and was called %d times, want 1", n)
	}
	letters, _, err := tb.bus.DeadLetters(ctx, DeadLetterFilter{Subscriber: "ledger"})
	if err != nil {
		t.Fatal(err)
	}
	if len(letters) != 0 {
		t.Fatalf("%d dead letters while the park row cannot be made durable, want 0", len(letters))
	}

	tb.closeBus()
	tb.cfg.seams = nil
	tb.open()
	if _, err := tb.bus.Subscribe(ctx, "ledger", poison, opts); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the event dead-lettered and its key parked", time.Minute, func() (bool, string) {
		letters, _, err := tb.bus.DeadLetters(ctx, DeadLetterFilter{Subscriber: "ledger"})
		if err != nil {
			t.Fatal(err)
		}
		parked, err := sqlite.ParkedKeys(ctx, tb.db, "ledger")
		if err != nil {
			t.Fatal(err)
		}
		return len(letters) == 1 && len(parked) == 1, fmt.Sprintf("%d letters, %d parked keys", len(letters), len(parked))
	})
}
