package boxcar

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	bjs "github.com/boxcar-bus/boxcar/jetstream"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// The subject layout upgrade. Boxcar before scale-out wrote
// prefix.type.key (layout 1); this one writes prefix.origin.partition.type.key
// (layout 2, decided in jetstream/subject.go). A stream of layout 1 is
// rewritten once, in place, keeping every message at its stream seq:
//
//  1. staging: the old stream's messages are copied into the database
//     (boxcar_layout_upgrade), with its consumers' positions;
//  2. staged: the old stream is deleted and a new one created at the old
//     first seq;
//  3. rewriting: the messages go back, in order, each at its own seq
//     (Nats-Expected-Last-Sequence), with subjects of layout 2; gaps are
//     filled and the fillers deleted;
//  4. consumers: the consumers are made again after their ack floors, and
//     the subscribers' rows moved to the new stream (their stream seqs
//     stay true);
//  5. done: the staged copy is cleared.
//
// The phase is kept in boxcar_meta, so an upgrade killed at any instant
// resumes at the next Open. Open does it by itself for an embedded store
// (one binary, or a leaf's own stream: the bus is the stream's only
// user). A stream on Config.NATSURL or Config.Cluster may have other
// users: Open refuses it, and UpgradeLayout upgrades it once every
// instance is stopped. The republished messages are stored anew, so their
// age (Config.Retention) starts over; the dead-letter stream keeps its
// letters as they are (they name their events' subjects in the old layout,
// which DeadLetters reads).

// UpgradeLayout rewrites the event stream of cfg in the current subject
// layout, for a stream Open refuses with ErrOldLayout (on Config.NATSURL
// or Config.Cluster). Stop every instance that uses the stream first, then
// run it once, from the instance whose database feeds the stream, with
// that instance's Config (the events are rewritten under its InstanceID).
// It is safe to run again after a failure: it resumes. Then start the
// instances.
func UpgradeLayout(ctx context.Context, db *sql.DB, cfg Config) error {
	cfg.upgradeLayout = true
	b, err := Open(ctx, db, cfg)
	if err != nil {
		return err
	}
	return b.Close(ctx)
}

// upgradeState is the upgrade's progress, in boxcar_meta.
type upgradeState struct {
	Phase        string              `json:"phase"`
	Stream       string              `json:"stream"`
	OldCreatedNS int64               `json:"old_created_ns"`
	NewCreatedNS int64               `json:"new_created_ns,omitempty"`
	FirstSeq     uint64              `json:"first_seq"`
	LastSeq      uint64              `json:"last_seq"`
	Messages     uint64              `json:"messages"`
	Consumers    []bjs.ConsumerState `json:"consumers"`
}

const (
	phaseStaging   = "staging"
	phaseStaged    = "staged"
	phaseRewriting = "rewriting"
	phaseConsumers = "consumers"
)

// openStreams ensures the bus's streams, upgrading (or refusing) a stream
// of an older layout.
func (b *Bus) openStreams(ctx context.Context) (jetstream.Stream, error) {
	st, found, err := b.loadUpgrade(ctx)
	if err != nil {
		return nil, err
	}
	if !found {
		events, _, err := bjs.EnsureStreams(ctx, b.js, b.streamConfig())
		var old *bjs.OldLayoutError
		if !errors.As(err, &old) {
			return events, err
		}
		if !b.mayUpgrade() {
			return nil, fmt.Errorf("%w: the stream is on Config.NATSURL or Config.Cluster, where other instances may use it: stop every instance that uses it, then run boxcar.UpgradeLayout(ctx, db, cfg) once with this instance's database and Config (it rewrites the stream in place, keeping its seqs and consumers), and start them again", err)
		}
		b.log.Warn("boxcar: upgrading the event stream to the current subject layout (once; an Open killed meanwhile resumes it)",
			logStream, b.cfg.Stream, logEvents, old.Messages)
		st = upgradeState{Phase: phaseStaging, Stream: b.cfg.Stream}
	}
	start := time.Now()
	if err := b.upgrade(ctx, &st); err != nil {
		return nil, fmt.Errorf("upgrade stream %s to subject layout %d (phase %s; the next Open resumes it): %w", b.cfg.Stream, bjs.LayoutVersion, st.Phase, err)
	}
	b.log.Warn("boxcar: the event stream is in the current subject layout", logStream, b.cfg.Stream, logEvents, st.Messages,
		logTook, time.Since(start).Round(time.Millisecond))
	events, _, err := bjs.EnsureStreams(ctx, b.js, b.streamConfig())
	return events, err
}

