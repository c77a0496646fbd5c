package main

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// The stated bound of the scale stage's memory target: from before the run
// (after a GC) to its peak, the live Go heap may grow by heapGrowthBound and
// the resident set by rssGrowthBound, whatever the number of keys or the
// size of the backlog. What Boxcar holds by design is bounded and small
// beside them: per subscriber at most MaxInFlight (1,024) fetched messages
// of a few hundred bytes, the relay two batches of 1,000 rows, SQLite's
// page caches of a few MiB, the embedded server's block caches. The RSS
// bound is twice the heap's because with GOGC=100 the heap grows to about
// twice the live heap before a collection.
//
// The embedded server does not keep within it (bench/RESULTS.md, "Scale of
// state"): it indexes every subject it holds, and the key is a subject
// token, so it keeps ~86 B per distinct key for the stream's retention,
// plus the subject state of every block written in the last 2 minutes.
const (
	heapGrowthBound = 128 << 20
	rssGrowthBound  = 256 << 20
)

// benchScale measures the scale of state: (a) o.scaleKeys distinct keys, each
// event a new one, end to end through one TxHandler subscriber; (b) a
// backlog of o.scaleBacklog events written into the outbox while no bus is
// open, drained by the relay and then by one TxHandler subscriber, beside
// the same drains of an outbox of o.scaleSmall rows. Memory is sampled
// every second.
func benchScale(ctx context.Context, dir string, w *workload, rep *report) error {
	if err := scaleKeys(ctx, filepath.Join(dir, "keys"), w, rep); err != nil {
		return fmt.Errorf("distinct keys: %w", err)
	}
	settle(filepath.Join(dir, "keys"), w.o.keep)
	small, err := drainBacklog(ctx, filepath.Join(dir, "small"), w, w.o.scaleSmall)
	if err != nil {
		return fmt.Errorf("small outbox: %w", err)
	}
	settle(filepath.Join(dir, "small"), w.o.keep)
	big, err := drainBacklog(ctx, filepath.Join(dir, "backlog"), w, w.o.scaleBacklog)
	if err != nil {
		return fmt.Errorf("backlog: %w", err)
	}
	reportBacklog(rep, small, big)
	return nil
}

// memSample is the process's memory at one moment.
type memSample struct {
	heapInuse uint64 // runtime.MemStats.HeapInuse
	heapLive  uint64 // /gc/heap/live:bytes: the heap the last GC found live
	rss, hwm  uint64 // VmRSS and VmHWM of /proc/self/status (0 where there is none)
}

// readMemory samples the process's memory without collecting garbage.
func readMemory() memSample {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(live)
	s := memSample{heapInuse: ms.HeapInuse}
	if live[0].Value.Kind() == metrics.KindUint64 {
		s.heapLive = live[0].Value.Uint64()
	}
	s.rss, s.hwm = procStatus("VmRSS:"), procStatus("VmHWM:")
	return s
}

// settledMemory collects the garbage, then samples: heapInuse and heapLive
// are then what is live.
func settledMemory() memSample {
	runtime.GC()
	return readMemory()
}

// procStatus reads a "kB" field of /proc/self/status, in bytes.
func procStatus(field string) uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// resetPeakRSS sets VmHWM back to VmRSS (Linux's clear_refs 5), so that the
// next VmHWM is the peak of what follows. Where it cannot, VmHWM stays the
// process's peak, and the sampled VmRSS is the better figure.
func resetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// memWatch samples memory every second until finish; its peak is the
// largest of each figure.
type memWatch struct {
	stop chan struct{}
	done chan struct{}
	peak memSample
	// live is the live heap every 30 s from the start (the goroutine's
	// until done is closed): whether memory levels off or keeps growing.
	live []uint64
}

