package boxcartest

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
	"sync"
	"syscall"
	"time"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// keepOutbox is the child's Config.PruneDelay: relayed rows stay, so that
// the outbox is the record of every committed event when the parent checks.
const keepOutbox = 1000 * time.Hour

// errInjected is the kit's failure of a first attempt (Config.FailRate).
var errInjected = errors.New("boxcartest: injected failure of a first attempt")

// errDoomed rolls back an item's first run on purpose (Config.RollbackRate).
var errDoomed = errors.New("boxcartest: rolled back on purpose")

type child struct {
	cfg  Config
	mode string
	life int
	db   *sql.DB
	bus  *boxcar.Bus
}

// childMain runs the child's part and returns its exit status: "run" writes
// its share of items and waits to be killed; "drain" writes what is left,
// waits until every subscriber has handled everything, lists the dead
// letters and closes.
func childMain(cfg Config) int {
	cfg = cfg.withDefaults()
	mode, dir := os.Getenv(envChild), os.Getenv(envDir)
	life, _ := strconv.Atoi(os.Getenv(envLife))
	write, _ := strconv.Atoi(os.Getenv(envWrite))
	cfg.Dir = dir
	fail := func(step string, err error) int {
		fmt.Fprintf(os.Stderr, "boxcartest child (life %d, %s): %s: %v\n", life, mode, step, err)
		return 3
	}
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(dir, "app.db"))
	if err != nil {
		return fail("open the database", err)
	}
	if _, err := db.ExecContext(ctx, sqlSchema); err != nil {
		return fail("the kit's tables", err)
	}
	if cfg.Setup != nil {
		if err := cfg.Setup(ctx, db); err != nil {
			return fail("Config.Setup", err)
		}
	}
	bcfg := cfg.Bus
	bcfg.Dir = filepath.Join(dir, "nats")
	bcfg.PruneDelay = keepOutbox
	bcfg.Probe = nil
	if bcfg.Logger == nil {
		bcfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	}
	if fault := boxcar.Probe(os.Getenv(envFault)); mode == "run" && fault != "" {
		p, _ := strconv.ParseFloat(os.Getenv(envFaultP), 64)
		bcfg.Probe = killAt(fault, p)
	}
	bus, err := boxcar.Open(ctx, db, bcfg)
	if err != nil {
		return fail("boxcar.Open", err)
	}
	c := &child{cfg: cfg, mode: mode, life: life, db: db, bus: bus}
	for _, s := range cfg.Subscribers {
		if _, err := bus.Subscribe(ctx, s.Name, c.handler(s), s.Options); err != nil {
			return fail("subscribe "+s.Name, err)
		}
	}
	if err := c.write(ctx, write); err != nil {
		return fail("publish", err)
	}
	if mode == "run" {
		select {} // the parent kills us
	}
	if err := c.drain(ctx); err != nil {
		return fail("drain", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := bus.Close(cctx); err != nil {
		return fail("close", err)
	}
	db.Close()
	return 0
}

// killAt returns a probe that SIGKILLs this process at point, with
// probability p each time the point is reached.
func killAt(point boxcar.Probe, p float64) func(boxcar.Probe) {
	return func(at boxcar.Probe) {
		if at == point && rand.Float64() < p {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	}
}

// failsFirst reports whether subscriber's first attempt of event id fails
// (Config.FailRate): a choice made from the names, the same in every life.
func failsFirst(subscriber, id string, rate float64) bool {
	if rate <= 0 {
		return false
	}
	h := fnv.New64a()
	h.Write([]byte(subscriber))
	h.Write([]byte{0})
	h.Write([]byte(id))
	return float64(h.Sum64()%1_000_000) < rate*1_000_000
}

// handler wraps the app's handler: it records each committed run (a
// TxHandler's, in its transaction) or successful call, and fails the first
// attempt of Config.FailRate of the events after the handler ran.
func (c *child) handler(s Subscriber) boxcar.Handler {
	name, rate := s.Name, c.cfg.FailRate
	if s.Tx != nil {
		return boxcar.TxHandler(func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
			if err := s.Tx(ctx, tx, m); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, sqlInsertHandle, name, m.ID, m.Key, m.Seq, c.life); err != nil {
				return err
			}
			if m.Attempt == 1 && failsFirst(name, m.ID, rate) {
				return errInjected
			}
			return nil
		})
	}
	return boxcar.HandlerFunc(func(ctx context.Context, m boxcar.Message) error {
		if err := s.Func(ctx, m); err != nil {
			return err
		}
		if m.Attempt == 1 && failsFirst(name, m.ID, rate) {
			return errInjected
		}
		return c.bus.Tx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, sqlInsertHandle, name, m.ID, m.Key, m.Seq, c.life)
			return err
		})
	})
}

