package boxcar

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	bjs "github.com/boxcar-bus/boxcar/jetstream"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// Config configures a Bus. Every field has a default, filled in by
// withDefaults and checked by validate; the comment of each field states it.
type Config struct {
	// Dir is the directory of the embedded NATS server's store and its lock
	// file. Required unless NATSURL is set. Only one process (and one Bus)
	// can hold a Dir at a time.
	Dir string

	// NATSURL, if set, connects to an external NATS server or cluster
	// instead of embedding one. Default "" (embedded).
	NATSURL string
	// NATSOptions are extra options for the connection to NATSURL
	// (credentials, TLS). Default none.
	NATSOptions []nats.Option
	// Replicas of the streams on an external cluster. Default 1.
	Replicas int

	// Listen, if set, makes the embedded server accept NATS clients on this
	// loopback host:port (for the nats CLI). Default "": no listener at all,
	// clients connect in-process.
	Listen string
	// ListenToken is the token clients must present on Listen. Required with
	// Listen.
	ListenToken string

	// Stream is the JetStream stream of the events. Default "BOXCAR"; dead
	// letters go to Stream+"_DLQ".
	Stream string
	// SubjectPrefix starts every event subject (prefix.type.key). Default
	// "boxcar"; dead letters use SubjectPrefix+"_dlq".
	SubjectPrefix string
	// Retention is how long the streams keep events: the replay window.
	// Default 7 days.
	Retention time.Duration
	// DuplicateWindow is JetStream's duplicate window. Default 2 minutes.
	// Boxcar's exactly-once does not depend on it (see the relay).
	DuplicateWindow time.Duration
	// SyncAlways makes the embedded store fsync every message. Default false:
	// the store fsyncs every 2 minutes, and the outbox keeps relayed rows for
	// PruneDelay so that a power loss cannot lose them.
	SyncAlways bool

	// MaxEventBytes caps len(Event.Data) plus the size of Event.Headers.
	// Default 1 MiB minus 16 KiB, so that with Boxcar's own headers an event
	// fits the server's default 1 MiB max payload.
	MaxEventBytes int

	// RelayBatch is how many outbox rows the relay reads and publishes at
	// once. Default 1000.
	RelayBatch int
	// RelayPollInterval is how often the relay looks for commits it was not
	// told about (transactions on connections not opened by sqlite.Open).
	// Default 1s; reads only, so an idle poll writes nothing.
	RelayPollInterval time.Duration
	// CursorSaveInterval is how often a busy relay saves its cursor. Default
	// 100ms. The stream, not the saved cursor, is the truth on restart.
	CursorSaveInterval time.Duration
	// PruneDelay is how long relayed rows stay in the outbox, so that events
	// JetStream acked but had not yet fsynced can be republished after a
	// power loss. Default 3 minutes (the store syncs every 2), 0 with
	// SyncAlways.
	PruneDelay time.Duration
	// PublishTimeout bounds the wait for JetStream's ack of a publish.
	// Default 5s.
	PublishTimeout time.Duration

	// DedupeRetention is how long dedupe rows are kept. Default Retention:
	// a replay within the stream's window still finds them.
	DedupeRetention time.Duration

	// Logger receives Boxcar's logs. Default: discard.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Stream == "" {
		c.Stream = "BOXCAR"
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = "boxcar"
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Retention == 0 {
		c.Retention = 7 * 24 * time.Hour
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = 2 * time.Minute
	}
	if c.MaxEventBytes == 0 {
		c.MaxEventBytes = 1<<20 - 16<<10
	}
	if c.RelayBatch == 0 {
		c.RelayBatch = 1000
	}
	if c.RelayPollInterval == 0 {
		c.RelayPollInterval = time.Second
	}
	if c.CursorSaveInterval == 0 {
		c.CursorSaveInterval = 100 * time.Millisecond
	}
	if c.PruneDelay == 0 && !c.SyncAlways {
		c.PruneDelay = 3 * time.Minute
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 5 * time.Second
	}
	if c.DedupeRetention == 0 {
		c.DedupeRetention = c.Retention
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
	}
	if c.Dir == "" && c.NATSURL == "" {
		return bad("Config.Dir is empty: set it to a writable directory for the embedded NATS store (or set Config.NATSURL)")
	}
	if c.Listen != "" {
		if c.NATSURL != "" {
			return bad("Config.Listen is set with Config.NATSURL: Listen is for the embedded server only")
		}
		host, _, err := net.SplitHostPort(c.Listen)
		if err != nil {
			return bad("Config.Listen %q is not host:port: %v", c.Listen, err)
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return bad("Config.Listen %q is not a loopback address: use 127.0.0.1:PORT", c.Listen)
		}
		if c.ListenToken == "" {
			return bad("Config.ListenToken is empty: a listener needs authentication")
		}
	}
	if err := bjs.ValidateToken("Config.Stream", c.Stream); err != nil {
		return bad("%v", err)
	}
	if err := bjs.ValidateToken("Config.SubjectPrefix", c.SubjectPrefix); err != nil {
		return bad("%v", err)
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"Retention", c.Retention}, {"DuplicateWindow", c.DuplicateWindow}, {"RelayPollInterval", c.RelayPollInterval},
		{"CursorSaveInterval", c.CursorSaveInterval}, {"PublishTimeout", c.PublishTimeout}, {"DedupeRetention", c.DedupeRetention},
	} {
		if f.d < 0 {
			return bad("Config.%s is negative: use 0 for the default", f.name)
		}
	}
	if c.PruneDelay < 0 {
		return bad("Config.PruneDelay is negative")
	}
	if c.DuplicateWindow > c.Retention {
		return bad("Config.DuplicateWindow (%v) exceeds Config.Retention (%v)", c.DuplicateWindow, c.Retention)
	}
	if c.MaxEventBytes < 0 || c.MaxEventBytes > 64<<20 {
		return bad("Config.MaxEventBytes %d: use 1 to 64 MiB (0 for the default)", c.MaxEventBytes)
	}
	if c.RelayBatch < 0 || c.RelayBatch > 10_000 {
		return bad("Config.RelayBatch %d: use 1 to 10000 (0 for the default)", c.RelayBatch)
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		return bad("Config.Replicas %d: use 1 to 5", c.Replicas)
	}
	return nil
}

