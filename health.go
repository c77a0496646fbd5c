package boxcar

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/boxcar-bus/boxcar/internal/lifecycle"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// Health, judged as Kafka's Burrow judges consumers: by their progress over
// a window of samples, not by one lag threshold. A subscriber with a lag of
// a million that is catching up is lagging, not broken; one with a lag of
// three that has not moved for the whole window is stalled.

// HealthState is what an orchestrator or an operator acts on.
type HealthState string

// The states, from best to worst.
const (
	HealthOK      HealthState = "ok"      // caught up, or keeping up
	HealthLagging HealthState = "lagging" // moving, but falling behind
	HealthStalled HealthState = "stalled" // behind, and not moving
	HealthStopped HealthState = "stopped" // not running anywhere, and behind
	HealthLosing  HealthState = "losing"  // events are lost to it (expired unhandled, or set aside)
)

func (s HealthState) rank() int {
	return slices.Index([]HealthState{HealthOK, HealthLagging, HealthStalled, HealthStopped, HealthLosing}, s)
}

// ComponentHealth is one component's state and why.
type ComponentHealth struct {
	// Component is "relay", "outbox", "subscriber" or, for a leaf
	// (Config.Leaf), "hub"; Name is the subscriber's, or the hub's
	// aggregate stream.
	Component string      `json:"component"`
	Name      string      `json:"name"`
	State     HealthState `json:"state"`
	Reasons   []string    `json:"reasons"`
	// Lag is the events behind (outbox: not in the stream yet; subscriber:
	// pending and unacked); Age the outbox's oldest event's wait.
	Lag int64         `json:"lag"`
	Age time.Duration `json:"age_ns"`
}

// Health is every component's state; State is the worst of them.
type Health struct {
	State      HealthState       `json:"state"`
	Components []ComponentHealth `json:"components"`
	At         time.Time         `json:"at"`
}

// HealthOptions sets how health is judged. Every field has a default.
type HealthOptions struct {
	// Interval is how often the bus samples its components. Default 15s.
	Interval time.Duration
	// Window is how far back the samples go: a component is judged by its
	// progress over it. Default 5 minutes.
	Window time.Duration
	// OutboxAge is how long an event may wait in the outbox before the
	// outbox is lagging (stalled if the relay does not move). Default 1 minute.
	OutboxAge time.Duration
}

// Defaults of HealthOptions.
const (
	DefaultHealthInterval  = 15 * time.Second
	DefaultHealthWindow    = 5 * time.Minute
	DefaultHealthOutboxAge = time.Minute
)

func (o HealthOptions) withDefaults() HealthOptions {
	if o.Interval == 0 {
		o.Interval = DefaultHealthInterval
	}
	if o.Window == 0 {
		o.Window = DefaultHealthWindow
	}
	if o.OutboxAge == 0 {
		o.OutboxAge = DefaultHealthOutboxAge
	}
	return o
}

func (o HealthOptions) validate() error {
	if o.Interval < 0 || o.Window < 0 || o.OutboxAge < 0 {
		return fmt.Errorf("%w: Config.Health: durations must not be negative (0 for the defaults)", ErrInvalidConfig)
	}
	if o.Window < 2*o.Interval {
		return fmt.Errorf("%w: Config.Health.Window (%v) must hold at least two samples: make it at least twice Interval (%v)", ErrInvalidConfig, o.Window, o.Interval)
	}
	return nil
}

// healthSample is one look at every component.
type healthSample struct {
	at         time.Time
	cursor     int64 // relay
	outboxLag  int64
	outboxAge  time.Duration
	setAside   int64
	subs       map[string]subSample
	relayAlive bool
	walFailed  string // the failed WAL fsync that ended durability ("": none)
}

type subSample struct {
	floor   uint64 // ack floor (stream seq)
	lag     int64  // pending + unacked
	expired int64
	running bool // pulled from, here or elsewhere
	paused  bool
	err     string
}

// healthMonitor keeps the samples of the window.
type healthMonitor struct {
	b       *Bus
	opts    HealthOptions
	group   *lifecycle.Group
	mu      sync.Mutex
	samples []healthSample // oldest first, within the window
}

