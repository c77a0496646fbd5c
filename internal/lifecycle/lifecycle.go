// Package lifecycle is the one way Boxcar owns goroutines: a Group starts
// them, gives them a context that Stop cancels, and waits for them. Every
// long-lived goroutine of the library (the relay, the checkpointer, a
// subscriber's fetch loop, workers and pruner, its handler calls) belongs
// to a Group, and the component that made the Group stops it.
package lifecycle

import (
	"context"
	"sync"
)

// Group owns a set of goroutines.
type Group struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns a Group whose context is canceled by Stop (and by nothing
// else: it is the top of goroutines the library owns).
func New() *Group {
	g := &Group{}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	return g
}

// Context is the context of the group's goroutines.
func (g *Group) Context() context.Context { return g.ctx }

// Done is closed when Stop has been called.
func (g *Group) Done() <-chan struct{} { return g.ctx.Done() }

// Stopping reports whether Stop has been called.
func (g *Group) Stopping() bool { return g.ctx.Err() != nil }

// Go runs fn on a goroutine of the group.
func (g *Group) Go(fn func(ctx context.Context)) {
	g.wg.Go(func() { fn(g.ctx) })
}

// Wait waits for the group's goroutines to return, up to ctx, without
// canceling them.
func (g *Group) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		g.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop cancels the group's context and waits for its goroutines, up to
// ctx. It may be called more than once.
func (g *Group) Stop(ctx context.Context) error {
	g.cancel()
	return g.Wait(ctx)
}
