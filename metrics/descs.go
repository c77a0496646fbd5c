package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Label names. A subscriber's name is the only per-subscriber label: keys
// and event IDs never become labels (one series per key would grow without
// bound).
const (
	labelSubscriber = "subscriber"
	labelResult     = "result"
	labelComponent  = "component"
	labelState      = "state"
	labelRead       = "read"
)

// The values of the result label of handled_total.
const (
	resultOK           = "ok"
	resultSkipped      = "skipped"
	resultFailed       = "failed"
	resultDeadLettered = "dead_lettered"
)

// read is one of the reads a scrape makes of the bus (the read label of
// scrape_errors_total), or readConsumer: a subscriber whose consumer the
// server could not describe, while the read of the subscribers succeeded.
type read int

const (
	readStats read = iota
	readHealth
	readSubscribers
	readDeadLetters
	readConsumer
	numReads
)

// readNames are the values of the read label.
var readNames = [numReads]string{"stats", "health", "subscribers", "dead_letter_depths", "consumer"}

// componentBus is the component label of the bus's overall health (the
// worst of its components').
const componentBus = "bus"

// descs are the descriptors of every metric the Collector exports. Each
// field's help is the metric's documentation; package doc lists them too.
type descs struct {
	all []*prometheus.Desc

	outboxLag, outboxAge, outboxDead                              *prometheus.Desc
	relayPublished, relayFailures, relaySetAside                  *prometheus.Desc
	streamsRecreated, txCommits, txCalls, walSyncs, walSyncFailed *prometheus.Desc
	writerHeld, writersWaiting                                    *prometheus.Desc
	subRunning, subPaused, subPending, subUnacked                 *prometheus.Desc
	subInFlight, subStuckKeys, subParkedKeys                      *prometheus.Desc
	subHandled, subRedelivered, subIgnored                        *prometheus.Desc
	subRecreated, subExpired                                      *prometheus.Desc
	subDeliveryGaps, subFetchRestarts                             *prometheus.Desc
	hubConnected, hubDown, hubLinked, hubLag                      *prometheus.Desc
	hubConflict                                                   *prometheus.Desc
	subHandlerDuration, subEndToEnd                               *prometheus.Desc
	subDeadLettersPending, subDeadLettersStored                   *prometheus.Desc
	healthState, scrapeErrors                                     *prometheus.Desc
}

