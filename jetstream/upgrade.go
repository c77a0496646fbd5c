package jetstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
)

// The pieces of a layout upgrade (the root package's upgrade.go runs them,
// keeping its progress in SQLite): read an old stream's messages out, write
// them back into a new stream at the same stream seqs with subjects of the
// current layout, and make its consumers again at their positions. Keeping
// the seqs is what lets everything that names a stream seq (consumer ack
// floors, a subscriber's acked ranges, replay marks) stay true.

// StoredMsg is a message of a stream, as stored.
type StoredMsg struct {
	Seq     uint64
	Subject string
	Header  nats.Header
	Data    []byte
}

// ReadStream hands fn the messages of s from stream seq from through the
// stream's last seq at the call, in order, at most batch at a time. It
// reads through an ephemeral consumer without acks, deleted at the end.
func ReadStream(ctx context.Context, s jetstream.Stream, from uint64, batch int, fn func([]StoredMsg) error) error {
	info, err := StreamInfo(ctx, s)
	if err != nil {
		return fmt.Errorf("jetstream: read stream: %w", err)
	}
	last := info.State.LastSeq
	from = max(from, info.State.FirstSeq)
	if info.State.Msgs == 0 || from > last {
		return nil
	}
	var cons jetstream.Consumer
	// Named before the first attempt, so that an attempt that timed out but
	// created it is not followed by a second consumer: a create of the same
	// name and config is answered with the consumer.
	name := "boxcar_read_" + ulid.Make().String()
	err = RetryTransient(ctx, func(ctx context.Context) (err error) {
		cons, err = s.CreateConsumer(ctx, jetstream.ConsumerConfig{
			Name:      name,
			AckPolicy: jetstream.AckNonePolicy, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from,
			InactiveThreshold: time.Minute, MemoryStorage: true,
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("jetstream: read stream: %w", err)
	}
	defer s.DeleteConsumer(context.WithoutCancel(ctx), cons.CachedInfo().Name)
	noResponderUntil := time.Now().Add(transientFor)
	for {
		mb, err := cons.Fetch(batch, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return fmt.Errorf("jetstream: read stream: %w", err)
		}
		var out []StoredMsg
		done := false
		for m := range mb.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("jetstream: read stream: %w", err)
			}
			out = append(out, StoredMsg{Seq: meta.Sequence.Stream, Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
			done = done || meta.Sequence.Stream >= last
		}
		if err := mb.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			if errors.Is(err, nats.ErrNoResponders) && len(out) == 0 && time.Now().Before(noResponderUntil) {
				// A consumer of a replicated stream made a moment ago
				// has no leader yet: ask again.
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return fmt.Errorf("jetstream: read stream: %w", err)
		}
		if len(out) > 0 {
			if err := fn(out); err != nil {
				return err
			}
		}
		if done {
			return nil
		}
		if len(out) == 0 {
			return fmt.Errorf("jetstream: read stream: no message after seq %d of %d within 2s", from, last)
		}
		from = out[len(out)-1].Seq + 1
	}
}

// gapHeader marks the filler messages Republish stores where the old
// stream had a gap (a deleted message), to keep the seqs: it deletes them
// once the rest is stored.
const gapHeader = "Boxcar-Upgrade-Gap"

// GapSubject is the subject of those fillers: in the stream's subjects, and
// never an event's (Parse refuses it).
func (l Layout) GapSubject() string { return l.Prefix + "._upgrade_gap" }

// Rewrite returns m in layout l, published by origin: a Boxcar event of
// layout 1 gets the subject of its type and key; any other message keeps
// its subject. Nats-Expected-* and Nats-Batch-* headers are dropped.
func (l Layout) Rewrite(origin string, m StoredMsg) *nats.Msg {
	out := nats.NewMsg(m.Subject)
	for k, vs := range m.Header {
		if hasPrefixFold(k, "nats-expected") || hasPrefixFold(k, "nats-batch") {
			continue
		}
		out.Header[k] = append([]string(nil), vs...)
	}
	if typ, key, err := ParseLegacySubject(l.Prefix, m.Subject); err == nil && m.Header.Get(HeaderType) == typ {
		out.Subject = l.Subject(origin, typ, key)
	}
	out.Data = m.Data
	return out
}

// Republish stores msgs (in seq order, above the stream's last seq) into s
// at their own seqs: each names the seq before it (Nats-Expected-Last-
// Sequence), and a gap before one is filled with filler messages, deleted
// by DeleteFillers. Publishes are pipelined; any failure refuses every
// later one, and Republish returns the first error: call it again with the
// messages above the stream's new last seq.
func Republish(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, l Layout, msgs []StoredMsg, rewrite func(StoredMsg) *nats.Msg) error {
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("jetstream: republish: %w", err)
	}
	next := info.State.LastSeq + 1
	var futures []jetstream.PubAckFuture
	await := func() error {
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("jetstream: republish %s: %w", f.Msg().Header.Get(jetstream.ExpectedLastSeqHeader), err)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		futures = futures[:0]
		return nil
	}
	send := func(m *nats.Msg, seq uint64) error {
		m.Header.Set(jetstream.ExpectedLastSeqHeader, strconv.FormatUint(seq-1, 10))
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			return fmt.Errorf("jetstream: republish seq %d: %w", seq, err)
		}
		if futures = append(futures, f); len(futures) >= 500 {
			return await()
		}
		return nil
	}
	for _, m := range msgs {
		if m.Seq < next {
			continue // stored before
		}
		for ; next < m.Seq; next++ {
			gap := nats.NewMsg(l.GapSubject())
			gap.Header.Set(gapHeader, "1")
			if err := send(gap, next); err != nil {
				return err
			}
		}
		if err := send(rewrite(m), m.Seq); err != nil {
			return err
		}
		next++
	}
	return await()
}

// DeleteFillers deletes the filler messages Republish stored.
func DeleteFillers(ctx context.Context, s jetstream.Stream, l Layout) (int, error) {
	n := 0
	for from := uint64(1); ; {
		m, err := s.GetMsg(ctx, from, jetstream.WithGetMsgSubject(l.GapSubject()))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("jetstream: find fillers: %w", err)
		}
		if err := s.DeleteMsg(ctx, m.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return n, fmt.Errorf("jetstream: delete filler %d: %w", m.Sequence, err)
		}
		n++
		from = m.Sequence + 1
	}
}

