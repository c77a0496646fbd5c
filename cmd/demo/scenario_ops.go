package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/boxcar-bus/boxcar/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/admin"
	"github.com/boxcar-bus/boxcar/admin/client"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// The operations act: a poison event, then a rebuild. Billing v1.4 ships a
// bug: it refuses invoice addresses with a '+' tag. Every opsEvery-th user
// changes their email twice, first to a tagged address (the poison: the
// handler dead-letters it at once), then to a plain one. The app is a
// child process that mounts Boxcar's admin handler on 127.0.0.1; the demo
// is the operator, on the admin API, and prints the boxcar command each
// call is. It reads the damage, deploys v1.5 (the fix: the app process
// restarts), redrives billing's dead letters, then rebuilds billing's
// projection by a replay without dedupe into a fresh table and compares it
// with the live one.
//
// The naive side is the usual dead-letter queue, on the same bus: the key
// moves on past its dead letter, so the later address is applied first and
// the redrive puts the old one over it. On Boxcar's side billing
// subscribes with ParkKeys: the dead letter parks its key, the later event
// is held (in the dead-letter stream, not in memory), and the redrive
// releases both in their original order.
var scenarioOps = &scenario{
	num:       6,
	name:      "operations",
	failure:   "poison event, fixed and redriven",
	naiveWay:  "dead-letter it, move on, redrive",
	boxcarWay: "ParkKeys holds the key until the redrive releases it in order",
	wrong:     "billed at a stale address",
	fault: func(cfg config) string {
		return fmt.Sprintf("billing v1.4 refuses '+' addresses: %d users change to one, then to another", cfg.OpsUsers/opsEvery)
	},
	run:   runOps,
	count: func(o outcome) (int, int) { return o.StaleEmail + o.NotBilled, o.Users },
}

const (
	// opsEvery: every opsEvery-th user's first email change is poison.
	opsEvery = 10
	// phaseFixed is the act's second app process: v1.5, the fix.
	phaseFixed = "fixed"
	// rebuiltTable is the fresh table a replay rebuilds billing into.
	rebuiltTable = "subscriptions_rebuilt"
	opsOperator  = "demo-operator"
)

const rebuiltSchema = `CREATE TABLE IF NOT EXISTS ` + rebuiltTable + ` (
	user_id TEXT PRIMARY KEY,
	plan    TEXT NOT NULL,
	email   TEXT NOT NULL
);`

func opsPoisoned(i int) bool { return i%opsEvery == 0 }

func taggedEmail(i int) string { return fmt.Sprintf("user%d+invoices@example.com", i) }
func movedEmail(i int) string  { return fmt.Sprintf("user%d@example.net", i) }

// opsApp is the act's app, in a child process.
type opsApp struct {
	spec childSpec
	c    *control
	bus  *boxcar.Bus
	mail *mailbox
}

// runOpsApp is the child: v1.4 (phase run) signs the users up, makes the
// changes and waits for the operator; v1.5 (phaseFixed) serves until the
// operator is done. Both serve the admin API on 127.0.0.1:spec.Port.
func runOpsApp(spec childSpec, c *control) error {
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(spec.Dir, "app.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, appSchema+rebuiltSchema); err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	bus, err := boxcar.Open(ctx, db, boxcar.Config{Dir: filepath.Join(spec.Dir, "nats")})
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		bus.Close(cctx)
	}()
	mail, err := openMailbox(spec.Dir)
	if err != nil {
		return err
	}
	defer mail.close()
	a := &opsApp{spec: spec, c: c, bus: bus, mail: mail}
	if err := a.subscribe(ctx); err != nil {
		return err
	}
	stopServing, err := serveAdmin(bus, spec.Port, spec.Token)
	if err != nil {
		return err
	}
	defer stopServing()
	c.send("READY")
	if spec.Phase == phaseRun {
		if err := a.produce(ctx); err != nil {
			return err
		}
		c.point("poisoned", 1)
	} else {
		c.point("fixed", 1)
	}
	if err := (&boxcarApp{bus: bus}).waitDrained(ctx, time.Minute); err != nil {
		return err
	}
	c.finish(map[string]int64{})
	return nil
}