// newDescs makes the descriptors under namespace ns, with constLabels on
// every one.
func newDescs(ns string, constLabels prometheus.Labels) *descs {
	d := &descs{}
	add := func(name, help string, labels ...string) *prometheus.Desc {
		desc := prometheus.NewDesc(prometheus.BuildFQName(ns, "", name), help, labels, constLabels)
		d.all = append(d.all, desc)
		return desc
	}
	sub := labelSubscriber

	d.outboxLag = add("outbox_lag_events", "Committed events not yet in the stream (max outbox seq minus the relay's cursor; an upper bound).")
	d.outboxAge = add("outbox_oldest_age_seconds", "How long the oldest event not yet in the stream has waited in the outbox; 0 when the relay is caught up.")
	d.outboxDead = add("outbox_dead_rows", "Events the relay set aside for good (the stream refuses them, or their outbox rows cannot be sent as they are), of all time: rows of boxcar_outbox_dead.")
	d.relayPublished = add("relay_published_total", "Events the relay published into the stream since the bus opened.")
	d.relayFailures = add("relay_failures_total", "Publish rounds of the relay that failed (each is retried) since the bus opened.")
	d.relaySetAside = add("relay_set_aside_total", "Events the relay set aside (the stream refuses them for good, or their outbox rows cannot be sent as they are) since the bus opened.")
	d.streamsRecreated = add("streams_recreated_total", "Streams the bus created again after they were deleted, since the bus opened.")
	d.txCommits = add("tx_commits_total", "SQLite transactions Bus.Tx committed since the bus opened.")
	d.walSyncFailed = add("wal_sync_failed", "1 once an fsync of the SQLite WAL (or a checkpoint's of the database file) failed: the relay then publishes no outbox event and transactional subscribers ack nothing until the process restarts (a failed fsync may have lost what it could not write).")
	d.walSyncs = add("wal_syncs_total", "fsyncs of the SQLite WAL that made commits durable (before a publish, an ack, a SyncFull Tx) since the bus opened; each covers every commit before it.")
	d.txCalls = add("tx_calls_total", "Bus.Tx calls committed since the bus opened (tx_calls/tx_commits is the mean group commit).")
	d.writerHeld = add("writer_held_seconds", "How long the current holder of the database's single writer has held it; 0 when it is free.")
	d.writersWaiting = add("writers_waiting", "Writes waiting for the database's single writer (Tx calls, the app's transactions, Boxcar's own).")

	d.subRunning = add("subscriber_running", "1 if the subscriber runs in this process, 0 if it is known to the database only.", sub)
	d.subPaused = add("subscriber_paused", "1 if an operator paused the subscriber's consumer.", sub)
	d.subPending = add("subscriber_pending_events", "Events of the stream the subscriber's consumer has not delivered yet.", sub)
	d.subUnacked = add("subscriber_unacked_events", "Events delivered to the subscriber and not acked yet.", sub)
	d.subInFlight = add("subscriber_in_flight_events", "Messages this process fetched for the subscriber and holds unacked.", sub)
	d.subStuckKeys = add("subscriber_stuck_keys", "Keys of the subscriber waiting to retry a failed event.", sub)
	d.subParkedKeys = add("subscriber_parked_keys", "Keys of the subscriber parked behind a dead letter (SubscribeOptions.ParkKeys).", sub)
	d.subHandled = add("subscriber_handled_total", "Outcomes of the subscriber since Subscribe: ok and skipped (already in the dedupe table) count events, failed counts failed handler attempts, dead_lettered events sent to the dead-letter stream.", sub, labelResult)
	d.subRedelivered = add("subscriber_redelivered_total", "Deliveries of messages delivered before, since Subscribe.", sub)
	d.subIgnored = add("subscriber_ignored_total", "Redeliveries dropped without handling (still held, or acked before), since Subscribe.", sub)
	d.subRecreated = add("subscriber_recreated_total", "Times the subscriber's consumer vanished and was created again, since Subscribe.", sub)
	d.subExpired = add("subscriber_expired_total", "Events that left the stream (retention) before the subscriber handled them: lost to it. Of all time.", sub)
	d.subDeliveryGaps = add("subscriber_delivery_gaps_total", "Times deliveries to the subscriber were lost in transit (a slow-consumer drop, a node's loss) and its consumer was reset to its ack floor, since Subscribe.", sub)
	d.subFetchRestarts = add("subscriber_fetch_restarts_total", "Times the subscriber's fetch was found stuck (events pending, none in flight, no pull waiting) and restarted, since Subscribe.", sub)
	d.subHandlerDuration = add("subscriber_handler_duration_seconds", "Duration of the subscriber's handler calls, successful or not, since Subscribe.", sub)
	d.subEndToEnd = add("subscriber_end_to_end_latency_seconds", "Time from PublishTx to the handler's commit (TxHandler) or return (HandlerFunc), per event handled, since Subscribe.", sub)
	d.subDeadLettersPending = add("subscriber_dead_letters_pending", "Dead letters of the subscriber nobody redrove or discarded yet.", sub)
	d.subDeadLettersStored = add("subscriber_dead_letters_stored", "Dead letters of the subscriber the dead-letter stream holds, acted on or not.", sub)

	d.hubConnected = add("hub_connected", "Leaf per binary (Config.Leaf): 1 while the leaf connection to the hub is up. Absent without Config.Leaf.")
	d.hubDown = add("hub_down_seconds", "Leaf per binary: how long the leaf connection has been down; 0 while up.")
	d.hubLinked = add("hub_linked", "Leaf per binary: 1 once the hub's aggregate stream sources this binary's stream.")
	d.hubLag = add("hub_source_lag_events", "Leaf per binary: this binary's events the hub's aggregate has not sourced yet, as the hub last said.")
	d.hubConflict = add("hub_conflict", "Leaf per binary: 1 if this binary cannot join the hub for good (its instance ID is another database's, or its layout is not the hub's) until an operator fixes it.")
	d.healthState = add("health_state", "Health of each component (bus, relay, outbox, subscriber), one series per state (ok, lagging, stalled, stopped, losing): 1 for the current state, 0 for the others.", labelComponent, sub, labelState)
	d.scrapeErrors = add("scrape_errors_total", "Reads of the bus that failed during scrapes (a closed bus fails the stats read), by read.", labelRead)
	return d
}
