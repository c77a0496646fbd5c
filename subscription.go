package boxcar

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/boxcar-bus/boxcar/internal/lifecycle"
	bjs "github.com/boxcar-bus/boxcar/jetstream"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// Subscription is a running subscriber. Close it, or close the Bus.
//
// It owns a durable consumer and, on it, a dispatcher (dispatch.go). Its
// supervisor goroutine watches both: when the consumer vanishes (an
// operator deleted it, or the stream), it stops the dispatcher, creates the
// consumer again where the subscriber was and starts a new dispatcher; and
// every little while it checks for events that left the stream before the
// subscriber handled them.
//
// What a subscriber needs across restarts is in its boxcar_subscribers row:
// its types, the stream seqs it acked above its consumer's ack floor when it
// last closed cleanly (so that a restart skips them instead of handling them
// again), catch-up rules after types were added, and the expired count.
type Subscription struct {
	b    *Bus
	name string
	// consumer names the JetStream consumer and the boxcar_subscribers row:
	// the subscriber's name, or a group slot's (see group.go).
	consumer string
	slot     *groupSlot // set on a group slot's subscription
	group    *group     // set on a group's public Subscription, which has no consumer of its own
	opts     SubscribeOptions
	h        Handler
	stats    subscriberStats
	sup      *lifecycle.Group // the supervisor
	lost     chan error       // a dispatcher reports that its consumer vanished, or lost deliveries
	gaps     gapStreak        // paces the resets after lost deliveries (deliverygap.go)
	// stalledLooks counts the supervisor's looks in a row that saw a stuck
	// fetch (deliverygap.go); the supervisor's goroutine alone uses it.
	stalledLooks int

	opMu          sync.Mutex // recover and replay replace the dispatcher one at a time
	mu            sync.Mutex
	cons          jetstream.Consumer
	d             *dispatcher
	streamCreated time.Time // the creation time of the stream the consumer reads
	row           sqlite.SubscriberRow

	closeOnce sync.Once
	closeErr  error

	// waiting is why a leaf's subscriber has not started yet ("" once it
	// has): the hub is unreachable.
	waiting string
}

func (s *Subscription) setWaiting(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waiting = ""
	if err != nil {
		s.waiting = err.Error()
	}
}

func (s *Subscription) waitingFor() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waiting
}

func newSubscription(b *Bus, name string, h Handler, opts SubscribeOptions) *Subscription {
	return &Subscription{b: b, name: name, consumer: name, h: h, opts: opts, sup: lifecycle.New(), lost: make(chan error, 1)}
}

// stream is the stream the subscriber consumes: the bus's, or the hub's
// aggregate (nil until the hub was first reached).
func (s *Subscription) stream() jetstream.Stream { return s.b.subStream() }

// ensureStream makes sure the stream the subscriber reads exists and
// returns its info: the bus's own, created again if an operator deleted it,
// or the hub's aggregate, which the hub link creates again.
func (s *Subscription) ensureStream(ctx context.Context) (*jetstream.StreamInfo, error) {
	if s.b.hub == nil {
		return s.b.ensureStreams(ctx)
	}
	st := s.stream()
	if st == nil {
		return nil, errHubNotLinked
	}
	return st.Info(ctx)
}

// Name returns the subscriber's name.
func (s *Subscription) Name() string { return s.name }

func (s *Subscription) kind() string {
	if s.h.tx != nil {
		return "tx"
	}
	return "plain"
}

func (s *Subscription) filters() []string {
	if s.slot != nil {
		return s.slot.filters()
	}
	return typeFilters(s.b.layout, s.opts.Types)
}

func typeFilters(l bjs.Layout, types []string) []string {
	filters := make([]string, 0, len(types))
	for _, t := range types {
		filters = append(filters, l.TypeFilter(t))
	}
	return filters
}

func (s *Subscription) consumerConfig(startSeq uint64) bjs.ConsumerConfig {
	return bjs.ConsumerConfig{
		Name:          s.consumer,
		Filters:       s.filters(),
		AckWait:       s.opts.AckWait,
		MaxAckPending: s.opts.MaxInFlight + fetchBatch(s.opts) + 64,
		StartSeq:      startSeq,
		StartTime:     s.opts.Start.at,
		StartNew:      s.opts.Start.now,
	}
}

