// Package metrics exports a Bus's numbers to Prometheus: a Collector,
// registered on the app's own registry, never the global one.
//
//	reg := prometheus.NewRegistry()
//	if _, err := metrics.Register(reg, bus, metrics.Options{}); err != nil {
//		return err
//	}
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// Nothing is counted in this package: each scrape reads the bus afresh
// (Bus.Stats, Bus.Health, Bus.Subscribers, Bus.DeadLetterDepths, together
// within Options.ScrapeTimeout) and sends const metrics. A read that fails
// is counted in boxcar_scrape_errors_total{read} and its metrics are left
// out of that scrape, so one slow or failing read never fails the others.
// A closed bus sends boxcar_scrape_errors_total alone (its read="stats"
// counts each scrape). A scrape costs a few SQLite index lookups and about
// four in-process JetStream API requests per subscriber; each Health read
// also adds a sample to the bus's health window.
//
// # Counters and resets
//
// The bus's counters count since Open, a subscriber's since its Subscribe
// (a process's run of it): a restart or a re-Subscribe starts them at 0
// again. Prometheus's rate and increase read a decrease as a counter reset,
// so rates stay right; only the increase between the last scrape before
// the reset and the reset itself is lost. A subscriber that is known to the
// database but not running in this process has no run counters (no
// handled_total, no histograms): their series end at its Close and start
// again at its next Subscribe. Two counters are of all time, kept in the
// database: subscriber_expired_total and (as a gauge of rows)
// outbox_dead_rows.
//
// # Health
//
// boxcar_health_state is the enum pattern: per component, one series per
// state (ok, lagging, stalled, stopped, losing) valued 1 for the current
// state and 0 for the others, so that alerts select a state by label
// (boxcar_health_state{state="stalled"} == 1) and dashboards can show
// state changes over time. component is "bus" (the worst of all), "relay",
// "outbox" or "subscriber" (with its subscriber label). The states are
// Bus.Health's, judged over Config.Health.Window.
//
// # Metrics
//
// With the default namespace "boxcar". Labels: subscriber (a subscriber's
// name; never a key or an event ID), result, component, state, read.
//
//	boxcar_outbox_lag_events                  gauge      events committed, not yet in the stream
//	boxcar_outbox_oldest_age_seconds          gauge      wait of the oldest of them (0: caught up)
//	boxcar_outbox_dead_rows                   gauge      events set aside for good (cannot be published), all time
//	boxcar_relay_published_total              counter    events published into the stream
//	boxcar_relay_failures_total               counter    failed publish rounds (retried)
//	boxcar_relay_set_aside_total              counter    events set aside (poison for the stream)
//	boxcar_streams_recreated_total            counter    streams created again after a deletion
//	boxcar_tx_commits_total                   counter    SQLite transactions of Bus.Tx
//	boxcar_tx_calls_total                     counter    Bus.Tx calls in them
//	boxcar_wal_syncs_total                    counter    WAL fsyncs that made commits durable (each shared by all before it)
//	boxcar_wal_sync_failed                    gauge      1 once a WAL or checkpoint fsync failed: no outbox publish, no transactional ack until a restart
//	boxcar_writer_held_seconds                gauge      how long the single writer's holder has held it
//	boxcar_writers_waiting                    gauge      writes waiting for it
//	boxcar_subscriber_running                 gauge      {subscriber} 1 if it runs in this process
//	boxcar_subscriber_paused                  gauge      {subscriber} 1 if paused by an operator
//	boxcar_subscriber_pending_events          gauge      {subscriber} events not delivered yet
//	boxcar_subscriber_unacked_events          gauge      {subscriber} delivered, not acked
//	boxcar_subscriber_in_flight_events        gauge      {subscriber} fetched and held by this process
//	boxcar_subscriber_stuck_keys              gauge      {subscriber} keys waiting to retry a failed event
//	boxcar_subscriber_parked_keys             gauge      {subscriber} keys parked behind a dead letter
//	boxcar_subscriber_handled_total           counter    {subscriber, result="ok|skipped|failed|dead_lettered"}
//	boxcar_subscriber_redelivered_total       counter    {subscriber} deliveries of messages delivered before
//	boxcar_subscriber_ignored_total           counter    {subscriber} redeliveries dropped (held, or acked before)
//	boxcar_subscriber_recreated_total         counter    {subscriber} consumer created again after it vanished
//	boxcar_subscriber_expired_total           counter    {subscriber} events lost to retention before handled, all time
//	boxcar_subscriber_delivery_gaps_total     counter    {subscriber} deliveries lost in transit, consumer reset
//	boxcar_subscriber_fetch_restarts_total    counter    {subscriber} stuck fetches restarted
//	boxcar_subscriber_handler_duration_seconds histogram {subscriber} handler calls, successful or not
//	boxcar_subscriber_end_to_end_latency_seconds histogram {subscriber} PublishTx to handled, per event
//	boxcar_subscriber_dead_letters_pending    gauge      {subscriber} dead letters nobody acted on
//	boxcar_subscriber_dead_letters_stored     gauge      {subscriber} dead letters the stream holds
//	boxcar_hub_connected                      gauge      leaf per binary: 1 while the leaf connection is up
//	boxcar_hub_down_seconds                   gauge      leaf per binary: how long it has been down
//	boxcar_hub_linked                         gauge      leaf per binary: 1 once the hub sources this stream
//	boxcar_hub_source_lag_events              gauge      leaf per binary: events the hub has not sourced yet
//	boxcar_hub_conflict                       gauge      leaf per binary: 1 if it cannot join the hub for good
//	boxcar_health_state                       gauge      {component, subscriber, state} 1 for the current state
//	boxcar_scrape_errors_total                counter    {read="stats|health|subscribers|dead_letter_depths|consumer"}
//
// In handled_total, ok and skipped (found in the dedupe table) count
// events, failed counts failed handler attempts (an event retried five
// times counts five), and dead_lettered counts events sent to the
// dead-letter stream (not the letters of a parked key, which are no
// failure of their own): the results do not add up to events. The
// histograms' buckets are Boxcar's (100 µs to an hour); a TxHandler's
// handler can run more than once per attempt (a batch rerun with
// savepoints), so handler_duration's count can exceed ok + failed.
//
// deploy/prometheus/boxcar.rules.yml holds alerting rules on these names;
// docs/RUNBOOK.md says what to do when each fires.
package metrics
