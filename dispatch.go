package boxcar

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/boxcar-bus/boxcar/internal/lifecycle"
	bjs "github.com/boxcar-bus/boxcar/jetstream"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// item is one fetched message on its way through the dispatcher.
type item struct {
	msg      jetstream.Msg
	m        Message
	bad      error // set when the message is malformed: it is dead-lettered
	attempts int
	history  []bjs.AttemptError // the failed attempts' errors (the last ones)
	handled  bool               // its handler ran in the batch that committed (not skipped)
	// doomed is a failure, already recorded, that dead-letters it when its
	// key reaches it again (see finish): a transactional batch's failure
	// behind its key's head, or one whose dead letter could not be
	// published. Its handler is not called again.
	doomed *outcome
	// progressed is when the server last heard of it (delivery or
	// InProgress); the dispatcher's goroutines touch it under d.mu.
	progressed time.Time
	// alone, if set, is sent whether it completed when its attempt ended
	// (false: it waits for a retry): it runs on its own, and the fetch loop
	// files nothing more meanwhile (isolation.go). Set when it is filed.
	alone chan bool
	// recordDead: a run alone doomed it (prepareAlone); its ack records it
	// as through and dead-lettered first (see recordDead). Set before its
	// key is made ready.
	recordDead bool
}

// keyQueue holds the fetched, unacked messages of one key, in stream order.
// At any time a keyQueue is owned by exactly one of: the ready channel, a
// worker, or its retry timer; so one key is never handled twice at once.
// It leaves the keys map when it is empty and unowned.
type keyQueue struct {
	key   string
	items []*item
	retry *time.Timer // set while the key waits to retry its head
}

// dispatcher fetches a subscriber's messages and hands them to workers:
// one key at a time, in order; different keys in parallel.
//
// Memory is bounded: a fetched message takes a slot (MaxInFlight in all)
// until it is acked or dead-lettered, and the fetch loop waits for a slot
// before it takes the next message, so a blocked key back-pressures the
// fetch instead of growing a queue.
type dispatcher struct {
	s     *Subscription
	b     *Bus
	cons  jetstream.Consumer
	stats *subscriberStats // the subscription's: they outlive a dispatcher

	iter  jetstream.MessagesContext
	slots chan struct{}
	ready chan *keyQueue
	// txTurn is held by the one transactional worker that is waiting for
	// keys and the write lock (see txWorker).
	txTurn chan struct{}
	// acks acks what transactional batches committed (acker.go).
	acks *acker

	// loops owns the fetch loop, the workers and the pruner; stop cancels
	// it first. handlers owns the handler calls (and a transactional
	// batch's goroutine); its context is the handlers' and the subscriber
	// transactions', canceled only when stop runs out of time.
	loops    *lifecycle.Group
	handlers *lifecycle.Group
	stopOnce sync.Once
	stopErr  error

	mu   sync.Mutex
	keys map[string]*keyQueue
	held map[uint64]*item // fetched and not yet acked, by stream seq
	// acked holds what this subscriber acked above the consumer's ack
	// floor (see ackedSet); catchup, what it handled before types were
	// added. A delivery of either is acked and dropped.
	acked   ackedSet
	catchup []sqlite.CatchupRule
	floor   uint64 // the consumer's ack floor, as last read
	// parked maps the subscriber's parked keys to the dead letter at their
	// head (see park.go).
	parked map[string]uint64
	// replayThrough: events up to this stream seq are replayed
	// (Message.Replay); with replayNoDedupe they run even if the dedupe
	// table has them. Set at start.
	replayThrough  uint64
	replayNoDedupe bool

	// deliveredBefore is the last stream seq the consumer had delivered
	// before this subscription reset it.
	deliveredBefore uint64
	waiting         int // keys waiting for a retry
	stopping        bool
	// lastDelivery is the highest consumer sequence seen; gapped, that a
	// delivery was lost in transit (see deliverygap.go).
	lastDelivery uint64
	gapped       bool

	// isolate: the events filed next run one at a time (isolation.go);
	// handling is the subscriber's boxcar_handling row as last written,
	// span how many events this start runs alone and aloneLeft how many
	// more. They belong to the fetch loop, but for the write of a doomed
	// event's record in its ack (recordDead), which the fetch loop waits
	// for or has stopped isolating before; handling changes under d.mu.
	isolate   bool
	handling  sqlite.Handling
	span      int
	aloneLeft int
}

