package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// The child reads its orders from the environment: the parent sets them.
const (
	envChild    = "BOXCAR_TORTURE_CHILD" // "run" or "drain"
	envDir      = "BOXCAR_TORTURE_DIR"
	envFault    = "BOXCAR_TORTURE_FAULT" // a boxcar.Probe to die at, or ""
	envFaultP   = "BOXCAR_TORTURE_FAULT_P"
	envWrite    = "BOXCAR_TORTURE_WRITE" // events to commit in this life
	envLife     = "BOXCAR_TORTURE_LIFE"  // index of this life
	envKeys     = "BOXCAR_TORTURE_KEYS"
	envWriters  = "BOXCAR_TORTURE_WRITERS"
	envRollback = "BOXCAR_TORTURE_ROLLBACK"
	envFail     = "BOXCAR_TORTURE_FAIL"
	envDrainFor = "BOXCAR_TORTURE_DRAIN_TIMEOUT"
	envAckWait  = "BOXCAR_TORTURE_ACK_WAIT"    // SubscribeOptions.AckWait, "" for the default
	envPrune    = "BOXCAR_TORTURE_PRUNE_DELAY" // Config.PruneDelay, "" for the default
	// Multi-process mode (multi.go): the instance's ID, the hub's leaf
	// URLs (comma-separated), and how many events of all instances the
	// drain must see handled.
	envInstance = "BOXCAR_TORTURE_INSTANCE"
	envLeaf     = "BOXCAR_TORTURE_LEAF"
	envExpect   = "BOXCAR_TORTURE_EXPECT"
)

// Subscriber names.
const (
	subTx    = "applier"  // TxHandler: exactly once
	subPlain = "notifier" // HandlerFunc: at least once
)

// Event types the writers use; the transactional subscriber filters on both.
var eventTypes = []string{"torture.placed", "torture.paid"}

// appSchema is the application's own tables in the same database as the outbox.
//
//   - app_counter: each key's counter, incremented in the writer's transaction,
//     so the n-th committed event of a key carries n.
//   - app_events: one row per event, committed with it (tag is unique).
//   - rolled_back: tags of events whose transaction was rolled back on purpose
//     (recorded after the rollback; a crash may skip a record, which only
//     makes the leak check weaker for that one, as their payload says
//     doomed anyway).
//   - handled_tx / handled_plain: every call of the handlers that committed,
//     in order (rowid). No unique key: a duplicate must be visible, not refused.
const appSchema = `
CREATE TABLE IF NOT EXISTS app_counter (key TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS app_events (key TEXT NOT NULL, n INTEGER NOT NULL, tag TEXT NOT NULL, doomed INTEGER NOT NULL, PRIMARY KEY (key, n)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rolled_back (tag TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS handled_tx (id INTEGER PRIMARY KEY, key TEXT NOT NULL, n INTEGER NOT NULL, tag TEXT NOT NULL, doomed INTEGER NOT NULL, event_id TEXT NOT NULL, seq INTEGER NOT NULL, life INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS handled_plain (id INTEGER PRIMARY KEY, key TEXT NOT NULL, n INTEGER NOT NULL, tag TEXT NOT NULL, doomed INTEGER NOT NULL, event_id TEXT NOT NULL, seq INTEGER NOT NULL, life INTEGER NOT NULL);
`

// keyName is the i-th key. Every tenth one has dots, spaces, wildcards and
// non-ASCII, which the subject encoding must carry.
func keyName(i int) string {
	if i%10 == 3 {
		return fmt.Sprintf("cust.%d *>é", i)
	}
	return "k" + strconv.Itoa(i)
}

// payload is what an event carries: its key's counter, its unique tag, and
// whether its transaction was meant to roll back.
type payload struct {
	n      int64
	tag    string
	doomed bool
}

func (p payload) encode() []byte {
	d := 0
	if p.doomed {
		d = 1
	}
	return []byte(fmt.Sprintf("%d %s %d", p.n, p.tag, d))
}

