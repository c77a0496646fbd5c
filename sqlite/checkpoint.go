package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"maps"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mattn/go-sqlite3"

	"github.com/boxcar-bus/boxcar/internal/lifecycle"
)

// WAL checkpoints. A checkpoint copies the pages committed to the WAL back
// into the database file and fsyncs both. SQLite runs one inside the commit
// that takes the WAL past wal_autocheckpoint pages (1000 by default), on
// the committing connection: for Boxcar that is the write connection, under
// the write lock, so every writer waits for the copy and its two fsyncs.
// Measured under load: a commit in 500 was such a checkpoint, 5 ms each,
// and together they held the write lock for 11% of the time.
//
// So the checkpointer does it in the background, on a connection of the
// pool, checkpointDelay after commits: a PASSIVE checkpoint, which waits for
// no reader or writer while it copies and fsyncs. Writers go on meanwhile,
// so the WAL is never quite all copied, and SQLite starts it over only when
// it is. When it has grown past walRestartPages, the checkpointer copies the
// few pages committed during its pass under the write lock (a short hold:
// the fsyncs then have little to write), and the next write starts the WAL
// over. Each such hold took ~4 ms here (two fsyncs): at 8,000 pages (a WAL
// of up to ~33 MB) it comes every ~8,000 frames instead of every ~1,000.
// While a Writer runs, no connection of a database from Open checkpoints on
// its own (wal_autocheckpoint 0, see dbState.autoCheckpoint): SQLite
// ignores the errors of those checkpoints, and the checkpointer must see a
// failed fsync (see checkpoint, below). Every commit, the app's own too,
// wakes the checkpointer. On a database not from Open, the write
// connection's own threshold, walBackstopPages, only acts if the
// checkpointer falls far behind.
// logError is the log attribute of an error, as in the root package.
const logError = "err"

const (
	walRestartPages  = 8000
	walBackstopPages = 4 * walRestartPages
	checkpointDelay  = 25 * time.Millisecond
)

// checkpointer runs background checkpoints after commits, on a goroutine
// of its own group, from startCheckpointer to stop.
type checkpointer struct {
	db     *sql.DB
	log    *slog.Logger
	lock   func(context.Context) error // the writer's lock
	unlock func()
	kick   chan struct{} // a commit happened; capacity 1
	group  *lifecycle.Group
	path   string // the database's main file
	// fsyncFailed is called, once, with a checkpoint's failed fsync and the
	// goroutine's context (canceled by stop); the checkpointer then stops
	// for good (see checkpoint).
	fsyncFailed func(context.Context, error)

	lastLog time.Time // of a failure; the goroutine's own
}

// With on false it runs no checkpoint: its goroutine ends at once.
func startCheckpointer(db *sql.DB, path string, log *slog.Logger, lock func(context.Context) error, unlock func(), on bool, fsyncFailed func(context.Context, error)) *checkpointer {
	c := &checkpointer{
		db:          db,
		path:        path,
		log:         log,
		lock:        lock,
		unlock:      unlock,
		kick:        make(chan struct{}, 1),
		group:       lifecycle.New(),
		fsyncFailed: fsyncFailed,
	}
	if on {
		c.group.Go(c.run)
	}
	return c
}

// poke reports a commit on the write connection. It never blocks.
func (c *checkpointer) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// stop ends the goroutine, waiting for a checkpoint in progress (it is
// canceled). It may be called more than once.
func (c *checkpointer) stop() { c.group.Stop(context.Background()) }

func (c *checkpointer) run(ctx context.Context) {
	delay := time.NewTimer(checkpointDelay)
	delay.Stop()
	for {
		select {
		case <-c.kick:
		case <-ctx.Done():
			return
		}
		// Let commits accumulate: one checkpoint copies each page once,
		// however many commits wrote it.
		delay.Reset(checkpointDelay)
		select {
		case <-delay.C:
		case <-ctx.Done():
			delay.Stop()
			return
		}
		if checkpointsForbidden(c.path) {
			// Another connection's checkpoint (the app's own) failed its
			// fsync.
			c.fsyncFailed(ctx, errCheckpointElsewhere)
			return
		}
		if err := c.checkpoint(ctx); isFsyncError(err) {
			c.fsyncFailed(ctx, err)
			return
		}
	}
}

// checkpoint copies what it can of the WAL and, if the WAL has grown long,
// completes the copy under the write lock. A failure (a full disk) is
// logged, at most every 10 seconds: the data is safe in the WAL, and the
// next round tries again.
//
// A failed fsync is not retried. A PASSIVE checkpoint that cannot copy the
// whole WAL writes its pages to the database file without an fsync and
// still counts them as copied (SQLite's nBackfill); only the checkpoint
// that copies the last frame fsyncs the file, and only then does SQLite
// start the WAL over. When that fsync fails, the kernel may have dropped
// the pages of the earlier copies that it could not write (Linux marks them
// clean and reports the error once), and a retry copies only the frames
// after nBackfill: its fsync would succeed, the WAL would start over, and
// those pages would be lost from both files. So no checkpoint runs again on
// the file in this process (see Writer.checkpointFsyncFailed), and the WAL
// keeps every commit: the next start rebuilds the WAL index, counts nothing
// as copied, and copies the whole WAL again.
func (c *checkpointer) checkpoint(ctx context.Context) error {
	walPages, err := c.passive(ctx)
	if err == nil && walPages >= walRestartPages {
		if err = c.lock(ctx); err == nil {
			_, err = c.passive(ctx)
			c.unlock()
		}
	}
	if err != nil && !isFsyncError(err) && ctx.Err() == nil && time.Since(c.lastLog) >= 10*time.Second {
		c.lastLog = time.Now()
		c.log.Warn("boxcar: background WAL checkpoint failed; retrying after the next commits", logError, err)
	}
	return err
}

// noCheckpoints are the database files (main file, as SQLite names it) on
// which a checkpoint's fsync failed in this process: none may be
// checkpointed again while the process runs, by any connection or Writer.
// The set is replaced, never changed, so that it is read without a lock.
var noCheckpoints struct {
	sync.Mutex
	paths atomic.Pointer[map[string]bool]
}

// forbidCheckpoints forbids every later checkpoint of the database at path.
func forbidCheckpoints(path string) {
	noCheckpoints.Lock()
	defer noCheckpoints.Unlock()
	m := map[string]bool{filepath.Clean(path): true}
	if old := noCheckpoints.paths.Load(); old != nil {
		maps.Copy(m, *old)
	}
	noCheckpoints.paths.Store(&m)
}

// checkpointsForbidden reports whether forbidCheckpoints was called for path.
func checkpointsForbidden(path string) bool {
	m := noCheckpoints.paths.Load()
	return m != nil && (*m)[filepath.Clean(path)]
}

// errCheckpointElsewhere is the cause of the durability failure when a
// checkpoint outside the checkpointer failed its fsync.
var errCheckpointElsewhere = errors.New("a checkpoint run on another connection to the database failed its fsync")

// isFsyncError reports whether err is SQLite's failed fsync. It runs after
// every statement.
func isFsyncError(err error) bool {
	se, ok := asSQLiteError(err)
	return ok && se.ExtendedCode == sqlite3.ErrIoErrFsync
}

// passive runs a PASSIVE checkpoint and returns the WAL's length in pages.
func (c *checkpointer) passive(ctx context.Context) (walPages int, err error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var busy, copied int
	err = c.db.QueryRowContext(ctx, walCheckpointPassive).Scan(&busy, &walPages, &copied)
	return walPages, err
}
