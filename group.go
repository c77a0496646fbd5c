package boxcar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	bjs "github.com/boxcar-bus/boxcar/jetstream"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/boxcar-bus/boxcar/internal/lifecycle"
)

// Groups: several instances of one subscriber sharing its work, keeping
// per-key order (SubscribeOptions.Group).
//
// The subject carries the key's partition at a fixed position (see the
// layout in jetstream/subject.go), so work is shared by partition: a group
// of Members has Members slots, slot i owns the partitions p with
// p mod Members == i, and each slot is one durable consumer (name_slot<i>)
// filtered on its partitions. An instance runs the slots it holds, each as
// an ordinary subscriber on its slot's consumer (key-ordered dispatcher,
// dedupe rows under the group's name, dead letters in the instance's
// dead-letter stream). The modelled design is orbit.go's pcgroups (static
// consumer groups: one consumer per member, filtered by partition).
//
// Who holds a slot is decided in the KV bucket boxcar_groups, in the domain
// of the stream the group consumes (the hub's, for leaves):
//
//   - <stream>.<group>.config: Members, Partitions and the handler kind,
//     written by the first instance; an instance that says otherwise is
//     refused (ErrGroup), never silently split another way.
//   - TxHandler groups, sticky slots: <stream>.<group>.claim.<i> names the
//     database that holds slot i, for good. A TxHandler's writes and dedupe
//     rows live in its instance's SQLite database, so a slot moving to
//     another database would move where its state is written, and that
//     database's dedupe table would not know what the first one handled.
//     So a slot never moves: when its instance is down, its partitions wait
//     for it to come back (Health shows the slot stopped), and every event
//     is applied exactly once, in its database.
//   - HandlerFunc groups, leased slots: <stream>.<group>.slot.<i> is a lease
//     its holder renews every LeaseTTL/4. An instance takes a free slot,
//     or one whose lease it has seen unchanged for LeaseTTL (its holder is
//     dead or cut off), up to its fair share of the live members (the
//     members key counts their heartbeats), and gives back a slot when it
//     holds more than its share. A holder that could not renew for
//     LeaseTTL/2 stops its slot at once: it has stopped before anyone may
//     take the slot over (both measure with their own monotonic clocks, so
//     clock offsets between machines do not matter, only their rates).
//
// Per-key order across a handoff: the taker's consumer still holds, as
// delivered and unacked, what the previous holder fetched and had not
// acked; starting on it, the taker resets it to its ack floor (as every
// subscriber does at start), so those events come again, in order, before
// anything newer of their keys. The previous holder may have handled some
// of them before dying: a HandlerFunc group is at-least-once across a
// handoff (Message.ID is the idempotency key), as it is across a crash.
// Pinning is not exclusivity (ADR-42): a holder cut off from the KV for
// more than LeaseTTL/2 stops its slot, but a handler already running when
// it stops can still finish after the taker began.

// groupsBucket is the KV bucket of groups.
const groupsBucket = "boxcar_groups"

// Defaults of GroupOptions.
const DefaultLeaseTTL = 10 * time.Second

// GroupOptions shares a subscriber's work among instances
// (SubscribeOptions.Group).
type GroupOptions struct {
	// Members is how many slots the group's partitions are split into:
	// slot i owns partitions p with p mod Members == i (Config.Partitions
	// of them in all). Every instance of the group must say the same.
	// Required: 1 to Config.Partitions.
	//
	// With a TxHandler, each instance claims one slot for its database,
	// for good (sticky): run Members instances, each with its own
	// database; a slot whose instance is down waits for it. With a
	// HandlerFunc, instances take slots by lease and share them out; any
	// number of instances may run, and a dead one's slots move to the
	// others within about LeaseTTL.
	Members int
	// LeaseTTL (HandlerFunc groups): how long a slot whose holder stopped
	// renewing waits before another instance takes it over. Default 10s;
	// at least 1s.
	LeaseTTL time.Duration
}

// groupConfig is the group's shape, the same for every instance.
type groupConfig struct {
	Members    int    `json:"members"`
	Partitions int    `json:"partitions"`
	Kind       string `json:"kind"`
}

