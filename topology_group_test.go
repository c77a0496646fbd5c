package boxcar

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Topology 3, TxHandler groups: two instances of one subscriber on a
// shared cluster, each with its own database, split the partitions by
// sticky slots. Each applies the events of its slot's partitions exactly
// once, in per-key order, and together they apply all; a stopped
// instance's partitions wait for it (no other database takes them) and it
// catches up when it comes back. A third database finds every slot
// claimed, and an instance with another Members is refused.
func TestGroupTxHandlerStickySlots(t *testing.T) {
	h := startHub(t)
	prod := openInstance(t, h, "prod", nil)
	w1 := openInstance(t, h, "w1", nil)
	w2 := openInstance(t, h, "w2", nil)
	opts := SubscribeOptions{Types: []string{"order.placed"}, Group: &GroupOptions{Members: 2}}
	subscribeOnCluster(t, w1.bus, "billing", recordingHandler("billing"), opts)
	subscribeOnCluster(t, w2.bus, "billing", recordingHandler("billing"), opts)
	publishKeys(t, prod.bus, "order.placed", "k", 200)
	waitFor(t, "the group to apply 200 events", 2*time.Minute, func() (bool, string) {
		n1, n2 := countApplied(t, w1.db, "billing"), countApplied(t, w2.db, "billing")
		return n1+n2 >= 200, fmt.Sprintf("w1 %d, w2 %d", n1, n2)
	})
	keysOf := func(tb *testBundle) map[string]bool {
		rows, err := tb.db.Query(`SELECT DISTINCT key FROM applied WHERE subscriber = 'billing'`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string]bool{}
		for rows.Next() {
			var k string
			rows.Scan(&k)
			out[k] = true
		}
		return out
	}
	k1, k2 := keysOf(w1), keysOf(w2)
	for k := range k1 {
		if k2[k] {
			t.Fatalf("key %q applied by both instances: a slot moved or partitions overlap", k)
		}
	}
	if len(k1) == 0 || len(k2) == 0 {
		t.Fatalf("keys by instance: w1 %v, w2 %v: want both to own some (5 keys over 64 partitions, 2 slots)", k1, k2)
	}

	// A third database: every slot is claimed. Another Members: refused.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w3 := openInstance(t, h, "w3", nil)
	if _, err := w3.bus.Subscribe(ctx, "billing", recordingHandler("billing"), opts); !errors.Is(err, ErrGroup) || !strings.Contains(err.Error(), "every slot") {
		t.Fatalf("a third database in a 2-slot TxHandler group: %v; want ErrGroup", err)
	}
	bad := opts
	bad.Group = &GroupOptions{Members: 3}
	if _, err := w3.bus.Subscribe(ctx, "billing", recordingHandler("billing"), bad); !errors.Is(err, ErrGroup) || !strings.Contains(err.Error(), "Members 2") {
		t.Fatalf("Members 3 in a group of 2: %v; want ErrGroup naming the group's shape", err)
	}

	// w2 stops; its partitions wait, w1 does not take them; w2 comes back
	// and catches up.
	w2.closeBus()
	publishKeys(t, prod.bus, "order.placed", "k", 100)
	waitRelayed(t, prod.bus, maxOutboxSeq(t, prod.db))
	w2.open()
	subscribeOnCluster(t, w2.bus, "billing", recordingHandler("billing"), opts)
	waitFor(t, "the group to apply 300 events", 2*time.Minute, func() (bool, string) {
		n1, n2 := countApplied(t, w1.db, "billing"), countApplied(t, w2.db, "billing")
		return n1+n2 >= 300, fmt.Sprintf("w1 %d, w2 %d", n1, n2)
	})
	if k := keysOf(w1); len(k) != len(k1) {
		t.Fatalf("w1 applied keys %v after w2 stopped, had %v: a sticky slot moved", k, k1)
	}
	// Exactly once in per-key order, over both databases.
	checkGroupApplied(t, "billing", prod, w1, w2)
}

