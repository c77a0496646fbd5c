package sqlite

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"

	"github.com/boxcar-bus/boxcar/internal/lifecycle"
)

// Durability off the write lock. With synchronous=FULL, SQLite fsyncs the
// WAL inside every commit, while the commit holds the database's only
// writer: every writer queues behind every fsync (measured here: end to end
// at 0.16× of synchronous=NORMAL). Boxcar's write connection commits with
// synchronous=NORMAL instead, and what must be durable waits for the
// walSyncer: one fsync of the WAL file covers every commit written to it
// before the fsync began, so all who asked while one ran share the next, and
// the writer goes on meanwhile. After a commit is in the WAL file (in the
// page cache), fsyncing that file makes it survive a power loss, as FULL
// would: recovery replays the WAL's valid frames.
//
// A commit is visible to other connections before it is durable. Boxcar
// never reports one durable before it is: Tx returns, subscribers ack and the
// relay publishes only after the fsync.
type walSyncer struct {
	path  string
	group *lifecycle.Group
	kick  chan struct{} // capacity 1: someone asked

	mu     sync.Mutex
	asked  uint64        // highest round asked for
	synced uint64        // highest round done
	err    error         // of the last round
	done   chan struct{} // closed when a round completes, then replaced
	f      *os.File      // the WAL file, opened at the first round that finds it
	rounds uint64        // fsyncs done
}

func startSyncer(path string) *walSyncer {
	s := &walSyncer{path: path, group: lifecycle.New(), kick: make(chan struct{}, 1), done: make(chan struct{})}
	s.group.Go(s.run)
	return s
}

// sync returns once an fsync of the WAL that began after the call has
// completed: everything committed before the call is then on disk.
func (s *walSyncer) sync(ctx context.Context) error {
	s.mu.Lock()
	s.asked++
	round := s.asked
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	for {
		s.mu.Lock()
		if s.synced >= round {
			err := s.err
			s.mu.Unlock()
			return err
		}
		done := s.done
		s.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.group.Done():
			return ErrClosed
		}
	}
}

func (s *walSyncer) run(ctx context.Context) {
	defer func() {
		if s.f != nil {
			s.f.Close()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		s.mu.Lock()
		round := s.asked // every round asked so far: their commits are in the file
		s.mu.Unlock()
		err := s.fsync()
		s.mu.Lock()
		s.synced, s.err = round, err
		s.rounds++
		close(s.done)
		s.done = make(chan struct{})
		s.mu.Unlock()
	}
}

func (s *walSyncer) fsync() error {
	if s.f == nil {
		f, err := os.OpenFile(s.path, os.O_RDWR, 0)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // nothing was ever written to a WAL: nothing to sync
		}
		if err != nil {
			return fmt.Errorf("sqlite: open the WAL to sync it: %w", err)
		}
		s.f = f
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("sqlite: fsync the WAL: %w", err)
	}
	return nil
}

// fsyncs is how many fsyncs the syncer did.
func (s *walSyncer) fsyncs() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rounds
}

func (s *walSyncer) stop() { s.group.Stop(context.Background()) }
