package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/boxcar-bus/boxcar"
)

// Rehearsals of the runbook's sections 2 (out of order), 3 (duplicates)
// and 4 (poison events).

// failWhile makes a handler's fail function: while bug is set, an event
// whose key is in keys (or whose data is data, when keys is empty) fails
// for good.
func failWhile(bug *atomic.Bool, data string, keys ...string) func(boxcar.Message) error {
	return func(m boxcar.Message) error {
		hit := slices.Contains(keys, m.Key) || len(keys) == 0 && string(m.Data) == data
		if hit && bug.Load() {
			return boxcar.Permanent(fmt.Errorf("bug: cannot handle %s %s", m.Key, m.Data))
		}
		return nil
	}
}

// letterOf returns the dead letter of subscriber with key and data.
func (s *stage) letterOf(subscriber, key, data string) boxcar.DeadLetter {
	s.t.Helper()
	dl, _, err := s.bus.DeadLetters(context.Background(), boxcar.DeadLetterFilter{Subscriber: subscriber, Key: key})
	if err != nil {
		s.t.Fatal(err)
	}
	for _, d := range dl {
		if string(d.Data) == data {
			return d
		}
	}
	s.t.Fatalf("no dead letter of %s %s %s in %+v", subscriber, key, data, dl)
	return boxcar.DeadLetter{}
}

func seqs(dl ...boxcar.DeadLetter) []uint64 {
	var out []uint64
	for _, d := range dl {
		out = append(out, d.Seq)
	}
	return out
}