// watchMemory starts the sampler; the caller owns it and must call finish.
func watchMemory() *memWatch {
	m := &memWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for tick := 0; ; tick++ {
			now := readMemory()
			m.peak = m.peak.max(now)
			if tick%30 == 0 {
				m.live = append(m.live, now.heapLive)
			}
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

// finish stops the sampler, takes a last sample and returns the peak.
func (m *memWatch) finish() memSample {
	close(m.stop)
	<-m.done
	return m.peak.max(readMemory())
}

func (s memSample) max(o memSample) memSample {
	return memSample{max(s.heapInuse, o.heapInuse), max(s.heapLive, o.heapLive), max(s.rss, o.rss), max(s.hwm, o.hwm)}
}

// liveEvery30s lists the live heap every 30 s of the watch, in MiB.
func (m *memWatch) liveEvery30s() string {
	var b strings.Builder
	for i, v := range m.live {
		if i > 0 {
			b.WriteString(" · ")
		}
		b.WriteString(mib(v))
	}
	return b.String()
}

// peakRSS is the peak resident set: VmHWM (reset at the start) or the
// largest sampled VmRSS, whichever is larger.
func (s memSample) peakRSS() uint64 { return max(s.rss, s.hwm) }

func mib(b uint64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// growth is b - a in MiB, signed.
func growth(a, b uint64) string {
	return fmt.Sprintf("%+.0f MiB", (float64(b)-float64(a))/(1<<20))
}

// memVerdict says whether the peak stayed within the stated bound of before.
func memVerdict(before, peak memSample) bool {
	return peak.heapLive <= before.heapLive+heapGrowthBound && peak.peakRSS() <= before.rss+rssGrowthBound
}

// memTarget is the target column of a memory row.
func memTarget() string {
	return fmt.Sprintf("peak live heap ≤ before %s, peak RSS ≤ before %s", growth(0, heapGrowthBound), growth(0, rssGrowthBound))
}

// memDetail describes before, peak and after.
func memDetail(before, peak, after memSample) string {
	return fmt.Sprintf("heap in use after GC %s before, %s after; live heap %s before, peak %s (%s); HeapInuse peak %s; RSS %s before, peak %s (%s), %s after",
		mib(before.heapInuse), mib(after.heapInuse), mib(before.heapLive), mib(peak.heapLive), growth(before.heapLive, peak.heapLive),
		mib(peak.heapInuse), mib(before.rss), mib(peak.peakRSS()), growth(before.rss, peak.peakRSS()), mib(after.rss))
}

// scaleKeys writes o.scaleKeys events flat out, each of a key of its own,
// through a bus with one TxHandler subscriber (which upserts one row per
// key), after a warm-up of 5,000 (new keys as well), and reports the rate
// from the first commit to the last ack and the memory.
func scaleKeys(ctx context.Context, dir string, w *workload, rep *report) error {
	o := w.o
	e, err := openEnv(ctx, dir, o, boxcar.Config{DuplicateWindow: o.scaleDupWindow})
	if err != nil {
		return err
	}
	defer e.close()
	var calls atomic.Int64
	h := handledTx("scale", 0, func(boxcar.Message) { calls.Add(1) })
	if _, err := e.bus.Subscribe(ctx, "scale", h, boxcar.SubscribeOptions{Workers: o.workers}); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	run := func(base, n int) error {
		want := calls.Load() + int64(n)
		if err := writeDistinct(ctx, w, e.bus, base, n); err != nil {
			return err
		}
		deadline := time.Now().Add(30 * time.Minute)
		for calls.Load() < want && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		return waitCaughtUp(ctx, e.bus, deadline)
	}
	const warm = 5000
	if err := run(0, warm); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	time.Sleep(500 * time.Millisecond)
	before := settledMemory()
	resetPeakRSS()
	mw := watchMemory()
	c0, t0 := cpuTime(), time.Now()
	err = run(warm, o.scaleKeys)
	took, cpu := time.Since(t0), cpuTime()-c0
	peak := mw.finish()
	if err != nil {
		return err
	}
	after := settledMemory()
	writeHeapProfile(o, "keys")
	rate := float64(o.scaleKeys) / took.Seconds()
	log.Printf("scale: %s distinct keys: %.0f events/s; live heap %s → peak %s; RSS %s → peak %s; after %s / %s",
		num(float64(o.scaleKeys)), rate, mib(before.heapLive), mib(peak.heapLive), mib(before.rss), mib(peak.peakRSS()), mib(after.heapInuse), mib(after.rss))
	rep.add(row{stage: "scale", what: fmt.Sprintf("%s distinct keys, end to end, 1 TxHandler", num(float64(o.scaleKeys))),
		value: fmt.Sprintf("%s events/s", num(rate)), target: memTarget(), met: memVerdict(before, peak), hasTgt: true,
		detail: fmt.Sprintf("each event a new key, flat out, %.0f µs CPU per event; %s; files %s", us(cpu/time.Duration(o.scaleKeys)),
			memDetail(before, peak, after), mib(dirSize(dir)))})
	if o.scaleLinger > 0 {
		lingered(e, o, before, after, rep)
	}
	return nil
}

// lingered idles the bus for o.scaleLinger (past the stream's duplicate
// window, whose message IDs the server holds in memory), then reads the
// memory again: what stays grows with the keys the stream holds.
func lingered(e *env, o options, before, after memSample, rep *report) {
	time.Sleep(o.scaleLinger)
	late := settledMemory()
	writeHeapProfile(o, "keys-lingered")
	perKey := (float64(late.heapLive) - float64(before.heapLive)) / float64(o.scaleKeys)
	log.Printf("scale: %v after the distinct keys: live heap %s, RSS %s (%.0f B of live heap per key)", o.scaleLinger, mib(late.heapLive), mib(late.rss), perKey)
	rep.add(row{stage: "scale", what: fmt.Sprintf("memory kept per key, %v after the %s keys", o.scaleLinger, num(float64(o.scaleKeys))),
		value: fmt.Sprintf("%.0f B of live heap per key", perKey),
		detail: fmt.Sprintf("the bus idle, past the duplicate window; live heap %s before the run, %s right after, %s now; RSS %s before, %s right after, %s now; files %s",
			mib(before.heapLive), mib(after.heapLive), mib(late.heapLive), mib(before.rss), mib(after.rss), mib(late.rss), mib(dirSize(e.dir)))})
}

// writeHeapProfile writes the in-use heap (after a GC) to
// o.scaleHeapProf + name + ".pprof", if -scale-heapprofile is set.
func writeHeapProfile(o options, name string) {
	if o.scaleHeapProf == "" {
		return
	}
	runtime.GC()
	f, err := os.Create(o.scaleHeapProf + name + ".pprof")
	if err != nil {
		log.Printf("scale: heap profile: %v", err)
		return
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		log.Printf("scale: heap profile: %v", err)
	}
}

// writeDistinct runs n Bus.Tx calls flat out on o.writers goroutines, each
// inserting the app row and publishing one event of key "k<idx>", idx from
// base: every event a key never seen before. Keys are made as they are
// needed, so the bench holds none of them.
func writeDistinct(ctx context.Context, w *workload, bus *boxcar.Bus, base, n int) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, w.o.writers)
	for g := range w.o.writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), uint64(base)))
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				idx := base + i
				key, data := "k"+strconv.Itoa(idx), w.payload(idx, r)
				err := bus.Tx(ctx, func(tx *sql.Tx) error {
					if _, err := tx.ExecContext(ctx, insertOrder, key, data); err != nil {
						return err
					}
					return bus.PublishTx(ctx, tx, boxcar.Event{Type: eventType, Key: key, Data: data})
				})
				if err != nil {
					errs <- fmt.Errorf("event %d: %w", idx, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// dirSize is the size of the files under dir.
func dirSize(dir string) uint64 {
	var n uint64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += uint64(fi.Size())
			}
		}
		return nil
	})
	return n
}

