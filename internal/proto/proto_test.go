package proto

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/boxcar-bus/boxcar/internal/hub"
)

func leaf(t *testing.T, h *hub.Cluster, domain string) (*server.Server, *nats.Conn) {
	opts := &server.Options{ServerName: domain, JetStream: true, JetStreamDomain: domain, StoreDir: t.TempDir(), NoSigs: true, DontListen: true,
		LeafNode: server.LeafNodeOpts{ReconnectInterval: 200 * time.Millisecond, Remotes: []*server.RemoteLeafOpts{{URLs: h.LeafURLs(), DenyImports: []string{"boxcar.>"}, DenyExports: []string{"boxcar.>"}}}}}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("leaf not ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(s))
	if err != nil {
		t.Fatal(err)
	}
	return s, nc
}

func TestLeafProto(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	t0 := time.Now()
	h, err := hub.Start(ctx, hub.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Shutdown()
	t.Logf("hub up in %v", time.Since(t0))
	sa, nca := leaf(t, h, "a")
	defer sa.Shutdown()
	sb, ncb := leaf(t, h, "b")
	defer sb.Shutdown()
	for _, nc := range []*nats.Conn{nca, ncb} {
		js, _ := jetstream.New(nc)
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BOXCAR", Subjects: []string{"boxcar.>"}}); err != nil {
			t.Fatal(err)
		}
	}
	// wait leaf connected
	for sa.NumLeafNodes() == 0 || sb.NumLeafNodes() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("leaves connected at %v", time.Since(t0))
	hnc, _ := nats.Connect(h.ClientURLs()[0])
	defer hnc.Close()
	hjs, _ := jetstream.New(hnc)
	for {
		_, err = hjs.CreateStream(ctx, jetstream.StreamConfig{Name: "ALL", Replicas: 3, Sources: []*jetstream.StreamSource{{Name: "BOXCAR", Domain: "a"}, {Name: "BOXCAR", Domain: "b"}}})
		if err == nil {
			break
		}
		t.Logf("create ALL: %v", err)
		time.Sleep(200 * time.Millisecond)
	}
	jsa, _ := jetstream.New(nca)
	for i := 0; i < 10; i++ {
		if _, err := jsa.Publish(ctx, fmt.Sprintf("boxcar.a.%d.x.k%d", i%4, i), []byte("a")); err != nil {
			t.Fatal(err)
		}
	}
	// consumer from leaf b via hub domain
	jsbHub, _ := jetstream.NewWithDomain(ncb, "hub")
	var cons jetstream.Consumer
	for {
		cons, err = jsbHub.CreateOrUpdateConsumer(ctx, "ALL", jetstream.ConsumerConfig{Durable: "c1", AckPolicy: jetstream.AckExplicitPolicy, FilterSubjects: []string{"boxcar.*.*.x.*"}})
		if err == nil {
			break
		}
		t.Logf("consumer: %v", err)
		time.Sleep(200 * time.Millisecond)
	}
	got := 0
	for got < 10 {
		b, err := cons.Fetch(10, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			got++
			m.Ack()
		}
		t.Logf("got %d at %v", got, time.Since(t0))
	}
	jsb, _ := jetstream.New(ncb)
	si, _ := jsb.Stream(ctx, "BOXCAR")
	info, _ := si.Info(ctx)
	t.Logf("leaf b stream msgs=%d (leak check)", info.State.Msgs)
	// hub away
	h.StopAll()
	t.Logf("hub stopped at %v", time.Since(t0))
	for i := 0; i < 10; i++ {
		if _, err := jsa.Publish(ctx, fmt.Sprintf("boxcar.a.%d.x.k%d", i%4, i), []byte("a2")); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("published locally while hub away")
	time.Sleep(3 * time.Second)
	if err := h.RestartAll(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("hub back at %v", time.Since(t0))
	for got < 20 {
		b, err := cons.Fetch(10, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Logf("fetch: %v", err)
			continue
		}
		for m := range b.Messages() {
			got++
			m.Ack()
		}
		t.Logf("got %d at %v", got, time.Since(t0))
	}
	all, _ := hjs.Stream(ctx, "ALL")
	ai, _ := all.Info(ctx)
	t.Logf("ALL msgs=%d sources=%+v", ai.State.Msgs, ai.Sources[0])
}

func TestClusterProto(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h, err := hub.Start(ctx, hub.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Shutdown()
	nc, _ := nats.Connect(h.ClientURLs()[0])
	defer nc.Close()
	js, _ := jetstream.New(nc)
	var st jetstream.Stream
	for {
		st, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "BOXCAR", Subjects: []string{"boxcar.>"}, Replicas: 3, AllowAtomicPublish: true, AllowDirect: true})
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	// batch from a
	batch := func(inst string, id string, n int, expect uint64, withExpect bool) error {
		var last *nats.Msg
		for i := 1; i <= n; i++ {
			m := nats.NewMsg(fmt.Sprintf("boxcar.%s.%d.x.k%d", inst, i%3, i))
			m.Header.Set("Nats-Batch-Id", id)
			m.Header.Set("Nats-Batch-Sequence", fmt.Sprint(i))
			m.Header.Set("Nats-Msg-Id", fmt.Sprintf("%s-%s-%d", inst, id, i))
			if i == 1 && withExpect {
				m.Header.Set("Nats-Expected-Last-Subject-Sequence", fmt.Sprint(expect))
				m.Header.Set("Nats-Expected-Last-Subject-Sequence-Subject", "boxcar."+inst+".>")
			}
			if i == n {
				m.Header.Set("Nats-Batch-Commit", "1")
				last = m
				break
			}
			if err := nc.PublishMsg(m); err != nil {
				return err
			}
		}
		resp, err := nc.RequestMsg(last, 5*time.Second)
		if err != nil {
			return err
		}
		t.Logf("commit %s resp: %s", id, resp.Data)
		return nil
	}
	if err := batch("a", "b1", 5, 0, true); err != nil {
		t.Fatal(err)
	}
	if err := batch("b", "b2", 5, 0, true); err != nil {
		t.Fatal(err)
	}
	if err := batch("a", "b3", 5, 5, true); err != nil {
		t.Fatal(err)
	}
	if err := batch("a", "b4", 5, 5, true); err != nil { // stale
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(ctx, "boxcar.a.>")
	t.Logf("last a: %v %v", m, err)
	if m != nil {
		t.Logf("last a seq %d subj %s", m.Sequence, m.Subject)
	}
	// leader kill
	l := h.StreamLeader("BOXCAR")
	t.Logf("leader %d", l)
	h.Stop(l)
	t0 := time.Now()
	nc2, _ := nats.Connect(h.ClientURLs()[(l+1)%3])
	js2, _ := jetstream.New(nc2)
	for {
		_, err := js2.Publish(ctx, "boxcar.c.0.x.k", nil)
		if err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("publish ok after leader kill in %v", time.Since(t0))
	if err := h.Restart(l); err != nil {
		t.Fatal(err)
	}
}
