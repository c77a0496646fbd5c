package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/sqlite"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) {
		if buildDir != "" {
			os.RemoveAll(buildDir)
		}
	}))
}

// The hostile event: its key, header, payload and its handler's error are
// full of terminal escapes, carriage returns and a bidi override.
const (
	hostileKey     = "\x1b[2Jevil\rkey"
	hostileHeader  = "\x1b[5mblink\x1b]0;title\x07"
	hostilePayload = "\x1b]0;pwned\x07\x1b[2J\rfake prompt $ \x1b[31mred\x1b[0m\n\u202eevil\u009b31m"
	hostileError   = "\x1b[31mboom\x1b[0m\r overwritten"
)

// binaryPayload is a payload that is not text.
var binaryPayload = []byte{0x00, 0x01, 0x02, 0xff, 0xfe, 'A', 0x1b, '[', '2', 'J'}

// fixture is a real bus on a SQLite file and a store in t.TempDir().
type fixture struct {
	t      *testing.T
	dbPath string
	dir    string
	cfg    boxcar.Config
	db     *sql.DB
	bus    *boxcar.Bus
	subs   map[string]*boxcar.Subscription
	// ledgerFixed makes ledger's handler accept the key it refuses.
	ledgerFixed atomic.Bool
}

func newFixture(t *testing.T, cfg boxcar.Config) *fixture {
	t.Helper()
	root := t.TempDir()
	f := &fixture{t: t, dbPath: filepath.Join(root, "app.db"), dir: filepath.Join(root, "data"), cfg: cfg, subs: map[string]*boxcar.Subscription{}}
	f.cfg.Dir = f.dir
	db, err := sqlite.Open(f.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	f.db = db
	if _, err := db.Exec(`CREATE TABLE applied (subscriber TEXT, id TEXT, PRIMARY KEY (subscriber, id))`); err != nil {
		t.Fatal(err)
	}
	f.open()
	t.Cleanup(f.close)
	return f
}

func (f *fixture) open() {
	f.t.Helper()
	bus, err := boxcar.Open(context.Background(), f.db, f.cfg)
	if err != nil {
		f.t.Fatalf("open bus: %v", err)
	}
	f.bus = bus
}

// closeBus closes the bus (the app goes down), keeping the files.
func (f *fixture) closeBus() {
	f.t.Helper()
	if f.bus == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.bus.Close(ctx); err != nil {
		f.t.Errorf("close bus: %v", err)
	}
	f.bus = nil
}

func (f *fixture) close() {
	f.closeBus()
	if f.db != nil {
		f.db.Close()
		f.db = nil
	}
}

// subscribe starts a subscriber of the story.
func (f *fixture) subscribe(name string, h boxcar.Handler, opts boxcar.SubscribeOptions) {
	f.t.Helper()
	s, err := f.bus.Subscribe(context.Background(), name, h, opts)
	if err != nil {
		f.t.Fatalf("subscribe %s: %v", name, err)
	}
	f.subs[name] = s
}

func (f *fixture) closeSub(name string) {
	f.t.Helper()
	if err := f.subs[name].Close(context.Background()); err != nil {
		f.t.Fatalf("close %s: %v", name, err)
	}
	delete(f.subs, name)
}

func (f *fixture) publish(events ...boxcar.Event) {
	f.t.Helper()
	if err := f.bus.Publish(context.Background(), events...); err != nil {
		f.t.Fatalf("publish: %v", err)
	}
}

func record(ctx context.Context, tx *sql.Tx, sub string, m boxcar.Message) error {
	_, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO applied (subscriber, id) VALUES (?, ?)`, sub, m.ID)
	return err
}

// populate tells the story every command reads: three subscribers
// (billing: transactional, dead-letters three events at once, among them
// the hostile one and a binary one; ledger: parks its keys, parks "stuck"
// behind its first event; audit: a HandlerFunc, stopped, with a replay
// recorded), and it waits until every event is handled.
func (f *fixture) populate() {
	f.t.Helper()
	f.subscribe("billing", boxcar.TxHandler(func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
		switch m.Key {
		case "bad":
			return boxcar.Permanent(errors.New("card declined"))
		case hostileKey:
			return boxcar.Permanent(errors.New(hostileError))
		case "bin":
			return boxcar.Permanent(errors.New("not JSON"))
		}
		return record(ctx, tx, "billing", m)
	}), boxcar.SubscribeOptions{MaxAttempts: 1})
	f.subscribe("ledger", boxcar.TxHandler(func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
		if string(m.Data) == "first" && !f.ledgerFixed.Load() {
			return boxcar.Permanent(errors.New("ledger closed"))
		}
		return record(ctx, tx, "ledger", m)
	}), boxcar.SubscribeOptions{MaxAttempts: 1, ParkKeys: true, Types: []string{"order.placed"}})
	var audited atomic.Int64
	f.subscribe("audit", boxcar.HandlerFunc(func(context.Context, boxcar.Message) error {
		audited.Add(1)
		return nil
	}), boxcar.SubscribeOptions{Types: []string{"order.placed"}})

	order := func(key, data string) boxcar.Event {
		return boxcar.Event{Type: "order.placed", Key: key, Data: []byte(data)}
	}
	f.publish(order("k1", `{"n":1}`), order("k1", `{"n":2}`), order("k1", `{"n":3}`), order("bad", `{"card":"4242"}`))
	f.publish(order("stuck", "first"), order("stuck", "second"), order("stuck", "third"))
	f.publish(boxcar.Event{Type: "order.placed", Key: hostileKey, Headers: map[string]string{"X-Evil": hostileHeader}, Data: []byte(hostilePayload)})
	f.publish(boxcar.Event{Type: "blob.stored", Key: "bin", Data: binaryPayload})
	// billing: bad, hostile, bin; ledger: stuck's head and the two it holds.
	f.waitDeadLetters(6)
	f.waitCaughtUp()
	waitFor(f.t, "audit handled its 8 events", func() (bool, string) { return audited.Load() == 8, fmt.Sprint(audited.Load()) })

	// audit goes down, and a replay of it is asked: recorded, not moving.
	f.closeSub("audit")
	if _, err := f.bus.Replay(context.Background(), boxcar.ReplayRequest{Subscriber: "audit", From: boxcar.ReplayFrom{StreamSeq: 1}, NoDedupe: true, By: "test"}); err != nil {
		f.t.Fatalf("replay audit: %v", err)
	}
}

// blockRelay makes the stream refuse the relay's publishes: an event too
// large for it is set aside (boxcar_outbox_dead), then the stream is full
// (MaxMsgs, DiscardNew) and the next events stay pending in the outbox.
func (f *fixture) blockRelay(pending int) {
	f.t.Helper()
	ctx := context.Background()
	f.updateStream(func(c *jetstream.StreamConfig, st jetstream.StreamState) { c.MaxMsgSize = 2000 })
	f.publish(boxcar.Event{Type: "order.placed", Key: "huge", Data: bytes.Repeat([]byte("x"), 4000)})
	waitFor(f.t, "the relay set the huge event aside", func() (bool, string) {
		st, err := f.bus.Stats(ctx)
		return err == nil && st.RelaySetAside == 1 && st.OutboxLag == 0, fmt.Sprintf("%+v %v", st, err)
	})
	f.updateStream(func(c *jetstream.StreamConfig, st jetstream.StreamState) {
		c.MaxMsgs, c.Discard = int64(st.Msgs), jetstream.DiscardNew
	})
	before, _ := f.bus.Stats(ctx)
	for i := range pending {
		f.publish(boxcar.Event{Type: "order.placed", Key: "late", Headers: map[string]string{"Trace": fmt.Sprint(i)}, Data: []byte(`{"late":true}`)})
	}
	waitFor(f.t, "the stream refused the pending events", func() (bool, string) {
		st, err := f.bus.Stats(ctx)
		return err == nil && st.OutboxLag == int64(pending) && st.RelayFailures > before.RelayFailures, fmt.Sprintf("%+v %v", st, err)
	})
}

// unblockRelay lifts the stream's message limit.
func (f *fixture) unblockRelay() {
	f.updateStream(func(c *jetstream.StreamConfig, st jetstream.StreamState) { c.MaxMsgs = -1 })
}

func (f *fixture) updateStream(edit func(*jetstream.StreamConfig, jetstream.StreamState)) {
	f.t.Helper()
	ctx := context.Background()
	s, err := f.bus.JetStream().Stream(ctx, f.bus.StreamName())
	if err != nil {
		f.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	cfg := info.Config
	edit(&cfg, info.State)
	if _, err := f.bus.JetStream().UpdateStream(ctx, cfg); err != nil {
		f.t.Fatalf("update stream: %v", err)
	}
}

func (f *fixture) waitDeadLetters(n int) {
	f.t.Helper()
	waitFor(f.t, fmt.Sprintf("%d dead letters", n), func() (bool, string) {
		dl, _, err := f.bus.DeadLetters(context.Background(), boxcar.DeadLetterFilter{})
		return err == nil && len(dl) == n, fmt.Sprint(len(dl), err)
	})
}

// waitCaughtUp waits until every running subscriber has nothing pending
// or unacked.
func (f *fixture) waitCaughtUp() {
	f.t.Helper()
	waitFor(f.t, "every subscriber caught up", func() (bool, string) {
		subs, err := f.bus.Subscribers(context.Background())
		if err != nil {
			return false, err.Error()
		}
		for _, s := range subs {
			if s.Running && s.Pending+uint64(s.Unacked) > 0 {
				return false, fmt.Sprintf("%s: %d pending, %d unacked", s.Name, s.Pending, s.Unacked)
			}
		}
		return true, ""
	})
}

// letter returns the seq of the one dead letter of subscriber with key.
func (f *fixture) letter(subscriber, key string) uint64 {
	f.t.Helper()
	dl, _, err := f.bus.DeadLetters(context.Background(), boxcar.DeadLetterFilter{Subscriber: subscriber, Key: key})
	if err != nil || len(dl) == 0 {
		f.t.Fatalf("dead letter of %s key %q: %v %v", subscriber, key, dl, err)
	}
	return dl[0].Seq
}

// waitFor polls cond until it holds, for at most a minute.
func waitFor(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s; last state: %s", what, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// result is what one run of the command printed and returned.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runCLI runs the command in this process with env as its whole
// environment.
func runCLI(ctx context.Context, env map[string]string, args ...string) result {
	var out, errOut syncBuffer
	c := newCLI(func(k string) string { return env[k] }, &out, &errOut)
	c.pollEvery = 20 * time.Millisecond
	code := c.dispatch(ctx, args)
	return result{stdout: out.String(), stderr: errOut.String(), code: code}
}

// mustContain fails unless s holds every one of want.
func mustContain(t *testing.T, what, s string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(s, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, s)
		}
	}
}
