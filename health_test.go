package boxcar

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// componentState returns the state of one component of h ("" if absent).
func componentState(h Health, component, name string) (HealthState, []string) {
	for _, c := range h.Components {
		if c.Component == component && c.Name == name {
			return c.State, c.Reasons
		}
	}
	return "", nil
}

func waitHealth(t *testing.T, bus *Bus, component, name string, want HealthState) Health {
	t.Helper()
	var h Health
	waitFor(t, fmt.Sprintf("%s %s to be %s", component, name, want), time.Minute, func() (bool, string) {
		var err error
		h, err = bus.Health(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		st, reasons := componentState(h, component, name)
		return st == want, fmt.Sprintf("%s %v (bus %s)", st, reasons, h.State)
	})
	return h
}

// Health follows progress over the window: ok when caught up, lagging when
// moving but falling behind, stalled when behind and not moving, stopped
// when not running anywhere and behind; the relay and the outbox likewise.
func TestHealthJudgesProgress(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg, lossy := withLossyJetStream(Config{Health: HealthOptions{Interval: 50 * time.Millisecond, Window: 600 * time.Millisecond, OutboxAge: 300 * time.Millisecond}})
	tb := setup(t, cfg)
	// A plain handler: a slow TxHandler would hold the single writer and
	// slow the publishers down with it.
	var slow atomic.Int64 // ms per event
	var handled atomic.Int64
	release := make(chan struct{})
	var hang atomic.Bool
	h := HandlerFunc(func(ctx context.Context, m Message) error {
		if hang.Load() {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		time.Sleep(time.Duration(slow.Load()) * time.Millisecond)
		handled.Add(1)
		return nil
	})
	waitHandled := func(n int64) {
		t.Helper()
		waitFor(t, fmt.Sprintf("%d events handled", n), time.Minute, func() (bool, string) {
			return handled.Load() >= n, fmt.Sprint(handled.Load())
		})
	}
	if _, err := tb.bus.Subscribe(ctx, "worker", h, SubscribeOptions{HandlerTimeout: time.Minute, Workers: 1, BatchSize: 1}); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 3)
	waitHandled(3)
	if h := waitHealth(t, tb.bus, "subscriber", "worker", HealthOK); h.State != HealthOK {
		t.Fatalf("a caught-up bus: %+v", h)
	}

	// Lagging: moving, but events arrive faster than it handles them.
	slow.Store(20)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				publishN(t, tb.bus, "k", 1)
			}
		}
	}()
	waitHealth(t, tb.bus, "subscriber", "worker", HealthLagging)
	close(stop)
	<-done

	// Stalled: behind, and its handler hangs.
	slow.Store(0)
	hang.Store(true)
	publishN(t, tb.bus, "k", 2)
	waitHealth(t, tb.bus, "subscriber", "worker", HealthStalled)
	hang.Store(false)
	close(release)
	waitHandled(maxOutboxSeq(t, tb.db))
	waitHealth(t, tb.bus, "subscriber", "worker", HealthOK)

	// The relay stalls when the stream refuses every publish; the outbox
	// ages past its limit.
	lossy().SetRefuse(func(*nats.Msg) bool { return true })
	publishN(t, tb.bus, "k", 1)
	waitHealth(t, tb.bus, "relay", "", HealthStalled)
	h2 := waitHealth(t, tb.bus, "outbox", "", HealthStalled)
	if h2.State.rank() < HealthStalled.rank() {
		t.Fatalf("the bus is %s with a stalled relay", h2.State)
	}
	lossy().SetRefuse(nil)
	waitHealth(t, tb.bus, "relay", "", HealthOK)
	waitHealth(t, tb.bus, "outbox", "", HealthOK)
}

// A subscriber that ran and is no longer running anywhere, with events
// waiting for it, is stopped; one that lost events to expiry is losing.
func TestHealthStoppedAndLosing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{Retention: 2 * time.Second, DuplicateWindow: 100 * time.Millisecond,
		Health: HealthOptions{Interval: 50 * time.Millisecond, Window: 600 * time.Millisecond}})
	sub, err := tb.bus.Subscribe(ctx, "mailer", HandlerFunc(func(ctx context.Context, m Message) error { return nil }), SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 2)
	waitHealth(t, tb.bus, "subscriber", "mailer", HealthOK)
	if err := sub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 5)
	waitHealth(t, tb.bus, "subscriber", "mailer", HealthStopped)
	waitFor(t, "the events to expire", time.Minute, func() (bool, string) {
		info, err := tb.bus.events.Info(ctx)
		return err == nil && info.State.Msgs == 0, fmt.Sprint(info.State)
	})
	if _, err := tb.bus.Subscribe(ctx, "mailer", HandlerFunc(func(ctx context.Context, m Message) error { return nil }), SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	h := waitHealth(t, tb.bus, "subscriber", "mailer", HealthLosing)
	if h.State != HealthLosing {
		t.Fatalf("bus state %s with a losing subscriber", h.State)
	}
}

// A probe or scraper calling Health in a tight loop changes neither the
// window nor its memory: only the monitor keeps samples, one per Interval.
func TestHealthCalledInALoopKeepsTheWindowBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	opts := HealthOptions{Interval: time.Hour, Window: 3 * time.Hour}
	tb := setup(t, Config{Health: opts})
	for range 2000 {
		if _, err := tb.bus.Health(ctx); err != nil {
			t.Fatal(err)
		}
	}
	tb.bus.health.mu.Lock()
	n := len(tb.bus.health.samples)
	tb.bus.health.mu.Unlock()
	if bound := int(opts.Window/opts.Interval) + 1; n > bound {
		t.Fatalf("the window holds %d samples after 2000 calls of Health; at most %d", n, bound)
	}
}

// Progress is judged over at least one Interval, however short the window:
// a subscriber 5 events behind whose ack floor did not move for 400 ms is
// stalled with an Interval of 100 ms (it was judged ok when the span was
// rounded to the second), and a relay whose cursor did not move is stalled
// likewise; a look 1 ms after the first sample judges nothing stalled.
func TestHealthJudgesShortWindows(t *testing.T) {
	t.Parallel()
	o := HealthOptions{Interval: 100 * time.Millisecond, Window: time.Second}
	now := time.Now()
	at := func(d time.Duration) healthSample {
		return healthSample{at: now.Add(d), cursor: 7, outboxLag: 3, relayAlive: true,
			subs: map[string]subSample{"billing": {floor: 10, lag: 5, running: true}}}
	}
	h := judge([]healthSample{at(-400 * time.Millisecond), at(0)}, o)
	if st, r := componentState(h, "subscriber", "billing"); st != HealthStalled {
		t.Errorf("subscriber behind and not moving for 400 ms: %s %v, want stalled", st, r)
	}
	if st, r := componentState(h, "relay", ""); st != HealthStalled {
		t.Errorf("relay not moving for 400 ms with events waiting: %s %v, want stalled", st, r)
	}
	h = judge([]healthSample{at(-time.Millisecond), at(0)}, o)
	for _, c := range h.Components {
		if c.State == HealthStalled {
			t.Errorf("%s %s judged stalled on a window of 1 ms: %v", c.Component, c.Name, c.Reasons)
		}
	}
}
