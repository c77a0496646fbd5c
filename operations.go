package boxcar

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	bjs "github.com/boxcar-bus/boxcar/jetstream"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// What an operator does to subscribers and the outbox: list, pause, resume,
// retire, replay. Each write is logged with who asked and why.

// StartPosition is where a new subscriber's consumer starts
// (SubscribeOptions.Start). It only matters the first time: a subscriber
// that ran before resumes where it stopped.
type StartPosition struct {
	now bool
	at  time.Time
}

// StartBeginning starts at the first event the stream holds (the beginning
// of its retention): the default. StartNow starts after the events the
// stream holds when the subscriber is created.
var (
	StartBeginning = StartPosition{}
	StartNow       = StartPosition{now: true}
)

// StartAt starts at the first event stored at or after t.
func StartAt(t time.Time) StartPosition { return StartPosition{at: t} }

// SubscriberInfo is what the bus knows of a subscriber: from the database
// (every subscriber that ran, in this process or not), its consumer, and,
// when it runs in this process, its Stats.
type SubscriberInfo struct {
	Name    string    `json:"name"`
	Kind    string    `json:"kind"`    // "tx" (TxHandler) or "plain" (HandlerFunc)
	Types   []string  `json:"types"`   // empty: every type
	Running bool      `json:"running"` // in this process
	Created time.Time `json:"created"`
	Started time.Time `json:"started"`
	Stopped time.Time `json:"stopped"` // of its last clean Close, zero while it runs or after a crash
	// From its consumer (zero if it has none: retired, or the stream was
	// replaced).
	Pending     uint64    `json:"pending"`
	Unacked     int       `json:"unacked"`
	AckFloor    uint64    `json:"ack_floor"`
	Paused      bool      `json:"paused"`
	PausedUntil time.Time `json:"paused_until"`
	// Expired counts events that left the stream before it handled them.
	Expired int64 `json:"expired"`
	// ParkedKeys counts its keys parked behind a dead letter.
	ParkedKeys int `json:"parked_keys"`
	// Replay is the replay in progress, if any.
	Replay *ReplayStatus `json:"replay,omitempty"`
	// Stats are its numbers in this process, when it runs here.
	Stats *SubscriberStats `json:"stats,omitempty"`
	// Err says why its consumer could not be read, if it could not.
	Err string `json:"err,omitempty"`
}

// Subscribers lists every subscriber the database knows, by name.
func (b *Bus) Subscribers(ctx context.Context) ([]SubscriberInfo, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	rows, err := sqlite.Subscribers(ctx, b.db)
	if err != nil {
		return nil, fmt.Errorf("boxcar: subscribers: %w", err)
	}
	parked, err := sqlite.ParkedKeys(ctx, b.db, "")
	if err != nil {
		return nil, fmt.Errorf("boxcar: subscribers: %w", err)
	}
	parkedBy := map[string]int{}
	for _, p := range parked {
		parkedBy[p.Subscriber]++
	}
	out := make([]SubscriberInfo, 0, len(rows))
	for _, r := range rows {
		si := SubscriberInfo{Name: r.Name, Kind: r.Kind, Types: r.Types, Created: time.Unix(0, r.CreatedNS),
			Started: time.Unix(0, r.StartedNS), Expired: r.Expired, ParkedKeys: parkedBy[r.Name]}
		if r.StoppedNS > 0 {
			si.Stopped = time.Unix(0, r.StoppedNS)
		}
		if r.ReplayThrough > 0 {
			si.Replay = &ReplayStatus{Subscriber: r.Name, Through: r.ReplayThrough, NoDedupe: r.ReplayNoDedupe}
		}
		if s := b.subscription(r.Name); s != nil {
			st, _ := s.Stats(ctx)
			si.Running, si.Stats, si.Expired = true, &st, st.Expired
		}
		info, err := b.consumerInfo(ctx, r.Name)
		switch {
		case errors.Is(err, jetstream.ErrConsumerNotFound):
		case err != nil:
			si.Err = err.Error()
		default:
			si.Pending, si.Unacked, si.AckFloor = info.NumPending, info.NumAckPending, info.AckFloor.Stream
			si.Paused = info.Paused
			if info.Paused {
				si.PausedUntil = time.Now().Add(info.PauseRemaining)
			}
			if si.Replay != nil {
				si.Replay.At = info.AckFloor.Stream
				si.Replay.Done = info.AckFloor.Stream >= si.Replay.Through
			}
		}
		out = append(out, si)
	}
	return out, nil
}

