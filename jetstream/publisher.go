package jetstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Publisher puts outbox events into the event stream in outbox order, each
// exactly once. It is the stream's only writer and is not safe for
// concurrent use.
//
// Why chained async publishes and not atomic batches: every message carries
// Nats-Msg-Id = event ID and Nats-Expected-Last-Msg-Id = the previous event's
// ID. Publishes are pipelined (no round trip per message, and the next batch
// may be sent while the previous one is still being acked), and the chain
// makes the server refuse every message after a gap, so a failure in the
// middle of a batch can never leave a later event stored before an earlier
// one, in its batch or in a later one. Atomic batch publish (server 2.12+)
// would give the same order but refuses a whole batch on any duplicate,
// which is exactly the case after a crash between a publish and the cursor
// update, and it stages the batch in the server before committing it; the
// chain costs one header.
//
// After any error the caller must call Resync, which learns from the stream
// itself what it holds; the chain restarts from there.
type Publisher struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	layout Layout
	origin string
	// prevID is the ID of the last event sent (stored, or in flight and
	// stored unless the chain breaks); "" right after Resync, when the next
	// publish names instead the stream seq Resync read (afterSeq).
	prevID string
	// afterSeq is the stream's last seq as Resync read it: the first message
	// sent after a Resync carries it in Nats-Expected-Last-Sequence, so that
	// a message of an earlier, failed Send stored after that read (the
	// server had it queued) makes the server refuse the resend, and the
	// next Resync finds it, instead of a second copy being stored (the
	// duplicate window, which is short, cannot be relied on for that).
	afterSeq uint64
	fromSeq  bool // the next message sent carries afterSeq
	// unsynced: a Resync began and has not succeeded. Send refuses (its
	// batch fails in Await): without the stream's end it has nothing to
	// chain on.
	unsynced bool
	inflight []*inflightBatch // sent, not yet awaited; oldest first
	acked    uint64           // AckedStreamSeq
	free     []*inflightBatch

	// Owns, if set, tells Resync whether a message carrying an outbox seq
	// and an ID is really an event of this relay's outbox. Anyone who can
	// publish on the stream's subjects can send such headers (a second Bus
	// on another database sharing the stream, a forwarder, an attacker);
	// trusting one would move the relay's cursor to a seq that is not the
	// stream's real end: back (and publish events twice) or forward (and
	// never publish the events in between). Nil trusts the headers.
	Owns func(ctx context.Context, outboxSeq int64, id string) (bool, error)

	// MidBatch, if set, is called when half of a Send of two or more
	// messages is on its way: a probe for crash tests (a kill there leaves
	// a batch half stored). It must return at once or never.
	MidBatch func()
}

// errUnsynced fails a Send made after a Resync that did not succeed.
var errUnsynced = errors.New("publisher: the stream's end is not known (the last Resync failed): resync before publishing")

type pendingAck struct {
	f   jetstream.PubAckFuture
	seq int64
}

// NewPublisher returns a publisher into stream of the events origin
// publishes, in layout l. js must have been made with an async publish
// timeout.
func NewPublisher(js jetstream.JetStream, stream jetstream.Stream, l Layout, origin string) *Publisher {
	return &Publisher{js: js, stream: stream, layout: l, origin: origin}
}

// Writer is how the relay puts the outbox into the stream: a Publisher when
// it is the stream's only writer (one binary, or a leaf's own stream), a
// BatchPublisher when instances share the stream. Send starts publishing a
// batch after everything sent before; Await waits for the oldest batch sent
// and not awaited; after an error, Resync before sending again.
type Writer interface {
	Send(msgs []Outgoing)
	Await(ctx context.Context) (lastSeq int64, n int, err error)
	// AckedStreamSeq is the stream seq of the last message of the Send
	// Await last returned nil for (0 before one).
	AckedStreamSeq() uint64
	InFlight() int
	Resync(ctx context.Context) (StreamEnd, error)
}

// WriterConfig chooses and configures the relay's Writer.
type WriterConfig struct {
	Layout Layout
	Origin string // the instance whose outbox is published
	// Shared: other instances write into the stream too (each on its own
	// origin's subtree): a BatchPublisher. Otherwise a Publisher.
	Shared bool
	// Owns and MidBatch: see Publisher.
	Owns     func(ctx context.Context, outboxSeq int64, id string) (bool, error)
	MidBatch func()
}

