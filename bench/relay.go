package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"log"
	mrand "math/rand/v2"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/boxcar-bus/boxcar"
	bjs "github.com/boxcar-bus/boxcar/jetstream"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// Stream settings of a bus opened with the default Config: the raw baseline
// publishes into a stream made the same way.
const (
	defaultStream = "BOXCAR"
	defaultPrefix = "boxcar"
	relayInFlight = 2000 // the bus's async publish window (2 × RelayBatch)
)

// benchLayout is the subject layout of a bus with the default Config.
var benchLayout = bjs.Layout{Prefix: defaultPrefix, Partitions: boxcar.DefaultPartitions}

// benchRelay fills an outbox with o.backlog rows while no bus is open, then
// measures (1) a raw JetStream async publish of the same messages, with the
// same subjects, headers and payloads, into a fresh embedded server, and (2)
// the relay of a bus opened on that outbox draining it into its own fresh
// embedded server.
func benchRelay(ctx context.Context, dir string, w *workload, rep *report) error {
	o := w.o
	db, err := openDB(dir, o.sync)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := sqlite.Migrate(ctx, db); err != nil {
		return err
	}
	t0 := time.Now()
	if err := fillOutbox(ctx, db, w, o.backlog); err != nil {
		return err
	}
	log.Printf("relay: filled the outbox with %s events in %v", num(float64(o.backlog)), time.Since(t0).Round(time.Millisecond))

	rows, err := sqlite.ReadOutbox(ctx, db, 0, o.backlog, nil)
	if err != nil {
		return err
	}
	msgs := make([]bjs.Outgoing, len(rows))
	for i, r := range rows {
		msgs[i] = bjs.Outgoing{Seq: r.Seq, ID: r.ID, Type: r.Type, Key: r.Key, Data: r.Data, CreatedNS: r.CreatedNS}
	}
	rows = nil

	// Rounds alternate raw and relay, each into a fresh server and a stream
	// of its own name (so the relay's cursor for it starts at 0); the
	// reported figures are the medians.
	var raws, drains, ratios []float64
	for round := range o.rounds {
		stream := fmt.Sprintf("%s%d", defaultStream, round+1)
		raw, err := rawPublish(ctx, filepath.Join(dir, fmt.Sprintf("raw%d", round+1)), stream, msgs)
		if err != nil {
			return fmt.Errorf("raw publish: %w", err)
		}
		relayed, err := relayDrain(ctx, filepath.Join(dir, fmt.Sprintf("nats%d", round+1)), stream, db, int64(o.backlog))
		if err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		log.Printf("relay round %d: raw JetStream async publish %8.0f msgs/s, outbox drain %8.0f events/s (%.2f×)",
			round+1, raw, relayed, relayed/raw)
		raws, drains, ratios = append(raws, raw), append(drains, relayed), append(ratios, relayed/raw)
	}
	raw, relayed, ratio := median(raws), median(drains), median(ratios)
	rep.add(row{
		stage:  "relay",
		what:   "raw JetStream async publish",
		value:  fmt.Sprintf("%s msgs/s", num(raw)),
		detail: fmt.Sprintf("%s msgs, same subjects/headers/payloads, %d in flight; median of %d", num(float64(o.backlog)), relayInFlight, o.rounds),
	})
	rep.add(row{
		stage:    "relay",
		what:     "outbox drain (relay)",
		value:    fmt.Sprintf("%s events/s", num(relayed)),
		detail:   fmt.Sprintf("backlog of %s rows, read → publish → cursor", num(float64(o.backlog))),
		baseline: fmt.Sprintf("%.2f× raw (median of %d)", ratio, o.rounds),
		target:   "≥ 0.8×",
		met:      ratio >= 0.8,
		hasTgt:   true,
	})
	return nil
}

