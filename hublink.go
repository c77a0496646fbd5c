package boxcar

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/boxcar-bus/boxcar/internal/lifecycle"
	bjs "github.com/boxcar-bus/boxcar/jetstream"
)

// hubLink is a leaf binary's side of the hub (Config.Leaf): once the leaf
// connection is up it claims the instance ID at the hub, makes sure the
// hub's aggregate stream exists and sources this binary's stream, and keeps
// reading that source's state (lag, activity, error) for Health and Stats.
// It checks again every hubCheckEvery, so a source another binary's update
// overwrote (stream updates have no compare-and-set), or an aggregate an
// operator deleted, is put back.
//
// The aggregate has no subjects of its own, only sources: nothing published
// at the hub lands in it. Each source keeps its order (ADR-59); sources are
// interleaved by arrival. Sourcing keeps Nats-Msg-Id (so the aggregate's
// duplicate window applies) and strips the Nats-Expected-* headers.
type hubLink struct {
	b     *Bus
	js    jetstream.JetStream // in the hub's domain
	group *lifecycle.Group

	mu        sync.Mutex
	stream    jetstream.Stream // the aggregate, once ensured
	ready     chan struct{}    // closed when stream is first set
	claimed   bool
	conflict  error // permanent: the instance ID or the layout conflicts with the hub
	lastErr   string
	source    *jetstream.StreamSourceInfo // this binary's, as the aggregate last said
	checkedAt time.Time
	downSince time.Time // when the leaf connection was last seen down (zero: up)
}

// How often the link checks the hub: quickly until it is linked, then
// every hubCheckEvery.
const (
	hubCheckEvery   = 10 * time.Second
	hubRetryEvery   = time.Second
	hubWaitAtOpen   = 2 * time.Second
	hubRequestLimit = 5 * time.Second
)

func newHubLink(b *Bus, js jetstream.JetStream) *hubLink {
	return &hubLink{b: b, js: js, group: lifecycle.New(), ready: make(chan struct{})}
}

// first is the link's try at Open: it waits up to hubWaitAtOpen for the
// leaf connection and links. Only a conflict fails Open: an unreachable
// hub is the link's to retry (the bus publishes locally meanwhile).
func (h *hubLink) first(ctx context.Context) error {
	deadline := time.Now().Add(hubWaitAtOpen)
	for !h.b.srv.LeafConnected() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	h.sync(ctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conflict != nil {
		return h.conflict
	}
	if h.stream == nil {
		h.b.log.Warn("boxcar: the hub is not reachable yet: publishing into the local stream, subscribers wait for the hub",
			logHub, h.b.cfg.Leaf.URLs, logError, h.lastErr)
	}
	return nil
}

func (h *hubLink) start(context.Context) { h.group.Go(h.run) }

func (h *hubLink) stop(ctx context.Context) error { return h.group.Stop(ctx) }

func (h *hubLink) run(ctx context.Context) {
	for {
		wait := hubCheckEvery
		if !h.sync(ctx) {
			wait = hubRetryEvery
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// sync does one round of the link's work and reports whether the link is
// whole (connected, claimed, sourced).
func (h *hubLink) sync(ctx context.Context) bool {
	b := h.b
	h.mu.Lock()
	conflict := h.conflict
	h.mu.Unlock()
	if conflict != nil {
		return true // nothing to retry: an operator must act
	}
	if !b.srv.LeafConnected() {
		h.mu.Lock()
		if h.downSince.IsZero() {
			h.downSince = time.Now()
		}
		h.lastErr = "the leaf connection to the hub is down"
		if e := b.srv.LeafError(); e != "" {
			h.lastErr += ": " + e
		}
		h.mu.Unlock()
		return false
	}
	h.mu.Lock()
	h.downSince = time.Time{}
	h.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, hubRequestLimit)
	defer cancel()
	err := h.link(rctx)
	var src *jetstream.StreamSourceInfo
	if err == nil {
		src, err = h.readSource(rctx)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checkedAt = time.Now()
	if err == nil {
		h.lastErr, h.source = "", src
		return true
	}
	if errors.Is(err, ErrInstanceTaken) || errors.Is(err, bjs.ErrLayoutMismatch) {
		h.conflict = fmt.Errorf("boxcar: hub: %w", err)
		b.log.Error("boxcar: this binary cannot join the hub: its leaf connection is cut; the bus goes on publishing locally",
			logError, err)
		if cerr := b.srv.CutLeaf(); cerr != nil {
			b.log.Error("boxcar: could not cut the leaf connection", logError, cerr)
		}
	}
	h.lastErr = err.Error()
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
		h.lastErr += fmt.Sprintf(" (no JetStream answers in the hub's domain %q: is Config.Leaf.HubDomain right, and does the hub run JetStream?)", b.cfg.Leaf.HubDomain)
	}
	return false
}

// link claims the instance ID and ensures the aggregate sources this
// binary's stream.
func (h *hubLink) link(ctx context.Context) error {
	b := h.b
	lc := b.cfg.Leaf
	h.mu.Lock()
	claimed := h.claimed
	h.mu.Unlock()
	if !claimed {
		if err := claimInstance(ctx, h.js, lc.HubReplicas, lc.HubStream, b.cfg.InstanceID, b.dbID); err != nil {
			return err
		}
		h.mu.Lock()
		h.claimed = true
		h.mu.Unlock()
	}
	mine := &jetstream.StreamSource{Name: b.cfg.Stream, Domain: b.cfg.InstanceID}
	st, err := h.js.Stream(ctx, lc.HubStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = h.js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        lc.HubStream,
			Description: "Boxcar: the events of every binary, sourced from their streams",
			Sources:     []*jetstream.StreamSource{mine},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      b.cfg.Retention,
			Duplicates:  b.cfg.DuplicateWindow,
			Replicas:    lc.HubReplicas,
			AllowDirect: true,
			Metadata: map[string]string{bjs.MetaLayout: strconv.Itoa(bjs.LayoutVersion),
				bjs.MetaPartitions: strconv.Itoa(b.cfg.Partitions)},
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			st, err = h.js.Stream(ctx, lc.HubStream) // another binary made it meanwhile
		}
		if err == nil {
			b.log.Info("boxcar: created the hub's aggregate stream", logStream, lc.HubStream)
		}
	}
	if err != nil {
		return fmt.Errorf("hub stream %s: %w", lc.HubStream, err)
	}
	cfg := st.CachedInfo().Config
	if v, p, err := bjs.StreamLayout(cfg); err != nil || v != bjs.LayoutVersion || p != b.cfg.Partitions {
		return fmt.Errorf("%w: the hub's stream %s records layout %d with %d partitions (%v); this binary writes layout %d with Config.Partitions %d: use the hub's partition count",
			bjs.ErrLayoutMismatch, lc.HubStream, v, p, err, bjs.LayoutVersion, b.cfg.Partitions)
	}
	if !slices.ContainsFunc(cfg.Sources, h.isMine) {
		cfg.Sources = append(cfg.Sources, mine)
		if st, err = h.js.UpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("add this binary's stream to the hub's %s: %w", lc.HubStream, err)
		}
		b.log.Info("boxcar: the hub's aggregate stream now sources this binary's", logStream, lc.HubStream, logInstance, b.cfg.InstanceID)
	}
	h.mu.Lock()
	if h.stream == nil {
		h.stream = st
		close(h.ready)
	}
	h.mu.Unlock()
	return nil
}

// isMine tells this binary's source among the aggregate's.
func (h *hubLink) isMine(s *jetstream.StreamSource) bool {
	if s == nil || s.Name != h.b.cfg.Stream {
		return false
	}
	if s.Domain == h.b.cfg.InstanceID {
		return true
	}
	return s.External != nil && s.External.APIPrefix == "$JS."+h.b.cfg.InstanceID+".API"
}

// readSource reads this binary's source in the aggregate.
func (h *hubLink) readSource(ctx context.Context) (*jetstream.StreamSourceInfo, error) {
	st := h.aggregate()
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("hub stream info: %w", err)
	}
	for _, s := range info.Sources {
		if s.Name == h.b.cfg.Stream && s.External != nil && s.External.APIPrefix == "$JS."+h.b.cfg.InstanceID+".API" {
			return s, nil
		}
	}
	return nil, nil // added a moment ago: not reported yet
}

