package main

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// eventType is the type of every benchmark event.
const eventType = "order.placed"

// appSchema is the application's side: the row each app transaction inserts,
// and the row each subscriber upserts per key.
const appSchema = `
CREATE TABLE IF NOT EXISTS orders (
	id      INTEGER PRIMARY KEY,
	key     TEXT NOT NULL,
	payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS handled (
	subscriber TEXT NOT NULL,
	key        TEXT NOT NULL,
	n          INTEGER NOT NULL,
	last_seq   INTEGER NOT NULL,
	PRIMARY KEY (subscriber, key)
) WITHOUT ROWID;`

const (
	insertOrder   = `INSERT INTO orders(key, payload) VALUES(?, ?)`
	upsertHandled = `INSERT INTO handled(subscriber, key, n, last_seq) VALUES(?, ?, 1, ?)
	ON CONFLICT(subscriber, key) DO UPDATE SET n = n + 1, last_seq = excluded.last_seq`
)

// workload is what every stage shares: the keys and the payloads.
type workload struct {
	o        options
	keys     []string
	payloads [][]byte // templates; each event copies one and stamps its index
}

func newWorkload(o options) *workload {
	w := &workload{o: o}
	for i := range o.keys {
		w.keys = append(w.keys, fmt.Sprintf("customer-%d", i))
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 64 {
		p := make([]byte, o.payload)
		for i := range p {
			p[i] = byte(r.IntN(256))
		}
		w.payloads = append(w.payloads, p)
	}
	return w
}

// payload returns a fresh payload for event idx: its first 8 bytes are idx,
// so a handler can tell which event it got.
func (w *workload) payload(idx int, r *rand.Rand) []byte {
	p := append([]byte(nil), w.payloads[r.IntN(len(w.payloads))]...)
	binary.LittleEndian.PutUint64(p, uint64(idx))
	return p
}

func eventIndex(data []byte) int { return int(binary.LittleEndian.Uint64(data)) }

// env is one database file and one bus on it, in a directory of its own.
type env struct {
	dir string
	db  *sql.DB
	bus *boxcar.Bus
}

func openDB(dir, sync string) (*sql.DB, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	db, err := sqlite.OpenOptions(filepath.Join(dir, "app.db"), sqlite.Options{Synchronous: sync})
	if err != nil {
		return nil, err
	}
	if _, err := db.Exec(appSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("app schema: %w", err)
	}
	return db, nil
}

// openEnv opens the database in dir and a bus on it with cfg, whose Dir and
// Logger it sets; the other fields are the caller's (zero: Boxcar's
// defaults).
func openEnv(ctx context.Context, dir string, o options, cfg boxcar.Config) (*env, error) {
	db, err := openDB(dir, o.sync)
	if err != nil {
		return nil, err
	}
	cfg.Dir, cfg.Logger = filepath.Join(dir, "nats"), o.logger()
	if cfg.Synchronous == "" {
		cfg.Synchronous = o.busSync // the defaults stage sets its own
	}
	bus, err := boxcar.Open(ctx, db, cfg)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &env{dir: dir, db: db, bus: bus}, nil
}

func (e *env) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.bus.Close(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "bench: close bus:", err)
	}
	e.db.Close()
}

