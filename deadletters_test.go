package boxcar

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	bjs "github.com/boxcar-bus/boxcar/jetstream"
)

// failingHandler records like recordingHandler, but fails for its key while
// broken is set: a handler bug that a fix later cures.
func failingHandler(subscriber, key string, broken *atomic.Bool, permanent bool) Handler {
	rec := recordingHandler(subscriber)
	return TxHandler(func(ctx context.Context, tx *sql.Tx, m Message) error {
		if m.Key == key && broken.Load() {
			err := fmt.Errorf("cannot handle %s yet", m.ID)
			if permanent {
				return Permanent(err)
			}
			return err
		}
		return rec.tx(ctx, tx, m)
	})
}

// subscribeBroken subscribes billing with a handler that fails for key "bad"
// (permanently, or not) while the returned switch is on, which it is.
func subscribeBroken(t *testing.T, tb *testBundle, opts SubscribeOptions, permanent bool) *atomic.Bool {
	t.Helper()
	broken := new(atomic.Bool)
	broken.Store(true)
	if _, err := tb.bus.Subscribe(context.Background(), "billing", failingHandler("billing", "bad", broken, permanent), opts); err != nil {
		t.Fatal(err)
	}
	return broken
}

// A dead letter is listed with its error history, shown, redriven once to
// its subscriber only (after the fix), and its redrive recorded; a second
// redrive does nothing; a discard is recorded; bad requests get clear
// errors and change nothing.
func TestDeadLetterRedriveAndDiscard(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	broken := subscribeBroken(t, tb, SubscribeOptions{MaxAttempts: 3, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}, false)
	if _, err := tb.bus.Subscribe(ctx, "audit", recordingHandler("audit"), SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "bad", 2)
	publishN(t, tb.bus, "good", 3)
	waitApplied(t, tb.db, "audit", 5)
	var letters []DeadLetter
	waitFor(t, "two dead letters", time.Minute, func() (bool, string) {
		var err error
		letters, _, err = tb.bus.DeadLetters(ctx, DeadLetterFilter{Subscriber: "billing"})
		return err == nil && len(letters) == 2, fmt.Sprintf("%d letters, %v", len(letters), err)
	})
	first := letters[0]
	if first.Reason != "failed" || first.Key != "bad" || first.State != DeadLetterPending || first.Attempts != 3 ||
		len(first.History) != 3 || first.History[2].Attempt != 3 || first.NotRedrivable != "" || string(first.Data) != "1" {
		t.Fatalf("first letter %+v", first)
	}
	shown, err := tb.bus.DeadLetter(ctx, first.Seq)
	if err != nil || shown.EventID != first.EventID {
		t.Fatalf("DeadLetter(%d): %+v, %v", first.Seq, shown, err)
	}
	if _, err := tb.bus.DeadLetter(ctx, 999); !errors.Is(err, ErrNotFound) {
		t.Fatalf("DeadLetter(999): %v, want ErrNotFound", err)
	}
	if _, err := tb.bus.Redrive(ctx, RedriveRequest{Seq: first.Seq}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Redrive without By: %v, want ErrInvalidConfig", err)
	}
	if _, _, err := tb.bus.DeadLetters(ctx, DeadLetterFilter{Subscriber: "no such*"}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("a malformed filter: %v, want ErrInvalidConfig", err)
	}

	broken.Store(false) // the fix is deployed
	res, err := tb.bus.Redrive(ctx, RedriveRequest{Seq: first.Seq, By: "ops@example", Why: "fixed in v2"})
	if err != nil || len(res.Redriven) != 1 {
		t.Fatalf("Redrive: %+v, %v", res, err)
	}
	waitApplied(t, tb.db, "billing", 4)
	again, err := tb.bus.Redrive(ctx, RedriveRequest{Seq: first.Seq, By: "ops@example"})
	if err != nil || len(again.Redriven) != 0 || again.Done != 1 {
		t.Fatalf("second Redrive: %+v, %v; want nothing done", again, err)
	}
	shown, _ = tb.bus.DeadLetter(ctx, first.Seq)
	if shown.State != DeadLetterRedriven || shown.Action == nil || shown.Action.By != "ops@example" || shown.Action.Why != "fixed in v2" {
		t.Fatalf("after the redrive: %+v (action %+v)", shown, shown.Action)
	}
	ok, err := tb.bus.Discard(ctx, letters[1].Seq, "ops@example", "obsolete")
	if err != nil || !ok {
		t.Fatalf("Discard: %v, %v", ok, err)
	}
	if ok, err := tb.bus.Discard(ctx, letters[1].Seq, "ops@example", "twice"); err != nil || ok {
		t.Fatalf("second Discard: %v, %v; want nothing done", ok, err)
	}
	pending, _, err := tb.bus.DeadLetters(ctx, DeadLetterFilter{State: DeadLetterPending})
	if err != nil || len(pending) != 0 {
		t.Fatalf("pending letters after the redrive and the discard: %d (%v)", len(pending), err)
	}
	// The redriven copy went to billing only: audit applied each event once.
	publishN(t, tb.bus, "marker", 1)
	waitApplied(t, tb.db, "audit", 6)
	if n := countApplied(t, tb.db, "audit"); n != 6 {
		t.Fatalf("audit applied %d events, want 6: the redriven copy reached it", n)
	}
	waitApplied(t, tb.db, "billing", 5) // good x3, bad 1 (redriven), marker
	if n := countApplied(t, tb.db, "billing"); n != 5 {
		t.Fatalf("billing applied %d events, want 5", n)
	}
}

