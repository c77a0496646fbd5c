package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// decodeJSON decodes a command's -o json output into v, strictly.
func decodeJSON(t *testing.T, r result, v any) {
	t.Helper()
	if r.code != exitOK && r.code != exitUnhealthy {
		t.Fatalf("want JSON, got %s", r)
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %T: %v\n%s", v, err, r)
	}
}

// offlineStory is the files of a stopped app with the whole story: dead
// letters (one discarded), a parked key, a replay recorded, an event set
// aside and two pending in the outbox.
type offlineStory struct {
	*fixture
	cursor            int64
	hostile, bin, bad uint64
}

func newOfflineStory(t *testing.T) *offlineStory {
	f := newFixture(t, boxcar.Config{})
	f.populate()
	f.blockRelay(2)
	s := &offlineStory{fixture: f, hostile: f.letter("billing", hostileKey), bin: f.letter("billing", "bin"), bad: f.letter("billing", "bad")}
	if _, err := f.bus.Discard(context.Background(), s.bin, "test", "binary junk"); err != nil {
		t.Fatal(err)
	}
	st, err := f.bus.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s.cursor = st.RelayCursor
	f.closeBus()
	return s
}

func (s *offlineStory) run(args ...string) result {
	return runCLI(context.Background(), map[string]string{"USER": "tester"}, append(args, "--db", s.dbPath, "--dir", s.dir)...)
}

// Every read command on the files of a stopped app: tables and JSON that
// say what the bus left.
func TestOfflineReads(t *testing.T) {
	s := newOfflineStory(t)

	t.Run("status", func(t *testing.T) { testOfflineStatus(t, s) })
	t.Run("health", func(t *testing.T) { testOfflineHealth(t, s) })
	t.Run("subscribers", func(t *testing.T) { testOfflineSubscribers(t, s) })
	t.Run("dlq ls", func(t *testing.T) { testOfflineDLQList(t, s) })
	t.Run("dlq show", func(t *testing.T) { testOfflineDlqShow(t, s) })
	t.Run("outbox ls", func(t *testing.T) { testOfflineOutboxLs(t, s) })
	t.Run("replay --watch", func(t *testing.T) { testWatchInterrupted(t, s) })
	t.Run("writes", func(t *testing.T) { testOfflineWrites(t, s) })
	t.Run("schema", func(t *testing.T) { testOfflineSchema(t, s) })
}

func testOfflineStatus(t *testing.T, s *offlineStory) {
	r := s.run("status")
	if r.code != exitOK {
		t.Fatal(r)
	}
	mustContain(t, "status", r.stdout, "the app is down", "RELAY", "cursor", "outbox lag", "2 events", "1 in boxcar_outbox_dead", "published        - (the app is down)",
		"SUBSCRIBER", "STATE", "DEAD-LETTERED", "billing", "ledger", "audit", "the relay is not running")
	var js statusJSON
	decodeJSON(t, s.run("status", "-o", "json"), &js)
	if js.Stats.OutboxLag != 2 || js.Stats.RelayCursor != s.cursor || js.Stats.OutboxDead != 1 || len(js.Subscribers) != 3 {
		t.Fatalf("status JSON: stats %+v, %d subscribers", js.Stats, len(js.Subscribers))
	}
	if ch, _ := componentState(js.Health, "relay", ""); ch.State != boxcar.HealthStopped {
		t.Errorf("relay %+v offline, want stopped", ch)
	}
	audit := subscriberNamed(t, js.Subscribers, "audit")
	// (A replay's From is not kept by the app: only its end.)
	if audit.Kind != "plain" || audit.Replay == nil || audit.Replay.Done || audit.Replay.At != 0 || audit.Replay.Through < 8 || audit.Pending < 8 {
		t.Errorf("audit %+v, replay %+v: want a plain subscriber with a replay from 1 recorded, pending", audit, audit.Replay)
	}
	if l := subscriberNamed(t, js.Subscribers, "ledger"); l.ParkedKeys != 1 {
		t.Errorf("ledger has %d parked keys, want 1", l.ParkedKeys)
	}
}

