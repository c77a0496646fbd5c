package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/metrics"
)

// The runbook's rehearsal: every section of docs/RUNBOOK.md is run against
// a live bus. Each rehearsal brings a real bus (a SQLite file and an
// embedded NATS store in t.TempDir()) into the section's failure, reads the
// diagnosis the section names (the boxcar command's output, the metric),
// runs the section's fix with the boxcar commands exactly as the runbook
// writes them (its placeholders SEQ, S, K, W, DIR, app.db filled in), and
// checks that the bus is healthy afterwards and that no event was lost or
// applied twice.
//
// The commands come from the runbook itself: a rehearsal can only run a
// command its section writes (rehearsal.run fails on any other), and it
// must run every one its section writes (checked when it ends). A command
// added to the runbook, changed or moved to another section fails the
// rehearsal until it is rehearsed.

const runbookPath = "../../docs/RUNBOOK.md"

// runbookSection is the text under one anchor of the runbook (up to the
// next one) and the boxcar commands written in it.
type runbookSection struct {
	anchor   string
	text     string
	commands []string
}

var (
	runbookAnchor  = regexp.MustCompile(`<a id="([a-z0-9-]+)"></a>`)
	runbookCommand = regexp.MustCompile("`(boxcar (?:status|health|subscribers|dlq|replay|outbox|schema)[^`]*)`")
)

// firstLook is the name given to the runbook's text before its first
// anchor (the "first look" table).
const firstLook = "first-look"

// loadRunbook parses the runbook into its sections, in the document's
// order (the parsing of metrics/rules_test.go's runbookAnchors, with the
// text before the first anchor as the section firstLook).
func loadRunbook(t *testing.T) []runbookSection {
	t.Helper()
	raw, err := os.ReadFile(runbookPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	locs := runbookAnchor.FindAllStringSubmatchIndex(doc, -1)
	if len(locs) == 0 {
		t.Fatalf("%s: no anchors", runbookPath)
	}
	sections := []runbookSection{{anchor: firstLook, text: doc[:locs[0][0]]}}
	for i, loc := range locs {
		end := len(doc)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		sections = append(sections, runbookSection{anchor: doc[loc[2]:loc[3]], text: doc[loc[1]:end]})
	}
	for i := range sections {
		for _, m := range runbookCommand.FindAllStringSubmatch(sections[i].text, -1) {
			if !slices.Contains(sections[i].commands, m[1]) {
				sections[i].commands = append(sections[i].commands, m[1])
			}
		}
	}
	return sections
}

// rehearsals are the rehearsal of each section that writes commands, by
// its anchor.
var rehearsals = map[string]func(*testing.T, *rehearsal){
	firstLook:                rehearseFirstLook,
	"lost-outbox":            rehearseOutbox,
	"lost-early-ack":         rehearseEarlyAck,
	"lost-subscriber-behind": rehearseSubscriberBehind,
	"lost-expiry":            rehearseExpiry,
	"lost-stream-deleted":    rehearseStreamDeleted,
	"out-of-order":           rehearseOutOfOrder,
	"duplicate":              rehearseDuplicate,
	"poison-set-aside":       rehearseSetAside,
	"poison-retrying":        rehearseRetrying,
	"poison-dead-letter":     rehearseDeadLetter,
	"poison-parked-key":      rehearseParkedKey,
	"schema-drift":           rehearseSchemaDrift,
	"stuck-writer":           rehearseStuckWriter,
	"scrape-errors":          rehearseScrapeErrors,
	"disk-fsync":             rehearseDiskFsync,
}

// TestRunbook rehearses each section of the runbook that writes a command,
// in a subtest named by the section's anchor; a section with commands and
// no rehearsal fails, and so does a rehearsal whose section is gone.
func TestRunbook(t *testing.T) {
	sections := loadRunbook(t)
	seen := map[string]bool{}
	for _, s := range sections {
		seen[s.anchor] = true
		if len(s.commands) == 0 {
			if rehearsals[s.anchor] != nil {
				t.Errorf("section #%s writes no boxcar command, but has a rehearsal", s.anchor)
			}
			continue
		}
		t.Run(s.anchor, func(t *testing.T) {
			t.Parallel()
			fn := rehearsals[s.anchor]
			if fn == nil {
				t.Fatalf("section #%s writes %q and has no rehearsal", s.anchor, s.commands)
			}
			fn(t, newRehearsal(t, s))
		})
	}
	for anchor := range rehearsals {
		if !seen[anchor] {
			t.Errorf("rehearsal of #%s: the runbook has no such section", anchor)
		}
	}
}

// TestRunbookTokens checks the expansion of a runbook command into
// arguments: quotes, placeholders, and an optional [--flag X].
func TestRunbookTokens(t *testing.T) {
	t.Parallel()
	cases := []struct {
		cmd  string
		vars []string
		want []string
	}{
		{`boxcar dlq discard SEQ --why "refund issued by hand"`, []string{"SEQ", "7"}, []string{"dlq", "discard", "7", "--why", "refund issued by hand"}},
		{`boxcar dlq redrive --subscriber S [--key K]`, []string{"S", "ledger", "K", "k 1"}, []string{"dlq", "redrive", "--subscriber", "ledger", "--key", "k 1"}},
		{`boxcar dlq redrive --subscriber S [--key K]`, []string{"S", "ledger"}, []string{"dlq", "redrive", "--subscriber", "ledger"}},
		{`boxcar schema check DIR --db app.db`, []string{"DIR", "/d", "app.db", "/a.db"}, []string{"schema", "check", "/d", "--db", "/a.db"}},
	}
	for _, c := range cases {
		got, err := expandCommand(c.cmd, c.vars)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("expand %q %q = %q %v, want %q", c.cmd, c.vars, got, err, c.want)
		}
	}
	for _, bad := range []string{`boxcar dlq discard SEQ --why "open`, `status`, `boxcar dlq redrive [--key K`} {
		if got, err := expandCommand(bad, nil); err == nil {
			t.Errorf("expand %q = %q, want an error", bad, got)
		}
	}
	if _, err := expandCommand("boxcar dlq show SEQ", []string{"SEQ"}); err == nil {
		t.Error("an odd list of vars: no error")
	}
}