// Parked keys: a dead letter holds its key's later events, durably, in
// order, until it is redriven; then they all follow it in their original
// order, with the events that arrived meanwhile after them, and the key is
// free again. Other keys never wait.
func TestParkedKeyKeepsItsOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	var broken atomic.Bool
	opts := SubscribeOptions{ParkKeys: true, MinBackoff: time.Millisecond}
	rec := recordingHandler("billing")
	h := TxHandler(func(ctx context.Context, tx *sql.Tx, m Message) error {
		if m.Key == "k" && string(m.Data) == "2" && broken.Load() {
			return Permanent(errors.New("bad address"))
		}
		return rec.tx(ctx, tx, m)
	})
	if _, err := tb.bus.Subscribe(ctx, "billing", h, opts); err != nil {
		t.Fatal(err)
	}
	broken.Store(true)
	publishN(t, tb.bus, "k", 5)
	publishN(t, tb.bus, "other", 3)
	waitApplied(t, tb.db, "billing", 4) // k:1 and other:1..3
	var held []DeadLetter
	waitFor(t, "k's events parked", time.Minute, func() (bool, string) {
		var err error
		held, _, err = tb.bus.DeadLetters(ctx, DeadLetterFilter{Subscriber: "billing", Key: "k"})
		return err == nil && len(held) == 4, fmt.Sprintf("%d letters, %v", len(held), err)
	})
	if held[0].Reason != "permanent" || held[1].Reason != DeadLetterReasonParked || string(held[3].Data) != "5" {
		t.Fatalf("letters: %+v", held)
	}
	if _, err := tb.bus.Redrive(ctx, RedriveRequest{Seq: held[2].Seq, By: "ops"}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("redriving a held letter alone: %v, want ErrInvalidConfig", err)
	}
	publishN(t, tb.bus, "k", 1) // k:6 arrives while parked
	waitFor(t, "k:6 parked", time.Minute, func() (bool, string) {
		l, _, err := tb.bus.DeadLetters(ctx, DeadLetterFilter{Subscriber: "billing", Key: "k"})
		return err == nil && len(l) == 5, fmt.Sprint(len(l))
	})
	broken.Store(false)
	res, err := tb.bus.Redrive(ctx, RedriveRequest{Seq: held[0].Seq, By: "ops", Why: "address fixed"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Redriven) != 5 {
		t.Fatalf("redrove %v, want the head and the 4 events it held", res.Redriven)
	}
	publishN(t, tb.bus, "k", 2) // k:7, k:8 during the release
	waitApplied(t, tb.db, "billing", 11)
	checkExactlyOnceInOrder(t, tb.db, "billing")
	waitFor(t, "k to be free", time.Minute, func() (bool, string) {
		var n int
		tb.db.QueryRow(`SELECT count(*) FROM boxcar_parked`).Scan(&n)
		return n == 0, strconv.Itoa(n)
	})
	publishN(t, tb.bus, "k", 1)
	waitApplied(t, tb.db, "billing", 12)
	checkExactlyOnceInOrder(t, tb.db, "billing")
}

