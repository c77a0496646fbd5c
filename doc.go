// Package boxcar is an embedded, broker-free event bus for a single Go
// binary: a transactional outbox in SQLite, relayed in order and exactly once
// into an embedded NATS JetStream server, consumed by subscribers that keep
// per-key order, ack only after processing, and dedupe in the same
// transaction as their side effects.
//
//	db, _ := sqlite.Open("app.db")
//	bus, _ := boxcar.Open(ctx, db, boxcar.Config{Dir: "data"})
//	defer bus.Close(ctx)
//
//	bus.Tx(ctx, func(tx *sql.Tx) error {
//		if _, err := tx.ExecContext(ctx, `INSERT INTO users(id, email) VALUES(?, ?)`, id, email); err != nil {
//			return err
//		}
//		return bus.PublishTx(ctx, tx, boxcar.Event{Type: "user.signed_up", Key: id, Data: payload})
//	})
//
//	bus.Subscribe(ctx, "billing", boxcar.TxHandler(func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
//		_, err := tx.ExecContext(ctx, `INSERT INTO subscriptions(user_id) VALUES(?)`, m.Key)
//		return err // commit of tx + dedupe row, then ack
//	}), boxcar.SubscribeOptions{Types: []string{"user.signed_up"}})
//
// # What Boxcar guarantees
//
//   - No loss. An event published in a transaction that commits is handled
//     by every subscriber of its type, across a kill -9 of the process at any
//     instant, restarts, and publish errors and timeouts. A transaction that
//     rolls back publishes nothing.
//   - Exactly once in the stream, in commit order. The relay's publishes are
//     chained (each names the previous event's ID), so a failure refuses
//     everything after it; on start and after any error the relay asks the
//     stream what it holds, so a crash between a publish and the cursor
//     update never republishes, however long the process stayed down.
//   - Per-key order. For each subscriber, events of one key are handled in
//     commit order, across retries, redeliveries and crashes. A failing event
//     blocks later events of its key only, retried in place with backoff,
//     until it succeeds or is dead-lettered.
//   - Effectively once. A TxHandler's writes and the dedupe row of the event
//     commit together, then the message is acked; a redelivery finds the row
//     and is acked without running the handler.
//   - Nothing silent. Bus.Stats reports outbox lag and age, consumer lag,
//     redeliveries, dead letters, keys stuck in retry, events that expired
//     before a subscriber handled them, and what the bus recreated after an
//     operator deleted it.
//
// # What it does not guarantee
//
//   - A HandlerFunc (an email, a webhook) is at-least-once: a crash between
//     the side effect and the ack repeats it (a clean Close and restart does
//     not: what the subscriber acked is saved and skipped). Use Message.ID as
//     the external system's idempotency key.
//   - A subscriber stopped, or behind, for longer than Config.Retention
//     loses the events that expire meanwhile. They are counted
//     (SubscriberStats.Expired, exact for a subscriber of every type, an
//     upper bound for one filtered by type) and logged at error level.
//   - A consumer or stream an operator deletes is created again by the
//     running bus: the subscriber resumes after what it acked, and a new
//     stream is refilled from the outbox (rows relayed longer than
//     Config.PruneDelay ago are gone: those events are not refilled); a
//     HandlerFunc then sees again the refilled events it had handled. Both
//     are counted (Stats.StreamsRecreated, SubscriberStats.Recreated) and
//     logged at error level.
//   - Durability is SQLite's and JetStream's. What leaves the database is
//     on disk first: the relay publishes an event, and a subscriber acks
//     the events its transaction handled, only once an fsync of the WAL
//     covers the commit (one fsync covers every commit before it, off the
//     write lock). So a power loss never leaves a published event whose
//     transaction the database lost, nor an acked event whose effects it
//     lost. Bus.Tx and Publish return at the commit with Config.Synchronous
//     sqlite.SyncNormal (the default), as the app's own connections from
//     sqlite.Open do: a power loss can take back the last transactions,
//     each with its events, never published. With sqlite.SyncFull they
//     return once the commit is on disk. A commit is visible to readers a
//     moment before it is durable.
//     JetStream's store fsyncs every two minutes unless
//     Config.SyncAlways; the outbox keeps relayed events for
//     Config.PruneDelay so that a stream that lost acked writes is refilled
//     on the next start.
//   - If the process stays down longer than Config.Retention, events expire
//     from the stream; a stale saved cursor can then republish up to
//     Config.CursorSaveInterval worth of events. A dedupe row is pruned only
//     after Config.DedupeRetention (at least Retention) and once its event
//     has left the stream, so a replay never applies an event twice.
//   - A handler stuck in Go code that ignores its context cannot be stopped:
//     a HandlerFunc is abandoned at SubscribeOptions.HandlerTimeout (and
//     retried); a TxHandler holds its transaction until it returns.
//   - A HandlerFunc abandoned at its timeout keeps running on its own: its
//     side effect can land after those of later events of its key. A
//     TxHandler that overruns rolls back its whole group transaction; the
//     other events in it are retried without counting an attempt.
//   - A TxHandler can run more than once for an event, without an attempt
//     counted, when its group transaction rolls back for another event's
//     sake (a group runs without savepoints until a handler fails, then
//     again with them). Only the committed run's writes count; effects
//     outside tx (logs, metrics) can repeat.
//   - Back-pressure is per subscriber, not per key: a key whose head keeps
//     failing holds its queued events (at most MaxInFlight); once they fill
//     the window, fetching stops for every key until it moves.
//   - The relay must be the stream's only writer. Foreign messages are
//     dead-lettered by subscribers and checked against the outbox when the
//     relay resyncs, but a forged event claiming an outbox seq that was
//     already pruned, or more than 10,000 foreign messages at the stream's
//     end, can make the relay publish events a second time.
//   - Acked JetStream writes lost further back than Config.PruneDelay cannot
//     be republished (the rows are gone).
//   - Bus.Tx calls that share a group commit share its fate when SQLite
//     ends the whole transaction (a full disk, an I/O error, or a statement
//     such as INSERT OR ROLLBACK whose error a call ignored): every call in
//     it returns an error and none of them committed. On a database from
//     sqlite.Open the statements a call runs after SQLite ended the
//     transaction fail instead of committing on their own; on others they
//     run, one at a time. The same holds for a subscriber's batch: nothing
//     of it commits, and the handler that ended it counts an attempt. A
//     call's own error or panic undoes only its savepoint, and its canceled
//     context never interrupts a running statement (on a database from
//     sqlite.Open; on others an interrupted write statement rolls back the
//     whole group).
//   - SQLite has one writer. Bus.Tx groups, the app's own transactions on a
//     database from sqlite.Open and Boxcar's background writes (subscriber
//     batches, the relay's cursor) queue for it in Go, taking turns; a
//     subscriber batch holds it at most SubscribeOptions.MaxBatchTime (plus
//     the handler call in progress). Transactions on connections Boxcar did
//     not open compete in SQLite's busy handler instead.
//   - A call that needs the writer from code that holds it (Tx or Publish
//     inside a Tx function or a TxHandler, or inside the app's own
//     transaction on the same goroutine) fails at once with ErrReentrant.
//     Code that hands such a call to another goroutine and waits for it is
//     not detected: it deadlocks until its context ends.
//   - An event the stream refuses for good although PublishTx accepted it
//     (an operator lowered the stream's limits, or a row was written by hand)
//     is moved to boxcar_outbox_dead with the reason, counted
//     (Stats.RelaySetAside), logged at error level and listed by
//     Bus.OutboxDeadLetters, and the relay goes on: no event holds the
//     outbox. Subscribers never see it; the later events of its key are
//     delivered without it. What the stream would refuse at the time of
//     PublishTx (a header block over 64 KiB, a message over the server's max
//     payload) is refused there, with nothing written.
//   - One Bus per database and per Config.Dir. Several live instances of one
//     subscriber (scale-out) are not the single-binary design.
//
// # Packages
//
// The root package is the API (Open, Tx, PublishTx, Subscribe, Stats), the
// relay, the dispatcher and the dedupe store; it holds no SQLite or NATS
// mechanics of its own. Package sqlite opens databases correctly, migrates
// them, holds every SQL statement and the single writer (sqlite.Writer);
// package jetstream runs the embedded server, provisions streams and
// consumers, publishes the outbox in order exactly once and holds the wire
// codec. Operations (cmd/boxcar, admin, metrics) and the schema registry
// (schema) are built on the root package's public API; adapters with heavy
// dependencies (watermill, otel) have modules of their own. Config.Tracing
// is the hook tracing systems plug into (the otel module implements it with
// OpenTelemetry); package boxcartest crash-tests an app's own handlers, the
// way cmd/torture crash-tests Boxcar.
//
// A complete program is in examples/quickstart.
//
// # Errors
//
// Bad input is refused before anything is written, with an error that names
// the field and the rule and matches a sentinel (ErrInvalidEvent,
// ErrInvalidType, ErrInvalidKey, ErrPayloadTooLarge, ErrInvalidConfig). Open
// refuses a database that is not in WAL mode. A closed bus returns
// ErrClosed; a call back into the writer from code that holds it,
// ErrReentrant. A handler returns Permanent(err) to dead-letter an event at
// once.
package boxcar