// ConsumerState is what a consumer is made again from.
type ConsumerState struct {
	Name          string        `json:"name"`
	AckFloor      uint64        `json:"ack_floor"`
	Filters       []string      `json:"filters"` // in the old layout
	AckWait       time.Duration `json:"ack_wait_ns"`
	MaxAckPending int           `json:"max_ack_pending"`
	PauseUntil    *time.Time    `json:"pause_until,omitempty"`
}

// ConsumerStates reads the durable consumers of s.
func ConsumerStates(ctx context.Context, s jetstream.Stream) ([]ConsumerState, error) {
	var out []ConsumerState
	l := s.ListConsumers(ctx)
	for info := range l.Info() {
		if info.Config.Durable == "" {
			continue
		}
		c := ConsumerState{Name: info.Name, AckFloor: info.AckFloor.Stream, AckWait: info.Config.AckWait,
			MaxAckPending: info.Config.MaxAckPending, PauseUntil: info.Config.PauseUntil}
		c.Filters = info.Config.FilterSubjects
		if info.Config.FilterSubject != "" {
			c.Filters = []string{info.Config.FilterSubject}
		}
		out = append(out, c)
	}
	if err := l.Err(); err != nil {
		return nil, fmt.Errorf("jetstream: list consumers: %w", err)
	}
	return out, nil
}

// MakeConsumerAgain creates c on s, in layout l, after its ack floor: what
// it had acked is not delivered again. Its type filters are translated
// from layout 1; a consumer that exists already is left as it is.
func MakeConsumerAgain(ctx context.Context, s jetstream.Stream, l Layout, c ConsumerState) error {
	if _, err := s.Consumer(ctx, c.Name); err == nil {
		return nil
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       c.Name,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: c.MaxAckPending,
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   c.AckFloor + 1,
		PauseUntil:    c.PauseUntil,
	}
	var filters []string
	for _, f := range c.Filters {
		typ, ok := strings.CutSuffix(strings.TrimPrefix(f, l.Prefix+"."), ".*")
		if !ok || ValidateType(typ) != nil || !strings.HasPrefix(f, l.Prefix+".") {
			filters = nil // not a type filter: every event (Subscribe sets its own)
			break
		}
		filters = append(filters, l.TypeFilter(typ))
	}
	if len(filters) == 1 {
		cfg.FilterSubject = filters[0]
	} else {
		cfg.FilterSubjects = filters
	}
	if _, err := s.CreateConsumer(ctx, cfg); err != nil {
		return fmt.Errorf("jetstream: make consumer %s again: %w", c.Name, err)
	}
	return nil
}
