package boxcartest

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sort"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// committedEvent is an event some committed transaction wrote.
type committedEvent struct {
	Seq       int64
	ID        string
	Type, Key string
}

// readCommitted returns every committed event, in commit order: the outbox
// (the child keeps its rows, see keepOutbox) and the rows the relay moved
// aside (boxcar_outbox_dead: committed, but never in the stream).
func readCommitted(ctx context.Context, q sqlite.Querier) ([]committedEvent, error) {
	var out []committedEvent
	var buf []sqlite.OutboxRow
	after := int64(0)
	for {
		var err error
		buf, err = sqlite.ReadOutbox(ctx, q, after, 1000, buf[:0])
		if err != nil {
			return nil, fmt.Errorf("read the outbox: %w", err)
		}
		if len(buf) == 0 {
			break
		}
		for _, r := range buf {
			out = append(out, committedEvent{Seq: r.Seq, ID: r.ID, Type: r.Type, Key: r.Key})
		}
		after = buf[len(buf)-1].Seq
	}
	afterSeq, afterID := int64(0), ""
	for {
		rows, _, _, err := sqlite.DeadOutboxRows(ctx, q, afterSeq, afterID, 1000, boxcar.MaxPageBytes)
		if err != nil {
			return nil, fmt.Errorf("read the outbox's set-aside rows: %w", err)
		}
		if len(rows) == 0 {
			break
		}
		for _, r := range rows {
			out = append(out, committedEvent{Seq: r.Seq, ID: r.ID, Type: r.Type, Key: r.Key})
		}
		afterSeq, afterID = rows[len(rows)-1].Seq, rows[len(rows)-1].ID
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out, nil
}

// maxDetails caps the problem lines kept.
const maxDetails = 50

func (r *Result) problem(format string, a ...any) {
	if len(r.Details) < maxDetails {
		r.Details = append(r.Details, "PROBLEM: "+fmt.Sprintf(format, a...))
	}
}

// verify checks the drained run's database and adds the counts to res,
// then runs Config.Check.
func verify(ctx context.Context, cfg Config, res *Result) error {
	db, err := sqlite.Open(filepath.Join(cfg.Dir, "app.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	if err := checkBoxcar(ctx, db, cfg.Subscribers, res); err != nil {
		return err
	}
	if cfg.Check != nil {
		res.CheckErr = cfg.Check(ctx, db)
	}
	return nil
}

// checkBoxcar checks Boxcar's promises on what the kit recorded: each
// subscriber handled every committed event of its types (a TxHandler once),
// each key's events first in commit order, nothing uncommitted; and counts
// the dead letters.
func checkBoxcar(ctx context.Context, db *sql.DB, subs []Subscriber, res *Result) error {
	if err := db.QueryRowContext(ctx, sqlCountItems).Scan(&res.Items); err != nil {
		return err
	}
	events, err := readCommitted(ctx, db)
	if err != nil {
		return err
	}
	res.Events = int64(len(events))
	byID := make(map[string]committedEvent, len(events))
	for _, e := range events {
		byID[e.ID] = e
	}

	dead := map[string]map[string]bool{}
	rows, err := db.QueryContext(ctx, sqlDead)
	if err != nil {
		return err
	}
	for rows.Next() {
		var sub, id, reason, msg string
		if err := rows.Scan(&sub, &id, &reason, &msg); err != nil {
			rows.Close()
			return err
		}
		if dead[sub] == nil {
			dead[sub] = map[string]bool{}
		}
		dead[sub][id] = true
		res.DeadLetters++
		res.problem("%s dead-lettered event %s (%s): %s", sub, id, reason, msg)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}

	type state struct {
		sub     Subscriber
		seen    map[string]int   // runs per event ID
		lastSeq map[string]int64 // per key, the largest seq first handled
		rows    int64
	}
	states := map[string]*state{}
	for _, s := range subs {
		states[s.Name] = &state{sub: s, seen: map[string]int{}, lastSeq: map[string]int64{}}
	}
	rows, err = db.QueryContext(ctx, sqlHandled)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var sub, id, key string
		var seq int64
		if err := rows.Scan(&sub, &id, &key, &seq); err != nil {
			return err
		}
		st := states[sub]
		if st == nil {
			continue // a subscriber no longer under test
		}
		st.rows++
		e, ok := byID[id]
		if !ok {
			res.Leaked++
			res.problem("%s handled event %s (key %q, seq %d) that no committed transaction wrote", sub, id, key, seq)
			continue
		}
		st.seen[id]++
		if st.seen[id] > 1 {
			if st.sub.Tx != nil {
				res.Duplicates++
				res.problem("%s applied event %s (key %q, seq %d) %d times", sub, id, e.Key, e.Seq, st.seen[id])
			}
			continue
		}
		if e.Seq < st.lastSeq[e.Key] {
			res.OrderViolations++
			res.problem("%s handled event %s (key %q, seq %d) for the first time after seq %d of its key", sub, id, e.Key, e.Seq, st.lastSeq[e.Key])
		}
		st.lastSeq[e.Key] = max(st.lastSeq[e.Key], e.Seq)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, s := range subs {
		st := states[s.Name]
		want, lost := 0, 0
		for _, e := range events {
			if !handles(s, e.Type) || dead[s.Name][e.ID] {
				continue
			}
			want++
			if st.seen[e.ID] == 0 {
				lost++
				res.problem("%s never handled event %s (key %q, seq %d, type %s)", s.Name, e.ID, e.Key, e.Seq, e.Type)
			}
		}
		res.Lost += int64(lost)
		kind := "TxHandler, exactly once"
		if s.Func != nil {
			kind = "HandlerFunc, at least once"
		}
		res.Details = append(res.Details, fmt.Sprintf("%s (%s): %d events of its types, %d recorded runs, %d lost, %d dead-lettered",
			s.Name, kind, want, st.rows, lost, len(dead[s.Name])))
	}
	return nil
}
