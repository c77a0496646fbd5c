package jetstream

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/boxcar-bus/boxcar/internal/waitfor"
)

// expiredContext is a context whose deadline has passed.
func expiredContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// waitUntil polls cond until it holds; limit is a liveness bound, not a
// measurement.
func waitUntil(t *testing.T, what string, limit time.Duration, cond func() (bool, string)) {
	t.Helper()
	waitfor.Cond(t, what, limit, 5*time.Millisecond, cond)
}

// Regression (issue "Nothing stuck, nothing silent", item 4): Shutdown past
// its context's deadline returned an error and never released the store
// lock, so a new server on the same Dir in this process was refused ("in use
// by another process") until the old one was garbage-collected. Now the
// shutdown finishes in the background and releases the lock; meanwhile a
// Start says that a Bus of this process is still closing.
func TestShutdownPastDeadlineReleasesLockWhenDone(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv, err := Start(ServerConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Shutdown(expiredContext()); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown with an expired context: got %v, want nil or the context's error", err)
	}
	var again *Server
	waitUntil(t, "the background shutdown to release the store lock", time.Minute, func() (bool, string) {
		s, err := Start(ServerConfig{Dir: dir})
		if err == nil {
			again = s
			return true, ""
		}
		if !errors.Is(err, ErrDirLocked) || !strings.Contains(err.Error(), "held by a Bus of this process that is still closing: wait for its Close") {
			t.Fatalf("Start while the previous server shuts down: got %v, want ErrDirLocked saying a Bus of this process is still closing", err)
		}
		return false, err.Error()
	})
	if err := again.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The first server has stopped: its Shutdown reports success, whatever
	// the context says.
	if err := srv.Shutdown(expiredContext()); err != nil {
		t.Fatalf("Shutdown with an expired context after the server stopped: got %v, want nil", err)
	}
}

// Regression (item 4): a Shutdown that found the server already stopped
// returned the context's error when the context had expired. It reports
// success, and the lock is free at once.
func TestShutdownAfterStopReportsSuccess(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv, err := Start(ServerConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if err := srv.Shutdown(expiredContext()); err != nil {
			t.Fatalf("call %d: Shutdown with an expired context after the server stopped: got %v, want nil", i, err)
		}
	}
	again, err := Start(ServerConfig{Dir: dir})
	if err != nil {
		t.Fatalf("Start after Shutdown returned: %v", err)
	}
	again.Shutdown(context.Background())
}

// A refused store lock says who holds it: another server of this process
// that is open, or one that is still shutting down. (Another process:
// TestSecondOpenOnLockedDir in the root package, with a child process.)
func TestDirLockSaysWhoHoldsIt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	l, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		closing bool
		want    string
	}{
		{false, "held by another Bus of this process: close it first"},
		{true, "held by a Bus of this process that is still closing: wait for its Close"},
	} {
		if c.closing {
			l.markClosing()
		}
		_, err := lockDir(dir)
		if !errors.Is(err, ErrDirLocked) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), dir) {
			t.Fatalf("closing=%v: got %v, want ErrDirLocked naming %s and saying %q", c.closing, err, dir, c.want)
		}
	}
	l.release()
	again, err := lockDir(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	again.release()
}
