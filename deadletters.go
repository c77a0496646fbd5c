package boxcar

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	bjs "github.com/boxcar-bus/boxcar/jetstream"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// Dead letters: the events subscribers gave up on, in the dead-letter
// stream (Config.Stream + "_DLQ"), and what operators do about them. A
// letter is redriven by putting a copy of its event into the outbox, for
// its subscriber only (the others skip it): the copy goes through the relay
// in order, and through the subscriber's dedupe table (it keeps the event's
// ID), so it is never applied twice. What operators did is recorded in
// boxcar_dlq_actions, once per letter: a second redrive or discard of a
// letter does nothing.

// DeadLetterState is where a dead letter stands.
type DeadLetterState string

// The states of a dead letter.
const (
	DeadLetterPending   DeadLetterState = "pending"   // nobody acted on it yet
	DeadLetterRedriven  DeadLetterState = "redriven"  // a copy went back to its subscriber
	DeadLetterDiscarded DeadLetterState = "discarded" // an operator gave up on it
)

// DeadLetterReasonParked is the reason of a letter that holds no failure of
// its own: an event of a parked key (SubscribeOptions.ParkKeys), waiting
// behind the dead letter at its key's head.
const DeadLetterReasonParked = "parked"

// AttemptError is one failed attempt of a dead-lettered event.
type AttemptError struct {
	Attempt int       `json:"attempt"`
	Error   string    `json:"error"`
	At      time.Time `json:"at"`
}

// DeadLetter is one letter of the dead-letter stream.
type DeadLetter struct {
	// Seq is the letter's sequence in the dead-letter stream: its ID for
	// DeadLetter, Redrive and Discard.
	Seq        uint64 `json:"seq"`
	Subscriber string `json:"subscriber"`
	// Reason is "failed" (MaxAttempts), "permanent", "schema", "malformed"
	// or "parked".
	Reason   string         `json:"reason"`
	Error    string         `json:"error"`   // the last error
	History  []AttemptError `json:"history"` // the last attempts' errors, oldest first
	Attempts int            `json:"attempts"`
	// The event. A malformed message has no type or key.
	EventID       string            `json:"event_id"`
	Type          string            `json:"type"`
	Key           string            `json:"key"`
	Headers       map[string]string `json:"headers"`
	Data          []byte            `json:"data"`
	Created       time.Time         `json:"created"` // when it was published
	SchemaVersion int               `json:"schema_version"`
	// Where it was in the event stream, and in the outbox.
	StreamSeq uint64 `json:"stream_seq"`
	OutboxSeq int64  `json:"outbox_seq"`
	// DeadAt is when it was dead-lettered.
	DeadAt time.Time       `json:"dead_at"`
	State  DeadLetterState `json:"state"`
	// Action is what was done to it, if anything.
	Action *DeadLetterAction `json:"action,omitempty"`
	// NotRedrivable says why a copy cannot be redriven ("" if it can): a
	// malformed message has no event; a letter cut to fit the server's
	// limits lost part of it.
	NotRedrivable string `json:"not_redrivable"`

	dlqCreatedNS int64 // when its dead-letter stream was made: Seq counts in it
}

// DeadLetterAction is what an operator did to a dead letter.
type DeadLetterAction struct {
	Action    string    `json:"action"` // "redrive" or "discard"
	By        string    `json:"by"`
	Why       string    `json:"why"`
	At        time.Time `json:"at"`
	OutboxSeq int64     `json:"outbox_seq"` // the redriven copy's
}

// DeadLetterFilter selects dead letters. Empty fields match everything.
type DeadLetterFilter struct {
	Subscriber string
	Type       string
	Key        string
	Reason     string
	State      DeadLetterState
	// After pages: only letters with a larger Seq (the next value
	// DeadLetters returned).
	After uint64
	// Limit is the most letters returned. Default 100, at most 1000. A
	// page also ends at the letter that brings its payloads, headers and
	// errors to MaxPageBytes: page on with the Seq returned.
	Limit int
}

// MaxPageBytes bounds the memory of one page of DeadLetters or
// OutboxDeadLetters: the page ends at the letter whose payload, headers and
// errors bring the page's to this many bytes, so a page that is not empty
// holds at most this plus one letter's. A thousand letters of a megabyte each
// would otherwise be a gigabyte in one call, and more again as JSON.
const MaxPageBytes = 8 << 20

