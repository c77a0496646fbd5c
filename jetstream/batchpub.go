package jetstream

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// BatchPublisher puts one instance's outbox events into a stream that other
// instances write into too (a shared cluster), in outbox order, each exactly
// once. It is not safe for concurrent use.
//
// Publisher's chain (Nats-Expected-Last-Msg-Id) is stream-wide: with a
// second writer, every message of one would break the other's chain. Here
// each instance writes on its own subtree, prefix.origin.> (see Layout), and
// chains on it: the first message of each publish carries
// Nats-Expected-Last-Subject-Sequence (the stream seq of the last message
// stored on the subtree) with Nats-Expected-Last-Subject-Sequence-Subject
// prefix.origin.>, which nats-server checks against the subtree whatever the
// other instances wrote meanwhile (checked on v2.15.3: a stale expectation
// is refused with err_code 10071).
//
// That expectation names a stream seq, which is known only once the previous
// publish is acked; so the messages of a Send go as one atomic batch
// (server 2.12+: Nats-Batch-Id, -Sequence, -Commit, on a stream with
// AllowAtomicPublish): the server stores all of them, in order, right after
// the expected seq, or none. A gap is impossible, and after any failure
// Resync reads the subtree's last message back from the stream. The next
// batch is sent once the previous one is acked (a round trip per batch of
// up to MaxAtomicBatch events). Atomic batches refuse
// Nats-Expected-Last-Msg-Id and a duplicate Nats-Msg-Id: neither is sent
// twice, since the chain says what is stored.
//
// A refused commit does not say which message the server refused (a staged
// message over the stream's limits is dropped without an answer and the
// commit is answered "incomplete batch"): the relay sets aside the message
// a permanent PublishError names, and must not be handed an innocent one.
// Such a batch is sent again one message at a time, still chained, which
// stores the messages before the refused one and names it (refusesOneOf,
// resendAlone). That costs a round trip per message, only after such a
// refusal.
type BatchPublisher struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	layout Layout
	origin string

	// expect is the stream seq of the last message of the origin's subtree
	// that is stored or in flight ahead: the next batch's expectation.
	expect   uint64
	inflight []*atomicSend // sent, not yet awaited; oldest first
	// last is the commit of the most recent batch sent, whose ack gives the
	// next expectation; nil once known.
	last  *atomicBatchPub
	acked uint64 // AckedStreamSeq

	// Owns and MidBatch: as Publisher's.
	Owns     func(ctx context.Context, outboxSeq int64, id string) (bool, error)
	MidBatch func()
}

// MaxAtomicBatch is the most messages nats-server takes in one atomic batch
// (its default max_batch_size); a Send of more goes as several.
const MaxAtomicBatch = 1000

// Header names of atomic batch publish (nats-server's JSBatch*).
const (
	headerBatchID     = "Nats-Batch-Id"
	headerBatchSeq    = "Nats-Batch-Sequence"
	headerBatchCommit = "Nats-Batch-Commit"
	maxBatchIDLen     = 22 // a NUID
)

// ErrForeignWriter is returned by BatchPublisher.Resync when the origin's
// subtree ends with a message this outbox did not publish: another
// instance (another database) publishes with the same instance ID.
var ErrForeignWriter = errors.New("another writer publishes on this instance's subjects")

// NewBatchPublisher returns a publisher of origin's events into stream, in
// layout l, chained on origin's subtree. js must have been made with an
// async publish timeout. Call Resync before the first Send.
func NewBatchPublisher(js jetstream.JetStream, stream jetstream.Stream, l Layout, origin string) *BatchPublisher {
	return &BatchPublisher{js: js, stream: stream, layout: l, origin: origin}
}

// atomicSend is one Send: one atomic batch per MaxAtomicBatch messages.
type atomicSend struct {
	batches []*atomicBatchPub
	count   int
	lastSeq int64
	sendErr error
}

// atomicBatchPub is one atomic batch on its way.
type atomicBatchPub struct {
	p      *BatchPublisher
	commit jetstream.PubAckFuture
	// msgs and seqs are the batch's messages and their outbox seqs, kept
	// until its outcome is known, for resendAlone; expect is the
	// expectation its first message carried.
	msgs   []*nats.Msg
	seqs   []int64
	expect uint64
	done   bool // ack or error read (into seq, err)
	seq    uint64
	err    error
}