func decodePayload(b []byte) (payload, error) {
	f := strings.Fields(string(b))
	if len(f) != 3 {
		return payload{}, fmt.Errorf("payload %q: want 3 fields", b)
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return payload{}, fmt.Errorf("payload %q: %w", b, err)
	}
	return payload{n: n, tag: f[1], doomed: f[2] == "1"}, nil
}

// failsFirst reports whether an event's handler of subscriber fails its
// first attempt: a deterministic choice, so that a key really waits to retry.
func failsFirst(sub, id string, rate float64) bool {
	if rate <= 0 {
		return false
	}
	h := fnv.New64a()
	h.Write([]byte(sub))
	h.Write([]byte(id))
	return float64(h.Sum64()%1_000_000) < rate*1_000_000
}

type childConfig struct {
	mode         string
	dir          string
	fault        boxcar.Probe
	faultP       float64
	write        int64
	life         int64
	keys         int
	writers      int
	rollbackRate float64
	failRate     float64
	drainTimeout time.Duration
	ackWait      time.Duration
	pruneDelay   time.Duration
	instance     string   // multi-process mode: this instance's ID ("" otherwise)
	leaf         []string // multi-process mode: the hub's leaf URLs
	expect       int64    // multi-process drain: events of all instances to see handled
}

// subName is a subscriber's name in this process: with several instances
// on one hub each has its own consumer on the hub's aggregate.
func (c childConfig) subName(base string) string {
	if c.instance == "" {
		return base
	}
	return base + "_" + c.instance
}

// key is the i-th key of this instance: each key is produced by one
// instance (per-key order holds for keys produced by one binary).
func (c childConfig) key(i int) string {
	if c.instance == "" {
		return keyName(i)
	}
	return c.instance + "-" + keyName(i)
}

func childConfigFromEnv() (childConfig, error) {
	c := childConfig{
		mode:     os.Getenv(envChild),
		dir:      os.Getenv(envDir),
		fault:    boxcar.Probe(os.Getenv(envFault)),
		instance: os.Getenv(envInstance),
	}
	if l := os.Getenv(envLeaf); l != "" {
		c.leaf = strings.Split(l, ",")
	}
	var err error
	num := func(name string, parse func(string) error) {
		if err == nil {
			if perr := parse(os.Getenv(name)); perr != nil {
				err = fmt.Errorf("%s: %w", name, perr)
			}
		}
	}
	num(envFaultP, func(s string) (e error) {
		if s != "" {
			c.faultP, e = strconv.ParseFloat(s, 64)
		}
		return
	})
	num(envWrite, func(s string) (e error) { c.write, e = strconv.ParseInt(s, 10, 64); return })
	num(envLife, func(s string) (e error) { c.life, e = strconv.ParseInt(s, 10, 64); return })
	num(envKeys, func(s string) (e error) { c.keys, e = strconv.Atoi(s); return })
	num(envWriters, func(s string) (e error) { c.writers, e = strconv.Atoi(s); return })
	num(envRollback, func(s string) (e error) { c.rollbackRate, e = strconv.ParseFloat(s, 64); return })
	num(envFail, func(s string) (e error) { c.failRate, e = strconv.ParseFloat(s, 64); return })
	num(envDrainFor, func(s string) (e error) { c.drainTimeout, e = time.ParseDuration(s); return })
	optDuration := func(d *time.Duration) func(string) error {
		return func(s string) (e error) {
			if s != "" {
				*d, e = time.ParseDuration(s)
			}
			return
		}
	}
	num(envAckWait, optDuration(&c.ackWait))
	num(envPrune, optDuration(&c.pruneDelay))
	num(envExpect, func(s string) (e error) {
		if s != "" {
			c.expect, e = strconv.ParseInt(s, 10, 64)
		}
		return
	})
	if err != nil {
		return c, err
	}
	if c.dir == "" || c.keys <= 0 || c.writers <= 0 {
		return c, errors.New("missing dir, keys or writers")
	}
	return c, nil
}

