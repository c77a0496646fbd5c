package sqlite

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
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
//
// The fsync runs on the goroutine of the first caller that finds none
// running (the leader, as in a group commit); callers that come while it
// runs wait for the next one, which the first of them to wake runs. No
// goroutine of its own: at everyday load an event's path asks for two
// fsyncs (the relay's, the subscriber's ack), and handing each to a
// goroutine and back cost two wake-ups, CPU and latency, every time.
type walSyncer struct {
	path string

	mu      sync.Mutex
	asked   uint64        // highest round asked for
	synced  uint64        // highest round done
	err     error         // of the last round
	done    chan struct{} // closed when a round completes, then replaced
	running bool          // a leader is in fsync
	f       *os.File      // the WAL file, opened at the first round that finds it
	rounds  uint64        // fsyncs done (that succeeded, of a WAL that exists)
	// stopped: the writer closed; the file is closed after each round.
	stopped bool
	// broken is the first failed fsync's error, for good. After a failed
	// fsync the kernel may have dropped the pages it could not write (Linux
	// marks them clean and reports the error once), so an fsync that
	// succeeds later proves nothing about them: every later round fails
	// with broken, without an fsync. It is kept for the process in
	// failedWALs too, so that the database opened again in this process
	// (whose page cache still holds those pages) does not forget it.
	broken error

	// fsyncFile syncs the open WAL file; a test seam (nil: f.Sync).
	fsyncFile func(*os.File) error
}

func startSyncer(path string) *walSyncer {
	return &walSyncer{path: path, done: make(chan struct{}), broken: failedWAL(path)}
}

// failedWALs are the WAL files whose fsync failed in this process, by path,
// with the error: for as long as the process runs, none is reported durable
// again.
var failedWALs = struct {
	sync.Mutex
	m map[string]error
}{m: map[string]error{}}

func failedWAL(path string) error {
	failedWALs.Lock()
	defer failedWALs.Unlock()
	return failedWALs.m[filepath.Clean(path)]
}

func recordFailedWAL(path string, err error) {
	failedWALs.Lock()
	defer failedWALs.Unlock()
	if _, ok := failedWALs.m[filepath.Clean(path)]; !ok {
		failedWALs.m[filepath.Clean(path)] = err
	}
}

// sync returns once an fsync of the WAL that began after the call has
// completed: everything committed before the call is then on disk. A caller
// that waits for another's fsync stops waiting when ctx ends; one that runs
// the fsync returns when it is done (an fsync cannot be interrupted).
func (s *walSyncer) sync(ctx context.Context) error { return s.syncWithin(ctx, 0) }

// syncWithin is sync for a caller that can wait: for up to linger it only
// waits, for an fsync someone else begins (the relay's, for the next
// event), and leads one itself only after that.
func (s *walSyncer) syncWithin(ctx context.Context, linger time.Duration) error {
	s.mu.Lock()
	s.asked++
	round := s.asked
	var lingering <-chan time.Time
	if linger > 0 {
		t := time.NewTimer(linger)
		defer t.Stop()
		lingering = t.C
	}
	for {
		if s.synced >= round {
			err := s.err
			s.mu.Unlock()
			return err
		}
		if !s.running && lingering == nil {
			s.lead()
			continue
		}
		done := s.done
		s.mu.Unlock()
		select {
		case <-done:
		case <-lingering:
			lingering = nil
		case <-ctx.Done():
			return ctx.Err()
		}
		s.mu.Lock()
	}
}

// lead runs one round for every caller that asked so far (their commits are
// in the file), holding s.mu on entry and on return but not during the
// fsync.
func (s *walSyncer) lead() {
	s.running = true
	round, f, err := s.asked, s.f, s.broken
	s.mu.Unlock()
	lost := false
	if err == nil { // after a failure, no fsync: it would prove nothing
		if f, lost, err = s.fsync(f); lost {
			err = fmt.Errorf("%w: %w; the kernel may have dropped what it could not write, so no later fsync can prove the commits since the last good one on disk: nothing is reported durable (no outbox event published, no transactional ack) until the process restarts; stop the process, check the disk (dmesg), drop the page cache or reboot, then start it", ErrWALSyncFailed, err)
			recordFailedWAL(s.path, err)
		}
	}
	s.mu.Lock()
	if lost && s.broken == nil {
		s.broken = err
	}
	s.running = false
	if err == nil && f != nil {
		s.rounds++
	}
	if s.stopped && f != nil {
		f.Close()
		f = nil
	}
	s.f = f
	if round > s.synced {
		s.synced, s.err = round, err
	}
	close(s.done)
	s.done = make(chan struct{})
}

// fsync syncs the WAL file f, opening it if f is nil, and returns the file
// to keep (nil after an error, so that the next round opens it again).
// lost reports a failed fsync, as against a failure to open the file
// (nothing was synced then, and nothing lost: the next round tries again).
func (s *walSyncer) fsync(f *os.File) (_ *os.File, lost bool, _ error) {
	if f == nil {
		var err error
		f, err = os.OpenFile(s.path, os.O_RDWR, 0)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, false, nil // nothing was ever written to a WAL: nothing to sync
		}
		if err != nil {
			return nil, false, fmt.Errorf("sqlite: open the WAL to sync it: %w", err)
		}
	}
	sync := (*os.File).Sync
	if s.fsyncFile != nil {
		sync = s.fsyncFile
	}
	if err := sync(f); err != nil {
		f.Close()
		return nil, true, fmt.Errorf("sqlite: fsync the WAL: %w", err)
	}
	return f, false, nil
}

// breakWith ends durability with err, for good (a failed fsync that is not
// the syncer's own), unless it has ended already.
func (s *walSyncer) breakWith(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken == nil {
		s.broken = err
	}
	recordFailedWAL(s.path, err)
}

// failure is the failed fsync that ended durability (nil: none).
func (s *walSyncer) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.broken
}

// fsyncs is how many fsyncs of the WAL succeeded.
func (s *walSyncer) fsyncs() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rounds
}

// stop closes the WAL file (now, or when the round in progress ends). A
// later sync still fsyncs: a commit made while the writer closes is still
// made durable, and its caller told the truth about it.
func (s *walSyncer) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	if !s.running && s.f != nil {
		s.f.Close()
		s.f = nil
	}
}
