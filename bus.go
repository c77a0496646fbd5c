package boxcar

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	bjs "github.com/boxcar-bus/boxcar/jetstream"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// Bus is an event bus on one SQLite database. Open one per database and
// process; it is safe for concurrent use.
type Bus struct {
	db  *sql.DB
	cfg Config
	log *slog.Logger

	srv        *bjs.Server // nil with Config.NATSURL
	nc         *nats.Conn
	maxPayload int // the server's: what an event's headers and data must fit
	js         jetstream.JetStream
	events     jetstream.Stream // the stream the relay writes into: this bus's own, or the shared one
	layout     bjs.Layout       // of the event subjects
	dbID       string           // the database's own ID (boxcar_meta): what instance IDs and group slots are claimed for
	// subJS is where subscribers' consumers live: b.js, or the hub's
	// domain with Config.Leaf (hub then links this binary to it).
	subJS jetstream.JetStream
	hub   *hubLink

	// streamTurn serializes ensureStreams, which can wait long for a
	// delete to end: a channel, so that a caller waiting behind it can give
	// up with its context (a subscriber's Close, a worker dead-lettering).
	streamTurn       chan struct{}
	streamsRecreated atomic.Int64 // streams an operator deleted, created again

	ids     *idSource
	w       writer
	relay   *relay
	health  *healthMonitor
	unwatch func()

	mu       sync.Mutex
	subs     map[string]*Subscription
	slots    map[string]*Subscription // the group slots run here, by consumer name
	closed   atomic.Bool
	done     chan struct{} // closed when Close finished
	closeErr error
}

// writer is the database's single writer (sqlite.Writer): Bus.Tx and every
// write of Boxcar's own go through it.
type writer interface {
	// Tx runs fn in a savepoint of a group commit.
	Tx(ctx context.Context, fn func(tx *sql.Tx) error) error
	// Write runs fn in a transaction of its own under the write lock.
	Write(ctx context.Context, fn func(tx *sql.Tx) error) error
	// Lock takes the write lock for a WriteLocked that follows, or Unlock.
	Lock(ctx context.Context) error
	Unlock()
	WriteLocked(ctx context.Context, fn func(tx *sql.Tx) error) error
	// TryWrite is Write if the lock is free now; it reports whether fn ran.
	TryWrite(ctx context.Context, fn func(tx *sql.Tx) error) (bool, error)
	// Own marks the calling goroutine as the one running code under the
	// lock (a batch's handlers), until the func returned is called.
	Own() (done func())
	// Durable returns once everything committed so far is on disk;
	// DurableWithin may wait up to linger more, to share an fsync.
	Durable(ctx context.Context) error
	DurableWithin(ctx context.Context, linger time.Duration) error
	// TxEnded reports whether SQLite ended the write connection's
	// transaction on its own, and the statement error that did it.
	TxEnded() (ended bool, cause error)
	Stats() sqlite.WriterStats
	// RefuseTx makes Tx calls not yet run return sqlite.ErrClosed.
	RefuseTx()
	Close(ctx context.Context) error
}

