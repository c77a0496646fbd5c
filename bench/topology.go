package main

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/internal/hub"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// The topology stage (-topology leaf|cluster): throughput and commit →
// handled latency across a hub, beside the single binary, and how
// throughput grows from 1 to -topo-producers producer instances. Everything
// runs on this machine: a real 3-node NATS cluster on 127.0.0.1
// (internal/hub), N producer buses and one consumer bus, each with its own
// SQLite database. With "leaf" each bus is a leaf of the hub with its own
// stream, the hub's aggregate sources them, and the consumer reads the
// aggregate; with "cluster" every bus connects to the cluster (NATSURL)
// and shares one R3 stream. The single-binary row is one embedded bus with
// its producers and its subscriber in one process.
//
// Each row runs flat out first (throughput: committed/s at the producers,
// handled/s from the start to the last event handled), then at -topo-rate
// events/s over all producers (latency). Latency is from the start of the
// producer's Bus.Tx (the payload carries that instant) to the consumer's
// TxHandler call for the event: it includes the commit, the relay, the hub
// and the fetch, not the consumer's own commit.

// topoRun is one row: a topology with n producers.
type topoRun struct {
	name      string
	producers int
	committed int64
	commitDur time.Duration // producers' writing time
	handled   int64
	e2eDur    time.Duration // from the start to the last event handled
	lat       *durations    // flat out
	paced     *durations    // at -topo-rate
}

func runTopology(o options, tmp string) error {
	ctx := context.Background()
	fmt.Printf("bench -topology %s: %v of writing per row, %d writers per producer, %d keys, %d-byte payloads; a 3-node hub on 127.0.0.1, every process on this machine (%d cores)\n",
		o.topology, o.topoDur, o.writers, o.keys, o.payload, numCPU())
	var rows []topoRun
	single, err := topoSingle(ctx, o, filepath.Join(tmp, "single"))
	if err != nil {
		return fmt.Errorf("single binary: %w", err)
	}
	rows = append(rows, single)
	for n := 1; n <= o.topoProducers; n++ {
		r, err := topoHubRun(ctx, o, filepath.Join(tmp, fmt.Sprintf("%s-%d", o.topology, n)), n)
		if err != nil {
			return fmt.Errorf("%s with %d producers: %w", o.topology, n, err)
		}
		rows = append(rows, r)
	}
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "topology\tproducers\tcommitted/s (flat out)\thandled/s (end to end)\tvs single\tp50 at %d/s\tp99 at %d/s\tmax at %d/s\n", o.topoRate, o.topoRate, o.topoRate)
	base := float64(single.handled) / single.e2eDur.Seconds()
	for _, r := range rows {
		q := r.paced.quantiles()
		rate := float64(r.handled) / r.e2eDur.Seconds()
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.2f×\t%v\t%v\t%v\n", r.name, r.producers, float64(r.committed)/r.commitDur.Seconds(), rate,
			rate/base, q.p50, q.p99, q.max)
	}
	tw.Flush()
	fmt.Println("On one machine the hub's three nodes, every producer and the consumer share the cores: an R3 stream writes each event three times, the hub sources or replicates over loopback TCP, and the one consumer's SQLite writer applies every event. More producers add writers but not cores; run the same command on a bigger machine (or with the hub elsewhere) to see the growth the topology allows.")
	return nil
}

func numCPU() int { return runtime.NumCPU() }

// topoBus is one bus of a run, with its database.
type topoBus struct {
	db  *sql.DB
	bus *boxcar.Bus
}

