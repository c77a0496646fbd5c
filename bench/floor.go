package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// benchFloor measures what the fixed parts of the design (the embedded
// nats-server with nats.go's jetstream package, one SQLite database, the
// disk) cost alone on this machine, in the same run as the bus, so that
// each of issue 13's targets can be read against the least that any
// pipeline built from them pays:
//
//   - JetStream alone: one async publish (with Nats-Msg-Id) per event into a
//     file-backed stream of an embedded server, one pull consumer that acks
//     each message, nothing else. CPU per event flat out and at -load-rates,
//     publish → received latency at each rate, and the CPU of the server and
//     its consumer idle over -idle. Any Boxcar event crosses this path once.
//   - SQLite alone: the app's transaction (its row and an outbox row) and a
//     transactional consumer of the outbox on the same database (a dedupe row
//     and the handler's upsert per event, in one transaction per batch), with
//     no broker between them: the bare app transaction rate and this
//     pipeline's flat-out rate, in turn on one database, and its CPU per
//     event at -load-rates.
//   - the disk: a 4 KiB append and fsync to a file in the run's directory,
//     at 1,500/s (about what the bus does at 3,000 events/s), for
//     -level-duration: the fsync's p50, p99, p99.9 and maximum.
func benchFloor(ctx context.Context, dir string, w *workload, rep *report) error {
	o := w.o
	rates, err := parseList("load-rates", o.loadRates, 1, 1_000_000, "events/s")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}

	fs, err := fsyncTail(filepath.Join(dir, "fsync"), 1500, o.levelDur)
	if err != nil {
		return fmt.Errorf("fsync: %w", err)
	}
	log.Printf("floor: fsync of a 4 KiB append at 1,500/s: p50 %v p99 %v p99.9 %v max %v", fs.p50, fs.p99, fs.p999, fs.max)
	rep.add(row{stage: "floor", what: "the disk: fsync of a 4 KiB append at 1,500/s", value: fmt.Sprintf("p50 %s · p99 %s · p99.9 %s", ms(fs.p50), ms(fs.p99), ms(fs.p999)),
		detail: fmt.Sprintf("max %s over %v, nothing else in the process writing; the bus fsyncs the WAL before each publish (~0.5 per event at 3,000/s), so its commit → handled tail holds this one", ms(fs.max), o.levelDur)})

	js, err := openJSAlone(ctx, filepath.Join(dir, "js"))
	if err != nil {
		return fmt.Errorf("jetstream alone: %w", err)
	}
	jsPts, err := measureLoad(o, rates, js.run(w))
	if err == nil && o.idle > 0 {
		c0 := cpuTime()
		time.Sleep(o.idle)
		idle := cpuTime() - c0
		log.Printf("floor: jetstream alone, idle for %v: %v CPU", o.idle, idle)
		defer rep.add(row{stage: "floor", what: fmt.Sprintf("JetStream alone: CPU of the embedded server and one pull consumer, idle over %v", o.idle),
			value: fmt.Sprintf("%.3f s", idle.Seconds()), detail: fmt.Sprintf("%.2f%% of one core; the least an idle bus on an embedded server costs", 100*idle.Seconds()/o.idle.Seconds())})
	}
	js.close()
	if err != nil {
		return fmt.Errorf("jetstream alone: %w", err)
	}
	rep.add(row{stage: "floor", what: "JetStream alone: CPU per event, flat out", value: fmt.Sprintf("%.0f µs", us(jsPts[0].cpu)),
		detail: fmt.Sprintf("async publish with Nats-Msg-Id into a file-backed stream, a pull consumer acking each message (Consume); %s events at %s/s", num(float64(jsPts[0].n)), num(jsPts[0].rate))})
	for i, rate := range rates {
		p := jsPts[i+1]
		rep.add(row{stage: "floor", what: fmt.Sprintf("JetStream alone: CPU per event at %s/s", num(float64(rate))), value: fmt.Sprintf("%.0f µs", us(p.cpu)),
			baseline: fmt.Sprintf("%.2f× its flat out", float64(p.cpu)/float64(jsPts[0].cpu)),
			detail:   fmt.Sprintf("publish → received p50 %s · p99 %s · p99.9 %s · max %s", ms(js.lat[i].p50), ms(js.lat[i].p99), ms(js.lat[i].p999), ms(js.lat[i].max))})
	}

	sq, err := openSQLiteAlone(ctx, filepath.Join(dir, "sqlite"), o.sync)
	if err != nil {
		return fmt.Errorf("sqlite alone: %w", err)
	}
	defer sq.close()
	var rates1, txCPU, hCPU []float64
	for r := range o.rounds {
		rate, cpu, err := sq.bare(ctx, w, o.events)
		if err != nil {
			return fmt.Errorf("sqlite alone: bare: %w", err)
		}
		h, err := sq.handled(ctx, w, o.events, r*o.events)
		if err != nil {
			return fmt.Errorf("sqlite alone: handled: %w", err)
		}
		log.Printf("floor: sqlite alone: bare app tx %.0f tx/s, %v CPU per tx; a subscriber's writes %v CPU per event", rate, cpu, h)
		rates1, txCPU, hCPU = append(rates1, rate), append(txCPU, us(cpu)), append(hCPU, us(h))
	}
	bareRate, bareCPU, subCPU, jsCPU := median(rates1), median(txCPU), median(hCPU), us(jsPts[0].cpu)
	// The end-to-end target's baseline is the produce stage's bare rate, on
	// a database with a bus beside it, whose checkpointer takes the
	// checkpoints off the app's commits; this stage's database checkpoints
	// in its commits and is slower.
	baseline, from := bareRate, "this stage's own bare rate"
	if rep.bareTx > 0 {
		baseline, from = rep.bareTx, "the produce stage's bare app tx"
	}
	budget := float64(runtime.NumCPU()) * 1e6 / (0.8 * baseline)
	rep.add(row{stage: "floor", what: "SQLite alone: the bare app tx, flat out", value: fmt.Sprintf("%.0f µs CPU per tx", bareCPU),
		detail: fmt.Sprintf("%s tx/s (median of %d), one row per transaction, %d writers taking turns; the database checkpoints in its commits (no bus beside it)", num(bareRate), o.rounds, o.writers)})
	rep.add(row{stage: "floor", what: "SQLite alone: a transactional subscriber's writes", value: fmt.Sprintf("%.0f µs CPU per event", subCPU),
		detail: "a dedupe row and the handler's upsert per event, 256 events a transaction, one goroutine"})
	rep.add(row{stage: "floor", what: "CPU budget of end to end at 0.8× the bare app tx", value: fmt.Sprintf("%.0f µs per event", budget),
		baseline: fmt.Sprintf("the parts alone: %.0f µs (JetStream %.0f + the app's tx %.0f + the subscriber's writes %.0f)", jsCPU+bareCPU+subCPU, jsCPU, bareCPU, subCPU),
		detail:   fmt.Sprintf("%d cores ÷ (0.8 × %s events/s, %s); each part as a plain app or consumer runs it (the bus's group commit can make the app's share smaller; nothing makes JetStream's), and flat out the CPU is what runs out", runtime.NumCPU(), num(baseline), from)})
	return nil
}

