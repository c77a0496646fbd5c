package boxcar

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/boxcar-bus/boxcar/sqlite"
)

// Benchmarks of the hot paths, on real SQLite files and the real embedded
// server. `go run ./bench` measures the whole pipeline beside its baselines;
// these isolate one stage each, for profiling:
//
//	go test -run '^$' -bench PublishTx -cpuprofile cpu.prof .

const benchSchema = `
CREATE TABLE IF NOT EXISTS bench_orders (id INTEGER PRIMARY KEY, key TEXT NOT NULL, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS bench_handled (key TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;`

// benchBus opens a database and a bus in b's temp dir; both are closed
// when b ends.
func benchBus(b *testing.B) *Bus {
	b.Helper()
	dir := b.TempDir()
	db, err := sqlite.Open(filepath.Join(dir, "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := db.Exec(benchSchema); err != nil {
		b.Fatal(err)
	}
	bus, err := Open(context.Background(), db, Config{Dir: filepath.Join(dir, "nats")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := bus.Close(ctx); err != nil {
			b.Error(err)
		}
		db.Close()
	})
	return bus
}

func benchPayload() []byte {
	p := make([]byte, 200)
	for i := range p {
		p[i] = byte(i * 7)
	}
	return p
}

// BenchmarkPublishTx is the producer's cost: the app's transaction with one
// row, alone and with one or ten events published in it (the relay runs
// beside, as in an application).
func BenchmarkPublishTx(b *testing.B) {
	payload := benchPayload()
	for _, events := range []int{0, 1, 10} {
		name := "app-tx-only"
		if events > 0 {
			name = fmt.Sprintf("events-%d", events)
		}
		b.Run(name, func(b *testing.B) {
			bus := benchBus(b)
			ctx := context.Background()
			evs := make([]Event, events)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				key := fmt.Sprintf("customer-%d", i%10_000)
				i++
				for j := range evs {
					evs[j] = Event{Type: "order.placed", Key: key, Data: payload}
				}
				err := bus.Tx(ctx, func(tx *sql.Tx) error {
					if _, err := tx.ExecContext(ctx, `INSERT INTO bench_orders(key, payload) VALUES(?, ?)`, key, payload); err != nil {
						return err
					}
					if len(evs) == 0 {
						return nil
					}
					return bus.PublishTx(ctx, tx, evs...)
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSubscriberTx is the consumer side: a transactional subscriber
// draining b.N events of 1,000 keys that are already in the stream (fetch,
// decode, key dispatch, grouped handler transactions with dedupe rows,
// acks). The events are published before the timer starts.
func BenchmarkSubscriberTx(b *testing.B) {
	bus := benchBus(b)
	ctx := context.Background()
	payload := benchPayload()
	const perTx = 500
	for done := 0; done < b.N; {
		n := min(perTx, b.N-done)
		evs := make([]Event, n)
		for j := range evs {
			evs[j] = Event{Type: "order.placed", Key: fmt.Sprintf("customer-%d", (done+j)%1000), Data: payload}
		}
		if err := bus.Publish(ctx, evs...); err != nil {
			b.Fatal(err)
		}
		done += n
	}
	for {
		st, err := bus.Stats(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if st.OutboxLag == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}

	var handled atomic.Int64
	h := TxHandler(func(ctx context.Context, tx *sql.Tx, m Message) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO bench_handled(key, n) VALUES(?, 1)
			ON CONFLICT(key) DO UPDATE SET n = n + 1`, m.Key)
		if err == nil {
			handled.Add(1)
		}
		return err
	})
	b.ReportAllocs()
	b.ResetTimer()
	sub, err := bus.Subscribe(ctx, "bench", h, SubscribeOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for {
		if handled.Load() >= int64(b.N) {
			st, err := sub.Stats(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if st.InFlight == 0 {
				break
			}
		}
		time.Sleep(200 * time.Microsecond)
	}
	b.StopTimer()
	if n := handled.Load(); n != int64(b.N) {
		b.Fatalf("handled %d events, want %d", n, b.N)
	}
}

// BenchmarkPublishTxParallel is BenchmarkPublishTx with four writers per
// CPU, where Bus.Tx group-commits: ns/op is per transaction, across writers.
func BenchmarkPublishTxParallel(b *testing.B) {
	payload := benchPayload()
	for _, events := range []int{0, 1} {
		b.Run(fmt.Sprintf("events-%d", events), func(b *testing.B) {
			bus := benchBus(b)
			ctx := context.Background()
			var n atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					key := fmt.Sprintf("customer-%d", n.Add(1)%10_000)
					err := bus.Tx(ctx, func(tx *sql.Tx) error {
						if _, err := tx.ExecContext(ctx, `INSERT INTO bench_orders(key, payload) VALUES(?, ?)`, key, payload); err != nil {
							return err
						}
						if events == 0 {
							return nil
						}
						return bus.PublishTx(ctx, tx, Event{Type: "order.placed", Key: key, Data: payload})
					})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			st, err := bus.Stats(ctx)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(st.TxCalls)/float64(max(st.TxCommits, 1)), "calls/commit")
		})
	}
}