func (b *Bus) consumerInfo(ctx context.Context, name string) (*jetstream.ConsumerInfo, error) {
	st, err := b.subEvents()
	if err != nil {
		return nil, err
	}
	c, err := st.Consumer(ctx, name)
	if err != nil {
		return nil, err
	}
	return c.CachedInfo(), nil
}

// subscription returns the subscription of name running on this bus, or
// nil.
func (b *Bus) subscription(name string) *Subscription {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.subs[name]; s != nil && s.group == nil {
		return s
	}
	return b.slots[name] // a group slot run here, by its consumer's name
}

// knownSubscriber returns the database's row of name, or ErrNotFound.
func (b *Bus) knownSubscriber(ctx context.Context, name string) (sqlite.SubscriberRow, error) {
	if err := bjs.ValidateToken("subscriber name", name); err != nil {
		return sqlite.SubscriberRow{}, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	row, found, err := sqlite.LoadSubscriber(ctx, b.db, name)
	if err != nil {
		return row, err
	}
	if !found {
		return row, fmt.Errorf("boxcar: subscriber %q: %w: it never ran on this database", name, ErrNotFound)
	}
	return row, nil
}

// PauseSubscriber stops the delivery of events to subscriber name until
// until (zero: until ResumeSubscriber), in this process and any other: the
// pause is its consumer's, kept by the server across restarts. Events in
// flight finish. by says who asks (required), why is logged with it.
func (b *Bus) PauseSubscriber(ctx context.Context, name string, until time.Time, by, why string) error {
	if err := b.writable(); err != nil {
		return err
	}
	if by == "" {
		return fmt.Errorf("%w: PauseSubscriber: by is empty: say who pauses (it is logged)", ErrInvalidConfig)
	}
	if _, err := b.knownSubscriber(ctx, name); err != nil {
		return err
	}
	if until.IsZero() {
		until = time.Now().AddDate(100, 0, 0)
	}
	st, err := b.subEvents()
	if err != nil {
		return err
	}
	if _, err := st.PauseConsumer(ctx, name, until); err != nil {
		return fmt.Errorf("boxcar: pause %s: %w", name, err)
	}
	b.log.Info("boxcar: subscriber paused", logSub, name, logUntil, until, logBy, by, logWhy, why)
	return nil
}

// ResumeSubscriber ends a pause.
func (b *Bus) ResumeSubscriber(ctx context.Context, name, by, why string) error {
	if err := b.writable(); err != nil {
		return err
	}
	if by == "" {
		return fmt.Errorf("%w: ResumeSubscriber: by is empty: say who resumes (it is logged)", ErrInvalidConfig)
	}
	if _, err := b.knownSubscriber(ctx, name); err != nil {
		return err
	}
	st, err := b.subEvents()
	if err != nil {
		return err
	}
	if _, err := st.ResumeConsumer(ctx, name); err != nil {
		return fmt.Errorf("boxcar: resume %s: %w", name, err)
	}
	b.log.Info("boxcar: subscriber resumed", logSub, name, logBy, by, logWhy, why)
	return nil
}

// RetireSubscriber removes a subscriber for good: its consumer, its dedupe
// rows, its parked keys and its row. It must not be running in this process
// (Close it first). Its dead letters stay in the dead-letter stream until
// they expire. A subscriber of the same name subscribed later starts anew.
func (b *Bus) RetireSubscriber(ctx context.Context, name, by, why string) error {
	if err := b.writable(); err != nil {
		return err
	}
	if by == "" {
		return fmt.Errorf("%w: RetireSubscriber: by is empty: say who retires it (it is logged)", ErrInvalidConfig)
	}
	if _, err := b.knownSubscriber(ctx, name); err != nil {
		return err
	}
	if b.subscription(name) != nil {
		return fmt.Errorf("%w: subscriber %q is running in this process: Close its Subscription first", ErrInvalidConfig, name)
	}
	events, err := b.subEvents()
	if err != nil {
		return err
	}
	if err := events.DeleteConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("boxcar: retire %s: %w", name, err)
	}
	for {
		var n int64
		err := b.w.Write(ctx, func(tx *sql.Tx) error {
			var err error
			n, err = sqlite.DeleteSubscriberData(ctx, tx, name, 2000)
			return err
		})
		if err != nil {
			return fmt.Errorf("boxcar: retire %s: %w", name, err)
		}
		if n == 0 {
			break
		}
	}
	b.log.Info("boxcar: subscriber retired", logSub, name, logBy, by, logWhy, why)
	return nil
}

