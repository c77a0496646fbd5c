package boxcar

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	bjs "github.com/boxcar-bus/boxcar/jetstream"
)

// Found by cmd/demo: after a SIGKILL and a restart with a backlog, a
// subscriber now and then sat idle for 30 seconds with events pending on the
// server, then went on ("nats: no heartbeat received"). nats.go's Messages
// iterator (v1.55.0) asks the server for more only at the start of a Next
// call and skips it while its previous pull request is still being sent; if
// that coincides with taking the last requested message, the next Next waits
// with nothing requested until the heartbeat timeout. (Reproduced with plain
// nats.go and nats-server: a fast consumer of a backlog stalls about once per
// few million messages, with NumWaiting 0 and NumPending > 0.) The fetch loop
// now bounds every Next, so the next call pulls.
//
// missedPullIterator plays that iterator deterministically: after the first
// half of its messages, one Next "missed its pull": unbounded, it blocks
// until Stop (the real one: until its heartbeat timeout); bounded, it returns
// nats.ErrTimeout like the real one, and the following calls deliver the rest.
type missedPullIterator struct {
	mu      sync.Mutex
	msgs    []jetstream.Msg
	missAt  int
	served  int
	stopped chan struct{}
	once    sync.Once
}

func (it *missedPullIterator) Next(opts ...jetstream.NextOpt) (jetstream.Msg, error) {
	it.mu.Lock()
	if it.served == it.missAt || it.served == len(it.msgs) {
		if it.served == it.missAt {
			it.missAt = -1
		}
		it.mu.Unlock()
		if len(opts) == 0 {
			<-it.stopped
			return nil, jetstream.ErrMsgIteratorClosed
		}
		select {
		case <-it.stopped:
			return nil, jetstream.ErrMsgIteratorClosed
		case <-time.After(10 * time.Millisecond):
			return nil, nats.ErrTimeout
		}
	}
	m := it.msgs[it.served]
	it.served++
	it.mu.Unlock()
	return m, nil
}

func (it *missedPullIterator) Stop()  { it.once.Do(func() { close(it.stopped) }) }
func (it *missedPullIterator) Drain() { it.Stop() }

// relayedMsg is a well-formed event as a Boxcar relay would have stored it.
type relayedMsg struct {
	subject string
	hdr     nats.Header
	seq     uint64
}

func newRelayedMsg(l bjs.Layout, seq uint64) *relayedMsg {
	key := "k" + strconv.FormatUint(seq, 10)
	h := nats.Header{}
	h.Set(jetstream.MsgIDHeader, "id-"+key)
	h.Set(bjs.HeaderType, "t.x")
	h.Set(bjs.HeaderKey, key)
	h.Set(bjs.HeaderSeq, strconv.FormatUint(seq, 10))
	h.Set(bjs.HeaderTime, strconv.FormatInt(time.Now().UnixNano(), 10))
	return &relayedMsg{subject: l.Subject("main", "t.x", key), hdr: h, seq: seq}
}

func (m *relayedMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: m.seq, Consumer: m.seq}, NumDelivered: 1}, nil
}
func (m *relayedMsg) Data() []byte                     { return []byte("{}") }
func (m *relayedMsg) Headers() nats.Header             { return m.hdr }
func (m *relayedMsg) Subject() string                  { return m.subject }
func (m *relayedMsg) Reply() string                    { return "" }
func (m *relayedMsg) Ack() error                       { return nil }
func (m *relayedMsg) DoubleAck(context.Context) error  { return nil }
func (m *relayedMsg) Nak() error                       { return nil }
func (m *relayedMsg) NakWithDelay(time.Duration) error { return nil }
func (m *relayedMsg) InProgress() error                { return nil }
func (m *relayedMsg) Term() error                      { return nil }
func (m *relayedMsg) TermWithReason(string) error      { return nil }

func TestFetchLoopSurvivesMissedPull(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	const n = 20
	handled := make(chan string, n)
	s := newSubscription(tb.bus, "missed-pull", HandlerFunc(func(ctx context.Context, m Message) error {
		handled <- m.Key
		return nil
	}), SubscribeOptions{}.withDefaults())
	it := &missedPullIterator{missAt: n / 2, stopped: make(chan struct{})}
	for i := 1; i <= n; i++ {
		it.msgs = append(it.msgs, newRelayedMsg(tb.bus.layout, uint64(i)))
	}
	s.d = newDispatcher(s, nil, dispatcherSeed{})
	s.d.run(it)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.d.stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	}()

	// Generous: with the fix the rest comes within ~10ms of the miss; without
	// it, never (the fake blocks until Stop).
	deadline := time.After(20 * time.Second)
	for got := 0; got < n; got++ {
		select {
		case <-handled:
		case <-deadline:
			t.Fatalf("handled %d of %d events: the fetch loop is stuck in an unbounded Next after a missed pull", got, n)
		}
	}
}
