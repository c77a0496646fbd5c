package boxcar

import (
	"errors"
	"fmt"

	bjs "github.com/boxcar-bus/boxcar/jetstream"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// Errors returned by Boxcar. Test for them with errors.Is.
var (
	// ErrClosed: the bus or subscription is closed.
	ErrClosed = errors.New("boxcar: closed")
	// ErrInvalidEvent wraps every validation error of an Event given to
	// PublishTx or Publish; nothing was written.
	ErrInvalidEvent = errors.New("boxcar: invalid event")
	// ErrPayloadTooLarge: Event.Data plus Event.Headers exceed
	// Config.MaxEventBytes. It also matches ErrInvalidEvent.
	ErrPayloadTooLarge = fmt.Errorf("%w: payload too large", ErrInvalidEvent)
	// ErrHeadersTooLarge: Event.Headers, with Boxcar's own, exceed the
	// 64 KiB header block JetStream stores. It also matches ErrInvalidEvent.
	ErrHeadersTooLarge = fmt.Errorf("%w: headers too large", ErrInvalidEvent)
	// ErrInvalidType and ErrInvalidKey: see Event.Type and Event.Key.
	ErrInvalidType = bjs.ErrInvalidType
	ErrInvalidKey  = bjs.ErrInvalidKey
	// ErrSchema wraps a payload that does not match its type's schema: at
	// PublishTx (with Config.Schemas; it also matches ErrInvalidEvent) or in
	// a handler that cannot decode or upcast it. A handler that returns it
	// has its event dead-lettered at once, with reason "schema".
	ErrSchema = errors.New("boxcar: payload does not match its schema")
	// ErrInvalidConfig wraps every error of Config or SubscribeOptions.
	ErrInvalidConfig = errors.New("boxcar: invalid config")
	// ErrNotFound: the dead letter, subscriber or event asked for does not
	// exist (or left the stream).
	ErrNotFound = errors.New("boxcar: not found")
	// ErrDuplicateSubscriber: a subscriber of that name is already running
	// on this bus.
	ErrDuplicateSubscriber = errors.New("boxcar: duplicate subscriber name")
	// ErrDirLocked: Config.Dir is held by another process or Bus.
	ErrDirLocked = bjs.ErrDirLocked
	// ErrStoreKey: Config.StoreKey or Config.StoreCipher does not fit the
	// store in Config.Dir (missing, wrong, or another cipher). Open also
	// wraps it in ErrInvalidConfig; the store is left untouched.
	ErrStoreKey = bjs.ErrStoreKey
	// ErrReentrant: a call that needs the database's writer (Tx, Publish,
	// a transaction of the app's on the same database) was made from code
	// that holds it: a Tx function, a TxHandler, or a transaction of the
	// app's on the same goroutine. It would wait for itself; it fails at
	// once instead. Use PublishTx with the tx you were given. A TxHandler
	// that returns it has its event dead-lettered at once: retrying cannot
	// help.
	ErrReentrant = sqlite.ErrReentrant
	// ErrBusy: a write (Tx, Publish, a transaction or statement of the
	// app's on a database from sqlite.Open) waited for the database's only
	// writer longer than the busy timeout (sqlite.Options.BusyTimeout): one
	// transaction held it all along, most likely one of the app's left open
	// (no Commit or Rollback) or a Tx function that hangs. Its message reads
	// "database is locked", as SQLite's own; Stats.WriterHeldFor shows the
	// holder's age.
	ErrBusy = sqlite.ErrBusy
	// ErrTxEnded: a statement ran in a transaction SQLite had ended on its
	// own (a swallowed INSERT OR ROLLBACK, RAISE(ROLLBACK), a full disk):
	// refused, where it would have run, and committed, by itself. Nothing of
	// the transaction is committed.
	ErrTxEnded = sqlite.ErrTxEnded
	// ErrInstanceTaken: Config.InstanceID is claimed, in the cluster or
	// hub, by another database. Each instance needs an ID of its own; the
	// error says how to free one whose database is gone.
	ErrInstanceTaken = errors.New("boxcar: instance ID taken by another database")
	// ErrOldLayout: the event stream holds events in the subject layout of
	// an older Boxcar (prefix.type.key). Open upgrades an embedded store by
	// itself; a stream on Config.NATSURL or Config.Cluster is refused with
	// this error, which names the way to upgrade it (UpgradeLayout).
	ErrOldLayout = bjs.ErrOldLayout
	// ErrGroup: a group subscriber (SubscribeOptions.Group) cannot join its
	// group: its Members or the stream's partitions differ from the
	// group's, or every slot of a TxHandler group is claimed by other
	// databases. The error says which, and how to fix it.
	ErrGroup = errors.New("boxcar: cannot join the subscriber group")
)

// eventError is a validation error of one field of an event.
type eventError struct {
	index int    // position in the PublishTx call
	field string // e.g. "Type"
	err   error
}

func (e *eventError) Error() string {
	return fmt.Sprintf("boxcar: event %d: Event.%s: %v", e.index, e.field, e.err)
}

func (e *eventError) Unwrap() []error { return []error{ErrInvalidEvent, e.err} }

// permanentError marks a handler error that retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return "permanent: " + e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent wraps err so that the subscriber dead-letters the event at once
// instead of retrying it (a payload that cannot be decoded, an unknown
// schema version). Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}
