package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary play the demo's children: the scenarios
// re-execute os.Executable(), which under `go test` is this binary.
func TestMain(m *testing.M) {
	if os.Getenv(envChild) != "" {
		os.Exit(childMain())
	}
	os.Exit(m.Run())
}

// smallConfig keeps the processes few and short; the crash lands after
// event 21 of 40, in the middle of a consumer's fetch.
func smallConfig() config {
	return config{Users: 40, CrashAt: 21, ReorderUsers: 20, Outage: 200 * time.Millisecond, DriftUsers: 20, OpsUsers: 20, Writers: 4, Timeout: 3 * time.Minute}
}

// runOne runs both sides of sc with real processes, real SIGKILLs, real
// SQLite files and real nats-servers, and returns their outcomes.
func runOne(t *testing.T, sc *scenario) (naive, box outcome) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r := &runner{exe: exe, root: t.TempDir(), cfg: smallConfig()}
	ctx := context.Background()
	n, err := r.runSide(ctx, sc, roleNaive)
	if err != nil {
		t.Fatalf("naive side: %v", err)
	}
	b, err := r.runSide(ctx, sc, roleBoxcar)
	if err != nil {
		t.Fatalf("Boxcar side: %v", err)
	}
	t.Logf("naive: %+v", n.out)
	t.Logf("Boxcar: %+v stats %v", b.out, b.stats)
	return n.out, b.out
}

// The crash scenarios are deterministic on both sides: the kill lands where
// the pause point says, so the naive side always gets at least the event at
// the crash wrong, and Boxcar never gets anything wrong.
func TestCrashScenarios(t *testing.T) {
	for _, sc := range []*scenario{scenarioDualWrite, scenarioAutoAck, scenarioDedupe} {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			naive, box := runOne(t, sc)
			if wrong, of := sc.count(naive); wrong < 1 || of < 1 {
				t.Errorf("naive side: %d of %d %s, want at least 1 (the event at the crash)", wrong, of, sc.wrong)
			}
			if box.Users < smallConfig().CrashAt {
				t.Errorf("Boxcar side committed %d signups, want at least %d (the crash came after them)", box.Users, smallConfig().CrashAt)
			}
			if wrong, _ := sc.count(box); wrong != 0 || !allZero(box) {
				t.Errorf("Boxcar side: %d %s, outcome %+v; want every check exact", wrong, sc.wrong, box)
			}
		})
	}
}

// In the reorder scenario the naive count depends on when its background
// retries fire, so only Boxcar's side is asserted; the naive side must still
// have run through the outage.
func TestReorderScenario(t *testing.T) {
	t.Parallel()
	naive, box := runOne(t, scenarioReorder)
	if naive.Users != smallConfig().ReorderUsers {
		t.Errorf("naive side: %d users, want %d", naive.Users, smallConfig().ReorderUsers)
	}
	if box.Users != smallConfig().ReorderUsers || !allZero(box) {
		t.Errorf("Boxcar side: outcome %+v, want %d users and every check exact", box, smallConfig().ReorderUsers)
	}
}

// The schema-drift act, in this process: the naive consumers store an
// empty address for exactly the renamed half; on Boxcar the checker and
// PublishTx refuse the rename with their reasons, and every event, of v1
// or v2, reaches the v2 consumers.
func TestSchemaDriftScenario(t *testing.T) {
	t.Parallel()
	r := &runner{root: t.TempDir(), cfg: smallConfig()}
	n := r.cfg.DriftUsers
	naive, err := r.runSide(t.Context(), scenarioSchemaDrift, roleNaive)
	if err != nil {
		t.Fatalf("naive side: %v", err)
	}
	box, err := r.runSide(t.Context(), scenarioSchemaDrift, roleBoxcar)
	if err != nil {
		t.Fatalf("Boxcar side: %v", err)
	}
	t.Logf("naive: %+v %v", naive.out, naive.notes)
	t.Logf("Boxcar: %+v %v", box.out, box.stats)
	if wrong, of := scenarioSchemaDrift.count(naive.out); wrong != n-n/2 || of != n || naive.stats["empty"] != int64(n-n/2) {
		t.Errorf("naive side: %d of %d %s (%d empty); want the %d renamed ones", wrong, of, scenarioSchemaDrift.wrong, naive.stats["empty"], n-n/2)
	}
	if box.out.Users != n || !allZero(box.out) {
		t.Errorf("Boxcar side: outcome %+v, want %d users and every check exact", box.out, n)
	}
	if got := box.stats["v1_before"] + box.stats["v1_after"] + box.stats["v2_events"]; got != int64(n) || box.stats["v1_after"] == 0 || box.stats["failures"] != 0 {
		t.Errorf("Boxcar side stats %v: want %d events, v1 ones after the rename too, no failures", box.stats, n)
	}
	notes := strings.Join(box.notes, "\n")
	for _, want := range []string{"exit 1", "property `email` removed", "required-property-added", "refused, 2 breaking changes", "PublishTx: ", "user.signed_up v1: invalid payload at /email"} {
		if !strings.Contains(notes, want) {
			t.Errorf("the act's notes lack %q:\n%s", want, notes)
		}
	}
}

