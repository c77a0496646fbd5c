package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/examples/signup"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// The signup story on Boxcar, through its public API only: the auth service
// writes the user and its event in one transaction (Bus.Tx + PublishTx);
// email is a HandlerFunc (at-least-once, the event ID is the provider's
// idempotency key); analytics and billing are TxHandlers (their writes and
// the dedupe row commit together, then the ack). Every scenario runs all
// three services, whatever the naive side shows.

type boxcarApp struct {
	spec childSpec
	c    *control
	db   *sql.DB
	bus  *boxcar.Bus
	mail *mailbox
}

func runBoxcarApp(spec childSpec, c *control) (err error) {
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(spec.Dir, "app.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, appSchema); err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	cfg := boxcar.Config{Dir: filepath.Join(spec.Dir, "nats")}
	if spec.BrokerURL != "" {
		// The reorder scenario: the bus on a broker process that the demo
		// crashes, as the naive side's.
		cfg = boxcar.Config{
			NATSURL:        spec.BrokerURL,
			NATSOptions:    []nats.Option{nats.ReconnectWait(50 * time.Millisecond)},
			PublishTimeout: time.Second,
		}
	}
	bus, err := boxcar.Open(ctx, db, cfg)
	if err != nil {
		return err
	}
	closed := false
	defer func() {
		if !closed {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			bus.Close(cctx)
		}
	}()
	mail, err := openMailbox(spec.Dir)
	if err != nil {
		return err
	}
	defer mail.close()
	a := &boxcarApp{spec: spec, c: c, db: db, bus: bus, mail: mail}
	if err := a.subscribe(ctx); err != nil {
		return err
	}

	if spec.Phase == phaseRun {
		if err := a.produce(ctx); err != nil {
			return err
		}
	}
	if err := a.waitDrained(ctx, 2*time.Minute); err != nil {
		return err
	}
	st, err := bus.Stats(ctx)
	if err != nil {
		return err
	}
	stats := map[string]int64{"relayed": st.RelayPublished, "relay_failures": st.RelayFailures}
	for _, s := range st.Subscribers {
		stats[s.Name+"_handled"] = s.Handled
		stats[s.Name+"_skipped"] = s.Skipped
		stats[s.Name+"_dead_lettered"] = s.DeadLettered
	}
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	closed = true
	if err := bus.Close(cctx); err != nil {
		return err
	}
	c.finish(stats)
	return nil
}

func (a *boxcarApp) subscribe(ctx context.Context) error {
	// Email: an external side effect, at-least-once; the provider dedupes
	// on the event ID.
	_, err := a.bus.Subscribe(ctx, "email", boxcar.HandlerFunc(func(ctx context.Context, m boxcar.Message) error {
		var ev userEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			return boxcar.Permanent(err)
		}
		if err := a.mail.send(m.ID, ev.UserID, ev.Email, "welcome"); err != nil {
			return err
		}
		a.c.count("email")
		return nil
	}), boxcar.SubscribeOptions{Types: []string{typeSignedUp}})
	if err != nil {
		return err
	}
	// Analytics: an increment, made safe by the dedupe row that commits
	// with it.
	_, err = a.bus.Subscribe(ctx, "analytics", boxcar.TxHandler(func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
		if _, err := tx.ExecContext(ctx, sqlCountSignup); err != nil {
			return err
		}
		a.c.point("analytics", a.c.count("analytics"))
		return nil
	}), boxcar.SubscribeOptions{Types: []string{typeSignedUp}})
	if err != nil {
		return err
	}
	// Billing: a subscription row at signup; its invoice address follows
	// the user's email changes, in order.
	billing := signup.Billing{OnEvent: func() { a.c.point("billing", a.c.count("billing")) }}
	_, err = a.bus.Subscribe(ctx, signup.BillingSubscriber, boxcar.TxHandler(billing.Handle), signup.BillingOptions())
	return err
}

// produce runs the auth service's requests for the scenario.
func (a *boxcarApp) produce(ctx context.Context) error {
	if err := parallel(a.spec.Users, a.spec.Writers, func(i int) error {
		if err := a.signUp(ctx, i); err != nil {
			return err
		}
		a.c.point("auth-committed", a.c.count("signups"))
		return nil
	}); err != nil {
		return err
	}
	if a.spec.Scenario != scenarioReorder.name {
		return nil
	}
	// Let the signups reach the broker, as the naive side's did.
	if err := a.waitRelayed(ctx, time.Minute); err != nil {
		return err
	}
	a.c.point("outage", 1) // the parent kills the broker here
	if err := parallel(a.spec.Users, a.spec.Writers, func(i int) error {
		a.c.count("changes")
		return a.changeEmail(ctx, i, 1)
	}); err != nil {
		return err
	}
	a.c.point("restore", 1) // the parent restarts the broker here
	return parallel(a.spec.Users, a.spec.Writers, func(i int) error {
		a.c.count("changes")
		return a.changeEmail(ctx, i, 2)
	})
}

func (a *boxcarApp) signUp(ctx context.Context, i int) error {
	id, email := userID(i), emailOf(i, 0)
	return a.bus.Tx(ctx, func(tx *sql.Tx) error { return signup.SignUp(ctx, a.bus, tx, id, email) })
}

func (a *boxcarApp) changeEmail(ctx context.Context, i, version int) error {
	id, email := userID(i), emailOf(i, version)
	return a.bus.Tx(ctx, func(tx *sql.Tx) error { return signup.ChangeEmail(ctx, a.bus, tx, id, email) })
}

// waitRelayed waits until the outbox is empty above the relay's cursor.
func (a *boxcarApp) waitRelayed(ctx context.Context, limit time.Duration) error {
	return waitFor(ctx, limit, "the relay to catch up", func() (bool, error) {
		st, err := a.bus.Stats(ctx)
		return err == nil && st.OutboxLag == 0, err
	})
}

// waitDrained waits until every event is relayed and handled by every
// subscriber, as the bus's own numbers say.
func (a *boxcarApp) waitDrained(ctx context.Context, limit time.Duration) error {
	return waitFor(ctx, limit, "the subscribers to drain", func() (bool, error) {
		st, err := a.bus.Stats(ctx)
		if err != nil {
			return false, err
		}
		if st.OutboxLag != 0 {
			return false, nil
		}
		for _, s := range st.Subscribers {
			if s.Pending != 0 || s.Unacked != 0 || s.InFlight != 0 || s.StuckKeys != 0 {
				return false, nil
			}
		}
		return true, nil
	})
}

// waitFor polls done until it reports true three times in a row (so a
// number read between two steps of the pipeline does not end the wait).
func waitFor(ctx context.Context, limit time.Duration, what string, done func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	streak := 0
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := done()
		lastErr = err
		if ok {
			streak++
			if streak == 3 {
				return nil
			}
		} else {
			streak = 0
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("waited %v for %s (last error: %v)", limit, what, lastErr)
}

// parallel runs fn(1..n) on workers goroutines and returns the first error.
func parallel(n, workers int, fn func(i int) error) error {
	var (
		mu    sync.Mutex
		next  = 1
		first error
		wg    sync.WaitGroup
	)
	take := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if first != nil || next > n {
			return 0, false
		}
		next++
		return next - 1, true
	}
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i, ok := take()
				if !ok {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}