// ReplayFrom says where a replay starts: one of a stream seq, an outbox
// seq, or a time (the first event stored at or after it).
type ReplayFrom struct {
	StreamSeq uint64    `json:"stream_seq"`
	OutboxSeq int64     `json:"outbox_seq"`
	Time      time.Time `json:"time"`
}

// ReplayRequest asks for a subscriber's events again, from From to the
// stream's end at the time of the request, in order, then the live flow
// goes on. By default (NoDedupe false) only the events the dedupe table has
// not recorded run: for recovery, after effects were lost. With NoDedupe,
// every event runs, the handler sees Message.Replay: for rebuilding a
// projection. A HandlerFunc subscriber has no dedupe table: it needs
// NoDedupe.
type ReplayRequest struct {
	Subscriber string
	From       ReplayFrom
	NoDedupe   bool
	By, Why    string
}

// ReplayStatus is where a replay stands.
type ReplayStatus struct {
	Subscriber string `json:"subscriber"`
	From       uint64 `json:"from"` // stream seqs
	Through    uint64 `json:"through"`
	At         uint64 `json:"at"` // the consumer's ack floor
	NoDedupe   bool   `json:"no_dedupe"`
	Done       bool   `json:"done"`
}

// Replay rewinds a subscriber (see ReplayRequest). It may run in this
// process or not: it takes effect at once or at its next Subscribe. Asking
// for a point the stream no longer holds, or a subscriber that never ran,
// is an error, and changes nothing.
func (b *Bus) Replay(ctx context.Context, req ReplayRequest) (ReplayStatus, error) {
	if err := b.writable(); err != nil {
		return ReplayStatus{}, err
	}
	if req.By == "" {
		return ReplayStatus{}, fmt.Errorf("%w: ReplayRequest.By is empty: say who replays (it is logged)", ErrInvalidConfig)
	}
	row, err := b.knownSubscriber(ctx, req.Subscriber)
	if err != nil {
		return ReplayStatus{}, err
	}
	if row.Kind == "plain" && !req.NoDedupe {
		return ReplayStatus{}, fmt.Errorf("%w: subscriber %q is a HandlerFunc: it has no dedupe table to skip what it handled; set NoDedupe to replay every event (Message.Replay tells the handler)", ErrInvalidConfig, req.Subscriber)
	}
	from, through, err := b.replayRange(ctx, req.From)
	if err != nil {
		return ReplayStatus{}, err
	}
	st := ReplayStatus{Subscriber: req.Subscriber, From: from, Through: through, NoDedupe: req.NoDedupe}
	if s := b.subscription(req.Subscriber); s != nil {
		err = s.replay(ctx, st)
	} else {
		err = b.rewind(ctx, row, st)
	}
	if err != nil {
		return ReplayStatus{}, err
	}
	b.log.Info("boxcar: replay", logSub, req.Subscriber, logFromSeq, from, logThroughSeq, through, logNoDedupe, req.NoDedupe,
		logBy, req.By, logWhy, req.Why)
	return st, nil
}