// childMain runs the application until the parent kills it ("run") or until
// the bus has delivered everything ("drain"), and returns the exit status.
func childMain() int {
	cfg, err := childConfigFromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "torture child:", err)
		return 3
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	ctx := context.Background()
	c, err := openChild(ctx, cfg, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "torture child life %d: %v\n", cfg.life, err)
		return 4
	}
	switch cfg.mode {
	case "run":
		c.write(ctx)
		select {} // the parent kills us
	case "drain":
		if err := c.drain(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "torture child drain: %v\n", err)
			return 5
		}
		return 0
	default:
		fmt.Fprintf(os.Stderr, "torture child: unknown mode %q\n", cfg.mode)
		return 3
	}
}

type child struct {
	cfg childConfig
	db  *sql.DB
	bus *boxcar.Bus
	log *slog.Logger
}

func openChild(ctx context.Context, cfg childConfig, log *slog.Logger) (*child, error) {
	db, err := sqlite.Open(filepath.Join(cfg.dir, "app.db"))
	if err != nil {
		return nil, err
	}
	if _, err := db.ExecContext(ctx, appSchema); err != nil {
		return nil, fmt.Errorf("app schema: %w", err)
	}
	bcfg := boxcar.Config{Dir: filepath.Join(cfg.dir, "nats"), Logger: log, PruneDelay: cfg.pruneDelay}
	if cfg.instance != "" {
		bcfg.InstanceID = cfg.instance
		bcfg.Leaf = &boxcar.LeafConfig{URLs: cfg.leaf, ReconnectInterval: 200 * time.Millisecond}
	}
	if cfg.mode == "run" && cfg.fault != "" {
		// Armed from Open: the point may fire as soon as the relay or a
		// subscriber runs, including while catching up after the last kill.
		bcfg.Probe = killAt(cfg.fault, cfg.faultP)
	}
	bus, err := boxcar.Open(ctx, db, bcfg)
	if err != nil {
		return nil, err
	}
	c := &child{cfg: cfg, db: db, bus: bus, log: log}
	opts := boxcar.SubscribeOptions{MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxAttempts: 1000, AckWait: cfg.ackWait}
	txOpts := opts
	txOpts.Types = eventTypes
	if _, err := bus.Subscribe(ctx, cfg.subName(subTx), boxcar.TxHandler(c.handleTx), txOpts); err != nil {
		return nil, err
	}
	if _, err := bus.Subscribe(ctx, cfg.subName(subPlain), boxcar.HandlerFunc(c.handlePlain), opts); err != nil {
		return nil, err
	}
	return c, nil
}

// killAt returns a probe that SIGKILLs this process at point, with
// probability p each time the point is reached: a real crash at that
// instant.
func killAt(point boxcar.Probe, p float64) func(boxcar.Probe) {
	return func(at boxcar.Probe) {
		if at == point && rand.Float64() < p {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	}
}

const insertHandled = `(key, n, tag, doomed, event_id, seq, life) VALUES (?, ?, ?, ?, ?, ?, ?)`

func (c *child) handleTx(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
	p, err := decodePayload(m.Data)
	if err != nil {
		return boxcar.Permanent(err)
	}
	if m.Attempt == 1 && failsFirst(subTx, m.ID, c.cfg.failRate) {
		return errors.New("injected handler failure")
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO handled_tx `+insertHandled, m.Key, p.n, p.tag, p.doomed, m.ID, m.Seq, c.cfg.life)
	return err
}

func (c *child) handlePlain(ctx context.Context, m boxcar.Message) error {
	p, err := decodePayload(m.Data)
	if err != nil {
		return boxcar.Permanent(err)
	}
	if m.Attempt == 1 && failsFirst(subPlain, m.ID, c.cfg.failRate) {
		return errors.New("injected handler failure")
	}
	// The side effect of an at-least-once handler: recorded in its own
	// transaction, before the ack.
	return c.bus.Tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO handled_plain `+insertHandled, m.Key, p.n, p.tag, p.doomed, m.ID, m.Seq, c.cfg.life)
		return err
	})
}

var errDoomed = errors.New("rolled back on purpose")