// DeadLetterDepths counts each subscriber's letters, all and pending; a
// redrive or a discard takes one off the pending count. After an operator
// deletes the dead-letter stream, the bus makes it again and numbers its
// letters from 1 again: the actions recorded for the old letters must not
// mark the new ones (they were shown as redriven, and a redrive did
// nothing).
func TestDeadLetterDepthsAndARecreatedStream(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	broken := subscribeBroken(t, tb, SubscribeOptions{MaxAttempts: 1}, true)
	publishN(t, tb.bus, "bad", 3)
	letters := waitDeadLetters(t, tb.bus, "billing", 3)
	if _, err := tb.bus.Discard(ctx, letters[0].Seq, "test", "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.bus.Discard(ctx, letters[1].Seq, "test", "gone"); err != nil {
		t.Fatal(err)
	}
	depths, err := tb.bus.DeadLetterDepths(ctx)
	if err != nil || depths["billing"] != (DeadLetterDepth{Total: 3, Pending: 1}) || len(depths) != 1 {
		t.Fatalf("depths %+v (%v), want billing 3 in all, 1 pending", depths, err)
	}

	// The operator deletes the dead-letter stream; new letters come.
	if err := tb.bus.js.DeleteStream(ctx, tb.bus.DLQStreamName()); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "bad", 2)
	fresh := waitDeadLetters(t, tb.bus, "billing", 2)
	for _, dl := range fresh {
		if dl.State != DeadLetterPending || dl.Action != nil {
			t.Fatalf("a new letter (seq %d) of a recreated stream is %s (%+v): the old stream's actions leaked onto it", dl.Seq, dl.State, dl.Action)
		}
	}
	depths, err = tb.bus.DeadLetterDepths(ctx)
	if err != nil || depths["billing"] != (DeadLetterDepth{Total: 2, Pending: 2}) {
		t.Fatalf("depths after the stream was recreated %+v (%v), want 2 pending", depths, err)
	}
	broken.Store(false)
	res, err := tb.bus.Redrive(ctx, RedriveRequest{Seq: fresh[0].Seq, By: "test"})
	if err != nil || len(res.Redriven) != 1 {
		t.Fatalf("redrive of a new letter: %+v (%v), want it redriven", res, err)
	}
}

// waitDeadLetters waits for n letters of subscriber and returns them.
func waitDeadLetters(t *testing.T, bus *Bus, subscriber string, n int) []DeadLetter {
	t.Helper()
	var letters []DeadLetter
	waitFor(t, fmt.Sprintf("%d dead letters of %s", n, subscriber), time.Minute, func() (bool, string) {
		var err error
		letters, _, err = bus.DeadLetters(context.Background(), DeadLetterFilter{Subscriber: subscriber})
		return err == nil && len(letters) == n, fmt.Sprintf("%d letters, %v", len(letters), err)
	})
	return letters
}

// Dead letters are read from the stream's leader: a replica that is behind
// would say that a letter an alert just named does not exist, or end the
// list before it. The dead-letter stream allows no direct gets (which any
// replica nearly caught up may answer), so nats.go asks the leader. Here a
// mirror that holds none of the letters is there to answer direct gets
// (MirrorDirect), which the server grants only if the stream allows them: if
// it ever did, the mirror would answer "not found" for the letters below.
func TestDeadLettersAreReadFromTheLeader(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	subscribeBroken(t, tb, SubscribeOptions{MaxAttempts: 1, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}, true)
	publishN(t, tb.bus, "bad", 2)
	letters := waitDeadLetters(t, tb.bus, "billing", 2)
	js := tb.bus.JetStream()
	// The mirror copies one message that is not a letter of billing's, and
	// starts to answer direct gets once it has (if the stream allows them).
	foreign := bjs.DLQPrefix(tb.bus.cfg.SubjectPrefix) + ".nobody.x"
	if _, err := js.Publish(ctx, foreign, []byte("not a letter")); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:         "DLQ_BEHIND",
		Storage:      jetstream.FileStorage,
		Mirror:       &jetstream.StreamSource{Name: tb.bus.DLQStreamName(), FilterSubject: foreign},
		MirrorDirect: true,
	}); err != nil {
		t.Fatal(err)
	}
	dlq, err := js.Stream(ctx, tb.bus.DLQStreamName())
	if err != nil {
		t.Fatal(err)
	}
	if dlq.CachedInfo().Config.AllowDirect {
		// Then the harm shows: wait until the mirror answers for a letter.
		req := fmt.Appendf(nil, `{"seq":%d}`, letters[1].Seq)
		waitFor(t, "the mirror answering direct gets", 10*time.Second, func() (bool, string) {
			m, err := js.Conn().Request("$JS.API.DIRECT.GET."+tb.bus.DLQStreamName(), req, time.Second)
			if err != nil {
				return false, err.Error()
			}
			return m.Header.Get("Status") == "404", "status " + m.Header.Get("Status")
		})
	}
	for i := range 50 {
		got, _, err := tb.bus.DeadLetters(ctx, DeadLetterFilter{Subscriber: "billing"})
		if err != nil || len(got) != 2 {
			t.Fatalf("list %d: %d letters (%v), want 2", i, len(got), err)
		}
		if _, err := tb.bus.DeadLetter(ctx, letters[1].Seq); err != nil {
			t.Fatalf("show %d: letter %d: %v", i, letters[1].Seq, err)
		}
	}
}

