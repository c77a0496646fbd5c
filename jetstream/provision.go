package jetstream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamConfig names and sizes Boxcar's two streams.
type StreamConfig struct {
	Name       string        // event stream, e.g. BOXCAR; the dead letters go to Name_DLQ
	Prefix     string        // subject prefix, e.g. boxcar; dead letters use Prefix_dlq
	MaxAge     time.Duration // retention of both streams: the replay window
	Duplicates time.Duration // JetStream duplicate window
	Replicas   int           // 1 for the embedded server
}

// DLQName is the dead-letter stream of the event stream name.
func DLQName(name string) string { return name + "_DLQ" }

// DLQPrefix is the subject prefix of the dead-letter stream.
func DLQPrefix(prefix string) string { return prefix + "_dlq" }

// EnsureStreams creates or updates the event stream and its dead-letter
// stream and returns both.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, c StreamConfig) (events, dlq jetstream.Stream, err error) {
	replicas := max(c.Replicas, 1)
	events, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        c.Name,
		Description: "Boxcar events, relayed from the SQLite outbox in commit order",
		Subjects:    []string{c.Prefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      c.MaxAge,
		Duplicates:  c.Duplicates,
		Replicas:    replicas,
		AllowDirect: true,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("jetstream: ensure stream %s: %w", c.Name, err)
	}
	dlq, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        DLQName(c.Name),
		Description: "Boxcar dead letters: events a subscriber gave up on, with the reason in headers",
		Subjects:    []string{DLQPrefix(c.Prefix) + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      c.MaxAge,
		Duplicates:  c.Duplicates,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("jetstream: ensure stream %s: %w", DLQName(c.Name), err)
	}
	return events, dlq, nil
}

// ConsumerConfig describes one subscriber's durable pull consumer.
type ConsumerConfig struct {
	Name          string
	Filters       []string // subject filters; empty means the whole stream
	AckWait       time.Duration
	MaxAckPending int
	// StartSeq, if not 0, is where a new consumer starts (by default, at the
	// stream's first message); StartTime, if set, the first message stored
	// at or after it; StartNew, the first message after its creation. An
	// existing consumer keeps its own start.
	StartSeq  uint64
	StartTime time.Time
	StartNew  bool
}

// EnsureConsumer creates or updates a durable pull consumer with explicit
// acks and unlimited deliveries: Boxcar retries in place and dead-letters by
// itself, so the server must never drop a message on its own. An existing
// consumer keeps its position and its deliver policy (the server refuses to
// change it); its filters, ack wait and limits are updated.
func EnsureConsumer(ctx context.Context, s jetstream.Stream, c ConsumerConfig) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{
		Durable:       c.Name,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: c.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	switch {
	case c.StartSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, c.StartSeq
	case !c.StartTime.IsZero():
		t := c.StartTime
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	case c.StartNew:
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	switch len(c.Filters) {
	case 0:
	case 1:
		cfg.FilterSubject = c.Filters[0]
	default:
		cfg.FilterSubjects = c.Filters
	}
	if old, err := s.Consumer(ctx, c.Name); err == nil {
		prev := old.CachedInfo().Config
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = prev.DeliverPolicy, prev.OptStartSeq, prev.OptStartTime
		cfg.PauseUntil = prev.PauseUntil // an operator's pause outlives restarts
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("jetstream: ensure consumer %s: %w", c.Name, err)
	}
	cons, err := s.CreateOrUpdateConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("jetstream: ensure consumer %s: %w", c.Name, err)
	}
	return cons, nil
}

// FirstMatching returns the stream seq of the first message at or after
// from whose subject matches one of filters, and false if there is none.
func FirstMatching(ctx context.Context, s jetstream.Stream, filters []string, from uint64) (uint64, bool, error) {
	var first uint64
	for _, f := range filters {
		m, err := s.GetMsg(ctx, max(from, 1), jetstream.WithGetMsgSubject(f))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return 0, false, fmt.Errorf("jetstream: first message of %s: %w", f, err)
		}
		if first == 0 || m.Sequence < first {
			first = m.Sequence
		}
	}
	return first, first > 0, nil
}

// SeqAtOrAfter returns the first stream seq at or after from whose message
// satisfies below(message) == false, by binary search over [from, last]:
// below must be monotonic in the stream's order (outbox seqs, times). It
// returns last+1 when every message is below.
func SeqAtOrAfter(ctx context.Context, s jetstream.Stream, from, last uint64, below func(*jetstream.RawStreamMsg) bool) (uint64, error) {
	lo, hi := from, last+1
	for lo < hi {
		mid := lo + (hi-lo)/2
		m, err := s.GetMsg(ctx, mid)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			// A deleted message: look at the next one that exists.
			if m, err = s.GetMsg(ctx, mid, jetstream.WithGetMsgSubject(">")); errors.Is(err, jetstream.ErrMsgNotFound) {
				hi = mid
				continue
			}
		}
		if err != nil {
			return 0, fmt.Errorf("jetstream: get message %d: %w", mid, err)
		}
		if below(m) {
			lo = m.Sequence + 1
		} else {
			hi = mid
		}
	}
	return lo, nil
}
