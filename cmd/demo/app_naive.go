package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NAIVE: the signup story the way the article's team first wrote it, with
// the same libraries Boxcar uses (plain SQLite through database/sql, plain
// NATS JetStream through nats.go) and none of Boxcar. Each scenario turns on
// exactly one naive habit, so that the count it gets wrong has one cause:
//
//   - dual-write: the auth service commits the user, then publishes;
//   - auto-ack:   billing's consumer has AckNone (a delivered message counts
//     as handled, like Kafka's auto-commit);
//   - reorder:    the auth service retries a failed publish in the
//     background while later events go out;
//   - dedupe:     analytics acks after its commit (the right order) but
//     keeps no record of what it counted.
//
// Everything else is done right, so the other counts stay at zero.

const (
	naiveStream = "NAIVE"
	naivePrefix = "naive"
)

type naiveApp struct {
	spec childSpec
	c    *control
	db   *sql.DB
	nc   *nats.Conn
	js   jetstream.JetStream
	mail *mailbox

	stream    jetstream.Stream
	consumers []*naiveConsumer
	stopping  chan struct{}
	wg        sync.WaitGroup // consumer loops
	retries   sync.WaitGroup // background publish retries
}

// naiveConsumer is a pull consumer's loop and whether its last fetch was empty.
type naiveConsumer struct {
	cons jetstream.Consumer
	idle atomic.Bool
}

func runNaiveApp(spec childSpec, c *control) error {
	ctx := context.Background()
	// NAIVE: plain SQLite, WAL, as anyone would open it.
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(spec.Dir, "app.db")+
		"?_journal_mode=WAL&_busy_timeout=10000&_txlock=immediate&_synchronous=NORMAL")
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, appSchema); err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	// NAIVE: a plain client of the broker. Publishes fail at once while it
	// is disconnected (no client-side buffer), which is what makes the
	// producer's retry path run in the reorder scenario.
	nc, err := nats.Connect(spec.BrokerURL, nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond), nats.ReconnectBufSize(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	stream, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:     naiveStream,
		Subjects: []string{naivePrefix + ".>"},
		Storage:  jetstream.FileStorage,
	})
	if err != nil {
		return err
	}
	mail, err := openMailbox(spec.Dir)
	if err != nil {
		return err
	}
	defer mail.close()
	a := &naiveApp{spec: spec, c: c, db: db, nc: nc, js: js, mail: mail, stream: stream, stopping: make(chan struct{})}
	defer func() {
		close(a.stopping)
		a.wg.Wait()
	}()

	var runErr error
	switch spec.Scenario {
	case scenarioDualWrite.name:
		runErr = a.dualWrite(ctx)
	case scenarioAutoAck.name:
		runErr = a.autoAck(ctx)
	case scenarioReorder.name:
		runErr = a.reorder(ctx)
	case scenarioDedupe.name:
		runErr = a.dedupe(ctx)
	default:
		runErr = fmt.Errorf("unknown scenario %q", spec.Scenario)
	}
	if runErr != nil {
		return runErr
	}
	if err := a.waitDrained(ctx, 2*time.Minute); err != nil {
		return err
	}
	c.finish(map[string]int64{"publish_failures": c.counter("publish_failures").Load()})
	return nil
}

// dualWrite: NAIVE producer, commit then publish; a correct email consumer.
func (a *naiveApp) dualWrite(ctx context.Context) error {
	if err := a.startEmail(ctx); err != nil {
		return err
	}
	if a.spec.Phase != phaseRun {
		return nil
	}
	return parallel(a.spec.Users, a.spec.Writers, func(i int) error {
		id, email := userID(i), emailOf(i, 0)
		if err := a.commit(ctx, sqlInsertUser, id, email); err != nil {
			return err
		}
		// NAIVE: the user row is committed; the event exists only in this
		// process's memory until the publish below is acked.
		a.c.point("auth-committed", a.c.count("signups"))
		return a.publish(ctx, typeSignedUp, userEvent{UserID: id, Email: email})
	})
}

