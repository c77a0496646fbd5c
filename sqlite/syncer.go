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
	// stopped: the loop is gone; sync fsyncs itself, holding mu.
	stopped bool
}

func startSyncer(path string) *walSyncer {
	s := &walSyncer{path: path, group: lifecycle.New(), kick: make(chan struct{}, 1), done: make(chan struct{})}
	s.group.Go(s.run)
	return s
}

// sync returns once an fsync of the WAL that began after the call has
// completed: everything committed before the call is then on disk. After
// stop, it fsyncs itself: a commit made while the writer closes is still
// made durable, and its caller told the truth about it.
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
		if s.stopped {
			defer s.mu.Unlock()
			return s.syncRound(round)
		}
		done := s.done
		s.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *walSyncer) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			// The rounds asked for before the stop are done before it
			// returns; later ones fsync in sync itself.
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.synced < s.asked {
				s.syncRound(s.asked)
			}
			s.stopped = true
			if s.f != nil {
				s.f.Close()
				s.f = nil
			}
			return
		case <-s.kick:
		}
		s.mu.Lock()
		round := s.asked // every round asked so far: their commits are in the file
		f := s.f
		s.mu.Unlock()
		f, err := s.fsync(f)
		s.mu.Lock()
		s.f = f
		s.complete(round, err)
		s.mu.Unlock()
	}
}

// syncRound fsyncs round and the rounds before it, holding s.mu (after stop,
// or at it).
func (s *walSyncer) syncRound(round uint64) error {
	f, err := s.fsync(s.f)
	s.f = f
	if s.stopped && s.f != nil {
		s.f.Close()
		s.f = nil
	}
	s.complete(round, err)
	return err
}

// complete records round as done with err and wakes its waiters, holding s.mu.
func (s *walSyncer) complete(round uint64, err error) {
	if round > s.synced {
		s.synced, s.err = round, err
	}
	s.rounds++
	close(s.done)
	s.done = make(chan struct{})
}

// fsync syncs the WAL file f, opening it if f is nil, and returns the file
// to keep (nil after an error, so that the next round opens it again).
func (s *walSyncer) fsync(f *os.File) (*os.File, error) {
	if f == nil {
		var err error
		f, err = os.OpenFile(s.path, os.O_RDWR, 0)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil // nothing was ever written to a WAL: nothing to sync
		}
		if err != nil {
			return nil, fmt.Errorf("sqlite: open the WAL to sync it: %w", err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("sqlite: fsync the WAL: %w", err)
	}
	return f, nil
}

// fsyncs is how many fsyncs the syncer did.
func (s *walSyncer) fsyncs() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rounds
}

func (s *walSyncer) stop() { s.group.Stop(context.Background()) }