// progress is how far a drain was at a moment since its start.
type progress struct {
	at   time.Duration
	done int64
}

// drainTrace is a drain of n events, sampled.
type drainTrace struct {
	n       int64
	samples []progress // the first is {0, 0}
}

// rate is the drain's events/s over the slice from the fraction lo of n to
// hi, measured from the last sample at or before lo to the first at or past
// hi: the span covers the slice even where progress moves in steps (the
// relay's cursor moves a batch of 1,000 at a time). From 0, the span starts
// at the last sample before the first progress: the time to the first
// batch (see startup) is not in the rates.
func (d *drainTrace) rate(lo, hi float64) float64 {
	a, b := d.samples[0], d.samples[len(d.samples)-1]
	for _, p := range d.samples {
		if float64(p.done) <= lo*float64(d.n) {
			a = p
		}
	}
	for i := len(d.samples) - 1; i >= 0 && float64(d.samples[i].done) >= hi*float64(d.n); i-- {
		b = d.samples[i]
	}
	if b.at <= a.at {
		return 0
	}
	return float64(b.done-a.done) / (b.at - a.at).Seconds()
}

func (d *drainTrace) took() time.Duration { return d.samples[len(d.samples)-1].at }

// startup is how long the drain took to make its first progress.
func (d *drainTrace) startup() time.Duration {
	for _, p := range d.samples {
		if p.done > 0 {
			return p.at
		}
	}
	return d.took()
}