// mayUpgrade says whether Open may rewrite the stream by itself: only when
// nothing else can use it.
func (b *Bus) mayUpgrade() bool {
	return b.cfg.upgradeLayout || b.cfg.topology() != topologyShared
}

func (b *Bus) loadUpgrade(ctx context.Context) (upgradeState, bool, error) {
	v, found, err := sqlite.Meta(ctx, b.db, sqlite.MetaLayoutUpgrade)
	if err != nil || !found {
		return upgradeState{}, false, err
	}
	var st upgradeState
	if err := json.Unmarshal([]byte(v), &st); err != nil {
		return st, false, fmt.Errorf("boxcar: the layout upgrade's state is unreadable (%v): %q", err, v)
	}
	if st.Stream != b.cfg.Stream {
		return st, false, fmt.Errorf("%w: an upgrade of stream %s is in progress in this database, and Config.Stream is %s: open it with Stream %s to finish it", ErrInvalidConfig, st.Stream, b.cfg.Stream, st.Stream)
	}
	return st, true, nil
}

func (b *Bus) saveUpgrade(ctx context.Context, st *upgradeState, phase string) error {
	st.Phase = phase
	v, _ := json.Marshal(st) // plain fields cannot fail
	return b.w.Write(ctx, func(tx *sql.Tx) error {
		return sqlite.SetMeta(ctx, tx, sqlite.MetaLayoutUpgrade, string(v))
	})
}

// upgrade runs the phases from st.Phase on.
func (b *Bus) upgrade(ctx context.Context, st *upgradeState) error {
	for {
		if f := b.cfg.seams; f != nil && f.upgradePhase != nil {
			if err := f.upgradePhase(st.Phase); err != nil {
				return err
			}
		}
		var err error
		switch st.Phase {
		case phaseStaging:
			err = b.upgradeStage(ctx, st)
		case phaseStaged:
			err = b.upgradeRecreate(ctx, st)
		case phaseRewriting:
			err = b.upgradeRewrite(ctx, st)
		case phaseConsumers:
			err = b.upgradeConsumers(ctx, st)
			if err == nil {
				return b.upgradeFinish(ctx)
			}
		default:
			return fmt.Errorf("unknown phase %q", st.Phase)
		}
		if err != nil {
			return err
		}
	}
}

// upgradeStage copies the old stream into the database.
func (b *Bus) upgradeStage(ctx context.Context, st *upgradeState) error {
	old, err := b.js.Stream(ctx, b.cfg.Stream)
	if err != nil {
		return fmt.Errorf("read the old stream: %w", err)
	}
	info := old.CachedInfo()
	if v, _, _ := bjs.StreamLayout(info.Config); v != 1 {
		return fmt.Errorf("stream %s records layout %d while the database says it is being staged", b.cfg.Stream, v)
	}
	if st.OldCreatedNS == 0 {
		st.OldCreatedNS = info.Created.UnixNano()
		if err := b.saveUpgrade(ctx, st, phaseStaging); err != nil {
			return err
		}
	}
	_, last, n, err := sqlite.StagedBounds(ctx, b.db)
	if err != nil {
		return err
	}
	from := last + 1
	if n == 0 {
		from = 1
	}
	err = bjs.ReadStream(ctx, old, from, 500, func(msgs []bjs.StoredMsg) error {
		staged := make([]sqlite.StagedMessage, len(msgs))
		for i, m := range msgs {
			h, _ := json.Marshal(m.Header) // a map of string slices cannot fail
			staged[i] = sqlite.StagedMessage{StreamSeq: m.Seq, Subject: m.Subject, Headers: h, Data: m.Data}
		}
		return b.w.Write(ctx, func(tx *sql.Tx) error { return sqlite.StageMessages(ctx, tx, staged) })
	})
	if err != nil {
		return err
	}
	if st.Consumers, err = bjs.ConsumerStates(ctx, old); err != nil {
		return err
	}
	first, last, n, err := sqlite.StagedBounds(ctx, b.db)
	if err != nil {
		return err
	}
	// Compare with the stream as it is now, not as staging found it: old
	// events reaching Retention expire meanwhile (on a busy store, always
	// some), and what expired need not be staged.
	fresh, err := old.Info(ctx)
	if err != nil {
		return fmt.Errorf("read the old stream: %w", err)
	}
	if fresh.State.Msgs > 0 && (uint64(last) < fresh.State.LastSeq || uint64(n) < fresh.State.Msgs) {
		return fmt.Errorf("staged %d messages through stream seq %d of the stream's %d through %d", n, last, fresh.State.Msgs, fresh.State.LastSeq)
	}
	st.FirstSeq, st.LastSeq, st.Messages = first, last, uint64(n)
	return b.saveUpgrade(ctx, st, phaseStaged)
}