// 2: a last-write-wins projection without ParkKeys dead-letters u1's
// first event and applies its second; redriving the first would put the
// old value back: it is discarded.
func rehearseOutOfOrder(t *testing.T, r *rehearsal) {
	s := newStage(t, rehearsalConfig())
	r.online(s.url, s.token)
	if _, err := s.db.Exec(`CREATE TABLE profiles (key TEXT PRIMARY KEY, data TEXT)`); err != nil {
		t.Fatal(err)
	}
	var bug atomic.Bool
	bug.Store(true)
	s.subscribe("profiles", apply("profiles", failWhile(&bug, "v1"), func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
		_, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO profiles VALUES (?, ?)`, m.Key, string(m.Data))
		return err
	}), boxcar.SubscribeOptions{MaxAttempts: 1})
	s.publish(order("u1", "v1"), order("u1", "v2"))
	s.waitDeadLetters(1)
	s.waitEffects("profiles", map[string][]string{"u1": {"v2"}})
	bug.Store(false)
	seq := num(s.letterOf("profiles", "u1", "v1").Seq)

	// Step 1.
	var dl boxcar.DeadLetter
	r.json("boxcar dlq show SEQ", &dl, "SEQ", seq)
	if dl.Key != "u1" || dl.Type != "order.placed" || dl.StreamSeq != 1 || dl.Created.IsZero() {
		t.Fatalf("dlq show: %+v", dl)
	}
	mustContain(t, "dlq show", r.ok("boxcar dlq show SEQ", "SEQ", seq).stdout, "u1")
	// Step 2: the key's letters; the app's data has its later event.
	var ls dlqListJSON
	r.json("boxcar dlq ls", &ls)
	if len(ls.Items) != 1 || ls.Items[0].Key != "u1" {
		t.Fatalf("dlq ls: %+v", ls.Items)
	}
	r.ok("boxcar dlq ls")
	if got := s.profiles(); got != "u1=v2" {
		t.Fatalf("profiles %s", got)
	}
	// Step 3: superseded: discarded.
	var d discardJSON
	r.json(`boxcar dlq discard SEQ --why "superseded by later events of K"`, &d, "SEQ", seq)
	if !d.Discarded {
		t.Fatal("discard: not discarded")
	}
	after, err := s.bus.DeadLetter(context.Background(), dl.Seq)
	if err != nil || after.State != boxcar.DeadLetterDiscarded || after.Action == nil || after.Action.Why != "superseded by later events of K" {
		t.Fatalf("after discard: %+v %v", after, err)
	}
	s.waitCaughtUp()
	if got := s.profiles(); got != "u1=v2" {
		t.Fatalf("profiles after the discard: %s, want the newer value kept", got)
	}
	s.waitEffects("profiles", map[string][]string{"u1": {"v2"}})
}

// 3: duplicates cannot be made to reach a TxHandler through the public
// API (the stream holds each event once, and the dedupe table stops a
// redelivery); what is rehearsed is reading the numbers and the section's
// replay with dedupe: every event skipped, nothing applied again.
func rehearseDuplicate(t *testing.T, r *rehearsal) {
	s := newStage(t, rehearsalConfig())
	r.online(s.url, s.token)
	s.subscribe("billing", apply("billing", nil), boxcar.SubscribeOptions{})
	s.publish(order("k", "1"), order("k", "2"), order("j", "1"))
	want := map[string][]string{"k": {"1", "2"}, "j": {"1"}}
	s.waitEffects("billing", want)
	s.waitCaughtUp()

	// Step 1.
	mustContain(t, "subscribers", r.ok("boxcar subscribers").stdout, "billing")
	si, _ := r.subscriberInfo("billing")
	if si.Kind != "tx" || si.Stats == nil || si.Stats.Redelivered != 0 || si.Stats.Ignored != 0 || si.Stats.Skipped != 0 {
		t.Fatalf("billing: %+v %+v", si, si.Stats)
	}
	okBefore := s.mustMetric("boxcar_subscriber_handled_total", "subscriber", "billing", "result", "ok")

	// The rehearsal: a replay with dedupe skips all three.
	res := r.ok("boxcar replay S --from-stream-seq 1", "S", "billing")
	mustContain(t, "replay", res.stderr, "replay of billing started: stream seqs 1 to 3", "done")
	waitFor(t, "3 skipped", func() (bool, string) {
		v, _ := s.metric("boxcar_subscriber_handled_total", "subscriber", "billing", "result", "skipped")
		return v == 3, fmt.Sprint(v)
	})
	if v := s.mustMetric("boxcar_subscriber_handled_total", "subscriber", "billing", "result", "ok"); v != okBefore {
		t.Errorf("handled ok %v after the replay, was %v", v, okBefore)
	}
	s.waitEffects("billing", want)
	if si, _ := r.subscriberInfo("billing"); si.Stats.Skipped != 3 {
		t.Errorf("billing skipped %d, want 3", si.Stats.Skipped)
	}
}

// 4.1: the server's max message size is lowered after an event was
// committed; the relay sets it aside and goes on. The limit is restored and
// the app publishes a replacement that carries a reference.
func rehearseSetAside(t *testing.T, r *rehearsal) {
	s := newStage(t, rehearsalConfig())
	r.online(s.url, s.token)
	ctx := context.Background()
	s.subscribe("billing", apply("billing", nil), boxcar.SubscribeOptions{})
	s.updateStream(func(c *jetstream.StreamConfig, st jetstream.StreamState) { c.MaxMsgSize = 2000 })
	huge := strings.Repeat("x", 4000)
	s.publish(order("invoice-7", huge), order("k", "1"))
	s.waitEffects("billing", map[string][]string{"k": {"1"}})
	h := r.waitHealth("outbox", "", boxcar.HealthLosing)
	if c := component(t, h, "outbox", ""); !strings.Contains(strings.Join(c.Reasons, ";"), "1 events that cannot be published") {
		t.Errorf("outbox: %+v", c)
	}
	if v := s.mustMetric("boxcar_relay_set_aside_total"); v != 1 {
		t.Errorf("boxcar_relay_set_aside_total %v", v)
	}

	// Step 1.
	var dead outboxDeadJSON
	r.json("boxcar outbox ls --dead", &dead)
	if dead.Total != 1 {
		t.Fatalf("outbox ls --dead: %+v", dead)
	}
	d := dead.Items[0]
	if d.Seq == 0 || d.ID == "" || d.Type != "order.placed" || d.Key != "invoice-7" || d.Reason != "too_large" || d.Error == "" || d.SetAt.IsZero() || string(d.Data) != huge {
		t.Fatalf("set aside: %+v", d)
	}
	mustContain(t, "outbox ls --dead", r.ok("boxcar outbox ls --dead").stdout, "too_large")
	// Steps 2 and 3: the limit back; a replacement that fits, its payload
	// in a table of the app's, in a transaction of its own.
	s.updateStream(func(c *jetstream.StreamConfig, st jetstream.StreamState) { c.MaxMsgSize = -1 })
	if _, err := s.db.Exec(`CREATE TABLE blobs (id TEXT PRIMARY KEY, data TEXT)`); err != nil {
		t.Fatal(err)
	}
	err := s.bus.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO blobs VALUES (?, ?)`, d.ID, string(d.Data)); err != nil {
			return err
		}
		return s.bus.PublishTx(ctx, tx, order(d.Key, "blob:"+d.ID))
	})
	if err != nil {
		t.Fatal(err)
	}
	// Step 4.
	s.waitEffects("billing", map[string][]string{"k": {"1"}, "invoice-7": {"blob:" + d.ID}})
	var st statusJSON
	r.json("boxcar status", &st)
	if st.Stats.RelaySetAside != 1 || st.Stats.OutboxLag != 0 {
		t.Errorf("status: %+v", st.Stats)
	}
	mustContain(t, "status", r.ok("boxcar status").stdout, "RELAY")
	r.waitHealth("outbox", "", boxcar.HealthOK)
}

