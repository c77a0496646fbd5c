package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Names of boxcar_meta rows.
const (
	MetaDatabaseID    = "database_id"
	MetaLayoutUpgrade = "layout_upgrade"
)

// Meta reads a boxcar_meta value ("" and false when absent).
func Meta(ctx context.Context, q Querier, name string) (string, bool, error) {
	var v string
	err := q.QueryRowContext(ctx, `SELECT value FROM boxcar_meta WHERE name = ?`, name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("sqlite: read %s: %w", name, err)
	}
	return v, true, nil
}

// SetMeta writes a boxcar_meta value.
func SetMeta(ctx context.Context, e Execer, name, value string) error {
	if _, err := e.ExecContext(ctx, `INSERT INTO boxcar_meta(name, value) VALUES(?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value`, name, value); err != nil {
		return fmt.Errorf("sqlite: write %s: %w", name, err)
	}
	return nil
}

// DeleteMeta removes a boxcar_meta value.
func DeleteMeta(ctx context.Context, e Execer, name string) error {
	if _, err := e.ExecContext(ctx, `DELETE FROM boxcar_meta WHERE name = ?`, name); err != nil {
		return fmt.Errorf("sqlite: delete %s: %w", name, err)
	}
	return nil
}

// EnsureMeta returns name's value, writing value first if there is none
// (the first writer wins: a racing Open reads the other's).
func EnsureMeta(ctx context.Context, db *sql.DB, name, value string) (string, error) {
	if _, err := db.ExecContext(ctx, `INSERT INTO boxcar_meta(name, value) VALUES(?, ?) ON CONFLICT(name) DO NOTHING`, name, value); err != nil {
		return "", fmt.Errorf("sqlite: write %s: %w", name, err)
	}
	v, _, err := Meta(ctx, db, name)
	return v, err
}

// StagedMessage is a stream message kept in boxcar_layout_upgrade.
type StagedMessage struct {
	StreamSeq uint64
	Subject   string
	Headers   []byte // the NATS header block, as stored
	Data      []byte
}

// StageMessages keeps msgs in boxcar_layout_upgrade (a message already
// there is kept as it is).
func StageMessages(ctx context.Context, e Execer, msgs []StagedMessage) error {
	for _, m := range msgs {
		if _, err := e.ExecContext(ctx, `INSERT INTO boxcar_layout_upgrade(stream_seq, subject, headers, data) VALUES(?, ?, ?, ?) ON CONFLICT DO NOTHING`,
			int64(m.StreamSeq), m.Subject, m.Headers, m.Data); err != nil {
			return fmt.Errorf("sqlite: stage message %d: %w", m.StreamSeq, err)
		}
	}
	return nil
}

// StagedMessages reads up to limit staged messages after stream seq after,
// in order.
func StagedMessages(ctx context.Context, q Querier, after uint64, limit int) ([]StagedMessage, error) {
	rows, err := q.QueryContext(ctx, `SELECT stream_seq, subject, headers, data FROM boxcar_layout_upgrade WHERE stream_seq > ? ORDER BY stream_seq LIMIT ?`, int64(after), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: read staged messages: %w", err)
	}
	defer rows.Close()
	var out []StagedMessage
	for rows.Next() {
		var m StagedMessage
		var seq int64
		if err := rows.Scan(&seq, &m.Subject, &m.Headers, &m.Data); err != nil {
			return nil, fmt.Errorf("sqlite: read staged messages: %w", err)
		}
		m.StreamSeq = uint64(seq)
		out = append(out, m)
	}
	return out, rows.Err()
}

// StagedBounds returns the first and last staged stream seq and how many
// there are (0s when none).
func StagedBounds(ctx context.Context, q Querier) (first, last uint64, n int64, err error) {
	var f, l sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT min(stream_seq), max(stream_seq), count(*) FROM boxcar_layout_upgrade`).Scan(&f, &l, &n); err != nil {
		return 0, 0, 0, fmt.Errorf("sqlite: staged messages: %w", err)
	}
	return uint64(f.Int64), uint64(l.Int64), n, nil
}

// ClearStaged empties boxcar_layout_upgrade, limit rows at a time; it
// returns how many it deleted.
func ClearStaged(ctx context.Context, e Execer, limit int) (int64, error) {
	res, err := e.ExecContext(ctx, `DELETE FROM boxcar_layout_upgrade WHERE stream_seq IN (SELECT stream_seq FROM boxcar_layout_upgrade ORDER BY stream_seq LIMIT ?)`, limit)
	if err != nil {
		return 0, fmt.Errorf("sqlite: clear staged messages: %w", err)
	}
	return res.RowsAffected()
}

// RebaseSubscribers moves the rows of stream's subscribers that belong to
// the stream created at oldCreatedNS to the one created at newCreatedNS:
// a layout upgrade wrote the old stream's messages into a new one at the
// same seqs, so what the rows say in stream seqs stays true.
func RebaseSubscribers(ctx context.Context, e Execer, stream string, oldCreatedNS, newCreatedNS int64) error {
	if _, err := e.ExecContext(ctx, `UPDATE boxcar_subscribers SET stream_created = ? WHERE stream = ? AND stream_created = ?`,
		newCreatedNS, stream, oldCreatedNS); err != nil {
		return fmt.Errorf("sqlite: rebase subscribers of %s: %w", stream, err)
	}
	return nil
}