// dispatcherSeed is what a new dispatcher starts from.
type dispatcherSeed struct {
	acked           [][2]uint64
	catchup         []sqlite.CatchupRule
	parked          map[string]uint64
	floor           uint64
	deliveredBefore uint64
	replayThrough   uint64
	replayNoDedupe  bool
	// delivered is the consumer sequence of the consumer's last delivery
	// before this dispatcher (0 right after a reset, or for a new
	// consumer): see deliverygap.go.
	delivered uint64
	// isolate and handling: see dispatcher.
	isolate  bool
	handling sqlite.Handling
}

func newDispatcher(s *Subscription, cons jetstream.Consumer, seed dispatcherSeed) *dispatcher {
	d := &dispatcher{
		s:               s,
		b:               s.b,
		cons:            cons,
		stats:           &s.stats,
		slots:           make(chan struct{}, s.opts.MaxInFlight),
		ready:           make(chan *keyQueue, s.opts.MaxInFlight+1),
		txTurn:          make(chan struct{}, 1),
		loops:           lifecycle.New(),
		handlers:        lifecycle.New(),
		keys:            map[string]*keyQueue{},
		held:            map[uint64]*item{},
		catchup:         slices.Clone(seed.catchup),
		parked:          maps.Clone(seed.parked),
		floor:           seed.floor,
		deliveredBefore: seed.deliveredBefore,
		replayThrough:   seed.replayThrough,
		replayNoDedupe:  seed.replayNoDedupe,
		lastDelivery:    seed.delivered,
	}
	if seed.isolate {
		d.isolate, d.handling, d.span = true, seed.handling, aloneSpan(seed.handling)
		d.aloneLeft = d.span
	}
	if d.parked == nil {
		d.parked = map[string]uint64{}
	}
	d.acked.load(seed.acked)
	d.acked.trim(seed.floor)
	d.acks = newAcker(d)
	return d
}

func (d *dispatcher) start() error {
	iter, err := d.cons.Messages(jetstream.PullMaxMessages(fetchBatch(d.s.opts)))
	if err != nil {
		return fmt.Errorf("start fetching: %w", err)
	}
	d.run(iter)
	return nil
}

// run starts the fetch loop on iter, the workers, the progress loop and the
// pruner.
func (d *dispatcher) run(iter jetstream.MessagesContext) {
	d.iter = iter
	d.loops.Go(d.fetchLoop)
	for range d.s.opts.Workers {
		d.loops.Go(d.worker)
	}
	d.loops.Go(d.progressLoop)
	if d.s.h.tx != nil {
		d.loops.Go(d.pruneLoop)
		d.loops.Go(d.acks.run)
	}
}

// stop stops fetching and the workers, waiting up to ctx for batches in
// flight; then it cancels the handlers' context and waits for them briefly.
// Calling it again returns the first call's result.
func (d *dispatcher) stop(ctx context.Context) error {
	d.stopOnce.Do(func() { d.stopErr = d.shutdown(ctx) })
	return d.stopErr
}

func (d *dispatcher) shutdown(ctx context.Context) error {
	d.mu.Lock()
	d.stopping = true
	for _, kq := range d.keys {
		if kq.retry != nil {
			kq.retry.Stop()
		}
	}
	d.mu.Unlock()
	if d.iter != nil {
		d.iter.Stop()
	}
	err := d.loops.Stop(ctx)
	if err == nil {
		err = d.handlers.Wait(ctx)
	}
	if err == nil {
		d.handlers.Stop(ctx) // nothing runs: this only cancels the context
		return nil
	}
	// Out of time: cancel the handlers and give them a moment.
	grace, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if d.handlers.Stop(grace) != nil || d.loops.Wait(grace) != nil {
		return fmt.Errorf("boxcar: subscriber %s: handlers still running after cancel: %w", d.s.name, ctx.Err())
	}
	return ctx.Err()
}

