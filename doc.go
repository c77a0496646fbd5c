// Package boxcar is an embedded, broker-free event bus for a Go binary
// (and, when one machine is not enough, for several on a NATS cluster:
// see "From one binary to a cluster"): a transactional outbox in SQLite, relayed in order and exactly once
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
//     write lock; an ack waits up to 5 ms for one the relay begins anyway,
//     while the key goes on with its next event: the WAL is replayed in
//     order, so a key's later commit survives only with its earlier one).
//     So a power loss never leaves a published event whose
//     transaction the database lost, nor an acked event whose effects it
//     lost. Bus.Tx and Publish return at the commit with Config.Synchronous
//     sqlite.SyncNormal (the default), as the app's own connections from
//     sqlite.Open do: a power loss can take back the last transactions,
//     each with its events, never published. With sqlite.SyncFull they
//     return once the commit is on disk. A commit is visible to readers a
//     moment before it is durable. If an fsync of the WAL fails, no outbox
//     event is published and no TxHandler subscriber acks again until the
//     process restarts, and a SyncFull Bus.Tx fails before it runs (a
//     failed fsync may have lost what it could not write, and no later one
//     can prove otherwise): Health's relay is stopped with the error,
//     Stats.WALSyncFailed holds it (docs/RUNBOOK.md, "the disk failed an
//     fsync"). HandlerFunc subscribers, which keep nothing in the
//     database, go on.
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
//   - One Bus per database and per Config.Dir. Several instances of one
//     subscriber share work only as a group (SubscribeOptions.Group, below).
//
// # From one binary to a cluster
//
// The subject layout, decided once in jetstream/subject.go (layout 2):
//
//	<prefix>.<origin>.<partition>.<type…>.<key>
//
// origin is Config.InstanceID (default "main"), the writer's own subtree;
// partition is FNV-1a-32 of the key's subject token modulo
// Config.Partitions (default 64), at a fixed position so that consumers can
// filter on it; the stream records the layout and the partition count in
// its metadata (boxcar_layout, boxcar_partitions), and Open refuses a
// stream of another count (ErrLayoutMismatch). A stream of layout 1
// (prefix.type.key, Boxcar before scale-out) is upgraded by Open for an
// embedded store, in place: every event keeps its stream seq, the
// consumers are made again at their ack floors, the subscribers resume
// where they were, and an Open killed mid-way resumes it (its progress is
// in the database). The rewritten events' age (Config.Retention) starts
// over; dead letters keep their old subjects and are read as they are. On
// Config.NATSURL, where other instances may use the stream, Open refuses it
// with ErrOldLayout: stop every instance, run boxcar.UpgradeLayout(ctx, db,
// cfg) once with the instance whose database fed the stream, and start
// them again.
//
// Leaf per binary (Config.Leaf): each binary keeps its embedded server,
// outbox and stream, and joins a hub (a NATS cluster) as a leaf node with
// Config.InstanceID as its JetStream domain; the hub's aggregate stream
// (Config.Stream+"_ALL") sources every binary's stream, and subscribers of
// every binary consume the aggregate. What holds: everything above for each
// binary's own outbox and stream; the aggregate holds each event once; per
// key order at every subscriber for keys produced by one binary; a TxHandler
// applies each event once; a binary publishes while the hub is unreachable
// (its events wait in its own stream, for up to Config.Retention) and the
// hub catches up when it is back; deny rules on the leaf connection keep
// one binary's events out of another's stream. Stats.Hub and the "hub"
// component of Health show the leaf connection, the source lag and errors.
// What does not: no order between events of different binaries (sources
// interleave by arrival), so a key written by two binaries has no order;
// subscribers wait while the hub is unreachable (Subscribe returns, and
// SubscriberStats.Waiting says why), and after the hub comes back a
// subscriber's fetch can stay stuck until the supervisor sees it (two looks
// 10 s apart) and restarts it (SubscriberStats.FetchRestarts); the hub can
// take 10 to 20 s to resume sourcing after a leaf restart (nats-server's
// source health check); an
// instance ID is claimed for its database in the hub's KV bucket
// boxcar_instances, so a second database with the same ID is refused
// (ErrInstanceTaken) once the hub answers, but in the seconds before its
// refusal both leaves are on the hub with one domain.
//
// Instances on a shared cluster (Config.NATSURL, Replicas 3): instances
// share one replicated stream, each publishing on its own subtree in atomic
// batches chained with Nats-Expected-Last-Subject-Sequence on
// <prefix>.<origin>.>, so the stream holds each instance's events once, in
// its outbox order, across a stream leader's death; another database with
// an instance ID in use is refused (ErrInstanceTaken). Per-key order holds
// for keys produced by one instance; a subscriber whose deliveries are lost
// in transit (a slow-consumer drop, a reconnect, a node that died) sees the
// gap in the consumer's delivery numbers and resets its consumer to its ack
// floor before handling anything newer (SubscriberStats.DeliveryGaps): a
// HandlerFunc may then see repeats. What does not hold: no order across
// instances; a subscriber name runs in one instance at a time (several
// share work only as a group); the relay waits for each batch's ack before
// the next (one round trip per batch). An embedded server joining the
// cluster by routes (Config.Cluster) is not supported yet: Open refuses it,
// without Config.Listen with the reason (nats-server#5174: such a server
// never becomes ready and its shutdown hangs), with it because embedded
// nodes did not form a JetStream cluster in the tests.
//
// Groups (SubscribeOptions.Group{Members}): slot i of a group owns the
// partitions p with p mod Members == i, as a durable consumer of its own,
// claimed in the KV bucket boxcar_groups. A TxHandler group's slots are
// sticky: each database claims one for good, because its handler's writes
// and dedupe rows live in that database; each event is applied exactly once,
// in per-key order, in the database that owns its partition, and the
// partitions of a member that is down wait for it (they never move by
// themselves: freeing a claim by hand moves them to a database whose dedupe
// table does not know what the first one applied). A HandlerFunc group's
// slots are leased (LeaseTTL, default 10s): a dead member's slots move to
// the others within about LeaseTTL, and the taker resets the slot's
// consumer to its ack floor, so no event of a key is handled before an
// earlier event of that key the dead member had not acked; across the
// handoff a HandlerFunc is at-least-once (Message.ID is the idempotency
// key). Leases are not exclusivity: a member cut off from the cluster stops
// its slots after LeaseTTL/2, and a handler already running then can still
// finish after the taker started.
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
