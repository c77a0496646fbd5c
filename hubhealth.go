package boxcar

import (
	"fmt"
	"time"
)

// hubHealth is the "hub" component of a leaf's Health (Config.Leaf): its
// leaf connection and how far the hub's aggregate is behind this binary's
// stream. A hub that is away loses nothing (the events wait in this
// binary's stream), but the other binaries do not see them: stalled.
func (h *hubLink) health() ComponentHealth {
	st := h.status()
	c := ComponentHealth{Component: "hub", Name: st.Stream, State: HealthOK, Lag: int64(st.SourceLag)}
	switch {
	case st.Conflict != "":
		c.State, c.Reasons = HealthStopped, []string{"this binary cannot join the hub: " + st.Conflict}
	case !st.Connected:
		c.State, c.Reasons = HealthStalled, []string{fmt.Sprintf("the leaf connection to the hub is down (for %v): events wait in this binary's stream; %s",
			st.DownFor.Round(time.Second), st.Error)}
	case !st.Linked:
		c.State, c.Reasons = HealthStalled, []string{"the hub's aggregate has not been reached: " + st.Error}
	case st.SourceError != "":
		c.State, c.Reasons = HealthStalled, []string{"the hub cannot source this binary's stream: " + st.SourceError}
	case st.Error != "":
		c.State, c.Reasons = HealthLagging, []string{"the hub did not answer the last check: " + st.Error}
	case st.SourceLag > 0:
		c.State, c.Reasons = HealthLagging, []string{fmt.Sprintf("the hub's aggregate is %d events behind this binary's stream", st.SourceLag)}
	}
	return c
}

// withHubHealth adds the hub's component to h, for a leaf.
func (b *Bus) withHubHealth(h Health) Health {
	if b.hub == nil {
		return h
	}
	c := b.hub.health()
	h.Components = append(h.Components, c)
	if c.State.rank() > h.State.rank() {
		h.State = c.State
	}
	return h
}