// nextMaxWait bounds each wait in the fetch loop. nats.go's Messages
// iterator (v1.55.0) decides to pull more from the server only at the start
// of a Next call, and skips it when its previous pull request is still being
// sent; if that happens as the last requested message is taken, Next then
// waits with nothing requested until the missing heartbeat ends it, 30s later,
// while events wait on the server (seen after restarts with a backlog, and
// without Boxcar). A Next that returns on time and is called again pulls.
// The bound is the stall's length: at 1 s, one such stall in a bench run
// put 1 s into the p99 of its load level. An idle subscriber wakes 10 times
// a second for it, and writes nothing.
const nextMaxWait = 100 * time.Millisecond

// idleMaxWait bounds each wait once idleAfter waits in a row returned
// nothing. The stall above begins only as a message is taken, and the Next
// after a timeout pulls, so after those quiet waits a long one cannot be in
// it: an idle subscriber wakes once a second instead of ten times, and an
// event that arrives meanwhile ends the wait at once. The first waits after
// a message stay short, to bound the stall.
const (
	idleMaxWait = time.Second
	idleAfter   = 2
)

func (d *dispatcher) fetchLoop(ctx context.Context) {
	empty := 0 // waits in a row that returned nothing
	for {
		select {
		case d.slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wait := nextMaxWait
		if empty >= idleAfter {
			wait = idleMaxWait
		}
		msg, err := d.iter.Next(jetstream.NextMaxWait(wait))
		if err != nil {
			<-d.slots
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			if errors.Is(err, nats.ErrTimeout) {
				empty++
				continue // nothing arrived: call Next again, which pulls if it should
			}
			empty = 0
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				// The subscription's supervisor makes a new consumer and
				// dispatcher; this one stops fetching.
				d.report(err)
				return
			}
			d.b.log.Warn("boxcar: fetch", logSub, d.s.name, logError, err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		empty = 0
		if d.isolate {
			d.runAlone(ctx, msg)
			continue
		}
		d.enqueue(msg)
	}
}

// enqueue files msg under its key. It holds the slot taken for msg until
// the message is acked; a redelivery of a message still held is dropped, and
// one of a message handled before is acked and dropped.
func (d *dispatcher) enqueue(msg jetstream.Msg) { d.file(msg, false) }

// file is enqueue. It returns msg's item (nil if msg was dropped) and, with
// hold, the queue of a key that had none: that queue is not made ready, the
// caller does it (see runAlone).
func (d *dispatcher) file(msg jetstream.Msg, hold bool) (*item, *keyQueue) {
	if d.deliveryGap(msg) {
		return nil, nil // deliveries before it were lost: see deliverygap.go
	}
	m, bad := messageOf(d.b.layout, msg)
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, held := d.held[m.StreamSeq]; held {
		// JetStream redelivered a message we still hold (it waited behind
		// its key longer than AckWait). The held copy will be acked.
		d.stats.ignored.Add(1)
		<-d.slots
		return nil, nil
	}
	if bad == nil && m.redriveFor != "" && m.redriveFor != d.s.name {
		// A dead letter redriven to another subscriber.
		d.stats.ignored.Add(1)
		msg.Ack()
		<-d.slots
		return nil, nil
	}
	if d.handledBefore(m, bad) {
		// Acked before: a redelivery sent before our ack arrived (or after
		// it was lost), or a reset's. Handling it again would repeat a
		// plain handler's side effect, out of order.
		d.stats.ignored.Add(1)
		msg.Ack()
		<-d.slots
		return nil, nil
	}
	m.Replay = m.StreamSeq <= d.replayThrough
	if bad == nil && !m.Replay && d.deadBefore(m) {
		// Dead-lettered before the stop because the process stopped on it
		// every time it ran (isolation.go); its ack died with the process.
		// Running it again would kill the process again.
		d.b.log.Info("boxcar: an event dead-lettered before the stop came back (its ack was lost): acked, its handler not run",
			logSub, d.s.name, logKey, m.Key, logEventID, m.ID, logSeq, m.StreamSeq)
		d.stats.ignored.Add(1)
		msg.Ack()
		<-d.slots
		return nil, nil
	}
	it := &item{msg: msg, m: m, bad: bad, progressed: time.Now()}
	if hold {
		it.alone = make(chan bool, 1)
	}
	d.held[m.StreamSeq] = it
	if m.Delivered > 1 || m.StreamSeq <= d.deliveredBefore {
		d.stats.redelivered.Add(1)
	}
	key := m.Key
	if bad != nil {
		// A malformed message has no trustworthy key: give it a queue of its own.
		key = "\x00malformed:" + strconv.FormatUint(m.StreamSeq, 10)
	}
	kq := d.keys[key]
	if kq != nil {
		kq.items = append(kq.items, it)
		return it, nil
	}
	kq = &keyQueue{key: key, items: []*item{it}}
	d.keys[key] = kq
	if hold {
		return it, kq
	}
	d.ready <- kq // never blocks: see ready's capacity
	return it, nil
}

// worker takes ready keys and handles the messages at their heads.
func (d *dispatcher) worker(ctx context.Context) {
	if d.s.h.tx != nil {
		d.txWorker(ctx)
		return
	}
	for {
		select {
		case kq := <-d.ready:
			d.runPlain(kq)
		case <-ctx.Done():
			return
		}
	}
}

// txWorker handles ready keys with the transactional handler, many keys per
// SQLite transaction.
//
// Transactions of all workers share SQLite's single writer, so the worker
// takes the write lock first and only then groups every key that became
// ready meanwhile: under load keys pile up while the lock is busy, and the
// groups grow with the load. And only one worker of the subscriber at a time
// waits for keys and the lock (txTurn): if each worker took a key and queued
// for the lock with it, every one of them would commit a transaction of one
// key.
func (d *dispatcher) txWorker(ctx context.Context) {
	var batch []*keyQueue
	for {
		select {
		case d.txTurn <- struct{}{}:
		case <-ctx.Done():
			return
		}
		batch = batch[:0]
		select {
		case kq := <-d.ready:
			batch = append(batch, kq)
		case <-ctx.Done():
			<-d.txTurn
			return
		}
		locked := d.b.w.Lock(d.handlers.Context()) == nil
	more:
		for len(batch) < d.s.opts.BatchSize {
			select {
			case kq := <-d.ready:
				batch = append(batch, kq)
			default:
				break more
			}
		}
		<-d.txTurn // the next worker may wait for the lock while this one runs
		d.runTx(batch, locked)
	}
}

// takeHeads returns up to n items from the head of kq (they stay queued
// until done).
func (d *dispatcher) takeHeads(kq *keyQueue, n int) []*item {
	d.mu.Lock()
	defer d.mu.Unlock()
	n = min(n, len(kq.items))
	if _, parked := d.parked[kq.key]; parked {
		// Of a parked key, only the release copies at its head run now.
		for i := range n {
			if !d.releaseCopy(kq.items[i]) {
				n = i
				break
			}
		}
	}
	return append([]*item(nil), kq.items[:n]...)
}

// outcome is what happened to one item.
type outcome struct {
	it  *item
	err error // nil: done (handled or found in the dedupe table)
}

// runPlain handles up to BatchSize consecutive items of one key with a
// non-transactional handler.
func (d *dispatcher) runPlain(kq *keyQueue) {
	if !d.parkLeading(kq) {
		return
	}
	items := d.takeHeads(kq, d.s.opts.BatchSize)
	var failed *outcome
	done := 0
	for _, it := range items {
		if d.isStopping() {
			break
		}
		if it.doomed != nil {
			failed = it.doomed // dead-lettered in finish, its handler not called
			break
		}
		if it.bad != nil {
			failed = &outcome{it: it, err: it.bad}
			break
		}
		it.attempts++
		it.m.Attempt = it.attempts
		err := d.callPlain(it.m)
		if err != nil {
			failed = &outcome{it: it, err: err}
			break
		}
		d.stats.handled.Add(1)
		d.stats.endToEnd.observe(time.Since(it.m.Time))
		it.handled = true
		d.ack(it)
		done++
	}
	d.finish(kq, done, failed)
}

// callPlain runs the plain handler with a timeout. A handler that ignores
// its context is abandoned at the timeout (its goroutine belongs to the
// handlers group: Close waits for it) so the key can retry.
func (d *dispatcher) callPlain(m Message) error {
	ctx, cancel := context.WithTimeout(d.handlers.Context(), d.s.opts.HandlerTimeout)
	defer cancel()
	res := make(chan error, 1)
	d.handlers.Go(func(context.Context) {
		start := time.Now()
		hctx, end := d.b.traceProcess(ctx, d.s.name, m)
		err := callSafely(func() error { return d.s.h.plain(hctx, m) })
		end(err)
		d.stats.handlerTime.observe(time.Since(start))
		res <- err
	})
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return fmt.Errorf("handler did not return within %v: %w", d.s.opts.HandlerTimeout, ctx.Err())
	}
}

// callSafely turns a panic of fn into an error.
func callSafely(fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v", p)
		}
	}()
	return fn()
}

