package boxcar

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/boxcar-bus/boxcar/internal/hub"
	bjs "github.com/boxcar-bus/boxcar/jetstream"
)

// startHub runs a real 3-node NATS cluster (routes on 127.0.0.1, JetStream
// domain "hub") for the test, stopped at its end.
func startHub(t *testing.T) *hub.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := hub.Start(ctx, hub.Config{Dir: t.TempDir(), Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Shutdown)
	return h
}

// leafURLs are the hub's leaf-node URLs, as Config.Leaf takes them.
func leafURLs(h *hub.Cluster) []string {
	var out []string
	for _, u := range h.LeafURLs() {
		out = append(out, u.String())
	}
	return out
}

// openLeaf opens a binary of instance id as a leaf of h, with a database
// and store of its own.
func openLeaf(t *testing.T, h *hub.Cluster, id string, edit func(*Config)) *testBundle {
	t.Helper()
	cfg := Config{InstanceID: id, Leaf: &LeafConfig{URLs: leafURLs(h), ReconnectInterval: 200 * time.Millisecond}, Logger: testLogger()}
	if edit != nil {
		edit(&cfg)
	}
	return setup(t, cfg)
}

// hubJS is a client of the hub, for the test's own checks.
func hubJS(t *testing.T, h *hub.Cluster) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(strings.Join(h.ClientURLs(), ","), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// checkAppliedFrom checks that subscriber, in db, applied every event the
// producers committed exactly once, each key's in commit order (every key
// is produced by one producer: its counter is in that producer's
// database). It returns the number applied.
func checkAppliedFrom(t *testing.T, db *sql.DB, subscriber string, producers ...*sql.DB) int {
	t.Helper()
	want := map[string]int{}
	for _, p := range producers {
		rows, err := p.Query(`SELECT key, n FROM counters`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var k string
			var n int
			if err := rows.Scan(&k, &n); err != nil {
				t.Fatal(err)
			}
			if _, dup := want[k]; dup {
				t.Fatalf("key %q is produced by two producers: the check needs one per key", k)
			}
			want[k] = n
		}
		rows.Close()
	}
	return checkAppliedUpTo(t, db, subscriber, want)
}

// publishKeys commits n counted events of type typ over keys prefix0..prefix4.
func publishKeys(t *testing.T, bus *Bus, typ, prefix string, n int) {
	t.Helper()
	for i := range n {
		if err := publishCounted(context.Background(), bus, typ, fmt.Sprintf("%s%d", prefix, i%5)); err != nil {
			t.Fatal(err)
		}
	}
}

// Topology 1: two producer binaries and a consumer binary, each a leaf of
// a real 3-node hub with its own JetStream domain. The hub's aggregate
// sources the producers' streams; the consumer's TxHandler applies every
// event once, in per-key order. No event of one leaf enters another's
// stream (the deny rules). While the hub is away the producers go on
// publishing into their own streams, and Stats and Health say the hub is
// down; when it is back the aggregate catches up and holds each event
// once.
func TestLeafTopologyAggregatesAtHub(t *testing.T) {
	h := startHub(t)
	billing := openLeaf(t, h, "billing", nil)
	auth := openLeaf(t, h, "auth", nil)
	email := openLeaf(t, h, "email", nil)
	ctx := context.Background()
	types := []string{"invoice.sent", "user.signed_up"}
	if _, err := email.bus.Subscribe(ctx, "mailer", recordingHandler("mailer"), SubscribeOptions{Types: types}); err != nil {
		t.Fatal(err)
	}
	publishKeys(t, billing.bus, types[0], "inv", 100)
	publishKeys(t, auth.bus, types[1], "user", 100)
	waitApplied(t, email.db, "mailer", 200)

	// The hub goes away: the producers publish into their own streams.
	h.StopAll()
	publishKeys(t, billing.bus, types[0], "inv", 50)
	publishKeys(t, auth.bus, types[1], "user", 50)
	for _, p := range []*testBundle{billing, auth} {
		waitRelayed(t, p.bus, maxOutboxSeq(t, p.db))
	}
	waitFor(t, "Stats and Health to show the hub down", 30*time.Second, func() (bool, string) {
		st, err := billing.bus.Stats(ctx)
		if err != nil || st.Hub == nil {
			return false, fmt.Sprint(err)
		}
		hh, err := billing.bus.Health(ctx)
		if err != nil {
			return false, err.Error()
		}
		hc := hubComponent(hh)
		return !st.Hub.Connected && st.Topology == "leaf" && hc != nil && hc.State != HealthOK,
			fmt.Sprintf("hub %+v; health %+v", *st.Hub, hc)
	})
	if err := h.RestartAll(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "mailer to apply 300 events after the hub came back", 2*time.Minute, func() (bool, string) {
		n := countApplied(t, email.db, "mailer")
		var state []string
		for _, p := range []*testBundle{billing, auth, email} {
			st, err := p.bus.Stats(ctx)
			if err != nil || st.Hub == nil {
				state = append(state, fmt.Sprint(err))
				continue
			}
			state = append(state, fmt.Sprintf("%s hub %+v", p.bus.cfg.InstanceID, *st.Hub))
			for _, ss := range st.Subscribers {
				state = append(state, fmt.Sprintf("%s sub %s pending %d unacked %d inflight %d gaps %d fetch restarts %d recreated %d waiting %q err %q",
					p.bus.cfg.InstanceID, ss.Name, ss.Pending, ss.Unacked, ss.InFlight, ss.DeliveryGaps, ss.FetchRestarts, ss.Recreated, ss.Waiting, ss.Err))
			}
		}
		return n >= 300, fmt.Sprintf("applied %d; %s", n, strings.Join(state, "; "))
	})
	if st, err := email.bus.Stats(ctx); err == nil && len(st.Subscribers) == 1 {
		t.Logf("mailer after the outage: %d delivery gaps, %d fetch restarts", st.Subscribers[0].DeliveryGaps, st.Subscribers[0].FetchRestarts)
	}
	if n := checkAppliedFrom(t, email.db, "mailer", billing.db, auth.db); n != 300 {
		t.Fatalf("applied %d events, want 300", n)
	}

	// Each leaf's stream holds its own events only, each once, in order.
	for _, p := range []*testBundle{billing, auth, email} {
		msgs := streamMessages(t, p.bus)
		for _, m := range msgs {
			if ps, err := p.bus.layout.Parse(m.Subject); err != nil || ps.Origin != p.bus.cfg.InstanceID {
				t.Fatalf("stream of %s holds %q (%v): another leaf's event leaked in", p.bus.cfg.InstanceID, m.Subject, err)
			}
		}
		if last := maxOutboxSeq(t, p.db); last > 0 {
			checkStreamIsOutbox(t, streamEvents(t, p.bus), 1, last)
		} else if len(msgs) != 0 {
			t.Fatalf("stream of %s holds %d messages, it published none", p.bus.cfg.InstanceID, len(msgs))
		}
	}
	// The aggregate holds each event once.
	checkAggregate(t, hubJS(t, h), DefaultStream+DefaultHubStreamSufix, 300)
	waitFor(t, "the source lag to be read as 0", time.Minute, func() (bool, string) {
		st, err := billing.bus.Stats(ctx)
		if err != nil || st.Hub == nil {
			return false, fmt.Sprint(err)
		}
		return st.Hub.Connected && st.Hub.Linked && st.Hub.SourceLag == 0 && !st.Hub.CheckedAt.IsZero(), fmt.Sprintf("%+v", *st.Hub)
	})
}

// hubComponent is the hub's component of h, nil if none.
func hubComponent(h Health) *ComponentHealth {
	for i := range h.Components {
		if h.Components[i].Component == "hub" {
			return &h.Components[i]
		}
	}
	return nil
}

// checkAggregate checks that the hub's aggregate holds want events, each
// once (by event ID), and that each origin's events are in its outbox
// order.
func checkAggregate(t *testing.T, js jetstream.JetStream, name string, want int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []bjs.StoredMsg
	if err := bjs.ReadStream(ctx, s, 1, 500, func(m []bjs.StoredMsg) error { msgs = append(msgs, m...); return nil }); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	last := map[string]int64{}
	l := bjs.Layout{Prefix: DefaultSubjectPrefix, Partitions: DefaultPartitions}
	for _, m := range msgs {
		id := m.Header.Get(jetstream.MsgIDHeader)
		if ids[id] {
			t.Fatalf("aggregate %s holds event %s twice", name, id)
		}
		ids[id] = true
		in, err := bjs.Decode(l, m.Subject, m.Header, m.Data)
		if err != nil {
			t.Fatalf("aggregate message %d: %v", m.Seq, err)
		}
		if in.Seq <= last[in.Origin] {
			t.Fatalf("aggregate: %s's outbox seq %d after %d", in.Origin, in.Seq, last[in.Origin])
		}
		last[in.Origin] = in.Seq
	}
	if len(msgs) != want {
		t.Fatalf("aggregate %s holds %d events, want %d", name, len(msgs), want)
	}
}

// The hub is unreachable when the binary starts: Open succeeds, events are
// published into the local stream, the subscriber waits (Stats says why)
// and Health shows the hub; once the hub comes up everything flows.
func TestLeafStartsWithHubAway(t *testing.T) {
	h := startHub(t)
	urls := leafURLs(h)
	h.StopAll()
	ctx := context.Background()
	start := time.Now()
	tb := setup(t, Config{InstanceID: "billing", Leaf: &LeafConfig{URLs: urls, ReconnectInterval: 200 * time.Millisecond}, Logger: testLogger()})
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("Open with the hub away took %v: it must not wait for the hub", d)
	}
	sub, err := tb.bus.Subscribe(ctx, "mailer", recordingHandler("mailer"), SubscribeOptions{})
	if err != nil {
		t.Fatalf("Subscribe with the hub away: %v", err)
	}
	publishKeys(t, tb.bus, "invoice.sent", "inv", 20)
	waitRelayed(t, tb.bus, maxOutboxSeq(t, tb.db))
	ss, err := sub.Stats(ctx)
	if err != nil || ss.Waiting == "" {
		t.Fatalf("subscriber stats with the hub away: %+v, %v; want Waiting set", ss, err)
	}
	hh, err := tb.bus.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if hc := hubComponent(hh); hc == nil || hc.State == HealthOK || hh.State == HealthOK {
		t.Fatalf("health with the hub away: %+v", hh)
	}
	if err := h.RestartAll(ctx); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, tb.db, "mailer", 20)
	if n := checkAppliedFrom(t, tb.db, "mailer", tb.db); n != 20 {
		t.Fatalf("applied %d, want 20", n)
	}
}

