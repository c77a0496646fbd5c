package boxcar

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"

	bjs "github.com/boxcar-bus/boxcar/jetstream"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// Event is what the application publishes.
type Event struct {
	// Type names the event: dot-separated tokens of ASCII letters, digits,
	// '_' and '-', e.g. "user.signed_up". Subscribers filter on it.
	Type string
	// Key is the entity the event is about (a user ID, an order ID). Events
	// of one key are handled in commit order by every subscriber; events of
	// different keys in parallel. Required: an event without a key has no
	// order to keep, and an empty key would silently serialize everything.
	// Any UTF-8 up to 512 bytes.
	Key string
	// Headers are optional metadata. Names are printable ASCII without
	// spaces or any of "()/,:;<=>?@[\]{} and may not start with "Boxcar-"
	// or "Nats-". Values are valid UTF-8 without CR or LF, and do not start
	// or end with a space or tab (NATS headers would drop it). With Boxcar's
	// own headers (about 1.5 KiB at most, with the type and key) they must fit
	// the 64 KiB header block JetStream stores: large values belong in Data.
	Headers map[string]string
	// Data is the payload, opaque to Boxcar (but see Config.Schemas).
	Data []byte
	// SchemaVersion is the version of the type's schema Data follows, with
	// Config.Schemas: 0 (the default) means the latest. Ignored without.
	SchemaVersion int
}

// validate checks e against the rules above and the size limits; i is its
// position in the call, for the error. What the stream would refuse (a header
// block over 64 KiB, a message over the server's max payload) is refused
// here: once written, it would hold every later event behind it.
func (e *Event) validate(i, maxBytes, maxPayload int) error {
	if err := bjs.ValidateType(e.Type); err != nil {
		return &eventError{index: i, field: "Type", err: err}
	}
	if err := bjs.ValidateKey(e.Key); err != nil {
		return &eventError{index: i, field: "Key", err: err}
	}
	size := len(e.Data)
	for k, v := range e.Headers {
		if err := bjs.ValidateHeader(k, v); err != nil {
			return &eventError{index: i, field: "Headers", err: err}
		}
		size += len(k) + len(v) + 4
	}
	if size > maxBytes {
		return &eventError{index: i, field: "Data", err: fmt.Errorf("%w: %d bytes of data and headers, the limit (Config.MaxEventBytes) is %d", ErrPayloadTooLarge, size, maxBytes)}
	}
	block := bjs.HeaderBlockSize(e.Type, e.Key, e.Headers)
	if block > bjs.MaxHeaderBlock {
		return &eventError{index: i, field: "Headers", err: fmt.Errorf("%w: with Boxcar's own, the header block would be %d bytes, and JetStream stores at most %d: carry large values in Data", ErrHeadersTooLarge, block, bjs.MaxHeaderBlock)}
	}
	if block+len(e.Data) > maxPayload {
		return &eventError{index: i, field: "Data", err: fmt.Errorf("%w: %d bytes of data and a %d-byte header block, the server's max payload is %d", ErrPayloadTooLarge, len(e.Data), block, maxPayload)}
	}
	return nil
}

// idSource makes event IDs: ULIDs, unique and sorted by time, monotonic
// within a millisecond. Dedupe pruning relies on them sorting by time.
type idSource struct {
	mu      sync.Mutex
	entropy *ulid.MonotonicEntropy
}

func newIDSource() *idSource {
	return &idSource{entropy: ulid.Monotonic(rand.Reader, 0)}
}

func (s *idSource) next(now time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return ulid.MustNew(ulid.Timestamp(now), s.entropy).String()
}

// PublishTx writes events into the outbox inside the caller's transaction
// tx: they are published if and only if tx commits, in commit order. If tx
// rolls back, nothing is published.
//
// Every event is validated before anything is written; on a validation
// error (which matches ErrInvalidEvent and names the field and the rule)
// nothing is written and tx is still usable, so the caller decides whether to
// commit the rest. If a write fails (a full disk), the events of this call
// are undone together and the error is returned; SQLite may then have rolled
// back tx as a whole, as it does for SQLITE_FULL, so treat tx as failed.
//
// Commits on connections from sqlite.Open wake the relay at once; others are
// found by the relay's poll.
func (b *Bus) PublishTx(ctx context.Context, tx *sql.Tx, events ...Event) error {
	if err := b.writable(); err != nil {
		return err
	}
	if tx == nil {
		return fmt.Errorf("%w: tx is nil", ErrInvalidEvent)
	}
	versions := make([]int, len(events))
	for i := range events {
		if err := events[i].validate(i, b.cfg.MaxEventBytes, b.maxPayload); err != nil {
			return err
		}
		if b.cfg.Schemas != nil {
			v, err := b.cfg.Schemas.ValidateEvent(events[i].Type, events[i].SchemaVersion, events[i].Data)
			if err != nil {
				return &eventError{index: i, field: "Data", err: fmt.Errorf("%w: %w", ErrSchema, err)}
			}
			versions[i] = v
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// The statements run with a context that cannot be canceled: the
	// driver runs them on this goroutine (for a cancelable one it starts a
	// goroutine per statement), and a cancel cannot interrupt them, which
	// would make SQLite roll back the caller's whole transaction. Each takes
	// microseconds; ctx was checked above.
	now := time.Now()
	rows := make([]sqlite.OutboxRow, len(events))
	var trace createTrace // Config.Tracing's create callbacks, ended with the write
	for i := range events {
		e := &events[i]
		r := &rows[i]
		r.ID = b.ids.next(now)
		h := e.Headers
		if b.cfg.Tracing != nil {
			var err error
			if h, err = trace.create(ctx, b, i, r.ID, e, now); err != nil {
				trace.end(err)
				return err
			}
		}
		if len(h) > 0 || versions[i] > 0 {
			if versions[i] > 0 {
				// Boxcar's own header, in the row with the event's.
				h = maps.Clone(h)
				if h == nil {
					h = map[string]string{}
				}
				h[bjs.HeaderSchemaVersion] = strconv.Itoa(versions[i])
			}
			r.Headers, _ = json.Marshal(h) // map[string]string cannot fail
		}
		r.Data = e.Data
		if r.Data == nil {
			r.Data = []byte{}
		}
		r.Type, r.Key, r.CreatedNS = e.Type, e.Key, now.UnixNano()
	}
	if err := sqlite.InsertEvents(context.WithoutCancel(ctx), tx, rows); err != nil {
		err = fmt.Errorf("boxcar: publish: %w", err)
		trace.end(err)
		return err
	}
	trace.end(nil)
	return nil
}

// Publish writes events in a transaction of its own, commits it and wakes
// the relay. When it returns nil the events are durable in the outbox (as
// durable as the database's synchronous mode makes commits) and will be
// delivered; on error nothing was written.
func (b *Bus) Publish(ctx context.Context, events ...Event) error {
	return b.Tx(ctx, func(tx *sql.Tx) error { return b.PublishTx(ctx, tx, events...) })
}
