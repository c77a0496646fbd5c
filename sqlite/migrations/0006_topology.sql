-- Facts about this database Boxcar keeps (scale-out): name -> value.
--   database_id    a random ID made at the first Open: what an instance ID,
--                  or a slot of a group of TxHandler instances, is claimed
--                  for in a cluster (another database cannot take it).
--   layout_upgrade while the event stream is being upgraded to the current
--                  subject layout: the phase reached (see upgrade.go).
CREATE TABLE boxcar_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- The event stream's messages, kept here while the stream is rewritten in
-- the current subject layout (upgrade.go): by stream seq, as they were.
-- Empty once the upgrade is done.
CREATE TABLE boxcar_layout_upgrade (
    stream_seq INTEGER PRIMARY KEY,
    subject    TEXT    NOT NULL,
    headers    BLOB,
    data       BLOB
);
