-- The outbox. seq is the commit order (see sqlite.go, "Why seq is commit order").
-- A plain rowid, not AUTOINCREMENT: a new row gets max(seq)+1, and pruning never
-- deletes the row with the largest seq (see PruneOutbox), so a seq is never handed
-- out twice. AUTOINCREMENT would give the same guarantee at the price of a write
-- to sqlite_sequence in every publishing transaction (measured: ~15% of the
-- producer's transaction). Databases created with AUTOINCREMENT keep it; both work.
-- No secondary index: the relay reads by seq only.
CREATE TABLE boxcar_outbox (
    seq        INTEGER PRIMARY KEY,
    id         TEXT    NOT NULL,
    type       TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    headers    BLOB,
    data       BLOB,
    created_ns INTEGER NOT NULL
);

-- The relay's progress, one row per stream: every outbox row with seq <= cursor
-- is stored in the stream. published_ns is when the cursor last moved.
CREATE TABLE boxcar_relay (
    stream       TEXT PRIMARY KEY,
    cursor       INTEGER NOT NULL,
    published_ns INTEGER NOT NULL
) WITHOUT ROWID;

-- The inbox: one row per (subscriber, event) a transactional handler committed.
-- Event IDs are ULIDs, which sort by time, so pruning by age is a range delete
-- on the primary key and needs no index of its own.
CREATE TABLE boxcar_dedupe (
    subscriber TEXT    NOT NULL,
    event_id   TEXT    NOT NULL,
    handled_ns INTEGER NOT NULL,
    PRIMARY KEY (subscriber, event_id)
) WITHOUT ROWID;
