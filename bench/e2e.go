package main

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"log"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/nats-io/nats.go"

	"github.com/boxcar-bus/boxcar"
)

// How latency is measured. "Commit" is when the app's Bus.Tx returned;
// "handled" is when the subscriber's ack of the event reaches the server,
// which the dispatcher sends only after the handler's transaction (with the
// dedupe row) committed. The bench sees acks by subscribing to the consumers'
// ack subjects on the bus's connection: a copy of each ack comes back to it.
// The handler maps the message's stream sequence to the event's index (the
// first 8 bytes of the payload), so the ack can be matched with the commit.
// This is conservative: it includes the ack's trip, after the commit.

// seqMap maps a subscriber's stream sequences to event indexes, from the
// handler to the ack observer.
type seqMap struct {
	mu sync.Mutex
	m  map[uint64]int
}

func (s *seqMap) put(seq uint64, idx int) {
	s.mu.Lock()
	s.m[seq] = idx
	s.mu.Unlock()
}

func (s *seqMap) take(seq uint64) (int, bool) {
	s.mu.Lock()
	idx, ok := s.m[seq]
	delete(s.m, seq)
	s.mu.Unlock()
	return idx, ok
}

// durations is an HDR histogram of durations (microseconds, 1 µs to 10
// minutes, 3 significant digits) that goroutines record into at once.
type durations struct {
	mu   sync.Mutex
	hist *hdrhistogram.Histogram
}

func newDurations() *durations {
	return &durations{hist: hdrhistogram.New(1, 600_000_000, 3)}
}

func (h *durations) record(d time.Duration) {
	us := max(d.Microseconds(), 1)
	h.mu.Lock()
	h.hist.RecordValue(us)
	h.mu.Unlock()
}

func (h *durations) count() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.hist.TotalCount()
}

type quantiles struct{ p50, p99, p999, max time.Duration }