// trace polls done every 2 ms until it reaches n, fails or limit has passed
// since start, the moment the drain began.
func trace(start time.Time, n int64, limit time.Duration, done func() (int64, error)) (*drainTrace, error) {
	d := &drainTrace{n: n, samples: []progress{{}}}
	for {
		v, err := done()
		if err != nil {
			return nil, err
		}
		at := time.Since(start)
		d.samples = append(d.samples, progress{at, v})
		if v >= n {
			return d, nil
		}
		if at > limit {
			return nil, fmt.Errorf("%d of %d after %v", v, n, limit)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// backlogResult is one outbox's fill and drains.
type backlogResult struct {
	n           int
	fill, open  time.Duration
	relay, sub  *drainTrace
	before      memSample // after the fill, before Open (after a GC)
	relayPeak   memSample
	relayLive   string // the live heap every 30 s of the relay drain
	subPeak     memSample
	subLive     string    // and of the subscriber drain
	after       memSample // after the subscriber's drain (after a GC)
	files       uint64    // bytes of the database and the server's store
	hwmResetErr bool
}

// drainBacklog fills a fresh outbox in dir with n rows while no bus is
// open, then opens a bus on it and traces the relay's drain (from Open's
// return to the cursor at the last row, as the relay stage times it), then
// subscribes one TxHandler and traces its drain of the stream (from
// Subscribe to the last handler call; the run then waits until the
// consumer shows nothing pending or unacked). Memory is sampled every
// second from before Open.
func drainBacklog(ctx context.Context, dir string, w *workload, n int) (*backlogResult, error) {
	o := w.o
	res := &backlogResult{n: n}
	db, err := openDB(dir, o.sync)
	if err != nil {
		return nil, err
	}
	err = sqlite.Migrate(ctx, db)
	t0 := time.Now()
	if err == nil {
		err = fillOutbox(ctx, db, w, n)
	}
	res.fill = time.Since(t0)
	db.Close()
	if err != nil {
		return nil, fmt.Errorf("fill: %w", err)
	}
	log.Printf("scale: filled an outbox with %s events in %v (%.0f rows/s)", num(float64(n)), res.fill.Round(time.Millisecond), float64(n)/res.fill.Seconds())
	syncDisks() // the fill's dirty pages are not the drain's to write
	res.before = settledMemory()
	res.hwmResetErr = !resetPeakRSS()
	mw := watchMemory()
	t0 = time.Now()
	e, err := openEnv(ctx, dir, o, boxcar.Config{DuplicateWindow: o.scaleDupWindow})
	if err != nil {
		mw.finish()
		return nil, err
	}
	defer e.close()
	res.open = time.Since(t0)
	res.relay, err = trace(time.Now(), int64(n), 30*time.Minute, func() (int64, error) {
		st, err := e.bus.Stats(ctx)
		if err == nil && st.RelayFailures > 0 {
			err = fmt.Errorf("relay failed %d times", st.RelayFailures)
		}
		return st.RelayCursor, err
	})
	res.relayPeak = mw.finish()
	res.relayLive = mw.liveEvery30s()
	writeHeapProfile(o, fmt.Sprintf("relay-%d", n))
	if err != nil {
		return nil, fmt.Errorf("relay drain: %w", err)
	}
	log.Printf("scale: relay drained %s events in %v: %.0f events/s (first 10%% %.0f/s, last 10%% %.0f/s); live heap every 30 s: %s",
		num(float64(n)), res.relay.took().Round(time.Millisecond), res.relay.rate(0, 1), res.relay.rate(0, 0.1), res.relay.rate(0.9, 1), res.relayLive)
	if err := subscriberDrain(ctx, e, w, res); err != nil {
		return nil, fmt.Errorf("subscriber drain: %w", err)
	}
	res.after = settledMemory()
	writeHeapProfile(o, fmt.Sprintf("subscriber-%d", n))
	res.files = dirSize(dir)
	return res, nil
}

// subscriberDrain subscribes one TxHandler to e's stream, which holds the
// relayed backlog, and traces its drain into res.
func subscriberDrain(ctx context.Context, e *env, w *workload, res *backlogResult) error {
	mw := watchMemory()
	var calls atomic.Int64
	h := handledTx("drain", 0, func(boxcar.Message) { calls.Add(1) })
	start := time.Now()
	_, err := e.bus.Subscribe(ctx, "drain", h, boxcar.SubscribeOptions{Workers: w.o.workers})
	if err == nil {
		res.sub, err = trace(start, int64(res.n), time.Hour, func() (int64, error) { return calls.Load(), nil })
	}
	if err == nil {
		err = waitCaughtUp(ctx, e.bus, time.Now().Add(5*time.Minute))
	}
	res.subPeak = mw.finish()
	res.subLive = mw.liveEvery30s()
	if err != nil {
		return err
	}
	log.Printf("scale: subscriber drained %s events in %v: %.0f events/s (first 10%% %.0f/s, last 10%% %.0f/s); live heap every 30 s: %s",
		num(float64(res.n)), res.sub.took().Round(time.Millisecond), res.sub.rate(0, 1), res.sub.rate(0, 0.1), res.sub.rate(0.9, 1), res.subLive)
	return nil
}

// reportBacklog adds the backlog rows: each drain of the big outbox beside
// the small one's, and the memory.
func reportBacklog(rep *report, small, big *backlogResult) {
	sn, bn := num(float64(small.n)), num(float64(big.n))
	rep.add(row{stage: "scale", what: fmt.Sprintf("relay drain, %s-row outbox", sn), value: fmt.Sprintf("%s events/s", num(small.relay.rate(0, 1))),
		detail: fmt.Sprintf("outbox filled while no bus was open; from Open's return (Open took %v) to the cursor at the last row, less the %v to the first batch; first 10%% %s/s, last 10%% %s/s",
			small.open.Round(time.Millisecond), small.relay.startup().Round(time.Millisecond), num(small.relay.rate(0, 0.1)), num(small.relay.rate(0.9, 1)))})
	ref := small.relay.rate(0, 1)
	last, all := big.relay.rate(0.9, 1), big.relay.rate(0, 1)
	rep.add(row{stage: "scale", what: fmt.Sprintf("relay drain, %s-row outbox, last 10%%", bn), value: fmt.Sprintf("%s events/s", num(last)),
		baseline: fmt.Sprintf("%.2f× the %s-row outbox's (whole drain %.2f×); %.2f× its own first 10%%", last/ref, sn, all/ref, last/big.relay.rate(0, 0.1)),
		target:   "≥ 0.8× the small outbox's", met: last >= 0.8*ref && all >= 0.8*ref, hasTgt: true,
		detail: fmt.Sprintf("first 10%% %s/s, whole drain %s/s in %v (first batch after %v); Open took %v; fill %v (%s rows/s); live heap peak %s (%s), RSS peak %s (%s)",
			num(big.relay.rate(0, 0.1)), num(all), big.relay.took().Round(time.Millisecond), big.relay.startup().Round(time.Millisecond), big.open.Round(time.Millisecond),
			big.fill.Round(time.Millisecond), num(float64(big.n)/big.fill.Seconds()),
			mib(big.relayPeak.heapLive), growth(big.before.heapLive, big.relayPeak.heapLive), mib(big.relayPeak.peakRSS()), growth(big.before.rss, big.relayPeak.peakRSS()))})
	sref := small.sub.rate(0, 1)
	rep.add(row{stage: "scale", what: fmt.Sprintf("subscriber drain, %s-event backlog", sn), value: fmt.Sprintf("%s events/s", num(sref)),
		detail: fmt.Sprintf("1 TxHandler, from Subscribe to the last handler call, less the %v to the first; first 10%% %s/s, last 10%% %s/s", small.sub.startup().Round(time.Millisecond), num(small.sub.rate(0, 0.1)), num(small.sub.rate(0.9, 1)))})
	slast, sall := big.sub.rate(0.9, 1), big.sub.rate(0, 1)
	rep.add(row{stage: "scale", what: fmt.Sprintf("subscriber drain, %s-event backlog, last 10%%", bn), value: fmt.Sprintf("%s events/s", num(slast)),
		baseline: fmt.Sprintf("%.2f× the %s-event backlog's (whole drain %.2f×); %.2f× its own first 10%%", slast/sref, sn, sall/sref, slast/big.sub.rate(0, 0.1)),
		detail: fmt.Sprintf("first 10%% %s/s, whole drain %s/s in %v (first event after %v); live heap peak %s (%s), RSS peak %s (%s)",
			num(big.sub.rate(0, 0.1)), num(sall), big.sub.took().Round(time.Second), big.sub.startup().Round(time.Millisecond),
			mib(big.subPeak.heapLive), growth(big.before.heapLive, big.subPeak.heapLive), mib(big.subPeak.peakRSS()), growth(big.before.rss, big.subPeak.peakRSS()))})
	peak := big.relayPeak.max(big.subPeak)
	note := ""
	if big.hwmResetErr {
		note = "; VmHWM could not be reset: RSS peak is the process's"
	}
	rep.add(row{stage: "scale", what: fmt.Sprintf("memory over the %s-event backlog's drains", bn),
		value:  fmt.Sprintf("live heap %s, RSS %s", growth(big.before.heapLive, peak.heapLive), growth(big.before.rss, peak.peakRSS())),
		target: memTarget(), met: memVerdict(big.before, peak), hasTgt: true,
		detail: fmt.Sprintf("sampled every second from Open through both drains; %s; live heap every 30 s, relay drain: %s; subscriber drain: %s; files %s (the %s-row run: %s)%s",
			memDetail(big.before, peak, big.after), big.relayLive, big.subLive, mib(big.files), sn, mib(small.files), note)})
}
