package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/boxcar-bus/boxcar"
)

// Rehearsals of the runbook's first look and of section 1, lost messages.

// The first look: status, health and subscribers of a healthy bus say so.
func rehearseFirstLook(t *testing.T, r *rehearsal) {
	s := newStage(t, rehearsalConfig())
	r.online(s.url, s.token)
	s.subscribe("billing", apply("billing", nil), boxcar.SubscribeOptions{})
	s.publish(order("k", "1"), order("k", "2"))
	s.waitEffects("billing", map[string][]string{"k": {"1", "2"}})
	s.waitCaughtUp()

	mustContain(t, "status", r.ok("boxcar status").stdout, "RELAY", "billing")
	var st statusJSON
	r.json("boxcar status", &st)
	if st.Stats.OutboxLag != 0 || st.Stats.RelayPublished != 2 || st.Health.State != boxcar.HealthOK {
		t.Fatalf("status of a healthy bus: %+v", st)
	}
	if res := r.ok("boxcar health"); !strings.HasPrefix(res.stdout, "ok\n") {
		t.Fatalf("health of a healthy bus: %s", res)
	}
	mustContain(t, "subscribers", r.ok("boxcar subscribers").stdout, "billing")
	si, ok := r.subscriberInfo("billing")
	if !ok || !si.Running || si.Kind != "tx" || si.Pending != 0 || si.Unacked != 0 || si.Stats == nil || si.Stats.Handled != 2 {
		t.Fatalf("billing: %+v", si)
	}
}

// 1.1: the stream refuses the relay's publishes (full, as with a full disk
// or an external server gone); the outbox fills, the relay stalls. The fix
// of a refusing stream is to give it room back: the relay goes on by
// itself. The app is restarted in between (the fix of a relay that is not
// running), with events waiting, to show that a restart publishes nothing
// twice. (Health's "the relay is not running" only shows while Close
// runs: no public API stops the relay alone.)
func rehearseOutbox(t *testing.T, r *rehearsal) {
	s := newStage(t, rehearsalConfig())
	r.online(s.url, s.token)
	s.subscribe("billing", apply("billing", nil), boxcar.SubscribeOptions{})
	s.publish(order("k", "1"))
	s.waitEffects("billing", map[string][]string{"k": {"1"}})

	s.updateStream(func(c *jetstream.StreamConfig, st jetstream.StreamState) {
		c.MaxMsgs, c.Discard = int64(st.Msgs), jetstream.DiscardNew
	})
	for i := 2; i <= 6; i++ {
		s.publish(order("k", strconv.Itoa(i)))
	}

	// Step 1: two reads; the lag stays, the age grows, nothing published,
	// the failures rise.
	var first, second statusJSON
	r.json("boxcar status", &first)
	waitFor(t, "a second status read with the failures rising", func() (bool, string) {
		second = statusJSON{}
		r.json("boxcar status", &second)
		return second.Stats.RelayFailures > first.Stats.RelayFailures && second.Stats.OutboxAge > first.Stats.OutboxAge, fmt.Sprintf("%+v", second.Stats)
	})
	if first.Stats.OutboxLag != 5 || second.Stats.OutboxLag != 5 || second.Stats.RelayPublished != first.Stats.RelayPublished {
		t.Fatalf("status reads: %+v then %+v: want lag 5 and nothing published", first.Stats, second.Stats)
	}
	mustContain(t, "status", r.ok("boxcar status").stdout, "RELAY")
	if lag := s.mustMetric("boxcar_outbox_lag_events"); lag != 5 {
		t.Errorf("boxcar_outbox_lag_events %v, want 5", lag)
	}

	// Step 2: health says why.
	h := r.waitHealth("relay", "", boxcar.HealthStalled)
	if c := component(t, h, "relay", ""); !strings.Contains(strings.Join(c.Reasons, ";"), "5 events wait and the relay published none for") {
		t.Errorf("relay reasons %q", c.Reasons)
	}
	h = r.waitHealth("outbox", "", boxcar.HealthStalled)
	if c := component(t, h, "outbox", ""); !strings.Contains(strings.Join(c.Reasons, ";"), "the oldest event has waited") {
		t.Errorf("outbox reasons %q", c.Reasons)
	}

	outboxWaiting(t, r)

	// Step 5: restart the app (events wait; while it is down the CLI reads
	// its files), then give the stream room.
	s.closeBus()
	r.offline(s.dbPath, s.dir)
	var down statusJSON
	r.json("boxcar status", &down)
	var pending listJSON[boxcar.OutboxEvent]
	r.json("boxcar outbox ls", &pending)
	if down.Stats.OutboxLag != 5 || len(pending.Items) != 5 {
		t.Fatalf("offline, the app down: status %+v, outbox %d events; want the 5 waiting", down.Stats, len(pending.Items))
	}
	s.subs = map[string]*boxcar.Subscription{}
	s.open()
	s.serve()
	r.online(s.url, s.token)
	s.subscribe("billing", apply("billing", nil), boxcar.SubscribeOptions{})
	s.updateStream(func(c *jetstream.StreamConfig, st jetstream.StreamState) { c.MaxMsgs = -1 })

	// Step 6: drained, healthy, every event applied once, in order.
	waitFor(t, "the outbox drained", func() (bool, string) {
		var st statusJSON
		r.json("boxcar status", &st)
		return st.Stats.OutboxLag == 0 && st.Stats.OutboxAge == 0 && st.Stats.RelayPublished >= 5, fmt.Sprintf("%+v", st.Stats)
	})
	r.waitHealth("relay", "", boxcar.HealthOK)
	r.waitHealth("outbox", "", boxcar.HealthOK)
	s.waitEffects("billing", map[string][]string{"k": {"1", "2", "3", "4", "5", "6"}})
	if n := s.lastStreamSeqOf(); n != 6 {
		t.Errorf("the stream holds %d events, want 6 (each once)", n)
	}
}