// expandCommand splits a runbook command into the CLI's arguments (without
// "boxcar"): words, or "quoted text" as one; a word that is a placeholder
// in vars (pairs: placeholder, value) is replaced by its value; an
// optional part [--flag X] is kept if X is a placeholder given a value,
// else dropped.
func expandCommand(cmd string, vars []string) ([]string, error) {
	if len(vars)%2 != 0 {
		return nil, fmt.Errorf("vars %q: want pairs of placeholder and value", vars)
	}
	values := map[string]string{}
	for i := 0; i < len(vars); i += 2 {
		values[vars[i]] = vars[i+1]
	}
	words, err := splitWords(cmd)
	if err != nil {
		return nil, err
	}
	if len(words) == 0 || words[0] != "boxcar" {
		return nil, fmt.Errorf("%q: not a boxcar command", cmd)
	}
	var args []string
	for i := 1; i < len(words); i++ {
		w := words[i]
		if flagName, ok := strings.CutPrefix(w, "["); ok {
			if i+1 >= len(words) || !strings.HasSuffix(words[i+1], "]") {
				return nil, fmt.Errorf("%q: unclosed [", cmd)
			}
			ph := strings.TrimSuffix(words[i+1], "]")
			if v, ok := values[ph]; ok {
				args = append(args, flagName, v)
			}
			i++
			continue
		}
		if v, ok := values[w]; ok {
			w = v
		}
		args = append(args, w)
	}
	return args, nil
}

// splitWords splits s at spaces, keeping "quoted text" as one word
// (without its quotes).
func splitWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted, inWord = !quoted, true
		case r == ' ' && !quoted:
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
			}
			inWord = false
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("%q: unterminated quote", s)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// rehearsal runs one section's commands against a bus: online (through
// its admin handler) or offline (on its files).
type rehearsal struct {
	t       *testing.T
	section runbookSection
	ran     map[string]bool
	env     map[string]string
	where   []string // --db, --dir when offline
}