// An event as large as PublishTx accepts, with the longest type and key,
// that fails for good is dead-lettered whole, and its redrive delivers it
// whole: the dead letter's own headers must not cost the event part of its
// payload. MaxEventBytes is raised so that the embedded server's max payload
// is sized by it, not by the 1 MiB default that leaves room to spare.
func TestDeadLetterOfTheLargestEventIsWholeAndRedrivable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{MaxEventBytes: 2 << 20})
	typ := strings.Repeat("t", bjs.MaxTypeLen)
	key := strings.Repeat("k", bjs.MaxKeyLen)
	data := bytes.Repeat([]byte{'d'}, tb.bus.cfg.MaxEventBytes)
	var broken atomic.Bool
	broken.Store(true)
	got := make(chan int, 4)
	_, err := tb.bus.Subscribe(ctx, "billing", TxHandler(func(ctx context.Context, tx *sql.Tx, m Message) error {
		if broken.Load() {
			return Permanent(errors.New(strings.Repeat("no ", 400))) // a long error, as real ones are
		}
		got <- len(m.Data)
		return nil
	}), SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.bus.Publish(ctx, Event{Type: typ, Key: key, Data: data}); err != nil {
		t.Fatalf("Publish of an event at MaxEventBytes: %v", err)
	}
	var letters []DeadLetter
	waitFor(t, "the dead letter", time.Minute, func() (bool, string) {
		letters, _, err = tb.bus.DeadLetters(ctx, DeadLetterFilter{Subscriber: "billing"})
		return err == nil && len(letters) == 1, fmt.Sprintf("%d letters, %v", len(letters), err)
	})
	dl, err := tb.bus.DeadLetter(ctx, letters[0].Seq)
	if err != nil {
		t.Fatal(err)
	}
	if dl.NotRedrivable != "" || len(dl.Data) != len(data) {
		t.Fatalf("the dead letter holds %d of %d bytes, not redrivable: %q", len(dl.Data), len(data), dl.NotRedrivable)
	}
	broken.Store(false)
	if _, err := tb.bus.Redrive(ctx, RedriveRequest{Seq: dl.Seq, By: "test"}); err != nil {
		t.Fatalf("Redrive: %v", err)
	}
	select {
	case n := <-got:
		if n != len(data) {
			t.Fatalf("the redriven copy carried %d of %d bytes", n, len(data))
		}
	case <-time.After(time.Minute):
		st, _ := tb.bus.Stats(ctx)
		t.Fatalf("the redriven copy never arrived; set aside: %d", st.RelaySetAside)
	}
}