// checkGroupApplied checks that the instances' databases together applied
// every event of prod exactly once, each key's in order, each key in one
// database.
func checkGroupApplied(t *testing.T, sub string, prod *testBundle, members ...*testBundle) {
	t.Helper()
	want := map[string]int{}
	rows, err := prod.db.Query(`SELECT key, n FROM counters`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		var n int
		rows.Scan(&k, &n)
		want[k] = n
	}
	rows.Close()
	got := map[string]int{}
	for _, m := range members {
		next := map[string]int{}
		rows, err := m.db.Query(`SELECT key, n FROM applied WHERE subscriber = ? ORDER BY id`, sub)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var k string
			var n int
			rows.Scan(&k, &n)
			if n != next[k]+1 {
				t.Fatalf("%s: key %q applied %d after %d", m.bus.cfg.InstanceID, k, n, next[k])
			}
			next[k] = n
		}
		rows.Close()
		for k, n := range next {
			if _, dup := got[k]; dup {
				t.Fatalf("key %q applied in two databases", k)
			}
			got[k] = n
		}
	}
	for k, n := range want {
		if got[k] != n {
			t.Fatalf("key %q: applied up to %d of %d", k, got[k], n)
		}
	}
}

// orderRecorder is a HandlerFunc's log across instances: it checks that no
// event of a key is handled before every earlier event of that key was
// handled at least once (the events' data is the key's counter).
type orderRecorder struct {
	mu         sync.Mutex
	maxOf      map[string]int // highest counter handled, per key
	handled    int
	violations []string
}

func (r *orderRecorder) handler(instance string) Handler {
	return HandlerFunc(func(ctx context.Context, m Message) error {
		n, err := strconv.Atoi(string(m.Data))
		if err != nil {
			return Permanent(err)
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if n > r.maxOf[m.Key]+1 {
			r.violations = append(r.violations, fmt.Sprintf("%s: key %q event %d handled before %d", instance, m.Key, n, r.maxOf[m.Key]+1))
		}
		r.maxOf[m.Key] = max(r.maxOf[m.Key], n)
		r.handled++
		return nil
	})
}

// Topology 3, HandlerFunc groups: two instances share a group by leases.
// One is closed mid-run: its slots move to the other within about
// LeaseTTL, and no event of a key is handled before an earlier event of
// that key (repeats are allowed: at-least-once across a handoff).
func TestGroupHandlerFuncLeasesMove(t *testing.T) {
	h := startHub(t)
	prod := openInstance(t, h, "prod", nil)
	w1 := openInstance(t, h, "w1", nil)
	w2 := openInstance(t, h, "w2", nil)
	rec := &orderRecorder{maxOf: map[string]int{}}
	opts := SubscribeOptions{Types: []string{"order.placed"}, Group: &GroupOptions{Members: 4, LeaseTTL: 2 * time.Second}}
	subscribeOnCluster(t, w1.bus, "hook", rec.handler("w1"), opts)
	subscribeOnCluster(t, w2.bus, "hook", rec.handler("w2"), opts)
	ctx := context.Background()
	waitFor(t, "both instances to hold slots", time.Minute, func() (bool, string) {
		s1, _ := w1.bus.Stats(ctx)
		s2, _ := w2.bus.Stats(ctx)
		return len(s1.Groups) == 1 && len(s2.Groups) == 1 && len(s1.Groups[0].Held) > 0 && len(s2.Groups[0].Held) > 0,
			fmt.Sprintf("w1 %+v, w2 %+v", s1.Groups, s2.Groups)
	})
	publishKeys(t, prod.bus, "order.placed", "k", 150)
	w1.closeBus()
	publishKeys(t, prod.bus, "order.placed", "k", 150)
	waitFor(t, "w2 to hold every slot", time.Minute, func() (bool, string) {
		s2, _ := w2.bus.Stats(ctx)
		return len(s2.Groups) == 1 && len(s2.Groups[0].Held) == 4, fmt.Sprintf("%+v", s2.Groups)
	})
	waitFor(t, "every key's last event handled", 2*time.Minute, func() (bool, string) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		done := 0
		for i := range 5 {
			if rec.maxOf[fmt.Sprintf("k%d", i)] == 60 {
				done++
			}
		}
		return done == 5, fmt.Sprintf("%v", rec.maxOf)
	})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.violations) > 0 {
		t.Fatalf("%d per-key order violations across the handoff: %v", len(rec.violations), rec.violations[:min(10, len(rec.violations))])
	}
	if rec.handled < 300 {
		t.Fatalf("handled %d, want at least 300", rec.handled)
	}
}
