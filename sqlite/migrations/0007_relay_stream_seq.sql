-- The stream seq of the event at the relay's cursor, when it was saved (0:
-- unknown). A stream whose last seq is below it lost acked writes; when none
-- of its events are left to say where the cursor belongs (all expired), the
-- relay goes back far enough to publish the lost ones again (relay.go).
ALTER TABLE boxcar_relay ADD COLUMN stream_seq INTEGER NOT NULL DEFAULT 0;
