package jetstream

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/boxcar-bus/boxcar/internal/lossyjs"
)

// testLayout is the subject layout of the package's tests.
var testLayout = Layout{Prefix: "ev", Partitions: 8}

type bundle struct {
	srv    *Server
	js     *lossyjs.JetStream // the real JetStream, with faults off until a test sets one
	events jetstream.Stream
	pub    *Publisher
}

func setup(t *testing.T) *bundle {
	t.Helper()
	srv, js, events := startStream(t, false)
	lossy := lossyjs.Wrap(js)
	return &bundle{srv: srv, js: lossy, events: events, pub: NewPublisher(lossy, events, testLayout, "o1")}
}

// startStream starts a server with the event stream EV (shared: for atomic
// batches), and connects to it; both end with the test.
func startStream(t *testing.T, shared bool) (*Server, jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	srv, err := Start(ServerConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := srv.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		nc.Close()
		srv.Shutdown(context.Background())
	})
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	events, _, err := EnsureStreams(context.Background(), js, StreamConfig{Name: "EV", Layout: testLayout, MaxAge: time.Hour, Duplicates: time.Minute, Shared: shared})
	if err != nil {
		t.Fatal(err)
	}
	return srv, js, events
}

func outgoing(from, to int64) []Outgoing {
	var out []Outgoing
	for s := from; s <= to; s++ {
		out = append(out, Outgoing{Seq: s, ID: "id-" + strconv.FormatInt(s, 10), Type: "t", Key: "k", Data: []byte("x")})
	}
	return out
}

func (b *bundle) streamSeqs(t *testing.T) []int64 {
	t.Helper()
	ctx := context.Background()
	info, err := b.events.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	for s := info.State.FirstSeq; s <= info.State.LastSeq && info.State.Msgs > 0; s++ {
		m, err := b.events.GetMsg(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.ParseInt(m.Header.Get(HeaderSeq), 10, 64)
		seqs = append(seqs, n)
	}
	return seqs
}

// A message lost in the middle of a pipelined batch makes the chain refuse
// every later one; Resync finds the last stored event and the resend fills
// the gap in order.
func TestPublisherChainRefusesAfterGap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	if err := b.pub.Publish(ctx, outgoing(1, 5)); err != nil {
		t.Fatal(err)
	}
	b.js.SetDrop(func(m *nats.Msg) bool { return m.Header.Get(HeaderSeq) == "6" }) // seq 6 never arrives
	// 6..10 pipelined, one Send each so that each one's outcome is seen.
	for _, o := range outgoing(6, 10) {
		b.pub.Send([]Outgoing{o})
	}
	if _, _, err := b.pub.Await(ctx); !errors.Is(err, lossyjs.ErrLost) {
		t.Fatalf("seq 6: got %v, want it lost", err)
	}
	for seq := 7; seq <= 10; seq++ {
		_, _, err := b.pub.Await(ctx)
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) || apiErr.ErrorCode != errCodeWrongLastMsgID {
			t.Fatalf("seq %d, after the gap: got %v, want the wrong-last-msg-id refusal (10070)", seq, err)
		}
	}
	b.js.SetDrop(nil)
	if got := b.streamSeqs(t); len(got) != 5 {
		t.Fatalf("after the gap the stream holds %v, want 1..5", got)
	}
	end, err := b.pub.Resync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !end.Found || end.OutboxSeq != 5 {
		t.Fatalf("resync: %+v, want outbox seq 5", end)
	}
	if err := b.pub.Publish(ctx, outgoing(6, 10)); err != nil {
		t.Fatal(err)
	}
	got := b.streamSeqs(t)
	if len(got) != 10 {
		t.Fatalf("stream %v, want 1..10", got)
	}
	for i, s := range got {
		if s != int64(i+1) {
			t.Fatalf("stream %v, want 1..10", got)
		}
	}
}

// Resync steps over foreign messages to the last Boxcar event, and an
// empty stream reports nothing found.
func TestResyncSkipsForeignMessages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	end, err := b.pub.Resync(ctx)
	if err != nil || end.Found || end.LastSeq != 0 {
		t.Fatalf("empty stream: %+v %v", end, err)
	}
	if err := b.pub.Publish(ctx, outgoing(1, 3)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := b.js.Publish(ctx, "ev.t.k", []byte("foreign")); err != nil {
			t.Fatal(err)
		}
	}
	end, err = b.pub.Resync(ctx)
	if err != nil || !end.Found || end.OutboxSeq != 3 || end.LastSeq != 6 {
		t.Fatalf("got %+v %v, want outbox seq 3 at stream seq 6", end, err)
	}
	// After a resync the chain restarts: the next publish is accepted
	// although the stream's last message has no ID.
	if err := b.pub.Publish(ctx, outgoing(4, 5)); err != nil {
		t.Fatal(err)
	}
}

func TestStartLocksDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv, err := Start(ServerConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Start(ServerConfig{Dir: dir}); !errors.Is(err, ErrDirLocked) {
		t.Fatalf("second Start on one dir: got %v, want ErrDirLocked", err)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	again, err := Start(ServerConfig{Dir: dir})
	if err != nil {
		t.Fatalf("Start after Shutdown: %v", err)
	}
	again.Shutdown(context.Background())
}

// errCodeWrongLastMsgID is the server's JSStreamWrongLastMsgIDErrF (10070);
// nats.go has no constant for it.
const errCodeWrongLastMsgID = 10070

// The first message after a Resync expects the stream's last seq that
// Resync read. A message of an earlier Send that the server stores only
// after that read (it had it queued when the Send timed out) then makes the
// resend fail, and the next Resync finds it, instead of being stored twice
// once the duplicate window is past (the event stream's is 1 s).
func TestResyncChainsOnTheStreamSeq(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	// The shortest duplicate window, past by the time of the resend.
	if _, _, err := EnsureStreams(ctx, b.js, StreamConfig{Name: "EV", Layout: testLayout, MaxAge: time.Hour, Duplicates: 100 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.pub.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.pub.Publish(ctx, outgoing(1, 3)); err != nil {
		t.Fatal(err)
	}
	end, err := b.pub.Resync(ctx)
	if err != nil || end.OutboxSeq != 3 || end.LastSeq != 3 {
		t.Fatalf("resync: %+v %v", end, err)
	}
	// Event 4 of a Send that failed before the Resync lands after it.
	late := outgoing(4, 4)
	if _, err := b.js.PublishMsg(ctx, Encode(testLayout, "o1", &late[0], "id-3")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // past the duplicate window
	if err := b.pub.Publish(ctx, outgoing(4, 5)); err == nil {
		t.Fatal("the resend after the late store succeeded: event 4 would be in the stream twice")
	}
	// 4 is refused; 5 names 4, the late one, and is stored after it.
	if got := b.streamSeqs(t); !slices.Equal(got, []int64{1, 2, 3, 4, 5}) {
		t.Fatalf("stream holds outbox seqs %v, want [1 2 3 4 5]: each once, in order", got)
	}
	end, err = b.pub.Resync(ctx)
	if err != nil || end.OutboxSeq != 5 {
		t.Fatalf("resync after the refusal: %+v %v, want outbox seq 5", end, err)
	}
	if err := b.pub.Publish(ctx, outgoing(6, 6)); err != nil {
		t.Fatal(err)
	}
	if got := b.streamSeqs(t); !slices.Equal(got, []int64{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("stream holds outbox seqs %v, want [1 2 3 4 5 6]", got)
	}
}

// After a Resync that failed, Send publishes nothing (its batch fails in
// Await) until a Resync succeeds: it has no end of the stream to chain on.
func TestSendRefusedAfterAFailedResync(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.pub.Resync(canceled); err == nil {
		t.Fatal("resync with a canceled context succeeded")
	}
	if err := b.pub.Publish(ctx, outgoing(1, 2)); !errors.Is(err, errUnsynced) {
		t.Fatalf("publish after a failed resync: %v, want errUnsynced", err)
	}
	if got := b.streamSeqs(t); len(got) != 0 {
		t.Fatalf("stream holds %v after a refused publish, want nothing", got)
	}
	if _, err := b.pub.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.pub.Publish(ctx, outgoing(1, 2)); err != nil {
		t.Fatal(err)
	}
	if got := b.streamSeqs(t); !slices.Equal(got, []int64{1, 2}) {
		t.Fatalf("stream holds %v, want [1 2]", got)
	}
}

// A replica that is behind answers direct gets with "not found" for
// messages the stream holds. Resync and FirstEvent must not take that for
// a deleted message: the end (or start) they report would be an older
// event, and the relay would publish again what the stream holds (or dedupe
// pruning drop rows of events still in it). A mirror with MirrorDirect,
// which shares the stream's direct gets and holds none of its messages,
// plays the replica that is behind.
func TestResyncAsksTheLeaderWhenAReplicaHasNotTheMessage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	// The mirror copies one foreign message only (stream seq 1), and then
	// answers direct gets, "not found" for the events (2 to 6).
	const foreign = "ev.foreign"
	if _, err := b.js.Publish(ctx, foreign, []byte("not an event")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.js.CreateStream(ctx, jetstream.StreamConfig{
		Name:         "EV_BEHIND",
		Storage:      jetstream.FileStorage,
		Mirror:       &jetstream.StreamSource{Name: "EV", FilterSubject: foreign},
		MirrorDirect: true,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.pub.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.pub.Publish(ctx, outgoing(1, 5)); err != nil {
		t.Fatal(err)
	}
	// The mirror answers a share of the direct gets once it has
	// subscribed: wait until one of them says "not found".
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := b.events.GetMsg(ctx, 6)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the mirror never answered a direct get: this test would show nothing")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := range 20 {
		end, err := b.pub.Resync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !end.Found || end.OutboxSeq != 5 || end.LastSeq != 6 {
			t.Fatalf("resync %d: %+v, want outbox seq 5 found at stream seq 6", i, end)
		}
		first, found, err := FirstEvent(ctx, b.js, b.events)
		if err != nil || !found || first != 1 {
			t.Fatalf("first event %d: %d %v %v, want outbox seq 1", i, first, found, err)
		}
		// The history a subscriber that gained types is given.
		at, found, err := FirstMatching(ctx, b.js, b.events, []string{testLayout.OriginFilter("o1")}, 1)
		if err != nil || !found || at != 2 {
			t.Fatalf("first matching %d: %d %v %v, want stream seq 2", i, at, found, err)
		}
	}
	// A message the leader has not is not found, as before.
	if err := b.events.DeleteMsg(ctx, 6); err != nil {
		t.Fatal(err)
	}
	end, err := b.pub.Resync(ctx)
	if err != nil || !end.Found || end.OutboxSeq != 4 {
		t.Fatalf("resync after deleting the last message: %+v %v, want outbox seq 4", end, err)
	}
}