// 4.2: a handler's dependency is down: its key retries, the key's later
// events wait, other keys go on; it comes back, the key goes on.
func rehearseRetrying(t *testing.T, r *rehearsal) {
	s := newStage(t, rehearsalConfig())
	r.online(s.url, s.token)
	var depDown atomic.Bool
	depDown.Store(true)
	s.subscribe("ledger", apply("ledger", func(m boxcar.Message) error {
		if m.Key == "acct" && depDown.Load() {
			return errors.New("ledger database unreachable")
		}
		return nil
	}), boxcar.SubscribeOptions{MaxAttempts: 100000, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	s.publish(order("acct", "1"), order("acct", "2"), order("other", "1"))
	s.waitEffects("ledger", map[string][]string{"other": {"1"}})

	// Step 1: twice, the failures grow.
	first, _ := r.subscriberInfo("ledger")
	waitFor(t, "failures growing", func() (bool, string) {
		si, _ := r.subscriberInfo("ledger")
		return si.Stats.Failures > first.Stats.Failures, fmt.Sprint(si.Stats.Failures)
	})
	// stuck_keys counts the keys waiting out a backoff (not those in an
	// attempt): read until one is seen, here and in the metric.
	waitFor(t, "ledger's stuck key", func() (bool, string) {
		si, _ := r.subscriberInfo("ledger")
		return si.Stats.StuckKeys == 1, fmt.Sprintf("%+v", si.Stats)
	})
	mustContain(t, "subscribers", r.ok("boxcar subscribers").stdout, "ledger")
	waitFor(t, "boxcar_subscriber_stuck_keys 1", func() (bool, string) {
		v := s.mustMetric("boxcar_subscriber_stuck_keys", "subscriber", "ledger")
		return v == 1, fmt.Sprint(v)
	})
	if v := s.mustMetric("boxcar_subscriber_handled_total", "subscriber", "ledger", "result", "failed"); v < 1 {
		t.Errorf("handled failed %v", v)
	}
	// Step 3: the dependency comes back.
	depDown.Store(false)
	// Step 4.
	s.waitEffects("ledger", map[string][]string{"acct": {"1", "2"}, "other": {"1"}})
	waitFor(t, "no stuck key", func() (bool, string) {
		si, _ := r.subscriberInfo("ledger")
		return si.Stats.StuckKeys == 0, fmt.Sprint(si.Stats.StuckKeys)
	})
	if v := s.mustMetric("boxcar_subscriber_handled_total", "subscriber", "ledger", "result", "ok"); v != 3 {
		t.Errorf("handled ok %v, want 3", v)
	}
}

// 4.3: a bug dead-letters five events of four keys; after the fix they
// are redriven one, by key, by subscriber, or discarded; each redriven
// event is applied once, and a second redrive does nothing.
func rehearseDeadLetter(t *testing.T, r *rehearsal) {
	s := newStage(t, rehearsalConfig())
	r.online(s.url, s.token)
	var bug atomic.Bool
	bug.Store(true)
	s.subscribe("billing", apply("billing", failWhile(&bug, "", "a", "b", "c", "d")), boxcar.SubscribeOptions{MaxAttempts: 1})
	s.publish(order("a", "1"), order("b", "1"), order("b", "2"), order("c", "1"), order("d", "1"), order("ok", "1"))
	s.waitDeadLetters(5)
	s.waitEffects("billing", map[string][]string{"ok": {"1"}})

	// Step 1.
	var ls dlqListJSON
	r.json("boxcar dlq ls", &ls)
	if len(ls.Items) != 5 {
		t.Fatalf("dlq ls: %+v", ls.Items)
	}
	for _, d := range ls.Items {
		if d.Subscriber != "billing" || d.Reason != "permanent" || !strings.Contains(d.Error, "bug") || d.State != boxcar.DeadLetterPending {
			t.Errorf("letter %+v", d)
		}
	}
	mustContain(t, "dlq ls", r.ok("boxcar dlq ls").stdout, "billing", "permanent")
	if v := s.mustMetric("boxcar_subscriber_dead_letters_pending", "subscriber", "billing"); v != 5 {
		t.Errorf("dead_letters_pending %v, want 5", v)
	}
	a, b1, b2, d := s.letterOf("billing", "a", "1"), s.letterOf("billing", "b", "1"), s.letterOf("billing", "b", "2"), s.letterOf("billing", "d", "1")

	// Step 2.
	var shown boxcar.DeadLetter
	r.json("boxcar dlq show SEQ", &shown, "SEQ", num(a.Seq))
	if shown.Error == "" || len(shown.History) != 1 || shown.Attempts != 1 || string(shown.Data) != "1" || shown.StreamSeq != 1 || shown.OutboxSeq != 1 || shown.NotRedrivable != "" {
		t.Fatalf("dlq show: %+v", shown)
	}
	mustContain(t, "dlq show", r.ok("boxcar dlq show SEQ", "SEQ", num(a.Seq)).stdout, "bug")

	bug.Store(false)
	redriveEachWay(t, r, s, a, b1, b2, d)

	// Step 4.
	s.waitEffects("billing", map[string][]string{"ok": {"1"}, "a": {"1"}, "b": {"1", "2"}, "c": {"1"}})
	waitFor(t, "no letter pending", func() (bool, string) {
		v := s.mustMetric("boxcar_subscriber_dead_letters_pending", "subscriber", "billing")
		return v == 0, fmt.Sprint(v)
	})
	if v := s.mustMetric("boxcar_subscriber_dead_letters_stored", "subscriber", "billing"); v != 5 {
		t.Errorf("dead_letters_stored %v, want 5", v)
	}
	if n := s.redrivenEffects("billing"); n != 4 {
		t.Errorf("%d effects with Message.Redriven, want 4", n)
	}
	var res boxcar.RedriveResult
	r.json("boxcar dlq redrive SEQ", &res, "SEQ", num(a.Seq))
	if len(res.Redriven) != 0 || res.Done != 1 {
		t.Fatalf("second redrive: %+v", res)
	}
	r.ok("boxcar dlq redrive SEQ", "SEQ", num(a.Seq))
	s.waitCaughtUp()
	s.waitEffects("billing", map[string][]string{"ok": {"1"}, "a": {"1"}, "b": {"1", "2"}, "c": {"1"}})
}

// redrivenEffects counts sub's effects of events handled as redriven.
func (s *stage) redrivenEffects(sub string) int {
	s.t.Helper()
	var n int
	if err := s.db.QueryRow(`SELECT count(*) FROM effects WHERE subscriber = ? AND redriven`, sub).Scan(&n); err != nil {
		s.t.Fatal(err)
	}
	return n
}

// 4.4: with ParkKeys, a bug dead-letters the first event of three keys
// and parks them; their later events are held. Released three ways: the
// head redriven, the key redriven, the head discarded. Per-key order holds.
func rehearseParkedKey(t *testing.T, r *rehearsal) {
	s := newStage(t, rehearsalConfig())
	r.online(s.url, s.token)
	var bug atomic.Bool
	bug.Store(true)
	s.subscribe("ledger", apply("ledger", failWhile(&bug, "first")), boxcar.SubscribeOptions{MaxAttempts: 1, ParkKeys: true})
	for _, k := range []string{"k1", "k2", "k3"} {
		s.publish(order(k, "first"), order(k, "second"), order(k, "third"))
	}
	s.publish(order("other", "first-ok"))
	s.waitDeadLetters(9)
	s.waitEffects("ledger", map[string][]string{"other": {"first-ok"}})
	bug.Store(false)

	// Step 1.
	mustContain(t, "subscribers", r.ok("boxcar subscribers").stdout, "ledger")
	if si, _ := r.subscriberInfo("ledger"); si.ParkedKeys != 3 {
		t.Fatalf("ledger: parked_keys %d, want 3", si.ParkedKeys)
	}
	if v := s.mustMetric("boxcar_subscriber_parked_keys", "subscriber", "ledger"); v != 3 {
		t.Errorf("boxcar_subscriber_parked_keys %v", v)
	}
	var ls dlqListJSON
	r.json("boxcar dlq ls", &ls)
	r.ok("boxcar dlq ls")
	heads := map[string]boxcar.DeadLetter{}
	for _, d := range ls.Items {
		if d.Reason != "parked" {
			heads[d.Key] = d
		}
	}
	for _, d := range ls.Items {
		if d.Reason == "parked" && !strings.Contains(d.Error, fmt.Sprintf("parked behind dead letter %d", heads[d.Key].Seq)) {
			t.Errorf("parked letter %+v does not name its head %d", d, heads[d.Key].Seq)
		}
	}
	if len(heads) != 3 || heads["k1"].Reason != "permanent" {
		t.Fatalf("heads %+v", heads)
	}
	held := func(k string) []uint64 {
		return seqs(heads[k], s.letterOf("ledger", k, "second"), s.letterOf("ledger", k, "third"))
	}

	// Step 3: a held letter alone is refused; then the three ways.
	if res := r.run("boxcar dlq redrive SEQ", []string{"SEQ", num(s.letterOf("ledger", "k1", "second").Seq)}); res.code != exitFailed || !strings.Contains(res.stderr, "(invalid)") || !strings.Contains(res.stderr, "held behind the head of its parked key") {
		t.Fatalf("redrive of a held letter: %s", res)
	}
	var res boxcar.RedriveResult
	want := held("k1")
	r.json("boxcar dlq redrive SEQ", &res, "SEQ", num(heads["k1"].Seq))
	if !slices.Equal(res.Redriven, want) {
		t.Fatalf("redrive of k1's head: %+v, want %v", res, want)
	}
	res, want = boxcar.RedriveResult{}, held("k2")
	r.json("boxcar dlq redrive --subscriber S --key K", &res, "S", "ledger", "K", "k2")
	if !slices.Equal(res.Redriven, want) {
		t.Fatalf("redrive of k2: %+v, want %v", res, want)
	}
	var disc discardJSON
	r.json("boxcar dlq discard SEQ --why W", &disc, "SEQ", num(heads["k3"].Seq), "W", "order cancelled")
	if !disc.Discarded {
		t.Fatal("discard of k3's head: not discarded")
	}

	// Step 4.
	all := []string{"first", "second", "third"}
	s.waitEffects("ledger", map[string][]string{"other": {"first-ok"}, "k1": all, "k2": all, "k3": all[1:]})
	waitFor(t, "no parked key, no letter pending", func() (bool, string) {
		si, _ := r.subscriberInfo("ledger")
		v := s.mustMetric("boxcar_subscriber_dead_letters_pending", "subscriber", "ledger")
		return si.ParkedKeys == 0 && v == 0, fmt.Sprint(si.ParkedKeys, v)
	})
	if v := s.mustMetric("boxcar_subscriber_handled_total", "subscriber", "ledger", "result", "ok"); v != 9 {
		t.Errorf("handled ok %v, want 9 (1 + the 8 redriven)", v)
	}
}

// redriveEachWay is 4.3's step 3 after the fix: a redriven alone, b by
// key, d discarded, the rest (c) by subscriber.
func redriveEachWay(t *testing.T, r *rehearsal, s *stage, a, b1, b2, d boxcar.DeadLetter) {
	ctx := context.Background()
	// Step 3: the fix is deployed (the caller), then each way.
	var res boxcar.RedriveResult
	r.json("boxcar dlq redrive SEQ", &res, "SEQ", num(a.Seq))
	if !slices.Equal(res.Redriven, []uint64{a.Seq}) || res.Done != 0 {
		t.Fatalf("redrive one: %+v", res)
	}
	if got, _ := s.bus.DeadLetter(ctx, a.Seq); got.State != boxcar.DeadLetterRedriven {
		t.Errorf("a: state %s", got.State)
	}
	res = boxcar.RedriveResult{}
	r.json("boxcar dlq redrive --subscriber S [--key K]", &res, "S", "billing", "K", "b")
	if !slices.Equal(res.Redriven, seqs(b1, b2)) || res.Done != 0 {
		t.Fatalf("redrive of key b: %+v, want %v", res, seqs(b1, b2))
	}
	var disc discardJSON
	r.json(`boxcar dlq discard SEQ --why "refund issued by hand"`, &disc, "SEQ", num(d.Seq))
	if got, _ := s.bus.DeadLetter(ctx, d.Seq); !disc.Discarded || got.State != boxcar.DeadLetterDiscarded || got.Action == nil || got.Action.Why != "refund issued by hand" {
		t.Fatalf("discard: %+v %+v", disc, got)
	}
	res = boxcar.RedriveResult{}
	r.json("boxcar dlq redrive --subscriber S [--key K]", &res, "S", "billing")
	if c := s.letterOf("billing", "c", "1"); !slices.Equal(res.Redriven, []uint64{c.Seq}) || res.Done != 4 {
		t.Fatalf("redrive of billing: %+v, want [%d] and 4 done before", res, c.Seq)
	}
}