// maxDeadLetterScan bounds the letters one DeadLetters call reads while
// filtering; the next page goes on from where it stopped.
const maxDeadLetterScan = 10_000

// DeadLetters returns the letters that match f, oldest first, and the Seq to
// pass as f.After for the next page (0 when there is none). A page is short,
// with more to come, when its letters reach MaxPageBytes or it read 10,000
// letters that did not match.
func (b *Bus) DeadLetters(ctx context.Context, f DeadLetterFilter) ([]DeadLetter, uint64, error) {
	if b.closed.Load() {
		return nil, 0, ErrClosed
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	if f.Limit > 1000 {
		return nil, 0, fmt.Errorf("%w: DeadLetterFilter.Limit %d: use 1 to 1000", ErrInvalidConfig, f.Limit)
	}
	if f.Subscriber != "" {
		if err := bjs.ValidateToken("subscriber name", f.Subscriber); err != nil {
			return nil, 0, fmt.Errorf("%w: DeadLetterFilter.Subscriber: %v", ErrInvalidConfig, err)
		}
	}
	switch f.State {
	case "", DeadLetterPending, DeadLetterRedriven, DeadLetterDiscarded:
	default:
		return nil, 0, fmt.Errorf("%w: DeadLetterFilter.State %q: use pending, redriven or discarded", ErrInvalidConfig, f.State)
	}
	dlq, err := b.js.Stream(ctx, b.DLQStreamName())
	if err != nil {
		return nil, 0, fmt.Errorf("boxcar: dead letters: %w", err)
	}
	subject := bjs.DLQPrefix(b.cfg.SubjectPrefix) + ".>"
	if f.Subscriber != "" {
		subject = bjs.DLQPrefix(b.cfg.SubjectPrefix) + "." + f.Subscriber + ".>"
	}
	if f.After == math.MaxUint64 {
		return nil, 0, nil // nothing comes after it
	}
	var out []DeadLetter
	seq := f.After
	size := 0
	for scanned := 0; len(out) < f.Limit && size < MaxPageBytes && scanned < maxDeadLetterScan; scanned++ {
		raw, err := dlq.GetMsg(ctx, seq+1, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			seq = 0
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("boxcar: dead letters: %w", err)
		}
		seq = raw.Sequence
		dl := b.deadLetterOf(raw, dlq)
		if (f.Type != "" && dl.Type != f.Type) || (f.Key != "" && dl.Key != f.Key) || (f.Reason != "" && dl.Reason != f.Reason) {
			continue
		}
		if f.State != "" {
			// The state is the actions', filtered before Limit counts the
			// letter: a page of pending letters behind acted-on ones is
			// full.
			one := []DeadLetter{dl}
			if err := b.withActions(ctx, one); err != nil {
				return nil, 0, err
			}
			if one[0].State != f.State {
				continue
			}
			dl = one[0]
		}
		out = append(out, dl)
		size += dl.size()
	}
	if f.State == "" {
		if err := b.withActions(ctx, out); err != nil {
			return nil, 0, err
		}
	}
	return out, seq, nil
}

// DeadLetter returns the letter seq of the dead-letter stream.
func (b *Bus) DeadLetter(ctx context.Context, seq uint64) (DeadLetter, error) {
	if b.closed.Load() {
		return DeadLetter{}, ErrClosed
	}
	dlq, err := b.js.Stream(ctx, b.DLQStreamName())
	if err != nil {
		return DeadLetter{}, fmt.Errorf("boxcar: dead letter %d: %w", seq, err)
	}
	raw, err := dlq.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return DeadLetter{}, fmt.Errorf("boxcar: dead letter %d: %w", seq, ErrNotFound)
	}
	if err != nil {
		return DeadLetter{}, fmt.Errorf("boxcar: dead letter %d: %w", seq, err)
	}
	letters := []DeadLetter{b.deadLetterOf(raw, dlq)}
	if err := b.withActions(ctx, letters); err != nil {
		return DeadLetter{}, err
	}
	return letters[0], nil
}

