package metrics

import (
	"fmt"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/boxcar-bus/boxcar"
)

// emitter turns one scrape's reading into const metrics on ch. A value it
// cannot turn into a metric (a malformed histogram) is counted with fail and
// left out, so that one bad value never fails the whole scrape.
type emitter struct {
	d    *descs
	ch   chan<- prometheus.Metric
	fail func(read)
}

func (e emitter) send(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
	m, err := prometheus.NewConstMetric(d, t, v, labels...)
	if err != nil {
		// Only a descriptor the registry refused at Register can fail here:
		// report it the way client_golang does.
		m = prometheus.NewInvalidMetric(d, err)
	}
	e.ch <- m
}

func (e emitter) gauge(d *prometheus.Desc, v float64, labels ...string) {
	e.send(d, prometheus.GaugeValue, v, labels...)
}

func (e emitter) counter(d *prometheus.Desc, v float64, labels ...string) {
	e.send(d, prometheus.CounterValue, v, labels...)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// bus sends the bus's own numbers: outbox, relay, writer.
func (e emitter) bus(r reading) {
	st := r.stats
	if st == nil {
		return
	}
	d := e.d
	e.gauge(d.outboxLag, float64(st.OutboxLag))
	e.gauge(d.outboxAge, st.OutboxAge.Seconds())
	e.gauge(d.outboxDead, float64(st.OutboxDead))
	e.counter(d.relayPublished, float64(st.RelayPublished))
	e.counter(d.relayFailures, float64(st.RelayFailures))
	e.counter(d.relaySetAside, float64(st.RelaySetAside))
	e.counter(d.streamsRecreated, float64(st.StreamsRecreated))
	e.counter(d.txCommits, float64(st.TxCommits))
	e.counter(d.walSyncs, float64(st.WALSyncs))
	e.gauge(d.walSyncFailed, boolValue(st.WALSyncFailed != ""))
	e.counter(d.txCalls, float64(st.TxCalls))
	e.gauge(d.writerHeld, st.WriterHeldFor.Seconds())
	e.gauge(d.writersWaiting, float64(st.WriterWaiting))
	if h := st.Hub; h != nil {
		e.gauge(d.hubConnected, boolValue(h.Connected))
		e.gauge(d.hubDown, h.DownFor.Seconds())
		e.gauge(d.hubLinked, boolValue(h.Linked))
		e.gauge(d.hubLag, float64(h.SourceLag))
		e.gauge(d.hubConflict, boolValue(h.Conflict != ""))
	}
}

// subscribers sends every known subscriber's numbers: those the database
// and the server know of each (running here or not), those of this
// process's run of it, and its dead letters. A subscriber in one read and
// not another (it was retired, or subscribed, between them) gets the
// metrics of the reads it is in.
func (e emitter) subscribers(r reading) {
	known := map[string]bool{}
	for _, si := range r.subs {
		known[si.Name] = true
		e.subscriber(si)
	}
	if r.depths == nil {
		return
	}
	names := make([]string, 0, len(known)+len(r.depths))
	for n := range known {
		names = append(names, n)
	}
	for n := range r.depths {
		if !known[n] { // retired: its letters stay in the stream
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		depth := r.depths[n] // zero: no letters
		e.gauge(e.d.subDeadLettersPending, float64(depth.Pending), n)
		e.gauge(e.d.subDeadLettersStored, float64(depth.Total), n)
	}
}

// subscriber sends one subscriber's numbers.
func (e emitter) subscriber(si boxcar.SubscriberInfo) {
	d, n := e.d, si.Name
	e.gauge(d.subRunning, boolValue(si.Running), n)
	e.gauge(d.subPaused, boolValue(si.Paused), n)
	e.gauge(d.subParkedKeys, float64(si.ParkedKeys), n)
	e.counter(d.subExpired, float64(si.Expired), n)
	if si.Err == "" { // else its consumer's numbers are unknown, not 0
		e.gauge(d.subPending, float64(si.Pending), n)
		e.gauge(d.subUnacked, float64(si.Unacked), n)
	}
	st := si.Stats
	if st == nil { // not running here: no run's numbers
		return
	}
	e.gauge(d.subInFlight, float64(st.InFlight), n)
	e.gauge(d.subStuckKeys, float64(st.StuckKeys), n)
	e.counter(d.subHandled, float64(st.Handled), n, resultOK)
	e.counter(d.subHandled, float64(st.Skipped), n, resultSkipped)
	e.counter(d.subHandled, float64(st.Failures), n, resultFailed)
	e.counter(d.subHandled, float64(st.DeadLettered), n, resultDeadLettered)
	e.counter(d.subRedelivered, float64(st.Redelivered), n)
	e.counter(d.subIgnored, float64(st.Ignored), n)
	e.counter(d.subRecreated, float64(st.Recreated), n)
	e.counter(d.subDeliveryGaps, float64(st.DeliveryGaps), n)
	e.counter(d.subFetchRestarts, float64(st.FetchRestarts), n)
	e.histogram(d.subHandlerDuration, st.HandlerDuration, n)
	e.histogram(d.subEndToEnd, st.EndToEnd, n)
}

// histogram sends h as a Prometheus histogram.
func (e emitter) histogram(d *prometheus.Desc, h boxcar.Histogram, labels ...string) {
	count, buckets, err := cumulative(h)
	if err == nil {
		var m prometheus.Metric
		if m, err = prometheus.NewConstHistogram(d, count, h.Sum, buckets, labels...); err == nil {
			e.ch <- m
			return
		}
	}
	e.fail(readSubscribers)
}

// cumulative turns Boxcar's buckets into Prometheus's. Boxcar counts each
// observation in one bucket: Counts[i] those in (Bounds[i-1], Bounds[i]],
// and a last count of those above the last bound. Prometheus's bucket of an
// upper bound counts every observation at or below it, so each bucket is
// the sum of Boxcar's counts up to it; the +Inf bucket (implicit, the
// count) adds the last one. The count returned is that sum, so that +Inf
// agrees with the buckets even if h.Count was read apart from them.
func cumulative(h boxcar.Histogram) (uint64, map[float64]uint64, error) {
	if len(h.Counts) == 0 && h.Count == 0 {
		h.Counts = make([]uint64, len(h.Bounds)+1) // no observation yet
	}
	if len(h.Counts) != len(h.Bounds)+1 {
		return 0, nil, fmt.Errorf("metrics: histogram with %d bounds and %d counts: want one count more than bounds", len(h.Bounds), len(h.Counts))
	}
	buckets := make(map[float64]uint64, len(h.Bounds))
	var sum uint64
	for i, b := range h.Bounds {
		if i > 0 && b <= h.Bounds[i-1] {
			return 0, nil, fmt.Errorf("metrics: histogram bounds not ascending at %d (%v after %v)", i, b, h.Bounds[i-1])
		}
		sum += h.Counts[i]
		buckets[b] = sum
	}
	return sum + h.Counts[len(h.Bounds)], buckets, nil
}

// healthStates are the states of boxcar.HealthState, best first: each
// component has one series of health_state per state.
var healthStates = []boxcar.HealthState{boxcar.HealthOK, boxcar.HealthLagging, boxcar.HealthStalled, boxcar.HealthStopped, boxcar.HealthLosing}

// health sends the state of the bus and of each component.
func (e emitter) health(r reading) {
	h := r.health
	if h == nil {
		return
	}
	e.state(componentBus, "", h.State)
	for _, c := range h.Components {
		e.state(c.Component, c.Name, c.State)
	}
}

// state sends one component's state as an enum: 1 for the current state,
// 0 for the others (and a series of its own for a state this package does
// not know, from a newer root package).
func (e emitter) state(component, name string, current boxcar.HealthState) {
	for _, s := range healthStates {
		e.gauge(e.d.healthState, boolValue(s == current), component, name, string(s))
	}
	if !slices.Contains(healthStates, current) {
		e.gauge(e.d.healthState, 1, component, name, string(current))
	}
}
