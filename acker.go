package boxcar

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/boxcar-bus/boxcar/sqlite"
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
// lingering. A failure to make them durable leaves the events queued, held
// (so not redelivered) and unacked, and is tried again with a backoff: the
// events were handled and committed, only their acks wait. After a failed
// fsync (sqlite.ErrWALSyncFailed) every try fails until the process
// restarts. A disk that keeps failing stalls the subscriber (Health says
// so) and is logged, at most every 10 seconds.
func (a *acker) run(ctx context.Context) {
	var backoff time.Duration
	var lastLog time.Time
	for {
		select {
		case <-a.kick:
		case <-ctx.Done():
			a.d.ackDurable(a.take(true), 0)
			return
		}
		items := a.take(false)
		err := a.d.ackDurable(items, a.linger())
		if err == nil {
			backoff = 0
			continue
		}
		if ctx.Err() != nil {
			a.d.ackDurable(append(items, a.take(true)...), 0)
			return
		}
		if time.Since(lastLog) >= 10*time.Second {
			lastLog = time.Now()
			what := "boxcar: a subscriber transaction committed but could not be made durable; its events stay unacked and the fsync is tried again"
			if errors.Is(err, sqlite.ErrWALSyncFailed) {
				what = "boxcar: a subscriber transaction committed but can no longer be made durable; its events stay unacked until the process restarts"
			}
			a.d.b.log.Error(what, logSub, a.d.s.name, logError, err, logRetryIn, backoff)
		}
		a.mu.Lock()
		a.pending = append(items, a.pending...)
		a.mu.Unlock()
		backoff = min(max(2*backoff, 10*time.Millisecond), 5*time.Second)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		select { // go round again
		case a.kick <- struct{}{}:
		default:
		}
	}
}

// linger is how long the next round may wait for someone else's fsync:
// ackLinger, unless the subscriber's fetched-and-unacked slots are half
// used, when waiting would hold back fetching.
func (a *acker) linger() time.Duration {
	if len(a.d.slots) >= cap(a.d.slots)/2 {
		return 0
	}
	return ackLinger
}

// ackDurable acks items once a WAL fsync that began after their commits is
// done (waiting up to linger for someone else's). If the fsync fails, or
// the handlers' context ends first, nothing is acked and the error is
// returned: the items are still held.
func (d *dispatcher) ackDurable(items []*item, linger time.Duration) error {
	if len(items) == 0 {
		return nil
	}
	ctx := d.handlers.Context()
	if seam := d.b.cfg.seams.durable; seam != nil {
		if err := seam(); err != nil {
			return err
		}
	}
	if err := d.b.w.DurableWithin(ctx, linger); err != nil {
		return err
	}
	d.b.probe(ProbeHandlerAfterCommit)
	for _, it := range items {
		d.ack(it)
	}
	return nil
}