// write commits cfg.write events from cfg.writers goroutines and returns.
// Half the transactions go through Bus.Tx, half through the app's own
// *sql.Tx (woken by the commit hook); a share is rolled back on purpose.
func (c *child) write(ctx context.Context) {
	var left atomic.Int64
	left.Store(c.cfg.write)
	var wg sync.WaitGroup
	for w := range c.cfg.writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c.cfg.life), uint64(w)))
			for i := 0; ; i++ {
				n := int64(1 + rng.IntN(3))
				if left.Add(-n) < -n+1 {
					return
				}
				doomed := rng.Float64() < c.cfg.rollbackRate
				if err := c.writeTx(ctx, rng, w, i, int(n), doomed); err != nil {
					fmt.Fprintf(os.Stderr, "torture child life %d: writer: %v\n", c.cfg.life, err)
					os.Exit(6)
				}
			}
		}()
	}
	wg.Wait()
}

func (c *child) writeTx(ctx context.Context, rng *rand.Rand, w, i, n int, doomed bool) error {
	tags := make([]string, n)
	fn := func(tx *sql.Tx) error {
		events := make([]boxcar.Event, n)
		for j := range events {
			key := c.cfg.key(rng.IntN(c.cfg.keys))
			var cnt int64
			if err := tx.QueryRowContext(ctx, `INSERT INTO app_counter(key, n) VALUES (?, 1)
				ON CONFLICT(key) DO UPDATE SET n = n + 1 RETURNING n`, key).Scan(&cnt); err != nil {
				return err
			}
			tags[j] = fmt.Sprintf("L%d.w%d.t%d.e%d", c.cfg.life, w, i, j)
			if _, err := tx.ExecContext(ctx, `INSERT INTO app_events(key, n, tag, doomed) VALUES (?, ?, ?, ?)`, key, cnt, tags[j], doomed); err != nil {
				return err
			}
			events[j] = boxcar.Event{
				Type:    eventTypes[rng.IntN(len(eventTypes))],
				Key:     key,
				Headers: map[string]string{"tag": tags[j]},
				Data:    payload{n: cnt, tag: tags[j], doomed: doomed}.encode(),
			}
		}
		if err := c.bus.PublishTx(ctx, tx, events...); err != nil {
			return err
		}
		if doomed {
			return errDoomed
		}
		return nil
	}
	var err error
	if rng.IntN(2) == 0 {
		err = c.bus.Tx(ctx, fn)
	} else {
		err = c.ownTx(ctx, fn)
	}
	if errors.Is(err, errDoomed) {
		return c.bus.Tx(ctx, func(tx *sql.Tx) error {
			for _, t := range tags {
				if _, err := tx.ExecContext(ctx, `INSERT INTO rolled_back(tag) VALUES (?)`, t); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return err
}

// ownTx is the application's own transaction, not Bus.Tx: the relay learns
// of its commit through the connection's commit hook.
func (c *child) ownTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// drain waits until the relay and both subscribers have nothing left, then
// closes the bus cleanly.
func (c *child) drain(ctx context.Context) error {
	deadline := time.Now().Add(c.cfg.drainTimeout)
	var committed int64
	if err := c.db.QueryRowContext(ctx, `SELECT count(*) FROM app_events`).Scan(&committed); err != nil {
		return err
	}
	if c.cfg.expect > 0 {
		committed = c.cfg.expect // the events of every instance
	}
	quiet := 0
	var last string
	for quiet < 3 {
		if time.Now().After(deadline) {
			return fmt.Errorf("not drained after %v: %s", c.cfg.drainTimeout, last)
		}
		time.Sleep(200 * time.Millisecond)
		st, err := c.bus.Stats(ctx)
		if err != nil {
			return err
		}
		var ntx, nplain int64
		if err := c.db.QueryRowContext(ctx, `SELECT (SELECT count(DISTINCT tag) FROM handled_tx), (SELECT count(DISTINCT tag) FROM handled_plain)`).Scan(&ntx, &nplain); err != nil {
			return err
		}
		busy := st.OutboxLag > 0
		for _, s := range st.Subscribers {
			busy = busy || s.Pending > 0 || s.Unacked > 0 || s.InFlight > 0 || s.StuckKeys > 0
		}
		last = fmt.Sprintf("stats %+v, committed %d, handled tx %d plain %d", st, committed, ntx, nplain)
		if busy || ntx < committed || nplain < committed {
			quiet = 0
			continue
		}
		quiet++
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.bus.Close(cctx); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return c.db.Close()
}
