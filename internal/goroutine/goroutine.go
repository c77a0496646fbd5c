// Package goroutine tells goroutines apart, so that the single writer can
// refuse at once a call that would wait for a lock its own goroutine holds
// (Bus.Tx inside a Tx function or a handler) instead of deadlocking.
//
// Go has no goroutine identity by design; github.com/petermattis/goid reads
// the runtime's own ID in a few nanoseconds, from the runtime's layout for
// the Go version being built. In case a Go release changes that layout
// before goid follows, the ID is checked once against the one the runtime
// prints in stack traces (slow, but always right), and a mismatch switches
// to the slow way for good.
package goroutine

import (
	"bytes"
	"runtime"
	"strconv"
	"sync"

	"github.com/petermattis/goid"
)

var (
	checkOnce sync.Once
	fast      bool
)

// ID returns the calling goroutine's ID: unique among live goroutines.
func ID() int64 {
	checkOnce.Do(check)
	if fast {
		return goid.Get()
	}
	return slowID()
}

// check compares the fast ID with the slow one on a few goroutines.
func check() {
	fast = goid.Get() == slowID()
	for range 3 {
		ok := make(chan bool)
		go func() { ok <- goid.Get() == slowID() }()
		fast = <-ok && fast
	}
}

// slowID parses "goroutine 123 [" from the runtime's stack trace.
func slowID() int64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, _ := strconv.ParseInt(string(b), 10, 64)
	return id
}
