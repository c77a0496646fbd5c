package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// Table names Boxcar owns. All start with boxcar_.
const (
	OutboxTable = "boxcar_outbox"
	RelayTable  = "boxcar_relay"
	DedupeTable = "boxcar_dedupe"
)

// InsertOutbox adds one event to the outbox. Run it by its text: the
// connection's statement cache (see OpenOptions) keeps it compiled.
const InsertOutbox = `INSERT INTO boxcar_outbox(id, type, key, headers, data, created_ns) VALUES(?, ?, ?, ?, ?, ?)`

// insertDedupe records that a subscriber handled an event. No row affected
// means it was handled before.
const insertDedupe = `INSERT INTO boxcar_dedupe(subscriber, event_id, handled_ns, outbox_seq) VALUES(?, ?, ?, ?) ON CONFLICT DO NOTHING`

const walCheckpointPassive = `PRAGMA wal_checkpoint(PASSIVE)`

const selectOutboxAfter = `SELECT seq, id, type, key, headers, data, created_ns
FROM boxcar_outbox WHERE seq > ? ORDER BY seq LIMIT ?`

// Querier is what the read helpers need: a *sql.DB, *sql.Conn or *sql.Tx.
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Execer is what the write helpers need: a *sql.DB, *sql.Conn or *sql.Tx.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// OutboxRow is one outbox row as the relay reads it.
type OutboxRow struct {
	Seq       int64
	ID        string
	Type      string
	Key       string
	Headers   []byte // JSON object of string to string, or nil
	Data      []byte
	CreatedNS int64
}

// publishSavepoint makes the rows of one InsertEvents call all or nothing.
var publishSavepoint = NewSavepoint("boxcar_publish")

// InsertEvents adds rows to the outbox in tx (their Seq is ignored: SQLite
// assigns it) and returns the first error. The rows of one call are written
// all or none: several rows are inserted in a savepoint, undone together
// on a failure.
func InsertEvents(ctx context.Context, tx Execer, rows []OutboxRow) error {
	insert := func() error {
		for i := range rows {
			r := &rows[i]
			if _, err := tx.ExecContext(ctx, InsertOutbox, r.ID, r.Type, r.Key, r.Headers, r.Data, r.CreatedNS); err != nil {
				return fmt.Errorf("insert outbox row: %w", err)
			}
		}
		return nil
	}
	if len(rows) == 1 {
		return insert() // one statement is atomic by itself
	}
	if err := publishSavepoint.Begin(ctx, tx); err != nil {
		return err
	}
	if err := insert(); err != nil {
		publishSavepoint.Rollback(ctx, tx)
		return err
	}
	return publishSavepoint.Release(ctx, tx)
}

