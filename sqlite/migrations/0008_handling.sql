-- What a subscriber's runs alone found since its last clean start
-- (dispatch.go and isolation.go: a start after a stop that left events
-- unacked runs events alone, to find one whose handler kills the process):
--   stream_seq  the event running alone now (0: none), by stream seq
--   attempts    the attempts on it begun alone, in a row, across restarts
--   through     the last event that ran alone and ended (its process lived)
--   span        how many events the last start was to run alone
CREATE TABLE boxcar_handling (
    subscriber TEXT PRIMARY KEY,
    stream_seq INTEGER NOT NULL,
    attempts   INTEGER NOT NULL,
    through    INTEGER NOT NULL,
    span       INTEGER NOT NULL,
    at_ns      INTEGER NOT NULL
) WITHOUT ROWID;