func openTopoBus(ctx context.Context, o options, dir string, cfg boxcar.Config) (*topoBus, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	db, err := sqlite.Open(filepath.Join(dir, "app.db"))
	if err != nil {
		return nil, err
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS topo_app (id INTEGER PRIMARY KEY, k TEXT, v BLOB)`); err != nil {
		return nil, err
	}
	cfg.Dir = filepath.Join(dir, "nats")
	cfg.Logger = o.logger()
	bus, err := boxcar.Open(ctx, db, cfg)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &topoBus{db: db, bus: bus}, nil
}

func (b *topoBus) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b.bus.Close(ctx)
	b.db.Close()
}

// topoSubscribe subscribes the consumer's TxHandler, which counts each
// event and records its latency into rec's histogram (swapped between
// rounds).
func topoSubscribe(ctx context.Context, b *topoBus, rec *atomic.Pointer[durations], handled *atomic.Int64) error {
	h := boxcar.TxHandler(func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
		if len(m.Data) >= 8 {
			rec.Load().record(time.Since(time.Unix(0, int64(binary.LittleEndian.Uint64(m.Data)))))
		}
		handled.Add(1)
		return nil
	})
	var err error
	for range 5 { // a cluster that has just started can be slow to make the consumer
		if _, err = b.bus.Subscribe(ctx, "sink", h, boxcar.SubscribeOptions{Workers: 8}); err == nil || !strings.Contains(err.Error(), "deadline") {
			return err
		}
	}
	return err
}

// produce runs o.writers writers on each producer for o.topoDur and
// returns how many events committed.
func produce(ctx context.Context, o options, producers []*topoBus, rate int) int64 {
	var committed atomic.Int64
	start := time.Now()
	deadline := start.Add(o.topoDur)
	var interval time.Duration // per writer; 0: flat out
	if rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(len(producers)*o.writers) / float64(rate))
	}
	var wg sync.WaitGroup
	for pi, p := range producers {
		for w := range o.writers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(pi), uint64(w)))
				payload := make([]byte, o.payload)
				for i := 0; time.Now().Before(deadline); i++ {
					if interval > 0 {
						time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
					}
					key := fmt.Sprintf("p%d-customer-%d", pi, rng.IntN(o.keys))
					binary.LittleEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
					err := p.bus.Tx(ctx, func(tx *sql.Tx) error {
						if _, err := tx.ExecContext(ctx, `INSERT INTO topo_app(k, v) VALUES (?, ?)`, key, payload); err != nil {
							return err
						}
						return p.bus.PublishTx(ctx, tx, boxcar.Event{Type: "bench.topology", Key: key, Data: payload})
					})
					if err == nil {
						committed.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	return committed.Load()
}

// drainTo waits until handled reaches want (or a minute passes without
// progress).
func drainTo(handled *atomic.Int64, want int64) error {
	last, since := handled.Load(), time.Now()
	for handled.Load() < want {
		time.Sleep(10 * time.Millisecond)
		if n := handled.Load(); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) > time.Minute {
			return fmt.Errorf("handled %d of %d events, none for a minute", n, want)
		}
	}
	return nil
}

func topoSingle(ctx context.Context, o options, dir string) (topoRun, error) {
	r := topoRun{name: "single binary", producers: 1}
	b, err := openTopoBus(ctx, o, dir, boxcar.Config{})
	if err != nil {
		return r, err
	}
	defer b.close()
	return r, measure(ctx, o, &r, b, []*topoBus{b})
}

// measure runs the flat-out round, then the paced one, with consumer's
// subscriber recording into r.
func measure(ctx context.Context, o options, r *topoRun, consumer *topoBus, producers []*topoBus) error {
	r.lat, r.paced = newDurations(), newDurations()
	var handled atomic.Int64
	var rec atomic.Pointer[durations]
	rec.Store(r.lat)
	if err := topoSubscribe(ctx, consumer, &rec, &handled); err != nil {
		return err
	}
	start := time.Now()
	r.committed = produce(ctx, o, producers, 0)
	r.commitDur = time.Since(start)
	err := drainTo(&handled, r.committed)
	r.handled, r.e2eDur = handled.Load(), time.Since(start)
	if err != nil || o.topoRate == 0 {
		return err
	}
	rec.Store(r.paced) // the handler records into the paced histogram from here
	n := produce(ctx, o, producers, o.topoRate)
	return drainTo(&handled, r.committed+n)
}

func topoHubRun(ctx context.Context, o options, dir string, n int) (topoRun, error) {
	r := topoRun{name: o.topology, producers: n}
	hctx, cancel := context.WithTimeout(ctx, time.Minute)
	h, err := hub.Start(hctx, hub.Config{Dir: filepath.Join(dir, "hub")})
	cancel()
	if err != nil {
		return r, err
	}
	defer h.Shutdown()
	cfgOf := func(id string) boxcar.Config {
		if o.topology == "leaf" {
			var urls []string
			for _, u := range h.LeafURLs() {
				urls = append(urls, u.String())
			}
			return boxcar.Config{InstanceID: id, Leaf: &boxcar.LeafConfig{URLs: urls}}
		}
		return boxcar.Config{InstanceID: id, NATSURL: strings.Join(h.ClientURLs(), ","), Replicas: 3}
	}
	consumer, err := openTopoBus(ctx, o, filepath.Join(dir, "sink"), cfgOf("sink"))
	if err != nil {
		return r, err
	}
	defer consumer.close()
	var producers []*topoBus
	for i := range n {
		p, err := openTopoBus(ctx, o, filepath.Join(dir, fmt.Sprintf("p%d", i)), cfgOf(fmt.Sprintf("p%d", i)))
		if err != nil {
			return r, err
		}
		defer p.close()
		producers = append(producers, p)
	}
	return r, measure(ctx, o, &r, consumer, producers)
}
