package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/metrics"
)

// scraper gathers the registry in a loop on goroutines of its own until
// stopped, recording the first error.
type scraper struct {
	wg      sync.WaitGroup
	done    chan struct{}
	scrapes atomic.Int64
	mu      sync.Mutex
	err     error
}

func startScraping(reg prometheus.Gatherer, goroutines int) *scraper {
	sc := &scraper{done: make(chan struct{})}
	for range goroutines {
		sc.wg.Go(func() {
			for {
				select {
				case <-sc.done:
					return
				default:
				}
				if _, err := reg.Gather(); err != nil {
					sc.mu.Lock()
					sc.err = errors.Join(sc.err, err)
					sc.mu.Unlock()
					return
				}
				sc.scrapes.Add(1)
			}
		})
	}
	return sc
}

// waitScrapes waits until n more scrapes than now have completed.
func (sc *scraper) waitScrapes(t testing.TB, n int64) {
	t.Helper()
	target := sc.scrapes.Load() + n
	waitFor(t, fmt.Sprintf("%d scrapes", n), func() (bool, string) {
		sc.mu.Lock()
		err := sc.err
		sc.mu.Unlock()
		if err != nil {
			t.Fatalf("a scrape failed: %v", err)
		}
		return sc.scrapes.Load() >= target, fmt.Sprintf("%d scrapes", sc.scrapes.Load())
	})
}

// stop stops the scrapers and fails the test if a scrape failed.
func (sc *scraper) stop(t testing.TB) {
	t.Helper()
	close(sc.done)
	sc.wg.Wait()
	if sc.err != nil {
		t.Errorf("a scrape failed: %v", sc.err)
	}
}