// dispatcher returns the current dispatcher and consumer.
func (s *Subscription) current() (*dispatcher, jetstream.Consumer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.d, s.cons
}

// start provisions the consumer, decides what the dispatcher must skip or
// recover, and starts it and the supervisor.
func (s *Subscription) start(ctx context.Context) error {
	b := s.b
	row, found, err := sqlite.LoadSubscriber(ctx, b.db, s.consumer)
	if err != nil {
		return err
	}
	si, err := bjs.StreamInfo(ctx, s.stream())
	if err != nil {
		return fmt.Errorf("stream info: %w", err)
	}
	if found && row.StreamCreatedNS != si.Created.UnixNano() {
		// A new stream (the store was lost, or the stream recreated while
		// the app was down): its seqs start over, and what the row knows
		// in stream seqs is of the old one. The relay refills the new
		// stream from the outbox; the dedupe table skips what was handled.
		row.Acked, row.Catchup, row.ExpiredThrough, row.ReplayThrough, row.ReplayNoDedupe = nil, nil, 0, 0, false
	}
	start, err := s.resumeAfterLostConsumer(ctx, row, found)
	if err != nil {
		return err
	}
	cons, err := bjs.EnsureConsumer(ctx, s.stream(), s.consumerConfig(start))
	if err != nil {
		return err
	}
	info := cons.CachedInfo()
	seed := dispatcherSeed{floor: info.AckFloor.Stream, acked: row.Acked, catchup: row.Catchup}
	if start > 0 {
		seed.floor = start - 1
	}
	if row.ReplayThrough > info.AckFloor.Stream {
		seed.replayThrough, seed.replayNoDedupe = row.ReplayThrough, row.ReplayNoDedupe
	}
	if seed.parked, err = s.parkedKeys(ctx); err != nil {
		return err
	}
	resetTo, rule, err := s.typesAdded(ctx, row, found, info)
	if err != nil {
		return err
	}
	if rule != nil {
		seed.catchup = append(seed.catchup, *rule)
	}
	if err := s.rewind(ctx, resetTo, info, &seed); err != nil {
		return err
	}
	handling, hasHandling, err := sqlite.HandlingOf(ctx, b.db, s.consumer)
	if err != nil {
		return err
	}
	if found && hasHandling && row.StoppedNS == 0 && row.StreamCreatedNS == si.Created.UnixNano() {
		// The last process left a record of its runs alone and did not
		// close: whatever its consumer shows now (made again by an
		// operator, reset to added types' history), what it delivers may
		// be what that process died on (isolation.go).
		seed.isolate = true
	}
	if seed.isolate && (!found || row.StreamCreatedNS == si.Created.UnixNano()) {
		seed.handling = handling
	}
	now := time.Now().UnixNano()
	if !found {
		row = sqlite.SubscriberRow{Name: s.consumer, CreatedNS: now}
	}
	row.Stream, row.Types, row.Kind, row.StartedNS, row.StoppedNS = b.subStreamName(), sortedTypes(s.opts.Types), s.kind(), now, 0
	row.Acked, row.Catchup, row.StreamCreatedNS = nil, seed.catchup, si.Created.UnixNano()
	err = b.w.Write(ctx, func(tx *sql.Tx) error {
		if hasHandling && !seed.isolate {
			// Nothing a stopped process fetched is left: its attempts
			// are over.
			if err := sqlite.DeleteHandling(ctx, tx, s.consumer); err != nil {
				return err
			}
		}
		return sqlite.SaveSubscriber(ctx, tx, row)
	})
	if err != nil {
		return err
	}
	s.stats.expired.Store(row.Expired)
	s.mu.Lock()
	s.cons, s.streamCreated, s.row = cons, si.Created, row
	s.d = newDispatcher(s, cons, seed)
	s.mu.Unlock()
	if err := s.d.start(); err != nil {
		return err
	}
	s.checkExpired(ctx)
	s.sup.Go(s.supervise)
	return nil
}

