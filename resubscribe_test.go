package boxcar

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Restarting, reconfiguring and losing a subscriber's consumer: it resumes
// where it was, without repeating what it handled and without missing
// anything.

// seenLog records each event a plain handler handled, by key and ID.
type seenLog struct {
	mu    sync.Mutex
	byID  map[string]int
	byKey map[string][]string // data, in handling order
}

func newSeenLog() *seenLog { return &seenLog{byID: map[string]int{}, byKey: map[string][]string{}} }

func (l *seenLog) record(m Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byID[m.ID]++
	l.byKey[m.Key] = append(l.byKey[m.Key], string(m.Data))
}

func (l *seenLog) repeats() (n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.byID {
		n += c - 1
	}
	return n
}

func (l *seenLog) distinct() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.byID)
}

func (l *seenLog) key(k string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.byKey[k])
}

// Regression: Subscribe reset the consumer to its ack floor every time, so
// after a clean Close while one key was behind, a new Subscribe gave a plain
// handler again every event acked above that floor (622-1,502 repeats in a
// 20-restart loop).
func TestCleanResubscribeSkipsWhatItAcked(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	seen := newSeenLog()
	var blocked atomic.Bool
	blocked.Store(true)
	h := HandlerFunc(func(ctx context.Context, m Message) error {
		if m.Key == "behind" && blocked.Load() {
			return errors.New("not yet")
		}
		seen.record(m)
		return nil
	})
	opts := SubscribeOptions{MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, MaxAttempts: 1 << 30}
	publishN(t, tb.bus, "behind", 3)
	total := 3
	for round := range 20 {
		sub, err := tb.bus.Subscribe(ctx, "mailer", h, opts)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			publishN(t, tb.bus, fmt.Sprintf("r%d-k%d", round, i), 1)
		}
		total += 10
		waitFor(t, "the round's events", time.Minute, func() (bool, string) {
			return seen.distinct() == total-3, fmt.Sprint(seen.distinct())
		})
		if err := sub.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	blocked.Store(false)
	if _, err := tb.bus.Subscribe(ctx, "mailer", h, opts); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every event", time.Minute, func() (bool, string) {
		return seen.distinct() == total, fmt.Sprint(seen.distinct())
	})
	if n := seen.repeats(); n != 0 {
		t.Fatalf("%d events handled again after clean restarts", n)
	}
	if got := seen.key("behind"); fmt.Sprint(got) != "[1 2 3]" {
		t.Fatalf("the key that was behind was handled as %v, want [1 2 3]", got)
	}
}

