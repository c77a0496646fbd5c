// Command browsercheck renders the admin status page in a real headless
// browser and checks what it shows. It starts a bus in a temp dir with state
// worth seeing (two subscribers, dead letters, a parked key, a hostile
// event, a replay done, events waiting in the outbox), serves the admin
// handler on 127.0.0.1, and runs chromium on its pages: --dump-dom (the DOM
// after the page's own script ran) and --screenshot. It exits 1 if the DOM
// lacks what it must show or holds what it must not (a hostile event's
// markup, run or not). scripts/browser-check builds and runs it.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/admin"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// hostileKey, hostileData and hostileHeader would run script or add
// elements in the page if it did not escape them.
const (
	hostileKey    = `<script>document.title='pwned'</script>`
	hostileData   = `<img src=x onerror="document.title='pwned'"><script>alert(1)</script>`
	hostileHeader = `"><script>document.body.innerHTML='pwned'</script>`
)

func main() {
	chromium := flag.String("chromium", "chromium", "the browser to run")
	out := flag.String("out", filepath.Join(os.TempDir(), "boxcar-browser-check"), "where the screenshots and DOM dumps go")
	keep := flag.Bool("keep", false, "keep serving after the check, until interrupted (to look at the page yourself)")
	flag.Parse()
	if err := run(*chromium, *out, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "browser-check: FAIL:", err)
		os.Exit(1)
	}
	fmt.Println("browser-check: ok")
}

func run(chromium, out string, keep bool) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "boxcar-browsercheck-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	db, err := sqlite.Open(filepath.Join(dir, "app.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	// An hour between polls: the events published last on another handle
	// stay in the outbox, to be seen waiting.
	bus, err := boxcar.Open(ctx, db, boxcar.Config{Dir: filepath.Join(dir, "nats"), RelayPollInterval: time.Hour})
	if err != nil {
		return err
	}
	defer bus.Close(ctx)
	state, err := makeState(ctx, bus, filepath.Join(dir, "app.db"))
	if state.release != nil {
		defer state.release() // before the bus closes
	}
	if err != nil {
		return fmt.Errorf("making the bus's state: %w", err)
	}
	h, err := admin.NewHandler(bus, admin.Options{Token: boxcar.NewSecret(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/boxcar/", http.StripPrefix("/boxcar", h))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		srv.Shutdown(ctx)
		<-served
	}()
	base := "http://" + ln.Addr().String() + "/boxcar/"
	fmt.Println("browser-check: serving", base)
	err = checkPages(ctx, chromium, out, base, state)
	if keep {
		fmt.Println("browser-check: -keep: serving until interrupted")
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt)
		<-sig
	}
	return err
}

// state is what makeState made, for the checks.
type state struct {
	hostileSeq uint64 // the hostile event's dead letter
	badSeq     uint64 // an ordinary dead letter, the head of a parked key
	release    func() // lets the replay finish
}

// makeState makes what the page should show, and leaves it still:
//   - billing (ParkKeys) dead-letters the keys starting with "bad" and the
//     hostile event: dead letters, and a parked key;
//   - shipping (a HandlerFunc of order.placed) is replayed, and its handler
//     holds one key's replayed event until st.release: a replay in
//     progress;
//   - search ran once, is closed, and falls behind: stopped;
//   - the last events are committed on a second handle of the database
//     (dbPath), whose commits do not wake the relay: they wait in the
//     outbox.
func makeState(ctx context.Context, bus *boxcar.Bus, dbPath string) (state, error) {
	var st state
	held := make(chan struct{})
	st.release = sync.OnceFunc(func() { close(held) })
	if err := subscribe(ctx, bus, held); err != nil {
		return st, err
	}
	if err := bus.Publish(ctx, events()...); err != nil {
		return st, err
	}
	if err := waitUntil(ctx, "three dead letters", func() (bool, error) {
		dl, _, err := bus.DeadLetters(ctx, boxcar.DeadLetterFilter{})
		for _, d := range dl {
			switch {
			case d.Key == hostileKey:
				st.hostileSeq = d.Seq
			case d.Key == "bad-customer-7" && d.Reason != boxcar.DeadLetterReasonParked:
				st.badSeq = d.Seq
			}
		}
		return len(dl) == 3, err
	}); err != nil {
		return st, err
	}
	replay := boxcar.ReplayRequest{Subscriber: "shipping", From: boxcar.ReplayFrom{StreamSeq: 5}, NoDedupe: true,
		By: "browser-check", Why: "rebuild the shipping projection"}
	rs, err := bus.Replay(ctx, replay)
	if err != nil {
		return st, err
	}
	if err := waitUntil(ctx, "the replay held", func() (bool, error) {
		p, err := bus.ReplayProgress(ctx, "shipping")
		return err == nil && p.At >= rs.From+heldFrom/2 && !p.Done, err
	}); err != nil {
		return st, err
	}
	return st, publishUnseen(ctx, bus, dbPath, 3)
}