// slotClaim is a TxHandler slot's claim, or a HandlerFunc slot's lease.
type slotClaim struct {
	Database string `json:"database"`
	Instance string `json:"instance"`
	Run      string `json:"run,omitempty"` // leases: the holding process
	Beat     uint64 `json:"beat,omitempty"`
}

// group is this bus's member of a group.
type group struct {
	b      *Bus
	name   string
	h      Handler
	opts   SubscribeOptions
	sticky bool
	kv     jetstream.KeyValue
	prefix string // of the group's keys
	run    string // this process's ID in leases
	sup    *lifecycle.Group

	mu      sync.Mutex
	held    map[int]*heldSlot
	seen    map[string]seenRev // leases and the members key: when their revision last changed
	live    int                // members with a fresh heartbeat, as last counted
	lastErr string
	beat    uint64
}

type heldSlot struct {
	sub     *Subscription
	rev     uint64
	renewed time.Time // when the last successful renewal was sent
}

type seenRev struct {
	rev uint64
	at  time.Time
}

// groupSlot is what a slot's subscription knows of its slot.
type groupSlot struct {
	g   *group
	idx int
}

// slotConsumer is the consumer (and subscriber row) of a group's slot.
func slotConsumer(group string, i int) string { return group + "_slot" + strconv.Itoa(i) }

// isSlotName reports whether name has the form of a slot's consumer.
func isSlotName(name string) bool {
	i := strings.LastIndex(name, "_slot")
	if i < 0 || i+5 == len(name) {
		return false
	}
	_, err := strconv.Atoi(name[i+5:])
	return err == nil
}

// partitions are the partitions of the slot.
func (gs *groupSlot) partitions() []int {
	var out []int
	for p := gs.idx; p < gs.g.b.cfg.Partitions; p += gs.g.opts.Group.Members {
		out = append(out, p)
	}
	return out
}

func (gs *groupSlot) filters() []string { return gs.filtersOf(gs.g.opts.Types) }

// filtersOf are the slot's filters for types (every type when empty).
func (gs *groupSlot) filtersOf(types []string) []string {
	var out []string
	for _, p := range gs.partitions() {
		if len(types) == 0 {
			out = append(out, gs.g.b.layout.PartitionFilter(p, ""))
		}
		for _, t := range types {
			out = append(out, gs.g.b.layout.PartitionFilter(p, t))
		}
	}
	return out
}

// maxGroupFilters bounds a slot consumer's filter subjects.
const maxGroupFilters = 1024

// validateGroup checks opts.Group against the bus's configuration.
func (b *Bus) validateGroup(name string, h Handler, opts SubscribeOptions) error {
	g := opts.Group
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
	}
	if g.Members < 1 || g.Members > b.cfg.Partitions {
		return bad("SubscribeOptions.Group.Members %d: use 1 to Config.Partitions (%d)", g.Members, b.cfg.Partitions)
	}
	if g.LeaseTTL != 0 && g.LeaseTTL < time.Second {
		return bad("SubscribeOptions.Group.LeaseTTL %v: use at least 1s (0 for the default, %v)", g.LeaseTTL, DefaultLeaseTTL)
	}
	if h.plain != nil && opts.ParkKeys {
		return bad("SubscribeOptions.ParkKeys with a HandlerFunc group: a parked key is kept in its instance's database, and a leased slot moves to other instances; use ParkKeys with a TxHandler group (sticky slots) or without a group")
	}
	perSlot := (b.cfg.Partitions + g.Members - 1) / g.Members
	if n := perSlot * max(len(opts.Types), 1); n > maxGroupFilters {
		return bad("SubscribeOptions.Group: each slot would filter on %d subjects (%d partitions × %d types), more than %d: raise Members, lower Config.Partitions, or subscribe to fewer types", n, perSlot, len(opts.Types), maxGroupFilters)
	}
	return nil
}