// upgradeRecreate deletes the old stream and creates the new one at the
// old first seq.
func (b *Bus) upgradeRecreate(ctx context.Context, st *upgradeState) error {
	old, err := b.js.Stream(ctx, b.cfg.Stream)
	switch {
	case err == nil:
		info := old.CachedInfo()
		if v, _, _ := bjs.StreamLayout(info.Config); v == 1 && info.Created.UnixNano() == st.OldCreatedNS {
			if err := b.js.DeleteStream(ctx, b.cfg.Stream); err != nil {
				return fmt.Errorf("delete the old stream: %w", err)
			}
		} else if v != bjs.LayoutVersion {
			return fmt.Errorf("stream %s is neither the one staged nor a new one", b.cfg.Stream)
		}
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("read the old stream: %w", err)
	}
	sc := b.streamConfig()
	sc.FirstSeq = st.FirstSeq
	events, _, err := bjs.EnsureStreams(ctx, b.js, sc)
	if err != nil {
		return err
	}
	st.NewCreatedNS = events.CachedInfo().Created.UnixNano()
	return b.saveUpgrade(ctx, st, phaseRewriting)
}

// upgradeRewrite stores the staged messages into the new stream in the
// current layout, at their seqs.
func (b *Bus) upgradeRewrite(ctx context.Context, st *upgradeState) error {
	events, err := b.js.Stream(ctx, b.cfg.Stream)
	if err != nil {
		return fmt.Errorf("read the new stream: %w", err)
	}
	rewrite := func(m bjs.StoredMsg) *nats.Msg { return b.layout.Rewrite(b.cfg.InstanceID, m) }
	for after := uint64(0); ; {
		staged, err := sqlite.StagedMessages(ctx, b.db, after, 1000)
		if err != nil {
			return err
		}
		if len(staged) == 0 {
			break
		}
		msgs := make([]bjs.StoredMsg, len(staged))
		for i, s := range staged {
			msgs[i] = bjs.StoredMsg{Seq: s.StreamSeq, Subject: s.Subject, Data: s.Data}
			if err := json.Unmarshal(s.Headers, &msgs[i].Header); err != nil {
				return fmt.Errorf("staged message %d: headers: %w", s.StreamSeq, err)
			}
		}
		if err := bjs.Republish(ctx, b.js, events, b.layout, msgs, rewrite); err != nil {
			return err
		}
		after = staged[len(staged)-1].StreamSeq
	}
	if _, err := bjs.DeleteFillers(ctx, events, b.layout); err != nil {
		return err
	}
	return b.saveUpgrade(ctx, st, phaseConsumers)
}

// upgradeConsumers makes the consumers again and moves the subscribers'
// rows to the new stream.
func (b *Bus) upgradeConsumers(ctx context.Context, st *upgradeState) error {
	events, err := b.js.Stream(ctx, b.cfg.Stream)
	if err != nil {
		return fmt.Errorf("read the new stream: %w", err)
	}
	for _, c := range st.Consumers {
		if err := bjs.MakeConsumerAgain(ctx, events, b.layout, c); err != nil {
			return err
		}
	}
	return b.w.Write(ctx, func(tx *sql.Tx) error {
		return sqlite.RebaseSubscribers(ctx, tx, b.cfg.Stream, st.OldCreatedNS, st.NewCreatedNS)
	})
}

// upgradeFinish clears the staged copy and the upgrade's state.
func (b *Bus) upgradeFinish(ctx context.Context) error {
	for {
		var n int64
		if err := b.w.Write(ctx, func(tx *sql.Tx) error {
			var err error
			n, err = sqlite.ClearStaged(ctx, tx, 5000)
			return err
		}); err != nil {
			return err
		}
		if n < 5000 {
			break
		}
	}
	return b.w.Write(ctx, func(tx *sql.Tx) error { return sqlite.DeleteMeta(ctx, tx, sqlite.MetaLayoutUpgrade) })
}