// autoAck: a reliable producer (no crash there), then billing with NAIVE
// auto-ack.
func (a *naiveApp) autoAck(ctx context.Context) error {
	if a.spec.Phase == phaseRun {
		if err := a.signUpAll(ctx); err != nil {
			return err
		}
	}
	return a.startConsumer(ctx, "billing", jetstream.AckNonePolicy, []string{typeSignedUp}, func(msgs []jetstream.Msg) error {
		for _, msg := range msgs {
			// NAIVE: with AckNone this message counted as handled when it
			// was delivered, and so did the rest of the batch.
			a.c.point("billing", a.c.count("billing"))
			var ev userEvent
			if err := json.Unmarshal(msg.Data(), &ev); err != nil {
				return err
			}
			if err := a.commit(ctx, sqlSubscribe, ev.UserID, ev.Email); err != nil {
				return err
			}
		}
		return nil
	})
}

// dedupe: a reliable producer, then analytics with explicit acks after the
// commit and NAIVE: no dedupe.
func (a *naiveApp) dedupe(ctx context.Context) error {
	if a.spec.Phase == phaseRun {
		if err := a.signUpAll(ctx); err != nil {
			return err
		}
	}
	return a.startConsumer(ctx, "analytics", jetstream.AckExplicitPolicy, []string{typeSignedUp}, func(msgs []jetstream.Msg) error {
		for range msgs {
			// NAIVE: nothing records that this event was counted; a
			// redelivery counts it again.
			if err := a.commit(ctx, sqlCountSignup); err != nil {
				return err
			}
			a.c.point("analytics", a.c.count("analytics"))
		}
		// Acked after processing, like committing a Kafka offset after
		// the poll loop: the right order, and still not enough.
		for _, msg := range msgs {
			if err := msg.Ack(); err != nil {
				return err
			}
		}
		return nil
	})
}