// Open starts a Bus on db: it migrates Boxcar's tables (boxcar_*), starts
// the embedded NATS server under Config.Dir (or connects to Config.NATSURL),
// provisions the streams and starts the relay. db should come from
// sqlite.Open, whose connections wake the relay at each commit; other
// databases are polled every Config.RelayPollInterval. Close the Bus before
// closing db.
func Open(ctx context.Context, db *sql.DB, cfg Config) (_ *Bus, err error) {
	if db == nil {
		return nil, fmt.Errorf("%w: db is nil: pass the *sql.DB from sqlite.Open", ErrInvalidConfig)
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	b := &Bus{
		db:    db,
		cfg:   cfg,
		log:   cfg.Logger,
		ids:   newIDSource(),
		subs:  map[string]*Subscription{},
		slots: map[string]*Subscription{},
		done:  make(chan struct{}),

		streamTurn: make(chan struct{}, 1),
	}
	// On failure, undo what was started, in reverse order.
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()

	if err := b.openStore(ctx); err != nil {
		return nil, err
	}
	undo = append(undo, func() { b.w.Close(context.Background()) })
	if err := b.openEvents(ctx); err != nil {
		return nil, err
	}
	undo = append(undo, b.disconnect)
	if !cfg.inspect {
		if err := b.startTopology(ctx); err != nil {
			return nil, fmt.Errorf("boxcar: open: %w", err)
		}
		undo = append(undo, func() { b.stopTopology(context.Background()) })
	}

	b.relay, err = newRelay(ctx, b)
	if err != nil {
		return nil, fmt.Errorf("boxcar: open: %w", err)
	}
	var watched bool
	b.unwatch, watched = sqlite.WatchOutboxCommits(db, b.relay.hint)
	if !watched {
		b.log.Info("boxcar: the database was not opened with sqlite.Open: commits on its own connections are found by the relay's poll, every Config.RelayPollInterval; Bus.Tx and Publish wake the relay at once",
			logPollInterval, cfg.RelayPollInterval)
	}
	b.health = newHealthMonitor(b)
	if cfg.inspect {
		b.relay.group.Stop(ctx) // never runs: Health says it is stopped
		return b, nil
	}
	b.relay.start()
	b.health.start()
	if b.hub != nil {
		b.hub.start(ctx)
	}
	return b, nil
}

// openStore checks the database, migrates it (Inspect: checks that it is
// migrated) and starts the single writer.
func (b *Bus) openStore(ctx context.Context) error {
	db, cfg := b.db, b.cfg
	if err := checkDB(ctx, db); err != nil {
		return err
	}
	if cfg.inspect {
		if err := checkMigrated(ctx, db); err != nil {
			return err
		}
	} else if err := sqlite.Migrate(ctx, db); err != nil {
		return fmt.Errorf("boxcar: open: %w", err)
	}
	w, err := sqlite.NewWriter(ctx, db, sqlite.WriterConfig{
		AfterTxCommit: func() {
			b.probe(ProbeAfterCommit)
			b.relay.wake()
		},
		Synchronous: cfg.Synchronous,
		Logger:      cfg.Logger,
	})
	if err != nil {
		return fmt.Errorf("boxcar: open: %w", err)
	}
	b.w = w
	if wrap := cfg.seams.writer; wrap != nil {
		b.w = wrap(w)
	}
	return nil
}

// openEvents connects to NATS (the embedded server, or Config.NATSURL),
// checks its max payload against Config.MaxEventBytes, and makes sure of the
// streams (Inspect: finds them). On an error it disconnects.
func (b *Bus) openEvents(ctx context.Context) (err error) {
	cfg := b.cfg
	if err := b.connect(ctx); err != nil {
		return fmt.Errorf("boxcar: open: %w", err)
	}
	defer func() {
		if err != nil {
			b.disconnect()
		}
	}()
	b.maxPayload = int(b.nc.MaxPayload())
	if need := cfg.MaxEventBytes + bjs.HeaderReserve; need > b.maxPayload {
		return fmt.Errorf("%w: Config.MaxEventBytes (%d) with Boxcar's headers needs a max payload of %d bytes, and the server at Config.NATSURL allows %d: lower MaxEventBytes or raise the server's max_payload", ErrInvalidConfig, cfg.MaxEventBytes, need, b.maxPayload)
	} else if need += bjs.DeadLetterReserve; need > b.maxPayload {
		b.log.Warn("boxcar: the server's max payload leaves no room for the dead letter of an event near Config.MaxEventBytes: such a letter is cut to fit and cannot be redriven; lower MaxEventBytes or raise the server's max_payload",
			logMaxEventBytes, cfg.MaxEventBytes, logMaxPayload, b.maxPayload, logNeeded, need)
	}
	b.js, err = jetstream.New(b.nc,
		jetstream.WithPublishAsyncMaxPending(max(cfg.RelayBatch, 1)*2),
		jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout))
	if err != nil {
		return fmt.Errorf("boxcar: open: %w", err)
	}
	if wrap := cfg.seams.wrapJetStream; wrap != nil {
		b.js = wrap(b.js)
	}
	b.subJS = b.js
	b.layout = bjs.Layout{Prefix: cfg.SubjectPrefix, Partitions: cfg.Partitions}
	if b.dbID, err = b.databaseID(ctx); err != nil {
		return fmt.Errorf("boxcar: open: %w", err)
	}
	if cfg.inspect {
		err = b.findStreams(ctx)
	} else {
		b.events, err = b.openStreams(ctx) // upgrade.go: upgrades (or refuses) an older layout
	}
	if err != nil {
		return fmt.Errorf("boxcar: open: %w", err)
	}
	return nil
}