// waitRelayed waits until the relay has published every committed event.
func (e *env) waitRelayed(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		st, err := e.bus.Stats(ctx)
		if err != nil {
			return err
		}
		if st.OutboxLag == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("relay still %d events behind after %v", st.OutboxLag, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// writeSpec says what the writers do.
type writeSpec struct {
	n        int           // transactions in all
	plain    bool          // the app without Boxcar: db.BeginTx, not Bus.Tx
	publish  bool          // PublishTx one event in each (not with plain)
	interval time.Duration // 0: as fast as possible; else tx i starts at start + i*interval
	onCommit func(idx int, at time.Time)
	firstIdx int // index of the first event (so runs on one bus do not reuse indexes)

	writers int           // goroutines; 0: o.writers
	until   time.Duration // if > 0, no transaction starts later than this after the first: a run behind schedule is cut short
	// concurrent, with plain, lets the writers call db.BeginTx side by side,
	// as an app's goroutines would, instead of taking turns on a mutex:
	// they queue for the writer in the database's gate (sqlite.Open's),
	// each for at most its busy timeout.
	concurrent bool
	// onDone, if set, is called after each transaction with how long it
	// took from the call to its end (its commit, or its error); errors are
	// reported there and the writers go on instead of stopping.
	onDone func(took time.Duration, err error)
	// txFn, if set, is the transaction instead of Bus.Tx (the naive
	// pipeline's).
	txFn func(ctx context.Context, idx int, key string, data []byte) error
}

// writeResult is what the writers did.
type writeResult struct {
	elapsed  time.Duration // first start to last commit
	lastDone time.Time
	behind   time.Duration // worst lateness of a transaction against its schedule
}

// write runs spec.n app transactions on o.writers goroutines (spec.writers,
// if set) through Bus.Tx, each inserting one app row and, with
// spec.publish, publishing one event of a random key carrying the same
// payload. With spec.plain the transactions are the app's own, without
// Boxcar: db.BeginTx, the insert, Commit, one row per SQLite transaction,
// the writers taking turns on a mutex unless spec.concurrent (SQLite admits
// one writer; without the mutex they would sleep in its busy handler, which
// is slower, on a database not from sqlite.Open).
func (w *workload) write(ctx context.Context, bus *boxcar.Bus, spec writeSpec) (writeResult, error) {
	var plainMu sync.Mutex
	plainTx := func(key string, data []byte) error {
		if !spec.concurrent {
			plainMu.Lock()
			defer plainMu.Unlock()
		}
		tx, err := bus.DB().BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, insertOrder, key, data); err != nil {
			return err
		}
		return tx.Commit()
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	writers := spec.writers
	if writers == 0 {
		writers = w.o.writers
	}
	errs := make(chan error, writers)
	var mu sync.Mutex
	var res writeResult
	start := time.Now()
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), uint64(spec.firstIdx)))
			var behind time.Duration
			var last time.Time
			defer func() {
				mu.Lock()
				res.behind = max(res.behind, behind)
				if last.After(res.lastDone) {
					res.lastDone = last
				}
				mu.Unlock()
			}()
			for {
				i := int(next.Add(1)) - 1
				if i >= spec.n || spec.until > 0 && time.Since(start) >= spec.until {
					return
				}
				if spec.interval > 0 {
					at := start.Add(time.Duration(i) * spec.interval)
					if d := time.Until(at); d > 0 {
						time.Sleep(d)
					} else {
						behind = max(behind, -d)
					}
				}
				idx := spec.firstIdx + i
				key := w.keys[r.IntN(len(w.keys))]
				data := w.payload(idx, r)
				began := time.Now()
				var err error
				switch {
				case spec.txFn != nil:
					err = spec.txFn(ctx, idx, key, data)
				case spec.plain:
					err = plainTx(key, data)
				default:
					err = bus.Tx(ctx, func(tx *sql.Tx) error {
						if _, err := tx.ExecContext(ctx, insertOrder, key, data); err != nil {
							return err
						}
						if !spec.publish {
							return nil
						}
						return bus.PublishTx(ctx, tx, boxcar.Event{Type: eventType, Key: key, Data: data})
					})
				}
				if spec.onDone != nil {
					spec.onDone(time.Since(began), err)
					if err != nil {
						continue
					}
				}
				if err != nil {
					errs <- err
					return
				}
				last = time.Now()
				if spec.onCommit != nil {
					spec.onCommit(idx, last)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return res, err
	}
	res.elapsed = res.lastDone.Sub(start)
	return res, nil
}
