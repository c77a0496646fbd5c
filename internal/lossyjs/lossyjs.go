// Package lossyjs lets tests lose or refuse JetStream publishes the way a
// network or a failing server would, while everything else goes through the
// real server. It is imported by tests only: no build of the library
// contains it.
package lossyjs

import (
	"errors"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrLost is the error of a publish that never reached the server.
var ErrLost = errors.New("lossyjs: message lost on its way to the server")

// ErrRefused is the error of a publish refused before it was sent.
var ErrRefused = errors.New("lossyjs: publish refused")

// JetStream is a JetStream context whose asynchronous publishes can be lost
// (Drop) or refused (Refuse). Set the funcs before use, or with SetDrop and
// SetRefuse while in use.
type JetStream struct {
	jetstream.JetStream

	mu     sync.Mutex
	drop   func(m *nats.Msg) bool
	refuse func(m *nats.Msg) bool
}

// Wrap returns js with no fault set.
func Wrap(js jetstream.JetStream) *JetStream { return &JetStream{JetStream: js} }

// SetDrop makes every message for which drop returns true vanish: it never
// reaches the server, and its future fails with ErrLost. nil stops it.
func (j *JetStream) SetDrop(drop func(m *nats.Msg) bool) {
	j.mu.Lock()
	j.drop = drop
	j.mu.Unlock()
}

// SetRefuse makes PublishMsgAsync fail with ErrRefused for every message
// for which refuse returns true. nil stops it.
func (j *JetStream) SetRefuse(refuse func(m *nats.Msg) bool) {
	j.mu.Lock()
	j.refuse = refuse
	j.mu.Unlock()
}

// DropTimes returns a drop func that loses each message with probability
// given by pick, at most n times.
func DropTimes(n int, pick func() bool) func(*nats.Msg) bool {
	var mu sync.Mutex
	return func(*nats.Msg) bool {
		mu.Lock()
		defer mu.Unlock()
		if n <= 0 || !pick() {
			return false
		}
		n--
		return true
	}
}

// PublishMsgAsync publishes m through the real server unless a fault takes it.
func (j *JetStream) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	j.mu.Lock()
	drop, refuse := j.drop, j.refuse
	j.mu.Unlock()
	if refuse != nil && refuse(m) {
		return nil, ErrRefused
	}
	if drop != nil && drop(m) {
		return lost(m), nil
	}
	return j.JetStream.PublishMsgAsync(m, opts...)
}

// lostFuture is the future of a lost message: it fails at once.
type lostFuture struct {
	msg *nats.Msg
	err chan error
}

func lost(m *nats.Msg) *lostFuture {
	f := &lostFuture{msg: m, err: make(chan error, 1)}
	f.err <- ErrLost
	return f
}

func (f *lostFuture) Ok() <-chan *jetstream.PubAck { return nil }
func (f *lostFuture) Err() <-chan error            { return f.err }
func (f *lostFuture) Msg() *nats.Msg               { return f.msg }