// checkDB refuses a database Boxcar cannot serve well: one not in WAL mode
// (every reader would block the writer, and the writer every reader), or
// one limited to a single connection.
func checkDB(ctx context.Context, db *sql.DB) error {
	if n := db.Stats().MaxOpenConnections; n == 1 {
		return fmt.Errorf("%w: db allows one open connection (SetMaxOpenConns(1)): the bus writes on a connection of its own and the relay reads on another; allow at least 2", ErrInvalidConfig)
	}
	mode, err := sqlite.JournalMode(ctx, db)
	if err != nil {
		return fmt.Errorf("boxcar: open: %w", err)
	}
	if mode != "wal" {
		return fmt.Errorf("%w: the database is in journal_mode=%s: Boxcar needs WAL, so that the relay and subscribers read beside the writer; open it with sqlite.Open (which also wakes the relay at each commit), or run PRAGMA journal_mode=WAL on it once", ErrInvalidConfig, mode)
	}
	return nil
}

// streamConfig is what the bus's streams are made with.
func (b *Bus) streamConfig() bjs.StreamConfig {
	return bjs.StreamConfig{
		Name:          b.cfg.Stream,
		Layout:        b.layout,
		MaxAge:        b.cfg.Retention,
		Duplicates:    min(b.cfg.DuplicateWindow, EventStreamDuplicateWindow),
		DLQDuplicates: b.cfg.DuplicateWindow,
		Replicas:      b.cfg.Replicas,
		Shared:        b.cfg.topology() == topologyShared,
	}
}

// connect starts the embedded server and connects to it in-process, or
// connects to Config.NATSURL.
func (b *Bus) connect(ctx context.Context) error {
	cfg := b.cfg
	if cfg.NATSURL != "" {
		opts := append([]nats.Option{nats.Name("boxcar"), nats.MaxReconnects(-1)}, cfg.NATSOptions...)
		nc, err := nats.Connect(cfg.NATSURL, opts...)
		if err != nil {
			return fmt.Errorf("connect: %w", err)
		}
		b.nc = nc
		return nil
	}
	srv, err := bjs.Start(bjs.ServerConfig{
		Dir:             cfg.Dir,
		Listen:          cfg.Listen,
		InspectPassword: cfg.ListenInspectPassword,
		AdminPassword:   cfg.ListenAdminPassword,
		TLS:             cfg.ListenTLS,
		StoreKey:        cfg.StoreKey,
		StoreCipher:     cfg.StoreCipher,
		SyncAlways:      cfg.SyncAlways,
		MaxPayload:      int32(cfg.serverMaxPayload()),
		Logger:          cfg.Logger,
		Name:            cfg.serverName(),
		Domain:          cfg.serverDomain(),
		Leaf:            cfg.leafRemote(),
	})
	if errors.Is(err, bjs.ErrStoreKey) {
		return fmt.Errorf("%w: the store's encryption (Config.StoreKey, Config.StoreCipher): %w", ErrInvalidConfig, err)
	}
	if err != nil {
		return err
	}
	nc, err := srv.Connect("boxcar")
	if err != nil {
		srv.Shutdown(ctx)
		return fmt.Errorf("connect: %w", err)
	}
	b.srv, b.nc = srv, nc
	return nil
}

// disconnect closes the NATS connection and stops the embedded server.
func (b *Bus) disconnect() {
	b.nc.Close()
	if b.srv != nil {
		b.srv.Shutdown(context.Background())
	}
}

