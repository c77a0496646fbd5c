package boxcar

import (
	"context"
	"database/sql"
	"log/slog"
	"sync"
	"time"
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
// The write connection's own threshold, walBackstopPages, only acts if the
// checkpointer falls far behind.
const (
	walRestartPages  = 8000
	walBackstopPages = 4 * walRestartPages
	checkpointDelay  = 25 * time.Millisecond
)

// checkpointer runs background checkpoints after commits. Its goroutine
// lives from newCheckpointer to stop.
type checkpointer struct {
	db     *sql.DB
	log    *slog.Logger
	lock   func(context.Context) error // the bus's write lock
	unlock func()
	kick   chan struct{} // a commit happened; capacity 1
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	lastLog time.Time // of a failure; the goroutine's own
}

func newCheckpointer(db *sql.DB, log *slog.Logger, lock func(context.Context) error, unlock func()) *checkpointer {
	ctx, cancel := context.WithCancel(context.Background())
	c := &checkpointer{
		db:     db,
		log:    log,
		lock:   lock,
		unlock: unlock,
		kick:   make(chan struct{}, 1),
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
	}
	go c.run()
	return c
}

// poke reports a commit on the write connection. It never blocks.
func (c *checkpointer) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// stop ends the goroutine, waiting for a checkpoint in progress. It may be
// called more than once.
func (c *checkpointer) stop() {
	c.once.Do(c.cancel)
	<-c.done
}

func (c *checkpointer) run() {
	defer close(c.done)
	delay := time.NewTimer(checkpointDelay)
	delay.Stop()
	for {
		select {
		case <-c.kick:
		case <-c.ctx.Done():
			return
		}
		// Let commits accumulate: one checkpoint copies each page once,
		// however many commits wrote it.
		delay.Reset(checkpointDelay)
		select {
		case <-delay.C:
		case <-c.ctx.Done():
			delay.Stop()
			return
		}
		c.checkpoint()
	}
}

// checkpoint copies what it can of the WAL and, if the WAL has grown long,
// completes the copy under the write lock. A failure (a full disk) is
// logged, at most every 10 seconds: the data is safe in the WAL, and the
// next round, or the write connection's backstop, tries again.
func (c *checkpointer) checkpoint() {
	walPages, err := c.passive()
	if err == nil && walPages >= walRestartPages {
		if err = c.lock(c.ctx); err == nil {
			_, err = c.passive()
			c.unlock()
		}
	}
	if err != nil && c.ctx.Err() == nil && time.Since(c.lastLog) >= 10*time.Second {
		c.lastLog = time.Now()
		c.log.Warn("boxcar: background WAL checkpoint failed; retrying after the next commits", logError, err)
	}
}

// passive runs a PASSIVE checkpoint and returns the WAL's length in pages.
func (c *checkpointer) passive() (walPages int, err error) {
	ctx, cancel := context.WithTimeout(c.ctx, time.Minute)
	defer cancel()
	var busy, copied int
	err = c.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &walPages, &copied)
	return walPages, err
}
