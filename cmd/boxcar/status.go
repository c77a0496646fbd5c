package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/admin/client"
)

// errNotOK is what health returns when the state is not ok: exit 1,
// nothing more to print.
var errNotOK = errors.New("not ok")

// with opens the backend, runs fn on it, closes it, and returns the exit
// code.
func (c *cli) with(ctx context.Context, name string, write bool, fn func(b backend) error) int {
	b, err := c.open(ctx, write)
	if err != nil {
		return c.fail(name, err)
	}
	err = fn(b)
	if cerr := b.Close(); cerr != nil {
		fmt.Fprintf(c.stderr, "boxcar %s: closing %s: %s\n", name, cell(b.Where()), cell(cerr.Error()))
	}
	switch {
	case errors.Is(err, errNotOK):
		return exitUnhealthy
	case errors.Is(err, errInterrupted):
		return exitInterrupted
	case err != nil:
		return c.fail(name, err)
	}
	return exitOK
}

// unanswered adds to the error of a write that went out and got no
// answer (a timeout, a connection cut, Ctrl-C) that the app may have done it
// all the same, and how to look: "unreachable" alone would read as "nothing
// happened". A write that could not be sent (no connection) is left as it
// is.
func unanswered(err error, look string) error {
	var op *net.OpError
	if !errors.Is(err, client.ErrUnreachable) || errors.As(err, &op) && op.Op == "dial" {
		return err
	}
	return fmt.Errorf("%w; it was sent and no answer came: the app may have done it all the same (%s shows whether it did)", err, look)
}

// statusJSON is status -o json: the admin API's /api/status with the
// subscribers of /api/subscribers.
type statusJSON struct {
	Stats       boxcar.Stats            `json:"stats"`
	Health      boxcar.Health           `json:"health"`
	Subscribers []boxcar.SubscriberInfo `json:"subscribers"`
}

var statusSpec = spec{
	name:     "status",
	synopsis: "boxcar status [-o json]",
	about: "The relay (cursor, published, failures, set aside, outbox lag and age, writer held) and every subscriber\n" +
		"(state from health, kind, lag = pending + unacked, handled, failures, dead-lettered, expired, parked keys,\n" +
		"replay). Handled, failures and dead-lettered count since the subscriber started in the app's process: \"-\"\n" +
		"when it does not run there (and always offline).",
	json: true,
}

func cmdStatus(ctx context.Context, c *cli, args []string) int {
	pos, code, ok := c.parse(statusSpec, args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return c.usageError(statusSpec, "unexpected argument %q", pos[0])
	}
	return c.with(ctx, "status", false, func(b backend) error {
		st, err := b.Status(ctx)
		if err != nil {
			return err
		}
		subs, err := b.Subscribers(ctx)
		if err != nil {
			return err
		}
		if c.jsonOut() {
			return c.printJSON(statusJSON{Stats: st.Stats, Health: st.Health, Subscribers: subs})
		}
		_, down := b.(*offlineBackend)
		printStatus(c.stdout, b.Where(), down, st.Stats, st.Health, subs)
		return nil
	})
}

// componentState returns the state of a component in h ("-" if absent).
func componentState(h boxcar.Health, component, name string) (boxcar.ComponentHealth, bool) {
	for _, ch := range h.Components {
		if ch.Component == component && ch.Name == name {
			return ch, true
		}
	}
	return boxcar.ComponentHealth{}, false
}

// printStatus prints the status tables; down: read from the files, where
// the counters since the app started mean nothing.
func printStatus(w io.Writer, where string, down bool, st boxcar.Stats, h boxcar.Health, subs []boxcar.SubscriberInfo) {
	fmt.Fprintf(w, "%s, at %s: %s\n\n", cell(where), h.At.Local().Format("2006-01-02 15:04:05"), cell(string(h.State)))
	relay, _ := componentState(h, "relay", "")
	outbox, _ := componentState(h, "outbox", "")
	t := newTable(w, "RELAY", "")
	t.row("state", cell(string(relay.State)))
	t.row("cursor", num(st.RelayCursor))
	sinceStart := func(n int64) string {
		if down {
			return "- (the app is down)"
		}
		return num(n) + " since the app started"
	}
	t.row("published", sinceStart(st.RelayPublished))
	t.row("failures", sinceStart(st.RelayFailures))
	t.row("set aside", sinceStart(st.RelaySetAside))
	t.row("outbox dead", num(st.OutboxDead)+" in boxcar_outbox_dead (outbox ls --dead)")
	t.row("outbox", cell(string(outbox.State)))
	t.row("outbox lag", num(st.OutboxLag)+" events")
	t.row("outbox age", dur(st.OutboxAge))
	t.row("writer held for", fmt.Sprintf("%s (%d waiting)", dur(st.WriterHeldFor), st.WriterWaiting))
	if st.WALSyncFailed != "" {
		t.row("WAL fsync", "FAILED: no outbox event is published, no transactional ack is sent until the app restarts (docs/RUNBOOK.md#disk-fsync)")
	}
	if st.Topology != "" {
		t.row("topology", cell(st.Topology)+", instance "+cell(st.InstanceID))
	}
	if hub := st.Hub; hub != nil {
		t.row("hub", hubLine(*hub))
	}
	t.flush()
	fmt.Fprintln(w)
	if len(subs) == 0 {
		fmt.Fprintln(w, "no subscribers")
	} else {
		printSubscriberStatus(w, h, subs)
	}
	printReasons(w, h)
}

