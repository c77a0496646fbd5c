package boxcar

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/boxcar-bus/boxcar/sqlite"
)

// ErrReadOnly is returned by every call that would write (Tx, PublishTx,
// Subscribe, Redrive, Discard, Replay, pausing, resuming or retiring a
// subscriber) on a Bus from Inspect.
var ErrReadOnly = errors.New("boxcar: read-only: this Bus was opened by Inspect, to look at the files of an app that is not running; start the app to change anything")

// Inspect opens the files of an app that is not running, for reading only:
// the database db (already migrated by the app) and the store in
// Config.Dir (or the server at Config.NATSURL), with the app's Config
// (the same Stream, SubjectPrefix, StoreKey ...). Stats, Health,
// Subscribers, DeadLetters, DeadLetter, ReplayProgress, OutboxPending and
// OutboxDeadLetters work as on a running bus; every write returns
// ErrReadOnly. The relay does not run (Health reports it stopped) and
// nothing is created: a database without Boxcar's tables, or a store
// without the bus's streams, is refused. The embedded server takes Dir's
// lock: while the app runs, Inspect fails with ErrDirLocked (ask the app's
// admin handler instead). Config.Listen is ignored. This is what
// "boxcar --db app.db --dir data" does.
func Inspect(ctx context.Context, db *sql.DB, cfg Config) (*Bus, error) {
	if cfg.NATSURL == "" && cfg.Dir != "" {
		if _, err := os.Stat(filepath.Join(cfg.Dir, "jetstream")); err != nil {
			return nil, fmt.Errorf("%w: no NATS store in Config.Dir %q (%v): is it the app's Dir?", ErrInvalidConfig, cfg.Dir, err)
		}
	}
	cfg.inspect = true
	cfg.Listen = ""
	return Open(ctx, db, cfg)
}

// writable refuses a write on a closed or inspected bus.
func (b *Bus) writable() error {
	switch {
	case b.closed.Load():
		return ErrClosed
	case b.cfg.inspect:
		return ErrReadOnly
	}
	return nil
}

// checkMigrated refuses a database Inspect cannot read: without Boxcar's
// tables, or not migrated to this version of Boxcar.
func checkMigrated(ctx context.Context, db *sql.DB) error {
	have, want, err := sqlite.MigrationState(ctx, db)
	if err != nil {
		return fmt.Errorf("boxcar: inspect: %w", err)
	}
	switch {
	case have == 0:
		return fmt.Errorf("%w: the database has no Boxcar tables: is it the app's database?", ErrInvalidConfig)
	case have < want:
		return fmt.Errorf("%w: the database is at Boxcar schema version %d, this Boxcar reads %d: start the app once (it migrates), or use the boxcar tool of the app's Boxcar version", ErrInvalidConfig, have, want)
	case have > want:
		return fmt.Errorf("%w: the database is at Boxcar schema version %d, newer than this Boxcar's %d: use the boxcar tool of the app's Boxcar version", ErrInvalidConfig, have, want)
	}
	return nil
}

// findStreams looks up the bus's streams without creating them.
func (b *Bus) findStreams(ctx context.Context) error {
	var err error
	if b.events, err = b.js.Stream(ctx, b.cfg.Stream); err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("%w: no stream %q in the store: wrong Dir (or NATSURL, or Stream), or the store was lost (the app refills it from the outbox at its next start)", ErrInvalidConfig, b.cfg.Stream)
		}
		return err
	}
	return nil
}