// A State filter is applied before Limit counts a letter: pending letters
// behind acted-on ones fill the page (they came back short, or empty with
// a next page, which made the status page say "None"). After at the
// largest seq returns nothing, not every letter from the first.
func TestDeadLettersFilterByStateFillsThePage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	subscribeBroken(t, tb, SubscribeOptions{}, true)
	publishN(t, tb.bus, "bad", 12)
	var letters []DeadLetter
	waitFor(t, "12 dead letters", time.Minute, func() (bool, string) {
		var err error
		letters, _, err = tb.bus.DeadLetters(ctx, DeadLetterFilter{Subscriber: "billing"})
		return err == nil && len(letters) == 12, fmt.Sprintf("%d letters, %v", len(letters), err)
	})
	for _, dl := range letters[:9] {
		if ok, err := tb.bus.Discard(ctx, dl.Seq, "test", "noise"); err != nil || !ok {
			t.Fatalf("Discard(%d): %v, %v", dl.Seq, ok, err)
		}
	}
	page, next, err := tb.bus.DeadLetters(ctx, DeadLetterFilter{State: DeadLetterPending, Limit: 2})
	if err != nil || len(page) != 2 || page[0].Seq != letters[9].Seq || page[1].Seq != letters[10].Seq {
		t.Fatalf("first page of pending letters: %d letters (%v), next %d; want letters %d and %d", len(page), err, next, letters[9].Seq, letters[10].Seq)
	}
	page, _, err = tb.bus.DeadLetters(ctx, DeadLetterFilter{State: DeadLetterPending, Limit: 2, After: next})
	if err != nil || len(page) != 1 || page[0].Seq != letters[11].Seq {
		t.Fatalf("second page: %d letters (%v); want letter %d", len(page), err, letters[11].Seq)
	}
	if page, next, err := tb.bus.DeadLetters(ctx, DeadLetterFilter{After: math.MaxUint64}); err != nil || len(page) != 0 || next != 0 {
		t.Fatalf("after the largest seq: %d letters, next %d, %v; want none", len(page), next, err)
	}
}

