package metrics_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/metrics"
)

const typOrder = "order.placed"

// lint fails the test on any problem promlint finds in the registry.
func (b *bundle) lint() {
	b.t.Helper()
	problems, err := testutil.GatherAndLint(b.reg)
	if err != nil {
		b.t.Fatalf("lint: %v", err)
	}
	for _, p := range problems {
		b.t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// TestTrafficMetrics drives 20 events and one poison event through a
// subscriber, then a redrive, and checks the values that follow from it.
func TestTrafficMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	var accept atomic.Bool
	_, err := b.bus.Subscribe(b.ctx, "mailer", boxcar.HandlerFunc(func(ctx context.Context, m boxcar.Message) error {
		if m.Key == "poison" && !accept.Load() {
			return boxcar.Permanent(errors.New("unreadable payload"))
		}
		return nil
	}), boxcar.SubscribeOptions{Types: []string{typOrder}})
	if err != nil {
		t.Fatal(err)
	}
	b.publish(typOrder, keys("order-", 20)...)
	b.publish(typOrder, "poison")
	b.waitIdle("mailer", 20, 1)

	s := b.gather()
	sub := "subscriber=mailer"
	want := map[string]float64{"ok": 20, "skipped": 0, "failed": 1, "dead_lettered": 1}
	for result, n := range want {
		if got := s.value(t, "boxcar_subscriber_handled_total", sub, "result="+result); got != n {
			t.Errorf("handled_total{result=%s} = %v, want %v", result, got, n)
		}
	}
	wantValues(t, s, map[string]float64{
		"boxcar_subscriber_dead_letters_pending": 1,
		"boxcar_subscriber_dead_letters_stored":  1,
		"boxcar_subscriber_running":              1,
		"boxcar_subscriber_in_flight_events":     0,
		"boxcar_subscriber_parked_keys":          0,
		"boxcar_subscriber_expired_total":        0,
	}, sub)
	wantValues(t, s, map[string]float64{"boxcar_relay_published_total": 21, "boxcar_outbox_lag_events": 0, "boxcar_relay_set_aside_total": 0})
	// Every publish waited for a WAL fsync: at least one happened, and the
	// counter is the bus's.
	st, err := b.bus.Stats(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.value(t, "boxcar_wal_syncs_total"); got < 1 || got > float64(st.WALSyncs) {
		t.Errorf("wal_syncs_total = %v, want between 1 and the bus's %d", got, st.WALSyncs)
	}
	if got := s.value(t, "boxcar_wal_sync_failed"); got != 0 {
		t.Errorf("wal_sync_failed = %v on a sound disk, want 0", got)
	}
	// A HandlerFunc's handler runs once per attempt: 20 successes and the
	// poison event's one attempt.
	if h := s.histogram(t, "boxcar_subscriber_handler_duration_seconds", sub); h.GetSampleCount() != 21 {
		t.Errorf("handler duration count %d, want 21 (20 ok + 1 failed)", h.GetSampleCount())
	}
	if h := s.histogram(t, "boxcar_subscriber_end_to_end_latency_seconds", sub); h.GetSampleCount() != 20 {
		t.Errorf("end-to-end count %d, want 20 (handled)", h.GetSampleCount())
	}
	b.checkHistogramsMatchBus(s, "mailer")
	checkOneStatePerComponent(t, s)
	for _, m := range s.series("boxcar_scrape_errors_total") {
		if m.GetCounter().GetValue() != 0 {
			t.Errorf("scrape errors %v on a healthy bus", m)
		}
	}
	b.lint()

	// Redrive the letter once the handler accepts it: nothing pending.
	accept.Store(true)
	letters, _, err := b.bus.DeadLetters(b.ctx, boxcar.DeadLetterFilter{Subscriber: "mailer"})
	if err != nil || len(letters) != 1 {
		t.Fatalf("dead letters %v, %v; want 1", letters, err)
	}
	if _, err := b.bus.Redrive(b.ctx, boxcar.RedriveRequest{Seq: letters[0].Seq, By: "test"}); err != nil {
		t.Fatal(err)
	}
	b.waitIdle("mailer", 21, 1)
	s = b.gather()
	wantValues(t, s, map[string]float64{"boxcar_subscriber_dead_letters_pending": 0, "boxcar_subscriber_dead_letters_stored": 1}, sub)
	if got := s.value(t, "boxcar_subscriber_handled_total", sub, "result=ok"); got != 21 {
		t.Errorf("handled ok after the redrive = %v, want 21", got)
	}
	if h := s.histogram(t, "boxcar_subscriber_end_to_end_latency_seconds", sub); h.GetSampleCount() != 21 {
		t.Errorf("end-to-end count %d after the redrive, want 21", h.GetSampleCount())
	}
}

// waitIdle waits until subscriber name handled handled events and
// dead-lettered dead, holds nothing, and the outbox is empty.
func (b *bundle) waitIdle(name string, handled, dead int64) {
	b.t.Helper()
	waitFor(b.t, fmt.Sprintf("%s: %d handled, %d dead-lettered", name, handled, dead), func() (bool, string) {
		st, err := b.bus.Stats(b.ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, s := range st.Subscribers {
			if s.Name == name {
				return s.Handled == handled && s.DeadLettered == dead && s.InFlight == 0 && st.OutboxLag == 0, fmt.Sprintf("%+v, outbox lag %d", s, st.OutboxLag)
			}
		}
		return false, "not running"
	})
}

// wantValues checks each family's one series with labels want.
func wantValues(t *testing.T, s scrape, values map[string]float64, want ...string) {
	t.Helper()
	for name, v := range values {
		if got := s.value(t, name, want...); got != v {
			t.Errorf("%s%v = %v, want %v", name, want, got, v)
		}
	}
}

// checkHistogramsMatchBus checks the scraped histograms of subscriber name
// against the bus's own (the bus is idle: they are the same observations):
// each Prometheus bucket is the sum of Boxcar's counts up to it.
func (b *bundle) checkHistogramsMatchBus(s scrape, name string) {
	b.t.Helper()
	st := b.subStats(name)
	for family, own := range map[string]boxcar.Histogram{
		"boxcar_subscriber_handler_duration_seconds":   st.HandlerDuration,
		"boxcar_subscriber_end_to_end_latency_seconds": st.EndToEnd,
	} {
		h := s.histogram(b.t, family, "subscriber="+name)
		checkHistogram(b.t, family, h)
		if len(h.GetBucket()) != len(own.Bounds) {
			b.t.Fatalf("%s: %d buckets, the bus has %d bounds", family, len(h.GetBucket()), len(own.Bounds))
		}
		var sum uint64
		for i, bk := range h.GetBucket() {
			sum += own.Counts[i]
			if bk.GetUpperBound() != own.Bounds[i] || bk.GetCumulativeCount() != sum {
				b.t.Errorf("%s bucket %d: le=%v count %d, want le=%v count %d (cumulative)", family, i, bk.GetUpperBound(), bk.GetCumulativeCount(), own.Bounds[i], sum)
			}
		}
		if h.GetSampleCount() != own.Count || h.GetSampleSum() != own.Sum {
			b.t.Errorf("%s: count %d sum %v, the bus has %d and %v", family, h.GetSampleCount(), h.GetSampleSum(), own.Count, own.Sum)
		}
	}
}

// checkOneStatePerComponent checks the health enum: every component has
// one series per state and exactly one of them is 1.
func checkOneStatePerComponent(t *testing.T, s scrape) {
	t.Helper()
	type comp struct{ component, name string }
	ones, series := map[comp]float64{}, map[comp]int{}
	for _, m := range s.series("boxcar_health_state") {
		var c comp
		for _, lp := range m.GetLabel() {
			switch lp.GetName() {
			case "component":
				c.component = lp.GetValue()
			case "subscriber":
				c.name = lp.GetValue()
			}
		}
		ones[c] += m.GetGauge().GetValue()
		series[c]++
	}
	if len(series) < 3 || series[comp{"bus", ""}] == 0 || series[comp{"relay", ""}] == 0 || series[comp{"outbox", ""}] == 0 {
		t.Fatalf("health components %v: want bus, relay, outbox and the subscribers", series)
	}
	for c, n := range series {
		if n != 5 || ones[c] != 1 {
			t.Errorf("health of %v: %d series summing to %v, want 5 summing to 1", c, n, ones[c])
		}
	}
}

// TestParkedKeys dead-letters the head of a parked key, then redrives it:
// parked keys and the dead-letter depth follow.
func TestParkedKeys(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	var accept atomic.Bool
	_, err := b.bus.Subscribe(b.ctx, "billing", boxcar.TxHandler(func(ctx context.Context, _ *sql.Tx, m boxcar.Message) error {
		if m.Key == "acct-bad" && !accept.Load() {
			return boxcar.Permanent(errors.New("no such account"))
		}
		return nil
	}), boxcar.SubscribeOptions{Types: []string{typOrder}, ParkKeys: true})
	if err != nil {
		t.Fatal(err)
	}
	b.publish(typOrder, "acct-bad", "acct-1", "acct-bad", "acct-2", "acct-bad", "acct-3")
	// The head fails; the key's two later events are parked behind it.
	waitFor(t, "a parked key holding 2 events", func() (bool, string) {
		d, err := b.bus.DeadLetterDepths(b.ctx)
		st := b.subStats("billing")
		return err == nil && d["billing"].Total == 3 && st.Handled == 3 && st.InFlight == 0, fmt.Sprintf("%v %v %+v", d, err, st)
	})
	s := b.gather()
	sub := "subscriber=billing"
	wantValues(t, s, map[string]float64{"boxcar_subscriber_parked_keys": 1, "boxcar_subscriber_dead_letters_pending": 3, "boxcar_subscriber_dead_letters_stored": 3}, sub)
	if got := s.value(t, "boxcar_subscriber_handled_total", sub, "result=dead_lettered"); got != 1 {
		t.Errorf("dead_lettered = %v, want 1 (parked letters are not failures of their own)", got)
	}
	b.lint()

	accept.Store(true)
	head, _, err := b.bus.DeadLetters(b.ctx, boxcar.DeadLetterFilter{Subscriber: "billing", Reason: "permanent"})
	if err != nil || len(head) != 1 {
		t.Fatalf("head letters %v, %v", head, err)
	}
	res, err := b.bus.Redrive(b.ctx, boxcar.RedriveRequest{Seq: head[0].Seq, By: "test", Why: "account created"})
	if err != nil || len(res.Redriven) != 3 {
		t.Fatalf("Redrive = %+v, %v; want the head and the 2 events it held", res, err)
	}
	waitFor(t, "the key released", func() (bool, string) {
		s := b.gather()
		parked := s.value(t, "boxcar_subscriber_parked_keys", sub)
		ok := s.value(t, "boxcar_subscriber_handled_total", sub, "result=ok")
		return parked == 0 && ok == 6, fmt.Sprintf("parked %v, ok %v", parked, ok)
	})
	s = b.gather()
	wantValues(t, s, map[string]float64{"boxcar_subscriber_dead_letters_pending": 0, "boxcar_subscriber_dead_letters_stored": 3}, sub)
	if h := s.histogram(t, "boxcar_subscriber_end_to_end_latency_seconds", sub); h.GetSampleCount() != 6 {
		t.Errorf("end-to-end count %d, want 6 (handled)", h.GetSampleCount())
	}
	b.checkHistogramsMatchBus(s, "billing")
}

// TestStoppedSubscriber closes a subscriber and publishes more: it stays
// in the metrics, not running, its lag grows, and its health turns stopped.
func TestStoppedSubscriber(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	sub, err := b.bus.Subscribe(b.ctx, "ledger", boxcar.HandlerFunc(func(context.Context, boxcar.Message) error { return nil }),
		boxcar.SubscribeOptions{Types: []string{typOrder}})
	if err != nil {
		t.Fatal(err)
	}
	b.publish(typOrder, keys("k", 3)...)
	b.waitIdle("ledger", 3, 0)
	if err := sub.Close(b.ctx); err != nil {
		t.Fatal(err)
	}
	b.publish(typOrder, keys("later-", 5)...)
	label := "subscriber=ledger"
	waitFor(t, "5 events behind and stopped", func() (bool, string) {
		s := b.gather()
		lag := s.value(t, "boxcar_subscriber_pending_events", label) + s.value(t, "boxcar_subscriber_unacked_events", label)
		stopped := s.value(t, "boxcar_health_state", "component=subscriber", label, "state=stopped")
		return lag == 5 && stopped == 1, fmt.Sprintf("lag %v, stopped %v", lag, stopped)
	})
	s := b.gather()
	wantValues(t, s, map[string]float64{"boxcar_subscriber_running": 0, "boxcar_subscriber_dead_letters_pending": 0}, label)
	for _, family := range []string{"boxcar_subscriber_handled_total", "boxcar_subscriber_in_flight_events", "boxcar_subscriber_handler_duration_seconds"} {
		if ms := s.series(family, label); len(ms) != 0 {
			t.Errorf("%s of a subscriber not running here: %d series, want none (its run's numbers are gone)", family, len(ms))
		}
	}
	checkOneStatePerComponent(t, s)
	b.lint()
}

// TestResubscribeResetsCounters checks that the run counters start again
// at a re-Subscribe and the scrape stays valid.
func TestResubscribeResetsCounters(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	h := boxcar.HandlerFunc(func(context.Context, boxcar.Message) error { return nil })
	opts := boxcar.SubscribeOptions{Types: []string{typOrder}}
	sub, err := b.bus.Subscribe(b.ctx, "audit", h, opts)
	if err != nil {
		t.Fatal(err)
	}
	b.publish(typOrder, keys("a", 10)...)
	b.waitIdle("audit", 10, 0)
	label := "subscriber=audit"
	if got := b.gather().value(t, "boxcar_subscriber_handled_total", label, "result=ok"); got != 10 {
		t.Fatalf("handled = %v, want 10", got)
	}
	if err := sub.Close(b.ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.bus.Subscribe(b.ctx, "audit", h, opts); err != nil {
		t.Fatal(err)
	}
	b.publish(typOrder, keys("b", 3)...)
	b.waitIdle("audit", 3, 0)
	s := b.gather()
	if got := s.value(t, "boxcar_subscriber_handled_total", label, "result=ok"); got != 3 {
		t.Errorf("handled after re-Subscribe = %v, want 3 (a counter reset)", got)
	}
	if hist := s.histogram(t, "boxcar_subscriber_end_to_end_latency_seconds", label); hist.GetSampleCount() != 3 {
		t.Errorf("end-to-end count %d after re-Subscribe, want 3", hist.GetSampleCount())
	}
	wantValues(t, s, map[string]float64{"boxcar_subscriber_running": 1, "boxcar_subscriber_pending_events": 0}, label)
	b.checkHistogramsMatchBus(s, "audit")
	b.lint()
}

// TestClosedBus checks a closed bus's scrape: scrape_errors_total alone,
// its stats read counted at each scrape.
func TestClosedBus(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	b.stop()
	for i := 1; i <= 2; i++ {
		s := b.gather()
		if len(s) != 1 || s["boxcar_scrape_errors_total"] == nil {
			t.Fatalf("families of a closed bus: %s; want boxcar_scrape_errors_total alone", s.names())
		}
		if got := s.value(t, "boxcar_scrape_errors_total", "read=stats"); got != float64(i) {
			t.Errorf("scrape %d: stats errors %v, want %d", i, got, i)
		}
		for _, read := range []string{"health", "subscribers", "dead_letter_depths", "consumer"} {
			if got := s.value(t, "boxcar_scrape_errors_total", "read="+read); got != 0 {
				t.Errorf("scrape %d: %s errors %v, want 0 (not tried on a closed bus)", i, read, got)
			}
		}
	}
	b.lint()
}

// metricNames lists the families of a scrape, with the series Prometheus
// stores for a histogram (_bucket, _sum, _count).
func metricNames(s scrape) map[string]bool {
	names := map[string]bool{}
	for name, mf := range s {
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				names[name+suffix] = true
			}
			continue
		}
		names[name] = true
	}
	return names
}