// heldFrom is the stream seq from which shipping holds customer-3's
// replayed events.
const heldFrom = 20

// subscribe subscribes billing, shipping (holding its replay on held) and
// search (closed at once).
func subscribe(ctx context.Context, bus *boxcar.Bus, held <-chan struct{}) error {
	search, err := bus.Subscribe(ctx, "search", boxcar.HandlerFunc(func(context.Context, boxcar.Message) error { return nil }), boxcar.SubscribeOptions{})
	if err != nil {
		return err
	}
	if err := search.Close(ctx); err != nil {
		return err
	}
	billing := boxcar.TxHandler(func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
		if strings.HasPrefix(m.Key, "bad") || m.Key == hostileKey {
			return boxcar.Permanent(fmt.Errorf("billing: no address on file for customer %q", m.Key))
		}
		return nil
	})
	if _, err := bus.Subscribe(ctx, "billing", billing, boxcar.SubscribeOptions{ParkKeys: true}); err != nil {
		return err
	}
	shipping := boxcar.HandlerFunc(func(ctx context.Context, m boxcar.Message) error {
		if m.Replay && m.Key == "customer-3" && m.StreamSeq >= heldFrom {
			select {
			case <-held:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	_, err = bus.Subscribe(ctx, "shipping", shipping, boxcar.SubscribeOptions{Types: []string{"order.placed"}, HandlerTimeout: 10 * time.Minute})
	return err
}

// events are the events published first: orders of 7 customers, two of a
// customer billing cannot handle (its key parks), and a hostile one.
func events() []boxcar.Event {
	var ev []boxcar.Event
	for i := range 40 {
		ev = append(ev, boxcar.Event{Type: "order.placed", Key: fmt.Sprintf("customer-%d", i%7),
			Data: fmt.Appendf(nil, `{"order":%d,"total_cents":%d}`, i, 1000+i*37)})
	}
	return append(ev,
		boxcar.Event{Type: "order.placed", Key: "bad-customer-7", Data: []byte(`{"order":100,"address":null}`), Headers: map[string]string{"Trace-Id": "4bf92f3577b34da6"}},
		boxcar.Event{Type: "order.placed", Key: "bad-customer-7", Data: []byte(`{"order":101}`)},
		boxcar.Event{Type: "invoice.sent", Key: hostileKey, Data: []byte(hostileData), Headers: map[string]string{"X-Note": hostileHeader}},
	)
}

// publishUnseen commits n events on a handle of its own, which the relay
// only finds at its next poll.
func publishUnseen(ctx context.Context, bus *boxcar.Bus, dbPath string, n int) error {
	other, err := sqlite.Open(dbPath)
	if err != nil {
		return err
	}
	defer other.Close()
	tx, err := other.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for i := range n {
		if err := bus.PublishTx(ctx, tx, boxcar.Event{Type: "order.shipped", Key: fmt.Sprintf("customer-%d", i), Data: []byte(`{"carrier":"dhl"}`)}); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// waitUntil polls cond for up to a minute.
func waitUntil(ctx context.Context, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(time.Minute)
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up waiting for %s (last error: %v)", what, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// errMissing collects what the pages lack.
var errMissing = errors.New("the pages are not as they must be")