// fsyncTail appends 4 KiB to file and fsyncs it, rate times a second for
// d, and returns the fsyncs' quantiles.
func fsyncTail(file string, rate int, d time.Duration) (quantiles, error) {
	f, err := os.OpenFile(file, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return quantiles{}, err
	}
	defer os.Remove(file)
	defer f.Close()
	page := make([]byte, 4096)
	h := newDurations()
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := 0; time.Since(start) < d; i++ {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		if _, err := f.Write(page); err != nil {
			return quantiles{}, err
		}
		t0 := time.Now()
		if err := f.Sync(); err != nil {
			return quantiles{}, err
		}
		h.record(time.Since(t0))
	}
	return h.quantiles(), nil
}

// jsAlone is an embedded server with one stream, an async publisher and a
// pull consumer that acks what it gets.
type jsAlone struct {
	srv      *server.Server
	nc       *nats.Conn
	js       jetstream.JetStream
	cc       jetstream.ConsumeContext
	received atomic.Int64
	failed   atomic.Value // error

	// sent[idx-base] is when event idx was published, for the latency of
	// the paced run under way (nil flat out).
	mu   sync.Mutex
	sent []atomic.Int64
	base int
	hist *durations
	lat  []quantiles // one per paced run
}

func openJSAlone(ctx context.Context, dir string) (*jsAlone, error) {
	a := &jsAlone{}
	fail := func(err error) (*jsAlone, error) { a.close(); return nil, err }
	var err error
	a.srv, err = server.NewServer(&server.Options{JetStream: true, StoreDir: dir, DontListen: true, NoSigs: true, NoLog: true, JetStreamMaxMemory: 64 << 20})
	if err != nil {
		return nil, err
	}
	a.srv.Start()
	if !a.srv.ReadyForConnections(10 * time.Second) {
		return fail(errors.New("server not ready"))
	}
	if a.nc, err = nats.Connect("", nats.InProcessServer(a.srv)); err != nil {
		return fail(err)
	}
	if a.js, err = jetstream.New(a.nc, jetstream.WithPublishAsyncMaxPending(4096), jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
		a.failed.CompareAndSwap(nil, err)
	})); err != nil {
		return fail(err)
	}
	// As Boxcar's event stream: file storage, limits, a 1 s duplicate
	// window, direct gets allowed; subjects of the same shape.
	stream, err := a.js.CreateStream(ctx, jetstream.StreamConfig{Name: "FLOOR", Subjects: []string{"floor.>"}, Storage: jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy, MaxAge: 7 * 24 * time.Hour, Duplicates: time.Second, AllowDirect: true})
	if err != nil {
		return fail(err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "floor", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1000})
	if err != nil {
		return fail(err)
	}
	if a.cc, err = cons.Consume(a.handle); err != nil {
		return fail(err)
	}
	return a, nil
}

