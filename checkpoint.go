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
// the write lock, so every writer waits for the copy and its fsyncs. Under
// load that was a quarter of the write lock's time.
//
// So the write connection's threshold is raised to walAutoCheckpoint pages,
// and the checkpointer copies the WAL in the background, on a connection of
// the pool, checkpointDelay after commits (PASSIVE: it waits for no reader
// or writer, and writers go on while it copies). When the write connection
// reaches its threshold, little is left to copy; that checkpoint completes
// the WAL, which the next write then starts over, so the WAL stays bounded
// (about walAutoCheckpoint pages) instead of growing while writers never
// pause.
const (
	walAutoCheckpoint = 4000
	checkpointDelay   = 25 * time.Millisecond
)

// checkpointer runs background checkpoints after commits. Its goroutine
// lives from newCheckpointer to stop.
type checkpointer struct {
	db   *sql.DB
	log  *slog.Logger
	kick chan struct{} // a commit happened; capacity 1
	quit chan struct{}
	done chan struct{}
	once sync.Once

	lastLog time.Time // of a failure; the goroutine's own
}

func newCheckpointer(db *sql.DB, log *slog.Logger) *checkpointer {
	c := &checkpointer{
		db:   db,
		log:  log,
		kick: make(chan struct{}, 1),
		quit: make(chan struct{}),
		done: make(chan struct{}),
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
	c.once.Do(func() { close(c.quit) })
	<-c.done
}

func (c *checkpointer) run() {
	defer close(c.done)
	delay := time.NewTimer(checkpointDelay)
	delay.Stop()
	for {
		select {
		case <-c.kick:
		case <-c.quit:
			return
		}
		// Let commits accumulate: one checkpoint copies each page once,
		// however many commits wrote it.
		delay.Reset(checkpointDelay)
		select {
		case <-delay.C:
		case <-c.quit:
			delay.Stop()
			return
		}
		c.checkpoint()
	}
}

// checkpoint copies what it can of the WAL. A failure (a full disk) is
// logged, at most every 10 seconds: the data is safe in the WAL, and the
// write connection's own checkpoint or the next round tries again.
func (c *checkpointer) checkpoint() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var busy, walPages, copied int
	err := c.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &walPages, &copied)
	if err != nil && time.Since(c.lastLog) >= 10*time.Second {
		c.lastLog = time.Now()
		c.log.Warn("boxcar: background WAL checkpoint failed; retrying after the next commits", logError, err)
	}
}
