package metrics_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/metrics"
	"github.com/boxcar-bus/boxcar/sqlite"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// These tests run the collector on a real bus: a SQLite file in the test's
// directory and the embedded nats-server boxcar.Open starts. The metrics
// are gathered from a fresh registry, never the global one.

// bundle is a bus, its database and a pedantic registry with the bus's
// collector on it (pedantic: it checks every metric against the
// descriptors the collector described).
type bundle struct {
	t    testing.TB
	ctx  context.Context
	db   *sql.DB
	bus  *boxcar.Bus
	reg  *prometheus.Registry
	stop func() // closes the bus (once)
}

// setup opens a bus whose health is judged over a short window (so that a
// stopped subscriber shows as stopped within the test), and registers its
// collector with opts. Everything is closed at the end of the test.
func setup(t testing.TB, opts metrics.Options) *bundle {
	t.Helper()
	dir := t.TempDir()
	db, err := sqlite.Open(filepath.Join(dir, "app.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	bus, err := boxcar.Open(t.Context(), db, boxcar.Config{
		Dir:         filepath.Join(dir, "nats"),
		Synchronous: sqlite.SyncNormal, // no fsync per commit: not what these tests observe
		Health:      boxcar.HealthOptions{Interval: 20 * time.Millisecond, Window: 100 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := bus.Close(ctx); err != nil {
				t.Errorf("close bus: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	reg := prometheus.NewPedanticRegistry()
	if _, err := metrics.Register(reg, bus, opts); err != nil {
		t.Fatal(err)
	}
	return &bundle{t: t, ctx: t.Context(), db: db, bus: bus, reg: reg, stop: stop}
}

// publish publishes one event of typ for each key, in one transaction.
func (b *bundle) publish(typ string, keys ...string) {
	b.t.Helper()
	events := make([]boxcar.Event, len(keys))
	for i, k := range keys {
		events[i] = boxcar.Event{Type: typ, Key: k, Data: []byte(`{}`)}
	}
	if err := b.bus.Publish(b.ctx, events...); err != nil {
		b.t.Fatal(err)
	}
}

// gather gathers the registry; any error fails the test.
func (b *bundle) gather() scrape {
	b.t.Helper()
	mfs, err := b.reg.Gather()
	if err != nil {
		b.t.Fatalf("gather: %v", err)
	}
	return newScrape(mfs)
}

// waitFor polls cond until it holds; the minute is a liveness bound, not a
// timing assertion.
func waitFor(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited a minute for %s: %s", what, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// subStats returns the running subscriber name's Stats, from the bus.
func (b *bundle) subStats(name string) boxcar.SubscriberStats {
	b.t.Helper()
	st, err := b.bus.Stats(b.ctx)
	if err != nil {
		b.t.Fatal(err)
	}
	for _, s := range st.Subscribers {
		if s.Name == name {
			return s
		}
	}
	return boxcar.SubscriberStats{}
}

// scrape is one Gather's families, by name.
type scrape map[string]*dto.MetricFamily

func newScrape(mfs []*dto.MetricFamily) scrape {
	s := scrape{}
	for _, mf := range mfs {
		s[mf.GetName()] = mf
	}
	return s
}

// series returns the metrics of family name whose labels include want
// ("k=v" pairs).
func (s scrape) series(name string, want ...string) []*dto.Metric {
	var out []*dto.Metric
	mf := s[name]
	if mf == nil {
		return nil
	}
	for _, m := range mf.GetMetric() {
		if hasLabels(m, want) {
			out = append(out, m)
		}
	}
	return out
}

func hasLabels(m *dto.Metric, want []string) bool {
	got := map[string]string{}
	for _, lp := range m.GetLabel() {
		got[lp.GetName()] = lp.GetValue()
	}
	for _, w := range want {
		k, v, _ := strings.Cut(w, "=")
		if got[k] != v { // an absent label reads as "", as in Prometheus
			return false
		}
	}
	return true
}

// value returns the value of the one series of name with labels want;
// the test fails if there is not exactly one.
func (s scrape) value(t testing.TB, name string, want ...string) float64 {
	t.Helper()
	ms := s.series(name, want...)
	if len(ms) != 1 {
		t.Fatalf("%s%v: %d series, want 1 (families: %s)", name, want, len(ms), s.names())
	}
	m := ms[0]
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	t.Fatalf("%s%v is not a gauge or counter", name, want)
	return 0
}

// histogram returns the one histogram of name with labels want.
func (s scrape) histogram(t testing.TB, name string, want ...string) *dto.Histogram {
	t.Helper()
	ms := s.series(name, want...)
	if len(ms) != 1 || ms[0].Histogram == nil {
		t.Fatalf("%s%v: %d series (histogram wanted)", name, want, len(ms))
	}
	return ms[0].Histogram
}

func (s scrape) names() string {
	var n []string
	for k := range s {
		n = append(n, k)
	}
	sort.Strings(n)
	return strings.Join(n, " ")
}

// checkHistogram checks h is a valid Prometheus histogram: buckets by
// ascending bound, cumulative counts that never decrease, none above the
// count.
func checkHistogram(t testing.TB, what string, h *dto.Histogram) {
	t.Helper()
	var prevBound float64
	var prev uint64
	for i, b := range h.GetBucket() {
		if i > 0 && b.GetUpperBound() <= prevBound {
			t.Errorf("%s: bucket %d bound %v after %v", what, i, b.GetUpperBound(), prevBound)
		}
		if b.GetCumulativeCount() < prev {
			t.Errorf("%s: bucket le=%v counts %d, less than the bucket below (%d): not cumulative", what, b.GetUpperBound(), b.GetCumulativeCount(), prev)
		}
		prevBound, prev = b.GetUpperBound(), b.GetCumulativeCount()
	}
	if prev > h.GetSampleCount() {
		t.Errorf("%s: last bucket %d above the count %d", what, prev, h.GetSampleCount())
	}
}

func keys(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}
