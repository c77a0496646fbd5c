// Package faults injects failures at named points of Boxcar's data path, for
// tests and the torture harness. Every point is off unless a test or the
// harness turns it on; when all are off, Hit costs one atomic load.
package faults

import (
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
)

// Point names a place in the data path.
type Point string

// The points Boxcar checks.
const (
	// PublishDrop: the relay's publisher skips sending one message, as if it
	// were lost on the way (later ones then break the chain).
	PublishDrop Point = "publish.drop"
	// PublishFail: the relay's publish of a batch fails before sending.
	PublishFail Point = "publish.fail"
	// RelayAfterAck: after JetStream acked a batch, before the cursor is saved.
	RelayAfterAck Point = "relay.after-ack"
	// RelayMidBatch: in the middle of sending a pipelined batch.
	RelayMidBatch Point = "relay.mid-batch"
	// AfterCommit: after an outbox commit, before the relay is woken.
	AfterCommit Point = "outbox.after-commit"
	// HandlerAfterCommit: after a handler transaction committed, before the ack.
	HandlerAfterCommit Point = "handler.after-commit"
	// AckDrop: a subscriber's ack is not sent (forces a redelivery).
	AckDrop Point = "ack.drop"
	// Retrying: a key is waiting to retry a failed event.
	Retrying Point = "handler.retrying"
)

// Action is what a point does when it fires.
type Action int

const (
	// Report makes Hit return true; the caller fails or skips as the point says.
	Report Action = iota
	// Kill sends SIGKILL to this process: a real crash at this point.
	Kill
)

type rule struct {
	prob   float64
	action Action
	left   atomic.Int64 // fires left; <0 means unlimited
}

var (
	enabled atomic.Bool
	mu      sync.RWMutex
	rules   = map[Point]*rule{}
)

// Set makes p fire with probability prob, at most times times (<0: no limit).
func Set(p Point, prob float64, action Action, times int64) {
	mu.Lock()
	defer mu.Unlock()
	r := &rule{prob: prob, action: action}
	r.left.Store(times)
	rules[p] = r
	enabled.Store(true)
}

// Reset turns every point off.
func Reset() {
	mu.Lock()
	defer mu.Unlock()
	rules = map[Point]*rule{}
	enabled.Store(false)
}

// take uses up one fire, reporting false when none is left.
func (r *rule) take() bool {
	for {
		n := r.left.Load()
		if n < 0 {
			return true
		}
		if n == 0 {
			return false
		}
		if r.left.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// Hit reports whether p fires now. A Kill point does not return.
func Hit(p Point) bool {
	if !enabled.Load() {
		return false
	}
	mu.RLock()
	r := rules[p]
	mu.RUnlock()
	if r == nil || rand.Float64() >= r.prob {
		return false
	}
	if !r.take() {
		return false
	}
	if r.action == Kill {
		if self, err := os.FindProcess(os.Getpid()); err == nil {
			self.Kill() // SIGKILL on Unix
		}
		select {} // the signal is on its way
	}
	return true
}