// Bus is an event bus on one SQLite database. Open one per database and
// process; it is safe for concurrent use.
type Bus struct {
	db  *sql.DB
	cfg Config
	log *slog.Logger

	srv    *bjs.Server // nil with Config.NATSURL
	nc     *nats.Conn
	js     jetstream.JetStream
	events jetstream.Stream
	dlq    jetstream.Stream

	ids *idSource
	// writeLock serializes Boxcar's own SQLite write transactions (Tx,
	// Publish, the relay's cursor, subscriber transactions) in Go, where
	// waiters queue, instead of in SQLite's busy handler, which sleeps and
	// retries (1, 2, 5, 10 ms ...) and turns microsecond commits into
	// millisecond tails. SQLite admits one writer anyway.
	writeLock chan struct{}
	// wconn is the connection of every write under writeLock. One
	// connection keeps its page cache: SQLite drops a connection's whole
	// cache when it starts a transaction after another connection committed,
	// so writes that hop between the pool's connections each start by
	// reading the pages they change again.
	wconn *sql.Conn
	// shield is on while wconn runs Tx groups (see sqlite.Shield): a
	// caller's canceled context must not interrupt, and so roll back, a
	// transaction it shares with others. Subscriber transactions run with
	// it off, so that a handler's timeout interrupts its statement.
	shield *sqlite.Shield
	txq    txQueue // Tx calls waiting for a group (txgroup.go)
	ckpt   *checkpointer

	txCommits atomic.Int64 // Tx groups committed
	txCalls   atomic.Int64 // Tx calls in them

	relay   *relay
	unwatch func()

	mu       sync.Mutex
	subs     map[string]*Subscription
	closed   atomic.Bool
	done     chan struct{} // closed when Close finished
	closeErr error
	wg       sync.WaitGroup // the relay goroutine
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
		db:        db,
		cfg:       cfg,
		log:       cfg.Logger,
		ids:       newIDSource(),
		writeLock: make(chan struct{}, 1),
		subs:      map[string]*Subscription{},
		done:      make(chan struct{}),
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

	if n := db.Stats().MaxOpenConnections; n == 1 {
		return nil, fmt.Errorf("%w: db allows one open connection (SetMaxOpenConns(1)): the bus writes on a connection of its own and the relay reads on another; allow at least 2", ErrInvalidConfig)
	}
	if err := sqlite.Migrate(ctx, db); err != nil {
		return nil, fmt.Errorf("boxcar: open: %w", err)
	}
	if b.wconn, err = db.Conn(ctx); err != nil {
		return nil, fmt.Errorf("boxcar: open: %w", err)
	}
	undo = append(undo, func() { b.wconn.Close() })
	b.shield, _ = sqlite.ShieldOf(b.wconn) // nil for a db not from sqlite.Open
	if _, err := b.wconn.ExecContext(ctx, fmt.Sprintf(`PRAGMA wal_autocheckpoint=%d`, walBackstopPages)); err != nil {
		return nil, fmt.Errorf("boxcar: open: %w", err)
	}
	b.ckpt = newCheckpointer(db, cfg.Logger, b.acquireWrite, b.releaseWrite)
	undo = append(undo, b.ckpt.stop)

	if cfg.NATSURL == "" {
		b.srv, err = bjs.Start(bjs.ServerConfig{
			Dir:        cfg.Dir,
			Listen:     cfg.Listen,
			Token:      cfg.ListenToken,
			SyncAlways: cfg.SyncAlways,
			Logger:     cfg.Logger,
		})
		if err != nil {
			return nil, fmt.Errorf("boxcar: open: %w", err)
		}
		undo = append(undo, func() { b.srv.Shutdown(context.Background()) })
		b.nc, err = b.srv.Connect("boxcar")
	} else {
		opts := append([]nats.Option{nats.Name("boxcar"), nats.MaxReconnects(-1)}, cfg.NATSOptions...)
		b.nc, err = nats.Connect(cfg.NATSURL, opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("boxcar: open: connect: %w", err)
	}
	undo = append(undo, b.nc.Close)

	b.js, err = jetstream.New(b.nc,
		jetstream.WithPublishAsyncMaxPending(max(cfg.RelayBatch, 1)*2),
		jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout))
	if err != nil {
		return nil, fmt.Errorf("boxcar: open: %w", err)
	}
	b.events, b.dlq, err = bjs.EnsureStreams(ctx, b.js, bjs.StreamConfig{
		Name:       cfg.Stream,
		Prefix:     cfg.SubjectPrefix,
		MaxAge:     cfg.Retention,
		Duplicates: cfg.DuplicateWindow,
		Replicas:   cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("boxcar: open: %w", err)
	}

	b.relay, err = newRelay(ctx, b)
	if err != nil {
		return nil, fmt.Errorf("boxcar: open: %w", err)
	}
	b.unwatch, _ = sqlite.WatchOutboxCommits(db, b.relay.hint)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.relay.run()
	}()
	return b, nil
}