// rewind moves the consumer back where start found it must deliver from:
// to resetTo, the first event of types added to the subscription, or to its
// ack floor when messages of a dead connection are still unacked.
func (s *Subscription) rewind(ctx context.Context, resetTo uint64, info *jetstream.ConsumerInfo, seed *dispatcherSeed) error {
	switch {
	case resetTo > 0:
		// Deliver the added types' history: back to their first event, with
		// the old types' events up to the old ack floor skipped.
		if _, err := s.stream().ResetConsumerToSequence(ctx, s.consumer, resetTo); err != nil {
			return fmt.Errorf("reset consumer to the added types' first event (stream seq %d): %w", resetTo, err)
		}
		seed.deliveredBefore, seed.floor = info.Delivered.Stream, resetTo-1
		// The reset redelivers what a stopped process left unacked too:
		// one may have killed it (isolation.go), as below.
		seed.isolate = info.NumAckPending > 0
	case info.NumAckPending > 0:
		// Messages a crashed (or closed) process fetched and never acked
		// would wait out AckWait while newer ones of their keys are
		// delivered: a reset to the ack floor redelivers them now, in order.
		// What it redelivers that was handled is skipped: by the acked
		// ranges a clean Close saved, else (after a crash) by the dedupe
		// table (a HandlerFunc is at-least-once there).
		if _, err := s.stream().ResetConsumer(ctx, s.consumer); err != nil {
			return fmt.Errorf("reset consumer to its ack floor: %w", err)
		}
		// The reset starts delivery counts over: what the consumer had
		// delivered before counts as redelivered.
		seed.deliveredBefore = info.Delivered.Stream
		// The process that fetched them may have been killed by a handler:
		// the first event runs alone (isolation.go).
		seed.isolate = true
	default:
		// No reset: the consumer's deliveries go on from its last.
		seed.delivered = info.Delivered.Consumer
	}
	return nil
}

// resumeAfterLostConsumer returns where to create the consumer of a
// subscriber that ran before on this stream and whose consumer is gone (an
// operator deleted it while the subscriber was not running): after what it
// is known to have handled, not from the stream's first event, which would
// hand a HandlerFunc the whole retention again. 0 when the consumer exists,
// or nothing is known.
func (s *Subscription) resumeAfterLostConsumer(ctx context.Context, row sqlite.SubscriberRow, found bool) (uint64, error) {
	if !found || row.ExpiredThrough == 0 {
		return 0, nil
	}
	err := bjs.RetryTransient(ctx, func(ctx context.Context) error { _, err := s.stream().Consumer(ctx, s.consumer); return err })
	if err == nil {
		return 0, nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, fmt.Errorf("read consumer %s: %w", s.consumer, err)
	}
	start := row.ExpiredThrough + 1
	s.b.log.Error("boxcar: subscriber's consumer is gone (deleted while the subscriber was not running): created it again after the events it is known to have handled",
		logSub, s.name, logFromSeq, start)
	s.stats.recreated.Add(1)
	return start, nil
}

// parkedKeys reads the keys the subscriber parked, and their heads.
func (s *Subscription) parkedKeys(ctx context.Context) (map[string]uint64, error) {
	rows, err := sqlite.ParkedKeys(ctx, s.b.db, s.name)
	if err != nil {
		return nil, err
	}
	parked := make(map[string]uint64, len(rows))
	for _, p := range rows {
		parked[p.Key] = p.HeadSeq
	}
	return parked, nil
}

func sortedTypes(types []string) []string {
	out := slices.Clone(types)
	slices.Sort(out)
	return out
}

// typesAdded compares the subscriber's types with those it had: when it
// gained types whose events the stream holds below its position, it returns
// the stream seq to rewind to and the rule that skips the old types' events
// already handled.
func (s *Subscription) typesAdded(ctx context.Context, row sqlite.SubscriberRow, found bool, info *jetstream.ConsumerInfo) (uint64, *sqlite.CatchupRule, error) {
	if !found || len(row.Types) == 0 {
		return 0, nil, nil // new, or it had every type already
	}
	var added []string
	if len(s.opts.Types) == 0 {
		added = nil // every type now: rewind for all of them
	} else {
		for _, t := range s.opts.Types {
			if !slices.Contains(row.Types, t) {
				added = append(added, t)
			}
		}
		if len(added) == 0 {
			return 0, nil, nil
		}
	}
	filters := typeFilters(s.b.layout, added)
	if len(added) == 0 {
		filters = []string{s.b.layout.All()}
	}
	if s.slot != nil {
		filters = s.slot.filtersOf(added)
	}
	first, ok, err := bjs.FirstMatching(ctx, s.b.subJS, s.stream(), filters, 1)
	if err != nil || !ok || first > info.Delivered.Stream {
		return 0, nil, err // no history below the consumer's position
	}
	if cfg := info.Config; cfg.DeliverPolicy == jetstream.DeliverByStartSequencePolicy {
		first = max(first, cfg.OptStartSeq) // the server refuses to go below a consumer's start
	}
	// The old types' events up to the ack floor were handled; above it, the
	// acked ranges tell, and the unacked ones run.
	rule := &sqlite.CatchupRule{Types: row.Types, Below: info.AckFloor.Stream}
	s.b.log.Info("boxcar: subscriber gained types: delivering their history",
		logSub, s.name, logTypes, added, logFromSeq, first)
	return first, rule, nil
}