func newRehearsal(t *testing.T, s runbookSection) *rehearsal {
	r := &rehearsal{t: t, section: s, ran: map[string]bool{}}
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		for _, c := range s.commands {
			if !r.ran[c] {
				t.Errorf("section #%s writes %q: the rehearsal did not run it", s.anchor, c)
			}
		}
	})
	return r
}

// online points the commands at an admin handler, with its write token.
func (r *rehearsal) online(url, token string) {
	r.env = map[string]string{"BOXCAR_URL": url, "BOXCAR_TOKEN": token, "USER": "oncall"}
	r.where = nil
}

// offline points the commands at the files of an app that is down.
func (r *rehearsal) offline(dbPath, dir string) {
	r.env = map[string]string{"USER": "oncall"}
	r.where = []string{"--db", dbPath, "--dir", dir}
}

// run runs cmd, a command of the section written exactly as in the
// runbook, with its placeholders filled from vars (pairs), plus extra
// arguments (-o json).
func (r *rehearsal) run(cmd string, vars []string, extra ...string) result {
	r.t.Helper()
	if !slices.Contains(r.section.commands, cmd) {
		r.t.Fatalf("section #%s does not write %q (it writes %q)", r.section.anchor, cmd, r.section.commands)
	}
	if r.env == nil {
		r.t.Fatal("rehearsal: online or offline first")
	}
	args, err := expandCommand(cmd, vars)
	if err != nil {
		r.t.Fatal(err)
	}
	r.ran[cmd] = true
	if args[0] != "schema" {
		args = append(append(args, extra...), r.where...)
	}
	return runCLI(context.Background(), r.env, args...)
}

// ok runs cmd as run does and fails unless it exits 0.
func (r *rehearsal) ok(cmd string, vars ...string) result {
	r.t.Helper()
	res := r.run(cmd, vars)
	if res.code != exitOK {
		r.t.Fatalf("%s: %s", cmd, res)
	}
	return res
}

// json runs cmd with -o json and decodes what it prints into v.
func (r *rehearsal) json(cmd string, v any, vars ...string) {
	r.t.Helper()
	decodeJSON(r.t, r.run(cmd, vars, "-o", "json"), v)
}

// rehearsalConfig is a bus whose health window is short enough to judge
// within a test: a sample every 100 ms over 2 seconds (health rounds the
// span of its window to the second, and judges a subscriber stalled or
// lagging only over a span of a second or more); the outbox is late after
// 200 ms.
func rehearsalConfig() boxcar.Config {
	return boxcar.Config{Health: boxcar.HealthOptions{Interval: 100 * time.Millisecond, Window: 2 * time.Second, OutboxAge: 200 * time.Millisecond}}
}

// stage is a live bus for a rehearsal: the fixture, its admin handler, a
// Prometheus registry with the bus's collector, and the effects table
// where its transactional handlers record every event they apply (no
// unique key: an event applied twice shows twice).
type stage struct {
	*fixture
	url, token string
	reg        *prometheus.Registry
}

func newStage(t *testing.T, cfg boxcar.Config) *stage {
	t.Helper()
	f := newFixture(t, cfg)
	if _, err := f.db.Exec(`CREATE TABLE effects (n INTEGER PRIMARY KEY AUTOINCREMENT, subscriber TEXT, key TEXT, data TEXT, replay INT, redriven INT)`); err != nil {
		t.Fatal(err)
	}
	s := &stage{fixture: f}
	s.serve()
	return s
}

// serve mounts the admin handler and a collector on the current bus (again
// after a restart).
func (s *stage) serve() {
	s.t.Helper()
	s.url, s.token = startAdmin(s.t, s.bus)
	s.reg = prometheus.NewRegistry()
	if _, err := metrics.Register(s.reg, s.bus, metrics.Options{}); err != nil {
		s.t.Fatal(err)
	}
}

// restart closes the bus (the app goes down) and opens it again on the
// same files, with the admin handler and collector of the new bus.
func (s *stage) restart() {
	s.t.Helper()
	s.closeBus()
	s.subs = map[string]*boxcar.Subscription{}
	s.open()
	s.serve()
}