// errCodeIncompleteBatch is nats-server's JSAtomicPublishIncompleteBatchErr.
const errCodeIncompleteBatch = 10176

// refusesOneOf reports whether err, a refused commit of an atomic batch,
// may be the refusal of one message of it, which the commit's answer does
// not name. nats-server (v2.15.3, processJetStreamAtomicBatchMsg) checks
// each message against the stream's limits as it arrives, before staging
// it: a staged message (sent without a reply subject) that is over them is
// dropped silently, and the batch's next message finds a gap and the
// commit is answered 10176 "atomic publish batch is incomplete"; a commit
// message over them is answered with its own refusal (10054), which says
// nothing of which message it was when the batch has several. 10176 also
// follows a batch the server dropped (its 10 s timeout, a restart): a
// resend is right then too.
func refusesOneOf(err error, n int) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeIncompleteBatch {
		return true
	}
	return n > 1 && IsPermanent(err)
}

// wait reads the batch's commit ack once, bounded by ctx (nil: by the
// async publish timeout alone). A commit refused for one of its messages
// (refusesOneOf) is not an answer about the others: the batch's messages
// are then sent again one at a time (resendAlone), so that a refusal
// names its own message and those before it are stored.
func (a *atomicBatchPub) wait(ctx context.Context) {
	if a.done {
		return
	}
	var ctxDone <-chan struct{}
	if ctx != nil {
		ctxDone = ctx.Done()
	}
	select {
	case ack := <-a.commit.Ok():
		a.seq = ack.Sequence
	case err := <-a.commit.Err():
		if refusesOneOf(err, len(a.msgs)) {
			a.seq, a.err = a.resendAlone(ctx, err)
		} else {
			a.err = &PublishError{Seq: a.seqs[0], Err: fmt.Errorf("atomic batch: %w", err)}
		}
	case <-ctxDone:
		a.err = ctx.Err()
		return // not done: a later wait reads the outcome
	}
	a.done = true
	a.msgs, a.seqs = nil, nil
}

// resendAlone publishes the messages of the refused batch one by one,
// plain (not atomic), each chained on the one before it on the origin's
// subtree as a batch's first message is: an atomic batch is stored whole
// or not at all, so none of them is in the stream, and a resend that
// found one there anyway would be refused by its expectation (10071),
// never stored twice. It stops at the first refusal, a *PublishError
// naming that message's outbox seq, and returns the stream seq of the
// last message stored (0 if none). A plain publish is answered by the
// message's own refusal (10054 for one over the stream's max message size),
// so a permanent one is set aside alone while the others go on.
func (a *atomicBatchPub) resendAlone(ctx context.Context, commitErr error) (uint64, error) {
	var ctxDone <-chan struct{}
	if ctx != nil {
		ctxDone = ctx.Done()
	}
	expect, stored := a.expect, uint64(0)
	for i, bm := range a.msgs {
		h := maps.Clone(bm.Header)
		delete(h, headerBatchID)
		delete(h, headerBatchSeq)
		delete(h, headerBatchCommit)
		h[jetstream.ExpectedLastSubjSeqHeader] = []string{strconv.FormatUint(expect, 10)}
		h[jetstream.ExpectedLastSubjSeqSubjHeader] = []string{a.p.layout.OriginFilter(a.p.origin)}
		f, err := a.p.js.PublishMsgAsync(&nats.Msg{Subject: bm.Subject, Header: h, Data: bm.Data})
		if err == nil {
			select {
			case ack := <-f.Ok():
				expect, stored = ack.Sequence, ack.Sequence
				continue
			case err = <-f.Err():
			case <-ctxDone:
				// Not a refusal of the message: the caller resyncs, and the
				// chain refuses this publish if it lands after that.
				return stored, fmt.Errorf("atomic batch refused (%v); resending its messages one at a time: %w", commitErr, ctx.Err())
			}
		}
		return stored, &PublishError{Seq: a.seqs[i], Err: fmt.Errorf("sent alone after its atomic batch was refused (%v): %w", commitErr, err)}
	}
	return stored, nil
}

