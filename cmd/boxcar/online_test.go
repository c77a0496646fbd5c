package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/boxcar-bus/boxcar"
)

// onlineStory is a running app with the whole story, served by its admin
// handler.
type onlineStory struct {
	*fixture
	url, token string
}

func newOnlineStory(t *testing.T) *onlineStory {
	f := newFixture(t, boxcar.Config{})
	f.populate()
	s := &onlineStory{fixture: f}
	s.url, s.token = startAdmin(t, f.bus)
	return s
}

// run runs the command against the admin handler, with the write token.
func (s *onlineStory) run(args ...string) result {
	env := map[string]string{"BOXCAR_URL": s.url, "BOXCAR_TOKEN": s.token, "USER": "alice"}
	return runCLI(context.Background(), env, args...)
}

// Every read command through the admin API of a running app.
func TestOnlineReads(t *testing.T) {
	s := newOnlineStory(t)

	t.Run("status", func(t *testing.T) { testOnlineStatus(t, s) })
	t.Run("health", func(t *testing.T) { testOnlineHealth(t, s) })
	t.Run("subscribers", func(t *testing.T) { testOnlineSubscribers(t, s) })
	t.Run("dlq", func(t *testing.T) { testOnlineDlq(t, s) })
	t.Run("outbox", func(t *testing.T) { testOnlineOutbox(t, s) })
}

func testOnlineStatus(t *testing.T, s *onlineStory) {
	r := s.run("status")
	mustContain(t, "status", r.stdout, s.url, "RELAY", "published", "SUBSCRIBER", "billing", "ledger", "audit", "yes")
	var js statusJSON
	decodeJSON(t, s.run("status", "-o", "json"), &js)
	if js.Stats.RelayPublished != 9 || len(js.Stats.Subscribers) != 2 || len(js.Subscribers) != 3 || js.Health.State == "" {
		t.Fatalf("status JSON: %+v", js)
	}
	if b := subscriberNamed(t, js.Subscribers, "billing"); !b.Running || b.Stats == nil || b.Stats.DeadLettered != 3 {
		t.Fatalf("billing %+v: want running, 3 dead-lettered", b)
	}
	// The table's row of billing says the same: 3 dead-lettered.
	row := lineWith(t, r.stdout, "billing ")
	if f := strings.Fields(row); len(f) < 8 || f[7] != "3" {
		t.Errorf("billing's row %q: want DEAD-LETTERED 3", row)
	}
}

func testOnlineHealth(t *testing.T, s *onlineStory) {
	r := s.run("health")
	var h boxcar.Health
	decodeJSON(t, s.run("health", "-o", "json"), &h)
	if ch, _ := componentState(h, "relay", ""); ch.State != boxcar.HealthOK {
		t.Errorf("relay %+v, want ok on a running app", ch)
	}
	if ch, _ := componentState(h, "subscriber", "audit"); ch.State != boxcar.HealthStopped {
		t.Errorf("audit %+v, want stopped (down, replay pending)", ch)
	}
	if r.code != exitUnhealthy || !strings.HasPrefix(r.stdout, "stopped\n") {
		t.Errorf("health with audit stopped: %s", r)
	}
}

func testOnlineSubscribers(t *testing.T, s *onlineStory) {
	var js listJSON[boxcar.SubscriberInfo]
	decodeJSON(t, s.run("subscribers", "-o", "json"), &js)
	if len(js.Items) != 3 || !subscriberNamed(t, js.Items, "ledger").Running {
		t.Fatalf("subscribers %+v", js.Items)
	}
	mustContain(t, "subscribers", s.run("subscribers").stdout, "ledger", "yes", "order.placed")
	var si boxcar.SubscriberInfo
	decodeJSON(t, s.run("subscribers", "show", "billing", "-o", "json"), &si)
	if si.Name != "billing" || si.Stats == nil || si.Stats.Handled == 0 {
		t.Fatalf("billing %+v", si)
	}
	mustContain(t, "subscribers show", s.run("subscribers", "show", "billing").stdout, "dead-lettered", "handler p50/p99")
	r := s.run("subscribers", "show", "nosuch")
	if r.code != exitFailed || !strings.Contains(r.stderr, `"nosuch"`) || !strings.Contains(r.stderr, "(not_found)") {
		t.Fatalf("unknown subscriber: %s", r)
	}
}