// Close stops the subscribers (waiting for handlers in flight), then the
// relay (which saves its cursor), then the NATS connection and the embedded
// server. It waits up to ctx's deadline; past it, handlers' contexts are
// canceled and Close returns ctx's error, and the embedded server's shutdown
// goes on in the background, releasing Config.Dir once the server has
// stopped (an Open of the same Dir meanwhile fails with ErrDirLocked, saying
// that a Bus of this process is still closing). It does not close the *sql.DB.
// Calling Close again returns the first call's result.
func (b *Bus) Close(ctx context.Context) error {
	if !b.closed.CompareAndSwap(false, true) {
		select {
		case <-b.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		return b.closeErr
	}
	defer close(b.done)
	b.w.RefuseTx() // Tx calls still queued return ErrClosed
	var errs []error
	b.mu.Lock()
	subs := make([]*Subscription, 0, len(b.subs))
	for _, s := range b.subs {
		if s != nil { // nil: a Subscribe still provisioning; it sees closed
			subs = append(subs, s)
		}
	}
	b.mu.Unlock()
	errs = append(errs, closeAll(ctx, subs)...)
	if err := b.health.stop(ctx); err != nil {
		errs = append(errs, fmt.Errorf("boxcar: health monitor: %w", err))
	}
	if err := b.relay.stop(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := b.stopTopology(ctx); err != nil {
		errs = append(errs, err)
	}
	b.unwatch()
	if err := b.w.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	// Subscribers and relay are stopped and every publish was awaited:
	// nothing is left to flush.
	b.nc.Close()
	if b.srv != nil {
		if err := b.srv.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	b.closeErr = errors.Join(errs...)
	return b.closeErr
}

// Tx runs fn in an SQLite transaction and commits it if fn returns nil,
// then wakes the relay; if fn returns an error or panics, fn's writes are
// rolled back, nothing fn published is sent, and the error is returned (or
// the panic raised again). Use it for the app's writes together with
// PublishTx.
//
// Tx calls that arrive while another transaction is committing share the
// next SQLite transaction (group commit): each fn runs in a savepoint of its
// own, in arrival order, so one fn's error rolls back only its own writes, and
// a fn sees the writes of the fns before it in its group, which commit with
// it. Tx returns after that transaction committed. If SQLite ends the whole
// transaction instead (a full disk, an I/O error), every fn that ran in it
// returns an error and none of their writes are committed.
//
// fn must not keep tx after it returns or end it (tx.Commit, tx.Rollback,
// or COMMIT run as SQL: the outcome of its group is then unknown to every
// call in it, and their errors say so). A call from fn back into the bus's
// writer (Tx, Publish, a transaction of its own on the same database)
// returns ErrReentrant at once: use PublishTx with the tx fn was given. (So
// does one from a goroutine a TxHandler started with its context. One from
// a goroutine fn started cannot be told apart from any other writer: it
// waits for fn, which waits for it, until the busy timeout fails it with
// ErrBusy. A Tx call waits for the writer at most the busy timeout.) If SQLite ends the transaction while
// fn runs (a statement that rolls the whole transaction back, such as
// INSERT OR ROLLBACK, whose error fn ignores), fn's later statements fail,
// and Tx returns an error: nothing of fn, or of its group, is committed. ctx
// bounds the wait for a place in a group. Inside fn, a canceled context
// fails the next statement run with it, but does not interrupt one already
// running (on a database from sqlite.Open; on others it does, and SQLite then
// rolls back the whole group). Once fn has run, Tx waits for the commit,
// whatever ctx does, and reports its outcome.
//
// fn runs on the goroutine that leads its group, which may be another
// caller's. So fn must not call runtime.Goexit (t.FailNow or t.Fatal, in a
// test: return an error and fail the test after Tx returns): the leading
// goroutine ends there, which may not be the caller's. The bus goes on: the
// group is rolled back, and every other call in it returns an error
// (one wrapping sqlite.ErrTxNotRun for those queued after fn, which never
// ran).
func (b *Bus) Tx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if err := b.writable(); err != nil {
		return err
	}
	if ctx.Value(writerHeldKey{}) != nil {
		// A goroutine a TxHandler started, with the handler's context: the
		// goroutine-ID check cannot see it, and it would wait for the writer
		// the handler holds.
		return fmt.Errorf("%w (the context is a TxHandler's)", ErrReentrant)
	}
	err := b.w.Tx(ctx, fn)
	if err == sqlite.ErrClosed { //nolint:errorlint // only the refusal itself means "nothing ran"
		return ErrClosed
	}
	return err
}

// writerHeldKey marks the context of a TxHandler call, which holds the
// database's writer for as long as it runs.
type writerHeldKey struct{}

func holdsWriter(ctx context.Context) context.Context {
	return context.WithValue(ctx, writerHeldKey{}, true)
}

// DB returns the database the bus was opened on.
func (b *Bus) DB() *sql.DB { return b.db }

// JetStream returns the JetStream context the bus uses, for inspection and
// tools. Publishing into the event stream directly bypasses the outbox.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// Conn returns the bus's NATS connection.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// StreamName and DLQStreamName return the names of the bus's streams.
func (b *Bus) StreamName() string    { return b.cfg.Stream }
func (b *Bus) DLQStreamName() string { return bjs.DLQName(b.cfg.Stream) }

// ClientURL is the URL of the embedded server's listener ("" without one).
func (b *Bus) ClientURL() string {
	if b.srv == nil {
		return b.cfg.NATSURL
	}
	return b.srv.ClientURL()
}
