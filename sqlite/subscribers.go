package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
)

// CatchupRule says that events of Types at or below stream seq Below were
// handled already.
type CatchupRule struct {
	Types []string `json:"types"`
	Below uint64   `json:"below"`
}

// SubscriberRow is one row of boxcar_subscribers: what the database knows of
// a subscriber across restarts (see migration 0002).
type SubscriberRow struct {
	Name      string
	Stream    string
	Types     []string // sorted; empty: every type
	Kind      string   // "tx" or "plain"
	CreatedNS int64
	StartedNS int64
	StoppedNS int64 // of the last clean Close, 0 if none since the start
	// Acked are ranges [from, to] of stream seqs the subscriber acked above
	// its consumer's ack floor when it last closed cleanly, on the stream
	// created at StreamCreatedNS.
	Acked           [][2]uint64
	StreamCreatedNS int64
	// Catchup rules, after types were added: events of a rule's types at or
	// below its stream seq were handled already.
	Catchup []CatchupRule
	// Expired counts events that left the stream before the subscriber
	// handled them, up to stream seq ExpiredThrough.
	Expired        int64
	ExpiredThrough uint64
	// ReplayThrough, if not 0: a replay is in progress, and events up to
	// this stream seq are replayed (Message.Replay); ReplayNoDedupe: they
	// run even when the dedupe table has them.
	ReplayThrough  uint64
	ReplayNoDedupe bool
}

const subscriberColumns = `name, stream, types, kind, created_ns, started_ns, stopped_ns, acked, stream_created,
	catchup, expired, expired_through, replay_through, replay_nodedupe`

// LoadSubscriber reads the row of name, and false if there is none.
func LoadSubscriber(ctx context.Context, q Querier, name string) (SubscriberRow, bool, error) {
	rows, err := querySubscribers(ctx, q, `SELECT `+subscriberColumns+` FROM boxcar_subscribers WHERE name = ?`, name)
	if err != nil || len(rows) == 0 {
		return SubscriberRow{}, false, err
	}
	return rows[0], true, nil
}

// Subscribers reads every subscriber's row, by name.
func Subscribers(ctx context.Context, q Querier) ([]SubscriberRow, error) {
	return querySubscribers(ctx, q, `SELECT `+subscriberColumns+` FROM boxcar_subscribers ORDER BY name`)
}