func newHealthMonitor(b *Bus) *healthMonitor {
	return &healthMonitor{b: b, opts: b.cfg.Health, group: lifecycle.New()}
}

func (h *healthMonitor) start() { h.group.Go(h.run) }

func (h *healthMonitor) stop(ctx context.Context) error { return h.group.Stop(ctx) }

func (h *healthMonitor) run(ctx context.Context) {
	t := time.NewTicker(h.opts.Interval)
	defer t.Stop()
	for {
		if smp, err := h.sample(ctx); err == nil {
			h.keep(smp)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sample takes a look at every component. It only reads: an idle bus
// writes nothing.
func (h *healthMonitor) sample(ctx context.Context) (healthSample, error) {
	b := h.b
	s := healthSample{at: time.Now(), subs: map[string]subSample{}, cursor: b.relay.cursor.Load(),
		setAside: b.relay.setAsideCount.Load(), relayAlive: !b.relay.group.Stopping(),
		walFailed: failureText(b.w.Stats().WALSyncFailure)}
	_, maxSeq, err := sqlite.OutboxBounds(ctx, b.db)
	if err != nil {
		return s, err
	}
	s.outboxLag = max(maxSeq-s.cursor, 0)
	if ns, ok, err := sqlite.OldestAfter(ctx, b.db, s.cursor); err != nil {
		return s, err
	} else if ok {
		s.outboxAge = s.at.Sub(time.Unix(0, ns))
	}
	rows, err := sqlite.Subscribers(ctx, b.db)
	if err != nil {
		return s, err
	}
	for _, r := range rows {
		ss := subSample{expired: r.Expired, running: b.subscription(r.Name) != nil}
		if sub := b.subscription(r.Name); sub != nil {
			ss.expired = sub.stats.expired.Load()
		}
		var c jetstream.Consumer
		events, err := b.subEvents()
		if err == nil {
			c, err = events.Consumer(ctx, r.Name)
		}
		if err != nil {
			ss.err = err.Error()
		} else {
			info := c.CachedInfo()
			ss.floor, ss.lag = info.AckFloor.Stream, int64(info.NumPending)+int64(info.NumAckPending)
			ss.running = ss.running || info.NumWaiting > 0
			ss.paused = info.Paused
		}
		s.subs[r.Name] = ss
	}
	return s, nil
}

// keep adds the monitor's own sample to the window and drops what fell out
// of it. Only the monitor keeps samples, one per Interval: however often
// Health is called, the window holds at most Window/Interval+1 samples and
// judges the same spacing.
func (h *healthMonitor) keep(s healthSample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.samples = append(h.samples, s)
	cut := 0
	for cut < len(h.samples)-1 && s.at.Sub(h.samples[cut].at) > h.opts.Window {
		cut++
	}
	h.samples = append(h.samples[:0], h.samples[cut:]...)
}

// Health judges every component by its samples over Config.Health.Window,
// with a fresh sample taken now as the newest (judged, not kept: calling
// Health often changes neither the window nor the memory it takes).
func (b *Bus) Health(ctx context.Context) (Health, error) {
	if b.closed.Load() {
		return Health{}, ErrClosed
	}
	now, err := b.health.sample(ctx)
	if err != nil {
		return Health{}, fmt.Errorf("boxcar: health: %w", err)
	}
	b.health.mu.Lock()
	samples := append(slices.Clone(b.health.samples), now)
	b.health.mu.Unlock()
	return b.withHubHealth(judge(samples, b.cfg.Health)), nil
}

// judge applies the rules to a window of samples (oldest first, at least
// one).
func judge(w []healthSample, o HealthOptions) Health {
	first, last := w[0], w[len(w)-1]
	h := Health{At: last.at}
	h.Components = append(h.Components, judgeRelay(first, last, o), judgeOutbox(first, last, o))
	names := make([]string, 0, len(last.subs))
	for n := range last.subs {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		h.Components = append(h.Components, judgeSubscriber(n, w, o))
	}
	h.State = HealthOK
	for _, c := range h.Components {
		if c.State.rank() > h.State.rank() {
			h.State = c.State
		}
	}
	return h
}

// watched reports whether a window from first to last is long enough to
// judge progress by: at least one Interval. (A look 1 ms after the first
// sample sees no progress without meaning anything; one of 400 ms with an
// Interval of 100 ms does.)
func watched(first, last time.Time, o HealthOptions) bool { return last.Sub(first) >= o.Interval }

// spanText is how long a window was, for a reason's text.
func spanText(first, last time.Time) time.Duration {
	d := last.Sub(first)
	if d < 10*time.Second {
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(time.Second)
}

func judgeRelay(first, last healthSample, o HealthOptions) ComponentHealth {
	c := ComponentHealth{Component: "relay", State: HealthOK, Lag: last.outboxLag}
	switch {
	case last.walFailed != "":
		c.State, c.Reasons = HealthStopped, []string{"no outbox event is published, no transactional ack is sent: " + last.walFailed}
	case !last.relayAlive:
		c.State, c.Reasons = HealthStopped, []string{"the relay is not running"}
	case last.outboxLag > 0 && first.outboxLag > 0 && last.cursor == first.cursor && watched(first.at, last.at, o):
		c.State, c.Reasons = HealthStalled, []string{fmt.Sprintf("%d events wait and the relay published none for %v", last.outboxLag, spanText(first.at, last.at))}
	case last.outboxLag > first.outboxLag && first.outboxLag > 0:
		c.State, c.Reasons = HealthLagging, []string{fmt.Sprintf("the outbox grew from %d to %d events waiting", first.outboxLag, last.outboxLag)}
	}
	return c
}

func judgeOutbox(first, last healthSample, o HealthOptions) ComponentHealth {
	c := ComponentHealth{Component: "outbox", State: HealthOK, Lag: last.outboxLag, Age: last.outboxAge}
	if last.setAside > first.setAside {
		c.State = HealthLosing
		c.Reasons = append(c.Reasons, fmt.Sprintf("%d events that cannot be published (the stream refuses them, or their outbox rows were not written by PublishTx) were set aside (boxcar_outbox_dead)", last.setAside-first.setAside))
	}
	if last.outboxAge > o.OutboxAge && c.State == HealthOK {
		c.State = HealthLagging
		if last.cursor == first.cursor && last.at.After(first.at) {
			c.State = HealthStalled
		}
		c.Reasons = append(c.Reasons, fmt.Sprintf("the oldest event has waited %v (more than %v)", last.outboxAge.Round(time.Millisecond), o.OutboxAge))
	}
	return c
}

func judgeSubscriber(name string, w []healthSample, o HealthOptions) ComponentHealth {
	last := w[len(w)-1]
	ls := last.subs[name]
	c := ComponentHealth{Component: "subscriber", Name: name, State: HealthOK, Lag: ls.lag}
	var fs subSample
	var firstAt time.Time
	found, caughtUp := false, false
	for _, s := range w {
		ss, ok := s.subs[name]
		if !ok {
			continue
		}
		if !found {
			fs, firstAt, found = ss, s.at, true
		}
		if ss.err == "" && ss.lag == 0 {
			caughtUp = true
		}
	}
	span, long := spanText(firstAt, last.at), watched(firstAt, last.at, o)
	switch {
	case ls.expired > fs.expired:
		c.State, c.Reasons = HealthLosing, []string{fmt.Sprintf("%d events expired from the stream before it handled them (Config.Retention)", ls.expired)}
	case ls.err != "":
		c.State, c.Reasons = HealthStopped, []string{"its consumer cannot be read: " + ls.err}
	case ls.paused:
		c.Reasons = []string{"paused by an operator"}
	case caughtUp:
	case !ls.running && ls.floor == fs.floor:
		c.State, c.Reasons = HealthStopped, []string{fmt.Sprintf("not running anywhere, %d events behind", ls.lag)}
	case ls.floor == fs.floor && long:
		c.State, c.Reasons = HealthStalled, []string{fmt.Sprintf("%d events behind and no progress for %v", ls.lag, span)}
	case ls.lag > fs.lag && long:
		c.State, c.Reasons = HealthLagging, []string{fmt.Sprintf("moving, but behind by %d events, up from %d over %v", ls.lag, fs.lag, span)}
	}
	return c
}