// A page of letters is bounded in bytes, not only in letters: twelve
// letters of 900 KiB asked for with Limit 1000 come as pages of at most
// MaxPageBytes and one letter, each with the Seq to go on from, and paging
// lists every letter once, in order. The same holds for the events the
// relay set aside, which are the large ones by nature. Before, one call held
// every letter asked for: a thousand letters of a megabyte, a gigabyte.
func TestPagesOfLettersAreBoundedInBytes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	subscribeBroken(t, tb, SubscribeOptions{}, true)
	const n, size = 12, 900 << 10
	for i := range n {
		data := bytes.Repeat([]byte{'a' + byte(i)}, size)
		if err := tb.bus.Publish(ctx, Event{Type: "order.placed", Key: "bad", Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	var seqs []uint64
	waitFor(t, "12 dead letters", time.Minute, func() (bool, string) {
		seqs = seqs[:0]
		for after := uint64(0); ; {
			page, next, err := tb.bus.DeadLetters(ctx, DeadLetterFilter{After: after, Limit: 1000})
			if err != nil {
				return false, err.Error()
			}
			if len(page) == 0 && next != 0 {
				return false, fmt.Sprintf("an empty page after %d with next %d", after, next)
			}
			total := 0
			for _, dl := range page {
				if len(dl.Data) != size || dl.Data[0] != 'a'+byte(len(seqs)) {
					t.Fatalf("letter %d: %d bytes of %q; want %d of %q (in publish order)", dl.Seq, len(dl.Data), dl.Data[:1], size, 'a'+byte(len(seqs)))
				}
				total += dl.size()
				seqs = append(seqs, dl.Seq)
			}
			if len(page) > 1 && total-page[len(page)-1].size() >= MaxPageBytes {
				t.Fatalf("a page of %d letters holds %d bytes: past MaxPageBytes (%d) before its last letter", len(page), total, MaxPageBytes)
			}
			if next == 0 {
				break
			}
			after = next
		}
		return len(seqs) == n, fmt.Sprintf("%d letters", len(seqs))
	})
	if !slices.IsSorted(seqs) || len(slices.Compact(slices.Clone(seqs))) != n {
		t.Fatalf("letters listed by the pages: %v; want %d distinct, in order", seqs, n)
	}
	first, next, err := tb.bus.DeadLetters(ctx, DeadLetterFilter{Limit: 1000})
	if err != nil || len(first) >= n || next != first[len(first)-1].Seq {
		t.Fatalf("the first page: %d letters, next %d, %v; want fewer than %d, and next its last letter's seq", len(first), next, err, n)
	}
	// The relay's set-aside events: the stream's limit is lowered under
	// them, so all twelve are set aside.
	updateStream(t, tb.bus, func(c *jetstream.StreamConfig) { c.MaxMsgSize = 2000 })
	for i := range n {
		if err := tb.bus.Publish(ctx, Event{Type: "order.placed", Key: "big", Data: bytes.Repeat([]byte{'a' + byte(i)}, size)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "12 events set aside", time.Minute, func() (bool, string) {
		st, err := tb.bus.Stats(ctx)
		return err == nil && st.OutboxDead == n, fmt.Sprint(st.OutboxDead, err)
	})
	var ids []string
	afterSeq, afterID := int64(0), ""
	for pages := 0; ; pages++ {
		page, total, more, err := tb.bus.OutboxDeadLetters(ctx, afterSeq, afterID, 1000)
		if err != nil || total != n {
			t.Fatalf("OutboxDeadLetters: %d in all, %v; want %d", total, err, n)
		}
		if pages == 0 && (len(page) >= n || !more) {
			t.Fatalf("the first page of set-aside events: %d of them, more %v; want fewer than %d, and more", len(page), more, n)
		}
		size := 0
		for _, d := range page {
			if d.Data[0] != 'a'+byte(len(ids)) {
				t.Fatalf("set-aside event %d holds %q; want %q (in publish order)", d.Seq, d.Data[:1], 'a'+byte(len(ids)))
			}
			size += len(d.Data)
			ids = append(ids, d.ID)
		}
		if len(page) > 1 && size-len(page[len(page)-1].Data) >= MaxPageBytes {
			t.Fatalf("a page of %d set-aside events holds %d bytes: past MaxPageBytes before its last", len(page), size)
		}
		if !more {
			break
		}
		if len(page) == 0 {
			t.Fatal("an empty page of set-aside events says more follow")
		}
		afterSeq, afterID = page[len(page)-1].Seq, page[len(page)-1].ID
	}
	if len(ids) != n || len(slices.Compact(slices.Clone(ids))) != n {
		t.Fatalf("set-aside events listed by the pages: %d (%v); want %d distinct", len(ids), ids, n)
	}

	// A redrive of the subscriber reads them a letter at a time, and
	// redrives all twelve, in order (their copies are set aside:
	// the stream's limit is still lowered).
	res, err := tb.bus.Redrive(ctx, RedriveRequest{Subscriber: "billing", By: "test", Why: "fixed"})
	if err != nil || !slices.Equal(res.Redriven, seqs) || res.Done != 0 {
		t.Fatalf("Redrive of billing: %+v, %v; want letters %v redriven", res, err, seqs)
	}
	for _, seq := range seqs {
		if dl, err := tb.bus.DeadLetter(ctx, seq); err != nil || dl.State != DeadLetterRedriven {
			t.Fatalf("letter %d after the redrive: %v, %v; want redriven", seq, dl.State, err)
		}
	}
}

// remakingDLQ makes the dead-letter stream again, with its first letter
// copied into it, at the call of Stream for it after it is armed (a
// subscriber's Redrive: its listing is the first, the second pass's first
// read the second).
type remakingDLQ struct {
	jetstream.JetStream
	t     *testing.T
	name  string
	armed atomic.Bool
	calls atomic.Int32
}

func (r *remakingDLQ) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	if name != r.name || !r.armed.Load() || r.calls.Add(1) != 2 {
		return r.JetStream.Stream(ctx, name)
	}
	old, err := r.JetStream.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	first, err := old.GetMsg(ctx, 1)
	if err != nil {
		r.t.Errorf("read letter 1: %v", err)
		return old, nil
	}
	cfg := old.CachedInfo().Config
	if err := r.JetStream.DeleteStream(ctx, name); err != nil {
		r.t.Errorf("delete the dead-letter stream: %v", err)
	}
	if _, err := r.JetStream.CreateStream(ctx, cfg); err != nil {
		r.t.Errorf("make the dead-letter stream again: %v", err)
	}
	if _, err := r.JetStream.PublishMsg(ctx, &nats.Msg{Subject: first.Subject, Header: first.Header, Data: first.Data}); err != nil {
		r.t.Errorf("copy letter 1: %v", err)
	}
	return r.JetStream.Stream(ctx, name)
}

// A Redrive of a subscriber reads each letter again to redrive it: if the
// dead-letter stream was made again meanwhile, its seq names another
// letter, of the same subscriber and key here. The redrive stops, with
// nothing redriven, instead of redriving the new stream's letter (a
// reviewer made it a letter cut to fit the server's limits: its partial
// payload went to the outbox).
func TestRedriveOfASubscriberStopsWhenTheDeadLetterStreamIsMadeAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	remake := &remakingDLQ{t: t}
	cfg := Config{}
	cfg.seams = &testSeams{wrapJetStream: func(js jetstream.JetStream) jetstream.JetStream {
		remake.JetStream = js
		return remake
	}}
	tb := setup(t, cfg)
	remake.name = tb.bus.DLQStreamName()
	subscribeBroken(t, tb, SubscribeOptions{}, true)
	publishN(t, tb.bus, "bad", 2)
	waitFor(t, "2 dead letters", time.Minute, func() (bool, string) {
		letters, _, err := tb.bus.DeadLetters(ctx, DeadLetterFilter{})
		return err == nil && len(letters) == 2, fmt.Sprint(len(letters), err)
	})
	outbox := func() (n int) {
		if err := tb.db.QueryRow(`SELECT count(*) FROM boxcar_outbox`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := outbox()
	remake.armed.Store(true)
	res, err := tb.bus.Redrive(ctx, RedriveRequest{Subscriber: "billing", By: "test", Why: "fixed"})
	if remake.calls.Load() < 2 {
		t.Fatalf("the dead-letter stream was not made again (%d reads of it)", remake.calls.Load())
	}
	if err == nil || !strings.Contains(err.Error(), "made again") || len(res.Redriven) != 0 {
		t.Fatalf("Redrive of billing across a dead-letter stream made again: %+v, %v; want an error saying so, nothing redriven", res, err)
	}
	if n := outbox(); n != before {
		t.Fatalf("the outbox holds %d rows, %d before the redrive: a copy was written", n, before)
	}
}

// A parked key's release checks the letters it holds as a redrive checks
// its letter: one that lost part of its event (cut to fit the server's
// limits) stops the release, naming it, with nothing redriven; once it is
// discarded, the release goes on. Before, its partial payload was redriven
// with the others (a reviewer's find, read in the code).
func TestReleaseRefusesAHeldLetterThatLostPartOfItsEvent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	broken := new(atomic.Bool)
	broken.Store(true)
	if _, err := tb.bus.Subscribe(ctx, "billing", failingHandler("billing", "k", broken, true), SubscribeOptions{ParkKeys: true}); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 3)
	var letters []DeadLetter
	waitFor(t, "k's head and 2 held letters", time.Minute, func() (bool, string) {
		var err error
		letters, _, err = tb.bus.DeadLetters(ctx, DeadLetterFilter{Subscriber: "billing", Key: "k"})
		return err == nil && len(letters) == 3, fmt.Sprint(len(letters), err)
	})
	// A held letter whose copy lost part of its payload, as one cut to fit
	// an external server's limits is.
	dlq, err := tb.bus.js.Stream(ctx, tb.bus.DLQStreamName())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := dlq.GetMsg(ctx, letters[2].Seq)
	if err != nil {
		t.Fatal(err)
	}
	h := raw.Header
	h.Set(bjs.HeaderTruncated, "100")
	h.Del(jetstream.MsgIDHeader)
	ack, err := tb.bus.js.PublishMsg(ctx, &nats.Msg{Subject: raw.Subject, Header: h, Data: raw.Data[:1]})
	if err != nil {
		t.Fatal(err)
	}
	cut, err := tb.bus.DeadLetter(ctx, ack.Sequence)
	if err != nil || cut.Reason != DeadLetterReasonParked || cut.NotRedrivable == "" {
		t.Fatalf("the cut letter: %+v, %v; want a held letter that cannot be redriven", cut, err)
	}
	broken.Store(false)
	res, err := tb.bus.Redrive(ctx, RedriveRequest{Seq: letters[0].Seq, By: "ops", Why: "fixed"})
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), strconv.FormatUint(cut.Seq, 10)) || len(res.Redriven) != 0 {
		t.Fatalf("releasing the key: %+v, %v; want ErrInvalidConfig naming letter %d, nothing redriven", res, err, cut.Seq)
	}
	if ok, err := tb.bus.Discard(ctx, cut.Seq, "ops", "cut"); err != nil || !ok {
		t.Fatalf("Discard(%d): %v, %v", cut.Seq, ok, err)
	}
	res, err = tb.bus.Redrive(ctx, RedriveRequest{Seq: letters[0].Seq, By: "ops", Why: "fixed"})
	if err != nil || len(res.Redriven) != 3 {
		t.Fatalf("releasing the key once the cut letter is discarded: %+v, %v; want the head and its 2 held letters", res, err)
	}
}