// serveAdmin mounts the admin handler under /admin/ on 127.0.0.1:port, with
// the bus's Prometheus metrics at /admin/metrics, as an app would.
func serveAdmin(bus *boxcar.Bus, port int, token string) (stop func(), err error) {
	reg := prometheus.NewRegistry()
	if _, err := metrics.Register(reg, bus, metrics.Options{}); err != nil {
		return nil, err
	}
	h, err := admin.NewHandler(bus, admin.Options{Token: token, Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/admin/", http.StripPrefix("/admin", h))
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	return func() {
		srv.Close()
		<-done
	}, nil
}

func (a *opsApp) subscribe(ctx context.Context) error {
	_, err := a.bus.Subscribe(ctx, "email", boxcar.HandlerFunc(func(ctx context.Context, m boxcar.Message) error {
		var ev userEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			return boxcar.Permanent(err)
		}
		return a.mail.send(m.ID, ev.UserID, ev.Email, "welcome")
	}), boxcar.SubscribeOptions{Types: []string{typeSignedUp}})
	if err != nil {
		return err
	}
	_, err = a.bus.Subscribe(ctx, "analytics", boxcar.TxHandler(func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
		_, err := tx.ExecContext(ctx, sqlCountSignup)
		return err
	}), boxcar.SubscribeOptions{Types: []string{typeSignedUp}})
	if err != nil {
		return err
	}
	opts := boxcar.SubscribeOptions{Types: []string{typeSignedUp, typeEmailChanged}, ParkKeys: a.spec.Role == roleBoxcar}
	_, err = a.bus.Subscribe(ctx, "billing", boxcar.TxHandler(a.billing), opts)
	return err
}

// billing is the billing service: v1.4 has the bug; a replayed event goes
// to the fresh table, so the live one serves on during a rebuild.
func (a *opsApp) billing(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
	var ev userEvent
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		return boxcar.Permanent(err)
	}
	if a.spec.Phase == phaseRun && m.Type == typeEmailChanged && strings.Contains(ev.Email, "+") {
		return boxcar.Permanent(fmt.Errorf("billing v1.4: invoice address %s refused: '+' not allowed", ev.Email))
	}
	q := sqlSubscribe
	if m.Type == typeEmailChanged {
		q = sqlBillingEmail
	}
	if m.Replay {
		q = strings.ReplaceAll(q, "subscriptions", rebuiltTable)
	}
	_, err := tx.ExecContext(ctx, q, ev.UserID, ev.Email)
	return err
}

// produce signs the users up, then makes the poisoned users' two changes,
// and waits until billing dead-lettered (and, parking, held) them.
func (a *opsApp) produce(ctx context.Context) error {
	app := &boxcarApp{bus: a.bus}
	if err := parallel(a.spec.Users, a.spec.Writers, func(i int) error {
		a.c.count("signups")
		return app.signUp(ctx, i)
	}); err != nil {
		return err
	}
	poisoned := a.spec.Users / opsEvery
	if err := parallel(poisoned, a.spec.Writers, func(j int) error {
		i := j * opsEvery
		for _, email := range []string{taggedEmail(i), movedEmail(i)} {
			a.c.count("changes")
			if err := a.changeEmail(ctx, i, email); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	want := poisoned
	if a.spec.Role == roleBoxcar {
		want *= 2 // the head and the event it holds
	}
	if err := app.waitDrained(ctx, time.Minute); err != nil {
		return err
	}
	return waitFor(ctx, time.Minute, "billing's dead letters", func() (bool, error) {
		d, err := a.bus.DeadLetterDepths(ctx)
		return err == nil && d["billing"].Pending == want, err
	})
}

func (a *opsApp) changeEmail(ctx context.Context, i int, email string) error {
	return a.bus.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, sqlChangeEmail, email, userID(i)); err != nil {
			return err
		}
		return a.bus.PublishTx(ctx, tx, boxcar.Event{Type: typeEmailChanged, Key: userID(i), Data: mustJSON(userEvent{UserID: userID(i), Email: email})})
	})
}

// operator is the demo at the admin API: each call is printed as the
// boxcar command that makes it, with what it answered.
type operator struct {
	api   *client.Client
	prog  *progress
	notes []string
	stats map[string]int64
}

func (o *operator) say(cmd, answer string, a ...any) {
	line := fmt.Sprintf("%-62s %s", "$ "+cmd, fmt.Sprintf(answer, a...))
	o.notes = append(o.notes, line)
	o.prog.note("   %s", line)
}

func (o *operator) aside(format string, a ...any) {
	o.notes = append(o.notes, fmt.Sprintf(format, a...))
	o.prog.note("   "+format, a...)
}

// billing returns billing's entry of `boxcar subscribers`.
func (o *operator) billing(ctx context.Context) (boxcar.SubscriberInfo, error) {
	return o.api.Subscriber(ctx, "billing")
}

