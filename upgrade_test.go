package boxcar

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	bjs "github.com/boxcar-bus/boxcar/jetstream"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// legacyStreamConfig is the event stream's configuration as Boxcar wrote
// it before the subject layout was recorded (layout 1, before scale-out:
// jetstream/provision.go at 29ac946): subjects prefix.>, no metadata.
func legacyStreamConfig(name, prefix string, firstSeq uint64) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name: name, Description: "Boxcar events, relayed from the SQLite outbox in commit order",
		Subjects: []string{prefix + ".>"}, Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy,
		Discard: jetstream.DiscardOld, MaxAge: DefaultRetention, Duplicates: DefaultDuplicateWindow,
		Replicas: 1, AllowDirect: true, FirstSeq: firstSeq,
	}
}

// downgradeStream rewrites the event stream into layout 1 as a Boxcar of before scale-out
// would have left it: same stream seqs, subjects prefix.type.key, consumers
// filtering prefix.type.* at their ack floors (the upgrade run backwards,
// with its own pieces), and returns the old and new creation times, for the subscriber rows.
func downgradeStream(t *testing.T, js jetstream.JetStream, stream, prefix string) (oldCreated, newCreated int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info := s.CachedInfo()
	oldCreated = info.Created.UnixNano()
	var msgs []bjs.StoredMsg
	if err := bjs.ReadStream(ctx, s, 1, 100, func(m []bjs.StoredMsg) error { msgs = append(msgs, m...); return nil }); err != nil {
		t.Fatal(err)
	}
	consumers, err := bjs.ConsumerStates(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	l := bjs.Layout{Prefix: prefix, Partitions: DefaultPartitions}
	if err := js.DeleteStream(ctx, stream); err != nil {
		t.Fatal(err)
	}
	ns, err := js.CreateStream(ctx, legacyStreamConfig(stream, prefix, info.State.FirstSeq))
	if err != nil {
		t.Fatal(err)
	}
	legacy := func(m bjs.StoredMsg) *nats.Msg {
		out := nats.NewMsg(m.Subject)
		for k, vs := range m.Header {
			if lk := strings.ToLower(k); !strings.HasPrefix(lk, "nats-expected") && !strings.HasPrefix(lk, "nats-batch") {
				out.Header[k] = vs
			}
		}
		p, err := l.Parse(m.Subject)
		if err != nil {
			t.Fatalf("stream message %d: %v", m.Seq, err)
		}
		out.Subject, out.Data = bjs.LegacySubject(prefix, p.Type, p.Key), m.Data
		return out
	}
	if err := bjs.Republish(ctx, js, ns, l, msgs, legacy); err != nil {
		t.Fatal(err)
	}
	if _, err := bjs.DeleteFillers(ctx, ns, l); err != nil {
		t.Fatal(err)
	}
	for _, c := range consumers {
		var filters []string
		for _, f := range c.Filters {
			typ := strings.TrimSuffix(strings.TrimPrefix(f, prefix+".*.*."), ".*")
			filters = append(filters, prefix+"."+typ+".*")
		}
		cfg := jetstream.ConsumerConfig{Durable: c.Name, AckPolicy: jetstream.AckExplicitPolicy, AckWait: c.AckWait,
			MaxDeliver: -1, MaxAckPending: c.MaxAckPending, DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
			OptStartSeq: c.AckFloor + 1, FilterSubjects: filters}
		if _, err := ns.CreateConsumer(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	ni, err := ns.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ni.State.Msgs != info.State.Msgs || ni.State.LastSeq != info.State.LastSeq {
		t.Fatalf("downgraded stream holds %d messages up to seq %d, want %d up to %d", ni.State.Msgs, ni.State.LastSeq, info.State.Msgs, info.State.LastSeq)
	}
	return oldCreated, ni.Created.UnixNano()
}

// makeLegacyStore leaves in tb a store as a single binary of Boxcar before
// scale-out would: subscriber "s" applied the first `handled` events of
// the counters' keys, then `pending` more were published (relayed, not
// handled); then the stream is rewritten in layout 1, through the
// JetStream jsOf returns (with the func that closes it). The bus is closed.
func makeLegacyStore(t *testing.T, tb *testBundle, handled, pending int, jsOf func() (jetstream.JetStream, func())) {
	t.Helper()
	ctx := context.Background()
	types := []string{"order.placed", "order.paid"}
	if _, err := tb.bus.Subscribe(ctx, "s", recordingHandler("s"), SubscribeOptions{Types: types}); err != nil {
		t.Fatal(err)
	}
	for i := range handled {
		if err := publishCounted(ctx, tb.bus, types[i%2], "k"+string(rune('a'+i%5))); err != nil {
			t.Fatal(err)
		}
	}
	waitApplied(t, tb.db, "s", handled)
	tb.reopen() // no subscriber from here on
	for i := range pending {
		if err := publishCounted(ctx, tb.bus, types[i%2], "k"+string(rune('a'+i%5))); err != nil {
			t.Fatal(err)
		}
	}
	waitRelayed(t, tb.bus, maxOutboxSeq(t, tb.db))
	tb.closeBus()

	js, done := jsOf()
	defer done()
	oldCreated, newCreated := downgradeStream(t, js, DefaultStream, DefaultSubjectPrefix)
	if err := sqlite.RebaseSubscribers(ctx, tb.db, DefaultStream, oldCreated, newCreated); err != nil {
		t.Fatal(err)
	}
}

// checkLayout2 checks that every message of the bus's stream is an event
// of the current layout, published by origin, and that the stream records
// the layout.
func checkLayout2(t *testing.T, bus *Bus, origin string, wantMsgs int) {
	t.Helper()
	msgs := streamMessages(t, bus)
	if len(msgs) != wantMsgs {
		t.Fatalf("stream holds %d messages, want %d", len(msgs), wantMsgs)
	}
	for _, m := range msgs {
		p, err := bus.layout.Parse(m.Subject)
		if err != nil || p.Origin != origin || p.Type != m.Header.Get(bjs.HeaderType) {
			t.Fatalf("stream message %d: subject %q (%+v, %v): not an event of layout %d from %s", m.Sequence, m.Subject, p, err, bjs.LayoutVersion, origin)
		}
	}
	s, err := bus.js.Stream(context.Background(), bus.StreamName())
	if err != nil {
		t.Fatal(err)
	}
	if v, p, err := bjs.StreamLayout(s.CachedInfo().Config); err != nil || v != bjs.LayoutVersion || p != bus.cfg.Partitions {
		t.Fatalf("stream records layout %d, %d partitions (%v); want %d, %d", v, p, err, bjs.LayoutVersion, bus.cfg.Partitions)
	}
}

// An embedded single-binary store of the old layout (prefix.type.key) is
// upgraded at Open, in place: the stream keeps every event at its seq, in
// the new layout; the subscriber resumes where it was (nothing handled
// again, nothing skipped), and new events follow.
func TestOpenUpgradesOldLayoutStore(t *testing.T) {
	logs := &logBuffer{}
	tb := setup(t, Config{})
	makeLegacyStore(t, tb, 30, 20, storeJS(t, tb))

	tb.cfg.Logger = logs.logger()
	tb.open()
	if !strings.Contains(logs.String(), "upgrading the event stream") {
		t.Errorf("the upgrade was not logged; log:\n%s", logs.String())
	}
	if _, found, err := sqlite.Meta(context.Background(), tb.db, sqlite.MetaLayoutUpgrade); err != nil || found {
		t.Fatalf("upgrade state still in the database (found %v, %v)", found, err)
	}
	checkLayout2(t, tb.bus, DefaultInstanceID, 50)
	checkStreamIsOutbox(t, streamEvents(t, tb.bus), 1, 50)

	ctx := context.Background()
	if _, err := tb.bus.Subscribe(ctx, "s", recordingHandler("s"), SubscribeOptions{Types: []string{"order.placed", "order.paid"}}); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := publishCounted(ctx, tb.bus, "order.placed", "k"+string(rune('a'+i%5))); err != nil {
			t.Fatal(err)
		}
	}
	waitApplied(t, tb.db, "s", 60)
	if n := checkExactlyOnceInOrder(t, tb.db, "s"); n != 60 {
		t.Fatalf("applied %d events, want 60", n)
	}
	// A second Open finds nothing to upgrade.
	tb.closeBus()
	logs2 := &logBuffer{}
	tb.cfg.Logger = logs2.logger()
	tb.open()
	if strings.Contains(logs2.String(), "upgrading") {
		t.Fatalf("a second Open upgraded again; log:\n%s", logs2.String())
	}
	checkLayout2(t, tb.bus, DefaultInstanceID, 60)
}

// A stream of the old layout on an external server (Config.NATSURL, where
// other instances may use it) is refused at Open with the command to run,
// and nothing changes; boxcar.UpgradeLayout then upgrades it, and Open
// works: the subscriber resumes where it was.
func TestOpenRefusesOldLayoutOnSharedStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ext := startExternalServer(t)
	tb := setup(t, Config{NATSURL: ext.ClientURL(), InstanceID: "billing", Logger: testLogger()})
	makeLegacyStore(t, tb, 20, 10, func() (jetstream.JetStream, func()) {
		nc, err := nats.Connect(ext.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return js, nc.Close
	})
	nc, err := nats.Connect(ext.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	before, err := js.Stream(ctx, DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, tb.db, tb.cfg)
	if !errors.Is(err, ErrOldLayout) || !strings.Contains(err.Error(), "boxcar.UpgradeLayout(ctx, db, cfg)") {
		t.Fatalf("Open on a shared stream of layout 1: %v; want ErrOldLayout naming boxcar.UpgradeLayout", err)
	}
	after, err := js.Stream(ctx, DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	bi, ai := before.CachedInfo(), after.CachedInfo()
	if !ai.Created.Equal(bi.Created) || ai.State.Msgs != 30 || ai.Config.Metadata[bjs.MetaLayout] != "" {
		t.Fatalf("the refused Open changed the stream: created %v (was %v), %d messages, metadata %v", ai.Created, bi.Created, ai.State.Msgs, ai.Config.Metadata)
	}
	if err := UpgradeLayout(ctx, tb.db, tb.cfg); err != nil {
		t.Fatalf("UpgradeLayout: %v", err)
	}
	tb.open()
	checkLayout2(t, tb.bus, "billing", 30)
	if _, err := tb.bus.Subscribe(ctx, "s", recordingHandler("s"), SubscribeOptions{Types: []string{"order.placed", "order.paid"}}); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, tb.db, "s", 30)
	if n := checkExactlyOnceInOrder(t, tb.db, "s"); n != 30 {
		t.Fatalf("applied %d events, want 30", n)
	}
}

// startExternalServer runs a plain JetStream server on loopback, as an
// external NATS an instance connects to with Config.NATSURL.
func startExternalServer(t *testing.T) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("external server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// An upgrade stopped at the start of any phase (as a crash there would stop
// it) fails that Open, with the phase named, and the next Open resumes it
// and finishes: the stream holds every event once at its seq, in the new
// layout, and the subscriber resumes where it was.
func TestOpenResumesAnInterruptedUpgrade(t *testing.T) {
	for _, phase := range []string{phaseStaging, phaseStaged, phaseRewriting, phaseConsumers} {
		t.Run(phase, func(t *testing.T) {
			tb := setup(t, Config{})
			makeLegacyStore(t, tb, 12, 8, storeJS(t, tb))
			crash := errors.New("crash")
			cfg := tb.cfg
			cfg.seams = &testSeams{upgradePhase: func(p string) error {
				if p == phase {
					return crash
				}
				return nil
			}}
			_, err := Open(context.Background(), tb.db, cfg)
			if !errors.Is(err, crash) || !strings.Contains(err.Error(), "phase "+phase) {
				t.Fatalf("Open stopped at phase %s: %v", phase, err)
			}
			tb.open()
			checkLayout2(t, tb.bus, DefaultInstanceID, 20)
			checkStreamIsOutbox(t, streamEvents(t, tb.bus), 1, 20)
			if _, err := tb.bus.Subscribe(context.Background(), "s", recordingHandler("s"), SubscribeOptions{Types: []string{"order.placed", "order.paid"}}); err != nil {
				t.Fatal(err)
			}
			waitApplied(t, tb.db, "s", 20)
			if n := checkExactlyOnceInOrder(t, tb.db, "s"); n != 20 {
				t.Fatalf("applied %d, want 20", n)
			}
		})
	}
}

// storeJS returns how makeLegacyStore reaches tb's store with the bus
// closed: a server of its own on tb's Dir, and a JetStream client of it.
func storeJS(t *testing.T, tb *testBundle) func() (jetstream.JetStream, func()) {
	return func() (jetstream.JetStream, func()) {
		srv, err := bjs.Start(bjs.ServerConfig{Dir: tb.cfg.Dir, Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		nc, err := srv.Connect("downgrade")
		if err != nil {
			t.Fatal(err)
		}
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return js, func() { nc.Close(); srv.Shutdown(context.Background()) }
	}
}