// TestScrapeRacesClose scrapes continuously while the bus closes: every
// scrape is valid (the pedantic registry checks each against the
// descriptors), and once closed only the error metric is left.
func TestScrapeRacesClose(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	for _, name := range []string{"a", "b", "c"} {
		if _, err := b.bus.Subscribe(b.ctx, name, boxcar.HandlerFunc(func(context.Context, boxcar.Message) error { return nil }), boxcar.SubscribeOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	b.publish(typOrder, keys("k", 50)...)
	sc := startScraping(b.reg, 3)
	sc.waitScrapes(t, 6)
	b.stop() // while scraping
	sc.waitScrapes(t, 6)
	sc.stop(t)
	s := b.gather()
	if len(s) != 1 || s["boxcar_scrape_errors_total"] == nil {
		t.Errorf("families after Close: %s; want boxcar_scrape_errors_total alone", s.names())
	}
	if s.value(t, "boxcar_scrape_errors_total", "read=stats") < 1 {
		t.Error("no stats error counted after Close")
	}
}

// TestManySubscribersVanishing scrapes while subscribers close and retire
// under it: no scrape fails or repeats a series, and at the end each
// subscriber is shown as it is.
func TestManySubscribersVanishing(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	const n = 12
	subs := make([]*boxcar.Subscription, n)
	for i := range subs {
		var err error
		subs[i], err = b.bus.Subscribe(b.ctx, fmt.Sprintf("sub%02d", i), boxcar.HandlerFunc(func(context.Context, boxcar.Message) error { return nil }), boxcar.SubscribeOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	b.publish(typOrder, keys("k", 30)...)
	sc := startScraping(b.reg, 2)
	sc.waitScrapes(t, 2)
	var wg sync.WaitGroup
	for i := range n / 2 { // close half of them, retire a quarter, concurrently
		wg.Go(func() {
			name := fmt.Sprintf("sub%02d", i)
			if err := subs[i].Close(b.ctx); err != nil {
				t.Errorf("close %s: %v", name, err)
			}
			if i < n/4 {
				if err := b.bus.RetireSubscriber(b.ctx, name, "test", "vanish"); err != nil {
					t.Errorf("retire %s: %v", name, err)
				}
			}
		})
	}
	wg.Wait()
	sc.waitScrapes(t, 4)
	sc.stop(t)
	s := b.gather()
	for i := range n {
		label := fmt.Sprintf("subscriber=sub%02d", i)
		running := s.series("boxcar_subscriber_running", label)
		switch {
		case i < n/4:
			if len(running) != 0 {
				t.Errorf("retired %s still listed", label)
			}
		case i < n/2:
			if got := s.value(t, "boxcar_subscriber_running", label); got != 0 {
				t.Errorf("closed %s: running %v", label, got)
			}
		default:
			if got := s.value(t, "boxcar_subscriber_running", label); got != 1 {
				t.Errorf("%s: running %v", label, got)
			}
			s.value(t, "boxcar_subscriber_handled_total", label, "result=ok") // one series
		}
	}
	checkOneStatePerComponent(t, s)
	b.lint()
}

// TestScrapeTimeoutCutsReads scrapes with a deadline that has passed before
// the reads start: each read is either in the scrape or counted as an
// error, never both, never neither, and the scrape itself succeeds.
func TestScrapeTimeoutCutsReads(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{ScrapeTimeout: 1}) // 1ns
	if _, err := b.bus.Subscribe(b.ctx, "slow", boxcar.HandlerFunc(func(context.Context, boxcar.Message) error { return nil }), boxcar.SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	// Each read and a family only it sends.
	shows := map[string]string{
		"stats":              "boxcar_outbox_lag_events",
		"health":             "boxcar_health_state",
		"subscribers":        "boxcar_subscriber_running",
		"dead_letter_depths": "boxcar_subscriber_dead_letters_pending",
	}
	prev := map[string]float64{}
	cut := 0
	for range 5 {
		s := b.gather()
		for read, family := range shows {
			errs := s.value(t, "boxcar_scrape_errors_total", "read="+read)
			counted, shown := errs > prev[read], s[family] != nil
			if counted == shown {
				t.Errorf("read %s: counted as an error %v, its metric %s shown %v: want exactly one", read, counted, family, shown)
			}
			if counted {
				cut++
			}
			prev[read] = errs
		}
	}
	t.Logf("%d of 20 reads cut by the 1ns deadline", cut)
}

// TestRegister checks Register's refusals and that two buses share a
// registry only with labels that tell them apart.
func TestRegister(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	var are prometheus.AlreadyRegisteredError
	if _, err := metrics.Register(b.reg, b.bus, metrics.Options{}); !errors.As(err, &are) {
		t.Errorf("second Register of the same names = %v, want an AlreadyRegisteredError", err)
	}
	if _, err := metrics.Register(b.reg, b.bus, metrics.Options{ConstLabels: prometheus.Labels{"bus": "second"}}); err == nil {
		t.Errorf("Register with a const label beside a collector without: no error (label names must agree)")
	}
	two := prometheus.NewPedanticRegistry()
	for _, name := range []string{"orders", "billing"} {
		if _, err := metrics.Register(two, b.bus, metrics.Options{ConstLabels: prometheus.Labels{"bus": name}}); err != nil {
			t.Errorf("Register bus=%s: %v", name, err)
		}
	}
	if mfs, err := two.Gather(); err != nil || len(mfs) == 0 {
		t.Errorf("two collectors told apart by a label: Gather = %d families, %v", len(mfs), err)
	} else if n := len(newScrape(mfs).series("boxcar_outbox_lag_events")); n != 2 {
		t.Errorf("outbox lag: %d series, want 2 (one per bus label)", n)
	}
	global, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range global {
		if strings.HasPrefix(mf.GetName(), "boxcar_") {
			t.Errorf("%s is on the global registry", mf.GetName())
		}
	}
	bad := map[string]metrics.Options{
		"a label of the collector's": {ConstLabels: prometheus.Labels{"subscriber": "x"}},
		"a negative timeout":         {ScrapeTimeout: -1},
		"an invalid namespace":       {Namespace: "box-car"},
		"an invalid label name":      {ConstLabels: prometheus.Labels{"bus-name": "x"}},
		"a reserved label name":      {ConstLabels: prometheus.Labels{"__name": "x"}},
	}
	for what, opts := range bad {
		if _, err := metrics.Register(prometheus.NewRegistry(), b.bus, opts); err == nil {
			t.Errorf("Register with %s: no error", what)
		}
	}
	if _, err := metrics.NewCollector(nil, metrics.Options{}); err == nil {
		t.Error("NewCollector(nil): no error")
	}
	if _, err := metrics.Register(nil, b.bus, metrics.Options{}); err == nil {
		t.Error("Register(nil registry): no error")
	}
	reg := prometheus.NewPedanticRegistry()
	if _, err := metrics.Register(reg, b.bus, metrics.Options{Namespace: "app", ConstLabels: prometheus.Labels{"bus": "orders"}}); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "app_") {
			t.Errorf("family %s outside namespace app", mf.GetName())
		}
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, []string{"bus=orders"}) {
				t.Errorf("%s: series without the const label: %v", mf.GetName(), m)
			}
		}
	}
}

// TestServeHTTP serves the registry with promhttp and reads the text
// format back as Prometheus would.
func TestServeHTTP(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	if _, err := b.bus.Subscribe(b.ctx, "web", boxcar.HandlerFunc(func(context.Context, boxcar.Message) error { return nil }), boxcar.SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	b.publish(typOrder, keys("k", 4)...)
	b.waitIdle("web", 4, 0)
	srv := httptest.NewServer(promhttp.HandlerFor(b.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	defer srv.Close()
	req, _ := http.NewRequestWithContext(b.ctx, http.MethodGet, srv.URL, nil)
	req.Header.Set("Accept", "text/plain")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("GET = %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse the text format: %v\n%s", err, body)
	}
	s := scrape(families)
	if got := s.value(t, "boxcar_subscriber_handled_total", "subscriber=web", "result=ok"); got != 4 {
		t.Errorf("handled over HTTP = %v, want 4", got)
	}
	for _, line := range []string{
		"# TYPE boxcar_subscriber_handler_duration_seconds histogram",
		`boxcar_subscriber_handler_duration_seconds_bucket{subscriber="web",le="+Inf"} 4`,
		"boxcar_subscriber_handler_duration_seconds_count{subscriber=\"web\"} 4",
		"# TYPE boxcar_outbox_lag_events gauge",
		"# TYPE boxcar_relay_published_total counter",
	} {
		if !strings.Contains(string(body), line) {
			t.Errorf("the text format lacks %q", line)
		}
	}
}
