package boxcar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/boxcar-bus/boxcar/sqlite"
)

// Stats are the numbers to alert on: how far the relay and each subscriber
// are behind, and what went wrong. Nothing in Boxcar fails silently; if it
// fails, it shows here.
type Stats struct {
	// OutboxLag is the number of committed events not yet in the stream
	// (max seq - cursor; rolled-back gaps make it an upper bound).
	OutboxLag int64 `json:"outbox_lag"`
	// OutboxAge is how long the oldest event not yet in the stream has
	// waited; 0 when the relay is caught up.
	OutboxAge time.Duration `json:"outbox_age_ns"`
	// RelayCursor is the outbox seq of the last event known to be in the stream.
	RelayCursor int64 `json:"relay_cursor"`
	// RelayPublished counts events the relay published since Open.
	RelayPublished int64 `json:"relay_published"`
	// RelayFailures counts publish rounds that failed (each is retried).
	RelayFailures int64 `json:"relay_failures"`
	// RelaySetAside counts events the relay moved to boxcar_outbox_dead since
	// Open: the stream refused them for good (larger than its limits), and
	// they would have held every later event behind them. OutboxDead is how
	// many such events the database holds, of all time; list them with
	// Bus.OutboxDeadLetters.
	RelaySetAside int64 `json:"relay_set_aside"`
	OutboxDead    int   `json:"outbox_dead"`
	// StreamsRecreated counts the streams the bus created again since Open
	// after an operator deleted them.
	StreamsRecreated int64 `json:"streams_recreated"`
	// TxCommits counts the SQLite transactions Bus.Tx committed since Open,
	// TxCalls the Tx calls committed in them: TxCalls/TxCommits is the mean
	// size of a group commit.
	TxCommits int64 `json:"tx_commits"`
	TxCalls   int64 `json:"tx_calls"`
	// WALSyncs counts the fsyncs of the WAL that made commits durable since
	// Open (before the relay published them, a subscriber acked them, or
	// a SyncFull Tx returned): each covers every commit made before it
	// began, so WALSyncs per event falls as the load rises.
	WALSyncs uint64 `json:"wal_syncs"`
	// WALSyncFailed is the failed fsync of the WAL that stopped the relay
	// and the transactional subscribers' acks ("": none). A failed fsync may have lost
	// what it could not write, and no later one can prove otherwise, so
	// the bus reports nothing durable again until it is opened again:
	// check the disk, then restart the process (docs/RUNBOOK.md).
	WALSyncFailed string `json:"wal_sync_failed,omitempty"`
	// WriterHeldFor is how long the current holder of the database's only
	// writer has held it (0 when free), and WriterWaiting how many writes
	// wait for it (Tx calls, the app's transactions, Boxcar's own). Seconds
	// held mean a transaction of the app's left open or a Tx function or
	// handler that hangs: every writer waits, and fails after the busy
	// timeout with ErrBusy.
	WriterHeldFor time.Duration `json:"writer_held_for_ns"`
	WriterWaiting int           `json:"writer_waiting"`
	// Subscribers, by name. A group's slots run here are listed one by
	// one, by their consumers' names (name_slotN).
	Subscribers []SubscriberStats `json:"subscribers"`

	// Topology is "single", "leaf" or "shared" (see Config.Leaf,
	// Config.NATSURL, Config.Cluster); InstanceID this instance's.
	Topology   string `json:"topology"`
	InstanceID string `json:"instance_id"`
	// Hub is the leaf's link to its hub (nil unless Config.Leaf): whether
	// it is connected, how far the hub's aggregate is behind this binary's
	// stream (SourceLag), and what went wrong.
	Hub *HubStatus `json:"hub,omitempty"`
	// Groups are this instance's groups (SubscribeOptions.Group): the slots
	// it runs, the live members.
	Groups []GroupStatus `json:"groups,omitempty"`
}

