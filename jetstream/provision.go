package jetstream

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamConfig names and sizes Boxcar's two streams.
type StreamConfig struct {
	Name       string        // event stream, e.g. BOXCAR; the dead letters go to Name_DLQ
	Layout     Layout        // subjects; dead letters use Layout.Prefix_dlq
	MaxAge     time.Duration // retention of both streams: the replay window
	Duplicates time.Duration // the event stream's JetStream duplicate window
	// DLQDuplicates is the dead-letter stream's (0: Duplicates): dead
	// letters are deduped by their Nats-Msg-Id, the event stream by its
	// chain (see Publisher).
	DLQDuplicates time.Duration
	Replicas      int // 1 for the embedded server
	// Shared: several instances write into the event stream (each on its
	// own subtree, with atomic batches: see BatchPublisher).
	Shared bool
	// FirstSeq, if set, is the first seq of an event stream created now (a
	// layout upgrade keeps the old stream's seqs).
	FirstSeq uint64
}

// ErrOldLayout is returned by EnsureStreams for an event stream that holds
// events in an older subject layout (see LayoutVersion): it must be
// upgraded (UpgradeLayout) before it is used. *OldLayoutError says more.
var ErrOldLayout = errors.New("the event stream holds events in an older subject layout")

// OldLayoutError describes a stream of an older layout.
type OldLayoutError struct {
	Stream   string
	Layout   int    // its layout version (1: before the layout was recorded)
	Messages uint64 // events it holds
}

func (e *OldLayoutError) Error() string {
	return fmt.Sprintf("stream %s holds %d events in subject layout %d (prefix.type.key), this Boxcar writes layout %d (prefix.origin.partition.type.key)",
		e.Stream, e.Messages, e.Layout, LayoutVersion)
}

func (e *OldLayoutError) Unwrap() error { return ErrOldLayout }

// ErrLayoutMismatch is returned by EnsureStreams for a stream whose
// recorded layout is not this one: a newer layout, or another partition
// count.
var ErrLayoutMismatch = errors.New("the event stream's subject layout does not match")

// StreamLayout reads the layout a stream's configuration records: version
// 1 when it records none (a stream of Boxcar before the layout was
// recorded), and its partition count (0 with version 1).
func StreamLayout(cfg jetstream.StreamConfig) (version, partitions int, err error) {
	v, ok := cfg.Metadata[MetaLayout]
	if !ok {
		return 1, 0, nil
	}
	if version, err = strconv.Atoi(v); err != nil || version < 1 {
		return 0, 0, fmt.Errorf("stream %s: metadata %s=%q is not a layout version", cfg.Name, MetaLayout, v)
	}
	if partitions, err = strconv.Atoi(cfg.Metadata[MetaPartitions]); err != nil || partitions < 1 {
		return 0, 0, fmt.Errorf("stream %s: metadata %s=%q is not a partition count", cfg.Name, MetaPartitions, cfg.Metadata[MetaPartitions])
	}
	return version, partitions, nil
}

// checkLayout compares an existing event stream's recorded layout with c's.
// A stream of layout 1 that holds no event is taken over as it is (its
// metadata is then written).
func checkLayout(info *jetstream.StreamInfo, c StreamConfig) error {
	version, partitions, err := StreamLayout(info.Config)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrLayoutMismatch, err)
	}
	switch {
	case version == 1 && info.State.Msgs == 0:
		return nil
	case version < LayoutVersion:
		return &OldLayoutError{Stream: c.Name, Layout: version, Messages: info.State.Msgs}
	case version > LayoutVersion:
		return fmt.Errorf("%w: stream %s records subject layout %d, written by a newer Boxcar; this one knows layout %d: upgrade this binary", ErrLayoutMismatch, c.Name, version, LayoutVersion)
	case partitions != c.Layout.Partitions:
		return fmt.Errorf("%w: stream %s is partitioned in %d (metadata %s), and this instance has Config.Partitions %d: every instance on a stream must use the stream's partition count; set Config.Partitions to %d",
			ErrLayoutMismatch, c.Name, partitions, MetaPartitions, c.Layout.Partitions, partitions)
	}
	return nil
}

// streamMetadata is what the event stream's configuration records.
func streamMetadata(c StreamConfig) map[string]string {
	return map[string]string{MetaLayout: strconv.Itoa(LayoutVersion), MetaPartitions: strconv.Itoa(c.Layout.Partitions)}
}