// NewWriter returns the Writer cfg asks for.
func NewWriter(js jetstream.JetStream, stream jetstream.Stream, cfg WriterConfig) Writer {
	if cfg.Shared {
		p := NewBatchPublisher(js, stream, cfg.Layout, cfg.Origin)
		p.Owns, p.MidBatch = cfg.Owns, cfg.MidBatch
		return p
	}
	p := NewPublisher(js, stream, cfg.Layout, cfg.Origin)
	p.Owns, p.MidBatch = cfg.Owns, cfg.MidBatch
	return p
}

// Publish sends msgs in order, pipelined, and waits for every ack (also of
// batches sent before it). It returns nil only if all of them are in the
// stream (newly or as duplicates). On error some prefix of msgs may be
// stored: call Resync before publishing again.
func (p *Publisher) Publish(ctx context.Context, msgs []Outgoing) error {
	p.Send(msgs)
	var firstErr error
	for p.InFlight() > 0 {
		if _, _, err := p.Await(ctx); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// Send starts publishing msgs, in order, after every message sent before,
// and returns without waiting for the acks: the caller may read and Send the
// next batch while the server stores this one. Each message names the
// previous one sent (also of an earlier batch still in flight) in
// Nats-Expected-Last-Msg-Id, so if any message fails, the server refuses
// every later one, whichever batch it is in: a later event can never be
// stored before an earlier one. Call Await once per Send, in order; after an
// error from Await, call Resync before sending again.
func (p *Publisher) Send(msgs []Outgoing) {
	b := p.newBatch()
	b.count = len(msgs)
	if len(msgs) > 0 {
		b.lastSeq = msgs[len(msgs)-1].Seq
	}
	if p.unsynced {
		b.sendErr = errUnsynced
		p.inflight = append(p.inflight, b)
		return
	}
	prev := p.prevID
	for i := range msgs {
		o := &msgs[i]
		m := Encode(p.layout, p.origin, o, prev)
		if prev == "" && p.fromSeq {
			m.Header.Set(jetstream.ExpectedLastSeqHeader, strconv.FormatUint(p.afterSeq, 10))
		}
		p.fromSeq = false
		prev = o.ID
		f, err := p.js.PublishMsgAsync(m)
		if err != nil {
			b.sendErr = &PublishError{Seq: o.Seq, Err: err}
			break
		}
		b.pending = append(b.pending, pendingAck{f: f, seq: o.Seq})
		if i == len(msgs)/2 && len(msgs) > 1 && p.MidBatch != nil {
			p.MidBatch()
		}
	}
	// The chain goes on from the last message of this batch. If the batch
	// fails, Await reports it and the caller must Resync, which restarts the
	// chain from what the stream really holds.
	p.prevID = prev
	p.inflight = append(p.inflight, b)
}

// InFlight is how many sent batches have not been awaited.
func (p *Publisher) InFlight() int { return len(p.inflight) }

// Await waits for every ack of the oldest batch not yet awaited and returns
// its last outbox seq and size. It returns nil only if every message of the
// batch is in the stream (newly or as a duplicate), and so are those of all
// batches before it. A message's failure is a *PublishError naming its outbox
// seq: the first in the batch, which the chain's refusals of the later ones
// follow.
func (p *Publisher) Await(ctx context.Context) (lastSeq int64, n int, err error) {
	if len(p.inflight) == 0 {
		return 0, 0, errors.New("publisher: await with no batch in flight")
	}
	b := p.inflight[0]
	p.inflight = p.inflight[1:]
	defer p.release(b)
	// Wait for every ack, even after a failure: a Resync must not race
	// messages still in flight.
	var firstErr error
	var acked uint64
	for _, pa := range b.pending {
		select {
		case ack := <-pa.f.Ok():
			acked = ack.Sequence
		case err := <-pa.f.Err():
			if firstErr == nil {
				firstErr = &PublishError{Seq: pa.seq, Err: err}
			}
		case <-ctx.Done():
			if firstErr == nil {
				firstErr = ctx.Err()
			}
		}
	}
	sent := len(b.pending)
	if firstErr == nil {
		firstErr = b.sendErr
	}
	if firstErr == nil && sent < b.count {
		firstErr = fmt.Errorf("publish: %d of %d messages were not sent", b.count-sent, b.count)
	}
	if firstErr != nil {
		return 0, 0, firstErr
	}
	p.acked = acked
	return b.lastSeq, b.count, nil
}

// AckedStreamSeq: see Writer.
func (p *Publisher) AckedStreamSeq() uint64 { return p.acked }

// inflightBatch is one Send's messages awaiting their acks.
type inflightBatch struct {
	pending []pendingAck
	count   int   // messages in the batch, sent or not
	lastSeq int64 // outbox seq of the batch's last message
	sendErr error
}

func (p *Publisher) newBatch() *inflightBatch {
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free = p.free[:n-1]
		return b
	}
	return &inflightBatch{}
}

func (p *Publisher) release(b *inflightBatch) {
	clear(b.pending) // drop references to the messages
	*b = inflightBatch{pending: b.pending[:0]}
	p.free = append(p.free, b)
}

// StreamEnd is what the event stream holds at its end.
type StreamEnd struct {
	// LastSeq is the stream sequence of the last message ever stored (0 if
	// the stream never held one, as after a lost store).
	LastSeq uint64
	// Msgs is how many messages the stream holds now.
	Msgs uint64
	// OutboxSeq is the outbox seq of the last Boxcar event in the stream, 0
	// if Found is false.
	OutboxSeq int64
	// Found is false when no Boxcar event is left in the stream (all expired
	// or deleted, or the stream is new).
	Found bool
	// EventSeq is the stream seq of that last event, 0 if Found is false.
	EventSeq uint64
	// Created is when the stream was created: another time than before
	// means it was deleted and made again.
	Created time.Time
}

// maxResyncScan bounds how many foreign or deleted messages Resync steps over
// while looking for the stream's last Boxcar event.
const maxResyncScan = 10_000

// Resync waits for the batches still in flight (their results no longer
// matter), reads the end of the stream and restarts the chain from it: the
// next message sent expects the stream's last seq to be the one read
// (Nats-Expected-Last-Sequence). Until a Resync succeeds, Send refuses. The
// caller moves its cursor to OutboxSeq when Found.
func (p *Publisher) Resync(ctx context.Context) (_ StreamEnd, err error) {
	for p.InFlight() > 0 {
		p.Await(ctx)
	}
	p.prevID, p.fromSeq, p.unsynced = "", false, true
	info, err := StreamInfo(ctx, p.stream)
	if err != nil {
		return StreamEnd{}, fmt.Errorf("resync: stream info: %w", err)
	}
	end := StreamEnd{LastSeq: info.State.LastSeq, Msgs: info.State.Msgs, Created: info.Created}
	defer func() {
		if err == nil {
			p.afterSeq, p.fromSeq, p.unsynced = end.LastSeq, true, false
		}
	}()
	for seq, n := info.State.LastSeq, 0; seq >= info.State.FirstSeq && seq > 0 && n < maxResyncScan; seq, n = seq-1, n+1 {
		m, err := GetMsg(ctx, p.js, p.stream, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // deleted or expired: the leader says so
		}
		if err != nil {
			return StreamEnd{}, fmt.Errorf("resync: get message %d: %w", seq, err)
		}
		s, id, ok := OutboxSeqOf(m.Header)
		if !ok {
			continue // not ours
		}
		if p.Owns != nil {
			ours, err := p.Owns(ctx, s, id)
			if err != nil {
				return StreamEnd{}, fmt.Errorf("resync: check message %d: %w", seq, err)
			}
			if !ours {
				continue // a foreign message dressed as an event
			}
		}
		end.OutboxSeq, end.Found, end.EventSeq = s, true, m.Sequence
		return end, nil
	}
	return end, nil
}

// FirstEvent returns the outbox seq of the first Boxcar event the stream
// holds, stepping over foreign and deleted messages (at most maxResyncScan),
// and false when it holds none.
func FirstEvent(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream) (int64, bool, error) {
	info, err := stream.Info(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("first event: stream info: %w", err)
	}
	if info.State.Msgs == 0 {
		return 0, false, nil
	}
	for seq, n := info.State.FirstSeq, 0; seq <= info.State.LastSeq && n < maxResyncScan; seq, n = seq+1, n+1 {
		m, err := GetMsg(ctx, js, stream, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return 0, false, fmt.Errorf("first event: get message %d: %w", seq, err)
		}
		if s, _, ok := OutboxSeqOf(m.Header); ok {
			return s, true, nil
		}
	}
	return 0, false, nil
}