func testOfflineHealth(t *testing.T, s *offlineStory) {
	r := s.run("health")
	if r.code != exitUnhealthy { // the relay does not run offline
		t.Fatalf("health offline: %s", r)
	}
	mustContain(t, "health", r.stdout, "COMPONENT", "relay", "stopped", "audit", "not running anywhere")
	var h boxcar.Health
	decodeJSON(t, s.run("health", "--output", "json"), &h)
	if ch, ok := componentState(h, "subscriber", "audit"); !ok || ch.State != boxcar.HealthStopped || ch.Lag == 0 {
		t.Errorf("audit %+v: want stopped and behind", ch)
	}
	if ch, _ := componentState(h, "subscriber", "billing"); ch.State != boxcar.HealthOK {
		t.Errorf("billing %+v: want ok (caught up)", ch)
	}
}

func testOfflineSubscribers(t *testing.T, s *offlineStory) {
	r := s.run("subscribers")
	mustContain(t, "subscribers", r.stdout, "NAME", "KIND", "billing", "tx", "audit", "plain", "order.placed", "0/")
	var js listJSON[boxcar.SubscriberInfo]
	decodeJSON(t, s.run("subscribers", "-o", "json"), &js)
	if len(js.Items) != 3 || subscriberNamed(t, js.Items, "billing").Kind != "tx" {
		t.Fatalf("subscribers JSON %+v", js.Items)
	}
	r = s.run("subscribers", "show", "ledger")
	mustContain(t, "subscribers show", r.stdout, "ledger", "parked keys", "order.placed")
	var si boxcar.SubscriberInfo
	decodeJSON(t, s.run("subscribers", "show", "ledger", "-o", "json"), &si)
	if si.Name != "ledger" || si.ParkedKeys != 1 || si.Running {
		t.Fatalf("ledger %+v", si)
	}
	r = s.run("subscribers", "show", "nosuch")
	if r.code != exitFailed || !strings.Contains(r.stderr, `"nosuch"`) || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("unknown subscriber: %s", r)
	}
}

func testOfflineDlqShow(t *testing.T, s *offlineStory) {
	testHostileShown(t, s.run("dlq", "show", num(s.hostile)))
	r := s.run("dlq", "show", num(s.bin))
	mustContain(t, "binary letter", r.stdout, "binary: hex dump", "00 01 02 ff fe 41 1b 5b", "discarded", "binary junk", "by test")
	if strings.Contains(r.stdout, "\x1b") {
		t.Errorf("the binary payload's escape reached the output:\n%q", r.stdout)
	}
	var dl boxcar.DeadLetter
	decodeJSON(t, s.run("dlq", "show", num(s.bin), "-o", "json"), &dl)
	if string(dl.Data) != string(binaryPayload) || dl.State != boxcar.DeadLetterDiscarded {
		t.Fatalf("bin letter JSON %+v", dl)
	}
	if r := s.run("dlq", "show", "99999"); r.code != exitFailed || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("dlq show of no letter: %s", r)
	}
}

func testOfflineOutboxLs(t *testing.T, s *offlineStory) {
	r := s.run("outbox", "ls")
	mustContain(t, "outbox ls", r.stdout, "SEQ", "AGE", "late", "Trace=0", "Trace=1")
	var js listJSON[boxcar.OutboxEvent]
	decodeJSON(t, s.run("outbox", "ls", "-o", "json"), &js)
	if len(js.Items) != 2 || js.Items[0].Seq <= s.cursor || js.Items[0].Key != "late" || js.Items[0].Age <= 0 {
		t.Fatalf("outbox JSON %+v (cursor %d)", js.Items, s.cursor)
	}
	decodeJSON(t, s.run("outbox", "ls", "--after", num(js.Items[0].Seq), "-o", "json"), &js)
	if len(js.Items) != 1 {
		t.Fatalf("outbox after the first: %+v", js.Items)
	}
	r = s.run("outbox", "ls", "--dead")
	mustContain(t, "outbox ls --dead", r.stdout, "huge", "too_large", "1 set aside in all")
	var dead outboxDeadJSON
	decodeJSON(t, s.run("outbox", "ls", "--dead", "-o", "json"), &dead)
	if dead.Total != 1 || len(dead.Items) != 1 || dead.Items[0].Reason != "too_large" || len(dead.Items[0].Data) != 4000 {
		t.Fatalf("outbox dead JSON %+v", dead)
	}
}

