package boxcar

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A handler that kills the process on one event (SIGKILL here: a crash in
// cgo, an os.Exit, a panic on a goroutine of its own) must not kill every
// restart for ever. Each start runs the first event it redelivers alone;
// the attempts on the poison event that the process did not outlive are
// counted across restarts, and after MaxAttempts it is dead-lettered
// without its handler run again. The events of other keys, published
// around it and handled in the same transactions as it, are each applied
// once, in order, and none of them is blamed.
func TestAHandlerThatKillsTheProcessIsDeadLetteredAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		plain  bool
		keys   int // other keys, with three events each
		before int // of their events published before the poison event
		mode   string
	}{
		{"tx", false, 3, 6, ""},
		{"tx, the poison event deep in a backlog", false, 20, 45, ""},
		{"plain", true, 3, 6, ""},
		// The attempt run alone ends (an error; a timeout that abandons the
		// call), and the process dies after: on the retry, or 300 ms after
		// the timeout, while a slow innocent event runs. The record stays,
		// and nothing else runs alone to be blamed.
		{"plain, fails then kills on the retry", true, 3, 6, "fail-then-kill"},
		{"plain, times out then kills", true, 3, 6, "timeout-then-kill"},
		// The ack of the poison event's dead letter dies with the process
		// (the embedded server's last acks may): the next start gets the
		// event back, below the record's "through". It is acked, its
		// handler not run, or it kills every start again.
		{"tx, the dead letter's ack dies with the process", false, 3, 6, "dead-letter-ack-lost"},
		{"plain, the dead letter's ack dies with the process", true, 3, 6, "dead-letter-ack-lost"},
		// And the start after that adds a type to the subscription: its
		// reset to the type's first event redelivers the event too
		// (a reviewer found the record dropped there).
		{"tx, the dead letter's ack dies, and the next start adds a type", false, 3, 6, "dead-letter-ack-lost+type"},
		// Or an operator deletes the consumer before the next start: the
		// new consumer delivers the event again (a second review found
		// the record dropped there too).
		{"tx, the dead letter's ack dies, and the consumer is deleted", false, 3, 6, "dead-letter-ack-lost+consumer"},
		// The first publish of the dead letter fails (a server too busy to
		// answer in time): the key retries it, and the record
		// of the event as through and dead-lettered is written once it is
		// published (it was not: the start after the lost ack
		// dead-lettered the event a second time).
		{"tx, the dead letter fails once, then its ack dies", false, 3, 6, "dead-letter-ack-lost+dlq-fails"},
		{"plain, the dead letter fails once, then its ack dies", true, 3, 6, "dead-letter-ack-lost+dlq-fails"},
		// The process dies as the dead letter's ack is sent: the record
		// comes before the ack (a reviewer found it after: the next start
		// dead-lettered the event again).
		{"tx, the process dies as the dead letter's ack is sent", false, 3, 6, "dead-letter-ack-lost+kill-at-ack"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			killedHandlerRuns(t, tc.plain, tc.keys, tc.before, tc.mode)
		})
	}
}