// subscribeGroup starts this bus's member of the group name.
func (b *Bus) subscribeGroup(ctx context.Context, name string, h Handler, opts SubscribeOptions) (*Subscription, error) {
	if opts.Group.LeaseTTL == 0 {
		opts.Group.LeaseTTL = DefaultLeaseTTL
	}
	g := &group{b: b, name: name, h: h, opts: opts, sticky: h.tx != nil, run: b.ids.next(time.Now()),
		sup: lifecycle.New(), held: map[int]*heldSlot{}, seen: map[string]seenRev{}}
	pub := &Subscription{b: b, name: name, consumer: name, h: h, opts: opts, group: g, sup: lifecycle.New()}
	if err := g.join(ctx); err != nil {
		return nil, err
	}
	g.sup.Go(g.coordinate)
	return pub, nil
}

// join checks the group's shape and, for a sticky group, claims and starts
// this database's slot.
func (g *group) join(ctx context.Context) error {
	b := g.b
	replicas := b.cfg.Replicas
	if b.cfg.Leaf != nil {
		replicas = b.cfg.Leaf.HubReplicas
		if _, err := b.hub.wait(ctx); err != nil {
			return fmt.Errorf("wait for the hub: %w", err)
		}
	}
	var kv jetstream.KeyValue
	err := bjs.RetryTransient(ctx, func(ctx context.Context) (err error) {
		kv, err = ensureBucket(ctx, b.subJS, groupsBucket, "Boxcar: subscriber groups, their slots and leases", replicas)
		return err
	})
	if err != nil {
		return err
	}
	g.kv, g.prefix = kv, b.subStreamName()+"."+g.name+"."
	kind := "plain"
	if g.sticky {
		kind = "tx"
	}
	want := groupConfig{Members: g.opts.Group.Members, Partitions: b.cfg.Partitions, Kind: kind}
	if err := bjs.RetryTransient(ctx, func(ctx context.Context) error { return g.checkConfig(ctx, want) }); err != nil {
		return err
	}
	if g.sticky {
		var slot int
		var rev uint64
		err := bjs.RetryTransient(ctx, func(ctx context.Context) (err error) { slot, rev, err = g.claimSticky(ctx); return err })
		if err != nil {
			return err
		}
		return g.startSlot(ctx, slot, rev)
	}
	g.round(ctx)
	return nil
}

func (g *group) checkConfig(ctx context.Context, want groupConfig) error {
	key := g.prefix + "config"
	v, _ := json.Marshal(want)
	for range 3 {
		e, err := g.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if _, err := g.kv.Create(ctx, key, v); errors.Is(err, jetstream.ErrKeyExists) {
				continue
			} else if err != nil {
				return fmt.Errorf("group %s: %w", g.name, err)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("group %s: %w", g.name, err)
		}
		var have groupConfig
		if err := json.Unmarshal(e.Value(), &have); err != nil {
			return fmt.Errorf("%w: group %s: its configuration in %s (%s) is unreadable: %v", ErrGroup, g.name, groupsBucket, key, err)
		}
		if have != want {
			return fmt.Errorf("%w: group %s has Members %d, %d partitions and a %s handler, and this instance has Members %d, Config.Partitions %d and a %s handler: every instance of a group must agree (to change a group's shape, stop all its instances and delete its keys: nats kv del %s %s…)",
				ErrGroup, g.name, have.Members, have.Partitions, have.Kind, want.Members, want.Partitions, want.Kind, groupsBucket, g.prefix)
		}
		return nil
	}
	return fmt.Errorf("group %s: its configuration keeps changing", g.name)
}