// A leaf told the wrong hub domain starts and publishes locally; the hub
// link reports that no JetStream answers in that domain, and the
// subscriber waits, visibly.
func TestLeafWrongHubDomain(t *testing.T) {
	h := startHub(t)
	tb := openLeaf(t, h, "billing", func(c *Config) { c.Leaf.HubDomain = "nowhere" })
	ctx := context.Background()
	sub, err := tb.bus.Subscribe(ctx, "mailer", recordingHandler("mailer"), SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	publishKeys(t, tb.bus, "invoice.sent", "inv", 5)
	waitRelayed(t, tb.bus, maxOutboxSeq(t, tb.db))
	waitFor(t, "the hub link to name the domain", 30*time.Second, func() (bool, string) {
		st, err := tb.bus.Stats(ctx)
		if err != nil || st.Hub == nil {
			return false, fmt.Sprint(err)
		}
		return st.Hub.Connected && !st.Hub.Linked && strings.Contains(st.Hub.Error, `"nowhere"`), fmt.Sprintf("%+v", *st.Hub)
	})
	if ss, _ := sub.Stats(ctx); ss.Waiting == "" {
		t.Fatalf("subscriber not waiting with a wrong hub domain: %+v", ss)
	}
	if hh, _ := tb.bus.Health(ctx); hh.State == HealthOK {
		t.Fatalf("health ok with a wrong hub domain: %+v", hh)
	}
}

// Bad input on a hub: a second database claiming a leaf's instance ID, and
// a leaf with another partition count than the hub's aggregate, are each
// refused with a clear error, and the first binary goes on. The refusal
// comes at Open when the leaf connection is up within hubWaitAtOpen; on a
// loaded machine it may come after (an unreachable hub does not fail
// Open): the bus then cuts its leaf connection and says why in
// Stats().Hub.Conflict.
func TestLeafConflictsAreRefused(t *testing.T) {
	h := startHub(t)
	first := openLeaf(t, h, "billing", nil)
	publishKeys(t, first.bus, "invoice.sent", "inv", 5)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	open := func(id string, partitions int) string {
		dir := t.TempDir()
		db := openDB(t, filepath.Join(dir, "app.db"))
		bus, err := Open(ctx, db, Config{Dir: filepath.Join(dir, "nats"), InstanceID: id, Partitions: partitions,
			Leaf: &LeafConfig{URLs: leafURLs(h)}, Logger: testLogger()})
		if err != nil {
			return err.Error()
		}
		defer bus.Close(ctx)
		var conflict string
		waitFor(t, "the hub conflict", time.Minute, func() (bool, string) {
			st, err := bus.Stats(ctx)
			if err == nil && st.Hub != nil {
				conflict = st.Hub.Conflict
			}
			return conflict != "", fmt.Sprint(err)
		})
		return conflict
	}
	if err := open("billing", 0); !strings.Contains(err, ErrInstanceTaken.Error()) || !strings.Contains(err, "nats kv del boxcar_instances") {
		t.Fatalf("a second database as leaf billing: %v; want ErrInstanceTaken with the command that frees the ID", err)
	}
	if err := open("auth", 32); !strings.Contains(err, bjs.ErrLayoutMismatch.Error()) || !strings.Contains(err, "Config.Partitions 32") {
		t.Fatalf("a leaf with 32 partitions on a hub of 64: %v; want ErrLayoutMismatch naming the counts", err)
	}
	publishKeys(t, first.bus, "invoice.sent", "inv", 5)
	checkAggregateEventually(t, hubJS(t, h), 10)
}

// checkAggregateEventually waits until the default aggregate holds want
// events, then checks it.
func checkAggregateEventually(t *testing.T, js jetstream.JetStream, want int) {
	t.Helper()
	name := DefaultStream + DefaultHubStreamSufix
	waitFor(t, fmt.Sprintf("the aggregate to hold %d events", want), time.Minute, func() (bool, string) {
		s, err := js.Stream(context.Background(), name)
		if err != nil {
			return false, err.Error()
		}
		return s.CachedInfo().State.Msgs >= uint64(want), fmt.Sprint(s.CachedInfo().State.Msgs)
	})
	checkAggregate(t, js, name, want)
}