// Send publishes msgs as atomic batches chained on the origin's subtree.
// When a batch is still in flight, Send first waits for its ack (bounded by
// the async publish timeout): its last stream seq is the next expectation.
func (p *BatchPublisher) Send(msgs []Outgoing) {
	s := &atomicSend{count: len(msgs)}
	if len(msgs) > 0 {
		s.lastSeq = msgs[len(msgs)-1].Seq
	}
	p.inflight = append(p.inflight, s)
	for start := 0; start < len(msgs) && s.sendErr == nil; start += MaxAtomicBatch {
		chunk := msgs[start:min(start+MaxAtomicBatch, len(msgs))]
		if p.last != nil {
			p.last.wait(nil)
			if p.last.err != nil {
				// The chain is broken: nothing after it may be stored.
				s.sendErr = fmt.Errorf("not sent after a failed batch: %w", p.last.err)
				return
			}
			p.expect, p.last = p.last.seq, nil
		}
		b, err := p.sendBatch(chunk)
		if err != nil {
			s.sendErr = err
			return
		}
		s.batches = append(s.batches, b)
		p.last = b
	}
}

func (p *BatchPublisher) sendBatch(chunk []Outgoing) (*atomicBatchPub, error) {
	id := nuid.Next()
	nc := p.js.Conn()
	b := &atomicBatchPub{p: p, expect: p.expect, msgs: make([]*nats.Msg, 0, len(chunk)), seqs: make([]int64, len(chunk))}
	for i := range chunk {
		o := &chunk[i]
		b.seqs[i] = o.Seq
		m := Encode(p.layout, p.origin, o, "")
		m.Header[headerBatchID] = []string{id}
		m.Header[headerBatchSeq] = []string{strconv.Itoa(i + 1)}
		if i == 0 {
			m.Header[jetstream.ExpectedLastSubjSeqHeader] = []string{strconv.FormatUint(p.expect, 10)}
			m.Header[jetstream.ExpectedLastSubjSeqSubjHeader] = []string{p.layout.OriginFilter(p.origin)}
		}
		if i == len(chunk)-1 {
			m.Header[headerBatchCommit] = []string{"1"}
			f, err := p.js.PublishMsgAsync(m)
			if err != nil {
				return nil, &PublishError{Seq: o.Seq, Err: err}
			}
			b.commit, b.msgs = f, append(b.msgs, m)
			return b, nil
		}
		// The batch's other messages are staged by the server; it answers
		// the commit for all of them.
		if err := nc.PublishMsg(m); err != nil {
			return nil, &PublishError{Seq: o.Seq, Err: err}
		}
		b.msgs = append(b.msgs, m)
		if i == len(chunk)/2 && p.MidBatch != nil {
			p.MidBatch()
		}
	}
	return nil, errors.New("publisher: empty batch")
}

// InFlight is how many Sends have not been awaited.
func (p *BatchPublisher) InFlight() int { return len(p.inflight) }

// Await waits for the oldest Send not yet awaited and returns its last
// outbox seq and size. It returns nil only if every message of it is in the
// stream, and so are those of every Send before it.
func (p *BatchPublisher) Await(ctx context.Context) (lastSeq int64, n int, err error) {
	if len(p.inflight) == 0 {
		return 0, 0, errors.New("publisher: await with no batch in flight")
	}
	s := p.inflight[0]
	p.inflight = p.inflight[1:]
	var firstErr error
	for _, b := range s.batches {
		b.wait(ctx)
		if firstErr == nil {
			firstErr = b.err
		}
	}
	if firstErr == nil {
		firstErr = s.sendErr
	}
	if firstErr != nil {
		return 0, 0, firstErr
	}
	if n := len(s.batches); n > 0 {
		p.acked = s.batches[n-1].seq
		if s.batches[n-1] == p.last {
			p.expect, p.last = p.last.seq, nil
		}
	}
	return s.lastSeq, s.count, nil
}

// AckedStreamSeq: see Writer.
func (p *BatchPublisher) AckedStreamSeq() uint64 { return p.acked }

