package boxcar

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Deliveries lost in transit. The server numbers a consumer's deliveries
// (the consumer sequence of a message's metadata, redeliveries included),
// and a dispatcher's fetches all arrive on one subscription, in order. A
// delivery whose number jumps past the next one means deliveries before it
// never arrived: dropped by a slow-consumer limit, lost in a reconnect, or
// sent by a cluster node that died before they left it (a stream or
// consumer leader killed mid-run does this: seen on a 3-node cluster). The
// server counts them delivered and sends them again only after AckWait,
// while the newer events of their keys are delivered now: per-key order
// would break (the hazard of DESIGN.md, on the wire).
//
// A dispatcher knows the consumer's last delivery before it starts (0
// right after a reset, which numbers deliveries from 1 again: nats-server
// consumer.go, resetLocalStartingSeq), so a loss of its very first
// deliveries shows too. So a dispatcher that sees a gap takes nothing more (the messages after
// it are left unacked, not handled), and its subscription resets the
// consumer to its ack floor and starts a new dispatcher: everything above
// the floor comes again in stream order; what was acked above the floor is
// skipped by the acked ranges, what was committed and not acked by the
// dedupe table.

// errDeliveryGap is the cause a dispatcher reports on Subscription.lost.
var errDeliveryGap = errors.New("deliveries lost in transit")

// deliveryGap notes msg's consumer sequence and reports whether msg must be
// dropped: deliveries before it were lost (the subscription is told once),
// or one was lost earlier in this dispatcher's life.
func (d *dispatcher) deliveryGap(msg jetstream.Msg) bool {
	meta, err := msg.Metadata()
	if err != nil {
		return false // messageOf reports it
	}
	c := meta.Sequence.Consumer
	d.mu.Lock()
	gapped, last := d.gapped, d.lastDelivery
	d.lastDelivery = max(last, c)
	lost := !gapped && c > last+1
	if lost {
		d.gapped = true
	}
	d.mu.Unlock()
	if lost {
		d.s.stats.deliveryGaps.Add(1)
		d.report(fmt.Errorf("%w: consumer delivery %d arrived after %d (stream seq %d)", errDeliveryGap, c, last, meta.Sequence.Stream))
	} else if gapped {
		// Report again with every delivery dropped: a first report can
		// find the supervisor's channel full (an older dispatcher's stale
		// report, which the supervisor then ignores), and nothing else
		// would wake it for this one.
		d.report(fmt.Errorf("%w: consumer delivery %d dropped after the gap", errDeliveryGap, c))
	}
	if lost || gapped {
		<-d.slots
		return true
	}
	return false
}

// lastDeliverySeen is the highest consumer sequence the dispatcher saw.
func (d *dispatcher) lastDeliverySeen() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastDelivery
}