// The operations act, with its real processes and admin API: on the naive
// side the redrive after the fix puts the old address over the newer one
// for exactly the poisoned users; on Boxcar's the dead letters park their
// keys, hold the later events, and the redrive releases both in order, so
// no address is stale; the replay rebuilds billing into a fresh table
// equal to the live one. With -serve, the status page the act prints is
// served by the app while the act holds.
func TestOperationsScenario(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := smallConfig()
	cfg.Serve = true
	var page string
	r := &runner{exe: exe, root: t.TempDir(), cfg: cfg, hold: func(url string) { page = getPage(t, url) }}
	poisoned := int64(cfg.OpsUsers / opsEvery)
	naive, err := r.runSide(t.Context(), scenarioOps, roleNaive)
	if err != nil {
		t.Fatalf("naive side: %v", err)
	}
	box, err := r.runSide(t.Context(), scenarioOps, roleBoxcar)
	if err != nil {
		t.Fatalf("Boxcar side: %v", err)
	}
	t.Logf("naive: %+v %v", naive.out, naive.stats)
	t.Logf("Boxcar: %+v %v", box.out, box.stats)
	if wrong, of := scenarioOps.count(naive.out); int64(wrong) != poisoned || of != cfg.OpsUsers || naive.stats["stale"] != poisoned || naive.stats["redriven"] != poisoned || naive.stats["parked_keys"] != 0 {
		t.Errorf("naive side: %d of %d %s, stats %v; want the %d poisoned users stale after the redrive", wrong, of, scenarioOps.wrong, naive.stats, poisoned)
	}
	if wrong, of := scenarioOps.count(box.out); wrong != 0 || of != cfg.OpsUsers || !allZero(box.out) {
		t.Errorf("Boxcar side: %d of %d %s, outcome %+v; want every check exact", wrong, of, scenarioOps.wrong, box.out)
	}
	want := map[string]int64{"parked_keys": poisoned, "heads": poisoned, "held": poisoned, "redriven": 2 * poisoned, "stale": 0,
		"live_rows": int64(cfg.OpsUsers), "rebuilt_rows": int64(cfg.OpsUsers), "differ": 0}
	for k, v := range want {
		if box.stats[k] != v {
			t.Errorf("Boxcar side: %s = %d, want %d (stats %v)", k, box.stats[k], v, box.stats)
		}
	}
	notes := strings.Join(box.notes, "\n")
	for _, w := range []string{"$ boxcar dlq ls --subscriber billing", `$ boxcar dlq redrive --subscriber billing --why "fixed in v1.5"`,
		"$ boxcar replay billing --from-stream-seq 1 --no-dedupe", "rows that differ: 0", "'+' not allowed"} {
		if !strings.Contains(notes, w) {
			t.Errorf("the act's notes lack %q:\n%s", w, notes)
		}
	}
	if !strings.Contains(page, "billing") {
		t.Errorf("the status page held by -serve does not show billing:\n%.2000s", page)
	}
	var b strings.Builder
	printTable(&b, []row{{sc: scenarioOps, fault: scenarioOps.fault(cfg), naive: naive, boxcar: box}})
	for _, w := range []string{"2 of 20 billed at a stale address", "0 of 20", "2 keys parked behind their dead letter, holding 2 later events", "released 4 in their original order", "20 rows, as the live table's 20, 0 differ"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("table lacks %q:\n%s", w, b.String())
		}
	}
}

// getPage GETs url and returns its body, failing on anything but 200.
func getPage(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return ""
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(body)
}

func TestTableAndFlags(t *testing.T) {
	if _, err := selectScenarios("nope"); err == nil || !strings.Contains(err.Error(), "dual-write") {
		t.Errorf("selectScenarios(nope) = %v, want an error listing the scenarios", err)
	}
	if got, err := selectScenarios("3"); err != nil || got[0] != scenarioReorder {
		t.Errorf("selectScenarios(3) = %v, %v", got, err)
	}
	cfg := defaultConfig()
	cfg.CrashAt = cfg.Users + 1
	if err := cfg.validate(); err == nil {
		t.Error("a crash point past the last signup was accepted")
	}
	cfg = defaultConfig()
	cfg.OpsUsers = opsEvery - 1
	if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), "-ops-users") {
		t.Errorf("an operations act without a poisoned user: %v", err)
	}
	var b strings.Builder
	printTable(&b, []row{{
		sc: scenarioDedupe, fault: "f",
		naive:  sideResult{out: outcome{Users: 10, Counted: 13}},
		boxcar: sideResult{out: outcome{Users: 10, Counted: 10}, stats: map[string]int64{"analytics_skipped": 5}},
	}})
	printTable(&b, []row{{
		sc: scenarioSchemaDrift, fault: "f",
		naive:  sideResult{out: outcome{Users: 10, StaleEmail: 5}, notes: []string{"nothing noticed"}},
		boxcar: sideResult{out: outcome{Users: 10}, stats: map[string]int64{"v1_before": 5, "v1_after": 2, "v2_events": 3}, notes: []string{"check: exit 1", "  FAIL x"}},
	}})
	for _, want := range []string{"3 of 10 signups counted twice", "5 redelivered events", "exact in every run",
		"5 of 10 billed at an empty address", "7 v1 events", "   naive:  nothing noticed\n", "   Boxcar: check: exit 1\n", "             FAIL x\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}