// deadLetterOf reads a message of the dead-letter stream dlq.
func (b *Bus) deadLetterOf(raw *jetstream.RawStreamMsg, dlq jetstream.Stream) DeadLetter {
	info, err := bjs.DecodeDeadLetter(b.layout, raw.Header, raw.Data)
	dl := DeadLetter{Seq: raw.Sequence, DeadAt: raw.Time, State: DeadLetterPending, dlqCreatedNS: dlq.CachedInfo().Created.UnixNano()}
	if err != nil {
		dl.Reason, dl.Error, dl.NotRedrivable = "unknown", err.Error(), "not a Boxcar dead letter"
		return dl
	}
	dl.Subscriber, dl.Reason, dl.Error, dl.Attempts = info.Subscriber, info.Reason, info.Error, info.Attempts
	dl.EventID, dl.Type, dl.Key, dl.Headers, dl.Data = info.EventID, info.Type, info.Key, info.Headers, info.Data
	dl.StreamSeq, dl.OutboxSeq, dl.SchemaVersion = info.StreamSeq, info.OutboxSeq, info.SchemaVersion
	if info.CreatedNS > 0 {
		dl.Created = time.Unix(0, info.CreatedNS)
	}
	for _, h := range info.History {
		dl.History = append(dl.History, AttemptError{Attempt: h.Attempt, Error: h.Error, At: time.Unix(0, h.AtNS)})
	}
	switch {
	case info.Reason == "malformed" || info.Type == "" || info.EventID == "":
		dl.NotRedrivable = "a malformed message carries no event: discard it"
	case info.Truncated:
		dl.NotRedrivable = "the letter holds only part of the payload (cut to fit the server's limits)"
	case info.HeadersDropped:
		dl.NotRedrivable = "the letter lost the event's headers (dropped to fit the server's limits)"
	}
	return dl
}

// withActions fills in the state and action of letters.
func (b *Bus) withActions(ctx context.Context, letters []DeadLetter) error {
	if len(letters) == 0 {
		return nil
	}
	seqs := make([]uint64, len(letters))
	for i := range letters {
		seqs[i] = letters[i].Seq
	}
	actions, err := sqlite.DLQActions(ctx, b.db, letters[0].dlqCreatedNS, seqs)
	if err != nil {
		return fmt.Errorf("boxcar: dead letters: %w", err)
	}
	for i := range letters {
		a, ok := actions[letters[i].Seq]
		if !ok {
			continue
		}
		letters[i].Action = &DeadLetterAction{Action: a.Action, By: a.By, Why: a.Why, At: time.Unix(0, a.AtNS), OutboxSeq: a.OutboxSeq}
		letters[i].State = DeadLetterDiscarded
		if a.Action == "redrive" {
			letters[i].State = DeadLetterRedriven
		}
	}
	return nil
}

// RedriveRequest says which dead letters to redrive: one (Seq), or every
// pending letter of a subscriber's key (Subscriber and Key), or every
// pending letter of a subscriber (Subscriber alone), in their original
// order. By is required: who asks (it is recorded with Why).
type RedriveRequest struct {
	Seq        uint64
	Subscriber string
	Key        string
	By         string
	Why        string
}

// RedriveResult says what a Redrive did.
type RedriveResult struct {
	// Redriven are the letters whose copies went to the outbox, in their
	// original order (with a parked key, the letters it held follow its
	// head).
	Redriven []uint64 `json:"redriven"`
	// Done counts the letters that were redriven or discarded before:
	// nothing was done for them.
	Done int `json:"done"`
	// Gone counts the letters a redrive of a subscriber listed that were
	// no longer in the dead-letter stream when their turn came (its
	// retention removed them).
	Gone int `json:"gone,omitempty"`
}

