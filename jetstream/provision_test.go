package jetstream

import (
	"context"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// silentAPI is a JetStream API, under prefix, in front of the real one of
// srv that leaves the first request on each subject that drop picks
// unanswered, as a cluster's servers do while a stream's leader is being
// elected (nats-server's jsStreamInfoRequest stays silent), and forwards
// the rest.
type silentAPI struct {
	mu      sync.Mutex
	dropped map[string]int
}

func startSilentAPI(t *testing.T, srv *Server, prefix string, drop func(subject string) bool) (*silentAPI, jetstream.JetStream) {
	t.Helper()
	proxy, err := srv.Connect("proxy")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	a := &silentAPI{dropped: map[string]int{}}
	if _, err := proxy.Subscribe(prefix+".>", func(m *nats.Msg) {
		api := strings.TrimPrefix(m.Subject, prefix+".")
		a.mu.Lock()
		silent := a.dropped[api] == 0 && drop(api)
		if silent {
			a.dropped[api]++
		}
		a.mu.Unlock()
		if silent {
			return
		}
		r, err := proxy.RequestMsg(&nats.Msg{Subject: "$JS.API." + api, Header: m.Header, Data: m.Data}, 5*time.Second)
		if err != nil {
			t.Errorf("proxy %s: %v", api, err)
			return
		}
		m.RespondMsg(&nats.Msg{Header: r.Header, Data: r.Data})
	}); err != nil {
		t.Fatal(err)
	}
	nc, err := srv.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.NewWithAPIPrefix(nc, prefix)
	if err != nil {
		t.Fatal(err)
	}
	return a, js
}

// rearm leaves the first request on each picked subject from now on
// unanswered again.
func (a *silentAPI) rearm() {
	a.mu.Lock()
	defer a.mu.Unlock()
	clear(a.dropped)
}

func (a *silentAPI) drops() map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.dropped)
}

// A JetStream API request that no server answers is asked again, each
// attempt bounded, rather than waiting for all of the caller's context (an
// Open on CI waited a whole minute for a stream's info and failed): the
// stream and the consumer are provisioned, and the relay's resync reads the
// stream, although the first info and the first create of each go
// unanswered.
func TestProvisioningAsksAgainWhenARequestIsNotAnswered(t *testing.T) {
	t.Parallel()
	srv, err := Start(ServerConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 6*attemptFor)
	defer cancel()
	api, js := startSilentAPI(t, srv, "SILENT.API", func(api string) bool {
		return api == "STREAM.INFO.EV" || strings.HasPrefix(api, "CONSUMER.CREATE.EV.")
	})
	events, _, err := EnsureStreams(ctx, js, StreamConfig{Name: "EV", Layout: testLayout, MaxAge: time.Hour, Duplicates: time.Minute})
	if err != nil {
		t.Fatalf("ensure streams with the first stream info unanswered: %v", err)
	}
	cons, err := EnsureConsumer(ctx, events, ConsumerConfig{Name: "mailer", AckWait: time.Minute, MaxAckPending: 10})
	if err != nil {
		t.Fatalf("ensure consumer with the first create unanswered: %v", err)
	}
	if info, err := cons.Info(ctx); err != nil || info.Config.Durable != "mailer" {
		t.Fatalf("the consumer: %+v, %v", info, err)
	}
	got := api.drops()
	if got["STREAM.INFO.EV"] != 1 || got["CONSUMER.CREATE.EV.mailer"] != 1 {
		t.Fatalf("requests left unanswered: %v; want the first stream info and consumer create: this test would show nothing", got)
	}
	// Open's next step: the relay's resync reads the stream's info.
	api.rearm()
	pub := NewPublisher(js, events, testLayout, "o1")
	if _, err := pub.Resync(ctx); err != nil {
		t.Fatalf("resync with the first stream info unanswered: %v", err)
	}
	if got := api.drops(); got["STREAM.INFO.EV"] != 1 {
		t.Fatalf("requests left unanswered by the resync: %v; want its stream info", got)
	}
}