// resetAfterGap stops the dispatcher that saw a gap, resets the consumer
// to its ack floor and starts a new dispatcher after the old one's acked
// ranges, retrying until it works or the subscription stops.
func (s *Subscription) resetAfterGap(ctx context.Context, cause error) {
	b := s.b
	old, cons := s.current()
	stopCtx, cancel := context.WithTimeout(ctx, s.opts.HandlerTimeout+5*time.Second)
	old.stop(stopCtx)
	cancel()
	// The stopped dispatcher's pull requests may still wait at the
	// server, which would deliver the reset's first messages to them (to a
	// subscription that is gone: lost again) until it notices: give them
	// a moment, longer after each gap in a row.
	pause := s.gaps.next()
	b.log.Warn("boxcar: subscriber lost deliveries in transit: reset its consumer to its ack floor, so that its keys keep their order",
		logSub, s.consumer, logError, cause, logRetryIn, pause)
	select {
	case <-ctx.Done():
		return
	case <-time.After(pause):
	}
	for wait := 100 * time.Millisecond; ctx.Err() == nil; wait = min(2*wait, 10*time.Second) {
		var err error
		if _, gone := s.stream().Consumer(ctx, s.consumer); consumerGone(gone) {
			err = s.recreate(ctx, old, cause) // deleted meanwhile: as after any lost consumer
		} else {
			var r *jetstream.ConsumerResetResponse
			if r, err = s.stream().ResetConsumer(ctx, s.consumer); err == nil {
				old.noteFloor(max(r.ResetSeq, 1) - 1)
				err = s.restartAsBefore(ctx, old, cons, 0) // a reset numbers deliveries from 1 again
			}
		}
		if err == nil {
			return
		}
		b.log.Error("boxcar: subscriber could not reset its consumer after lost deliveries; retrying", logSub, s.consumer, logError, err, logRetryIn, wait)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

// gapStreak paces the resets after lost deliveries: the pause before a
// reset doubles with each gap less than gapStreakEnds after the previous
// one, from gapPauseMin up to gapPauseMax.
type gapStreak struct {
	mu    sync.Mutex
	last  time.Time
	pause time.Duration
}

const (
	gapPauseMin   = 100 * time.Millisecond
	gapPauseMax   = 5 * time.Second
	gapStreakEnds = time.Minute
)

func (g *gapStreak) next() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	if g.pause == 0 || now.Sub(g.last) > gapStreakEnds {
		g.pause = gapPauseMin
	} else {
		g.pause = min(2*g.pause, gapPauseMax)
	}
	g.last = now
	return g.pause
}

// A fetch that stopped pulling. nats.go's pull iterator counts a pull
// request as outstanding until its messages or a status arrive; one lost on
// the way (a leaf's hub that went away and came back, a "no responders"
// the iterator swallows) can leave it waiting with nothing requested while
// events wait at the server (seen: a leaf's subscriber with 100 events
// pending, none in flight, for minutes after its hub came back). The
// supervisor looks every supervisorEvery: events pending, no pull request
// of anyone waiting at the server, and room in the dispatcher (so it is not
// back-pressure) on stalledFetchTicks looks in a row mean the fetch is
// stuck; it is then restarted as after lost deliveries (a reset to the ack
// floor: what the stuck iterator may have dropped comes again, in order).

// stalledFetchTicks is how many supervisor looks in a row see a stuck fetch
// before it is restarted.
const stalledFetchTicks = 2

// checkStalledFetch is the supervisor's look (see above).
func (s *Subscription) checkStalledFetch(ctx context.Context) {
	d, cons := s.current()
	if d == nil || cons == nil {
		return
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return
	}
	d.mu.Lock()
	room := len(d.held) < s.opts.MaxInFlight/2
	d.mu.Unlock()
	if !(info.NumPending > 0 && info.NumWaiting == 0 && room) {
		s.stalledLooks = 0
		return
	}
	if s.stalledLooks++; s.stalledLooks < stalledFetchTicks {
		return
	}
	s.stalledLooks = 0
	s.stats.fetchRestarts.Add(1)
	select {
	case s.lost <- fmt.Errorf("%w: the fetch is stuck: %d events wait at the server and no pull request has waited there for %d looks %v apart",
		errDeliveryGap, info.NumPending, stalledFetchTicks, supervisorEvery):
	default:
	}
}

// fromDispatcher is a report to the supervisor (Subscription.lost) from
// one dispatcher: the supervisor acts on it only while that dispatcher is
// the current one, so a report left in the channel by a dispatcher since
// replaced changes nothing.
type fromDispatcher struct {
	d   *dispatcher
	err error
}

func (f *fromDispatcher) Error() string { return f.err.Error() }
func (f *fromDispatcher) Unwrap() error { return f.err }

// report tells the supervisor about err, without waiting: the channel
// holds one report, and a full one already wakes the supervisor.
func (d *dispatcher) report(err error) {
	select {
	case d.s.lost <- &fromDispatcher{d: d, err: err}:
	default:
	}
}
