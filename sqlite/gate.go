package sqlite

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/boxcar-bus/boxcar/internal/goroutine"
)

// The gate is the write lock of one database, in Go. SQLite admits one
// writer and makes the others sleep and retry in its busy handler (1, 2, 5,
// 10 ... 100 ms): a writer that arrives while the lock is taken waits for
// the next retry, however soon the lock is free, and one that keeps taking
// the lock back at once (a subscriber's batches, back to back) can keep
// another out until its busy timeout fails it with "database is locked".
// The gate queues writers instead, and hands the lock over at release, in
// two classes:
//
//   - the app's writes: Bus.Tx groups, and the app's own transactions and
//     statements on connections from Open;
//   - Boxcar's own background writes: subscriber batches, the relay's
//     cursor and pruning, the checkpointer's locked step.
//
// Each class is served in arrival order, and when both wait they take
// turns: after a background write, every app write waiting at that moment
// goes (each app transaction is one SQLite transaction of its own, so a
// busy subscriber must let them all through, not one per batch), then one
// background write again. So the app's writes wait for at most one
// background batch, and background writes cannot be starved by a steady
// stream of the app's.
//
// The gate also knows which goroutine runs code under it (the owner), so
// that a call that would wait for the gate its own goroutine holds (Bus.Tx
// or Publish inside a Tx function or a TxHandler, a statement on another
// connection inside the app's own transaction) fails at once with
// ErrReentrant instead of waiting for ever.
type gate struct {
	mu     sync.Mutex
	held   bool
	lastBg bool          // the holder, or the last one, was a background writer
	turn   int           // app writers still to go in the current app turn
	app    []*gateWaiter // oldest first
	bg     []*gateWaiter
	owner  atomic.Int64 // goroutine ID of the holder's code, 0 when free
	since  atomic.Int64 // when the holder got the gate (unix ns), 0 when free
}

// heldFor is how long the current holder has held the gate (0 when free).
func (g *gate) heldFor() time.Duration {
	if ns := g.since.Load(); ns != 0 {
		return time.Since(time.Unix(0, ns))
	}
	return 0
}

// ErrReentrant is returned to a call that would wait for the database's
// write lock while its own goroutine holds it.
var ErrReentrant = errors.New("sqlite: called from code that holds the database's only writer (a Tx function, a transactional handler, or a transaction of the app's on this goroutine), which would wait for itself: use the tx you were given")

// ErrBusy is returned when an app's write waited for the gate longer than
// its connection's busy timeout.
var ErrBusy = errors.New("database is locked")

type gateWaiter struct {
	granted chan struct{}
	bg      bool
}

// class of a writer.
const (
	appClass = false
	bgClass  = true
)

// enter queues the caller for the gate in class bg. granted is closed when
// the caller holds it (at once if it was free). If the caller stops waiting,
// it calls withdraw, which reports false when the gate was granted meanwhile
// (the caller then holds it and must release it).
func (g *gate) enter(bg bool) (granted <-chan struct{}, withdraw func() bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.held {
		g.held, g.lastBg = true, bg
		g.since.Store(time.Now().UnixNano())
		return closedChan, func() bool { return false }
	}
	w := &gateWaiter{granted: make(chan struct{}), bg: bg}
	if bg {
		g.bg = append(g.bg, w)
	} else {
		g.app = append(g.app, w)
	}
	return w.granted, func() bool { return g.withdraw(w) }
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (g *gate) withdraw(w *gateWaiter) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	q := &g.app
	if w.bg {
		q = &g.bg
	}
	for i, x := range *q {
		if x == w {
			*q = append((*q)[:i], (*q)[i+1:]...)
			return true
		}
	}
	return false // granted
}

// lock takes the gate in class bg, waiting up to ctx (and up to limit, if
// positive). It refuses at once a goroutine that holds the gate already.
// The caller becomes the owner.
func (g *gate) lock(ctx context.Context, bg bool, limit time.Duration) error {
	me := goroutine.ID()
	if g.owner.Load() == me {
		return ErrReentrant
	}
	granted, withdraw := g.enter(bg)
	var timeout <-chan time.Time
	if limit > 0 {
		select {
		case <-granted:
		default:
			t := time.NewTimer(limit)
			defer t.Stop()
			timeout = t.C
		}
	}
	select {
	case <-granted:
	case <-ctx.Done():
		if withdraw() {
			return ctx.Err()
		}
	case <-timeout:
		if withdraw() {
			return fmt.Errorf("%w: waited %v for the writer", ErrBusy, limit)
		}
	}
	g.owner.Store(me)
	return nil
}

// setOwner makes the calling goroutine the one that runs code under the
// gate, which the caller's goroutine group holds; it returns the previous
// owner, for restoreOwner.
func (g *gate) setOwner() (prev int64) {
	return g.owner.Swap(goroutine.ID())
}

// restoreOwner gives the gate back to the previous owner, only if the
// calling goroutine still owns it: a handler abandoned past its timeout
// returns after its batch released the gate, and must not make its worker
// the owner of a gate someone else holds now (or of a free one).
func (g *gate) restoreOwner(prev int64) { g.owner.CompareAndSwap(goroutine.ID(), prev) }

// unlock releases the gate: to the oldest waiter of the class whose turn it
// is, or to nobody.
func (g *gate) unlock() {
	g.owner.Store(0)
	g.mu.Lock()
	defer g.mu.Unlock()
	var next *gateWaiter
	switch {
	case len(g.app) > 0 && g.turn > 0:
		next, g.app = g.app[0], g.app[1:]
		g.turn--
	case len(g.app) > 0 && (g.lastBg || len(g.bg) == 0):
		// A new app turn: the app writers waiting now.
		g.turn = len(g.app) - 1
		next, g.app = g.app[0], g.app[1:]
	case len(g.bg) > 0:
		next, g.bg = g.bg[0], g.bg[1:]
		g.turn = 0
	}
	if next == nil {
		g.held = false
		g.since.Store(0)
		return
	}
	g.since.Store(time.Now().UnixNano())
	g.lastBg = next.bg
	close(next.granted)
}

// waiting reports how many writers wait, app and background.
func (g *gate) waiting() (app, bg int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.app), len(g.bg)
}
