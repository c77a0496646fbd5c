package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/mattn/go-sqlite3" // the plain driver, "sqlite3"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The naive pipeline is the outbox a team writes by hand from the same
// libraries (go-sqlite3, an embedded nats-server, nats.go's jetstream), as
// the load stage's baseline for CPU per event: the app's transaction inserts
// its row and an outbox row; after each commit a relay goroutine is woken,
// reads the rows above its cursor, publishes them async with Nats-Msg-Id,
// waits for the acks and saves its cursor; a pull consumer's callback runs
// each message in a transaction (dedupe row + the handler's upsert) and acks
// it. What it does not do, and Boxcar does: per-key ordering with parallel
// workers, the WAL fsync before a publish and an ack, group commit, chained
// publishes, the writer's gate, stats.
type naive struct {
	db      *sql.DB
	srv     *server.Server
	nc      *nats.Conn
	js      jetstream.JetStream
	cc      jetstream.ConsumeContext
	wake    chan struct{}
	stop    chan struct{}
	wg      sync.WaitGroup
	handled atomic.Int64
	failed  atomic.Value // error of the relay or the consumer
}

const naiveSchema = `
CREATE TABLE IF NOT EXISTS naive_outbox (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, key TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS naive_cursor (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL);
INSERT OR IGNORE INTO naive_cursor VALUES (1, 0);
CREATE TABLE IF NOT EXISTS naive_inbox (id TEXT PRIMARY KEY) WITHOUT ROWID;`

func openNaive(ctx context.Context, dir string) (*naive, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// The plain driver, as a hand-written pipeline would open it.
	dsn := "file:" + filepath.Join(dir, "app.db") + "?_journal_mode=WAL&_synchronous=NORMAL&_busy_timeout=5000&_txlock=immediate"
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, err
	}
	n := &naive{db: db, wake: make(chan struct{}, 1), stop: make(chan struct{})}
	fail := func(err error) (*naive, error) { n.close(); return nil, err }
	if _, err := db.ExecContext(ctx, appSchema+naiveSchema); err != nil {
		return fail(err)
	}
	n.srv, err = server.NewServer(&server.Options{JetStream: true, StoreDir: filepath.Join(dir, "naive-nats"), DontListen: true, NoSigs: true, NoLog: true})
	if err != nil {
		return fail(err)
	}
	n.srv.Start()
	if !n.srv.ReadyForConnections(10 * time.Second) {
		return fail(errors.New("naive: server not ready"))
	}
	if n.nc, err = nats.Connect("", nats.InProcessServer(n.srv)); err != nil {
		return fail(err)
	}
	if n.js, err = jetstream.New(n.nc); err != nil {
		return fail(err)
	}
	stream, err := n.js.CreateStream(ctx, jetstream.StreamConfig{Name: "NAIVE", Subjects: []string{"naive.>"}, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute})
	if err != nil {
		return fail(err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "naive", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1000})
	if err != nil {
		return fail(err)
	}
	if n.cc, err = cons.Consume(n.handle); err != nil {
		return fail(err)
	}
	n.wg.Go(n.relay)
	return n, nil
}

// handle is the consumer's callback: dedupe and the handler's write in one
// transaction, then the ack.
func (n *naive) handle(m jetstream.Msg) {
	ctx := context.Background()
	err := func() error {
		tx, err := n.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		res, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO naive_inbox(id) VALUES (?)`, m.Headers().Get(jetstream.MsgIDHeader))
		if err != nil {
			return err
		}
		if k, _ := res.RowsAffected(); k == 1 {
			if _, err := tx.ExecContext(ctx, upsertHandled, "naive", m.Subject(), 0); err != nil {
				return err
			}
		}
		return tx.Commit()
	}()
	if err != nil {
		n.failed.CompareAndSwap(nil, err)
		m.Nak()
		return
	}
	m.Ack()
	n.handled.Add(1)
}

// relay publishes the outbox rows above its cursor, after each wake.
func (n *naive) relay() {
	ctx := context.Background()
	var cursor int64
	if err := n.db.QueryRowContext(ctx, `SELECT seq FROM naive_cursor`).Scan(&cursor); err != nil {
		n.failed.CompareAndSwap(nil, err)
		return
	}
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-n.wake:
		case <-poll.C:
		}
		for {
			last, count, err := n.publishFrom(ctx, cursor)
			if err != nil {
				n.failed.CompareAndSwap(nil, err)
				return
			}
			if count == 0 {
				break
			}
			cursor = last
			if _, err := n.db.ExecContext(ctx, `UPDATE naive_cursor SET seq = ?`, cursor); err != nil {
				n.failed.CompareAndSwap(nil, err)
				return
			}
		}
	}
}

func (n *naive) publishFrom(ctx context.Context, cursor int64) (last int64, count int, err error) {
	rows, err := n.db.QueryContext(ctx, `SELECT seq, id, key, data FROM naive_outbox WHERE seq > ? ORDER BY seq LIMIT 256`, cursor)
	if err != nil {
		return 0, 0, err
	}
	defer rows.Close()
	var acks []jetstream.PubAckFuture
	for rows.Next() {
		var id, key string
		var data []byte
		if err := rows.Scan(&last, &id, &key, &data); err != nil {
			return 0, 0, err
		}
		m := nats.NewMsg("naive." + key)
		m.Header.Set(jetstream.MsgIDHeader, id)
		m.Data = data
		f, err := n.js.PublishMsgAsync(m)
		if err != nil {
			return 0, 0, err
		}
		acks = append(acks, f)
	}
	if err := rows.Err(); err != nil {
		return 0, 0, err
	}
	for _, f := range acks {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return 0, 0, err
		}
	}
	return last, len(acks), nil
}

// tx is the app's transaction: its row and the outbox row, then the relay's
// wake-up.
func (n *naive) tx(ctx context.Context, idx int, key string, data []byte) error {
	tx, err := n.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, insertOrder, key, data); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO naive_outbox(id, key, data) VALUES (?, ?, ?)`, "ev-"+strconv.Itoa(idx), key, data); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	select {
	case n.wake <- struct{}{}:
	default:
	}
	return nil
}

// waitHandled waits until the consumer handled want events in all.
func (n *naive) waitHandled(want int64, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for n.handled.Load() < want {
		if err, _ := n.failed.Load().(error); err != nil {
			return fmt.Errorf("naive pipeline: %w", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("naive pipeline: %d of %d events handled after %v", n.handled.Load(), want, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

func (n *naive) close() {
	if n.cc != nil {
		n.cc.Stop()
	}
	close(n.stop)
	n.wg.Wait()
	if n.nc != nil {
		n.nc.Close()
	}
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
	}
	n.db.Close()
}