// claimSticky claims a slot of a TxHandler group for this database (the
// one it holds, else the lowest free one) and returns it with its claim's
// revision. It is safe to call again: it finds its own claim.
func (g *group) claimSticky(ctx context.Context) (slot int, rev uint64, _ error) {
	b := g.b
	free := -1
	for i := range g.opts.Group.Members {
		e, err := g.kv.Get(ctx, g.prefix+"claim."+strconv.Itoa(i))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if free < 0 {
				free = i
			}
			continue
		}
		if err != nil {
			return 0, 0, fmt.Errorf("group %s: %w", g.name, err)
		}
		var c slotClaim
		if json.Unmarshal(e.Value(), &c) == nil && c.Database == b.dbID {
			return i, e.Revision(), nil
		}
	}
	for i := free; i >= 0 && i < g.opts.Group.Members; i++ {
		v, _ := json.Marshal(slotClaim{Database: b.dbID, Instance: b.cfg.InstanceID})
		rev, err := g.kv.Create(ctx, g.prefix+"claim."+strconv.Itoa(i), v)
		if errors.Is(err, jetstream.ErrKeyExists) {
			continue // claimed meanwhile
		}
		if err != nil {
			return 0, 0, fmt.Errorf("group %s: claim slot %d: %w", g.name, i, err)
		}
		b.log.Info("boxcar: group slot claimed for this database", logGroup, g.name, logSlot, i)
		return i, rev, nil
	}
	return 0, 0, fmt.Errorf("%w: every slot of group %s (Members %d) is claimed by another database: a TxHandler group runs one instance per slot, each with its own database; if a database is gone for good, free its slot with nats kv del %s %sclaim.<i> (the writes and dedupe rows of its handler stay in that database)",
		ErrGroup, g.name, g.opts.Group.Members, groupsBucket, g.prefix)
}

// startSlot runs slot i here.
func (g *group) startSlot(ctx context.Context, i int, rev uint64) error {
	b := g.b
	s := newSubscription(b, g.name, g.h, g.opts)
	s.consumer, s.slot = slotConsumer(g.name, i), &groupSlot{g: g, idx: i}
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		return ErrClosed
	}
	b.slots[s.consumer] = s
	b.mu.Unlock()
	if err := s.startOrWait(ctx); err != nil {
		b.mu.Lock()
		delete(b.slots, s.consumer)
		b.mu.Unlock()
		s.stopAll(ctx)
		return fmt.Errorf("group %s slot %d: %w", g.name, i, err)
	}
	g.mu.Lock()
	g.held[i] = &heldSlot{sub: s, rev: rev, renewed: time.Now()}
	g.mu.Unlock()
	return nil
}

// stopSlot stops slot i here; within bound, then its handlers are
// canceled.
func (g *group) stopSlot(i int, bound time.Duration) {
	g.mu.Lock()
	hs := g.held[i]
	delete(g.held, i)
	g.mu.Unlock()
	if hs == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	hs.sub.Close(ctx)
	g.b.mu.Lock()
	delete(g.b.slots, hs.sub.consumer)
	g.b.mu.Unlock()
}

// coordinate runs the leases of a HandlerFunc group (a TxHandler group's
// slots never move: nothing to do).
func (g *group) coordinate(ctx context.Context) {
	if g.sticky {
		return
	}
	every := g.opts.Group.LeaseTTL / 4
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		g.round(ctx)
	}
}

// round is one turn of a HandlerFunc group's coordination: heartbeat,
// renew the leases held, fence what could not be renewed, take or give back
// slots toward the fair share.
func (g *group) round(ctx context.Context) {
	ttl := g.opts.Group.LeaseTTL
	rctx, cancel := context.WithTimeout(ctx, ttl/4)
	defer cancel()
	var errs []string
	if err := g.heartbeat(rctx); err != nil {
		errs = append(errs, "heartbeat: "+err.Error())
	}
	// Renew, or fence.
	g.mu.Lock()
	held := make(map[int]*heldSlot, len(g.held))
	for i, hs := range g.held {
		held[i] = hs
	}
	g.mu.Unlock()
	for i, hs := range held {
		sent := time.Now()
		v, _ := json.Marshal(slotClaim{Database: g.b.dbID, Instance: g.b.cfg.InstanceID, Run: g.run, Beat: uint64(sent.UnixNano())})
		rev, err := g.kv.Update(rctx, g.slotKey(i), v, hs.rev)
		switch {
		case err == nil:
			g.mu.Lock()
			hs.rev, hs.renewed = rev, sent
			g.mu.Unlock()
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound):
			g.b.log.Error("boxcar: group slot lease lost (taken over while this instance could not renew it): stopping the slot",
				logGroup, g.name, logSlot, i)
			g.stopSlot(i, ttl/4)
		default:
			errs = append(errs, fmt.Sprintf("renew slot %d: %v", i, err))
			if time.Since(hs.renewed) >= ttl/2 {
				g.b.log.Error("boxcar: group slot lease not renewed for half its TTL: stopping the slot before another instance may take it",
					logGroup, g.name, logSlot, i, logError, err)
				g.stopSlot(i, ttl/4)
			}
		}
	}
	if ctx.Err() != nil {
		return
	}
	// Take or give back.
	g.mu.Lock()
	live, n := max(g.live, 1), len(g.held)
	g.mu.Unlock()
	fair := (g.opts.Group.Members + live - 1) / live
	for i := 0; i < g.opts.Group.Members && n < fair; i++ {
		g.mu.Lock()
		_, mine := g.held[i]
		g.mu.Unlock()
		if mine {
			continue
		}
		ok, err := g.tryTake(rctx, i)
		if err != nil {
			errs = append(errs, fmt.Sprintf("take slot %d: %v", i, err))
		}
		if ok {
			n++
		}
	}
	if n > fair {
		g.mu.Lock()
		idx := slices.Sorted(func(yield func(int) bool) {
			for i := range g.held {
				if !yield(i) {
					return
				}
			}
		})
		g.mu.Unlock()
		for _, i := range idx[fair:] {
			g.release(i)
		}
	}
	g.mu.Lock()
	g.lastErr = strings.Join(errs, "; ")
	g.mu.Unlock()
}

