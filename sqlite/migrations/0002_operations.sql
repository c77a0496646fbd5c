-- Events the stream refuses for good (larger than its limits): the relay moves
-- them here, with the reason, and goes on. Keyed by event ID: a seq can be
-- handed out again after such a row leaves the outbox, as it never reached the
-- stream.
CREATE TABLE boxcar_outbox_dead (
    id         TEXT    PRIMARY KEY,
    seq        INTEGER NOT NULL,
    type       TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    headers    BLOB,
    data       BLOB,
    created_ns INTEGER NOT NULL,
    reason     TEXT    NOT NULL,
    error      TEXT    NOT NULL,
    dead_ns    INTEGER NOT NULL
) WITHOUT ROWID;

-- Every subscriber the database has known, running in this process or not.
-- types: the JSON array of its event types, sorted (empty: all). kind: tx or
-- plain. acked: JSON ranges [[from, to], ...] of stream seqs it acked above the
-- consumer's ack floor, saved at a clean Close (a restart then skips them
-- instead of handling them again); stream_created: the stream's creation time
-- they belong to. catchup: after types were added, JSON rules [{"types": [...],
-- "below": seq}, ...]: events of those types at or below seq were handled
-- already. expired:
-- events that left the stream before this subscriber handled them;
-- expired_through: the stream seq up to which they are counted.
CREATE TABLE boxcar_subscribers (
    name            TEXT    PRIMARY KEY,
    stream          TEXT    NOT NULL,
    types           TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    created_ns      INTEGER NOT NULL,
    started_ns      INTEGER NOT NULL,
    stopped_ns      INTEGER NOT NULL DEFAULT 0,
    acked           TEXT    NOT NULL DEFAULT '',
    stream_created  INTEGER NOT NULL DEFAULT 0,
    catchup         TEXT    NOT NULL DEFAULT '',
    expired         INTEGER NOT NULL DEFAULT 0,
    expired_through INTEGER NOT NULL DEFAULT 0,
    -- A replay in progress: messages up to this stream seq are marked as
    -- replayed; nodedupe: they run even if the dedupe table has them.
    replay_through  INTEGER NOT NULL DEFAULT 0,
    replay_nodedupe INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- What operators did to dead letters (the dead-letter stream keeps the
-- letters themselves): one row per letter at most, so a second redrive or
-- discard of a letter does nothing. A letter is its seq in the dead-letter
-- stream made at dlq_created_ns: a stream an operator deleted and the bus made
-- again numbers its letters from 1 again. outbox_seq: the redriven copy's.
CREATE TABLE boxcar_dlq_actions (
    dlq_created_ns INTEGER NOT NULL,
    dlq_seq        INTEGER NOT NULL,
    subscriber     TEXT    NOT NULL,
    action         TEXT    NOT NULL,
    by_whom        TEXT    NOT NULL,
    why            TEXT    NOT NULL,
    at_ns          INTEGER NOT NULL,
    outbox_seq     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (dlq_created_ns, dlq_seq)
) WITHOUT ROWID;

-- Keys a subscriber parked (SubscribeOptions.ParkKeys): a dead-lettered event
-- holds the later events of its key, which go to the dead-letter stream too,
-- until it is redriven or discarded. release: the redrive copies of a release
-- in progress carry this ID.
CREATE TABLE boxcar_parked (
    subscriber TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    head_seq   INTEGER NOT NULL,
    since_ns   INTEGER NOT NULL,
    release    TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (subscriber, key)
) WITHOUT ROWID;

-- The outbox seq of each handled event, so that pruning keeps every dedupe row
-- whose event is still in the stream (rows from before this migration have
-- none and are pruned by age alone, with a margin).
ALTER TABLE boxcar_dedupe ADD COLUMN outbox_seq INTEGER;