func querySubscribers(ctx context.Context, q Querier, query string, args ...any) ([]SubscriberRow, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("read subscribers: %w", err)
	}
	defer rows.Close()
	var out []SubscriberRow
	for rows.Next() {
		var r SubscriberRow
		var types, acked, catchup string
		if err := rows.Scan(&r.Name, &r.Stream, &types, &r.Kind, &r.CreatedNS, &r.StartedNS, &r.StoppedNS, &acked,
			&r.StreamCreatedNS, &catchup, &r.Expired, &r.ExpiredThrough, &r.ReplayThrough, &r.ReplayNoDedupe); err != nil {
			return nil, fmt.Errorf("read subscribers: %w", err)
		}
		if err := errors.Join(unmarshalIfSet(types, &r.Types), unmarshalIfSet(acked, &r.Acked), unmarshalIfSet(catchup, &r.Catchup)); err != nil {
			return nil, fmt.Errorf("read subscriber %s: %w", r.Name, err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func unmarshalIfSet(s string, v any) error {
	if s == "" {
		return nil
	}
	return json.Unmarshal([]byte(s), v)
}

func marshalOrEmpty[T any](v []T) string {
	if len(v) == 0 {
		return ""
	}
	b, _ := json.Marshal(v) // slices of strings and integers cannot fail
	return string(b)
}

// SaveSubscriber writes r, creating or replacing the row of r.Name.
func SaveSubscriber(ctx context.Context, tx Execer, r SubscriberRow) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO boxcar_subscribers(`+subscriberColumns+`) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT(name) DO UPDATE SET stream = excluded.stream, types = excluded.types, kind = excluded.kind,
			started_ns = excluded.started_ns, stopped_ns = excluded.stopped_ns, acked = excluded.acked,
			stream_created = excluded.stream_created, catchup = excluded.catchup,
			expired = excluded.expired, expired_through = excluded.expired_through,
			replay_through = excluded.replay_through, replay_nodedupe = excluded.replay_nodedupe`,
		r.Name, r.Stream, marshalOrEmpty(r.Types), r.Kind, r.CreatedNS, r.StartedNS, r.StoppedNS, marshalOrEmpty(r.Acked),
		r.StreamCreatedNS, marshalOrEmpty(r.Catchup), r.Expired, r.ExpiredThrough, r.ReplayThrough, r.ReplayNoDedupe)
	if err != nil {
		return fmt.Errorf("save subscriber %s: %w", r.Name, err)
	}
	return nil
}

// DeleteSubscriber removes the row of name.
func DeleteSubscriber(ctx context.Context, tx Execer, name string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM boxcar_subscribers WHERE name = ?`, name); err != nil {
		return err
	}
	return DeleteHandling(ctx, tx, name)
}

// Handling is a subscriber's row of boxcar_handling: the event running
// alone (0: none) with the attempts on it begun alone in a row, across
// restarts; the last event that ran alone and ended; how many events the
// last start was to run alone; the events dead-lettered because the process
// stopped on them (newest last, at most MaxHandlingDead).
type Handling struct {
	StreamSeq uint64
	Attempts  int
	Through   uint64
	Span      int
	Dead      []DeadEvent
}

// DeadEvent is an event of Handling.Dead.
type DeadEvent struct {
	StreamSeq uint64 `json:"seq"`
	ID        string `json:"id"`
}

// MaxHandlingDead bounds Handling.Dead: the oldest go first.
const MaxHandlingDead = 64

// HandlingOf returns the subscriber's row of boxcar_handling, if any.
func HandlingOf(ctx context.Context, q Querier, subscriber string) (Handling, bool, error) {
	var h Handling
	var dead string
	err := q.QueryRowContext(ctx, `SELECT stream_seq, attempts, through, span, dead FROM boxcar_handling WHERE subscriber = ?`,
		subscriber).Scan(&h.StreamSeq, &h.Attempts, &h.Through, &h.Span, &dead)
	if errors.Is(err, sql.ErrNoRows) {
		return Handling{}, false, nil
	}
	if err != nil {
		return Handling{}, false, fmt.Errorf("read the handling row of %s: %w", subscriber, err)
	}
	if dead != "" {
		if err := json.Unmarshal([]byte(dead), &h.Dead); err != nil {
			return Handling{}, false, fmt.Errorf("read the handling row of %s: dead %q: %w", subscriber, dead, err)
		}
	}
	return h, true, nil
}

// SaveHandling writes the subscriber's row of boxcar_handling.
func SaveHandling(ctx context.Context, tx Execer, subscriber string, h Handling, atNS int64) error {
	dead := ""
	if len(h.Dead) > 0 {
		b, err := json.Marshal(h.Dead[max(len(h.Dead)-MaxHandlingDead, 0):])
		if err != nil {
			return fmt.Errorf("save the handling row of %s: %w", subscriber, err)
		}
		dead = string(b)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO boxcar_handling(subscriber, stream_seq, attempts, through, span, dead, at_ns) VALUES(?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT(subscriber) DO UPDATE SET stream_seq = excluded.stream_seq, attempts = excluded.attempts,
			through = excluded.through, span = excluded.span, dead = excluded.dead, at_ns = excluded.at_ns`,
		subscriber, h.StreamSeq, h.Attempts, h.Through, h.Span, dead, atNS)
	if err != nil {
		return fmt.Errorf("save the handling row of %s: %w", subscriber, err)
	}
	return nil
}

// DeleteHandling removes the subscriber's row of boxcar_handling.
func DeleteHandling(ctx context.Context, tx Execer, subscriber string) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM boxcar_handling WHERE subscriber = ?`, subscriber)
	return err
}
