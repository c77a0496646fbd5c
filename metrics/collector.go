package metrics

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"

	"github.com/boxcar-bus/boxcar"
)

// Defaults of Options.
const (
	DefaultNamespace     = "boxcar"
	DefaultScrapeTimeout = 5 * time.Second
)

// Options configures a Collector. Every field has a default.
type Options struct {
	// Namespace starts every metric's name (namespace_outbox_lag_events).
	// Default "boxcar". The rules in deploy/prometheus assume the default.
	Namespace string
	// ConstLabels are added to every metric. Two buses of one process
	// share a registry only if each has const labels that tell it apart,
	// with the same names ({"bus": "orders"}, {"bus": "billing"}): the
	// registry refuses a second collector of the same metric names, and one
	// whose label names differ. Their names must not be the Collector's own
	// labels (subscriber, result, component, state, read). Default none.
	ConstLabels prometheus.Labels
	// ScrapeTimeout bounds all the reads of one scrape together (Stats,
	// Health, Subscribers, DeadLetterDepths). A read cut short is counted
	// in scrape_errors_total and its metrics are left out of that scrape.
	// Default 5s, below Prometheus's default scrape timeout of 10s.
	ScrapeTimeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.ScrapeTimeout == 0 {
		o.ScrapeTimeout = DefaultScrapeTimeout
	}
	return o
}

func (o Options) validate() error {
	if o.ScrapeTimeout < 0 {
		return fmt.Errorf("metrics: Options.ScrapeTimeout %v is negative: use 0 for the default (%v)", o.ScrapeTimeout, DefaultScrapeTimeout)
	}
	// Classic names (not the UTF-8 ones client_golang also accepts): they
	// work in every PromQL without quoting, and in Prometheus 2.
	if !model.LegacyValidation.IsValidMetricName(o.Namespace) {
		return fmt.Errorf("metrics: Options.Namespace %q: use letters, digits and '_', not starting with a digit", o.Namespace)
	}
	own := []string{labelSubscriber, labelResult, labelComponent, labelState, labelRead}
	for name := range o.ConstLabels {
		if !model.LegacyValidation.IsValidLabelName(name) || strings.HasPrefix(name, "__") {
			return fmt.Errorf("metrics: Options.ConstLabels: %q is not a label name: use letters, digits and '_', not starting with a digit or \"__\"", name)
		}
		for _, l := range own {
			if name == l {
				return fmt.Errorf("metrics: Options.ConstLabels has %q, a label of the Collector's own metrics: rename it (for example to bus_%s)", name, name)
			}
		}
	}
	return nil
}

// Collector is a prometheus.Collector of a Bus's numbers. It holds no state
// of its own but its error counts: every scrape reads the bus afresh, so the
// values are those of the scrape's instant. It is safe for concurrent
// scrapes.
//
// It is a checked collector: Describe sends every descriptor Collect uses,
// so a registry refuses a second Collector of the same names and const
// labels at Register, not at the first scrape.
type Collector struct {
	bus  *boxcar.Bus
	opts Options
	d    *descs
	errs [numReads]atomic.Uint64 // by read
}

// NewCollector makes a Collector of bus with opts. Register it on the
// app's registry (or call Register, which does both); never on
// prometheus.DefaultRegisterer unless the app chose it. Names and labels
// are checked when it is registered.
func NewCollector(bus *boxcar.Bus, opts Options) (*Collector, error) {
	if bus == nil {
		return nil, errors.New("metrics: NewCollector: bus is nil: pass the *boxcar.Bus that Open returned")
	}
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	return &Collector{bus: bus, opts: opts, d: newDescs(opts.Namespace, opts.ConstLabels)}, nil
}

// Register makes a Collector of bus and registers it on reg. An error from
// reg (a prometheus.AlreadyRegisteredError when reg holds a Collector of the
// same names and const labels, another bus's for example) is wrapped.
func Register(reg prometheus.Registerer, bus *boxcar.Bus, opts Options) (*Collector, error) {
	if reg == nil {
		return nil, errors.New("metrics: Register: reg is nil: pass the app's registry (prometheus.NewRegistry())")
	}
	c, err := NewCollector(bus, opts)
	if err != nil {
		return nil, err
	}
	if err := reg.Register(c); err != nil {
		return nil, fmt.Errorf("metrics: register the collector: %w", err)
	}
	return c, nil
}

// Describe sends the descriptor of every metric Collect may send.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.d.all {
		ch <- d
	}
}

// Collect reads the bus, within Options.ScrapeTimeout, and sends what it
// read. A read that fails is counted in scrape_errors_total and its metrics
// are left out; the others are sent. A closed bus sends scrape_errors_total
// alone.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	// The registry gives Collect no context: the scrape's deadline is
	// ScrapeTimeout from now.
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.ScrapeTimeout)
	defer cancel()
	r := c.read(ctx)
	e := emitter{d: c.d, ch: ch, fail: func(w read) { c.errs[w].Add(1) }}
	if !r.closed {
		e.bus(r)
		e.subscribers(r)
		e.health(r)
	}
	for i, name := range readNames { // after the emits, which can count errors
		e.counter(c.d.scrapeErrors, float64(c.errs[i].Load()), name)
	}
}

// reading is what one scrape read of the bus; a nil part could not be read.
type reading struct {
	closed bool
	stats  *boxcar.Stats
	health *boxcar.Health
	subs   []boxcar.SubscriberInfo
	depths map[string]boxcar.DeadLetterDepth
}

// read makes the scrape's reads, counting the failures. A closed bus stops
// it at the first read.
func (c *Collector) read(ctx context.Context) reading {
	var r reading
	fail := func(what read, err error) bool {
		if err == nil {
			return false
		}
		c.errs[what].Add(1)
		return true
	}
	st, err := c.bus.Stats(ctx)
	if errors.Is(err, boxcar.ErrClosed) {
		fail(readStats, err)
		r.closed = true
		return r
	}
	if !fail(readStats, err) {
		r.stats = &st
	}
	if h, err := c.bus.Health(ctx); !fail(readHealth, err) {
		r.health = &h
	}
	if subs, err := c.bus.Subscribers(ctx); !fail(readSubscribers, err) {
		r.subs = subs
		for _, s := range subs {
			if s.Err != "" {
				c.errs[readConsumer].Add(1)
			}
		}
	}
	if depths, err := c.bus.DeadLetterDepths(ctx); !fail(readDeadLetters, err) {
		r.depths = depths
	}
	return r
}