// lastStreamSeqOf is the event stream's last seq.
func (s *stage) lastStreamSeqOf() uint64 {
	return (&onlineStory{fixture: s.fixture}).lastStreamSeq()
}

// 1.2: an early ack cannot be made with the public API (the bus acks only
// after the commit); what is rehearsed is the section's recovery: a
// HandlerFunc that returned nil without doing its job for a while (a bug,
// since fixed) gets the events from T again with a replay without dedupe,
// and only those.
func rehearseEarlyAck(t *testing.T, r *rehearsal) {
	s := newStage(t, rehearsalConfig())
	r.online(s.url, s.token)
	var mu sync.Mutex
	sent := map[string][]bool{} // data: Message.Replay of each send
	var bug atomic.Bool
	var calls atomic.Int64
	s.subscribe("email", boxcar.HandlerFunc(func(_ context.Context, m boxcar.Message) error {
		defer calls.Add(1)
		if bug.Load() {
			return nil // the bug: acked, not sent
		}
		mu.Lock()
		defer mu.Unlock()
		sent[string(m.Data)] = append(sent[string(m.Data)], m.Replay)
		return nil
	}), boxcar.SubscribeOptions{})
	s.publish(order("u1", "welcome u1"), order("u2", "welcome u2"))
	waitFor(t, "2 emails", func() (bool, string) { return calls.Load() == 2, "" })
	from := time.Now().UTC()
	bug.Store(true)
	s.publish(order("u3", "welcome u3"), order("u4", "welcome u4"))
	waitFor(t, "2 emails lost", func() (bool, string) { return calls.Load() == 4, "" })
	s.waitCaughtUp()
	bug.Store(false) // the fix is deployed

	// Step 1.
	si, _ := r.subscriberInfo("email")
	if si.Kind != "plain" || si.AckFloor != 4 {
		t.Fatalf("email: %+v, want a plain subscriber acked through 4", si)
	}
	mustContain(t, "subscribers", r.ok("boxcar subscribers").stdout, "email")
	okBefore := s.mustMetric("boxcar_subscriber_handled_total", "subscriber", "email", "result", "ok")

	// Step 2: a T after the stream's last event is refused, then from T.
	const cmd = "boxcar replay email --from-time 2026-12-01T10:00:00Z --no-dedupe"
	if res := r.run(cmd, []string{"2026-12-01T10:00:00Z", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}); res.code != exitFailed || !strings.Contains(res.stderr, "not found") {
		t.Fatalf("a replay from after the last event: %s", res)
	}
	res := r.ok(cmd, "2026-12-01T10:00:00Z", from.Format(time.RFC3339Nano))
	mustContain(t, "replay", res.stderr, "replay of email started: stream seqs 3 to 4", "replay of email done: through stream seq 4")

	// Step 3.
	si, _ = r.subscriberInfo("email")
	if si.Replay == nil || !si.Replay.Done || si.Replay.At != si.Replay.Through || si.Replay.Through != 4 {
		t.Fatalf("email's replay: %+v", si.Replay)
	}
	waitFor(t, "handled_total ok +2", func() (bool, string) {
		v := s.mustMetric("boxcar_subscriber_handled_total", "subscriber", "email", "result", "ok")
		return v == okBefore+2, fmt.Sprint(v)
	})
	mu.Lock()
	defer mu.Unlock()
	want := map[string][]bool{"welcome u1": {false}, "welcome u2": {false}, "welcome u3": {true}, "welcome u4": {true}}
	if fmt.Sprint(sent) != fmt.Sprint(want) {
		t.Fatalf("sent %v, want %v (each once; the lost ones by the replay)", sent, want)
	}
}