func testOfflineSchema(t *testing.T, s *offlineStory) {
	r := runCLI(context.Background(), nil, "schema", "ls", s.dbPath)
	if r.code != exitOK || !strings.Contains(r.stdout, "no schemas in") {
		t.Fatalf("schema ls of the app's database: %s", r)
	}
	if r := runCLI(context.Background(), nil, "schema"); r.code != exitUsage || !strings.Contains(r.stderr, "boxcar schema <command>") {
		t.Fatalf("schema without a command: %s", r)
	}
}

func subscriberNamed(t *testing.T, subs []boxcar.SubscriberInfo, name string) boxcar.SubscriberInfo {
	t.Helper()
	for _, s := range subs {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no subscriber %s in %+v", name, subs)
	return boxcar.SubscriberInfo{}
}

func testOfflineDLQList(t *testing.T, s *offlineStory) {
	r := s.run("dlq", "ls")
	mustContain(t, "dlq ls", r.stdout, "SEQ", "SUBSCRIBER", "REASON", "billing", "ledger", "permanent", "parked", "card declined", `"\x1b[2Jevil\rkey"`)
	for _, c := range []struct {
		args []string
		want int
	}{
		{nil, 6},
		{[]string{"--subscriber", "ledger"}, 3},
		{[]string{"--reason", "parked"}, 2},
		{[]string{"--state", "discarded"}, 1},
		{[]string{"--state", "pending", "--subscriber", "billing"}, 2},
		{[]string{"--key", "bad"}, 1},
		{[]string{"--type", "blob.stored"}, 1},
	} {
		var js dlqListJSON
		decodeJSON(t, s.run(append([]string{"dlq", "ls", "-o", "json"}, c.args...)...), &js)
		if len(js.Items) != c.want {
			t.Errorf("dlq ls %v: %d letters, want %d", c.args, len(js.Items), c.want)
		}
	}
	var page dlqListJSON
	decodeJSON(t, s.run("dlq", "ls", "--limit", "2", "-o", "json"), &page)
	if len(page.Items) != 2 || page.Next != page.Items[1].Seq {
		t.Fatalf("first page %+v", page)
	}
	r = s.run("dlq", "ls", "--limit", "2")
	mustContain(t, "dlq ls --limit 2", r.stdout, "more: --after "+num(page.Next))
	var rest dlqListJSON
	decodeJSON(t, s.run("dlq", "ls", "--after", num(page.Next), "-o", "json"), &rest)
	if len(rest.Items) != 4 || rest.Items[0].Seq <= page.Next {
		t.Fatalf("second page %+v after %d", rest.Items, page.Next)
	}
	if r := s.run("dlq", "ls", "--state", "lost"); r.code != exitUsage || !strings.Contains(r.stderr, "pending, redriven or discarded") {
		t.Fatalf("a bad state: %s", r)
	}
}

// testHostileShown checks dlq show of the hostile letter: everything it
// carries is shown, escaped; no control character reaches the output.
func testHostileShown(t *testing.T, r result) {
	t.Helper()
	if r.code != exitOK {
		t.Fatal(r)
	}
	for _, bad := range []string{"\x1b", "\r", "\a", "\u202e", "\u009b"} {
		if strings.Contains(r.stdout, bad) {
			t.Errorf("dlq show printed %q raw:\n%q", bad, r.stdout)
		}
	}
	mustContain(t, "the hostile letter", r.stdout,
		`"\x1b[2Jevil\rkey"`,                    // the key, quoted
		`"permanent: \x1b[31mboom\x1b[0m`,       // the error (its \r arrives as a space: NATS headers carry no CR)
		`X-Evil: "\x1b[5mblink\x1b]0;title\a"`,  // the header
		`\x1b]0;pwned\a\x1b[2J\rfake prompt $ `, // the payload, its lines kept
		"\n  \\u202eevil\\u009b31m",
		"control characters shown escaped")
}

// testWatchInterrupted watches a replay that does not move (its subscriber
// is down) and stops watching as Ctrl-C does: the replay is left as it is.
func testWatchInterrupted(t *testing.T, s *offlineStory) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	c := newCLI(func(string) string { return "" }, &out, &errOut)
	c.pollEvery = 10 * time.Millisecond
	done := make(chan int)
	go func() {
		done <- c.dispatch(ctx, []string{"replay", "audit", "--watch", "--db", s.dbPath, "--dir", s.dir})
	}()
	waitFor(t, "the progress bar", func() (bool, string) { return strings.Contains(errOut.String(), "replay audit ["), errOut.String() })
	cancel()
	code := <-done
	if code != exitInterrupted {
		t.Fatalf("exit %d after the interrupt, want %d\n%s", code, exitInterrupted, errOut.String())
	}
	mustContain(t, "the interrupted watch", errOut.String(), "  0%", "stopped watching", "goes on in the app", "replay audit --watch")
	var si boxcar.SubscriberInfo
	decodeJSON(t, s.run("subscribers", "show", "audit", "-o", "json"), &si)
	if si.Replay == nil || si.Replay.Done {
		t.Fatalf("the replay after watching: %+v", si.Replay)
	}
}

