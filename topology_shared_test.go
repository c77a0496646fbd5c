package boxcar

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/boxcar-bus/boxcar/internal/hub"
	bjs "github.com/boxcar-bus/boxcar/jetstream"
)

// openInstance opens instance id on the cluster h (Config.NATSURL, R3),
// with a database of its own.
func openInstance(t *testing.T, h *hub.Cluster, id string, edit func(*Config)) *testBundle {
	t.Helper()
	cfg := Config{InstanceID: id, NATSURL: strings.Join(h.ClientURLs(), ","), Replicas: 3, Logger: testLogger(),
		NATSOptions: []nats.Option{nats.ReconnectWait(100 * time.Millisecond)}}
	if edit != nil {
		edit(&cfg)
	}
	return setup(t, cfg)
}

// checkSharedStream checks that the shared stream holds, for each
// instance, its outbox events first..last each once and in its outbox
// order, on its own subtree.
func checkSharedStream(t *testing.T, bus *Bus, instances ...*testBundle) {
	t.Helper()
	got := map[string][]int64{}
	for _, m := range streamMessages(t, bus) {
		in, err := bjs.Decode(bus.layout, m.Subject, m.Header, m.Data)
		if err != nil {
			t.Fatalf("shared stream message %d: %v", m.Sequence, err)
		}
		got[in.Origin] = append(got[in.Origin], in.Seq)
	}
	for _, i := range instances {
		id := i.bus.cfg.InstanceID
		last := maxOutboxSeq(t, i.db)
		seqs := got[id]
		if int64(len(seqs)) != last {
			t.Errorf("instance %s: the stream holds %d of its %d events", id, len(seqs), last)
		}
		for j, s := range seqs {
			if s != int64(j+1) {
				t.Fatalf("instance %s: stream position %d of its subtree holds outbox seq %d (duplicate, gap or reorder): %v", id, j, s, abbreviate(seqs))
			}
		}
	}
}

