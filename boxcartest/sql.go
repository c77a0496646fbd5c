package boxcartest

// The kit's own tables, in the app's database beside Boxcar's (they are the
// kit's, not Boxcar's schema, so they are not among sqlite's migrations):
//
//   - boxcartest_items: the workload items committed, each in the
//     transaction of its Publish call (so an item commits exactly once).
//   - boxcartest_handled: every committed handler run (a TxHandler's, in its
//     transaction) or successful call (a HandlerFunc's, after it), in order
//     (id). No unique key: a duplicate must be visible, not refused.
//   - boxcartest_dead: the dead letters, listed by the drain.
const sqlSchema = `
CREATE TABLE IF NOT EXISTS boxcartest_items (i INTEGER PRIMARY KEY, life INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS boxcartest_handled (
	id         INTEGER PRIMARY KEY,
	subscriber TEXT NOT NULL,
	event_id   TEXT NOT NULL,
	key        TEXT NOT NULL,
	seq        INTEGER NOT NULL,
	life       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS boxcartest_dead (
	subscriber TEXT NOT NULL,
	event_id   TEXT NOT NULL,
	reason     TEXT NOT NULL,
	error      TEXT NOT NULL
);`

const (
	sqlCountItems   = `SELECT count(*) FROM boxcartest_items`
	sqlItemsDone    = `SELECT i FROM boxcartest_items`
	sqlInsertItem   = `INSERT INTO boxcartest_items(i, life) VALUES (?, ?)`
	sqlInsertHandle = `INSERT INTO boxcartest_handled(subscriber, event_id, key, seq, life) VALUES (?, ?, ?, ?, ?)`
	sqlHandled      = `SELECT subscriber, event_id, key, seq FROM boxcartest_handled ORDER BY id`
	sqlHandledCount = `SELECT count(DISTINCT event_id) FROM boxcartest_handled WHERE subscriber = ?`
	sqlClearDead    = `DELETE FROM boxcartest_dead`
	sqlInsertDead   = `INSERT INTO boxcartest_dead(subscriber, event_id, reason, error) VALUES (?, ?, ?, ?)`
	sqlDead         = `SELECT subscriber, event_id, reason, error FROM boxcartest_dead`
)