// RecordHandled writes the dedupe row of (subscriber, eventID) in tx, with
// the event's outbox seq (what pruning goes by), and reports whether it is
// new: false means the event was handled before.
func RecordHandled(ctx context.Context, tx Execer, subscriber, eventID string, outboxSeq, nowNS int64) (bool, error) {
	res, err := tx.ExecContext(ctx, insertDedupe, subscriber, eventID, nowNS, outboxSeq)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// Savepoint is a named SQLite savepoint: a nested unit of work inside a
// transaction, undone alone.
type Savepoint struct{ begin, release, rollbackTo string }

// NewSavepoint names a savepoint (an SQL identifier).
func NewSavepoint(name string) Savepoint {
	return Savepoint{begin: "SAVEPOINT " + name, release: "RELEASE " + name, rollbackTo: "ROLLBACK TO " + name}
}

// Begin starts the savepoint.
func (s Savepoint) Begin(ctx context.Context, e Execer) error {
	_, err := e.ExecContext(ctx, s.begin)
	return err
}

// Release keeps the savepoint's writes in the enclosing transaction. It
// fails when the savepoint is gone: SQLite rolled back the whole
// transaction, or something ended it.
func (s Savepoint) Release(ctx context.Context, e Execer) error {
	_, err := e.ExecContext(ctx, s.release)
	return err
}

// Rollback undoes the savepoint's writes and ends it. Its error is that of
// the undo: it fails when the savepoint is gone.
func (s Savepoint) Rollback(ctx context.Context, e Execer) error {
	if _, err := e.ExecContext(ctx, s.rollbackTo); err != nil {
		return err
	}
	_, err := e.ExecContext(ctx, s.release)
	return err
}

// ReadOutbox appends to buf the rows with seq > after, in seq order, at most
// limit of them, and returns the extended slice. A row it cannot read as an
// event ends the read: it returns the rows before it and a *BadRowError
// naming it.
func ReadOutbox(ctx context.Context, q Querier, after int64, limit int, buf []OutboxRow) ([]OutboxRow, error) {
	rows, err := q.QueryContext(ctx, selectOutboxAfter, after, limit)
	if err != nil {
		return buf, err
	}
	defer rows.Close()
	var created integerColumn
	for rows.Next() {
		var r OutboxRow
		if err := rows.Scan(&r.Seq, &r.ID, &r.Type, &r.Key, &r.Headers, &r.Data, &created); err != nil {
			return buf, err
		}
		if !created.ok {
			return buf, &BadRowError{Seq: r.Seq, Column: "created_ns", Err: created.notAnInteger()}
		}
		r.CreatedNS = created.v
		buf = append(buf, r)
	}
	return buf, rows.Err()
}

// BadRowError is an outbox row that cannot be read as an event: a column
// holds a value PublishTx never writes. SQLite keeps what it is given
// (created_ns is an INTEGER column, and "yesterday" is stored as text), so
// such a row was written or edited by hand. Reading it again cannot change
// that: the relay sets it aside.
type BadRowError struct {
	Seq    int64
	Column string
	Err    error
}

func (e *BadRowError) Error() string {
	return fmt.Sprintf("outbox row %d: %s: %v", e.Seq, e.Column, e.Err)
}
func (e *BadRowError) Unwrap() error { return e.Err }

// integerColumn scans a column that should hold an integer without failing
// the Scan of the whole row when it does not (ok false), so that the row's
// seq is known.
type integerColumn struct {
	v   int64
	ok  bool
	got any // the value, when not an integer
}

func (c *integerColumn) Scan(src any) error {
	c.v, c.ok = src.(int64)
	c.got = nil
	if !c.ok {
		c.got = src
	}
	return nil
}

// notAnInteger describes the value scanned, which was not an integer.
func (c *integerColumn) notAnInteger() error {
	switch v := c.got.(type) {
	case nil:
		return errors.New("NULL, not an integer")
	case []byte:
		return fmt.Errorf("%q, not an integer", truncate(string(v), 64))
	case string:
		return fmt.Errorf("%q, not an integer", truncate(v, 64))
	default:
		return fmt.Errorf("%v (%T), not an integer", v, v)
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// Cursor returns the relay's cursor for stream: the largest seq known to be
// in the stream, 0 if none.
func Cursor(ctx context.Context, q Querier, stream string) (int64, error) {
	c, _, err := CursorMark(ctx, q, stream)
	return c, err
}

// StreamMark is what the relay knows of the event stream at its cursor
// (migration 0007).
type StreamMark struct {
	// Seq is the stream seq of the event at the cursor, 0 if unknown.
	Seq uint64
	// CreatedNS is when the stream was created (unix ns), 0 if unknown.
	CreatedNS int64
}

// CursorMark returns the relay's cursor for stream (0 if none) and the
// StreamMark saved with it. The mark's Seq is 0 if the cursor was saved
// without it.
func CursorMark(ctx context.Context, q Querier, stream string) (int64, StreamMark, error) {
	var cursor, seq, seqCursor, created int64
	err := q.QueryRowContext(ctx, `SELECT cursor, stream_seq, stream_seq_cursor, stream_created_ns FROM boxcar_relay WHERE stream = ?`, stream).
		Scan(&cursor, &seq, &seqCursor, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, StreamMark{}, nil
	}
	if err != nil {
		return 0, StreamMark{}, err
	}
	m := StreamMark{CreatedNS: created}
	if seqCursor == cursor && seq > 0 {
		m.Seq = uint64(seq)
	}
	return cursor, m, nil
}

// SaveCursor stores the relay's cursor for stream, and what it knows of the
// stream there.
func SaveCursor(ctx context.Context, e Execer, stream string, cursor int64, m StreamMark, nowNS int64) error {
	_, err := e.ExecContext(ctx, `INSERT INTO boxcar_relay(stream, cursor, published_ns, stream_seq, stream_seq_cursor, stream_created_ns) VALUES(?, ?, ?, ?, ?, ?)
		ON CONFLICT(stream) DO UPDATE SET cursor = excluded.cursor, published_ns = excluded.published_ns,
			stream_seq = excluded.stream_seq, stream_seq_cursor = excluded.stream_seq_cursor, stream_created_ns = excluded.stream_created_ns`,
		stream, cursor, nowNS, int64(m.Seq), cursor, m.CreatedNS)
	return err
}

// OutboxSeqBack returns the seq of the n-th outbox row counted back from
// upTo (n = 1: the last row at or below upTo), and false if fewer than n
// rows are at or below upTo.
func OutboxSeqBack(ctx context.Context, q Querier, upTo int64, n int64) (int64, bool, error) {
	if n < 1 {
		return upTo, true, nil
	}
	var seq int64
	err := q.QueryRowContext(ctx, `SELECT seq FROM boxcar_outbox WHERE seq <= ? ORDER BY seq DESC LIMIT 1 OFFSET ?`, upTo, n-1).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	return seq, err == nil, err
}

// OutboxSeqForward returns the seq of the n-th outbox row after from (n = 1:
// the first row above from), and false if fewer than n rows are above from.
func OutboxSeqForward(ctx context.Context, q Querier, from int64, n int64) (int64, bool, error) {
	if n < 1 {
		return from, true, nil
	}
	var seq int64
	err := q.QueryRowContext(ctx, `SELECT seq FROM boxcar_outbox WHERE seq > ? ORDER BY seq LIMIT 1 OFFSET ?`, from, n-1).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	return seq, err == nil, err
}

// OutboxBounds returns the smallest and largest seq in the outbox (0, 0 when
// empty). Both are lookups at the ends of the primary key, O(log n): each
// aggregate is in a subquery of its own because SQLite's min/max
// optimization only applies to a query with a single min() or max(); with
// both in one SELECT it scans the whole table.
func OutboxBounds(ctx context.Context, q Querier) (minSeq, maxSeq int64, err error) {
	err = q.QueryRowContext(ctx, `SELECT COALESCE((SELECT MIN(seq) FROM boxcar_outbox), 0),
		COALESCE((SELECT MAX(seq) FROM boxcar_outbox), 0)`).Scan(&minSeq, &maxSeq)
	return minSeq, maxSeq, err
}

// OldestAfter returns the creation time (unix ns) of the first row with
// seq > after, and false if there is none.
func OldestAfter(ctx context.Context, q Querier, after int64) (int64, bool, error) {
	var ns int64
	err := q.QueryRowContext(ctx, `SELECT created_ns FROM boxcar_outbox WHERE seq > ? ORDER BY seq LIMIT 1`, after).Scan(&ns)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	return ns, err == nil, err
}

// PruneOutbox deletes up to limit rows with seq <= upTo, oldest first, and
// returns how many it deleted. Small chunks keep the write lock short.
//
// It never deletes the row with the largest seq, even when upTo covers it:
// seq is a plain rowid, and SQLite gives a new row max(rowid)+1, so deleting
// the newest row would hand its seq out again, below the relay's cursor,
// and that event would never be published. Keeping it is what makes seq
// strictly increasing across commits for ever: inserts only raise the max,
// pruning never lowers it (the subquery runs in the pruning transaction,
// which holds the write lock), and a rolled-back insert leaves the max
// where it was.
func PruneOutbox(ctx context.Context, e Execer, upTo int64, limit int) (int64, error) {
	res, err := e.ExecContext(ctx, `DELETE FROM boxcar_outbox WHERE seq IN
		(SELECT seq FROM boxcar_outbox WHERE seq <= ? AND seq < (SELECT MAX(seq) FROM boxcar_outbox)
		ORDER BY seq LIMIT ?)`, upTo, limit)
	if err != nil {
		return 0, fmt.Errorf("prune outbox: %w", err)
	}
	return res.RowsAffected()
}

// DedupeCutoff says which dedupe rows PruneDedupe may delete: those of
// events older than BeforeID (event IDs are ULIDs: they sort by time) whose
// outbox seq is below BeforeSeq (the stream no longer holds them); rows
// without an outbox seq (written before it was recorded) when older than
// LegacyBeforeID.
type DedupeCutoff struct {
	BeforeID       string
	BeforeSeq      int64
	LegacyBeforeID string
}

// PruneDedupe deletes up to limit dedupe rows of subscriber that cut allows,
// oldest first, and returns how many. The scan is a range of the primary key
// (subscriber, event_id < BeforeID).
func PruneDedupe(ctx context.Context, e Execer, subscriber string, cut DedupeCutoff, limit int) (int64, error) {
	res, err := e.ExecContext(ctx, `DELETE FROM boxcar_dedupe WHERE subscriber = ? AND event_id IN
		(SELECT event_id FROM boxcar_dedupe WHERE subscriber = ? AND event_id < ?
			AND (outbox_seq < ? OR outbox_seq IS NULL AND event_id < ?)
		ORDER BY event_id LIMIT ?)`,
		subscriber, subscriber, cut.BeforeID, cut.BeforeSeq, cut.LegacyBeforeID, limit)
	if err != nil {
		return 0, fmt.Errorf("prune dedupe: %w", err)
	}
	return res.RowsAffected()
}

// Handled reports whether subscriber has a dedupe row for eventID.
func Handled(ctx context.Context, q Querier, subscriber, eventID string) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT count(*) FROM boxcar_dedupe WHERE subscriber = ? AND event_id = ?`, subscriber, eventID).Scan(&n)
	return n > 0, err
}

// OutboxID returns the event ID of the outbox row seq, and false if there is
// no such row (never written, rolled back or pruned).
func OutboxID(ctx context.Context, q Querier, seq int64) (string, bool, error) {
	var id string
	err := q.QueryRowContext(ctx, `SELECT id FROM boxcar_outbox WHERE seq = ?`, seq).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	return id, err == nil, err
}

// JournalMode returns db's journal mode, in lower case ("wal", "delete" ...).
func JournalMode(ctx context.Context, q Querier) (string, error) {
	var mode string
	if err := q.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return "", fmt.Errorf("read journal_mode: %w", err)
	}
	return strings.ToLower(mode), nil
}

// SetOutboxRowAside moves outbox row seq to boxcar_outbox_dead with reason
// and the error text, and reports whether there was such a row. The caller's
// cursor must be below seq (the event never reached the stream): a deleted
// row with the largest seq gives its seq to the next insert, which is then
// published as it should be.
func SetOutboxRowAside(ctx context.Context, tx Execer, seq int64, reason, errText string, nowNS int64) (bool, error) {
	if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO boxcar_outbox_dead(id, seq, type, key, headers, data, created_ns, reason, error, dead_ns)
		SELECT id, seq, type, key, headers, data, created_ns, ?, ?, ? FROM boxcar_outbox WHERE seq = ?`, reason, errText, nowNS, seq); err != nil {
		return false, fmt.Errorf("set outbox row %d aside: %w", seq, err)
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM boxcar_outbox WHERE seq = ?`, seq)
	if err != nil {
		return false, fmt.Errorf("set outbox row %d aside: %w", seq, err)
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// DeadOutboxRow is an event the relay moved out of the outbox because the
// stream refuses it for good.
type DeadOutboxRow struct {
	OutboxRow
	Reason string
	Error  string
	DeadNS int64
}

// DeadOutboxRows returns up to limit rows of boxcar_outbox_dead after seq
// (and ID) afterSeq/afterID, in seq order, and how many there are in all.
// The page also ends at the row whose data and headers bring the page's to
// maxBytes (0: no bound); more says that rows may follow the page.
func DeadOutboxRows(ctx context.Context, q Querier, afterSeq int64, afterID string, limit, maxBytes int) (_ []DeadOutboxRow, total int, more bool, _ error) {
	if err := q.QueryRowContext(ctx, `SELECT count(*) FROM boxcar_outbox_dead`).Scan(&total); err != nil {
		return nil, 0, false, err
	}
	rows, err := q.QueryContext(ctx, `SELECT seq, id, type, key, headers, data, created_ns, reason, error, dead_ns
		FROM boxcar_outbox_dead WHERE (seq, id) > (?, ?) ORDER BY seq, id LIMIT ?`, afterSeq, afterID, limit)
	if err != nil {
		return nil, 0, false, err
	}
	defer rows.Close()
	var out []DeadOutboxRow
	var created integerColumn
	size := 0
	for rows.Next() {
		var r DeadOutboxRow
		if err := rows.Scan(&r.Seq, &r.ID, &r.Type, &r.Key, &r.Headers, &r.Data, &created, &r.Reason, &r.Error, &r.DeadNS); err != nil {
			return nil, 0, false, err
		}
		// A row set aside because its created_ns is not an integer keeps
		// that value (its error says what it was): CreatedNS is 0.
		r.CreatedNS = created.v
		out = append(out, r)
		if size += len(r.Data) + len(r.Headers) + len(r.Error); maxBytes > 0 && size >= maxBytes {
			more = true
			break
		}
	}
	return out, total, more || len(out) == limit && limit > 0, rows.Err()
}