// Topology 2: two instances share one R3 stream on a real 3-node cluster
// (Config.NATSURL), each chained on its own subtree, publishing at once; a
// third instance's TxHandler applies everything. The stream leader is
// killed mid-run and restarted later. The stream holds each instance's
// events once, in its outbox order, and the subscriber applied each once,
// in per-key order.
func TestSharedClusterInstances(t *testing.T) {
	h := startHub(t)
	a := openInstance(t, h, "a", nil)
	b := openInstance(t, h, "b", nil)
	clog := &logBuffer{}
	c := openInstance(t, h, "c", func(cfg *Config) { cfg.Logger = clog.logger() })
	defer func() {
		if t.Failed() {
			for _, l := range strings.Split(clog.String(), "\n") {
				if strings.Contains(l, "WARN") || strings.Contains(l, "ERROR") {
					t.Log(l)
				}
			}
		}
	}()
	ctx := context.Background()
	subscribeOnCluster(t, c.bus, "mailer", recordingHandler("mailer"), SubscribeOptions{Types: []string{"order.placed"}})
	run := func(n int) {
		var wg sync.WaitGroup
		for _, p := range []*testBundle{a, b} {
			wg.Go(func() {
				for i := range n {
					err := publishCounted(ctx, p.bus, "order.placed", fmt.Sprintf("%s%d", p.bus.cfg.InstanceID, i%7))
					if err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	run(100)
	leader := h.StreamLeader(DefaultStream)
	if leader < 0 {
		t.Fatal("no leader for the shared stream")
	}
	// Kill the leader while both instances publish.
	done := make(chan struct{})
	go func() { defer close(done); run(150) }()
	waitFor(t, "instance a to be mid-run", time.Minute, func() (bool, string) {
		n := maxOutboxSeq(t, a.db)
		return n >= 130, fmt.Sprint(n)
	})
	h.Stop(leader)
	<-done
	if err := h.Restart(leader); err != nil {
		t.Fatal(err)
	}
	run(50)
	for _, p := range []*testBundle{a, b} {
		waitRelayed(t, p.bus, maxOutboxSeq(t, p.db))
	}
	waitFor(t, "mailer to apply 600 events", 90*time.Second, func() (bool, string) {
		n := countApplied(t, c.db, "mailer")
		info, err := c.bus.consumerInfo(ctx, "mailer")
		if err != nil {
			return n >= 600, fmt.Sprintf("applied %d; consumer: %v", n, err)
		}
		return n >= 600, fmt.Sprintf("applied %d; consumer delivered %+v ack floor %+v pending %d ack pending %d waiting %d leader %+v",
			n, info.Delivered, info.AckFloor, info.NumPending, info.NumAckPending, info.NumWaiting, info.Cluster)
	})
	if n := checkAppliedFrom(t, c.db, "mailer", a.db, b.db); n != 600 {
		t.Fatalf("applied %d, want 600", n)
	}
	checkSharedStream(t, c.bus, a, b)
	if cs, err := c.bus.Stats(ctx); err == nil && len(cs.Subscribers) == 1 {
		t.Logf("subscriber: %d delivery gaps, %d redelivered, %d ignored", cs.Subscribers[0].DeliveryGaps, cs.Subscribers[0].Redelivered, cs.Subscribers[0].Ignored)
	}
	st, err := a.bus.Stats(ctx)
	if err != nil || st.Topology != "shared" || st.InstanceID != "a" {
		t.Fatalf("stats of instance a: topology %q, instance %q, %v", st.Topology, st.InstanceID, err)
	}
	// A restarted instance goes on its subtree's chain.
	a.reopen()
	run(10)
	for _, p := range []*testBundle{a, b} {
		waitRelayed(t, p.bus, maxOutboxSeq(t, p.db))
	}
	checkSharedStream(t, c.bus, a, b)
}

// Bad input on a shared cluster: a second database with an instance ID in
// use is refused at Open (ErrInstanceTaken, with the command that frees
// it); an instance with another partition count than the stream's is
// refused (ErrLayoutMismatch); an unreachable cluster fails Open at once
// with the error, not a hang.
func TestSharedClusterBadInput(t *testing.T) {
	h := startHub(t)
	first := openInstance(t, h, "a", nil)
	publishKeys(t, first.bus, "order.placed", "k", 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	open := func(cfg Config) error {
		dir := t.TempDir()
		db := openDB(t, dir+"/app.db")
		bus, err := Open(ctx, db, cfg)
		if err == nil {
			bus.Close(ctx)
		}
		return err
	}
	url := strings.Join(h.ClientURLs(), ",")
	err := open(Config{InstanceID: "a", NATSURL: url, Replicas: 3, Logger: testLogger()})
	if !errors.Is(err, ErrInstanceTaken) || !strings.Contains(err.Error(), "nats kv del boxcar_instances BOXCAR.a") {
		t.Fatalf("a second database as instance a: %v; want ErrInstanceTaken naming the key", err)
	}
	err = open(Config{InstanceID: "b", NATSURL: url, Replicas: 3, Partitions: 16, Logger: testLogger()})
	if !errors.Is(err, bjs.ErrLayoutMismatch) || !strings.Contains(err.Error(), "set Config.Partitions to 64") {
		t.Fatalf("an instance with 16 partitions on a stream of 64: %v; want ErrLayoutMismatch", err)
	}
	start := time.Now()
	err = open(Config{InstanceID: "c", NATSURL: "nats://127.0.0.1:1", Logger: testLogger()})
	if err == nil || time.Since(start) > 20*time.Second {
		t.Fatalf("Open on an unreachable cluster: %v after %v; want an error, at once", err, time.Since(start))
	}
	publishKeys(t, first.bus, "order.placed", "k", 3)
	waitRelayed(t, first.bus, maxOutboxSeq(t, first.db))
	checkSharedStream(t, first.bus, first)
}

// An embedded server joining a cluster by routes needs a client listener:
// Config.Cluster without Config.Listen is refused at once with the reason
// (nats-server#5174: it would never become ready, and its shutdown hangs).
func TestClusterWithoutListenIsRefused(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir+"/app.db")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Open(ctx, db, Config{Dir: dir + "/nats", InstanceID: "n1",
		Cluster: &ClusterConfig{Name: "c", Listen: "127.0.0.1:0", Routes: []string{"nats-route://127.0.0.1:1"}}})
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "nats-server#5174") {
		t.Fatalf("Config.Cluster without Listen: %v; want ErrInvalidConfig citing nats-server#5174", err)
	}
}

// subscribeOnCluster subscribes, retrying while a cluster that has just
// started is too slow to create the consumer's replicated group (seen on a
// loaded 2-core machine: "context deadline exceeded" once in a few runs).
func subscribeOnCluster(t *testing.T, bus *Bus, name string, h Handler, opts SubscribeOptions) *Subscription {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		sub, err := bus.Subscribe(context.Background(), name, h, opts)
		if err == nil {
			return sub
		}
		if !errors.Is(err, context.DeadlineExceeded) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		t.Logf("subscribe %s: %v; again", name, err)
	}
}

// Config.Cluster with a listener is not supported yet, and says so at once
// (rather than an Open that waits for a cluster that never forms).
func TestClusterWithListenIsNotSupportedYet(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir+"/app.db")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Open(ctx, db, Config{Dir: dir + "/nats", InstanceID: "n1", Listen: "127.0.0.1:0", ListenAdminPassword: NewSecret(),
		Cluster: &ClusterConfig{Name: "c", Listen: "127.0.0.1:0", Routes: []string{"nats-route://127.0.0.1:1"}}})
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "Config.NATSURL") {
		t.Fatalf("Config.Cluster with Listen: %v; want ErrInvalidConfig pointing to Config.NATSURL", err)
	}
}