// finish records the result of a worker's turn on kq: the first done items
// were handled (acked, or for a transactional subscriber committed and
// handed to the acker); failed (if any) is the item after them that failed.
//
// behind are failures of later items of kq, in key order, that a
// transactional batch saw but its key did not reach this time (the batch was
// rolled back, or its rerun stopped before them): items before them must be
// handled first. Each is recorded now, and one that is to be dead-lettered
// is marked doomed: it is dead-lettered, with this failure, when its key
// reaches it again, without its handler called again.
func (d *dispatcher) finish(kq *keyQueue, done int, failed *outcome, behind ...*outcome) {
	d.mu.Lock()
	acked := kq.items[:done:done] // enqueue appends to kq.items meanwhile
	d.mu.Unlock()
	if done > 0 && d.releaseLastDone(acked) {
		if err := d.continueRelease(kq.key); err != nil {
			d.b.log.Error("boxcar: could not go on releasing a parked key; it stays parked until its next dead letter is redriven or discarded",
				logSub, d.s.name, logKey, kq.key, logError, err)
		}
	}
	if failed != nil {
		it := failed.it
		if it.doomed != failed { // a doomed item's failure was recorded when it was doomed
			d.recordFailure(failed)
		}
		if dead := d.deadReason(failed); dead != "" {
			if err := d.deadLetterAndPark(it, dead, failed.err); err != nil {
				// The retry dead-letters it again; its handler is not
				// called past its last attempt.
				it.doomed = failed
				d.b.log.Error("boxcar: could not dead-letter (and park) the event; will retry", logSub, d.s.name, logKey, kq.key, logError, err)
				if errors.Is(err, jetstream.ErrNoStreamResponse) {
					d.b.ensureStreams(d.handlers.Context()) // an operator deleted the dead-letter stream
				}
			} else {
				d.ack(it)
				done++
				failed = nil
			}
		} else {
			d.b.log.Warn("boxcar: handler failed; retrying", logSub, d.s.name, logKey, kq.key,
				logEventID, it.m.ID, logAttempt, it.attempts, logError, failed.err)
		}
	}
	for _, o := range behind {
		d.recordFailure(o)
		if dead := d.deadReason(o); dead != "" {
			o.it.doomed = o
			d.b.log.Warn("boxcar: handler failed; the event is dead-lettered once the events before it in its key are handled",
				logSub, d.s.name, logKey, kq.key, logEventID, o.it.m.ID, logAttempt, o.it.attempts, logReason, dead, logError, o.err)
		} else {
			d.b.log.Warn("boxcar: handler failed; retrying", logSub, d.s.name, logKey, kq.key,
				logEventID, o.it.m.ID, logAttempt, o.it.attempts, logError, o.err)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	finished := kq.items[:done]
	kq.items = kq.items[done:]
	switch {
	case d.stopping:
		// Leave the rest unacked: the durable consumer keeps it.
	case failed != nil:
		d.scheduleRetry(kq, failed.it.attempts)
	case len(behind) > 0:
		// The key waits out the backoff of its first failure, as when that
		// failure is at its head; the shortest when that event will not run
		// again.
		attempts := behind[0].it.attempts
		if behind[0].it.doomed != nil {
			attempts = 1
		}
		d.scheduleRetry(kq, attempts)
	case len(kq.items) > 0:
		d.ready <- kq
	default:
		delete(d.keys, kq.key)
	}
	for _, it := range finished {
		d.endAlone(it, true) // now that its key's queue is gone, or ready
	}
}

// recordFailure counts a failed attempt of o's item and keeps its error in
// the item's history (the dead letter carries it).
func (d *dispatcher) recordFailure(o *outcome) {
	it := o.it
	d.stats.failures.Add(1)
	it.history = append(it.history, bjs.AttemptError{Attempt: it.attempts, Error: o.err.Error(), AtNS: time.Now().UnixNano()})
	if len(it.history) > 10 {
		it.history = it.history[len(it.history)-10:]
	}
}

// deadReason returns why o's item is to be dead-lettered after its failure,
// or "" if it is to be retried.
func (d *dispatcher) deadReason(o *outcome) string {
	switch {
	case o.it.bad != nil:
		return "malformed"
	case errors.Is(o.err, ErrSchema):
		return "schema"
	case IsPermanent(o.err), errors.Is(o.err, ErrReentrant):
		return "permanent"
	case o.it.attempts >= d.s.opts.MaxAttempts:
		return "failed"
	}
	return ""
}

// scheduleRetry parks kq until its backoff has passed. Call with d.mu held.
func (d *dispatcher) scheduleRetry(kq *keyQueue, attempts int) {
	wait := d.s.opts.MinBackoff << min(max(attempts-1, 0), 20)
	wait = min(wait, d.s.opts.MaxBackoff)
	if len(kq.items) > 0 {
		d.endAlone(kq.items[0], false) // its attempt ended: it waits for the next
	}
	d.waiting++
	kq.retry = time.AfterFunc(wait, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.waiting--
		kq.retry = nil
		if !d.stopping {
			d.ready <- kq
		}
	})
	d.b.probe(ProbeRetrying)
}

func (d *dispatcher) isStopping() bool { return d.loops.Stopping() }

// ack acknowledges it and frees its slot. A lost ack (the ack is not
// confirmed) only means a redelivery, which the dedupe table absorbs.
func (d *dispatcher) ack(it *item) {
	if it.recordDead {
		d.recordDead(it)
	}
	ack := it.msg.Ack
	if seam := d.b.cfg.seams.ack; seam != nil {
		ack = func() error { return seam(it.msg) }
	}
	if err := ack(); err != nil {
		d.b.log.Debug("boxcar: ack", logSub, d.s.name, logError, err)
	}
	d.mu.Lock()
	delete(d.held, it.m.StreamSeq)
	d.acked.add(it.m.StreamSeq)
	d.mu.Unlock()
	<-d.slots
	d.endAlone(it, true)
}

// handledBefore reports whether m was acked before (the acked set) or
// handled before its types were added (a catch-up rule). Call with d.mu
// held.
func (d *dispatcher) handledBefore(m Message, bad error) bool {
	if m.StreamSeq <= d.floor || d.acked.has(m.StreamSeq) {
		// At or below the ack floor the dispatcher started from (or read
		// since): acked before. A consumer delivers there only when the
		// server did not start it where it was told (seen under load with
		// a consumer created again right after an operator deleted it:
		// it delivered from the stream's first message).
		return true
	}
	if bad != nil {
		return false
	}
	for _, r := range d.catchup {
		if m.StreamSeq <= r.Below && (len(r.Types) == 0 || slices.Contains(r.Types, m.Type)) {
			return true
		}
	}
	return false
}

// noteFloor records the consumer's ack floor: the server never redelivers
// at or below it, so the acked set and the catch-up rules below it can go.
func (d *dispatcher) noteFloor(floor uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.floor = max(d.floor, floor)
	d.acked.trim(d.floor)
	d.catchup = slices.DeleteFunc(d.catchup, func(r sqlite.CatchupRule) bool { return r.Below <= d.floor })
}

// floorSeen is the consumer's ack floor as last read.
func (d *dispatcher) floorSeen() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.floor
}