func (g *group) slotKey(i int) string { return g.prefix + "slot." + strconv.Itoa(i) }

// tryTake takes slot i if it is free or its lease is stale, and starts it.
func (g *group) tryTake(ctx context.Context, i int) (bool, error) {
	key := g.slotKey(i)
	v, _ := json.Marshal(slotClaim{Database: g.b.dbID, Instance: g.b.cfg.InstanceID, Run: g.run, Beat: uint64(time.Now().UnixNano())})
	e, err := g.kv.Get(ctx, key)
	var rev uint64
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev, err = g.kv.Create(ctx, key, v)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return false, nil
		}
	case err != nil:
		return false, err
	default:
		if !g.stale(key, e.Revision()) {
			return false, nil
		}
		rev, err = g.kv.Update(ctx, key, v, e.Revision())
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return false, nil
		}
		if err == nil {
			var prev slotClaim
			json.Unmarshal(e.Value(), &prev)
			g.b.log.Warn("boxcar: group slot taken over from an instance that stopped renewing it",
				logGroup, g.name, logSlot, i, logInstance, prev.Instance)
		}
	}
	if err != nil {
		return false, err
	}
	if err := g.startSlot(ctx, i, rev); err != nil {
		// Give it back at once rather than hold it unserved.
		g.kv.Delete(context.WithoutCancel(ctx), key, jetstream.LastRevision(rev))
		return false, err
	}
	return true, nil
}

// stale reports whether key's revision has stayed rev for a LeaseTTL, as
// this process has watched it.
func (g *group) stale(key string, rev uint64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	s, ok := g.seen[key]
	if !ok || s.rev != rev {
		g.seen[key] = seenRev{rev: rev, at: time.Now()}
		return false
	}
	return time.Since(s.at) >= g.opts.Group.LeaseTTL
}

// release gives slot i back: stop it, then delete the lease.
func (g *group) release(i int) {
	g.mu.Lock()
	hs := g.held[i]
	g.mu.Unlock()
	if hs == nil {
		return
	}
	g.stopSlot(i, g.opts.Group.LeaseTTL/4)
	ctx, cancel := context.WithTimeout(context.Background(), g.opts.Group.LeaseTTL/4)
	defer cancel()
	g.mu.Lock()
	rev := hs.rev
	g.mu.Unlock()
	if err := g.kv.Delete(ctx, g.slotKey(i), jetstream.LastRevision(rev)); err != nil {
		g.b.log.Warn("boxcar: could not give a group slot back (it frees itself after the lease TTL)", logGroup, g.name, logSlot, i, logError, err)
	}
}