func printSubscriberStatus(w io.Writer, h boxcar.Health, subs []boxcar.SubscriberInfo) {
	t := newTable(w, "SUBSCRIBER", "STATE", "KIND", "RUNNING", "LAG", "HANDLED", "FAILURES", "DEAD-LETTERED", "EXPIRED", "PARKED", "REPLAY")
	for _, s := range subs {
		state := "-"
		if ch, ok := componentState(h, "subscriber", s.Name); ok {
			state = cell(string(ch.State))
		}
		if s.Paused {
			state += " (paused)"
		}
		handled, failures, dead := "-", "-", "-"
		if s.Stats != nil {
			handled, failures, dead = num(s.Stats.Handled), num(s.Stats.Failures), num(s.Stats.DeadLettered)
		}
		t.row(cell(s.Name), state, cell(s.Kind), running(s), num(int64(s.Pending)+int64(s.Unacked)),
			handled, failures, dead, num(s.Expired), num(s.ParkedKeys), replayCell(s.Replay))
	}
	t.flush()
}

// printReasons lists the reasons of every component not ok.
func printReasons(w io.Writer, h boxcar.Health) {
	first := true
	for _, ch := range h.Components {
		if len(ch.Reasons) == 0 {
			continue
		}
		if first {
			fmt.Fprintln(w, "\nwhy:")
			first = false
		}
		who := ch.Component
		if ch.Name != "" {
			who += " " + ch.Name
		}
		for _, r := range ch.Reasons {
			fmt.Fprintf(w, "  %s (%s): %s\n", cell(who), cell(string(ch.State)), cell(r))
		}
	}
}

func running(s boxcar.SubscriberInfo) string {
	if s.Running {
		return "yes"
	}
	return "no"
}

func replayCell(r *boxcar.ReplayStatus) string {
	switch {
	case r == nil:
		return "-"
	case r.Done:
		return fmt.Sprintf("done (%d)", r.Through)
	}
	return fmt.Sprintf("%d/%d", r.At, r.Through)
}

var healthSpec = spec{
	name:     "health",
	synopsis: "boxcar health [-o json]",
	about: "The overall state (ok, lagging, stalled, stopped, losing) and each component's, with why.\n" +
		"Exit status 0 when ok, 1 when not, 3 when the app cannot be reached: use it as a probe.\n" +
		"Offline (--db, --dir) the relay is not running, so health is never ok.",
	json: true,
}

func cmdHealth(ctx context.Context, c *cli, args []string) int {
	pos, code, ok := c.parse(healthSpec, args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return c.usageError(healthSpec, "unexpected argument %q", pos[0])
	}
	return c.with(ctx, "health", false, func(b backend) error {
		h, err := b.Health(ctx)
		if err != nil {
			return err
		}
		if c.jsonOut() {
			err = c.printJSON(h)
		} else {
			printHealth(c.stdout, h)
		}
		if err == nil && h.State != boxcar.HealthOK {
			return errNotOK
		}
		return err
	})
}

func printHealth(w io.Writer, h boxcar.Health) {
	fmt.Fprintf(w, "%s\n\n", cell(string(h.State)))
	t := newTable(w, "COMPONENT", "NAME", "STATE", "LAG", "AGE", "WHY")
	for _, ch := range h.Components {
		reasons := make([]string, len(ch.Reasons))
		for i, r := range ch.Reasons {
			reasons[i] = cell(r)
		}
		name := cell(ch.Name)
		if name == "" {
			name = "-"
		}
		t.row(cell(ch.Component), name, cell(string(ch.State)), num(ch.Lag), dur(ch.Age), strings.Join(reasons, "; "))
	}
	t.flush()
}

// hubLine is a leaf's link to its hub, in one line.
func hubLine(h boxcar.HubStatus) string {
	line := "connected"
	if !h.Connected {
		line = "DOWN for " + dur(h.DownFor)
	}
	if h.Linked {
		line += fmt.Sprintf(", sourced by %s, %s events behind", cell(h.Stream), num(int64(h.SourceLag)))
	} else {
		line += ", not sourced by the hub yet"
	}
	if h.Conflict != "" {
		line += ", CONFLICT: " + cell(h.Conflict)
	} else if h.Error != "" {
		line += ", last error: " + cell(h.Error)
	}
	return line
}