// apply is a TxHandler that records each event in effects; fail, when set,
// may refuse it first; also, when set, writes the app's own rows in the
// same transaction.
func apply(sub string, fail func(boxcar.Message) error, also ...func(context.Context, *sql.Tx, boxcar.Message) error) boxcar.Handler {
	return boxcar.TxHandler(func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
		if fail != nil {
			if err := fail(m); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO effects (subscriber, key, data, replay, redriven) VALUES (?, ?, ?, ?, ?)`,
			sub, m.Key, string(m.Data), m.Replay, m.Redriven); err != nil {
			return err
		}
		for _, fn := range also {
			if err := fn(ctx, tx, m); err != nil {
				return err
			}
		}
		return nil
	})
}

// order is an event of key with data.
func order(key, data string) boxcar.Event {
	return boxcar.Event{Type: "order.placed", Key: key, Data: []byte(data)}
}

// effects returns what sub applied, per key, in the order applied.
func (s *stage) effects(sub string) map[string][]string {
	s.t.Helper()
	rows, err := s.db.Query(`SELECT key, data FROM effects WHERE subscriber = ? ORDER BY n`, sub)
	if err != nil {
		s.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var k, d string
		if err := rows.Scan(&k, &d); err != nil {
			s.t.Fatal(err)
		}
		out[k] = append(out[k], d)
	}
	if err := rows.Err(); err != nil {
		s.t.Fatal(err)
	}
	return out
}

// waitEffects waits until sub applied exactly want (per key, in order),
// and fails at once on an effect want does not have (a duplicate, an
// event out of order, one that should not run).
func (s *stage) waitEffects(sub string, want map[string][]string) {
	s.t.Helper()
	waitFor(s.t, sub+" applied "+fmt.Sprint(want), func() (bool, string) {
		got := s.effects(sub)
		for k, ds := range got {
			if len(ds) > len(want[k]) || !slices.Equal(ds, want[k][:len(ds)]) {
				s.t.Fatalf("%s applied %q for key %q, want %q (lost, twice or out of order)", sub, ds, k, want[k])
			}
		}
		for k, ds := range want {
			if len(got[k]) != len(ds) {
				return false, fmt.Sprint(got)
			}
		}
		return true, ""
	})
}

// metric returns the value of the series name{labels} of the bus's
// collector, and whether it was exported.
func (s *stage) metric(name string, labels ...string) (float64, bool) {
	s.t.Helper()
	families, err := s.reg.Gather()
	if err != nil {
		s.t.Fatalf("gather: %v", err)
	}
	for _, fam := range families {
		if fam.GetName() != name {
			continue
		}
	series:
		for _, m := range fam.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue series
				}
			}
			switch {
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), true
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), true
			}
		}
	}
	return 0, false
}

// mustMetric is metric that fails when the series is not exported.
func (s *stage) mustMetric(name string, labels ...string) float64 {
	s.t.Helper()
	v, ok := s.metric(name, labels...)
	if !ok {
		s.t.Fatalf("metric %s%q not exported", name, labels)
	}
	return v
}

// component returns the health component (and name) of h.
func component(t *testing.T, h boxcar.Health, comp, name string) boxcar.ComponentHealth {
	t.Helper()
	c, ok := componentState(h, comp, name)
	if !ok {
		t.Fatalf("health has no %s %q: %+v", comp, name, h)
	}
	return c
}

// waitHealth runs `boxcar health` (-o json) until comp (name) is in state,
// and returns that health.
func (r *rehearsal) waitHealth(comp, name string, state boxcar.HealthState) boxcar.Health {
	r.t.Helper()
	var h boxcar.Health
	waitFor(r.t, fmt.Sprintf("health: %s %s %s", comp, name, state), func() (bool, string) {
		h = boxcar.Health{}
		r.json("boxcar health", &h)
		c, _ := componentState(h, comp, name)
		return c.State == state, fmt.Sprintf("%+v", h)
	})
	return h
}

// subscriberInfo reads `boxcar subscribers -o json` and returns name's
// entry (ok false when absent).
func (r *rehearsal) subscriberInfo(name string) (boxcar.SubscriberInfo, bool) {
	r.t.Helper()
	var js listJSON[boxcar.SubscriberInfo]
	r.json("boxcar subscribers", &js)
	for _, si := range js.Items {
		if si.Name == name {
			return si, true
		}
	}
	return boxcar.SubscriberInfo{}, false
}