// 1.3: a subscriber behind, each way: paused by someone (resumed),
// stopped for good (retired), stalled behind a retrying key (its
// dependency comes back), lagging behind a slow handler (made faster).
func rehearseSubscriberBehind(t *testing.T, r *rehearsal) {
	s := newStage(t, rehearsalConfig())
	r.online(s.url, s.token)
	ctx := context.Background()
	var depDown, slow atomic.Bool
	s.subscribe("billing", apply("billing", nil), boxcar.SubscribeOptions{Types: []string{"order.placed"}})
	s.subscribe("old", apply("old", nil), boxcar.SubscribeOptions{Types: []string{"order.placed"}})
	s.subscribe("ledger", apply("ledger", func(m boxcar.Message) error {
		if m.Key == "acct" && depDown.Load() {
			return errors.New("ledger database unreachable")
		}
		return nil
	}), boxcar.SubscribeOptions{Types: []string{"order.placed"}, MaxAttempts: 100000, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	s.subscribe("reports", apply("reports", func(boxcar.Message) error {
		if slow.Load() {
			time.Sleep(3 * time.Millisecond)
		}
		return nil
	}), boxcar.SubscribeOptions{Types: []string{"report.row"}})
	s.publish(order("acct", "1"))
	s.waitEffects("old", map[string][]string{"acct": {"1"}})

	// The failures: billing paused, old removed from the code, ledger's
	// dependency down.
	if err := s.bus.PauseSubscriber(ctx, "billing", time.Time{}, "someone", "migration"); err != nil {
		t.Fatal(err)
	}
	s.closeSub("old")
	depDown.Store(true)
	s.publish(order("acct", "2"), order("acct", "3"), order("other", "1"))
	s.waitEffects("ledger", map[string][]string{"acct": {"1"}, "other": {"1"}})

	behindDiagnosis(t, r)

	// Step 3: the fixes.
	r.ok("boxcar subscribers resume S", "S", "billing")
	if si, _ := r.subscriberInfo("billing"); si.Paused {
		t.Errorf("billing after resume: %+v", si)
	}
	if res := r.run("boxcar subscribers retire S", []string{"S", "ledger"}); res.code != exitFailed || !strings.Contains(res.stderr, "(invalid)") {
		t.Errorf("retire of a running subscriber: %s", res)
	}
	r.ok("boxcar subscribers retire S", "S", "old")
	if _, ok := r.subscriberInfo("old"); ok {
		t.Error("old is still listed after its retire")
	}
	depDown.Store(false)

	// Step 4.
	s.waitEffects("billing", map[string][]string{"acct": {"1", "2", "3"}, "other": {"1"}})
	s.waitEffects("ledger", map[string][]string{"acct": {"1", "2", "3"}, "other": {"1"}})
	for _, name := range []string{"billing", "ledger"} {
		r.waitHealth("subscriber", name, boxcar.HealthOK)
		if v := s.mustMetric("boxcar_health_state", "component", "subscriber", "subscriber", name, "state", "ok"); v != 1 {
			t.Errorf("boxcar_health_state %s ok = %v", name, v)
		}
	}
	var hh boxcar.Health
	r.json("boxcar health", &hh)
	if _, ok := componentState(hh, "subscriber", "old"); ok {
		t.Error("the retired subscriber is still in health")
	}

	rehearseLagging(t, r, s, &slow)
}

// rehearseLagging: reports's handler is slower than the load; health says
// lagging while it moves; once the handler is fast it catches up.
func rehearseLagging(t *testing.T, r *rehearsal, s *stage, slow *atomic.Bool) {
	slow.Store(true)
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		n := 0
		defer func() { done <- n }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			batch := make([]boxcar.Event, 10)
			for i := range batch {
				n++
				batch[i] = boxcar.Event{Type: "report.row", Key: "daily", Data: []byte(strconv.Itoa(n))}
			}
			if err := s.bus.Publish(context.Background(), batch...); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	h := r.waitHealth("subscriber", "reports", boxcar.HealthLagging)
	close(stop)
	n := <-done
	if c := component(t, h, "subscriber", "reports"); !strings.Contains(strings.Join(c.Reasons, ";"), "moving, but behind by") {
		t.Errorf("reports: %+v", c)
	}
	slow.Store(false) // made faster
	want := make([]string, n)
	for i := range want {
		want[i] = strconv.Itoa(i + 1)
	}
	s.waitEffects("reports", map[string][]string{"daily": want})
	r.waitHealth("subscriber", "reports", boxcar.HealthOK)
}

// 1.4: a subscriber stopped for longer than the retention loses events;
// it is counted and shown, and its projection (full-state events) is
// rebuilt from what the stream still holds, the rest published again from
// the app's source table.
func rehearseExpiry(t *testing.T, r *rehearsal) {
	cfg := rehearsalConfig()
	cfg.Retention, cfg.DuplicateWindow = 2*time.Second, 100*time.Millisecond
	cfg.Health.Interval, cfg.Health.Window = 100*time.Millisecond, 3*time.Second
	s := newStage(t, cfg)
	r.online(s.url, s.token)
	ctx := context.Background()
	if _, err := s.db.Exec(`CREATE TABLE profiles (key TEXT PRIMARY KEY, data TEXT)`); err != nil {
		t.Fatal(err)
	}
	project := apply("profiles", nil, func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
		_, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO profiles VALUES (?, ?)`, m.Key, string(m.Data))
		return err
	})
	s.subscribe("profiles", project, boxcar.SubscribeOptions{})
	s.publish(order("u1", "v1"), order("u2", "v1"))
	s.waitEffects("profiles", map[string][]string{"u1": {"v1"}, "u2": {"v1"}})
	s.closeSub("profiles")
	s.publish(order("u1", "v2"), order("u2", "v2")) // never handled: they expire
	waitFor(t, "the stream to drop them", func() (bool, string) {
		st, err := s.bus.JetStream().Stream(ctx, s.bus.StreamName())
		if err != nil {
			return false, err.Error()
		}
		info, err := st.Info(ctx)
		return err == nil && info.State.Msgs == 0 && info.State.LastSeq == 4, fmt.Sprintf("%+v %v", info.State, err)
	})
	s.publish(order("u1", "v3"))
	s.subscribe("profiles", project, boxcar.SubscribeOptions{})

	// Step 1: caught up again (what 1.3 does).
	s.waitEffects("profiles", map[string][]string{"u1": {"v1", "v3"}, "u2": {"v1"}})
	s.waitCaughtUp()

	// Step 2: measured.
	mustContain(t, "subscribers", r.ok("boxcar subscribers").stdout, "profiles")
	si, _ := r.subscriberInfo("profiles")
	if si.Expired != 2 {
		t.Fatalf("profiles: expired %d, want 2", si.Expired)
	}
	h := r.waitHealth("subscriber", "profiles", boxcar.HealthLosing)
	if c := component(t, h, "subscriber", "profiles"); !strings.Contains(strings.Join(c.Reasons, ";"), "2 events expired from the stream before it handled them") {
		t.Errorf("profiles: %+v", c)
	}
	if v := s.mustMetric("boxcar_subscriber_expired_total", "subscriber", "profiles"); v != 2 {
		t.Errorf("boxcar_subscriber_expired_total %v, want 2", v)
	}

	// Step 3: reset the projection, replay what the stream holds without
	// dedupe; u2's last state left the stream: the app publishes it again
	// from its source (here, what it knows u2's profile is).
	if _, err := s.db.Exec(`DELETE FROM profiles`); err != nil {
		t.Fatal(err)
	}
	res := r.ok("boxcar replay S --from-time 2000-01-01T00:00:00Z --no-dedupe", "S", "profiles")
	mustContain(t, "replay", res.stderr, "replay of profiles started: stream seqs 5 to 5", "done")
	err := s.bus.Tx(ctx, func(tx *sql.Tx) error { return s.bus.PublishTx(ctx, tx, order("u2", "v2")) })
	if err != nil {
		t.Fatal(err)
	}
	s.waitEffects("profiles", map[string][]string{"u1": {"v1", "v3", "v3"}, "u2": {"v1", "v2"}})
	if got := s.profiles(); got != "u1=v3 u2=v2" {
		t.Fatalf("the rebuilt projection: %s", got)
	}

	// Step 5: the loss does not grow; the window passes, losing ends.
	r.waitHealth("subscriber", "profiles", boxcar.HealthOK)
	if si, _ := r.subscriberInfo("profiles"); si.Expired != 2 {
		t.Errorf("expired grew to %d", si.Expired)
	}
}

// profiles is the projection's rows, as "key=data ...".
func (s *stage) profiles() string {
	s.t.Helper()
	var out string
	err := s.db.QueryRow(`SELECT group_concat(key || '=' || data, ' ') FROM (SELECT * FROM profiles ORDER BY key)`).Scan(&out)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

// 1.5: an operator deletes the event stream and the dead-letter stream
// under a running bus; it creates them again, refills the event stream
// from the outbox, and its subscriber applies nothing twice.
func rehearseStreamDeleted(t *testing.T, r *rehearsal) {
	s := newStage(t, rehearsalConfig())
	r.online(s.url, s.token)
	ctx := context.Background()
	s.subscribe("billing", apply("billing", func(m boxcar.Message) error {
		if m.Key == "bad" {
			return boxcar.Permanent(errors.New("card declined"))
		}
		return nil
	}), boxcar.SubscribeOptions{MaxAttempts: 1})
	s.publish(order("k", "1"), order("k", "2"), order("bad", "1"))
	s.waitEffects("billing", map[string][]string{"k": {"1", "2"}})
	s.waitDeadLetters(1)
	s.waitCaughtUp()
	before, _ := r.subscriberInfo("billing")

	for _, name := range []string{s.bus.StreamName(), s.bus.DLQStreamName()} {
		if err := s.bus.JetStream().DeleteStream(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	s.publish(order("k", "3"), order("bad", "2"))
	s.waitEffects("billing", map[string][]string{"k": {"1", "2", "3"}})

	// Step 1.
	waitFor(t, "streams_recreated", func() (bool, string) {
		var st statusJSON
		r.json("boxcar status", &st)
		return st.Stats.StreamsRecreated >= 1, fmt.Sprintf("%+v", st.Stats)
	})
	if v := s.mustMetric("boxcar_streams_recreated_total"); v < 1 {
		t.Errorf("boxcar_streams_recreated_total %v", v)
	}
	// Step 2: pending before and after; the old letters are gone, the new
	// dead-letter stream starts at seq 1, with bad's first event again (it
	// was still in the outbox: the refill delivered it again, and it failed
	// again) and then its second.
	s.waitCaughtUp()
	mustContain(t, "subscribers", r.ok("boxcar subscribers").stdout, "billing")
	after, _ := r.subscriberInfo("billing")
	if before.Pending != 0 || after.Pending != 0 || after.Stats == nil || after.Stats.Recreated < 1 {
		t.Errorf("billing before %+v, after %+v: want nothing pending, its consumer recreated", before, after)
	}
	var dl dlqListJSON
	waitFor(t, "the new dead letter", func() (bool, string) {
		dl = dlqListJSON{}
		r.json("boxcar dlq ls", &dl)
		return len(dl.Items) == 2, fmt.Sprintf("%+v", dl.Items)
	})
	if dl.Items[0].Seq != 1 || string(dl.Items[0].Data) != "1" || string(dl.Items[1].Data) != "2" {
		t.Errorf("dlq ls after the delete: %+v, want bad's events at seqs 1 and 2", dl.Items)
	}
	r.ok("boxcar dlq ls")
	// Step 4.
	var st statusJSON
	r.json("boxcar status", &st)
	if st.Stats.OutboxLag != 0 {
		t.Errorf("outbox_lag %d", st.Stats.OutboxLag)
	}
	r.waitHealth("subscriber", "billing", boxcar.HealthOK)
	if res := r.ok("boxcar health"); !strings.HasPrefix(res.stdout, "ok\n") {
		t.Errorf("health: %s", res)
	}
	s.waitEffects("billing", map[string][]string{"k": {"1", "2", "3"}})
}

// outboxWaiting is 1.1's steps 3 and 4, the relay blocked with 5 events
// waiting.
func outboxWaiting(t *testing.T, r *rehearsal) {
	// Steps 3 and 4: what waits, oldest first; nothing set aside.
	var pending listJSON[boxcar.OutboxEvent]
	r.json("boxcar outbox ls", &pending)
	if len(pending.Items) != 5 || pending.Items[0].Seq >= pending.Items[4].Seq || pending.Items[0].Key != "k" || pending.Items[0].Age <= 0 {
		t.Fatalf("outbox ls: %+v", pending.Items)
	}
	mustContain(t, "outbox ls", r.ok("boxcar outbox ls").stdout, "order.placed")
	var dead outboxDeadJSON
	r.json("boxcar outbox ls --dead", &dead)
	if dead.Total != 0 {
		t.Fatalf("outbox ls --dead: %+v, want none", dead)
	}
}

// behindDiagnosis is 1.3's steps 1 and 2: ledger stalled, old stopped,
// billing paused.
func behindDiagnosis(t *testing.T, r *rehearsal) {
	// Step 1: each state and its reason.
	reason := func(h boxcar.Health, name string) string {
		return strings.Join(component(t, h, "subscriber", name).Reasons, ";")
	}
	h := r.waitHealth("subscriber", "ledger", boxcar.HealthStalled)
	if !strings.Contains(reason(h, "ledger"), "events behind and no progress for") {
		t.Errorf("ledger: %q", reason(h, "ledger"))
	}
	h = r.waitHealth("subscriber", "old", boxcar.HealthStopped)
	if !strings.Contains(reason(h, "old"), "not running anywhere, 3 events behind") {
		t.Errorf("old: %q", reason(h, "old"))
	}
	if c := component(t, h, "subscriber", "billing"); c.State != boxcar.HealthOK || !strings.Contains(reason(h, "billing"), "paused by an operator") {
		t.Errorf("billing: %+v", c)
	}
	if res := r.run("boxcar health", nil); res.code != exitUnhealthy {
		t.Errorf("health with a stopped subscriber: %s", res)
	}

	// Step 2: the numbers.
	mustContain(t, "subscribers", r.ok("boxcar subscribers").stdout, "billing", "old", "ledger")
	if si, _ := r.subscriberInfo("billing"); !si.Paused || si.Pending+uint64(si.Unacked) != 3 {
		t.Errorf("billing: %+v, want paused, 3 behind", si)
	}
	if si, _ := r.subscriberInfo("old"); si.Running || si.Pending != 3 {
		t.Errorf("old: %+v, want not running, 3 pending", si)
	}
	// stuck_keys counts the keys waiting out a backoff (not those in an
	// attempt): read until one is seen.
	waitFor(t, "ledger's stuck key", func() (bool, string) {
		si, _ := r.subscriberInfo("ledger")
		return si.Stats != nil && si.Stats.StuckKeys == 1 && si.Stats.Failures > 0, fmt.Sprintf("%+v", si.Stats)
	})
}
