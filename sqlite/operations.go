package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// DLQAction is what an operator did to a dead letter (see migration 0002).
type DLQAction struct {
	// DLQCreatedNS is when the dead-letter stream was made: with DLQSeq,
	// the letter.
	DLQCreatedNS int64
	DLQSeq       uint64
	Subscriber   string
	Action       string // "redrive" or "discard"
	By           string
	Why          string
	AtNS         int64
	OutboxSeq    int64 // the redriven copy's, for a redrive
}

// DLQActions returns the actions of the dead letters in seqs of the stream
// made at createdNS, by seq.
func DLQActions(ctx context.Context, q Querier, createdNS int64, seqs []uint64) (map[uint64]DLQAction, error) {
	out := map[uint64]DLQAction{}
	for len(seqs) > 0 {
		chunk := seqs[:min(len(seqs), 500)]
		seqs = seqs[len(chunk):]
		args := make([]any, 1, len(chunk)+1)
		args[0] = createdNS
		query := `SELECT dlq_created_ns, dlq_seq, subscriber, action, by_whom, why, at_ns, outbox_seq FROM boxcar_dlq_actions
			WHERE dlq_created_ns = ? AND dlq_seq IN (?`
		for i, s := range chunk {
			args = append(args, s)
			if i > 0 {
				query += `, ?`
			}
		}
		rows, err := q.QueryContext(ctx, query+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("read dead-letter actions: %w", err)
		}
		for rows.Next() {
			var a DLQAction
			if err := rows.Scan(&a.DLQCreatedNS, &a.DLQSeq, &a.Subscriber, &a.Action, &a.By, &a.Why, &a.AtNS, &a.OutboxSeq); err != nil {
				rows.Close()
				return nil, err
			}
			out[a.DLQSeq] = a
		}
		if err := rows.Close(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// RecordDLQAction records a, and reports false (writing nothing) when the
// letter has an action already.
func RecordDLQAction(ctx context.Context, tx Execer, a DLQAction) (bool, error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO boxcar_dlq_actions(dlq_created_ns, dlq_seq, subscriber, action, by_whom, why, at_ns, outbox_seq)
		VALUES(?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`, a.DLQCreatedNS, a.DLQSeq, a.Subscriber, a.Action, a.By, a.Why, a.AtNS, a.OutboxSeq)
	if err != nil {
		return false, fmt.Errorf("record dead-letter action: %w", err)
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// DLQActionCounts returns how many letters of each subscriber in the
// dead-letter stream made at createdNS were acted on.
func DLQActionCounts(ctx context.Context, q Querier, createdNS int64) (map[string]int, error) {
	rows, err := q.QueryContext(ctx, `SELECT subscriber, count(*) FROM boxcar_dlq_actions WHERE dlq_created_ns = ? GROUP BY subscriber`, createdNS)
	if err != nil {
		return nil, fmt.Errorf("count dead-letter actions: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			return nil, err
		}
		out[s] = n
	}
	return out, rows.Err()
}

// InsertOutboxRow adds row to the outbox in tx and returns its seq (for
// Boxcar's own copies, such as redriven events: no validation here).
func InsertOutboxRow(ctx context.Context, tx Execer, row OutboxRow) (int64, error) {
	res, err := tx.ExecContext(ctx, InsertOutbox, row.ID, row.Type, row.Key, row.Headers, row.Data, row.CreatedNS)
	if err != nil {
		return 0, fmt.Errorf("insert outbox row: %w", err)
	}
	return res.LastInsertId()
}

// ParkedKey is a key a subscriber parked behind a dead letter.
type ParkedKey struct {
	Subscriber string
	Key        string
	HeadSeq    uint64 // the dead letter (DLQ stream seq) that holds it
	SinceNS    int64
	Release    string // a release in progress, if any
}

// ParkedKeys returns the keys subscriber parked ("" for every subscriber).
func ParkedKeys(ctx context.Context, q Querier, subscriber string) ([]ParkedKey, error) {
	rows, err := q.QueryContext(ctx, `SELECT subscriber, key, head_seq, since_ns, release FROM boxcar_parked
		WHERE ? = '' OR subscriber = ? ORDER BY subscriber, since_ns`, subscriber, subscriber)
	if err != nil {
		return nil, fmt.Errorf("read parked keys: %w", err)
	}
	defer rows.Close()
	var out []ParkedKey
	for rows.Next() {
		var p ParkedKey
		if err := rows.Scan(&p.Subscriber, &p.Key, &p.HeadSeq, &p.SinceNS, &p.Release); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// ParkedKeyOf returns the parked row of (subscriber, key), and false if the
// key is not parked.
func ParkedKeyOf(ctx context.Context, q Querier, subscriber, key string) (ParkedKey, bool, error) {
	p := ParkedKey{Subscriber: subscriber, Key: key}
	err := q.QueryRowContext(ctx, `SELECT head_seq, since_ns, release FROM boxcar_parked WHERE subscriber = ? AND key = ?`,
		subscriber, key).Scan(&p.HeadSeq, &p.SinceNS, &p.Release)
	if errors.Is(err, sql.ErrNoRows) {
		return p, false, nil
	}
	return p, err == nil, err
}

// ParkKey parks (subscriber, key) behind the dead letter headSeq; a key
// parked already keeps its head.
func ParkKey(ctx context.Context, tx Execer, p ParkedKey) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO boxcar_parked(subscriber, key, head_seq, since_ns, release)
		VALUES(?, ?, ?, ?, '') ON CONFLICT DO NOTHING`, p.Subscriber, p.Key, p.HeadSeq, p.SinceNS)
	if err != nil {
		return fmt.Errorf("park key: %w", err)
	}
	return nil
}

// SetParkedRelease marks the release in progress of a parked key.
func SetParkedRelease(ctx context.Context, tx Execer, subscriber, key, release string) error {
	_, err := tx.ExecContext(ctx, `UPDATE boxcar_parked SET release = ? WHERE subscriber = ? AND key = ?`, release, subscriber, key)
	return err
}

// UnparkKey releases (subscriber, key).
func UnparkKey(ctx context.Context, tx Execer, subscriber, key string) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM boxcar_parked WHERE subscriber = ? AND key = ?`, subscriber, key)
	return err
}

// DeleteSubscriberData deletes up to limit of subscriber's dedupe rows, and
// when none are left its parked keys, and returns how many dedupe rows it
// deleted.
func DeleteSubscriberData(ctx context.Context, tx Execer, subscriber string, limit int) (int64, error) {
	res, err := tx.ExecContext(ctx, `DELETE FROM boxcar_dedupe WHERE subscriber = ? AND event_id IN
		(SELECT event_id FROM boxcar_dedupe WHERE subscriber = ? LIMIT ?)`, subscriber, subscriber, limit)
	if err != nil {
		return 0, fmt.Errorf("delete dedupe rows: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil || n > 0 {
		return n, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM boxcar_parked WHERE subscriber = ?`, subscriber); err != nil {
		return 0, fmt.Errorf("delete parked keys: %w", err)
	}
	return 0, DeleteSubscriber(ctx, tx, subscriber)
}

// PendingRow is an outbox row listed without its data, and the data's size.
type PendingRow struct {
	OutboxRow // Data nil
	Size      int
}

// PendingOutbox returns up to limit outbox rows above after (the relay's
// cursor, or a page's last seq), in seq order, without their data.
func PendingOutbox(ctx context.Context, q Querier, after int64, limit int) ([]PendingRow, error) {
	rows, err := q.QueryContext(ctx, `SELECT seq, id, type, key, headers, length(data), created_ns FROM boxcar_outbox
		WHERE seq > ? ORDER BY seq LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read the outbox: %w", err)
	}
	defer rows.Close()
	var out []PendingRow
	for rows.Next() {
		var r PendingRow
		if err := rows.Scan(&r.Seq, &r.ID, &r.Type, &r.Key, &r.Headers, &r.Size, &r.CreatedNS); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