// Close stops fetching, waits up to ctx for the handlers in flight to finish
// (then cancels their contexts) and leaves the rest unacked: the consumer is
// durable, a new Subscribe resumes where this one stopped, and skips what
// this one acked. Calling Close again returns the first result.
func (s *Subscription) Close(ctx context.Context) error {
	s.closeOnce.Do(func() { s.closeErr = s.close(ctx, s.stopAll(ctx)) })
	return s.closeErr
}

// close finishes a Close whose stop returned stopErr: it saves what a
// restart needs and leaves the bus.
func (s *Subscription) close(ctx context.Context, stopErr error) error {
	if stopErr == nil && s.group == nil {
		s.saveAtClose(ctx)
	}
	s.b.mu.Lock()
	if s.slot == nil {
		delete(s.b.subs, s.name)
	}
	s.b.mu.Unlock()
	return stopErr
}

// closeAll closes subs: it stops every one of them before any saves its
// state (a save waits for the writer, which a subscriber still running
// could hold with a slow batch).
func closeAll(ctx context.Context, subs []*Subscription) []error {
	stopErrs := make([]error, len(subs))
	for i, s := range subs {
		stopErrs[i] = s.stopAll(ctx)
	}
	var errs []error
	for i, s := range subs {
		s.closeOnce.Do(func() { s.closeErr = s.close(ctx, stopErrs[i]) })
		if s.closeErr != nil {
			errs = append(errs, s.closeErr)
		}
	}
	return errs
}

// stopAll stops the supervisor and the dispatcher (a group's: its slots
// held here).
func (s *Subscription) stopAll(ctx context.Context) error {
	if s.group != nil {
		return s.group.close(ctx)
	}
	errSup := s.sup.Stop(ctx)
	d, _ := s.current()
	var err error
	if d != nil {
		err = d.stop(ctx)
	}
	if err == nil && errSup != nil {
		err = fmt.Errorf("boxcar: subscriber %s: supervisor: %w", s.name, errSup)
	}
	return err
}

// saveAtClose saves what a restart needs: the acked ranges above the
// consumer's ack floor. Failing that (the server is gone), a restart handles
// them again, which is at-least-once as after a crash.
func (s *Subscription) saveAtClose(ctx context.Context) {
	d, cons := s.current()
	if d == nil {
		return // never started (waiting for the hub)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		s.b.log.Warn("boxcar: subscriber could not read its consumer at close: a restart handles again what it acked above its ack floor",
			logSub, s.name, logError, err)
		return
	}
	d.noteFloor(info.AckFloor.Stream)
	s.mu.Lock()
	row := s.row
	row.Acked, row.Catchup = d.ackedRanges(), d.catchupRules()
	row.ExpiredThrough = max(row.ExpiredThrough, info.AckFloor.Stream) // handled through: where a lost consumer resumes
	row.StoppedNS = time.Now().UnixNano()
	row.Expired = s.stats.expired.Load()
	s.mu.Unlock()
	if err := s.b.w.Write(ctx, func(tx *sql.Tx) error { return sqlite.SaveSubscriber(ctx, tx, row) }); err != nil {
		s.b.log.Warn("boxcar: subscriber could not save its state at close", logSub, s.name, logError, err)
	}
}

// supervisorEvery is how often the supervisor reads the consumer: to trim
// the acked ranges, to finish catch-ups and to look for expired events.
const supervisorEvery = 10 * time.Second

