package jetstream

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// ErrDirLocked is returned by Start when the store directory is held: by
// another process, by another Server of this process, or by one of this
// process that is still shutting down. The error's text says which.
var ErrDirLocked = errors.New("store directory is locked")

// lockFileName is the lock file in the store directory.
const lockFileName = "boxcar.lock"

// The reasons a lock is refused, in the error's text.
const (
	heldByOtherProcess = "held by another process: stop it, or use another directory"
	heldByOpenBus      = "held by another Bus of this process: close it first (one Bus per directory)"
	heldByClosingBus   = "held by a Bus of this process that is still closing: wait for its Close (its embedded server is still shutting down, and releases the directory when it has stopped)"
)

// dirLockedError is a refused store lock, with the reason.
type dirLockedError struct{ dir, reason string }

func (e *dirLockedError) Error() string {
	return fmt.Sprintf("jetstream: store directory %s is locked: %s", e.dir, e.reason)
}

func (e *dirLockedError) Unwrap() error { return ErrDirLocked }

// held is the store locks of this process, so that a refused lock can tell
// this process's holders (open, or still shutting down) from another
// process. The OS lock alone cannot: it refuses a second open file of the
// same process exactly as it refuses another process. The mutex also makes
// "try the OS lock, then look up the holder" one step against a release.
var held struct {
	sync.Mutex
	locks []*dirLock
}

// dirLock is an exclusive OS lock on the lock file of a store directory
// (lockFile, per OS). The kernel drops it when the holder dies, even by
// SIGKILL.
type dirLock struct {
	f       *os.File
	fi      os.FileInfo // to recognise the same file under another path
	closing bool        // under held's mutex: Shutdown has begun
}

// lockDir takes the lock of the store directory dir.
func lockDir(dir string) (*dirLock, error) {
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("jetstream: open lock %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("jetstream: lock %s: %w", path, err)
	}
	held.Lock()
	defer held.Unlock()
	locked, err := lockFile(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("jetstream: lock %s: %w", path, err)
	}
	if !locked {
		f.Close()
		reason := heldByOtherProcess
		for _, l := range held.locks {
			if os.SameFile(l.fi, fi) {
				reason = heldByOpenBus
				if l.closing {
					reason = heldByClosingBus
				}
			}
		}
		return nil, &dirLockedError{dir: dir, reason: reason}
	}
	l := &dirLock{f: f, fi: fi}
	held.locks = append(held.locks, l)
	return l, nil
}

// markClosing records that the holder is shutting down.
func (l *dirLock) markClosing() {
	held.Lock()
	l.closing = true
	held.Unlock()
}

// release drops the lock.
func (l *dirLock) release() {
	held.Lock()
	defer held.Unlock()
	unlockFile(l.f)
	l.f.Close()
	held.locks = slices.DeleteFunc(held.locks, func(x *dirLock) bool { return x == l })
}