func testOnlineDlq(t *testing.T, s *onlineStory) {
	hostile := s.letter("billing", hostileKey)
	var js dlqListJSON
	decodeJSON(t, s.run("dlq", "ls", "--subscriber", "ledger", "--reason", "parked", "-o", "json"), &js)
	if len(js.Items) != 2 || js.Items[0].Key != "stuck" {
		t.Fatalf("ledger's parked letters %+v", js.Items)
	}
	decodeJSON(t, s.run("dlq", "ls", "--limit", "1", "--key", "bad", "-o", "json"), &js)
	if len(js.Items) != 1 || js.Items[0].Subscriber != "billing" {
		t.Fatalf("key bad %+v", js.Items)
	}
	testHostileShown(t, s.run("dlq", "show", num(hostile)))
	var dl boxcar.DeadLetter
	decodeJSON(t, s.run("dlq", "show", num(hostile), "-o", "json"), &dl)
	if dl.Key != hostileKey || string(dl.Data) != hostilePayload || dl.Headers["X-Evil"] != hostileHeader {
		t.Fatalf("the hostile letter through JSON: %+v", dl)
	}
	if r := s.run("dlq", "show", "424242"); r.code != exitFailed || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("no such letter: %s", r)
	}
}

func testOnlineOutbox(t *testing.T, s *onlineStory) {
	if r := s.run("outbox", "ls"); r.code != exitOK || !strings.Contains(r.stdout, "no events pending") {
		t.Fatalf("outbox of a relay caught up: %s", r)
	}
	s.blockRelay(3)
	defer s.unblockRelay()
	var js listJSON[boxcar.OutboxEvent]
	decodeJSON(t, s.run("outbox", "ls", "-o", "json"), &js)
	if len(js.Items) != 3 || js.Items[2].Headers["Trace"] != "2" {
		t.Fatalf("pending %+v", js.Items)
	}
	decodeJSON(t, s.run("outbox", "ls", "--limit", "2", "-o", "json"), &js)
	if len(js.Items) != 2 {
		t.Fatalf("pending, limit 2: %+v", js.Items)
	}
	mustContain(t, "outbox ls --limit 2", s.run("outbox", "ls", "--limit", "2").stdout, "more may follow: --after "+num(js.Items[1].Seq))
	var dead outboxDeadJSON
	decodeJSON(t, s.run("outbox", "ls", "--dead", "-o", "json"), &dead)
	if dead.Total != 1 || dead.Items[0].Key != "huge" || dead.Items[0].Reason != "too_large" {
		t.Fatalf("set aside %+v", dead)
	}
}

// lineWith returns the first line of s that contains sub.
func lineWith(t *testing.T, s, sub string) string {
	t.Helper()
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	t.Fatalf("no line with %q in:\n%s", sub, s)
	return ""
}

// Every write command through the admin API: it does what it says, and
// says what it did.
func TestOnlineWrites(t *testing.T) {
	s := newOnlineStory(t)

	t.Run("pause and resume", func(t *testing.T) { testOnlinePauseAndResume(t, s) })
	t.Run("redrive and discard", func(t *testing.T) { testOnlineRedrive(t, s) })
	t.Run("replay", func(t *testing.T) { testOnlineReplay(t, s) })
	t.Run("retire", func(t *testing.T) { testOnlineRetire(t, s) })
	t.Run("credentials", func(t *testing.T) { testOnlineCredentials(t, s) })
}

func testOnlinePauseAndResume(t *testing.T, s *onlineStory) {
	r := s.run("subscribers", "pause", "billing", "--until", "1h", "--why", "maintenance")
	if r.code != exitOK || !strings.HasPrefix(r.stdout, "subscriber billing: paused until ") || !strings.Contains(r.stdout, " (in ") {
		t.Fatal(r)
	}
	var si boxcar.SubscriberInfo
	decodeJSON(t, s.run("subscribers", "show", "billing", "-o", "json"), &si)
	if !si.Paused || si.PausedUntil.Before(time.Now().Add(50*time.Minute)) {
		t.Fatalf("after pause: %+v", si)
	}
	var ok okJSON
	decodeJSON(t, s.run("subscribers", "resume", "billing", "-o", "json"), &ok)
	if !ok.OK {
		t.Fatal("resume answered not ok")
	}
	decodeJSON(t, s.run("subscribers", "show", "billing", "-o", "json"), &si)
	if si.Paused {
		t.Fatalf("after resume: %+v", si)
	}
	if r := s.run("subscribers", "pause", "nosuch"); r.code != exitFailed || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("pause of no subscriber: %s", r)
	}
}

func testOnlineReplay(t *testing.T, s *onlineStory) {
	last := s.lastStreamSeq()
	r := s.run("replay", "billing", "--from-stream-seq", "1", "--why", "lost effects")
	if r.code != exitOK {
		t.Fatal(r)
	}
	mustContain(t, "replay", r.stderr, "replay of billing started: stream seqs 1 to "+num(last), "replay billing [", "100%",
		"replay of billing done: through stream seq "+num(last))
	var st boxcar.ReplayStatus
	decodeJSON(t, s.run("replay", "billing", "--watch", "-o", "json"), &st)
	if !st.Done || st.Through != last {
		t.Fatalf("replay --watch after it ended: %+v", st)
	}
	decodeJSON(t, s.run("replay", "ledger", "--from-time", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), "--no-dedupe", "--detach", "-o", "json"), &st)
	if st.Subscriber != "ledger" || st.From != 1 || !st.NoDedupe {
		t.Fatalf("replay --detach: %+v", st)
	}
	// audit is a HandlerFunc: it has no dedupe table.
	if r := s.run("replay", "audit", "--from-outbox-seq", "1"); r.code != exitFailed || !strings.Contains(r.stderr, "NoDedupe") || !strings.Contains(r.stderr, "(invalid)") {
		t.Fatalf("replay of a HandlerFunc with dedupe: %s", r)
	}
	if r := s.run("replay", "nosuch", "--from-stream-seq", "1"); r.code != exitFailed || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("replay of no subscriber: %s", r)
	}
}