// resumeSeq is where a new consumer would resume: the first stream seq
// after the ack floor that this subscriber has not acked.
func (d *dispatcher) resumeSeq() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.acked.contiguousFrom(d.floor+1) + 1
}

func (d *dispatcher) ackedRanges() [][2]uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.acked.ranges()
}

func (d *dispatcher) ackedCount(from, to uint64) uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.acked.count(from, to)
}

func (d *dispatcher) catchupRules() []sqlite.CatchupRule {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.catchup)
}

// progressLoop tells the server that held messages are in progress: a
// message waiting behind its key longer than AckWait would otherwise be
// redelivered (and dropped, as held) every AckWait.
func (d *dispatcher) progressLoop(ctx context.Context) {
	every := max(d.s.opts.AckWait/3, 100*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	var due []jetstream.Msg
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		due = due[:0]
		d.mu.Lock()
		for _, it := range d.held {
			if now.Sub(it.progressed) >= every {
				it.progressed = now
				due = append(due, it.msg)
			}
		}
		d.mu.Unlock()
		for _, m := range due {
			m.InProgress()
		}
		clear(due)
	}
}

// deadLetterAndPark dead-letters it and, with SubscribeOptions.ParkKeys,
// parks its key behind it (a release copy that fails again becomes the new
// head of a key parked already).
func (d *dispatcher) deadLetterAndPark(it *item, reason string, cause error) error {
	_, parked := d.parkedHead(it.m.Key)
	park := it.bad == nil && (d.s.opts.ParkKeys || parked)
	if err := d.b.w.Stats().WALSyncFailure; park && err != nil {
		// The park row could not be made durable: publishing the letter
		// now would only publish it again at every retry.
		return err
	}
	seq, err := d.deadLetter(it, reason, cause)
	if err != nil || !park {
		return err
	}
	return d.parkKey(it.m.Key, seq)
}