// SubscriberStats are one subscriber's numbers.
type SubscriberStats struct {
	Name string `json:"name"`
	// Pending is how many events of the stream the consumer has not yet
	// delivered; Unacked how many it delivered and awaits acks for.
	// Consumer lag is Pending + Unacked.
	Pending uint64 `json:"pending"`
	Unacked int    `json:"unacked"`
	// InFlight is how many fetched messages this process holds unacked.
	InFlight int `json:"in_flight"`
	// StuckKeys is how many keys are waiting to retry a failed event.
	StuckKeys int `json:"stuck_keys"`
	// Handled counts events handled successfully since Subscribe; Skipped
	// those found already handled in the dedupe table.
	Handled int64 `json:"handled"`
	Skipped int64 `json:"skipped"`
	// Failures counts handler errors and panics (each retried or
	// dead-lettered); DeadLettered those sent to the dead-letter stream.
	Failures     int64 `json:"failures"`
	DeadLettered int64 `json:"dead_lettered"`
	// Redelivered counts deliveries of messages delivered before: after a
	// crash or restart (the consumer's reset to its ack floor), a timeout or
	// a lost ack.
	Redelivered int64 `json:"redelivered"`
	// Ignored counts redeliveries dropped without handling: of messages this
	// process still held, or had acked before (the redelivery crossed the
	// ack, or a restart's reset redelivered it).
	Ignored int64 `json:"ignored"`
	// Recreated counts the times the subscriber's consumer vanished (an
	// operator deleted it, or its stream) and was created again.
	Recreated int64 `json:"recreated"`
	// DeliveryGaps counts the times deliveries were lost in transit (a
	// slow-consumer drop, a reconnect, a cluster node that died): each
	// time the consumer was reset to its ack floor, to keep per-key order.
	DeliveryGaps int64 `json:"delivery_gaps"`
	// FetchRestarts counts the times its fetch was found stuck (events
	// waiting at the server, no pull request waiting there, room in the
	// dispatcher, on two looks 10 s apart) and restarted with a reset to
	// its ack floor (not counted in DeliveryGaps).
	FetchRestarts int64 `json:"fetch_restarts"`
	// Expired counts events that left the stream (Config.Retention) before
	// this subscriber handled them: lost for it, for good. For a subscriber
	// filtered by type it is an upper bound (stream messages in the gap, of
	// any type). Not zero means a subscriber fell behind its retention.
	Expired int64 `json:"expired"`
	// HandlerDuration is the distribution of handler calls' durations
	// (successful or not); EndToEnd, of the time from PublishTx to the
	// commit (TxHandler) or return (HandlerFunc) of the handler, for every
	// event handled: the latency users feel.
	HandlerDuration Histogram `json:"handler_duration"`
	EndToEnd        Histogram `json:"end_to_end"`
	// Err is why the consumer's numbers (Pending, Unacked) could not be
	// read, if they could not; the rest is this process's own.
	Err string `json:"err,omitempty"`
	// Group and Slot: the group and slot a group slot's numbers are of
	// (Name is then the slot's consumer).
	Group string `json:"group,omitempty"`
	Slot  int    `json:"slot,omitempty"`
	// Waiting is why a leaf's subscriber has not started yet: the hub has
	// not answered since Subscribe.
	Waiting string `json:"waiting,omitempty"`
}

// Stats reads the bus's numbers. The outbox part costs two index lookups.
func (b *Bus) Stats(ctx context.Context) (Stats, error) {
	if b.closed.Load() {
		return Stats{}, ErrClosed
	}
	ws := b.w.Stats()
	st := Stats{
		RelayCursor:      b.relay.cursor.Load(),
		RelayPublished:   b.relay.published.Load(),
		RelayFailures:    b.relay.failures.Load(),
		RelaySetAside:    b.relay.setAsideCount.Load(),
		StreamsRecreated: b.streamsRecreated.Load(),
		TxCommits:        ws.TxCommits,
		TxCalls:          ws.TxCalls,
		WALSyncs:         ws.WALSyncs,
		WALSyncFailed:    failureText(ws.WALSyncFailure),
		WriterHeldFor:    ws.LockHeldFor,
		WriterWaiting:    ws.AppWaiting + ws.BackgroundWaiting,
	}
	_, maxSeq, err := sqlite.OutboxBounds(ctx, b.db)
	if err != nil {
		return st, fmt.Errorf("boxcar: stats: %w", err)
	}
	st.OutboxLag = max(maxSeq-st.RelayCursor, 0)
	if ns, ok, err := sqlite.OldestAfter(ctx, b.db, st.RelayCursor); err != nil {
		return st, fmt.Errorf("boxcar: stats: %w", err)
	} else if ok {
		st.OutboxAge = time.Since(time.Unix(0, ns))
	}
	if _, st.OutboxDead, _, err = sqlite.DeadOutboxRows(ctx, b.db, 0, "", 0, 0); err != nil {
		return st, fmt.Errorf("boxcar: stats: %w", err)
	}
	b.mu.Lock()
	subs := make([]*Subscription, 0, len(b.subs))
	for _, s := range b.subs {
		if s != nil {
			subs = append(subs, s)
		}
	}
	b.mu.Unlock()
	sort.Slice(subs, func(i, j int) bool { return subs[i].name < subs[j].name })
	for _, s := range subs {
		if s.group != nil {
			st.Groups = append(st.Groups, s.group.status())
			slots := s.group.slotSubs()
			for _, i := range slices.Sorted(maps.Keys(slots)) {
				ss, _ := slots[i].Stats(ctx)
				st.Subscribers = append(st.Subscribers, ss)
			}
			continue
		}
		ss, _ := s.Stats(ctx) // a subscriber's error is in its Err
		st.Subscribers = append(st.Subscribers, ss)
	}
	st.Topology, st.InstanceID = string(b.cfg.topology()), b.cfg.InstanceID
	if b.hub != nil {
		hs := b.hub.status()
		st.Hub = &hs
	}
	return st, nil
}