// aggregate is the hub's aggregate stream, nil until it was first reached.
func (h *hubLink) aggregate() jetstream.Stream {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stream
}

// wait waits until the aggregate is known, or ctx ends.
func (h *hubLink) wait(ctx context.Context) (jetstream.Stream, error) {
	select {
	case <-h.ready:
		return h.aggregate(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// HubStatus is a leaf binary's view of its hub (Stats.Hub).
type HubStatus struct {
	// Connected: the leaf connection to the hub is up.
	Connected bool `json:"connected"`
	// DownFor is how long it has been down (0 while up).
	DownFor time.Duration `json:"down_for_ns"`
	// Linked: the hub's aggregate stream (Stream) sources this binary's.
	Linked bool   `json:"linked"`
	Stream string `json:"stream"`
	// SourceLag is how many of this binary's events the aggregate has not
	// sourced yet, as the hub last said; SourceActive how long ago it last
	// heard from this binary's stream; SourceError its sourcing error.
	SourceLag    uint64        `json:"source_lag"`
	SourceActive time.Duration `json:"source_active_ns"`
	SourceError  string        `json:"source_error,omitempty"`
	// Error is what went wrong last (unreachable, refused, a wrong domain);
	// Conflict, set for good, means this binary cannot join the hub (its
	// instance ID is another database's, or its layout is not the hub's):
	// its leaf connection is cut until an operator fixes it and restarts
	// it.
	Error    string `json:"error,omitempty"`
	Conflict string `json:"conflict,omitempty"`
	// CheckedAt is when the hub last answered.
	CheckedAt time.Time `json:"checked_at"`
}

func (h *hubLink) status() HubStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := HubStatus{Connected: h.b.srv.LeafConnected(), Linked: h.stream != nil, Stream: h.b.cfg.Leaf.HubStream,
		Error: h.lastErr, CheckedAt: h.checkedAt}
	if !h.downSince.IsZero() {
		st.DownFor = time.Since(h.downSince)
	}
	if h.conflict != nil {
		st.Conflict = h.conflict.Error()
	}
	if s := h.source; s != nil {
		st.SourceLag, st.SourceActive = s.Lag, s.Active
		if s.Error != nil {
			st.SourceError = s.Error.Error()
		}
	}
	return st
}
