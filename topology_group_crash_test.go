package boxcar

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// groupLog is what a group member's HandlerFunc records, each call in its
// own transaction before the ack: the key, the key's counter, when, and
// which instance.
const groupLog = `CREATE TABLE IF NOT EXISTS group_handled (key TEXT NOT NULL, n INTEGER NOT NULL, at_ns INTEGER NOT NULL, instance TEXT NOT NULL)`

// crashGroup is the group of the crash test.
var crashGroup = SubscribeOptions{Types: []string{"order.placed"}, Group: &GroupOptions{Members: 4, LeaseTTL: 2 * time.Second}}

// runGroupMember is the child role roleGroupMember.
func runGroupMember(ctx context.Context, db *sql.DB) int {
	if _, err := db.Exec(groupLog); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	id := env("BOXCAR_INSTANCE")
	bus, err := Open(ctx, db, Config{Dir: env("BOXCAR_DIR"), NATSURL: env("BOXCAR_NATSURL"), Replicas: 3, InstanceID: id, Logger: testLogger()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open-error:", err)
		return 3
	}
	h := HandlerFunc(func(ctx context.Context, m Message) error {
		n, err := strconv.Atoi(string(m.Data))
		if err != nil {
			return Permanent(err)
		}
		return bus.Tx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO group_handled(key, n, at_ns, instance) VALUES (?, ?, ?, ?)`, m.Key, n, time.Now().UnixNano(), id)
			return err
		})
	})
	for {
		_, err = bus.Subscribe(ctx, "hook", h, crashGroup)
		if err == nil || !strings.Contains(err.Error(), "deadline") {
			break
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "subscribe-error:", err)
		return 3
	}
	fmt.Println("ready")
	select {}
}

// slotHolders reads who holds each slot of the crash test's group, from the
// cluster's KV bucket.
func slotHolders(t *testing.T, js jetstream.JetStream) map[int]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := map[int]string{}
	kv, err := js.KeyValue(ctx, groupsBucket)
	if err != nil {
		return out
	}
	for i := range crashGroup.Group.Members {
		e, err := kv.Get(ctx, DefaultStream+".hook.slot."+strconv.Itoa(i))
		if err != nil {
			continue
		}
		var c slotClaim
		if json.Unmarshal(e.Value(), &c) == nil {
			out[i] = c.Instance
		}
	}
	return out
}

// Topology 3 under a real crash: two processes share a HandlerFunc group;
// one is SIGKILLed mid-run. Its slots move to the other within a bounded
// time, every event is handled at least once, and no event of a key is
// handled (for the first time) before an earlier event of that key, across
// both processes: the taker resets the slots' consumers to their ack
// floors, so what the dead process had fetched and not acked comes first.
func TestGroupHandlerFuncSurvivesSIGKILL(t *testing.T) {
	h := startHub(t)
	prod := openInstance(t, h, "prod", nil)
	js := hubJS(t, h)
	url := strings.Join(h.ClientURLs(), ",")
	dirs := map[string]string{}
	children := map[string]*child{}
	for _, id := range []string{"w1", "w2"} {
		dirs[id] = t.TempDir()
		children[id] = startChild(t, roleGroupMember, "BOXCAR_DB="+filepath.Join(dirs[id], "app.db"), "BOXCAR_DIR="+filepath.Join(dirs[id], "nats"),
			"BOXCAR_NATSURL="+url, "BOXCAR_INSTANCE="+id)
	}
	for _, c := range children {
		c.expect(t, "ready")
	}
	waitFor(t, "both members to hold slots", time.Minute, func() (bool, string) {
		hs := slotHolders(t, js)
		n := map[string]int{}
		for _, id := range hs {
			n[id]++
		}
		return n["w1"] > 0 && n["w2"] > 0 && len(hs) == 4, fmt.Sprint(hs)
	})
	// Publish while w1 works; kill it once it has handled some.
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := range 300 {
			if err := publishCounted(context.Background(), prod.bus, "order.placed", fmt.Sprintf("k%d", i%5)); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(3 * time.Millisecond)
		}
	}()
	w1db := openDB(t, filepath.Join(dirs["w1"], "app.db"))
	waitFor(t, "w1 to handle some events", time.Minute, func() (bool, string) {
		var n int
		err := w1db.QueryRow(`SELECT count(*) FROM group_handled`).Scan(&n)
		return err == nil && n >= 20, fmt.Sprint(n, err)
	})
	children["w1"].kill()
	killedAt := time.Now()
	<-published
	waitFor(t, "w2 to hold every slot", time.Minute, func() (bool, string) {
		hs := slotHolders(t, js)
		n := 0
		for _, id := range hs {
			if id == "w2" {
				n++
			}
		}
		return n == 4, fmt.Sprint(hs)
	})
	t.Logf("w2 held every slot %v after the kill (LeaseTTL %v)", time.Since(killedAt).Round(100*time.Millisecond), crashGroup.Group.LeaseTTL)
	w2db := openDB(t, filepath.Join(dirs["w2"], "app.db"))
	waitFor(t, "every key's last event handled", 2*time.Minute, func() (bool, string) {
		var done int
		err := w2db.QueryRow(`SELECT count(*) FROM (SELECT key FROM group_handled GROUP BY key HAVING max(n) = 60)`).Scan(&done)
		return err == nil && done == 5, fmt.Sprint(done, err)
	})
	children["w2"].kill()
	type rec struct {
		key      string
		n        int
		at       int64
		instance string
	}
	var all []rec
	for _, db := range []*sql.DB{w1db, w2db} {
		rows, err := db.Query(`SELECT key, n, at_ns, instance FROM group_handled`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var r rec
			rows.Scan(&r.key, &r.n, &r.at, &r.instance)
			all = append(all, r)
		}
		rows.Close()
	}
	sort.Slice(all, func(i, j int) bool { return all[i].at < all[j].at })
	maxOf := map[string]int{}
	handledBy := map[string]int{}
	for _, r := range all {
		if r.n > maxOf[r.key]+1 {
			t.Fatalf("%s handled %s event %d before %d was ever handled", r.instance, r.key, r.n, maxOf[r.key]+1)
		}
		maxOf[r.key] = max(maxOf[r.key], r.n)
		handledBy[r.instance]++
	}
	for i := range 5 {
		if k := fmt.Sprintf("k%d", i); maxOf[k] != 60 {
			t.Fatalf("key %s handled up to %d of 60", k, maxOf[k])
		}
	}
	if handledBy["w1"] == 0 {
		t.Fatalf("w1 handled nothing before its kill: the test did not test a handoff (%v)", handledBy)
	}
	t.Logf("handled by instance: %v (%d calls for 300 events)", handledBy, len(all))
}