// heartbeat counts this instance in the members key and counts the live
// members: those whose beat changed within LeaseTTL. Members silent for
// three TTLs are dropped from the key.
func (g *group) heartbeat(ctx context.Context) error {
	key := g.prefix + "members"
	me := g.b.cfg.InstanceID + "/" + g.run
	for range 3 {
		members := map[string]uint64{}
		var rev uint64
		e, err := g.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			rev = e.Revision()
			json.Unmarshal(e.Value(), &members)
		}
		g.mu.Lock()
		g.beat++
		members[me] = g.beat
		live := 0
		for m, beat := range members {
			k := "member/" + m
			s, ok := g.seen[k]
			if !ok || s.rev != beat {
				s = seenRev{rev: beat, at: time.Now()}
				g.seen[k] = s
			}
			switch age := time.Since(s.at); {
			case m == me || age < g.opts.Group.LeaseTTL:
				live++
			case age > 3*g.opts.Group.LeaseTTL:
				delete(members, m)
			}
		}
		g.mu.Unlock()
		v, _ := json.Marshal(members)
		if rev == 0 {
			_, err = g.kv.Create(ctx, key, v)
		} else {
			_, err = g.kv.Update(ctx, key, v, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return err
		}
		g.mu.Lock()
		g.live = live
		g.mu.Unlock()
		return nil
	}
	return errors.New("the members key keeps changing")
}

// close stops the slots held here and, for a HandlerFunc group, gives
// their leases back and leaves the members.
func (g *group) close(ctx context.Context) error {
	err := g.sup.Stop(ctx)
	g.mu.Lock()
	var idx []int
	for i := range g.held {
		idx = append(idx, i)
	}
	g.mu.Unlock()
	var subs []*Subscription
	g.mu.Lock()
	for _, i := range idx {
		subs = append(subs, g.held[i].sub)
	}
	g.mu.Unlock()
	errs := closeAll(ctx, subs)
	if err != nil {
		errs = append(errs, fmt.Errorf("boxcar: group %s: coordinator: %w", g.name, err))
	}
	g.b.mu.Lock()
	for _, s := range subs {
		delete(g.b.slots, s.consumer)
	}
	g.b.mu.Unlock()
	if !g.sticky && g.kv != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		g.mu.Lock()
		held := g.held
		g.held = map[int]*heldSlot{}
		g.mu.Unlock()
		for i, hs := range held {
			g.kv.Delete(dctx, g.slotKey(i), jetstream.LastRevision(hs.rev))
		}
		g.leave(dctx)
	}
	return errors.Join(errs...)
}

// leave takes this instance out of the members key.
func (g *group) leave(ctx context.Context) {
	key := g.prefix + "members"
	me := g.b.cfg.InstanceID + "/" + g.run
	for range 3 {
		e, err := g.kv.Get(ctx, key)
		if err != nil {
			return
		}
		members := map[string]uint64{}
		json.Unmarshal(e.Value(), &members)
		delete(members, me)
		v, _ := json.Marshal(members)
		if _, err := g.kv.Update(ctx, key, v, e.Revision()); !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return
		}
	}
}

// slotSubs are the subscriptions of the slots held here, by slot.
func (g *group) slotSubs() map[int]*Subscription {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[int]*Subscription, len(g.held))
	for i, hs := range g.held {
		out[i] = hs.sub
	}
	return out
}

// GroupStatus is this instance's view of a group (Stats.Groups).
type GroupStatus struct {
	Name    string `json:"name"`
	Members int    `json:"members"`
	// Sticky: a TxHandler group, whose slots never move.
	Sticky bool `json:"sticky"`
	// Held are the slots this instance runs; LiveMembers the instances
	// whose heartbeat is fresh (HandlerFunc groups).
	Held        []int  `json:"held"`
	LiveMembers int    `json:"live_members,omitempty"`
	Error       string `json:"error,omitempty"`
}

func (g *group) status() GroupStatus {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := GroupStatus{Name: g.name, Members: g.opts.Group.Members, Sticky: g.sticky, LiveMembers: g.live, Error: g.lastErr}
	for i := range g.held {
		st.Held = append(st.Held, i)
	}
	slices.Sort(st.Held)
	return st
}