// Stats reads the subscriber's numbers, asking the server for its lag. If
// the server cannot say, the error is returned and also set in Err, and the
// rest of the numbers are there.
func (s *Subscription) Stats(ctx context.Context) (SubscriberStats, error) {
	if s.group != nil {
		return s.groupStats(ctx)
	}
	d, cons := s.current()
	ss := SubscriberStats{
		Name:            s.consumer,
		Handled:         s.stats.handled.Load(),
		Skipped:         s.stats.skipped.Load(),
		Failures:        s.stats.failures.Load(),
		DeadLettered:    s.stats.deadLettered.Load(),
		Redelivered:     s.stats.redelivered.Load(),
		Ignored:         s.stats.ignored.Load(),
		Recreated:       s.stats.recreated.Load(),
		DeliveryGaps:    s.stats.deliveryGaps.Load(),
		FetchRestarts:   s.stats.fetchRestarts.Load(),
		Expired:         s.stats.expired.Load(),
		HandlerDuration: s.stats.handlerTime.snapshot(),
		EndToEnd:        s.stats.endToEnd.snapshot(),
	}
	if s.slot != nil {
		ss.Group, ss.Slot = s.name, s.slot.idx
	}
	if d == nil {
		ss.Waiting = s.waitingFor()
		return ss, nil
	}
	d.mu.Lock()
	ss.InFlight = len(d.held)
	ss.StuckKeys = d.waiting
	d.mu.Unlock()
	info, err := cons.Info(ctx)
	if err != nil {
		ss.Err = err.Error()
		return ss, fmt.Errorf("boxcar: stats of %s: %w", s.name, err)
	}
	ss.Pending = info.NumPending
	ss.Unacked = info.NumAckPending
	return ss, nil
}

// OutboxDeadLetter is an event the relay set aside because the stream
// refuses it for good (see Stats.RelaySetAside).
type OutboxDeadLetter struct {
	Seq     int64             `json:"seq"` // its outbox seq (which a later event may reuse)
	ID      string            `json:"id"`
	Type    string            `json:"type"`
	Key     string            `json:"key"`
	Headers map[string]string `json:"headers"`
	Data    []byte            `json:"data"`
	Created time.Time         `json:"created"` // when PublishTx wrote it
	// Reason is "too_large" (the stream refused it), or, for a row written
	// or edited by hand that cannot be sent as it is, "bad_id",
	// "bad_type", "bad_key", "bad_headers", "bad_created_ns" or
	// "bad_subject".
	Reason string    `json:"reason"`
	Error  string    `json:"error"`  // the server's refusal, or what is wrong with the row
	SetAt  time.Time `json:"set_at"` // when the relay set it aside
}

// OutboxDeadLetters returns up to limit events the relay set aside, oldest
// first, after the one with outbox seq afterSeq and ID afterID (zero values:
// from the first), and how many there are in all. The page also ends at the
// event that brings its data and headers to MaxPageBytes (these events are
// the large ones); more says that events may follow it: page on from the
// last one.
func (b *Bus) OutboxDeadLetters(ctx context.Context, afterSeq int64, afterID string, limit int) (_ []OutboxDeadLetter, total int, more bool, _ error) {
	if b.closed.Load() {
		return nil, 0, false, ErrClosed
	}
	rows, total, more, err := sqlite.DeadOutboxRows(ctx, b.db, afterSeq, afterID, limit, MaxPageBytes)
	if err != nil {
		return nil, 0, false, fmt.Errorf("boxcar: outbox dead letters: %w", err)
	}
	out := make([]OutboxDeadLetter, 0, len(rows))
	for _, r := range rows {
		d := OutboxDeadLetter{Seq: r.Seq, ID: r.ID, Type: r.Type, Key: r.Key, Data: r.Data,
			Created: time.Unix(0, r.CreatedNS), Reason: r.Reason, Error: r.Error, SetAt: time.Unix(0, r.DeadNS)}
		if len(r.Headers) > 0 {
			if err := json.Unmarshal(r.Headers, &d.Headers); err != nil {
				d.Error += fmt.Sprintf(" (and its headers are unreadable: %v)", err)
			}
		}
		out = append(out, d)
	}
	return out, total, more, nil
}

// groupStats sums the numbers of the group's slots run here (Name is the
// group's; Pending and Unacked are of those slots' consumers).
func (s *Subscription) groupStats(ctx context.Context) (SubscriberStats, error) {
	sum := SubscriberStats{Name: s.name, Group: s.name}
	var errs []error
	for _, sub := range s.group.slotSubs() {
		ss, err := sub.Stats(ctx)
		if err != nil {
			errs = append(errs, err)
		}
		sum.Pending += ss.Pending
		sum.Unacked += ss.Unacked
		sum.InFlight += ss.InFlight
		sum.StuckKeys += ss.StuckKeys
		sum.Handled += ss.Handled
		sum.Skipped += ss.Skipped
		sum.Failures += ss.Failures
		sum.DeadLettered += ss.DeadLettered
		sum.Redelivered += ss.Redelivered
		sum.Ignored += ss.Ignored
		sum.Recreated += ss.Recreated
		sum.DeliveryGaps += ss.DeliveryGaps
		sum.FetchRestarts += ss.FetchRestarts
		sum.Expired += ss.Expired
	}
	err := errors.Join(errs...)
	if err != nil {
		sum.Err = err.Error()
	}
	return sum, err
}

// failureText is err's text, "" for nil.
func failureText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
