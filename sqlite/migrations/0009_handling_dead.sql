-- The events a subscriber's runs alone dead-lettered without running their
-- handlers, because the process stopped on each of them MaxAttempts times
-- (isolation.go), since its last clean start: a JSON array of
-- {"seq": stream seq, "id": event ID}, newest last, at most 64 ('': none).
-- A letter's ack may die with the process after it (an embedded server's
-- last acks do): the event comes back at the next start, and is acked there
-- without its handler run again.
ALTER TABLE boxcar_handling ADD COLUMN dead TEXT NOT NULL DEFAULT '';