// DLQName is the dead-letter stream of the event stream name.
func DLQName(name string) string { return name + "_DLQ" }

// DLQPrefix is the subject prefix of the dead-letter stream.
func DLQPrefix(prefix string) string { return prefix + "_dlq" }

// EnsureStreams creates or updates the event stream and its dead-letter
// stream and returns both.
//
// An existing event stream must be of this layout (checkLayout): one that
// holds events of an older layout fails with an *OldLayoutError, one of
// another partition count or a newer layout with ErrLayoutMismatch, and
// nothing is changed.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, c StreamConfig) (events, dlq jetstream.Stream, err error) {
	replicas := max(c.Replicas, 1)
	firstSeq := uint64(0)
	var old jetstream.Stream
	err = RetryTransient(ctx, func(ctx context.Context) (err error) { old, err = js.Stream(ctx, c.Name); return err })
	if err == nil {
		if err := checkLayout(old.CachedInfo(), c); err != nil {
			return nil, nil, fmt.Errorf("jetstream: ensure stream %s: %w", c.Name, err)
		}
	} else if errors.Is(err, jetstream.ErrStreamNotFound) {
		firstSeq = c.FirstSeq
	} else {
		return nil, nil, fmt.Errorf("jetstream: ensure stream %s: %w", c.Name, err)
	}
	err = RetryTransient(ctx, func(ctx context.Context) (err error) {
		events, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			FirstSeq:    firstSeq,
			Name:        c.Name,
			Description: "Boxcar events, relayed from the SQLite outbox in commit order",
			Subjects:    []string{c.Layout.All()},
			Metadata:    streamMetadata(c),
			// Instances sharing the stream publish atomic batches.
			AllowAtomicPublish: c.Shared,
			Storage:            jetstream.FileStorage,
			Retention:          jetstream.LimitsPolicy,
			Discard:            jetstream.DiscardOld,
			MaxAge:             c.MaxAge,
			Duplicates:         c.Duplicates,
			Replicas:           replicas,
			AllowDirect:        true,
		})
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("jetstream: ensure stream %s: %w", c.Name, err)
	}
	err = RetryTransient(ctx, func(ctx context.Context) (err error) {
		dlq, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:        DLQName(c.Name),
			Description: "Boxcar dead letters: events a subscriber gave up on, with the reason in headers",
			Subjects:    []string{DLQPrefix(c.Layout.Prefix) + ".>"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      c.MaxAge,
			Duplicates:  cmp.Or(c.DLQDuplicates, c.Duplicates),
			Replicas:    replicas,
			// No AllowDirect: nats.go then reads dead letters from the
			// stream's leader, so a replica that is behind never says that a
			// letter an operator was just shown is not there
			// (TestDeadLettersAreReadFromTheLeader).
		})
		return err
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
	var old jetstream.Consumer
	err := RetryTransient(ctx, func(ctx context.Context) (err error) { old, err = s.Consumer(ctx, c.Name); return err })
	if err == nil {
		prev := old.CachedInfo().Config
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = prev.DeliverPolicy, prev.OptStartSeq, prev.OptStartTime
		cfg.PauseUntil = prev.PauseUntil // an operator's pause outlives restarts
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("jetstream: ensure consumer %s: %w", c.Name, err)
	}
	var cons jetstream.Consumer
	err = RetryTransient(ctx, func(ctx context.Context) (err error) { cons, err = s.CreateOrUpdateConsumer(ctx, cfg); return err })
	if err != nil {
		return nil, fmt.Errorf("jetstream: ensure consumer %s: %w", c.Name, err)
	}
	return cons, nil
}

// FirstMatching returns the stream seq of the first message at or after
// from whose subject matches one of filters, and false if there is none, as
// the stream's leader has it (see NextMsgForSubject).
func FirstMatching(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, filters []string, from uint64) (uint64, bool, error) {
	var first uint64
	for _, f := range filters {
		m, err := NextMsgForSubject(ctx, js, s, max(from, 1), f)
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
func SeqAtOrAfter(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, from, last uint64, below func(*jetstream.RawStreamMsg) bool) (uint64, error) {
	lo, hi := from, last+1
	for lo < hi {
		mid := lo + (hi-lo)/2
		m, err := s.GetMsg(ctx, mid)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			// Deleted, or a replica that is behind answered: the leader
			// has the message at mid or the next one that exists.
			if m, err = NextMsgForSubject(ctx, js, s, mid, ">"); errors.Is(err, jetstream.ErrMsgNotFound) {
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
