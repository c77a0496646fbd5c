package boxcar

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ackState is a subscriber's handled, skipped and unacked counts, for waits.
func ackState(t *testing.T, tb *testBundle, name string) (handled, skipped int64, unacked, inFlight int, pending uint64) {
	t.Helper()
	st, err := tb.bus.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Subscribers {
		if s.Name == name {
			return s.Handled, s.Skipped, s.Unacked, s.InFlight, s.Pending
		}
	}
	t.Fatalf("no subscriber %s in stats", name)
	return
}

// A key's next event does not wait for the fsync its previous event's ack
// waits for: the keys move on at the commit (a later commit of the key is
// durable only with the earlier one), and only the acks wait.
func TestKeyMovesOnWhileItsAckWaitsForTheFsync(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var held atomic.Bool
	var acks atomic.Int64
	cfg := Config{}
	cfg.seams = &testSeams{
		durable: func() error {
			if held.CompareAndSwap(false, true) {
				<-release // the first ack's fsync hangs until the test lets it go
			}
			return nil
		},
		ack: func(m jetstream.Msg) error {
			acks.Add(1)
			return m.Ack()
		},
	}
	tb := setup(t, cfg)
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	if _, err := tb.bus.Subscribe(context.Background(), "ledger", recordingHandler("ledger"), SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 1)
	waitFor(t, "the first ack to wait for its fsync", time.Minute, func() (bool, string) {
		return held.Load(), "not yet"
	})
	publishN(t, tb.bus, "k", 3)
	waitApplied(t, tb.db, "ledger", 4) // all of the key's events, while the first ack still waits
	if got := checkExactlyOnceInOrder(t, tb.db, "ledger"); got != 4 {
		t.Fatalf("checked %d events, want 4", got)
	}
	if n := acks.Load(); n != 0 {
		t.Fatalf("%d acks while the fsync they wait for had not run", n)
	}
	close(release)
	released = true
	waitFor(t, "the four acks after the fsync", time.Minute, func() (bool, string) {
		_, _, unacked, _, pending := ackState(t, tb, "ledger")
		return acks.Load() == 4 && unacked == 0 && pending == 0, fmt.Sprintf("%d acks, %d unacked", acks.Load(), unacked)
	})
}

// If making an ack's commit durable fails for a while (the WAL could not be
// opened, say: a failed fsync itself fails for good, see
// TestWALSyncFailureStopsPublishingAndAcking), the events stay held and
// unacked, and the acker tries again: they are acked once it succeeds,
// handled once, and their slots are free again.
func TestAckFsyncFailureIsRetried(t *testing.T) {
	t.Parallel()
	var fail atomic.Int64
	fail.Store(3)
	cfg := Config{}
	cfg.seams = &testSeams{durable: func() error {
		for {
			n := fail.Load()
			if n <= 0 {
				return nil
			}
			if fail.CompareAndSwap(n, n-1) {
				return errors.New("injected: fsync failed")
			}
		}
	}}
	tb := setup(t, cfg)
	sub, err := tb.bus.Subscribe(context.Background(), "ledger", recordingHandler("ledger"), SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "a", 3)
	publishN(t, tb.bus, "b", 2)
	waitFor(t, "every event handled once and acked", 2*time.Minute, func() (bool, string) {
		handled, skipped, unacked, inFlight, pending := ackState(t, tb, "ledger")
		return handled == 5 && unacked == 0 && inFlight == 0 && pending == 0,
			fmt.Sprintf("handled %d, skipped %d, unacked %d, in flight %d, pending %d", handled, skipped, unacked, inFlight, pending)
	})
	if n := fail.Load(); n > 0 {
		t.Fatalf("the durable seam was asked %d times fewer than it fails", n)
	}
	if got := checkExactlyOnceInOrder(t, tb.db, "ledger"); got != 5 {
		t.Fatalf("checked %d events, want 5", got)
	}
	// The fetch loop takes a slot before it waits for the next message.
	if d, _ := sub.current(); len(d.slots) > 1 {
		t.Fatalf("%d in-flight slots still taken after every event was acked, want at most the fetch loop's 1", len(d.slots))
	}
}

// A clean Close acks what the subscriber committed, even with acks still
// waiting for their fsync when it begins: after a restart nothing comes
// back to be skipped by the dedupe table. Four rounds, three checked:
// whether the acker meets the stop with items still queued depends on a
// select's choice.
func TestCleanCloseAcksWhatWasCommitted(t *testing.T) {
	t.Parallel()
	var gate atomic.Pointer[chan struct{}] // while set, ack fsyncs wait for it to close
	cfg := Config{}
	cfg.seams = &testSeams{durable: func() error {
		if g := gate.Load(); g != nil {
			<-*g
		}
		return nil
	}}
	tb := setup(t, cfg)
	ctx := context.Background()
	total := 0
	for round := range 4 {
		if _, err := tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{}); err != nil {
			t.Fatal(err)
		}
		if round > 0 {
			waitFor(t, "the reopened subscriber to settle", time.Minute, func() (bool, string) {
				_, _, unacked, inFlight, pending := ackState(t, tb, "ledger")
				return unacked == 0 && inFlight == 0 && pending == 0, fmt.Sprintf("unacked %d, in flight %d, pending %d", unacked, inFlight, pending)
			})
			if handled, skipped, _, _, _ := ackState(t, tb, "ledger"); handled != 0 || skipped != 0 {
				t.Fatalf("round %d, after a clean Close and reopen: %d handled, %d skipped (redelivered: their acks were lost at Close), want 0 and 0", round, handled, skipped)
			}
		}
		g := make(chan struct{})
		gate.Store(&g) // the acks of this round's events wait
		for i := range 12 {
			publishN(t, tb.bus, fmt.Sprint("k", i%3), 1)
		}
		total += 12
		waitApplied(t, tb.db, "ledger", total)
		closed := make(chan error, 1)
		go func() {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			closed <- tb.bus.Close(cctx)
		}()
		time.Sleep(100 * time.Millisecond) // let Close begin and stop the loops
		gate.Store(nil)
		close(g)
		if err := <-closed; err != nil {
			t.Fatalf("close: %v", err)
		}
		tb.open()
	}
	if got := checkExactlyOnceInOrder(t, tb.db, "ledger"); got != total {
		t.Fatalf("checked %d events, want %d", got, total)
	}
}
