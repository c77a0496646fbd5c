package boxcar

import (
	"github.com/nats-io/nats.go/jetstream"
)

// Probe names an instant of the data path where a crash is hardest to
// survive. Config.Probe is called with it there; cmd/torture kills the
// process at these instants to prove that nothing is lost, duplicated or
// reordered across them.
type Probe string

// The probes.
const (
	// ProbeAfterCommit: a Bus.Tx group committed its outbox rows; the relay
	// has not been woken.
	ProbeAfterCommit Probe = "outbox.after-commit"
	// ProbeRelayMidBatch: half of a pipelined batch of two or more events is
	// on its way to the stream.
	ProbeRelayMidBatch Probe = "relay.mid-batch"
	// ProbeRelayAfterAck: the stream acked a batch; the relay's cursor has
	// not moved.
	ProbeRelayAfterAck Probe = "relay.after-ack"
	// ProbeHandlerAfterCommit: subscriber transactions committed their
	// handlers' writes and dedupe rows, and a WAL fsync covers them; their
	// events are not yet acked (the acker's round, which may cover several
	// transactions; later events of their keys may have committed too).
	ProbeHandlerAfterCommit Probe = "handler.after-commit"
	// ProbeRetrying: a key starts waiting to retry a failed event.
	ProbeRetrying Probe = "handler.retrying"
)

// probe calls the configured probe at p.
func (b *Bus) probe(p Probe) {
	if b.cfg.Probe != nil {
		b.cfg.Probe(p)
	}
}

// testSeams are where the package's tests reach into the data path, to lose
// what a network or a failing server would lose. Every field is nil outside
// the tests.
type testSeams struct {
	// wrapJetStream wraps the JetStream context of the bus's publishes
	// (the relay's and the dead letters').
	wrapJetStream func(jetstream.JetStream) jetstream.JetStream
	// ack replaces a subscriber's msg.Ack.
	ack func(jetstream.Msg) error
	// durable, if set, is asked before the WAL fsync that lets a
	// subscriber ack; an error fails that fsync, as a failing disk would.
	durable func() error
	// writer, if set, wraps the bus's writer (a disk whose fsyncs fail is
	// simulated around the real one).
	writer func(writer) writer
	// upgradePhase, if set, is called as the layout upgrade enters each
	// phase; an error stops the upgrade there, as a crash would.
	upgradePhase func(phase string) error
}
