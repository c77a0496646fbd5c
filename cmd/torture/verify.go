package main

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	bjs "github.com/boxcar-bus/boxcar/jetstream"
	"github.com/boxcar-bus/boxcar/sqlite"
)

type keyN struct {
	key string
	n   int64
}

type committedEvent struct {
	tag string
}

// maxDetails caps the problem lines kept.
const maxDetails = 50

func (r *result) problem(format string, a ...any) {
	if len(r.Details) < maxDetails {
		r.Details = append(r.Details, fmt.Sprintf(format, a...))
	}
}

// verify checks the databases and the stream of a drained run and adds the
// counts to res. It returns informational lines.
func verify(ctx context.Context, dir string, res *result) ([]string, error) {
	db, err := sqlite.Open(filepath.Join(dir, "app.db"))
	if err != nil {
		return nil, err
	}
	defer db.Close()

	committed := map[keyN]committedEvent{}
	rows, err := db.QueryContext(ctx, `SELECT key, n, tag, doomed FROM app_events`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var k keyN
		var tag string
		var doomed bool
		if err := rows.Scan(&k.key, &k.n, &tag, &doomed); err != nil {
			rows.Close()
			return nil, err
		}
		if doomed {
			res.RolledBackLeaked++
			res.problem("app row %s/%d of a rolled-back transaction (tag %s) is committed", k.key, k.n, tag)
			continue
		}
		committed[k] = committedEvent{tag: tag}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	res.Events = int64(len(committed))
	var rolledBack int64
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM rolled_back`).Scan(&rolledBack); err != nil {
		return nil, err
	}

	txStats, err := checkHandled(ctx, db, "handled_tx", committed, res, true)
	if err != nil {
		return nil, err
	}
	plainStats, err := checkHandled(ctx, db, "handled_plain", committed, res, false)
	if err != nil {
		return nil, err
	}
	streamStats, err := checkStream(ctx, dir, committed, res)
	if err != nil {
		return nil, err
	}
	return []string{
		fmt.Sprintf("torture: committed events %d, rolled-back events recorded %d", len(committed), rolledBack),
		"torture: " + txStats,
		"torture: " + plainStats,
		"torture: " + streamStats,
	}, nil
}

// checkHandled scans a handled table in the order the rows were committed.
// exactlyOnce: a second row of an event is a duplicate; otherwise it is a
// redelivery, allowed after a crash only: within one life, each key's events
// must follow each other one by one.
func checkHandled(ctx context.Context, db *sql.DB, table string, committed map[keyN]committedEvent, res *result, exactlyOnce bool) (string, error) {
	rows, err := db.QueryContext(ctx, `SELECT key, n, tag, doomed, event_id, life FROM `+table+` ORDER BY id`)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	seen := make(map[keyN]int, len(committed))
	maxSeen := map[string]int64{}
	type lifePos struct{ life, n int64 }
	lastInLife := map[string]lifePos{}
	var total, repeats int64
	for rows.Next() {
		var k keyN
		var tag, id string
		var doomed bool
		var life int64
		if err := rows.Scan(&k.key, &k.n, &tag, &doomed, &id, &life); err != nil {
			return "", err
		}
		total++
		ev, ok := committed[k]
		if doomed || !ok || ev.tag != tag {
			res.RolledBackLeaked++
			res.problem("%s: handled %s/%d tag %s (event %s) that no committed transaction wrote", table, k.key, k.n, tag, id)
			continue
		}
		seen[k]++
		if seen[k] > 1 {
			repeats++
			if exactlyOnce {
				res.Duplicates++
				res.problem("%s: %s/%d (event %s) applied %d times", table, k.key, k.n, id, seen[k])
			}
		} else if k.n < maxSeen[k.key] {
			res.OrderViolations++
			res.problem("%s: key %q event %d handled for the first time after event %d", table, k.key, k.n, maxSeen[k.key])
		}
		if !exactlyOnce {
			if p, ok := lastInLife[k.key]; ok && p.life == life && k.n != p.n+1 {
				res.OrderViolations++
				res.problem("%s: key %q handled %d right after %d within life %d", table, k.key, k.n, p.n, life)
			}
			lastInLife[k.key] = lifePos{life: life, n: k.n}
		}
		maxSeen[k.key] = max(maxSeen[k.key], k.n)
	}
	if err := rows.Err(); err != nil {
		return "", err
	}
	var lost int64
	for k := range committed {
		if seen[k] == 0 {
			lost++
			res.problem("%s: committed event %s/%d was never handled", table, k.key, k.n)
		}
	}
	res.Lost += lost
	return fmt.Sprintf("%s: %d rows, %d events, %d repeated handlings, %d lost", table, total, len(seen), repeats, lost), nil
}

// checkStream reads the whole event stream in order: each event once, outbox
// seqs increasing, each key's counter increasing, nothing rolled back.
func checkStream(ctx context.Context, dir string, committed map[keyN]committedEvent, res *result) (string, error) {
	srv, err := bjs.Start(bjs.ServerConfig{Dir: filepath.Join(dir, "nats")})
	if err != nil {
		return "", err
	}
	defer srv.Shutdown(context.Background())
	nc, err := srv.Connect("torture-verify")
	if err != nil {
		return "", err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return "", err
	}
	stream, err := js.Stream(ctx, "BOXCAR")
	if err != nil {
		return "", err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return "", err
	}
	var dlqMsgs uint64
	if dlq, err := js.Stream(ctx, bjs.DLQName("BOXCAR")); err == nil {
		if di, err := dlq.Info(ctx); err == nil {
			dlqMsgs = di.State.Msgs
		}
	}
	if dlqMsgs > 0 {
		res.problem("stream: %d dead letters", dlqMsgs)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return "", err
	}
	ids := make(map[string]struct{}, info.State.Msgs)
	seen := make(map[keyN]int, len(committed))
	lastN := map[string]int64{}
	var lastSeq int64
	var got uint64
	idle := 0
	for got < info.State.Msgs {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return "", err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			got++
			h := m.Headers()
			id := h.Get(jetstream.MsgIDHeader)
			seq, _ := strconv.ParseInt(h.Get(bjs.HeaderSeq), 10, 64)
			key := h.Get(bjs.HeaderKey)
			if _, dup := ids[id]; dup {
				res.StreamDuplicates++
				res.problem("stream: event %s (outbox seq %d) stored twice", id, seq)
				continue
			}
			ids[id] = struct{}{}
			if seq <= lastSeq {
				res.OrderViolations++
				res.problem("stream: outbox seq %d after %d", seq, lastSeq)
			}
			lastSeq = max(lastSeq, seq)
			p, err := decodePayload(m.Data())
			if err != nil {
				res.problem("stream: event %s: %v", id, err)
				res.RolledBackLeaked++
				continue
			}
			k := keyN{key: key, n: p.n}
			ev, ok := committed[k]
			if p.doomed || !ok || ev.tag != p.tag {
				res.RolledBackLeaked++
				res.problem("stream: event %s %s/%d tag %s is from no committed transaction", id, key, p.n, p.tag)
				continue
			}
			seen[k]++
			if seen[k] > 1 {
				res.StreamDuplicates++
				res.problem("stream: %s/%d stored twice (second as %s)", key, p.n, id)
				continue
			}
			if p.n < lastN[key] {
				res.OrderViolations++
				res.problem("stream: key %q event %d after event %d", key, p.n, lastN[key])
			}
			lastN[key] = max(lastN[key], p.n)
		}
		if err := batch.Error(); err != nil {
			return "", err
		}
		if n == 0 {
			if idle++; idle > 5 {
				return "", fmt.Errorf("stream: read %d of %d messages, then nothing", got, info.State.Msgs)
			}
		}
	}
	var lost int64
	for k := range committed {
		if seen[k] == 0 {
			lost++
			res.problem("stream: committed event %s/%d is not in the stream", k.key, k.n)
		}
	}
	res.Lost += lost
	return fmt.Sprintf("stream: %d messages, %d events, %d lost, %d dead letters", info.State.Msgs, len(seen), lost, dlqMsgs), nil
}