// Redrive puts copies of dead letters back on the way to their subscriber,
// through the outbox (see the top of this file). A letter at the head of a
// parked key (SubscribeOptions.ParkKeys) releases the key: the events it
// held follow it, in their original order, and the key goes on after them.
// A letter held behind a parked key's head cannot be redriven on its own.
//
// A redrive of a subscriber (or of its key) refuses before it begins when
// one of the letters cannot be redriven; then it redrives them one at a
// time, each in a transaction of its own, oldest first. If one fails, the
// result holds those redriven before it and the error says how far it went:
// run it again to go on (those redriven count as Done).
func (b *Bus) Redrive(ctx context.Context, req RedriveRequest) (RedriveResult, error) {
	if err := b.writable(); err != nil {
		return RedriveResult{}, err
	}
	if req.By == "" {
		return RedriveResult{}, fmt.Errorf("%w: RedriveRequest.By is empty: say who redrives (it is recorded)", ErrInvalidConfig)
	}
	if req.Seq != 0 {
		dl, err := b.DeadLetter(ctx, req.Seq)
		if err != nil {
			return RedriveResult{}, err
		}
		if dl.State != DeadLetterPending {
			return RedriveResult{Done: 1}, nil
		}
		if dl.NotRedrivable != "" {
			return RedriveResult{}, fmt.Errorf("%w: dead letter %d cannot be redriven: %s", ErrInvalidConfig, dl.Seq, dl.NotRedrivable)
		}
		seqs, err := b.redriveOne(ctx, dl, req.By, req.Why)
		if len(seqs) > 0 {
			b.relay.wake()
		}
		return RedriveResult{Redriven: seqs}, err
	}
	if req.Subscriber == "" {
		return RedriveResult{}, fmt.Errorf("%w: RedriveRequest names no letter: set Seq, or Subscriber (and Key)", ErrInvalidConfig)
	}
	// The letters are listed first, without their payloads, so that one
	// that cannot be redriven stops the redrive before it began; each is
	// then read again to be redriven, one at a time: a subscriber's letters
	// may be far more than memory holds.
	f := DeadLetterFilter{Subscriber: req.Subscriber, Key: req.Key, Limit: 1000}
	var seqs []uint64
	var dlqCreated int64 // the stream the letters were listed from
	res := RedriveResult{}
	for {
		page, next, err := b.DeadLetters(ctx, f)
		if err != nil {
			return RedriveResult{}, err
		}
		for _, dl := range page {
			dlqCreated = dl.dlqCreatedNS
			switch {
			case dl.State != DeadLetterPending:
				res.Done++
			case dl.Reason == DeadLetterReasonParked: // it follows its key's head
			case dl.NotRedrivable != "":
				return RedriveResult{}, fmt.Errorf("%w: dead letter %d cannot be redriven: %s", ErrInvalidConfig, dl.Seq, dl.NotRedrivable)
			default:
				seqs = append(seqs, dl.Seq)
			}
		}
		if next == 0 {
			break
		}
		f.After = next
	}
	defer func() {
		if len(res.Redriven) > 0 {
			b.relay.wake()
		}
	}()
	for i, seq := range seqs {
		dl, err := b.DeadLetter(ctx, seq)
		switch {
		case errors.Is(err, ErrNotFound):
			res.Gone++ // the stream's retention removed it meanwhile
			continue
		case err != nil:
		case dl.dlqCreatedNS != dlqCreated:
			err = fmt.Errorf("boxcar: the dead-letter stream was made again since the redrive listed its letters: list them again")
		case dl.State != DeadLetterPending:
			res.Done++ // acted on meanwhile
			continue
		case dl.NotRedrivable != "":
			err = fmt.Errorf("%w: dead letter %d cannot be redriven: %s", ErrInvalidConfig, dl.Seq, dl.NotRedrivable)
		}
		var redriven []uint64
		if err == nil {
			redriven, err = b.redriveOne(ctx, dl, req.By, req.Why)
			if errors.Is(err, errRedriveRace) {
				// Another caller came first: on this letter, Done; on a
				// letter its parked key held, nothing was written, and
				// the error says so.
				if now, rerr := b.DeadLetter(ctx, seq); rerr == nil && now.State != DeadLetterPending {
					res.Done++
					continue
				}
			}
		}
		if err != nil {
			return res, fmt.Errorf("boxcar: redrive of %s: %d letters redriven (%d of the %d listed), then dead letter %d: %w",
				req.Subscriber, len(res.Redriven), i, len(seqs), seq, err)
		}
		res.Redriven = append(res.Redriven, redriven...)
	}
	return res, nil
}

// allDeadLetters pages through every letter that matches f.
func (b *Bus) allDeadLetters(ctx context.Context, f DeadLetterFilter) ([]DeadLetter, error) {
	var all []DeadLetter
	f.Limit = 1000
	for {
		page, next, err := b.DeadLetters(ctx, f)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if next == 0 {
			return all, nil
		}
		f.After = next
	}
}