// Close stops the subscribers (waiting for handlers in flight), then the
// relay (which saves its cursor), then the NATS connection and the embedded
// server. It waits up to ctx's deadline; past it, handlers' contexts are
// canceled and Close returns ctx's error. It does not close the *sql.DB.
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
	var errs []error
	b.mu.Lock()
	subs := make([]*Subscription, 0, len(b.subs))
	for _, s := range b.subs {
		if s != nil { // nil: a Subscribe still provisioning; it sees closed
			subs = append(subs, s)
		}
	}
	b.mu.Unlock()
	for _, s := range subs {
		if err := s.Close(ctx); err != nil && !errors.Is(err, ErrClosed) {
			errs = append(errs, err)
		}
	}
	b.relay.stop()
	b.wg.Wait()
	b.unwatch()
	// The last Tx group (groups that start from now on see closed) and
	// then the write connection, back to the pool.
	b.writeLock <- struct{}{}
	b.wconn.Close()
	b.releaseWrite()
	b.ckpt.stop()
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

// acquireWrite takes the bus's write lock, waiting up to ctx.
func (b *Bus) acquireWrite(ctx context.Context) error {
	select {
	case b.writeLock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *Bus) releaseWrite() { <-b.writeLock }

// writeTx runs fn in a transaction under the bus's write lock and commits
// it; fn's error rolls it back. locked says the caller already holds the
// lock; it is released on return either way. For Boxcar's own writes.
func (b *Bus) writeTx(ctx context.Context, locked bool, fn func(tx *sql.Tx) error) error {
	if !locked {
		if err := b.acquireWrite(ctx); err != nil {
			return err
		}
	}
	defer b.releaseWrite()
	b.shield.Set(false)
	tx, err := b.wconn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	b.committed()
	return nil
}

// committed tells the checkpointer that the write connection committed.
func (b *Bus) committed() { b.ckpt.poke() }

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