// Writes with the app down fail at once, with the way to do them, and
// change nothing.
func testOfflineWrites(t *testing.T, s *offlineStory) {
	for _, args := range [][]string{
		{"subscribers", "pause", "billing"},
		{"subscribers", "resume", "billing"},
		{"subscribers", "retire", "audit"},
		{"replay", "billing", "--from-stream-seq", "1"},
		{"dlq", "redrive", num(s.bad)},
		{"dlq", "redrive", "--subscriber", "billing"},
		{"dlq", "discard", num(s.bad), "--why", "no"},
	} {
		r := s.run(args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "the app is down: writes go through the running app's admin handler (--url)") {
			t.Errorf("%v offline: %s", args, r)
		}
	}
	var js dlqListJSON
	decodeJSON(t, s.run("dlq", "ls", "--state", "pending", "--subscriber", "billing", "-o", "json"), &js)
	if len(js.Items) != 2 {
		t.Fatalf("billing's pending letters after offline writes: %+v", js.Items)
	}
}

// The files that cannot be read are refused with why, and nothing is
// created: a missing database, a directory, a database of another app, a
// Dir without a store; a Dir locked by the running app says to use --url.
func TestOfflineRefusals(t *testing.T) {
	f := newFixture(t, boxcar.Config{})
	tmp := t.TempDir()
	missing := filepath.Join(tmp, "nope.db")
	foreign := filepath.Join(tmp, "foreign.db")
	db, err := sqlite.Open(foreign)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	env := map[string]string{}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"missing db", []string{"--db", missing, "--dir", f.dir}, "no such file"},
		{"db is a dir", []string{"--db", tmp, "--dir", f.dir}, "is a directory"},
		{"foreign db", []string{"--db", foreign, "--dir", f.dir}, "no Boxcar tables"},
		{"running app", []string{"--db", f.dbPath, "--dir", f.dir}, "the app is running; ask it through its admin handler (--url)"},
		{"db without dir", []string{"--db", f.dbPath}, "give both --db"},
	} {
		r := runCLI(context.Background(), env, append([]string{"status"}, c.args...)...)
		want := exitUnreachable
		if c.name == "db without dir" {
			want = exitUsage
		}
		if r.code != want || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s: %s\nwant exit %d and %q", c.name, r, want, c.want)
		}
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the missing database was created: %v", err)
	}
	f.closeBus()
	noStore := filepath.Join(tmp, "nostore")
	r := runCLI(context.Background(), env, "status", "--db", f.dbPath, "--dir", noStore)
	if r.code != exitUnreachable || !strings.Contains(r.stderr, "no NATS store") {
		t.Errorf("a Dir without a store: %s", r)
	}
	if _, err := os.Stat(noStore); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the Dir without a store was created: %v", err)
	}
}

// dlq ls refuses a filter the admin API refuses, also offline, where the
// library would answer it wrongly: a misspelt reason ("no dead letters"
// while letters are parked), an unknown state, an --after past 2^63 (every
// letter from the first).
func TestOfflineDLQListRefusesFiltersTheAPIRefuses(t *testing.T) {
	s := newOfflineStory(t)
	for _, args := range [][]string{
		{"--reason", "parkd"},
		{"--state", "pendng"},
		{"--after", "18446744073709551615"},
	} {
		r := s.run(append([]string{"dlq", "ls"}, args...)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, args[0]) || r.stdout != "" {
			t.Errorf("dlq ls %q offline: %s\nwant exit 2 naming %s, nothing listed", args, r, args[0])
		}
	}
	var js dlqListJSON
	if decodeJSON(t, s.run("dlq", "ls", "--reason", "parked", "-o", "json"), &js); len(js.Items) != 2 {
		t.Fatalf("the parked letters: %+v", js.Items)
	}
}