// supervise recovers the consumer when it vanishes, and keeps the
// subscriber's bookkeeping current.
func (s *Subscription) supervise(ctx context.Context) {
	t := time.NewTicker(supervisorEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-s.lost:
			s.recover(ctx, err)
		case <-t.C:
			if err := s.checkExpired(ctx); consumerGone(err) {
				// A consumer deleted while none of its pull requests waited
				// at the server sends no "consumer deleted" to the fetch
				// loop: its next pulls find no responder, which nats.go's
				// iterator swallows. Reading the consumer here finds it.
				s.recover(ctx, err)
			} else {
				s.checkStalledFetch(ctx) // deliverygap.go
			}
		}
	}
}

// recover makes a new consumer and dispatcher after the consumer vanished,
// retrying with backoff until it works or the subscription stops.
func (s *Subscription) recover(ctx context.Context, cause error) {
	s.opMu.Lock()
	defer s.opMu.Unlock()
	if fd := (*fromDispatcher)(nil); errors.As(cause, &fd) {
		if cur, _ := s.current(); fd.d != cur {
			return // from a dispatcher since replaced
		}
	}
	if errors.Is(cause, errDeliveryGap) {
		s.resetAfterGap(ctx, cause) // deliverygap.go
		return
	}
	b := s.b
	old, cons := s.current()
	if _, err := cons.Info(ctx); !consumerGone(err) {
		// Already made again (the fetch loop's report and the
		// supervisor's read of one deletion), or the server cannot say:
		// the next tick looks again.
		return
	}
	stopCtx, cancel := context.WithTimeout(ctx, s.opts.HandlerTimeout+5*time.Second)
	old.stop(stopCtx)
	cancel()
	for wait := 100 * time.Millisecond; ctx.Err() == nil; wait = min(2*wait, 10*time.Second) {
		err := s.recreate(ctx, old, cause)
		if err == nil {
			return
		}
		b.log.Error("boxcar: subscriber could not recreate its consumer; retrying", logSub, s.name, logError, err, logRetryIn, wait)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

func (s *Subscription) recreate(ctx context.Context, old *dispatcher, cause error) error {
	b := s.b
	si, err := s.ensureStream(ctx)
	if err != nil {
		return err
	}
	seed := dispatcherSeed{catchup: old.catchupRules(), replayThrough: old.replayThrough, replayNoDedupe: old.replayNoDedupe}
	if seed.parked, err = s.parkedKeys(ctx); err != nil {
		return err
	}
	start := old.resumeSeq()
	if !si.Created.Equal(s.streamCreated) {
		// A new stream: its seqs start over. Every event the relay refills
		// it with is delivered; the dedupe table skips what was handled.
		start, seed.catchup = 0, nil
	} else {
		seed.acked = old.ackedRanges()
	}
	seed.floor = max(start, 1) - 1
	cons, err := bjs.EnsureConsumer(ctx, s.stream(), s.consumerConfig(start))
	if err != nil {
		return err
	}
	seed.delivered = cons.CachedInfo().Delivered.Consumer
	d := newDispatcher(s, cons, seed)
	if err := d.start(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.sup.Stopping() {
		// Close began meanwhile, and stops the dispatcher it finds under
		// s.mu after that: not this one.
		s.mu.Unlock()
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.HandlerTimeout+5*time.Second)
		defer cancel()
		d.stop(stopCtx)
		return ctx.Err()
	}
	s.cons, s.d, s.streamCreated = cons, d, si.Created
	s.row.StreamCreatedNS = si.Created.UnixNano()
	s.mu.Unlock()
	s.stats.recreated.Add(1)
	b.log.Error("boxcar: subscriber's consumer vanished (deleted by an operator, or with its stream): created it again",
		logSub, s.name, logError, cause, logFromSeq, start)
	return nil
}

// checkExpired looks for events that left the stream (Config.Retention)
// before the subscriber handled them: stream seqs between what the
// subscriber is known to have handled (its consumer's ack floor, or what an
// earlier check covered) and the stream's first message, less those it
// acked. For a subscriber of every type that is exact; for one filtered by
// type it is an upper bound: the gap may hold other types' events. It also
// trims the acked ranges and finishes catch-ups.
func (s *Subscription) checkExpired(ctx context.Context) error {
	b := s.b
	d, cons := s.current()
	if d == nil {
		return nil // not started yet (waiting for the hub)
	}
	si, err := s.stream().Info(ctx)
	if err != nil {
		return err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return err
	}
	d.noteFloor(info.AckFloor.Stream)
	first := si.State.FirstSeq
	if si.State.Msgs == 0 {
		first = si.State.LastSeq + 1
	}
	s.mu.Lock()
	row := s.row
	covered := max(info.AckFloor.Stream, row.ExpiredThrough)
	var lost uint64
	if first > covered+1 {
		lost = first - 1 - covered - d.ackedCount(covered+1, first-1)
		row.ExpiredThrough = first - 1
	}
	if row.ReplayThrough > 0 && info.AckFloor.Stream >= row.ReplayThrough {
		row.ReplayThrough, row.ReplayNoDedupe = 0, false // the replay is over
		defer b.log.Info("boxcar: replay done", logSub, s.name)
	}
	changed := lost > 0 || row.ExpiredThrough < info.AckFloor.Stream || row.ReplayThrough != s.row.ReplayThrough ||
		!slices.EqualFunc(row.Catchup, d.catchupRules(), catchupEqual)
	row.ExpiredThrough = max(row.ExpiredThrough, info.AckFloor.Stream)
	row.Expired += int64(lost)
	row.Catchup = d.catchupRules()
	s.row = row
	s.mu.Unlock()
	if lost > 0 {
		s.stats.expired.Add(int64(lost))
		b.log.Error("boxcar: events left the stream (Config.Retention) before the subscriber handled them",
			logSub, s.name, logExpired, lost, logThroughStreamSeq, first-1)
	}
	if !changed {
		return nil // nothing moved: an idle bus writes nothing
	}
	if err := b.w.Write(ctx, func(tx *sql.Tx) error { return sqlite.SaveSubscriber(ctx, tx, row) }); err != nil {
		b.log.Warn("boxcar: subscriber could not save its state", logSub, s.name, logError, err)
	}
	return nil
}

// consumerGone reports whether err says the subscriber's consumer (or its
// stream) no longer exists.
func consumerGone(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrStreamNotFound)
}

// replay rewinds the running subscription for a replay: a new dispatcher
// on the reset consumer, which forgets what it acked (those events are to
// run again) and marks what it replays.
func (s *Subscription) replay(ctx context.Context, st ReplayStatus) error {
	s.opMu.Lock()
	defer s.opMu.Unlock()
	old, cons := s.current()
	stopCtx, cancel := context.WithTimeout(ctx, s.opts.HandlerTimeout+5*time.Second)
	err := old.stop(stopCtx)
	cancel()
	if err != nil {
		return fmt.Errorf("boxcar: replay: stop the subscriber: %w", err)
	}
	restart := func() error {
		parked, err := s.parkedKeys(ctx)
		if err != nil {
			return err
		}
		seed := dispatcherSeed{floor: st.From - 1, parked: parked, replayThrough: st.Through, replayNoDedupe: st.NoDedupe}
		d := newDispatcher(s, cons, seed)
		if err := d.start(); err != nil {
			return err
		}
		s.mu.Lock()
		s.d = d
		s.row.Acked, s.row.Catchup = nil, nil
		s.row.ReplayThrough, s.row.ReplayNoDedupe = st.Through, st.NoDedupe
		s.mu.Unlock()
		return nil
	}
	if _, err := s.stream().ResetConsumerToSequence(ctx, s.consumer, st.From); err != nil {
		// Go on where it was, with what it knew.
		if rerr := s.restartAsBefore(ctx, old, cons, old.lastDeliverySeen()); rerr != nil {
			return errors.Join(err, rerr)
		}
		return fmt.Errorf("boxcar: replay: reset the consumer to stream seq %d: %w", st.From, err)
	}
	if err := restart(); err != nil {
		return fmt.Errorf("boxcar: replay: %w", err)
	}
	s.mu.Lock()
	row := s.row
	s.mu.Unlock()
	return s.b.w.Write(ctx, func(tx *sql.Tx) error { return sqlite.SaveSubscriber(ctx, tx, row) })
}

// restartAsBefore starts a dispatcher that goes on where old stopped;
// delivered is the consumer's last delivery (0 after a reset).
func (s *Subscription) restartAsBefore(ctx context.Context, old *dispatcher, cons jetstream.Consumer, delivered uint64) error {
	parked, err := s.parkedKeys(ctx)
	if err != nil {
		return err
	}
	d := newDispatcher(s, cons, dispatcherSeed{acked: old.ackedRanges(), catchup: old.catchupRules(), floor: old.floorSeen(), delivered: delivered,
		parked: parked, replayThrough: old.replayThrough, replayNoDedupe: old.replayNoDedupe})
	if err := d.start(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.sup.Stopping() {
		// Close began meanwhile and stops the dispatcher it finds under
		// s.mu after that: not this one, which would fetch on after Close.
		s.mu.Unlock()
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.HandlerTimeout+5*time.Second)
		defer cancel()
		d.stop(stopCtx)
		return ErrClosed
	}
	s.d = d
	s.mu.Unlock()
	return nil
}

func catchupEqual(a, b sqlite.CatchupRule) bool {
	return a.Below == b.Below && slices.Equal(a.Types, b.Types)
}

// recreateGrace is how long ensureStreams waits, after finding a stream
// deleted on a NATS server the bus does not run (Config.NATSURL), before it
// makes the stream again. deleteWait bounds its wait, on the embedded
// server, for a deleted stream's store to leave the disk.
const (
	recreateGrace = time.Second
	deleteWait    = 30 * time.Second
)

// ensureStreams makes sure the event and dead-letter streams exist,
// creating again what an operator deleted, and returns the event stream's
// info. The relay refills a new stream from the outbox (see relay.resync).
func (b *Bus) ensureStreams(ctx context.Context) (*jetstream.StreamInfo, error) {
	select {
	case b.streamTurn <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-b.streamTurn }()
	si, err := bjs.StreamInfo(ctx, b.events)
	dlqErr := bjs.RetryTransient(ctx, func(ctx context.Context) error { _, err := b.js.Stream(ctx, b.DLQStreamName()); return err })
	if err == nil && dlqErr == nil {
		return si, nil
	}
	var deleted []string
	if err != nil {
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("stream info: %w", err)
		}
		deleted = append(deleted, b.StreamName())
	}
	if dlqErr != nil {
		if !errors.Is(dlqErr, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("dead-letter stream info: %w", dlqErr)
		}
		deleted = append(deleted, b.DLQStreamName())
	}
	if err := b.awaitDeletes(ctx, deleted); err != nil {
		return nil, err
	}
	// Look again: someone else may have made them meanwhile.
	si, err = bjs.StreamInfo(ctx, b.events)
	dlqErr = bjs.RetryTransient(ctx, func(ctx context.Context) error { _, err := b.js.Stream(ctx, b.DLQStreamName()); return err })
	if err == nil && dlqErr == nil {
		return si, nil
	}
	if _, _, err := bjs.EnsureStreams(ctx, b.js, b.streamConfig()); err != nil {
		return nil, err
	}
	b.streamsRecreated.Add(1)
	b.log.Error("boxcar: a stream was deleted (by an operator?): created it again; the relay refills the event stream from the outbox",
		logStream, b.cfg.Stream)
	return bjs.StreamInfo(ctx, b.events)
}

// awaitDeletes waits for the deletes of the streams named to end, so that
// they can be made again. nats-server takes a deleted stream out of its
// account first and removes the stream's store afterwards (stream.stop,
// v2.15.3). A stream made again inside that window gets the old store's
// directory, which the old delete then renames away: every write to the new
// stream fails ("critical write error", the publish is never acked) and the
// relay is stuck. On the embedded server it waits until their stores have
// left the disk, up to deleteWait (a store left there for another reason
// must not stop the bus for good); another server's files are out of
// reach, so there it waits recreateGrace, which narrows the window and does
// not close it.
func (b *Bus) awaitDeletes(ctx context.Context, names []string) error {
	if b.srv == nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(recreateGrace):
			return nil
		}
	}
	deadline := time.Now().Add(deleteWait)
	for {
		on := slices.IndexFunc(names, b.srv.StreamStoreOnDisk)
		if on < 0 {
			return nil
		}
		if time.Now().After(deadline) {
			b.log.Warn("boxcar: a deleted stream's store is still on disk after "+deleteWait.String()+": making the stream again anyway",
				logStream, names[on], logPath, b.srv.StreamStorePath(names[on]))
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