func runOps(ctx context.Context, r *runner, sc *scenario, side string) (sideResult, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	dir, err := r.sideDir(sc, side)
	if err != nil {
		return sideResult{}, err
	}
	port, err := freePort()
	if err != nil {
		return sideResult{}, err
	}
	spec := childSpec{Role: side, Scenario: sc.name, Phase: phaseRun, Dir: dir, Users: r.cfg.OpsUsers, Writers: r.cfg.Writers,
		Port: port, Token: boxcar.NewSecret(), PauseAt: map[string]int{"poisoned": 1}}
	url := fmt.Sprintf("http://127.0.0.1:%d/admin", port)
	api, err := client.New(url, client.Options{Token: spec.Token, Operator: opsOperator})
	if err != nil {
		return sideResult{}, err
	}
	defer api.CloseIdleConnections()
	o := &operator{api: api, prog: r.prog, stats: map[string]int64{}}

	r.prog.step(sc, side, "app v1.4: signups and email changes")
	p, err := startProc(r.exe, side+" app v1.4", spec, r.prog.counters)
	if err != nil {
		return sideResult{}, err
	}
	defer p.kill()
	if err := p.await(ctx, "READY"); err != nil {
		return sideResult{}, err
	}
	if r.cfg.Serve {
		r.prog.note("status page of the %s side's app: %s/ (while the act runs)", side, url)
	}
	if err := p.await(ctx, "POINT poisoned"); err != nil {
		return sideResult{}, err
	}
	o.aside("BOXCAR_URL=%s, BOXCAR_TOKEN=the app's write token", url)
	if err := o.diagnose(ctx); err != nil {
		return sideResult{}, err
	}
	// v1.5 is deployed: the app process stops and starts with the fix.
	if err := p.resume(); err != nil {
		return sideResult{}, err
	}
	if err := p.wait(ctx); err != nil {
		return sideResult{}, err
	}
	if err := r.runFixed(ctx, sc, side, spec, o); err != nil {
		return sideResult{}, err
	}
	out, err := check(ctx, dir)
	return sideResult{out: out, stats: o.stats, notes: o.notes, took: time.Since(start)}, err
}

// runFixed is the act's second app process, v1.5: the operator redrives
// and rebuilds, then (with -serve) holds the status page, then lets it end.
func (r *runner) runFixed(ctx context.Context, sc *scenario, side string, spec childSpec, o *operator) error {
	r.prog.step(sc, side, "app v1.5 (the fix) deployed: redrive, rebuild")
	o.aside("(v1.5 deployed: billing accepts '+'; the app restarted)")
	spec.Phase, spec.PauseAt = phaseFixed, map[string]int{"fixed": 1}
	p, err := startProc(r.exe, side+" app v1.5", spec, r.prog.counters)
	if err != nil {
		return err
	}
	defer p.kill()
	if err := p.await(ctx, "READY"); err != nil {
		return err
	}
	if err := p.await(ctx, "POINT fixed"); err != nil {
		return err
	}
	if err := o.redrive(ctx, spec.Dir); err != nil {
		return err
	}
	if err := o.rebuild(ctx, spec.Dir); err != nil {
		return err
	}
	if r.cfg.Serve && side == roleBoxcar && r.hold != nil {
		r.hold(o.api.URL() + "/")
	}
	if err := p.resume(); err != nil {
		return err
	}
	return p.wait(ctx)
}

// diagnose reads what billing v1.4 left: its parked keys and its letters.
func (o *operator) diagnose(ctx context.Context) error {
	si, err := o.billing(ctx)
	if err != nil {
		return err
	}
	o.stats["parked_keys"] = int64(si.ParkedKeys)
	o.say("boxcar subscribers show billing", "parked_keys %d, dead-lettered %d", si.ParkedKeys, si.Stats.DeadLettered)
	letters, _, err := o.api.DeadLetters(ctx, boxcar.DeadLetterFilter{Subscriber: "billing", State: boxcar.DeadLetterPending})
	if err != nil {
		return err
	}
	var heads, held int
	var sample string
	for _, d := range letters {
		if d.Reason == "parked" {
			held++
		} else {
			heads++
			sample = d.Error
		}
	}
	o.stats["heads"], o.stats["held"] = int64(heads), int64(held)
	o.say("boxcar dlq ls --subscriber billing", "%d pending: %d %s, %d parked behind them", len(letters), heads, reasonOf(letters), held)
	if sample != "" {
		o.aside("  e.g. %s", sample)
	}
	return nil
}

