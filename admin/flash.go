package admin

import (
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"
)

// A flash is the result of a page action, shown by the page the action
// redirects to (Post/Redirect/Get). It is kept here, not in the URL, so
// that a link cannot make the page claim a result that did not happen; the
// URL carries only its random ID.
type flash struct {
	OK      bool
	Message string
	At      time.Time
}

// Bounds of the flash store: it never holds more than maxFlashes, nor any
// older than flashTTL (checked as flashes are added: no goroutine).
const (
	maxFlashes = 256
	flashTTL   = 10 * time.Minute
)

// flashes stores recent flashes by ID.
type flashes struct {
	mu    sync.Mutex
	byID  map[string]flash
	order []string // IDs, oldest first
}

func newFlashes() *flashes { return &flashes{byID: map[string]flash{}} }

// add stores f and returns its ID.
func (s *flashes) add(f flash) string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	id := hex.EncodeToString(b[:])
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.order) > 0 && (len(s.order) >= maxFlashes || time.Since(s.byID[s.order[0]].At) > flashTTL) {
		delete(s.byID, s.order[0])
		s.order = s.order[1:]
	}
	s.byID[id] = f
	s.order = append(s.order, id)
	return id
}

// get returns the flash of id, if it is still kept.
func (s *flashes) get(id string) (flash, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.byID[id]
	if ok && time.Since(f.At) > flashTTL {
		return flash{}, false
	}
	return f, ok
}