// fillOutbox writes n outbox rows the way PublishTx writes them (same
// statement, IDs, types, keys and payloads), in large transactions.
func fillOutbox(ctx context.Context, db *sql.DB, w *workload, n int) error {
	entropy := ulid.Monotonic(rand.Reader, 0)
	r := mrand.New(mrand.NewPCG(7, 7))
	const perTx = 5000
	insert, err := db.PrepareContext(ctx, sqlite.InsertOutbox)
	if err != nil {
		return err
	}
	defer insert.Close()
	for done := 0; done < n; {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		stmt := tx.StmtContext(ctx, insert)
		for i := 0; i < perTx && done < n; i, done = i+1, done+1 {
			now := time.Now()
			id := ulid.MustNew(ulid.Timestamp(now), entropy).String()
			key := w.keys[r.IntN(len(w.keys))]
			if _, err := stmt.ExecContext(ctx, id, eventType, key, nil, w.payload(done, r), now.UnixNano()); err != nil {
				tx.Rollback()
				return err
			}
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// rawPublish publishes msgs into a fresh embedded server's stream, made like
// the bus's, exactly as the relay's publisher builds them (subject, Boxcar
// headers, Nats-Msg-Id and the Nats-Expected-Last-Msg-Id chain), async with
// the bus's window, and returns messages per second until the last ack.
func rawPublish(ctx context.Context, dir, streamName string, msgs []bjs.Outgoing) (float64, error) {
	srv, err := bjs.Start(bjs.ServerConfig{Dir: dir})
	if err != nil {
		return 0, err
	}
	defer srv.Shutdown(context.Background())
	nc, err := srv.Connect("bench-raw")
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	var failed atomic.Int64
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(relayInFlight),
		jetstream.WithPublishAsyncTimeout(5*time.Second),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { failed.Add(1) }))
	if err != nil {
		return 0, err
	}
	stream, _, err := bjs.EnsureStreams(ctx, js, bjs.StreamConfig{
		Name: streamName, Layout: benchLayout, MaxAge: 7 * 24 * time.Hour, Duplicates: 2 * time.Minute, Replicas: 1,
	})
	if err != nil {
		return 0, err
	}
	start := time.Now()
	prev := ""
	for i := range msgs {
		o := &msgs[i]
		m := nats.NewMsg(benchLayout.Subject("main", o.Type, o.Key))
		m.Header.Set(bjs.HeaderSeq, strconv.FormatInt(o.Seq, 10))
		m.Header.Set(bjs.HeaderType, o.Type)
		m.Header.Set(bjs.HeaderKey, o.Key)
		m.Header.Set(bjs.HeaderTime, strconv.FormatInt(o.CreatedNS, 10))
		m.Header.Set(jetstream.MsgIDHeader, o.ID)
		if prev != "" {
			m.Header.Set(jetstream.ExpectedLastMsgIDHeader, prev)
		}
		prev = o.ID
		m.Data = o.Data
		if _, err := js.PublishMsgAsync(m); err != nil {
			return 0, fmt.Errorf("message %d: %w", i, err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		return 0, fmt.Errorf("acks still pending after a minute")
	}
	elapsed := time.Since(start)
	if n := failed.Load(); n > 0 {
		return 0, fmt.Errorf("%d publishes failed", n)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return 0, err
	}
	if info.State.Msgs != uint64(len(msgs)) {
		return 0, fmt.Errorf("stream holds %d messages, want %d", info.State.Msgs, len(msgs))
	}
	return float64(len(msgs)) / elapsed.Seconds(), nil
}

// relayDrain opens a bus on db, whose outbox holds rows 1..last and whose
// relay has never run, and returns events per second from Open until the
// relay's cursor reaches last. The relay starts at the end of Open.
func relayDrain(ctx context.Context, dir, streamName string, db *sql.DB, last int64) (float64, error) {
	bus, err := boxcar.Open(ctx, db, boxcar.Config{Dir: dir, Stream: streamName})
	if err != nil {
		return 0, err
	}
	start := time.Now()
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		bus.Close(cctx)
	}()
	for {
		st, err := bus.Stats(ctx)
		if err != nil {
			return 0, err
		}
		if st.RelayCursor >= last {
			break
		}
		if st.RelayFailures > 0 {
			return 0, fmt.Errorf("relay failed %d times", st.RelayFailures)
		}
		if time.Since(start) > 5*time.Minute {
			return 0, fmt.Errorf("relay cursor at %d of %d after 5 minutes", st.RelayCursor, last)
		}
		time.Sleep(2 * time.Millisecond)
	}
	elapsed := time.Since(start)
	info, err := bus.JetStream().Stream(ctx, bus.StreamName())
	if err != nil {
		return 0, err
	}
	if n := info.CachedInfo().State.Msgs; n != uint64(last) {
		return 0, fmt.Errorf("stream holds %d events, want %d", n, last)
	}
	return float64(last) / elapsed.Seconds(), nil
}