// reorder: billing follows email changes in the order it receives them;
// NAIVE: the producer retries failed publishes in the background.
func (a *naiveApp) reorder(ctx context.Context) error {
	if err := a.startConsumer(ctx, "billing", jetstream.AckExplicitPolicy, []string{typeSignedUp, typeEmailChanged}, func(msgs []jetstream.Msg) error {
		for _, msg := range msgs {
			var ev userEvent
			if err := json.Unmarshal(msg.Data(), &ev); err != nil {
				return err
			}
			q := sqlSubscribe
			if msg.Subject() == naivePrefix+"."+typeEmailChanged {
				q = sqlBillingEmail
			}
			if err := a.commit(ctx, q, ev.UserID, ev.Email); err != nil {
				return err
			}
			a.c.count("billing")
			if err := msg.Ack(); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := a.signUpAll(ctx); err != nil {
		return err
	}
	a.c.point("outage", 1) // the parent kills the broker here
	// A real app would not know; waiting for the client to notice only
	// spares the first requests a publish timeout.
	waitFor(ctx, 5*time.Second, "the broker connection to drop", func() (bool, error) {
		return a.nc.Status() != nats.CONNECTED, nil
	})
	if err := parallel(a.spec.Users, a.spec.Writers, func(i int) error {
		return a.changeEmail(ctx, i, 1)
	}); err != nil {
		return err
	}
	a.c.point("restore", 1) // the parent restarts the broker here
	// Traffic resumes once the broker answers again (a health check).
	if err := waitFor(ctx, time.Minute, "the broker to answer", func() (bool, error) {
		cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		_, err := a.js.AccountInfo(cctx)
		return err == nil, nil
	}); err != nil {
		return err
	}
	if err := parallel(a.spec.Users, a.spec.Writers, func(i int) error {
		return a.changeEmail(ctx, i, 2)
	}); err != nil {
		return err
	}
	a.retries.Wait()
	return nil
}

func (a *naiveApp) changeEmail(ctx context.Context, i, version int) error {
	id, email := userID(i), emailOf(i, version)
	if err := a.commit(ctx, sqlChangeEmail, email, id); err != nil {
		return err
	}
	a.c.count("changes")
	// NAIVE: do not block the user on the broker: if the publish fails,
	// retry it in the background with backoff and move on.
	subject, data := naivePrefix+"."+typeEmailChanged, mustJSON(userEvent{UserID: id, Email: email})
	if a.publishOnce(ctx, subject, data) == nil {
		return nil
	}
	a.c.count("publish_failures")
	a.retries.Add(1)
	go func() {
		defer a.retries.Done()
		backoff := 100 * time.Millisecond
		for {
			time.Sleep(backoff)
			if a.publishOnce(ctx, subject, data) == nil {
				a.c.count("retried")
				return
			}
			backoff = min(2*backoff, 2*time.Second)
		}
	}()
	return nil
}

// signUpAll commits and publishes every signup (no crash in this step).
func (a *naiveApp) signUpAll(ctx context.Context) error {
	return parallel(a.spec.Users, a.spec.Writers, func(i int) error {
		id, email := userID(i), emailOf(i, 0)
		if err := a.commit(ctx, sqlInsertUser, id, email); err != nil {
			return err
		}
		a.c.count("signups")
		return a.publish(ctx, typeSignedUp, userEvent{UserID: id, Email: email})
	})
}

// commit runs one statement in a transaction of its own.
func (a *naiveApp) commit(ctx context.Context, query string, args ...any) error {
	tx, err := a.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, query, args...); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// publish publishes one event and waits for the broker's ack, retrying in
// place a few times.
func (a *naiveApp) publish(ctx context.Context, typ string, ev userEvent) error {
	subject, data := naivePrefix+"."+typ, mustJSON(ev)
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		if err = a.publishOnce(ctx, subject, data); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("publish %s: %w", typ, err)
}

func (a *naiveApp) publishOnce(ctx context.Context, subject string, data []byte) error {
	pctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
	defer cancel()
	_, err := a.js.Publish(pctx, subject, data)
	return err
}

// startEmail starts the email service: it sends, then acks (at-least-once,
// done right; the provider dedupes on the key).
func (a *naiveApp) startEmail(ctx context.Context) error {
	return a.startConsumer(ctx, "email", jetstream.AckExplicitPolicy, []string{typeSignedUp}, func(msgs []jetstream.Msg) error {
		for _, msg := range msgs {
			var ev userEvent
			if err := json.Unmarshal(msg.Data(), &ev); err != nil {
				return err
			}
			meta, err := msg.Metadata()
			if err != nil {
				return err
			}
			key := fmt.Sprintf("%s-%d", naiveStream, meta.Sequence.Stream)
			if err := a.mail.send(key, ev.UserID, ev.Email, "welcome"); err != nil {
				return err
			}
			a.c.count("email")
			if err := msg.Ack(); err != nil {
				return err
			}
		}
		return nil
	})
}

// startConsumer creates a durable pull consumer and runs handle on each
// fetched batch until the app stops. After a handler error (an ack while
// the broker is down) the loop goes on: what was not acked comes back.
func (a *naiveApp) startConsumer(ctx context.Context, name string, ack jetstream.AckPolicy, types []string, handle func([]jetstream.Msg) error) error {
	filters := make([]string, len(types))
	for i, t := range types {
		filters[i] = naivePrefix + "." + t
	}
	cons, err := a.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:        name,
		AckPolicy:      ack,
		AckWait:        time.Second, // short, so redeliveries after the crash come quickly
		FilterSubjects: filters,
	})
	if err != nil {
		return fmt.Errorf("consumer %s: %w", name, err)
	}
	nc := &naiveConsumer{cons: cons}
	a.consumers = append(a.consumers, nc)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			select {
			case <-a.stopping:
				return
			default:
			}
			batch, err := cons.Fetch(100, jetstream.FetchMaxWait(200*time.Millisecond))
			if err != nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			var msgs []jetstream.Msg
			for msg := range batch.Messages() {
				msgs = append(msgs, msg)
			}
			nc.idle.Store(len(msgs) == 0)
			if len(msgs) == 0 {
				continue
			}
			if err := handle(msgs); err != nil {
				fmt.Fprintf(os.Stderr, "naive %s: %v\n", name, err)
				time.Sleep(50 * time.Millisecond)
			}
		}
	}()
	return nil
}

// waitDrained waits until every consumer has nothing pending or unacked
// and its last fetch came back empty.
func (a *naiveApp) waitDrained(ctx context.Context, limit time.Duration) error {
	return waitFor(ctx, limit, "the naive consumers to drain", func() (bool, error) {
		for _, nc := range a.consumers {
			info, err := nc.cons.Info(ctx)
			if err != nil {
				return false, err
			}
			if info.NumPending != 0 || info.NumAckPending != 0 || !nc.idle.Load() {
				return false, nil
			}
		}
		return true, nil
	})
}