func reasonOf(letters []boxcar.DeadLetter) string {
	for _, d := range letters {
		if d.Reason != "parked" {
			return d.Reason
		}
	}
	return "-"
}

// redrive redrives every letter of billing and waits until they are
// handled and no key is parked.
func (o *operator) redrive(ctx context.Context, dir string) error {
	const why = "fixed in v1.5"
	res, err := o.api.RedriveAll(ctx, "billing", "", why)
	if err != nil {
		return err
	}
	o.stats["redriven"] = int64(len(res.Redriven))
	o.say(`boxcar dlq redrive --subscriber billing --why "`+why+`"`, "redriven: %d, in their original order", len(res.Redriven))
	var si boxcar.SubscriberInfo
	err = waitFor(ctx, time.Minute, "billing to handle the redriven events", func() (bool, error) {
		si, err = o.billing(ctx)
		return err == nil && si.ParkedKeys == 0 && si.Pending == 0 && si.Unacked == 0, err
	})
	if err != nil {
		return err
	}
	d, _, err := o.api.DeadLetters(ctx, boxcar.DeadLetterFilter{Subscriber: "billing", State: boxcar.DeadLetterPending})
	if err != nil {
		return err
	}
	o.say("boxcar subscribers show billing", "parked_keys %d, pending %d; dead letters pending: %d", si.ParkedKeys, si.Pending, len(d))
	stale, err := staleAddresses(ctx, dir)
	if err != nil {
		return err
	}
	o.stats["stale"] = int64(stale)
	o.aside("the app's data: %d subscriptions billed at an address the user has since changed", stale)
	return nil
}

// staleAddresses counts the subscriptions whose address is not the user's.
func staleAddresses(ctx context.Context, dir string) (int, error) {
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "app.db")+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var n int
	err = db.QueryRowContext(ctx, `SELECT count(*) FROM subscriptions s JOIN users u ON u.id = s.user_id WHERE s.email != u.email`).Scan(&n)
	return n, err
}

// rebuild replays billing from the stream's first event without dedupe
// (into the fresh table), waits for it, and compares the two tables.
func (o *operator) rebuild(ctx context.Context, dir string) error {
	const why = "rebuild subscriptions"
	st, err := o.api.Replay(ctx, "billing", boxcar.ReplayFrom{StreamSeq: 1}, true, why)
	if err != nil {
		return err
	}
	from := st.From
	err = waitFor(ctx, time.Minute, "the replay of billing", func() (bool, error) {
		st, err = o.api.ReplayProgress(ctx, "billing")
		return err == nil && st.Done, err
	})
	if err != nil {
		return err
	}
	o.say(`boxcar replay billing --from-stream-seq 1 --no-dedupe --why "`+why+`"`, "stream seqs %d to %d replayed: done", from, st.Through)
	live, rebuilt, differ, err := compareRebuild(ctx, dir)
	if err != nil {
		return err
	}
	o.stats["live_rows"], o.stats["rebuilt_rows"], o.stats["differ"] = int64(live), int64(rebuilt), int64(differ)
	o.aside("%s: %d rows, rebuilt by the replay; subscriptions: %d rows; rows that differ: %d", rebuiltTable, rebuilt, live, differ)
	return nil
}

// compareRebuild counts the rows of the live and the rebuilt table, and
// those of either without an equal row in the other.
func compareRebuild(ctx context.Context, dir string) (live, rebuilt, differ int, err error) {
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "app.db")+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		return 0, 0, 0, err
	}
	defer db.Close()
	q := `SELECT (SELECT count(*) FROM subscriptions), (SELECT count(*) FROM ` + rebuiltTable + `),
		(SELECT count(*) FROM (SELECT * FROM subscriptions EXCEPT SELECT * FROM ` + rebuiltTable + `))
		+ (SELECT count(*) FROM (SELECT * FROM ` + rebuiltTable + ` EXCEPT SELECT * FROM subscriptions))`
	err = db.QueryRowContext(ctx, q).Scan(&live, &rebuilt, &differ)
	return live, rebuilt, differ, err
}

// holdOnEnter is the -serve hold: the act's last app process serves its
// status page until Enter is pressed (or stdin ends).
func holdOnEnter(prog *progress) func(url string) {
	return func(url string) {
		prog.note("status page: %s — the app serves it until you press Enter", url)
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil && !errors.Is(err, io.EOF) {
			prog.note("stdin: %v: going on", err)
		}
	}
}