// replayRange turns from into the stream seq to rewind to, and returns it
// with the stream's last seq.
func (b *Bus) replayRange(ctx context.Context, from ReplayFrom) (uint64, uint64, error) {
	set := 0
	for _, ok := range []bool{from.StreamSeq > 0, from.OutboxSeq > 0, !from.Time.IsZero()} {
		if ok {
			set++
		}
	}
	if set != 1 {
		return 0, 0, fmt.Errorf("%w: ReplayFrom: set exactly one of StreamSeq, OutboxSeq and Time", ErrInvalidConfig)
	}
	events, err := b.subEvents()
	if err != nil {
		return 0, 0, fmt.Errorf("boxcar: replay: %w", err)
	}
	if from.OutboxSeq > 0 && b.cfg.topology() != topologySingle {
		return 0, 0, fmt.Errorf("%w: ReplayFrom.OutboxSeq with several instances: the stream holds the events of every instance, whose outbox seqs are their own; replay from a StreamSeq or a Time", ErrInvalidConfig)
	}
	si, err := events.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("boxcar: replay: %w", err)
	}
	first, last := si.State.FirstSeq, si.State.LastSeq
	if si.State.Msgs == 0 {
		return 0, 0, fmt.Errorf("%w: replay: the stream holds no event (retention %v)", ErrNotFound, b.cfg.Retention)
	}
	var seq uint64
	switch {
	case from.StreamSeq > 0:
		seq = from.StreamSeq
	case from.OutboxSeq > 0:
		seq, err = bjs.SeqAtOrAfter(ctx, b.subJS, events, first, last, func(m *jetstream.RawStreamMsg) bool {
			s, _, ok := bjs.OutboxSeqOf(m.Header)
			return !ok || s < from.OutboxSeq
		})
	default:
		seq, err = bjs.SeqAtOrAfter(ctx, b.subJS, events, first, last, func(m *jetstream.RawStreamMsg) bool { return m.Time.Before(from.Time) })
	}
	if err != nil {
		return 0, 0, fmt.Errorf("boxcar: replay: %w", err)
	}
	if seq < first || seq > last {
		return 0, 0, fmt.Errorf("%w: replay from stream seq %d: the stream holds %d to %d (retention %v)", ErrNotFound, seq, first, last, b.cfg.Retention)
	}
	return seq, last, nil
}

// rewind resets a subscriber's consumer for a replay and records it, for a
// subscriber not running here: its next Subscribe goes on from there.
func (b *Bus) rewind(ctx context.Context, row sqlite.SubscriberRow, st ReplayStatus) error {
	events, err := b.subEvents()
	if err != nil {
		return err
	}
	if _, err := events.ResetConsumerToSequence(ctx, row.Name, st.From); err != nil {
		return fmt.Errorf("boxcar: replay: reset the consumer to stream seq %d: %w", st.From, err)
	}
	row.Acked, row.Catchup = nil, nil // replayed events run again: forget what was acked
	row.ReplayThrough, row.ReplayNoDedupe = st.Through, st.NoDedupe
	return b.w.Write(ctx, func(tx *sql.Tx) error { return sqlite.SaveSubscriber(ctx, tx, row) })
}

// ReplayProgress returns the replay of subscriber in progress, or its last
// one's end (Done), or ErrNotFound if it has none.
func (b *Bus) ReplayProgress(ctx context.Context, subscriber string) (ReplayStatus, error) {
	if b.closed.Load() {
		return ReplayStatus{}, ErrClosed
	}
	subs, err := b.Subscribers(ctx)
	if err != nil {
		return ReplayStatus{}, err
	}
	for _, s := range subs {
		if s.Name == subscriber && s.Replay != nil {
			return *s.Replay, nil
		}
	}
	return ReplayStatus{}, fmt.Errorf("boxcar: replay of %q: %w", subscriber, ErrNotFound)
}

// OutboxEvent is an event in the outbox that the relay has not put in the
// stream yet.
type OutboxEvent struct {
	Seq     int64             `json:"seq"`
	ID      string            `json:"id"`
	Type    string            `json:"type"`
	Key     string            `json:"key"`
	Headers map[string]string `json:"headers"`
	Size    int               `json:"size"` // bytes of data
	Created time.Time         `json:"created"`
	Age     time.Duration     `json:"age_ns"`
}

// OutboxPending returns up to limit events waiting in the outbox (above the
// relay's cursor), oldest first, after seq after (0: from the first).
func (b *Bus) OutboxPending(ctx context.Context, after int64, limit int) ([]OutboxEvent, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	if limit <= 0 || limit > 1000 {
		return nil, fmt.Errorf("%w: OutboxPending: limit %d: use 1 to 1000", ErrInvalidConfig, limit)
	}
	rows, err := sqlite.PendingOutbox(ctx, b.db, max(after, b.relay.cursor.Load()), limit)
	if err != nil {
		return nil, fmt.Errorf("boxcar: outbox: %w", err)
	}
	now := time.Now()
	out := make([]OutboxEvent, 0, len(rows))
	for _, r := range rows {
		e := OutboxEvent{Seq: r.Seq, ID: r.ID, Type: r.Type, Key: r.Key, Size: r.Size, Created: time.Unix(0, r.CreatedNS)}
		e.Age = now.Sub(e.Created)
		if len(r.Headers) > 0 {
			json.Unmarshal(r.Headers, &e.Headers) // PublishTx wrote them
		}
		out = append(out, e)
	}
	return out, nil
}