// write commits up to n items not committed yet, lowest first, on
// Config.Writers goroutines.
func (c *child) write(ctx context.Context, n int) error {
	if n <= 0 {
		return nil
	}
	d, err := c.newDispenser(ctx, n)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, c.cfg.Writers)
	for w := range c.cfg.Writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c.life), uint64(w)))
			for {
				i, ok := d.take()
				if !ok {
					return
				}
				if err := c.item(ctx, rng, i); err != nil {
					errs <- fmt.Errorf("item %d: %w", i, err)
					d.stop()
					return
				}
				d.finish(i)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// item runs Publish for item i and commits it with its record; with
// Config.RollbackRate, a first run in a transaction rolled back on purpose.
func (c *child) item(ctx context.Context, rng *rand.Rand, i int) error {
	if c.cfg.RollbackRate > 0 && rng.Float64() < c.cfg.RollbackRate {
		err := c.bus.Tx(ctx, func(tx *sql.Tx) error {
			if err := c.cfg.Publish(ctx, c.bus, tx, i); err != nil {
				return err
			}
			return errDoomed
		})
		if !errors.Is(err, errDoomed) {
			return fmt.Errorf("Config.Publish (in a transaction to roll back): %w", err)
		}
	}
	var err error
	for try := 0; try < 3; try++ {
		err = c.bus.Tx(ctx, func(tx *sql.Tx) error {
			if err := c.cfg.Publish(ctx, c.bus, tx, i); err != nil {
				return fmt.Errorf("Config.Publish: %w", err)
			}
			_, err := tx.ExecContext(ctx, sqlInsertItem, i, c.life)
			return err
		})
		if !errors.Is(err, boxcar.ErrBusy) {
			break
		}
	}
	return err
}

// dispenser hands out the items to commit: lowest first, and item i only
// once every item up to i-Writers has committed.
type dispenser struct {
	mu      sync.Mutex
	cond    *sync.Cond
	done    []bool
	next    int // the next item to look at
	floor   int // the lowest item not committed
	window  int
	left    int // items still to hand out in this life
	stopped bool
}

func (c *child) newDispenser(ctx context.Context, n int) (*dispenser, error) {
	d := &dispenser{done: make([]bool, c.cfg.Items), window: c.cfg.Writers, left: n}
	d.cond = sync.NewCond(&d.mu)
	rows, err := c.db.QueryContext(ctx, sqlItemsDone)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var i int
		if err := rows.Scan(&i); err != nil {
			return nil, err
		}
		if i >= 0 && i < len(d.done) {
			d.done[i] = true
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for d.floor < len(d.done) && d.done[d.floor] {
		d.floor++
	}
	d.next = d.floor
	return d, nil
}

func (d *dispenser) take() (int, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for {
		for d.next < len(d.done) && d.done[d.next] {
			d.next++
		}
		if d.stopped || d.left == 0 || d.next >= len(d.done) {
			return 0, false
		}
		if d.next < d.floor+d.window {
			d.next++
			d.left--
			return d.next - 1, true
		}
		d.cond.Wait()
	}
}

func (d *dispenser) finish(i int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.done[i] = true
	for d.floor < len(d.done) && d.done[d.floor] {
		d.floor++
	}
	d.cond.Broadcast()
}

func (d *dispenser) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopped = true
	d.cond.Broadcast()
}

// drain waits until the relay and every subscriber have nothing left and
// each subscriber has handled every committed event of its types (or the
// event is dead-lettered), then records the dead letters for the parent.
func (c *child) drain(ctx context.Context) error {
	deadline := time.Now().Add(c.cfg.DrainTimeout)
	quiet := 0
	var last string
	for quiet < 3 {
		if time.Now().After(deadline) {
			c.recordDead(ctx) // for the parent's report
			return fmt.Errorf("not drained after %v: %s", c.cfg.DrainTimeout, last)
		}
		time.Sleep(100 * time.Millisecond)
		st, err := c.bus.Stats(ctx)
		if err != nil {
			return err
		}
		busy := st.OutboxLag > 0
		for _, s := range st.Subscribers {
			busy = busy || s.Pending > 0 || s.Unacked > 0 || s.InFlight > 0 || s.StuckKeys > 0
		}
		last = fmt.Sprintf("outbox lag %d", st.OutboxLag)
		if !busy {
			behind, state, err := c.behind(ctx)
			if err != nil {
				return err
			}
			busy, last = behind, last+"; "+state
		}
		if busy {
			quiet = 0
			continue
		}
		quiet++
	}
	return c.recordDead(ctx)
}

// behind reports whether a subscriber has handled fewer events than were
// committed of its types, less its dead letters.
func (c *child) behind(ctx context.Context) (bool, string, error) {
	events, err := readCommitted(ctx, c.db)
	if err != nil {
		return false, "", err
	}
	dead, err := c.deadLetters(ctx)
	if err != nil {
		return false, "", err
	}
	state := ""
	behind := false
	for _, s := range c.cfg.Subscribers {
		want := 0
		for _, e := range events {
			if handles(s, e.Type) && !dead[s.Name][e.ID] {
				want++
			}
		}
		var got int
		if err := c.db.QueryRowContext(ctx, sqlHandledCount, s.Name).Scan(&got); err != nil {
			return false, "", err
		}
		state += fmt.Sprintf("%s handled %d of %d; ", s.Name, got, want)
		behind = behind || got < want
	}
	return behind, state, nil
}

// deadLetters lists the event IDs dead-lettered, per subscriber.
func (c *child) deadLetters(ctx context.Context) (map[string]map[string]bool, error) {
	out := map[string]map[string]bool{}
	err := c.eachDeadLetter(ctx, func(dl boxcar.DeadLetter) error {
		if out[dl.Subscriber] == nil {
			out[dl.Subscriber] = map[string]bool{}
		}
		out[dl.Subscriber][dl.EventID] = true
		return nil
	})
	return out, err
}

func (c *child) eachDeadLetter(ctx context.Context, fn func(boxcar.DeadLetter) error) error {
	var after uint64
	for {
		letters, next, err := c.bus.DeadLetters(ctx, boxcar.DeadLetterFilter{After: after, Limit: 1000})
		if err != nil {
			return err
		}
		for _, dl := range letters {
			if err := fn(dl); err != nil {
				return err
			}
		}
		if len(letters) == 0 || next <= after {
			return nil
		}
		after = next
	}
}

// recordDead writes the dead letters into boxcartest_dead.
func (c *child) recordDead(ctx context.Context) error {
	var letters []boxcar.DeadLetter
	if err := c.eachDeadLetter(ctx, func(dl boxcar.DeadLetter) error {
		letters = append(letters, dl)
		return nil
	}); err != nil {
		return err
	}
	return c.bus.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, sqlClearDead); err != nil {
			return err
		}
		for _, dl := range letters {
			if _, err := tx.ExecContext(ctx, sqlInsertDead, dl.Subscriber, dl.EventID, dl.Reason, dl.Error); err != nil {
				return err
			}
		}
		return nil
	})
}

// handles reports whether s receives events of typ.
func handles(s Subscriber, typ string) bool {
	if len(s.Options.Types) == 0 {
		return true
	}
	for _, t := range s.Options.Types {
		if t == typ {
			return true
		}
	}
	return false
}