func (h *durations) quantiles() quantiles {
	h.mu.Lock()
	defer h.mu.Unlock()
	us := func(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
	return quantiles{us(h.hist.ValueAtQuantile(50)), us(h.hist.ValueAtQuantile(99)),
		us(h.hist.ValueAtQuantile(99.9)), us(h.hist.Max())}
}

// tracker follows one run's events, indexes base..base+n-1, through every
// subscriber.
type tracker struct {
	base, n, subs int
	commitNS      []atomic.Int64
	ackNS         [][]atomic.Int64 // [subscriber][event]
	pending       [][]atomic.Int32 // both stamps present when it reaches 2
	handledNS     []atomic.Int64   // subscriber 0's handler ran for the event (first time)
	handled       atomic.Int64
	lat           *durations // commit → acked
}

func newTracker(base, n, subs int) *tracker {
	t := &tracker{base: base, n: n, subs: subs,
		commitNS:  make([]atomic.Int64, n),
		handledNS: make([]atomic.Int64, n),
		lat:       newDurations()}
	for range subs {
		t.ackNS = append(t.ackNS, make([]atomic.Int64, n))
		t.pending = append(t.pending, make([]atomic.Int32, n))
	}
	return t
}

func (t *tracker) record(commit, ack int64) { t.lat.record(time.Duration(ack - commit)) }

func (t *tracker) committed(idx int, at time.Time) {
	i := idx - t.base
	ns := at.UnixNano()
	t.commitNS[i].Store(ns)
	for s := range t.subs {
		if t.pending[s][i].Add(1) == 2 {
			t.record(ns, t.ackNS[s][i].Load())
		}
	}
}

func (t *tracker) acked(sub, idx int, at time.Time) {
	i := idx - t.base
	if i < 0 || i >= t.n {
		return
	}
	ns := at.UnixNano()
	t.ackNS[sub][i].Store(ns)
	if t.pending[sub][i].Add(1) == 2 {
		t.record(t.commitNS[i].Load(), ns)
	}
	t.handled.Add(1)
}

// ran records that subscriber 0's handler ran for event idx, inside its
// transaction: the commit follows at the end of the handler's batch, the
// ack after the WAL fsync that covers the commit. Only the first run counts.
func (t *tracker) ran(idx int, at time.Time) {
	if i := idx - t.base; i >= 0 && i < t.n {
		t.handledNS[i].CompareAndSwap(0, at.UnixNano())
	}
}

// handledQuantiles are the quantiles of commit → handler run, subscriber 0.
func (t *tracker) handledQuantiles() quantiles {
	h := newDurations()
	for i := range t.n {
		if c, r := t.commitNS[i].Load(), t.handledNS[i].Load(); c > 0 && r > 0 {
			h.record(time.Duration(r - c))
		}
	}
	return h.quantiles()
}

// longestFreeze is the longest time in the run during which events waited
// (committed, not yet acked by subscriber 0) and none was acked: the gap
// between two acks in a row, counted from the later of the first ack and
// the oldest waiting event's commit.
func (t *tracker) longestFreeze() time.Duration { return t.freeze(t.ackNS[0]) }

// longestHandledFreeze is longestFreeze with the handler runs of subscriber
// 0 in place of its acks.
func (t *tracker) longestHandledFreeze() time.Duration { return t.freeze(t.handledNS) }

func (t *tracker) freeze(at []atomic.Int64) time.Duration {
	type stamp struct{ commit, ack int64 }
	st := make([]stamp, 0, t.n)
	for i := range t.n {
		if a := at[i].Load(); a > 0 {
			st = append(st, stamp{t.commitNS[i].Load(), a})
		}
	}
	slices.SortFunc(st, func(a, b stamp) int { return cmp.Compare(a.ack, b.ack) })
	// oldest[i]: the earliest commit of the events acked at st[i] or later.
	oldest := make([]int64, len(st)+1)
	oldest[len(st)] = math.MaxInt64
	for i := len(st) - 1; i >= 0; i-- {
		oldest[i] = min(oldest[i+1], st[i].commit)
	}
	var worst int64
	for i := 0; i+1 < len(st); i++ {
		from := max(st[i].ack, oldest[i+1])
		worst = max(worst, st[i+1].ack-from)
	}
	return time.Duration(worst)
}

// wait waits until every subscriber acked every event of the run.
func (t *tracker) wait(limit time.Duration) error {
	want := int64(t.n * t.subs)
	deadline := time.Now().Add(limit)
	for t.handled.Load() < want {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d events handled after %v", t.handled.Load(), want, limit)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// pipeline is a bus with o.subscribers transactional subscribers, and the
// ack observer while latency is measured.
type pipeline struct {
	*env
	w         *workload
	maps      []*seqMap
	cur       atomic.Pointer[tracker]
	sub       *nats.Subscription
	observing atomic.Bool // the handlers feed maps for the observer
}

func subscriberName(i int) string { return "bench" + strconv.Itoa(i) }

// handledTx is the bench's transactional handler: it upserts the
// subscriber's row for the event's key (its real write), then sleeps for
// delay, if any (the rest of a slower handler's work, done while holding
// SQLite's writer as that work would), then calls seen, if set.
func handledTx(name string, delay time.Duration, seen func(boxcar.Message)) boxcar.Handler {
	return boxcar.TxHandler(func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
		if _, err := tx.ExecContext(ctx, upsertHandled, name, m.Key, m.Seq); err != nil {
			return err
		}
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
		if seen != nil {
			seen(m)
		}
		return nil
	})
}

// openPipeline opens a bus with cfg (Dir and Logger filled in) and its
// subscribers.
func openPipeline(ctx context.Context, dir string, w *workload, cfg boxcar.Config) (*pipeline, error) {
	e, err := openEnv(ctx, dir, w.o, cfg)
	if err != nil {
		return nil, err
	}
	p := &pipeline{env: e, w: w}
	for i := range w.o.subscribers {
		name := subscriberName(i)
		sm := &seqMap{m: map[uint64]int{}}
		p.maps = append(p.maps, sm)
		h := handledTx(name, 0, func(m boxcar.Message) {
			if p.observing.Load() {
				idx := eventIndex(m.Data)
				if t := p.cur.Load(); t != nil && i == 0 {
					t.ran(idx, time.Now())
				}
				sm.put(m.StreamSeq, idx)
			}
		})
		if _, err := e.bus.Subscribe(ctx, name, h, boxcar.SubscribeOptions{Workers: w.o.workers, MaxBatchTime: w.o.maxBatch}); err != nil {
			e.close()
			return nil, err
		}
	}
	return p, nil
}

// observeAcks starts the ack observer, for the latency runs. The flat-out
// run goes without it: it has the server send the bench a copy of every ack,
// work that is the bench's, not the pipeline's.
func (p *pipeline) observeAcks() error {
	var err error
	p.sub, err = p.bus.Conn().Subscribe("$JS.ACK.>", p.observe)
	if err != nil {
		return err
	}
	if err := p.sub.SetPendingLimits(-1, -1); err != nil {
		return err
	}
	p.observing.Store(true)
	return p.bus.Conn().Flush()
}

// runFlatOut writes n events as fast as the writers go and returns when
// every subscriber acked all of them (an ack follows the handler's commit),
// seen by polling the bus's stats every 5 ms.
func (p *pipeline) runFlatOut(ctx context.Context, base, n int) (done time.Time, wres writeResult, err error) {
	return p.runPaced(ctx, base, n, 0)
}

// runPaced writes n events, one every interval (0: flat out), and returns
// when every subscriber acked all of them, as runFlatOut.
func (p *pipeline) runPaced(ctx context.Context, base, n int, interval time.Duration) (done time.Time, wres writeResult, err error) {
	wres, err = p.w.write(ctx, p.bus, writeSpec{n: n, publish: true, firstIdx: base, interval: interval})
	if err != nil {
		return done, wres, err
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		st, err := p.bus.Stats(ctx)
		if err != nil {
			return done, wres, err
		}
		caughtUp := st.OutboxLag == 0
		for _, s := range st.Subscribers {
			caughtUp = caughtUp && s.Pending == 0 && s.Unacked == 0
		}
		if caughtUp {
			return time.Now(), wres, nil
		}
		if time.Now().After(deadline) {
			return done, wres, fmt.Errorf("not handled after 5 minutes: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// observe receives a copy of every ack on the bus's connection. Ack subjects
// are $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer
// seq>.<time>.<pending>, or with a domain and account hash after ACK.
func (p *pipeline) observe(m *nats.Msg) {
	now := time.Now()
	if string(m.Data) != "+ACK" {
		return
	}
	tok := strings.Split(m.Subject, ".")
	var consumer, sseq string
	switch {
	case len(tok) == 9:
		consumer, sseq = tok[3], tok[5]
	case len(tok) >= 11:
		consumer, sseq = tok[5], tok[7]
	default:
		return
	}
	sub, err := strconv.Atoi(strings.TrimPrefix(consumer, "bench"))
	if err != nil || sub < 0 || sub >= len(p.maps) {
		return
	}
	seq, err := strconv.ParseUint(sseq, 10, 64)
	if err != nil {
		return
	}
	idx, ok := p.maps[sub].take(seq)
	if !ok {
		return // a redelivery absorbed by the dedupe table, or a repeated ack
	}
	if t := p.cur.Load(); t != nil {
		t.acked(sub, idx, now)
	}
}

// joinNums formats rates for a table cell: "36,000 / 38,100 / 35,900".
func joinNums(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = num(x)
	}
	return strings.Join(parts, " / ")
}

// runLoad writes n events at the given interval (0: flat out) and waits until
// every subscriber handled them.
func (p *pipeline) runLoad(ctx context.Context, base, n int, interval time.Duration) (*tracker, writeResult, error) {
	t := newTracker(base, n, p.w.o.subscribers)
	p.cur.Store(t)
	defer p.cur.Store(nil)
	res, err := p.w.write(ctx, p.bus, writeSpec{n: n, publish: true, interval: interval, firstIdx: base, onCommit: t.committed})
	if err != nil {
		return nil, res, err
	}
	if err := t.wait(5 * time.Minute); err != nil {
		return nil, res, err
	}
	return t, res, nil
}

// benchEndToEnd measures the sustained throughput from the app's commit to
// the subscribers' commits, then latency at fixed offered loads.
func benchEndToEnd(ctx context.Context, dir string, w *workload, rep *report) error {
	o := w.o
	p, err := openPipeline(ctx, dir, w, boxcar.Config{})
	if err != nil {
		return err
	}
	defer p.close()
	base := 0
	// Warm up.
	if _, _, err := p.runFlatOut(ctx, base, 5000); err != nil {
		return err
	}
	base += 5000

	// o.rounds flat-out runs, as the produce stage does; the median counts.
	var rates, produced []float64
	for round := range o.rounds {
		start := time.Now()
		done, wres, err := p.runFlatOut(ctx, base, o.events)
		if err != nil {
			return err
		}
		base += o.events
		rates = append(rates, float64(o.events)/done.Sub(start).Seconds())
		produced = append(produced, float64(o.events)/wres.elapsed.Seconds())
		log.Printf("end to end round %d: %8.0f events/s handled (writers committed %.0f tx/s)", round+1, rates[round], produced[round])
		time.Sleep(500 * time.Millisecond) // let the checkpointer and the server settle
	}
	maxRate := median(rates)
	detail := fmt.Sprintf("median of %d runs of %s events (%s events/s), %d keys, %d B, %d subscriber(s) × %d workers; writers committed %s tx/s (median); a run ends when the consumers have acked everything (polled every 5 ms)",
		o.rounds, num(float64(o.events)), joinNums(rates), o.keys, o.payload, o.subscribers, o.workers, num(median(produced)))
	r := row{stage: "end to end", what: "commit → handled, flat out", value: fmt.Sprintf("%s events/s", num(maxRate)), detail: detail}
	if rep.bareTx > 0 {
		ratio := maxRate / rep.bareTx
		r.baseline, r.target, r.met, r.hasTgt = fmt.Sprintf("%.2f× bare tx", ratio), "≥ 0.8×", ratio >= 0.8, true
	}
	rep.add(r)

	if err := p.observeAcks(); err != nil {
		return err
	}
	type level struct {
		label string
		rate  float64
	}
	var levels []level
	pcts, _ := o.loadPercents()
	for _, pct := range pcts {
		levels = append(levels, level{fmt.Sprintf("%d%% of max", pct), maxRate * float64(pct) / 100})
	}
	if o.fixedRate > 0 {
		levels = append(levels, level{fmt.Sprintf("%s/s fixed", num(float64(o.fixedRate))), float64(o.fixedRate)})
	}
	for _, l := range levels {
		time.Sleep(500 * time.Millisecond) // let the previous level's tail settle
		n := int(l.rate * o.levelDur.Seconds())
		interval := time.Duration(float64(time.Second) / l.rate)
		t, wres, err := p.runLoad(ctx, base, n, interval)
		if err != nil {
			return fmt.Errorf("%s: %w", l.label, err)
		}
		base += n
		achieved := float64(n) / wres.elapsed.Seconds()
		q, h := t.lat.quantiles(), t.handledQuantiles()
		freeze, ackFreeze := t.longestHandledFreeze(), t.longestFreeze()
		log.Printf("latency at %-14s offered %7.0f/s achieved %7.0f/s: handled p50 %v p99 %v p99.9 %v max %v longest freeze %v; acked p50 %v p99 %v p99.9 %v longest freeze %v (writers up to %v late)",
			l.label, l.rate, achieved, h.p50, h.p99, h.p999, h.max, freeze.Round(time.Microsecond),
			q.p50, q.p99, q.p999, ackFreeze.Round(time.Microsecond), wres.behind.Round(time.Millisecond))
		r := row{
			stage: "latency",
			what:  fmt.Sprintf("%s (%s/s offered)", l.label, num(l.rate)),
			value: fmt.Sprintf("p50 %s · p99 %s · p99.9 %s", ms(h.p50), ms(h.p99), ms(h.p999)),
			detail: fmt.Sprintf("commit → handled (the handler ran, in its transaction); achieved %s/s; max %s; longest freeze (events waiting, none handled) %s; "+
				"commit → acked (after the WAL fsync that covers the handler's commit): p50 %s · p99 %s · p99.9 %s, longest freeze %s; %s events; writers up to %s behind schedule",
				num(achieved), ms(h.max), ms(freeze), ms(q.p50), ms(q.p99), ms(q.p999), ms(ackFreeze), num(float64(n)), ms(wres.behind)),
		}
		q = h
		switch {
		case o.fixedRate > 0 && l.rate == float64(o.fixedRate) && o.fixedRate == 3000:
			r.target, r.hasTgt = "p99 ≤ 2 ms, p99.9 ≤ 5 ms, no freeze > 20 ms", true
			r.met = q.p99 <= 2*time.Millisecond && q.p999 <= 5*time.Millisecond && freeze <= 20*time.Millisecond
		case l.label == "50% of max":
			r.target, r.hasTgt = "p99 ≤ 5 ms, no freeze > 20 ms", true
			r.met = q.p99 <= 5*time.Millisecond && freeze <= 20*time.Millisecond
		}
		rep.add(r)
		rep.points = append(rep.points, point{label: l.label, offered: l.rate, achieved: achieved, q: q})
	}
	return nil
}