// Resync waits for the Sends in flight (their results no longer matter),
// reads the last message of the origin's subtree and restarts the chain
// from it. The subtree must end with an event of this outbox (Owns):
// otherwise another instance publishes with the same origin, and Resync
// returns ErrForeignWriter.
func (p *BatchPublisher) Resync(ctx context.Context) (StreamEnd, error) {
	for p.InFlight() > 0 {
		p.Await(ctx)
	}
	p.last, p.expect = nil, 0
	info, err := StreamInfo(ctx, p.stream)
	if err != nil {
		return StreamEnd{}, fmt.Errorf("resync: stream info: %w", err)
	}
	end := StreamEnd{LastSeq: info.State.LastSeq, Created: info.Created}
	subtree := p.layout.OriginFilter(p.origin)
	var m *jetstream.RawStreamMsg
	err = RetryTransient(ctx, func(ctx context.Context) error {
		var err error
		m, err = LastMsgForSubject(ctx, p.js, p.stream, subtree)
		return err
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return end, nil // nothing of ours is left: expect 0
	}
	if err != nil {
		return StreamEnd{}, fmt.Errorf("resync: last message of %s: %w", subtree, err)
	}
	s, id, ok := OutboxSeqOf(m.Header)
	ours := ok
	if ok && p.Owns != nil {
		if ours, err = p.Owns(ctx, s, id); err != nil {
			return StreamEnd{}, fmt.Errorf("resync: check message %d: %w", m.Sequence, err)
		}
	}
	if !ours {
		return StreamEnd{}, fmt.Errorf("resync: %w: stream %s seq %d on %s (event ID %q, outbox seq %q) is not an event of this database's outbox: is another instance running with the same instance ID?",
			ErrForeignWriter, info.Config.Name, m.Sequence, subtree, m.Header.Get(jetstream.MsgIDHeader), m.Header.Get(HeaderSeq))
	}
	p.expect = m.Sequence
	end.OutboxSeq, end.Found, end.EventSeq = s, true, m.Sequence
	return end, nil
}

// transientFor bounds RetryTransient when its context has no deadline.
const transientFor = 30 * time.Second

// attemptFor bounds one attempt of RetryTransient (one call of its fn, a
// few JetStream API requests), as nats.go bounds one request when its
// context has no deadline. A cluster leaves some requests unanswered:
// nats-server lets only a stream's leader answer its info, and the others
// stay silent while a leader is being elected or the API queue is full
// (jsStreamInfoRequest). A request on ctx alone would then wait for all of
// ctx (a whole minute of an Open, seen on CI); each attempt asks again.
const attemptFor = 5 * time.Second

// clusterNoPeers is nats-server's "no suitable peers for placement".
const clusterNoPeers = 10005

// RetryTransient calls fn, each time with a context of ctx bounded to
// attemptFor, until it returns something else than what a cluster gives for
// a moment, until ctx's deadline, or for up to transientFor (30 s) if ctx
// has none: "no responders" (a replicated
// stream or KV bucket created a moment ago has no responder until its
// replicas are up), "no suitable peers" (a busy cluster's meta leader sees a
// peer offline for a moment), and a request that timed out while ctx did not
// (a meta leader being elected, or a loaded node, answers an R3 stream's
// creation late, or not at all). fn must be safe to call again
// (create-or-update, reads) and must use the context it is given.
func RetryTransient(ctx context.Context, fn func(ctx context.Context) error) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(transientFor)
	}
	for {
		actx, cancel := context.WithTimeout(ctx, attemptFor)
		err := fn(actx)
		cancel()
		if !IsTransient(ctx, err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// StreamInfo is s.Info, retried (RetryTransient): in a cluster only the
// stream's leader answers it.
func StreamInfo(ctx context.Context, s jetstream.Stream) (info *jetstream.StreamInfo, err error) {
	err = RetryTransient(ctx, func(ctx context.Context) (err error) { info, err = s.Info(ctx); return err })
	return info, err
}

// IsTransient reports whether err is one RetryTransient retries.
func IsTransient(ctx context.Context, err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return false
	case errors.Is(err, nats.ErrNoResponders), errors.As(err, &apiErr) && apiErr.ErrorCode == clusterNoPeers:
		return true
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		return ctx.Err() == nil
	}
	return false
}
