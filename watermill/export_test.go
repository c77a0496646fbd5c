package boxcarwm

import "github.com/boxcar-bus/boxcar"

// GroupsOf reports the groups the registry holds for bus, and whether bus
// has an entry at all.
func GroupsOf(bus *boxcar.Bus) (groups int, registered bool) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	h := registry.hubs[bus]
	if h == nil {
		return 0, false
	}
	return len(h.groups), true
}