// deadLetter copies it to the dead-letter stream with the reason, the last
// error, the attempts, the subscriber and the original sequence and subject
// (see bjs.EncodeDeadLetter), and returns the letter's sequence in the
// dead-letter stream.
func (d *dispatcher) deadLetter(it *item, reason string, cause error) (uint64, error) {
	dl := &bjs.DeadLetter{
		Subscriber: d.s.name,
		Reason:     reason,
		Err:        cause,
		Attempts:   it.attempts,
		Subject:    it.msg.Subject(),
		StreamSeq:  it.m.StreamSeq,
		Header:     it.msg.Headers(),
		Data:       it.msg.Data(),
		History:    it.history,
	}
	if it.bad == nil {
		dl.Type, dl.Key = it.m.Type, it.m.Key
	}
	m := bjs.EncodeDeadLetter(bjs.DLQPrefix(d.b.cfg.SubjectPrefix), dl, int(d.b.nc.MaxPayload()))
	ctx, cancel := context.WithTimeout(d.handlers.Context(), d.b.cfg.PublishTimeout)
	defer cancel()
	ack, err := d.b.js.PublishMsg(ctx, m)
	if err != nil {
		return 0, fmt.Errorf("dead-letter stream seq %d: %w", it.m.StreamSeq, err)
	}
	if reason != DeadLetterReasonParked {
		d.stats.deadLettered.Add(1)
		d.b.log.Warn("boxcar: event dead-lettered", logSub, d.s.name, logReason, reason, logEventID, it.m.ID, logError, m.Header.Get(bjs.HeaderError))
	}
	return ack.Sequence, nil
}