func (a *jsAlone) handle(m jetstream.Msg) {
	if err := m.Ack(); err != nil {
		a.failed.CompareAndSwap(nil, err)
	}
	a.mu.Lock()
	if a.sent != nil {
		if i := eventIndex(m.Data()) - a.base; i >= 0 && i < len(a.sent) {
			if at := a.sent[i].Load(); at != 0 {
				a.hist.record(time.Duration(time.Now().UnixNano() - at))
			}
		}
	}
	a.mu.Unlock()
	a.received.Add(1)
}

// run is measureLoad's run: n events at interval through the writers, each
// one async publish, then the wait until the consumer has them all.
func (a *jsAlone) run(w *workload) func(n int, interval time.Duration) (float64, error) {
	next := 0
	return func(n int, interval time.Duration) (float64, error) {
		ctx := context.Background()
		var sent []atomic.Int64
		if interval > 0 {
			sent = make([]atomic.Int64, n)
		}
		a.mu.Lock()
		a.sent, a.base, a.hist = sent, next, newDurations()
		a.mu.Unlock()
		spec := writeSpec{n: n, interval: interval, firstIdx: next, txFn: func(_ context.Context, idx int, key string, data []byte) error {
			m := nats.NewMsg("floor.app.0." + eventType + "." + key)
			m.Header.Set(jetstream.MsgIDHeader, "ev-"+strconv.Itoa(idx))
			m.Data = data
			if sent != nil {
				sent[idx-next].Store(time.Now().UnixNano())
			}
			_, err := a.js.PublishMsgAsync(m, jetstream.WithStallWait(5*time.Second))
			return err
		}}
		if _, err := w.write(ctx, nil, spec); err != nil {
			return 0, err
		}
		next += n
		deadline := time.Now().Add(5 * time.Minute)
		for a.received.Load() < int64(next) {
			if err, _ := a.failed.Load().(error); err != nil {
				return 0, err
			}
			if time.Now().After(deadline) {
				return 0, fmt.Errorf("%d of %d messages received after 5m", a.received.Load(), next)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if interval > 0 {
			a.mu.Lock()
			a.lat = append(a.lat, a.hist.quantiles())
			a.sent = nil
			a.mu.Unlock()
		}
		return 0, nil
	}
}

func (a *jsAlone) close() {
	if a.cc != nil {
		a.cc.Stop()
	}
	if a.nc != nil {
		a.nc.Close()
	}
	if a.srv != nil {
		a.srv.Shutdown()
		a.srv.WaitForShutdown()
	}
}

// sqliteAlone is one database from sqlite.Open, as the bus's, for the
// SQLite work of one event measured alone.
type sqliteAlone struct {
	db *sql.DB
}

func openSQLiteAlone(ctx context.Context, dir, sync string) (*sqliteAlone, error) {
	db, err := openDB(dir, sync)
	if err != nil {
		return nil, err
	}
	if _, err := db.ExecContext(ctx, naiveSchema); err != nil {
		db.Close()
		return nil, err
	}
	return &sqliteAlone{db: db}, nil
}

// bare runs n of the app's transactions alone (its row, one SQLite
// transaction each), flat out on the writers taking turns, as the produce
// stage's bare rate: tx/s and CPU per transaction.
func (s *sqliteAlone) bare(ctx context.Context, w *workload, n int) (rate float64, cpu time.Duration, err error) {
	var mu sync.Mutex
	c0 := cpuTime()
	res, err := w.write(ctx, nil, writeSpec{n: n, txFn: func(ctx context.Context, _ int, key string, data []byte) error {
		mu.Lock()
		defer mu.Unlock()
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, insertOrder, key, data); err != nil {
			return err
		}
		return tx.Commit()
	}})
	if err != nil {
		return 0, 0, err
	}
	return float64(n) / res.elapsed.Seconds(), (cpuTime() - c0) / time.Duration(n), nil
}

// handled runs a transactional subscriber's SQLite work for n events
// alone, as the bus's writer batches it (up to 256 events a transaction):
// a dedupe row and the handler's upsert each. It returns the CPU per event.
func (s *sqliteAlone) handled(ctx context.Context, w *workload, n, first int) (time.Duration, error) {
	const batch = 256
	c0 := cpuTime()
	for i := 0; i < n; i += batch {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return 0, err
		}
		for j := i; j < min(i+batch, n); j++ {
			idx := first + j
			if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO naive_inbox(id) VALUES (?)`, "ev-"+strconv.Itoa(idx)); err != nil {
				tx.Rollback()
				return 0, err
			}
			if _, err := tx.ExecContext(ctx, upsertHandled, "floor", w.keys[idx%len(w.keys)], idx); err != nil {
				tx.Rollback()
				return 0, err
			}
		}
		if err := tx.Commit(); err != nil {
			return 0, err
		}
	}
	return (cpuTime() - c0) / time.Duration(n), nil
}

func (s *sqliteAlone) close() { s.db.Close() }
