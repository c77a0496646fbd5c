package boxcar

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bjs "github.com/boxcar-bus/boxcar/jetstream"
	"github.com/boxcar-bus/boxcar/sqlite"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Child roles, run by TestMain in a re-executed test binary. Each prints
// "ready" once its bus is open and then does its part until it is killed
// or done. Parameters come in environment variables.
const (
	roleHold      = "hold"       // hold the store dir
	roleRelayKill = "relay-kill" // commit a batch; SIGKILL after JetStream acks it, before the cursor is saved
	roleWorkload  = "workload"   // writers and a subscriber, forever
	roleHangKey   = "hang-key"   // a subscriber that hangs on one key's 3rd event
	roleSignal    = "signal"     // send itself SIGHUP with the bus open
	roleKillKey   = "kill-key"   // a subscriber whose handler kills the process on key "poison"
	// a member of a HandlerFunc group on a shared cluster (BOXCAR_NATSURL,
	// BOXCAR_INSTANCE), recording what it handles, with the time
	roleGroupMember = "group-member"
)

func env(name string) string { return os.Getenv(name) }

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func runChild(role string) int {
	ctx := context.Background()
	db, err := sqlite.Open(env("BOXCAR_DB"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	if _, err := db.Exec(appSchema); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	if role == roleGroupMember {
		return runGroupMember(ctx, db) // topology_group_crash_test.go
	}
	cfg := Config{Dir: env("BOXCAR_DIR")}
	if w := envInt("BOXCAR_DUP_WINDOW_MS", 0); w > 0 {
		cfg.DuplicateWindow = time.Duration(w) * time.Millisecond
	}
	if role == roleKillKey {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stdout, nil))
		if env("BOXCAR_KILL_MODE") == "dead-letter-ack-lost" {
			cfg.seams = &testSeams{ack: loseTheDeadLettersAck(db)}
			if env("BOXCAR_DLQ_FAILS") != "" {
				cfg.seams.wrapJetStream = func(js jetstream.JetStream) jetstream.JetStream {
					return &failingDeadLetter{JetStream: js, prefix: bjs.DLQPrefix(DefaultSubjectPrefix) + "."}
				}
			}
		}
	}
	if role == roleRelayKill {
		cfg.Probe = func(p Probe) {
			if p == ProbeRelayAfterAck {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {}
			}
		}
	}
	bus, err := Open(ctx, db, cfg)
	if err != nil {
		fmt.Println("open-error:", err)
		return 3
	}
	fmt.Println("ready")
	switch role {
	case roleHold:
		select {}
	case roleRelayKill:
		n := envInt("BOXCAR_EVENTS", 100)
		err := bus.Tx(ctx, func(tx *sql.Tx) error {
			for i := 1; i <= n; i++ {
				if err := bus.PublishTx(ctx, tx, Event{Type: "order.placed", Key: "k" + strconv.Itoa(i%7), Data: []byte(strconv.Itoa(i))}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			return 4
		}
		time.Sleep(time.Minute) // the relay kills us first
		fmt.Println("not killed")
		return 5
	case roleWorkload:
		childWorkload(ctx, bus)
	case roleHangKey:
		_, err := bus.Subscribe(ctx, "ordered", TxHandler(func(ctx context.Context, tx *sql.Tx, m Message) error {
			if m.Key == "hot" && string(m.Data) == "3" {
				fmt.Println("hanging")
				<-ctx.Done()
				return ctx.Err()
			}
			return recordingHandler("ordered").tx(ctx, tx, m)
		}), SubscribeOptions{HandlerTimeout: time.Hour, AckWait: time.Hour, BatchSize: 1}) // one event per transaction: 1 and 2 commit before 3 hangs
		if err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			return 4
		}
		select {}
	case roleKillKey:
		// The handler kills the process on the poison event, as a crash in
		// cgo or an os.Exit in it would, after noting the attempt it saw.
		calls, err := os.OpenFile(env("BOXCAR_CALLS"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			return 4
		}
		// BOXCAR_KILL_MODE: "" kills at once; "fail-then-kill" fails the
		// process's first try with an error and kills on its retry;
		// "timeout-then-kill" outlives HandlerTimeout (1s) and kills 300ms
		// later, while the process goes on (an abandoned call that
		// crashes). Key "slow" takes 800ms, under the timeout.
		// "dead-letter-ack-lost" kills at once too, and loses the ack of
		// the poison event's dead letter (loseTheDeadLettersAck).
		mode, tries := env("BOXCAR_KILL_MODE"), new(atomic.Int32) // an abandoned call and its retry may overlap
		kill := func(ctx context.Context, m Message) error {
			if m.Key == "slow" {
				time.Sleep(800 * time.Millisecond)
			}
			if m.Key != "poison" {
				return nil
			}
			fmt.Fprintln(calls, m.Attempt)
			calls.Sync()
			switch try := tries.Add(1); {
			case mode == "fail-then-kill" && try == 1:
				return errors.New("not yet")
			case mode == "timeout-then-kill":
				go func() {
					time.Sleep(1300 * time.Millisecond)
					syscall.Kill(os.Getpid(), syscall.SIGKILL)
				}()
				<-ctx.Done()
				return ctx.Err()
			}
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
		h := TxHandler(func(ctx context.Context, tx *sql.Tx, m Message) error {
			if err := kill(ctx, m); err != nil {
				return err
			}
			return recordingHandler("billing").tx(ctx, tx, m)
		})
		if env("BOXCAR_PLAIN") != "" {
			h = HandlerFunc(func(ctx context.Context, m Message) error {
				if err := kill(ctx, m); err != nil {
					return err
				}
				_, err := db.ExecContext(ctx, `INSERT INTO applied(subscriber, event_id, type, key, n) VALUES('billing', ?, ?, ?, ?)`,
					m.ID, m.Type, m.Key, string(m.Data))
				return err
			})
		}
		opts := SubscribeOptions{MaxAttempts: 3, HandlerTimeout: time.Second, MinBackoff: 10 * time.Millisecond}
		if types := env("BOXCAR_TYPES"); types != "" {
			opts.Types = strings.Split(types, ",")
		}
		_, err = bus.Subscribe(ctx, "billing", h, opts)
		if err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			return 4
		}
		select {}
	case roleSignal:
		if signal.Ignored(syscall.SIGHUP) {
			// Inherited (nohup): the test cannot tell a handler from that.
			fmt.Println("SIGHUP ignored at start")
			return 5
		}
		syscall.Kill(os.Getpid(), syscall.SIGHUP)
		time.Sleep(5 * time.Second)
		fmt.Println("survived SIGHUP")
		return 0
	}
	return 1
}

// childWorkload runs 4 writers over BOXCAR_KEYS keys and the subscriber
// "kill-sub" until the process is killed.
func childWorkload(ctx context.Context, bus *Bus) {
	if _, err := bus.Subscribe(ctx, "kill-sub", recordingHandler("kill-sub"), SubscribeOptions{Workers: 8}); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(4)
	}
	keys := envInt("BOXCAR_KEYS", 50)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				key := "key-" + strconv.Itoa(rand.IntN(keys))
				if err := publishCounted(ctx, bus, "order.placed", key); err != nil {
					fmt.Fprintln(os.Stderr, "child publish:", err)
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
}

// failingDeadLetter fails the first publish of a dead letter, as a server
// too busy to answer within PublishTimeout would.
type failingDeadLetter struct {
	jetstream.JetStream
	prefix string
	failed atomic.Bool
}

func (f *failingDeadLetter) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if strings.HasPrefix(m.Subject, f.prefix) && f.failed.CompareAndSwap(false, true) {
		return nil, context.DeadlineExceeded
	}
	return f.JetStream.PublishMsg(ctx, m, opts...)
}

// loseTheDeadLettersAck is the ack seam of kill-key's mode
// "dead-letter-ack-lost": the first ack of the poison event (its handler
// kills, so that is the ack of its dead letter) is not sent, as when it
// dies with the embedded server, and the process is killed once the
// isolation's record of the event as through is written, or at once with
// BOXCAR_KILL_AT_ACK (BOXCAR_CALLS.lost marks that it happened, for the
// starts after).
func loseTheDeadLettersAck(db *sql.DB) func(jetstream.Msg) error {
	marker := env("BOXCAR_CALLS") + ".lost"
	return func(msg jetstream.Msg) error {
		if msg.Headers().Get(bjs.HeaderKey) != "poison" {
			return msg.Ack()
		}
		if _, err := os.Stat(marker); err == nil {
			return msg.Ack()
		}
		if err := os.WriteFile(marker, nil, 0o600); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(6)
		}
		if env("BOXCAR_KILL_AT_ACK") != "" {
			syscall.Kill(os.Getpid(), syscall.SIGKILL) // whatever was written before the ack
			select {}
		}
		meta, err := msg.Metadata()
		if err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(6)
		}
		go func() {
			for {
				var through uint64
				if err := db.QueryRow(`SELECT through FROM boxcar_handling`).Scan(&through); err == nil && through >= meta.Sequence.Stream {
					syscall.Kill(os.Getpid(), syscall.SIGKILL)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		return nil
	}
}
