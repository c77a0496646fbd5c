package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/internal/hub"
	bjs "github.com/boxcar-bus/boxcar/jetstream"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// The multi-process mode (-instances N, N >= 2): topology 1 under crashes.
// The parent runs a real 3-node NATS cluster on loopback as the hub; N
// instances run at once as child processes, each a leaf of the hub with
// its own database, store and stream, each writing events on keys of its
// own and running a TxHandler and a HandlerFunc subscriber of its own on
// the hub's aggregate (so every instance handles every instance's events).
// The parent SIGKILLs a random instance at random instants (or lets a fault
// point kill it) and starts it again; now and then it takes the whole hub
// away for a while and brings it back. At the end every instance drains,
// and the parent checks, for every instance's subscribers, every committed
// event of every instance: exactly once (TxHandler) or at least once
// (HandlerFunc), each key in commit order, nothing rolled back; each
// instance's stream holds its own events once, in outbox order; the hub's
// aggregate holds each event once. The last line:
//
//	instances=3 kills=N events=M lost=0 duplicates=0 order_violations=0 stream_duplicates=0 rolled_back_leaked=0 hub_outages=K

// multiState is a multi-process run's moving parts.
type multiState struct {
	cfg      parentConfig
	dir      string
	hub      *hub.Cluster
	leaf     string // the hub's leaf URLs, comma-separated
	ids      []string
	running  map[string]*instanceLife
	logf     *os.File
	rng      *rand.Rand
	life     int64
	outages  int
	counters map[string]*committedCounter
}

// instanceLife is one running life of an instance.
type instanceLife struct {
	cmd    *exec.Cmd
	exited chan error
	life   int64
	point  boxcar.Probe
}

func (m *multiState) instanceDir(id string) string { return filepath.Join(m.dir, id) }

// runMulti is runParent for -instances N.
func runMulti(ctx context.Context, cfg parentConfig, dir string, logf *os.File, res *result) error {
	hctx, cancel := context.WithTimeout(ctx, time.Minute)
	h, err := hub.Start(hctx, hub.Config{Dir: filepath.Join(dir, "hub")})
	cancel()
	if err != nil {
		return err
	}
	defer h.Shutdown()
	var urls []string
	for _, u := range h.LeafURLs() {
		urls = append(urls, u.String())
	}
	m := &multiState{cfg: cfg, dir: dir, hub: h, leaf: strings.Join(urls, ","), running: map[string]*instanceLife{},
		logf: logf, rng: rand.New(rand.NewPCG(uint64(cfg.Seed), 0x3417)), counters: map[string]*committedCounter{}}
	for i := range cfg.Instances {
		id := "i" + strconv.Itoa(i+1)
		m.ids = append(m.ids, id)
		if err := os.MkdirAll(m.instanceDir(id), 0o755); err != nil {
			return err
		}
		m.counters[id] = &committedCounter{path: filepath.Join(m.instanceDir(id), "app.db")}
		defer m.counters[id].close()
	}
	defer m.killAll()
	defer func() { res.HubOutages = m.outages }()
	start := time.Now()
	for _, id := range m.ids {
		if err := m.startLife(id, 0); err != nil {
			return err
		}
	}
	var committed, printed int64
	for res.Kills < cfg.Kills || committed < int64(cfg.Events) {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := m.tick(ctx, res, committed); err != nil {
			return err
		}
		if committed, err = m.committed(ctx); err != nil {
			return err
		}
		if every := int64(max(cfg.ProgressEvery, 1)); m.life/every > printed {
			printed = m.life / every
			fmt.Fprintf(cfg.Out, "torture: life %d kills=%d committed=%d hub_outages=%d elapsed=%s\n", m.life, res.Kills, committed, m.outages, time.Since(start).Round(time.Second))
		}
	}
	m.killAll()
	if committed, err = m.committed(ctx); err != nil {
		return err
	}
	res.Events = committed
	fmt.Fprintf(cfg.Out, "torture: %d kills, %d hub outages, %d events committed in %s; draining\n", res.Kills, m.outages, committed, time.Since(start).Round(time.Second))
	fmt.Fprintf(cfg.Out, "torture: kills by cause:point: %s\n", formatCounts(res.KillsAt))
	drainStart := time.Now()
	if err := m.drainAll(ctx, committed); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	fmt.Fprintf(cfg.Out, "torture: drain took %s\n", time.Since(drainStart).Round(time.Millisecond))
	lines, err := m.verify(ctx, res)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	for _, l := range lines {
		fmt.Fprintln(cfg.Out, l)
	}
	for _, d := range res.Details {
		fmt.Fprintln(cfg.Out, "PROBLEM:", d)
	}
	fmt.Fprintf(cfg.Out, "torture: total %s\n", time.Since(start).Round(time.Second))
	res.HubOutages = m.outages
	return nil
}