// redriveOne redrives dl, and the letters its key holds if it parks one.
func (b *Bus) redriveOne(ctx context.Context, dl DeadLetter, by, why string) ([]uint64, error) {
	parked, isParked, err := sqlite.ParkedKeyOf(ctx, b.db, dl.Subscriber, dl.Key)
	if err != nil {
		return nil, err
	}
	if isParked && parked.HeadSeq != dl.Seq && dl.Reason == DeadLetterReasonParked {
		return nil, fmt.Errorf("%w: dead letter %d is held behind the head of its parked key (dead letter %d): redrive or discard that one", ErrInvalidConfig, dl.Seq, parked.HeadSeq)
	}
	if isParked && parked.HeadSeq == dl.Seq {
		return b.release(ctx, dl.Subscriber, dl.Key, &dl, by, why)
	}
	return b.writeRedrives(ctx, []DeadLetter{dl}, "", by, why)
}

// release redrives head (nil after a discard) and every pending letter the
// parked key of (subscriber, key) holds, in their original order, as one
// release round.
func (b *Bus) release(ctx context.Context, subscriber, key string, head *DeadLetter, by, why string) ([]uint64, error) {
	held, err := b.allDeadLetters(ctx, DeadLetterFilter{Subscriber: subscriber, Key: key, Reason: DeadLetterReasonParked, State: DeadLetterPending})
	if err != nil {
		return nil, err
	}
	for _, dl := range held {
		if dl.NotRedrivable != "" {
			return nil, fmt.Errorf("%w: dead letter %d, held behind its parked key's head, cannot be redriven: %s; discard it, then release the key", ErrInvalidConfig, dl.Seq, dl.NotRedrivable)
		}
	}
	slices.SortStableFunc(held, func(a, b DeadLetter) int { return cmpUint(a.StreamSeq, b.StreamSeq) })
	letters := held
	if head != nil {
		letters = append([]DeadLetter{*head}, held...)
	}
	release := b.ids.next(time.Now())
	if len(letters) == 0 {
		// Nothing held (the head was discarded, nothing behind it): the key
		// is free.
		return nil, b.w.Tx(ctx, func(tx *sql.Tx) error { return sqlite.UnparkKey(ctx, tx, subscriber, key) })
	}
	return b.writeRedrives(ctx, letters, release, by, why)
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// writeRedrives puts copies of letters into the outbox in one transaction,
// in order, with their actions; release, if set, marks them as a release of
// their parked key (the last copy says so).
func (b *Bus) writeRedrives(ctx context.Context, letters []DeadLetter, release, by, why string) ([]uint64, error) {
	var done []uint64
	err := b.Tx(ctx, func(tx *sql.Tx) error {
		done = done[:0]
		now := time.Now()
		for i, dl := range letters {
			h := maps.Clone(dl.Headers)
			if h == nil {
				h = map[string]string{}
			}
			h[bjs.HeaderEventID] = dl.EventID
			h[bjs.HeaderRedriveFor] = dl.Subscriber
			if dl.SchemaVersion > 0 {
				h[bjs.HeaderSchemaVersion] = strconv.Itoa(dl.SchemaVersion)
			}
			if release != "" {
				h[bjs.HeaderRelease] = release
				if i == len(letters)-1 {
					h[bjs.HeaderReleaseLast] = "1"
				}
			}
			headers, _ := json.Marshal(h) // map[string]string cannot fail
			data := dl.Data
			if data == nil {
				data = []byte{}
			}
			seq, err := sqlite.InsertOutboxRow(ctx, tx, sqlite.OutboxRow{
				ID: b.ids.next(now), Type: dl.Type, Key: dl.Key, Headers: headers, Data: data, CreatedNS: dl.Created.UnixNano(),
			})
			if err != nil {
				return err
			}
			fresh, err := sqlite.RecordDLQAction(ctx, tx, sqlite.DLQAction{
				DLQCreatedNS: dl.dlqCreatedNS, DLQSeq: dl.Seq, Subscriber: dl.Subscriber,
				Action: "redrive", By: by, Why: why, AtNS: now.UnixNano(), OutboxSeq: seq,
			})
			if err != nil {
				return err
			}
			if !fresh {
				return fmt.Errorf("dead letter %d was acted on meanwhile: %w", dl.Seq, errRedriveRace)
			}
			done = append(done, dl.Seq)
		}
		if release != "" {
			return sqlite.SetParkedRelease(ctx, tx, letters[0].Subscriber, letters[0].Key, release)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boxcar: redrive: %w", err)
	}
	for _, dl := range letters {
		b.log.Info("boxcar: dead letter redriven", logDeadLetter, dl.Seq, logSub, dl.Subscriber, logEventID, dl.EventID,
			logBy, by, logWhy, why, logRelease, release)
	}
	return done, nil
}

var errRedriveRace = errors.New("boxcar: a redrive or discard of the same letter came first: nothing was done")

// Discard gives up on a dead letter for good, recording who (by, required)
// and why; it reports false, doing nothing, if the letter was redriven or
// discarded before. Discarding the head of a parked key releases the events
// it held, in their original order.
func (b *Bus) Discard(ctx context.Context, seq uint64, by, why string) (bool, error) {
	if err := b.writable(); err != nil {
		return false, err
	}
	if by == "" {
		return false, fmt.Errorf("%w: Discard: by is empty: say who discards (it is recorded)", ErrInvalidConfig)
	}
	dl, err := b.DeadLetter(ctx, seq)
	if err != nil {
		return false, err
	}
	if dl.State != DeadLetterPending {
		return false, nil
	}
	var fresh bool
	err = b.Tx(ctx, func(tx *sql.Tx) error {
		var err error
		fresh, err = sqlite.RecordDLQAction(ctx, tx, sqlite.DLQAction{
			DLQCreatedNS: dl.dlqCreatedNS, DLQSeq: seq, Subscriber: dl.Subscriber,
			Action: "discard", By: by, Why: why, AtNS: time.Now().UnixNano(),
		})
		return err
	})
	if err != nil || !fresh {
		return false, err
	}
	b.log.Info("boxcar: dead letter discarded", logDeadLetter, seq, logSub, dl.Subscriber, logEventID, dl.EventID, logBy, by, logWhy, why)
	if parked, isParked, err := sqlite.ParkedKeyOf(ctx, b.db, dl.Subscriber, dl.Key); err != nil {
		return true, err
	} else if isParked && parked.HeadSeq == seq {
		if _, err := b.release(ctx, dl.Subscriber, dl.Key, nil, by, "release after its head was discarded: "+why); err != nil {
			return true, err
		}
		b.relay.wake()
	}
	return true, nil
}

// DeadLetterDepth is how many letters of one subscriber the dead-letter
// stream holds: all of them, and those nobody acted on yet (Pending, the
// depth to alert on).
type DeadLetterDepth struct {
	Total   int `json:"total"`
	Pending int `json:"pending"`
}

// DeadLetterDepths returns the dead-letter depth of every subscriber with
// letters, by name. It reads the dead-letter stream's per-subject counts
// (one request, paged by the client for large streams) and the database's
// record of actions.
func (b *Bus) DeadLetterDepths(ctx context.Context) (map[string]DeadLetterDepth, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	dlq, err := b.js.Stream(ctx, b.DLQStreamName())
	if err != nil {
		return nil, fmt.Errorf("boxcar: dead-letter depths: %w", err)
	}
	prefix := bjs.DLQPrefix(b.cfg.SubjectPrefix) + "."
	info, err := dlq.Info(ctx, jetstream.WithSubjectFilter(prefix+">"))
	if err != nil {
		return nil, fmt.Errorf("boxcar: dead-letter depths: %w", err)
	}
	acted, err := sqlite.DLQActionCounts(ctx, b.db, info.Created.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("boxcar: dead-letter depths: %w", err)
	}
	out := map[string]DeadLetterDepth{}
	for subject, n := range info.State.Subjects {
		sub, _, _ := strings.Cut(strings.TrimPrefix(subject, prefix), ".")
		d := out[sub]
		d.Total += int(n)
		out[sub] = d
	}
	for sub, d := range out {
		d.Pending = max(d.Total-acted[sub], 0)
		out[sub] = d
	}
	return out, nil
}

// size is about the bytes d holds, for MaxPageBytes.
func (d DeadLetter) size() int {
	n := len(d.Data) + headersSize(d.Headers) + len(d.Error) + len(d.Key) + len(d.Type)
	for _, h := range d.History {
		n += len(h.Error)
	}
	return n
}

// headersSize is the bytes of h's names and values.
func headersSize(h map[string]string) int {
	n := 0
	for k, v := range h {
		n += len(k) + len(v)
	}
	return n
}