func testOnlineRetire(t *testing.T, s *onlineStory) {
	ctx := context.Background()
	if r := s.run("subscribers", "retire", "billing"); r.code != exitFailed || !strings.Contains(r.stderr, "running in this process") {
		t.Fatalf("retire of a running subscriber: %s", r)
	}
	if r := s.run("subscribers", "retire", "audit", "--why", "gone"); r.code != exitOK {
		t.Fatal(r)
	}
	subs, err := s.bus.Subscribers(ctx)
	if err != nil || len(subs) != 2 {
		t.Fatalf("after retire: %+v %v", subs, err)
	}
}

func testOnlineCredentials(t *testing.T, s *onlineStory) {
	ctx := context.Background()
	env := map[string]string{"BOXCAR_URL": s.url}
	r := runCLI(ctx, env, "subscribers", "pause", "ledger")
	if r.code != exitFailed || !strings.Contains(r.stderr, "(unauthorized)") || !strings.Contains(r.stderr, "--token") {
		t.Fatalf("a write without a token: %s", r)
	}
	r = runCLI(ctx, env, "subscribers", "pause", "ledger", "--token", "wrong")
	if r.code != exitFailed || !strings.Contains(r.stderr, "(forbidden)") {
		t.Fatalf("a write with a wrong token: %s", r)
	}
	if si, _ := s.bus.Subscribers(ctx); subscriberNamed(t, si, "ledger").Paused {
		t.Fatal("a refused pause paused")
	}
}

func testOnlineRedrive(t *testing.T, s *onlineStory) {
	ctx := context.Background()
	bad, hostile := s.letter("billing", "bad"), s.letter("billing", hostileKey)
	r := s.run("dlq", "redrive", num(bad), "--why", "card updated")
	if r.code != exitOK || r.stdout != "redriven: 1 "+num(bad)+"; acted on before, left as they were: 0\n" {
		t.Fatal(r)
	}
	dl, err := s.bus.DeadLetter(ctx, bad)
	if err != nil || dl.State != boxcar.DeadLetterRedriven || dl.Action.Why != "card updated" || !strings.HasPrefix(dl.Action.By, "alice via admin API") {
		t.Fatalf("after redrive: %+v %+v %v", dl, dl.Action, err)
	}
	var res boxcar.RedriveResult
	decodeJSON(t, s.run("dlq", "redrive", num(bad), "-o", "json"), &res)
	if res.Done != 1 || len(res.Redriven) != 0 {
		t.Fatalf("second redrive: %+v", res)
	}
	// The parked key: its head and the two it holds, in order.
	s.ledgerFixed.Store(true)
	decodeJSON(t, s.run("dlq", "redrive", "--subscriber", "ledger", "--key", "stuck", "-o", "json"), &res)
	if len(res.Redriven) != 3 {
		t.Fatalf("redrive of ledger's parked key: %+v", res)
	}
	waitFor(t, "ledger's key released", func() (bool, string) {
		subs, err := s.bus.Subscribers(ctx)
		return err == nil && subscriberNamed(t, subs, "ledger").ParkedKeys == 0, ""
	})
	if r := s.run("dlq", "discard", num(hostile)); r.code != exitUsage || !strings.Contains(r.stderr, "--why is required") {
		t.Fatalf("discard without why: %s", r)
	}
	if r := s.run("dlq", "discard", num(hostile), "--why", "hostile"); r.code != exitOK || r.stdout != "dead letter "+num(hostile)+" discarded\n" {
		t.Fatal(r)
	}
	var d discardJSON
	decodeJSON(t, s.run("dlq", "discard", num(hostile), "--why", "again", "-o", "json"), &d)
	if d.Discarded {
		t.Fatal("a second discard discarded")
	}
	if r := s.run("dlq", "redrive", "--key", "k"); r.code != exitUsage {
		t.Fatalf("redrive --key without --subscriber: %s", r)
	}
}

// lastStreamSeq is the event stream's last seq.
func (s *onlineStory) lastStreamSeq() uint64 {
	s.t.Helper()
	ctx := context.Background()
	st, err := s.bus.JetStream().Stream(ctx, s.bus.StreamName())
	if err != nil {
		s.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	return info.State.LastSeq
}
