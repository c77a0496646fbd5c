package boxcar

import (
	"database/sql"
	"fmt"
	"time"

	"github.com/boxcar-bus/boxcar/sqlite"
)

// Parked keys (SubscribeOptions.ParkKeys). When an event of a key is
// dead-lettered, its key is parked: the key's later events do not run but
// go to the dead-letter stream too (reason "parked"), in order, durably,
// until the letter at the head is redriven or discarded (Bus.Redrive,
// Bus.Discard). That releases the key: copies of the head (if redriven) and
// of the events it held go into the outbox for this subscriber, in their
// original order, marked as one release; the key stays parked while they
// come back, and events of the key that arrive meanwhile are parked too.
// When the last copy of a release is handled, the dispatcher releases what
// was parked meanwhile the same way, or, when nothing was, frees the key.
// All of this for one key happens on the worker that owns the key's queue,
// so parking and releasing never race.

// parkedHead returns the dead letter at the head of key, if key is parked.
func (d *dispatcher) parkedHead(key string) (uint64, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	head, ok := d.parked[key]
	return head, ok
}

// anyParked reports whether a key of batch is parked.
func (d *dispatcher) anyParked(batch []*keyQueue) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, kq := range batch {
		if _, ok := d.parked[kq.key]; ok {
			return true
		}
	}
	return false
}

// releaseCopy reports whether it is a copy of a release of its parked key,
// for this subscriber: it runs although the key is parked.
func (d *dispatcher) releaseCopy(it *item) bool {
	return it.bad == nil && it.m.release != "" && it.m.redriveFor == d.s.name
}

// parkLeading sends the events at the head of kq that its parked key holds
// to the dead-letter stream, and reports whether kq has items to handle now
// (release copies at its head). When it has not, the key's turn is over:
// parkLeading finishes it.
func (d *dispatcher) parkLeading(kq *keyQueue) bool {
	head, parked := d.parkedHead(kq.key)
	if !parked {
		return true
	}
	n, failed := 0, false
	for _, it := range d.takeAll(kq) {
		if d.releaseCopy(it) || d.isStopping() {
			break
		}
		err := fmt.Errorf("parked behind dead letter %d, the head of its key", head)
		if _, err := d.deadLetter(it, DeadLetterReasonParked, err); err != nil {
			d.b.log.Error("boxcar: could not park an event; will retry", logSub, d.s.name, logError, err)
			failed = true
			break
		}
		d.ack(it)
		n++
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	kq.items = kq.items[n:]
	switch {
	case d.stopping:
		return false
	case failed:
		d.scheduleRetry(kq, 1)
		return false
	case len(kq.items) == 0:
		delete(d.keys, kq.key)
		return false
	}
	return true // a release copy is at the head
}

// takeAll returns the items queued on kq.
func (d *dispatcher) takeAll(kq *keyQueue) []*item {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*item(nil), kq.items...)
}

// parkKey parks key behind the dead letter headSeq, durably, before the
// head is acked.
func (d *dispatcher) parkKey(key string, headSeq uint64) error {
	ctx := d.handlers.Context()
	err := d.b.w.Write(ctx, func(tx *sql.Tx) error {
		return sqlite.ParkKey(ctx, tx, sqlite.ParkedKey{Subscriber: d.s.name, Key: key, HeadSeq: headSeq, SinceNS: time.Now().UnixNano()})
	})
	if err == nil {
		// The head is acked after this: the park row must survive a power
		// loss, or the key's later events would run without it.
		err = d.b.w.Durable(ctx)
	}
	if err != nil {
		return err
	}
	d.mu.Lock()
	if _, ok := d.parked[key]; !ok {
		d.parked[key] = headSeq
	}
	d.mu.Unlock()
	d.b.log.Warn("boxcar: key parked behind a dead letter: its later events wait in the dead-letter stream until the letter is redriven or discarded",
		logSub, d.s.name, logKey, key, logDeadLetter, headSeq)
	return nil
}

// continueRelease runs after the last copy of a release of key was handled:
// what was parked meanwhile is released next, or the key is free.
func (d *dispatcher) continueRelease(key string) error {
	ctx := d.handlers.Context()
	if _, err := d.b.release(ctx, d.s.name, key, nil, "boxcar", "release of a parked key, continued"); err != nil {
		return err
	}
	// release frees the key in the database when nothing was held.
	if _, still, err := sqlite.ParkedKeyOf(ctx, d.b.db, d.s.name, key); err != nil {
		return err
	} else if !still {
		d.mu.Lock()
		delete(d.parked, key)
		d.mu.Unlock()
		d.b.log.Info("boxcar: parked key released", logSub, d.s.name, logKey, key)
	} else {
		d.b.relay.wake()
	}
	return nil
}

// releaseLastDone reports whether one of items, handled, was the last copy
// of a release.
func (d *dispatcher) releaseLastDone(items []*item) bool {
	for _, it := range items {
		if d.releaseCopy(it) && it.m.releaseLast {
			return true
		}
	}
	return false
}