// Regression: acked stream seqs were remembered in a set of fixed size
// (8,192): a lost ack whose redelivery came after more acks than that was
// handled again, after later events of its key (K1 K2 K3 K1).
func TestLostAckRedeliveredAfterManyAcks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg, lostAcks := dropAcks(Config{})
	tb := setup(t, cfg)
	seen := newSeenLog()
	_, err := tb.bus.Subscribe(ctx, "mailer", HandlerFunc(func(ctx context.Context, m Message) error {
		seen.record(m)
		return nil
	}), SubscribeOptions{AckWait: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	lostAcks.Store(1)
	publishN(t, tb.bus, "K", 1) // its ack is lost: redelivered after AckWait
	waitFor(t, "K1", time.Minute, func() (bool, string) { return len(seen.key("K")) == 1, "" })
	const others = 10_000
	evs := make([]Event, 0, 1000)
	for i := range others {
		evs = append(evs, Event{Type: "order.placed", Key: "o" + strconv.Itoa(i), Data: []byte("1")})
		if len(evs) == cap(evs) {
			if err := tb.bus.Publish(ctx, evs...); err != nil {
				t.Fatal(err)
			}
			evs = evs[:0]
		}
	}
	publishN(t, tb.bus, "K", 2)
	waitFor(t, "every event", time.Minute, func() (bool, string) {
		return seen.distinct() == others+3, fmt.Sprint(seen.distinct())
	})
	time.Sleep(4 * time.Second) // past AckWait: the lost ack's redelivery has come
	if got := seen.key("K"); fmt.Sprint(got) != "[1 2 3]" {
		t.Fatalf("key K handled as %v, want [1 2 3]", got)
	}
}

// Regression: adding a type to a subscriber delivered almost none of that
// type's history (0-3 of 700): the consumer kept its position. The added
// type is delivered from the stream's beginning; the types it had are not
// delivered again. Duplicate types are refused.
func TestAddedTypeGetsItsHistory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	seen := newSeenLog()
	h := HandlerFunc(func(ctx context.Context, m Message) error {
		seen.record(m)
		return nil
	})
	sub, err := tb.bus.Subscribe(ctx, "analytics", h, SubscribeOptions{Types: []string{"user.signed_up"}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 700 {
		key := "u" + strconv.Itoa(i%50)
		if err := publishCounted(ctx, tb.bus, "user.signed_up", key); err != nil {
			t.Fatal(err)
		}
		if err := publishCounted(ctx, tb.bus, "user.welcomed", key); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the signups", time.Minute, func() (bool, string) { return seen.distinct() == 700, fmt.Sprint(seen.distinct()) })
	if err := sub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.bus.Subscribe(ctx, "analytics", h, SubscribeOptions{Types: []string{"user.signed_up", "user.signed_up"}}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("duplicate types: got %v, want ErrInvalidConfig", err)
	}
	if _, err := tb.bus.Subscribe(ctx, "analytics", h, SubscribeOptions{Types: []string{"user.signed_up", "user.welcomed"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the welcomes' history", time.Minute, func() (bool, string) { return seen.distinct() == 1400, fmt.Sprint(seen.distinct()) })
	if n := seen.repeats(); n != 0 {
		t.Fatalf("%d events of the old type handled again", n)
	}
}

// Regression: messages held behind their key were redelivered every AckWait
// (30 wasted redeliveries for 10 events): the server is told they are in
// progress.
func TestHeldMessagesAreNotRedelivered(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	release := make(chan struct{})
	seen := newSeenLog()
	sub, err := tb.bus.Subscribe(ctx, "mailer", HandlerFunc(func(ctx context.Context, m Message) error {
		if m.Key == "stuck" && string(m.Data) == "1" {
			<-release
		}
		seen.record(m)
		return nil
	}), SubscribeOptions{AckWait: time.Second, HandlerTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "stuck", 10)
	waitFor(t, "the key's events to be held", time.Minute, func() (bool, string) {
		st, err := sub.Stats(ctx)
		return err == nil && st.InFlight == 10, fmt.Sprintf("%+v %v", st, err)
	})
	time.Sleep(3500 * time.Millisecond) // three AckWaits and more
	close(release)
	waitFor(t, "the key's events", time.Minute, func() (bool, string) { return len(seen.key("stuck")) == 10, "" })
	st, err := sub.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Ignored != 0 || st.Redelivered != 0 {
		t.Fatalf("stats %+v: held messages were redelivered", st)
	}
}

// Regression: a subscriber whose consumer an operator deleted stayed dead
// after one warning, and Bus.Stats failed as a whole. The subscription
// creates the consumer again where it was and goes on: nothing lost, nothing
// handled twice (a plain handler too), and it says so.
func TestDeletedConsumerIsRecreated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	logs := &logBuffer{}
	tb := setup(t, Config{Logger: logs.logger()})
	seen := newSeenLog()
	plain, err := tb.bus.Subscribe(ctx, "mailer", HandlerFunc(func(ctx context.Context, m Message) error {
		seen.record(m)
		return nil
	}), SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	runWriters(t, tb.bus, 2, 50, 7, func(int) string { return "order.placed" })
	waitApplied(t, tb.db, "ledger", 50)
	for _, name := range []string{"mailer", "ledger"} {
		if err := tb.bus.js.DeleteConsumer(ctx, tb.bus.StreamName(), name); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tb.bus.Stats(ctx); err != nil {
		t.Fatalf("Stats with the consumers gone: %v", err)
	}
	runWriters(t, tb.bus, 2, 50, 7, func(int) string { return "order.placed" })
	waitApplied(t, tb.db, "ledger", 100)
	checkExactlyOnceInOrder(t, tb.db, "ledger")
	waitFor(t, "the plain subscriber", time.Minute, func() (bool, string) { return seen.distinct() == 100, fmt.Sprint(seen.distinct()) })
	if n := seen.repeats(); n != 0 {
		t.Fatalf("the plain subscriber handled %d events again; logs:\n%s", n, logs.String())
	}
	st, err := plain.Stats(ctx)
	if err != nil || st.Recreated != 1 {
		t.Fatalf("stats %+v (%v): want the consumer recreated once", st, err)
	}
	if !strings.Contains(logs.String(), "created it again") {
		t.Fatal("the recreation was not logged")
	}
}

// A consumer deleted while its subscriber is not running: Subscribe creates
// it again after what the subscriber is known to have handled (saved at its
// Close), not from the stream's first event, which handed a plain handler
// the whole retention again.
func TestConsumerDeletedWhileStoppedResumes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	seen := newSeenLog()
	h := HandlerFunc(func(ctx context.Context, m Message) error { seen.record(m); return nil })
	sub, err := tb.bus.Subscribe(ctx, "mailer", h, SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 20)
	waitFor(t, "20 handled", time.Minute, func() (bool, string) { return seen.distinct() == 20, fmt.Sprint(seen.distinct()) })
	if err := sub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tb.bus.js.DeleteConsumer(ctx, tb.bus.StreamName(), "mailer"); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 1) // while it is gone
	if sub, err = tb.bus.Subscribe(ctx, "mailer", h, SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 1)
	waitFor(t, "22 handled", time.Minute, func() (bool, string) { return seen.distinct() == 22, fmt.Sprint(seen.distinct()) })
	if n := seen.repeats(); n != 0 {
		t.Fatalf("the handler ran %d times again for events it had handled", n)
	}
	if st, err := sub.Stats(ctx); err != nil || st.Recreated != 1 {
		t.Fatalf("stats %+v (%v): want the consumer counted as recreated", st, err)
	}
}

// What a subscriber row knows in stream seqs (catch-up rules after types
// were added, acked ranges, how far it is known to have handled) belongs to
// one stream. After the store is lost and the relay refills a new stream
// from the outbox, an old catch-up rule skipped, and acked, events the
// subscriber never handled.
func TestCatchupRuleDoesNotOutliveItsStream(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	var mu sync.Mutex
	seen := map[int64]bool{}
	var fail atomic.Bool
	h := HandlerFunc(func(ctx context.Context, m Message) error {
		if fail.Load() {
			return errors.New("down") // keeps failing, never acked
		}
		mu.Lock()
		seen[m.Seq] = true
		mu.Unlock()
		return nil
	})
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(seen) }
	sub, err := tb.bus.Subscribe(ctx, "s", h, SubscribeOptions{Types: []string{"t.a"}})
	if err != nil {
		t.Fatal(err)
	}
	for range 100 { // outbox 1..200: t.a odd, t.b even
		for _, typ := range []string{"t.a", "t.b"} {
			if err := tb.bus.Publish(ctx, Event{Type: typ, Key: "k", Data: []byte("x")}); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFor(t, "100 t.a handled", time.Minute, func() (bool, string) { return count() == 100, fmt.Sprint(count()) })
	if err := sub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// t.b added: the consumer is rewound, with a rule skipping t.a up to
	// stream seq 199. The handler fails meanwhile; 50 new t.a events come
	// (outbox 201..250).
	fail.Store(true)
	sub, err = tb.bus.Subscribe(ctx, "s", h, SubscribeOptions{Types: []string{"t.a", "t.b"}, MaxAttempts: 1000, MinBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		if err := tb.bus.Publish(ctx, Event{Type: "t.a", Key: "n", Data: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	waitRelayed(t, tb.bus, 250)
	if err := sub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	tb.closeBus()
	// Rows 1..100 were pruned long ago; the NATS store is lost.
	if _, err := tb.db.Exec(`DELETE FROM boxcar_outbox WHERE seq <= 100`); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(tb.cfg.Dir); err != nil {
		t.Fatal(err)
	}
	fail.Store(false)
	mu.Lock()
	clear(seen)
	mu.Unlock()
	tb.open()
	if _, err := tb.bus.Subscribe(ctx, "s", h, SubscribeOptions{Types: []string{"t.a", "t.b"}}); err != nil {
		t.Fatal(err)
	}
	// A last event of key n: once it is handled, every earlier one of its
	// key was handled or skipped.
	if err := tb.bus.Publish(ctx, Event{Type: "t.a", Key: "n", Data: []byte("last")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the last event", time.Minute, func() (bool, string) { mu.Lock(); defer mu.Unlock(); return seen[251], "" })
	mu.Lock()
	defer mu.Unlock()
	var missing []int64
	for s := int64(201); s <= 250; s++ {
		if !seen[s] {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d of the 50 t.a events never handled were skipped: outbox seqs %v", len(missing), missing)
	}
}

// Regression: deleting the stream made the relay retry for ever. The bus
// creates it again, refills it from the outbox, and the subscribers resume:
// nothing lost, nothing applied twice.
func TestDeletedStreamIsRecreated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	sub, err := tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	runWriters(t, tb.bus, 2, 50, 7, func(int) string { return "order.placed" })
	waitApplied(t, tb.db, "ledger", 50)
	if err := tb.bus.js.DeleteStream(ctx, tb.bus.StreamName()); err != nil {
		t.Fatal(err)
	}
	runWriters(t, tb.bus, 2, 50, 7, func(int) string { return "order.placed" })
	waitApplied(t, tb.db, "ledger", 100)
	waitFor(t, "the subscriber to catch up", time.Minute, func() (bool, string) {
		ss, err := sub.Stats(ctx)
		return err == nil && ss.Pending == 0 && ss.Unacked == 0, fmt.Sprintf("%+v %v", ss, err)
	})
	checkExactlyOnceInOrder(t, tb.db, "ledger")
	st, err := tb.bus.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.StreamsRecreated < 1 || st.Subscribers[0].Recreated < 1 {
		t.Fatalf("stats %+v: want the stream and the consumer recreated", st)
	}
}

// Regression: a stream made again before nats-server had removed the
// deleted one's store got that store's directory, which the end of the
// delete then renamed away: every publish into the new stream timed out and
// the relay was stuck (CI's TestRunbook/lost-stream-deleted, 1 run in ~20
// under load; a 1 s wait only narrowed the window). The test plays a delete
// that is slow to end: a directory at the deleted stream's path, renamed
// away and removed 3 s later, as the delete's end does it. The bus must not
// make the stream while it is there (what breaks a stream made in that
// window depends on when it first opens a block file, so the test checks
// the window itself), and must relay everything once it is gone.
func TestADeletedStreamIsMadeAgainOnlyOnceItsStoreIsGone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	publishN(t, tb.bus, "k", 5)
	waitRelayed(t, tb.bus, 5)
	stream := tb.bus.StreamName()
	// The wait reads nats-server's store layout: if an upgrade moved it,
	// the live streams' stores are not found where it looks, and it would
	// not wait at all.
	for _, name := range []string{stream, tb.bus.DLQStreamName()} {
		if !tb.bus.srv.StreamStoreOnDisk(name) {
			t.Fatalf("live stream %s: no store at %s", name, tb.bus.srv.StreamStorePath(name))
		}
	}
	if err := tb.bus.js.DeleteStream(ctx, stream); err != nil {
		t.Fatal(err)
	}
	store := tb.bus.srv.StreamStorePath(stream)
	if err := os.MkdirAll(store, 0o700); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 5) // the relay finds the stream gone
	held := time.Now()
	for time.Since(held) < 3*time.Second {
		if _, err := tb.bus.js.Stream(ctx, stream); err == nil {
			t.Errorf("the stream was made again %v after its delete, while the old store was still on disk", time.Since(held).Round(time.Millisecond))
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Whoever else needs the streams meanwhile (a subscriber recovering, a
	// worker dead-lettering) can give up with its context, rather than wait
	// behind the relay's wait.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := tb.bus.ensureStreams(short)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ensureStreams with a short context while the relay waits for the delete: %v, want its deadline", err)
	}
	if _, err := tb.bus.js.Stream(ctx, stream); err == nil {
		t.Error("ensureStreams with a short context returned only after the relay's wait had ended")
	}
	gone := filepath.Join(filepath.Dir(store), ".held-"+stream)
	if err := os.Rename(store, gone); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(gone); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stream to be made again", time.Minute, func() (bool, string) {
		_, err := tb.bus.js.Stream(ctx, stream)
		return err == nil, fmt.Sprint(err)
	})
	publishN(t, tb.bus, "k", 5)
	waitStreamIsOutbox(t, tb.bus, 1, 15)
	if st, err := tb.bus.Stats(ctx); err != nil || st.StreamsRecreated != 1 {
		t.Fatalf("stats %+v %v: want the stream made again once", st, err)
	}
}

// Regression: a subscriber stopped for longer than Retention got none of
// the events that expired meanwhile, and its Stats looked healthy. They are
// counted now, and logged at error level.
func TestExpiredEventsAreCounted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	logs := &logBuffer{}
	tb := setup(t, Config{Retention: 2 * time.Second, DuplicateWindow: 100 * time.Millisecond, Logger: logs.logger()})
	sub, err := tb.bus.Subscribe(ctx, "mailer", HandlerFunc(func(ctx context.Context, m Message) error { return nil }), SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 5)
	waitFor(t, "the first events", time.Minute, func() (bool, string) {
		st, err := sub.Stats(ctx)
		return err == nil && st.Handled == 5, fmt.Sprintf("%+v", st)
	})
	if err := sub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 20) // never handled: they expire
	waitRelayed(t, tb.bus, 25)
	waitFor(t, "the stream to drop them", time.Minute, func() (bool, string) {
		info, err := tb.bus.events.Info(ctx)
		return err == nil && info.State.Msgs == 0, fmt.Sprintf("%+v", info.State)
	})
	sub, err = tb.bus.Subscribe(ctx, "mailer", HandlerFunc(func(ctx context.Context, m Message) error { return nil }), SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := sub.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Expired != 20 {
		t.Fatalf("stats %+v: want 20 expired events", st)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "before the subscriber handled them") {
		t.Fatalf("no error-level line for the expired events; log:\n%s", logs.String())
	}
}

// A consumer that delivers below the ack floor the dispatcher knows (an
// operator reset it with the nats CLI; or, seen under load, a consumer the
// server created again right after a delete started from the stream's
// first message despite its start sequence): what is at or below the floor
// was acked, and a plain handler must not see it again.
func TestDeliveriesBelowTheAckFloorAreNotHandledAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	seen := newSeenLog()
	sub, err := tb.bus.Subscribe(ctx, "mailer", HandlerFunc(func(ctx context.Context, m Message) error {
		seen.record(m)
		return nil
	}), SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 20)
	waitFor(t, "20 handled", time.Minute, func() (bool, string) { return seen.distinct() == 20, fmt.Sprint(seen.distinct()) })
	var floor uint64
	waitFor(t, "the ack floor at 20", time.Minute, func() (bool, string) {
		info, err := tb.bus.events.Consumer(ctx, "mailer")
		if err != nil {
			return false, err.Error()
		}
		floor = info.CachedInfo().AckFloor.Stream
		return floor == 20, fmt.Sprint(floor)
	})
	sub.d.noteFloor(floor) // as the supervisor does: the acked set is trimmed below the floor
	if _, err := tb.bus.js.ResetConsumerToSequence(ctx, tb.bus.StreamName(), "mailer", 1); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 1)
	waitFor(t, "21 handled", time.Minute, func() (bool, string) { return seen.distinct() == 21, fmt.Sprint(seen.distinct()) })
	if n := seen.repeats(); n != 0 {
		t.Fatalf("the plain handler saw %d events again that were at or below the ack floor", n)
	}
}

// A consumer deleted while no pull request of its subscriber waits at the
// server gets no "consumer deleted" status to any request: the next pulls
// find no responder, which nats.go's iterator swallows, and the subscriber
// waited for ever, silently. The supervisor now also finds the consumer
// gone when it reads it (every supervisorEvery) and creates it again.
func TestConsumerDeletedWithNoPullWaitingIsRecreated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	release := make(chan struct{})
	var first atomic.Bool
	seen := newSeenLog()
	sub, err := tb.bus.Subscribe(ctx, "mailer", HandlerFunc(func(ctx context.Context, m Message) error {
		if first.CompareAndSwap(false, true) {
			<-release // the one slot is taken: the fetch loop waits, and so does its next pull
		}
		seen.record(m)
		return nil
	}), SubscribeOptions{MaxInFlight: 1, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 1)
	waitFor(t, "the first event to reach the handler", time.Minute, func() (bool, string) { return first.Load(), "" })
	// The pull of one message was answered; none waits at the server now.
	if err := tb.bus.js.DeleteConsumer(ctx, tb.bus.StreamName(), "mailer"); err != nil {
		t.Fatal(err)
	}
	close(release)
	publishN(t, tb.bus, "k", 2)
	waitFor(t, "the events after the delete", 2*time.Minute, func() (bool, string) {
		return seen.distinct() == 3, fmt.Sprintf("%d of 3 handled", seen.distinct())
	})
	st, err := sub.Stats(ctx)
	if err != nil || st.Recreated < 1 {
		t.Fatalf("stats %+v (%v): want the consumer recreated", st, err)
	}
}
