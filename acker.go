package boxcar

import (
	"context"
	"sync"
	"time"
)

// ackLinger is how long the acker may wait for a WAL fsync that someone
// else begins before it runs one itself. The relay fsyncs before it
// publishes each new event: at everyday load the acks ride those fsyncs
// instead of adding one per subscriber transaction (each costs ~0.1 ms of
// CPU on a virtual disk), and the acks, not the handled events, are a few
// milliseconds later.
const ackLinger = 5 * time.Millisecond

// acker acks the events a transactional subscriber's batches committed,
// once a WAL fsync covers their commits, on a goroutine of the dispatcher's
// loops, so that no worker waits for the fsync.
type acker struct {
	d    *dispatcher
	kick chan struct{} // capacity 1: items were added

	mu      sync.Mutex
	pending []*item
	closed  bool // the goroutine is gone: add refuses
}

func newAcker(d *dispatcher) *acker { return &acker{d: d, kick: make(chan struct{}, 1)} }

// add queues items to ack. It reports false once the acker stopped: the
// caller then acks them itself (ackDurable).
func (a *acker) add(items []*item) bool {
	if len(items) == 0 {
		return true
	}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return false
	}
	a.pending = append(a.pending, items...)
	a.mu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default:
	}
	return true
}

func (a *acker) take(close bool) []*item {
	a.mu.Lock()
	defer a.mu.Unlock()
	items := a.pending
	a.pending, a.closed = nil, a.closed || close
	return items
}

// run acks what add queued until ctx ends, then what is left, without
// lingering.
func (a *acker) run(ctx context.Context) {
	for {
		select {
		case <-a.kick:
			a.d.ackDurable(a.take(false), ackLinger)
		case <-ctx.Done():
			a.d.ackDurable(a.take(true), 0)
			return
		}
	}
}

// ackDurable acks items once a WAL fsync that began after their commits is
// done (waiting up to linger for someone else's). If the fsync fails they
// are not acked: they are given back to the server, which delivers them
// again, and the dedupe table skips them if their commit survived.
func (d *dispatcher) ackDurable(items []*item, linger time.Duration) {
	if len(items) == 0 {
		return
	}
	durable := func() error { return d.b.w.DurableWithin(d.handlers.Context(), linger) }
	if seam := d.b.cfg.seams.durable; seam != nil {
		durable = func() error {
			if err := seam(); err != nil {
				return err
			}
			return d.b.w.DurableWithin(d.handlers.Context(), linger)
		}
	}
	if err := durable(); err != nil {
		d.b.log.Error("boxcar: a subscriber transaction committed but could not be made durable; its events are not acked", logSub, d.s.name, logError, err)
		for _, it := range items {
			d.giveBack(it)
		}
		return
	}
	d.b.probe(ProbeHandlerAfterCommit)
	for _, it := range items {
		d.ack(it)
	}
}

// giveBack returns an unacked event to the server for redelivery: it is no
// longer held (a redelivery of a held event is dropped), and its slot is
// free.
func (d *dispatcher) giveBack(it *item) {
	d.mu.Lock()
	delete(d.held, it.m.StreamSeq)
	d.mu.Unlock()
	<-d.slots
	if err := it.msg.Nak(); err != nil {
		d.b.log.Debug("boxcar: nak", logSub, d.s.name, logError, err)
	}
}