func killedHandlerRuns(t *testing.T, plain bool, keys, before int, mode string) {
	dir := t.TempDir()
	dbPath, natsDir, callsPath := filepath.Join(dir, "app.db"), filepath.Join(dir, "nats"), filepath.Join(dir, "calls")
	db := openDB(t, dbPath)
	tb := &testBundle{t: t, dir: dir, dbPath: dbPath, db: db, cfg: Config{Dir: natsDir}}
	tb.open()
	ctx := context.Background()
	n := 0
	mode, variant, _ := strings.Cut(mode, "+")
	addType, dropConsumer := variant == "type", variant == "consumer"
	if addType {
		// An event of a type the subscription takes only at the last
		// starts.
		if err := publishCounted(ctx, tb.bus, "order.noted", "noted"); err != nil {
			t.Fatal(err)
		}
		n++
	}
	for i := 1; i <= 3; i++ {
		for k := range keys {
			if n == before {
				if err := tb.bus.Publish(ctx, Event{Type: "order.placed", Key: "poison", Data: []byte("1")}); err != nil {
					t.Fatal(err)
				}
			}
			if err := publishCounted(ctx, tb.bus, "order.placed", "k"+strconv.Itoa(k)); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	if mode == "timeout-then-kill" {
		if err := publishCounted(ctx, tb.bus, "order.placed", "slow"); err != nil {
			t.Fatal(err)
		}
		n++
	}
	waitRelayed(t, tb.bus, int64(n+1))
	tb.closeBus()

	env := []string{"BOXCAR_DB=" + dbPath, "BOXCAR_DIR=" + natsDir, "BOXCAR_CALLS=" + callsPath, "BOXCAR_KILL_MODE=" + mode}
	if plain {
		env = append(env, "BOXCAR_PLAIN=1")
	}
	switch variant {
	case "dlq-fails":
		env = append(env, "BOXCAR_DLQ_FAILS=1")
	case "kill-at-ack":
		env = append(env, "BOXCAR_KILL_AT_ACK=1")
	}
	later := env // the starts after the dead letter whose ack was lost
	if addType {
		env = append(slices.Clone(env), "BOXCAR_TYPES=order.placed")
	}
	maxRuns := 12
	var c *child
	for run := 1; ; run++ {
		if run > maxRuns {
			t.Fatalf("the process died at each of %d starts: a crash loop (applied %d of %d)", maxRuns, countApplied(t, db, "billing"), n)
		}
		c = startChild(t, roleKillKey, env...)
		if c.lineOrDies(t, `msg="boxcar: event dead-lettered"`) {
			break
		}
	}
	if mode == "dead-letter-ack-lost" {
		select { // killed once the event's record as through was written, its ack lost
		case <-c.waited:
		case <-time.After(2 * time.Minute):
			t.Fatalf("the child lived on 2 minutes after the dead letter whose ack it lost (no record of the event as through); it logged:\n%s", c.logged())
		}
		if dropConsumer {
			tb.open()
			if err := tb.bus.js.DeleteConsumer(ctx, tb.bus.subStreamName(), "billing"); err != nil {
				t.Fatal(err)
			}
			tb.closeBus()
		}
		for run := 1; ; run++ {
			if run > maxRuns {
				t.Fatalf("after the dead letter whose ack was lost, the process died at each of %d starts: a crash loop", maxRuns)
			}
			c = startChild(t, roleKillKey, later...)
			if c.lineOrDies(t, "an event dead-lettered before the stop came back") {
				break
			}
		}
	}
	// Every event applied (a plain handler may apply one twice: count each
	// once).
	waitFor(t, fmt.Sprintf("billing to apply %d events", n), 3*time.Minute, func() (bool, string) {
		var got int
		if err := db.QueryRow(`SELECT count(*) FROM (SELECT DISTINCT key, n FROM applied WHERE subscriber = 'billing')`).Scan(&got); err != nil {
			return false, err.Error()
		}
		return got >= n, fmt.Sprintf("applied %d", got)
	})
	c.kill()

	raw, err := os.ReadFile(callsPath)
	if err != nil {
		t.Fatal(err)
	}
	var attempts []int
	for _, l := range strings.Fields(string(raw)) {
		a, _ := strconv.Atoi(l)
		attempts = append(attempts, a)
	}
	// Attempts before the poison event ran alone are not counted; the last
	// three ran alone (with an error or a timeout, the count goes on in
	// the process too).
	if mode == "" && (len(attempts) < 3 || !slices.Equal(attempts[len(attempts)-3:], []int{1, 2, 3})) {
		t.Fatalf("the handler saw attempts %v on the poison event; want them to end with 1 2 3 (alone)", attempts)
	}
	tb.open()
	defer tb.closeBus()
	letters, _, err := tb.bus.DeadLetters(ctx, DeadLetterFilter{Subscriber: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	if len(letters) != 1 {
		t.Fatalf("%d dead letters, want only the poison event's: %+v", len(letters), letters)
	}
	if dl := letters[0]; dl.Key != "poison" || dl.Reason != "failed" || dl.Attempts != 3 || len(dl.History) != 3 ||
		(mode == "" && !strings.Contains(dl.Error, "process stopped")) {
		t.Fatalf("dead letter %+v (the handler saw attempts %v)", dl, attempts)
	}
	if plain {
		checkAtLeastOnceInOrder(t, db, "billing")
	} else if got := checkExactlyOnceInOrder(t, db, "billing"); got != n {
		t.Fatalf("checked %d events, want %d", got, n)
	}
}

// checkAtLeastOnceInOrder checks that subscriber applied each key's
// counters 1..n (n as the counters table has it), each at least once, and
// each for the first time in order (a plain handler runs again what a
// crash left unacked).
func checkAtLeastOnceInOrder(t *testing.T, db *sql.DB, subscriber string) {
	t.Helper()
	want := committedCounters(t, db)
	rows, err := db.Query(`SELECT key, n FROM applied WHERE subscriber = ? ORDER BY id`, subscriber)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	next := map[string]int{}
	for rows.Next() {
		var k string
		var c int
		if err := rows.Scan(&k, &c); err != nil {
			t.Fatal(err)
		}
		if c > next[k]+1 {
			t.Fatalf("key %s: counter %d applied before %d", k, c, next[k]+1)
		}
		next[k] = max(next[k], c)
	}
	for k, c := range want {
		if next[k] != c {
			t.Fatalf("key %s: applied up to %d of %d", k, next[k], c)
		}
	}
}

// lineOrDies waits until the child logs a line containing s (true) or dies
// (false).
func (c *child) lineOrDies(t *testing.T, s string) bool {
	t.Helper()
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case l := <-c.lines:
			if strings.Contains(l, s) {
				return true
			}
		case <-c.waited:
			// Its last lines may be unread yet (a select picks either).
			_, ok := c.unread(func(l string) bool { return strings.Contains(l, s) })
			return ok
		case <-timeout:
			t.Fatalf("the child neither died nor logged %q in 2 minutes", s)
		}
	}
}
