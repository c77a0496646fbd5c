-- What the relay knows of the event stream at its cursor (relay.go, resync),
-- saved with it:
--   stream_seq         the stream seq of the event at the cursor (0: unknown).
--                      A stream whose last seq is below it lost acked writes;
--   stream_seq_cursor  the cursor stream_seq belongs to: a cursor saved by
--                      an older Boxcar, which does not know these columns,
--                      makes stream_seq unknown;
--   stream_created_ns  when the stream was created (0: unknown). Another
--                      value means the stream was deleted and made again.
ALTER TABLE boxcar_relay ADD COLUMN stream_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE boxcar_relay ADD COLUMN stream_seq_cursor INTEGER NOT NULL DEFAULT 0;
ALTER TABLE boxcar_relay ADD COLUMN stream_created_ns INTEGER NOT NULL DEFAULT 0;