// tick waits a random while, restarts any instance a fault point killed,
// then kills a random instance and starts it again, or takes the hub away.
func (m *multiState) tick(ctx context.Context, res *result, committed int64) error {
	cfg := m.cfg
	wait := cfg.MinLife + time.Duration(m.rng.Int64N(int64(cfg.MaxLife-cfg.MinLife)+1))
	deadline := time.After(wait)
	for done := false; !done; {
		select {
		case <-deadline:
			done = true
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		for _, id := range m.ids {
			l := m.running[id]
			select {
			case <-l.exited:
				if !isSIGKILL(l.cmd) {
					return fmt.Errorf("instance %s life %d ended by itself (%v); see %s", id, l.life, l.cmd.ProcessState, m.logf.Name())
				}
				res.Kills++
				res.KillsAt["fault:"+string(l.point)]++
				if err := m.startLife(id, committed); err != nil {
					return err
				}
			default:
			}
		}
	}
	if m.rng.Float64() < cfg.HubAway {
		m.outages++
		m.hub.StopAll()
		away := time.Duration(500+m.rng.IntN(2500)) * time.Millisecond
		select {
		case <-time.After(away):
		case <-ctx.Done():
		}
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := m.hub.RestartAll(rctx); err != nil {
			return fmt.Errorf("bring the hub back: %w", err)
		}
		return nil
	}
	id := m.ids[m.rng.IntN(len(m.ids))]
	m.kill(id)
	res.Kills++
	res.KillsAt["parent:"+string(m.running[id].point)]++
	return m.startLife(id, committed)
}

// startLife starts a new life of instance id, writing its share of what
// is left to commit.
func (m *multiState) startLife(id string, committed int64) error {
	cfg := m.cfg
	m.life++
	left := int64(cfg.Events) - committed
	budget := int64(0)
	if left > 0 {
		lives := int64(max(cfg.Kills/max(len(m.ids), 1), 1))
		budget = max((left+lives-1)/lives/int64(len(m.ids)), 100)
	}
	env := childEnv(cfg, m.instanceDir(id), "run", m.life, budget)
	env = append(env, envInstance+"="+id, envLeaf+"="+m.leaf)
	point := boxcar.Probe("random")
	if m.rng.Float64() < cfg.Targeted {
		tg := targets[m.rng.IntN(len(targets))]
		if tg.prob > 0 {
			point = tg.point
			env = append(env, envFault+"="+string(tg.point), envFaultP+"="+strconv.FormatFloat(tg.prob, 'g', -1, 64))
		}
	}
	fmt.Fprintf(m.logf, "--- instance %s life %d (%s)\n", id, m.life, point)
	cmd := exec.Command(cfg.Exe)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = m.logf, m.logf
	if err := cmd.Start(); err != nil {
		return err
	}
	l := &instanceLife{cmd: cmd, exited: make(chan error, 1), life: m.life, point: point}
	go func() { l.exited <- cmd.Wait() }()
	m.running[id] = l
	return nil
}

// kill SIGKILLs instance id's life and waits for it.
func (m *multiState) kill(id string) {
	l := m.running[id]
	if l == nil {
		return
	}
	l.cmd.Process.Signal(syscall.SIGKILL)
	err := <-l.exited
	l.exited <- err // for a later look
}

func (m *multiState) killAll() {
	for _, id := range m.ids {
		if l := m.running[id]; l != nil {
			m.kill(id)
			delete(m.running, id)
		}
	}
}

func (m *multiState) committed(ctx context.Context) (int64, error) {
	var total int64
	for _, id := range m.ids {
		n, err := m.counters[id].count(ctx)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// drainAll runs every instance's drain at once: each ends when its outbox
// is relayed and its subscribers handled all events of all instances.
func (m *multiState) drainAll(ctx context.Context, expect int64) error {
	errs := make(chan error, len(m.ids))
	for _, id := range m.ids {
		env := append(childEnv(m.cfg, m.instanceDir(id), "drain", 0, 0),
			envInstance+"="+id, envLeaf+"="+m.leaf, envExpect+"="+strconv.FormatInt(expect, 10))
		go func() {
			err := runDrain(ctx, m.cfg.Exe, env, m.logf, m.cfg.DrainTimeout+time.Minute)
			if err != nil {
				err = fmt.Errorf("instance %s: %w", id, err)
			}
			errs <- err
		}()
	}
	var all []error
	for range m.ids {
		all = append(all, <-errs)
	}
	return errors.Join(all...)
}

// verify checks every instance's handled tables against the events
// committed by all instances, every instance's stream against its own,
// and the hub's aggregate.
func (m *multiState) verify(ctx context.Context, res *result) ([]string, error) {
	committed := map[keyN]committedEvent{}
	own := map[string]map[keyN]committedEvent{}
	var rolledBack int64
	for _, id := range m.ids {
		db, err := sqlite.Open(filepath.Join(m.instanceDir(id), "app.db"))
		if err != nil {
			return nil, err
		}
		mine, rb, err := committedEvents(ctx, db, res)
		db.Close()
		if err != nil {
			return nil, err
		}
		own[id], rolledBack = mine, rolledBack+rb
		for k, v := range mine {
			committed[k] = v
		}
	}
	res.Events = int64(len(committed))
	lines := []string{fmt.Sprintf("torture: instances %d, committed events %d, rolled-back events recorded %d", len(m.ids), len(committed), rolledBack)}
	for _, id := range m.ids {
		db, err := sqlite.Open(filepath.Join(m.instanceDir(id), "app.db"))
		if err != nil {
			return nil, err
		}
		txStats, err := checkHandled(ctx, db, "handled_tx", committed, res, true)
		if err == nil {
			var plainStats string
			plainStats, err = checkHandled(ctx, db, "handled_plain", committed, res, false)
			lines = append(lines, "torture: "+id+": "+txStats, "torture: "+id+": "+plainStats)
		}
		db.Close()
		if err != nil {
			return nil, err
		}
		streamStats, err := checkStream(ctx, m.instanceDir(id), own[id], res)
		if err != nil {
			return nil, fmt.Errorf("instance %s: %w", id, err)
		}
		lines = append(lines, "torture: "+id+": "+streamStats)
	}
	agg, err := m.checkAggregate(ctx, committed, res)
	if err != nil {
		return nil, err
	}
	return append(lines, "torture: "+agg), nil
}

// committedEvents reads a database's committed events (and counts the
// rolled-back ones recorded).
func committedEvents(ctx context.Context, db *sql.DB, res *result) (map[keyN]committedEvent, int64, error) {
	out := map[keyN]committedEvent{}
	rows, err := db.QueryContext(ctx, `SELECT key, n, tag, doomed FROM app_events`)
	if err != nil {
		return nil, 0, err
	}
	for rows.Next() {
		var k keyN
		var tag string
		var doomed bool
		if err := rows.Scan(&k.key, &k.n, &tag, &doomed); err != nil {
			rows.Close()
			return nil, 0, err
		}
		if doomed {
			res.RolledBackLeaked++
			res.problem("app row %s/%d of a rolled-back transaction (tag %s) is committed", k.key, k.n, tag)
			continue
		}
		out[k] = committedEvent{tag: tag}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	var rb int64
	err = db.QueryRowContext(ctx, `SELECT count(*) FROM rolled_back`).Scan(&rb)
	return out, rb, err
}

// checkAggregate reads the hub's aggregate: each committed event once,
// each instance's events in its outbox order, nothing else.
func (m *multiState) checkAggregate(ctx context.Context, committed map[keyN]committedEvent, res *result) (string, error) {
	nc, err := nats.Connect(strings.Join(m.hub.ClientURLs(), ","))
	if err != nil {
		return "", err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return "", err
	}
	name := "BOXCAR" + boxcar.DefaultHubStreamSufix
	stream, err := js.Stream(ctx, name)
	if err != nil {
		return "", err
	}
	var msgs []bjs.StoredMsg
	if err := bjs.ReadStream(ctx, stream, 1, 1000, func(b []bjs.StoredMsg) error { msgs = append(msgs, b...); return nil }); err != nil {
		return "", err
	}
	l := bjs.Layout{Prefix: boxcar.DefaultSubjectPrefix, Partitions: boxcar.DefaultPartitions}
	seen := map[keyN]int{}
	lastSeq := map[string]int64{}
	for _, sm := range msgs {
		in, err := bjs.Decode(l, sm.Subject, sm.Header, sm.Data)
		if err != nil {
			res.problem("aggregate: message %d: %v", sm.Seq, err)
			res.RolledBackLeaked++
			continue
		}
		p, err := decodePayload(in.Data)
		if err != nil {
			res.problem("aggregate: message %d: %v", sm.Seq, err)
			res.RolledBackLeaked++
			continue
		}
		k := keyN{key: in.Key, n: p.n}
		if ev, ok := committed[k]; !ok || p.doomed || ev.tag != p.tag {
			res.RolledBackLeaked++
			res.problem("aggregate: %s/%d tag %s is from no committed transaction", in.Key, p.n, p.tag)
			continue
		}
		if seen[k]++; seen[k] > 1 {
			res.StreamDuplicates++
			res.problem("aggregate: %s/%d stored twice", in.Key, p.n)
			continue
		}
		if in.Seq <= lastSeq[in.Origin] {
			res.OrderViolations++
			res.problem("aggregate: %s's outbox seq %d after %d", in.Origin, in.Seq, lastSeq[in.Origin])
		}
		lastSeq[in.Origin] = max(lastSeq[in.Origin], in.Seq)
	}
	var lost int64
	for k := range committed {
		if seen[k] == 0 {
			lost++
			res.problem("aggregate: committed event %s/%d is not in the hub's aggregate", k.key, k.n)
		}
	}
	res.Lost += lost
	return fmt.Sprintf("aggregate %s: %d messages, %d events, %d lost", name, len(msgs), len(seen), lost), nil
}
