package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/boxcar-bus/boxcar"
)

// listJSON is the admin API's shape of a list.
type listJSON[T any] struct {
	Items []T `json:"items"`
}

// okJSON is the admin API's answer to pause, resume and retire.
type okJSON struct {
	OK bool `json:"ok"`
}

const subscribersSynopsis = `boxcar subscribers [-o json]
       boxcar subscribers show NAME [-o json]
       boxcar subscribers pause NAME [--until RFC3339|DURATION] [--why TEXT]
       boxcar subscribers resume NAME [--why TEXT]
       boxcar subscribers retire NAME [--why TEXT]`

func cmdSubscribers(ctx context.Context, c *cli, args []string) int {
	sub := "ls"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	switch sub {
	case "ls", "list":
		return subscribersList(ctx, c, args)
	case "show":
		return subscribersShow(ctx, c, args)
	case "pause", "resume", "retire":
		return subscribersWrite(ctx, c, sub, args)
	}
	s := spec{name: "subscribers", synopsis: subscribersSynopsis}
	return c.usageError(s, "unknown subcommand %q", sub)
}

func subscribersList(ctx context.Context, c *cli, args []string) int {
	s := spec{name: "subscribers", synopsis: subscribersSynopsis, json: true,
		about: "Every subscriber the app's database knows, whether it runs or not."}
	pos, code, ok := c.parse(s, args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return c.usageError(s, "unexpected argument %q", pos[0])
	}
	return c.with(ctx, "subscribers", false, func(b backend) error {
		subs, err := b.Subscribers(ctx)
		if err != nil {
			return err
		}
		if c.jsonOut() {
			return c.printJSON(listJSON[boxcar.SubscriberInfo]{Items: subs})
		}
		printSubscribers(c.stdout, subs)
		return nil
	})
}

func printSubscribers(w io.Writer, subs []boxcar.SubscriberInfo) {
	if len(subs) == 0 {
		fmt.Fprintln(w, "no subscribers")
		return
	}
	t := newTable(w, "NAME", "KIND", "TYPES", "RUNNING", "PAUSED", "PENDING", "UNACKED", "ACK-FLOOR", "EXPIRED", "PARKED", "REPLAY", "STARTED", "ERROR")
	for _, s := range subs {
		types := "*"
		if len(s.Types) > 0 {
			types = short(strings.Join(s.Types, ","), 40)
		}
		paused := "no"
		if s.Paused {
			paused = "until " + s.PausedUntil.Local().Format("2006-01-02 15:04")
		}
		errText := "-"
		if s.Err != "" {
			errText = short(s.Err, 60)
		}
		t.row(cell(s.Name), cell(s.Kind), types, running(s), paused, num(s.Pending), num(s.Unacked), num(s.AckFloor),
			num(s.Expired), num(s.ParkedKeys), replayCell(s.Replay), ago(s.Started), errText)
	}
	t.flush()
}

func subscribersShow(ctx context.Context, c *cli, args []string) int {
	s := spec{name: "subscribers show", synopsis: "boxcar subscribers show NAME [-o json]", json: true}
	pos, code, ok := c.parse(s, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return c.usageError(s, "want one subscriber name, got %d arguments", len(pos))
	}
	return c.with(ctx, "subscribers show", false, func(b backend) error {
		si, err := b.Subscriber(ctx, pos[0])
		if err != nil {
			return err
		}
		if c.jsonOut() {
			return c.printJSON(si)
		}
		printSubscriber(c.stdout, si)
		return nil
	})
}

func printSubscriber(w io.Writer, s boxcar.SubscriberInfo) {
	t := newTable(w, "subscriber", cell(s.Name))
	types := "every type"
	if len(s.Types) > 0 {
		types = cell(strings.Join(s.Types, ", "))
	}
	t.row("kind", cell(s.Kind))
	t.row("types", types)
	t.row("running", running(s)+" (in the app's process)")
	t.row("created", stamp(s.Created))
	t.row("started", stamp(s.Started))
	t.row("stopped", stamp(s.Stopped))
	t.row("pending", num(s.Pending))
	t.row("unacked", num(s.Unacked))
	t.row("ack floor", num(s.AckFloor)+" (stream seq)")
	if s.Paused {
		t.row("paused", "until "+stamp(s.PausedUntil))
	}
	t.row("expired", num(s.Expired))
	t.row("parked keys", num(s.ParkedKeys))
	t.row("replay", replayCell(s.Replay))
	if st := s.Stats; st != nil {
		t.row("handled", fmt.Sprintf("%d (and %d skipped as done before)", st.Handled, st.Skipped))
		t.row("failures", num(st.Failures))
		t.row("dead-lettered", num(st.DeadLettered))
		t.row("redelivered", fmt.Sprintf("%d (%d ignored)", st.Redelivered, st.Ignored))
		t.row("in flight", fmt.Sprintf("%d (%d keys waiting to retry)", st.InFlight, st.StuckKeys))
		t.row("handler p50/p99", fmt.Sprintf("%s / %s", secs(st.HandlerDuration.Quantile(0.5)), secs(st.HandlerDuration.Quantile(0.99))))
		t.row("end to end p50/p99", fmt.Sprintf("%s / %s", secs(st.EndToEnd.Quantile(0.5)), secs(st.EndToEnd.Quantile(0.99))))
	}
	if s.Err != "" {
		t.row("error", cell(s.Err))
	}
	t.flush()
}

func secs(s float64) string { return dur(time.Duration(s * float64(time.Second))) }

// subscribersWrite is pause, resume and retire.
func subscribersWrite(ctx context.Context, c *cli, action string, args []string) int {
	var why, until string
	s := spec{name: "subscribers " + action, synopsis: "boxcar subscribers " + action + " NAME [--why TEXT]", json: true,
		define: func(fs *flag.FlagSet) {
			fs.StringVar(&why, "why", "", "why, recorded in the app's log with who acts")
			if action == "pause" {
				fs.StringVar(&until, "until", "", "end of the pause: an RFC 3339 time or a duration from now (default: until resume)")
			}
		}}
	switch action {
	case "pause":
		s.synopsis = "boxcar subscribers pause NAME [--until RFC3339|DURATION] [--why TEXT]"
		s.about = "Stops the delivery of events to the subscriber, in every process, until --until or a resume."
	case "retire":
		s.about = "Removes the subscriber for good: its consumer, dedupe rows, parked keys and row. It must not be running."
	}
	pos, code, ok := c.parse(s, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return c.usageError(s, "want one subscriber name, got %d arguments", len(pos))
	}
	end, err := parseUntil(until)
	switch {
	case c.explicit["until"] && until == "":
		// --until "$END" with END unset would pause until a resume.
		return c.usageError(s, "--until is empty: give when the pause ends, or leave --until out to pause until a resume")
	case err != nil:
		return c.usageError(s, "--until %q: %v", until, err)
	}
	name := pos[0]
	return c.with(ctx, s.name, true, func(b backend) error {
		var err error
		switch action {
		case "pause":
			err = b.Pause(ctx, name, end, why)
		case "resume":
			err = b.Resume(ctx, name, why)
		default:
			err = b.Retire(ctx, name, why)
		}
		if err != nil {
			return unanswered(err, "boxcar subscribers show "+cell(name))
		}
		if c.jsonOut() {
			return c.printJSON(okJSON{OK: true})
		}
		done := map[string]string{"pause": "paused until resumed", "resume": "resumed", "retire": "retired"}[action]
		if action == "pause" && !end.IsZero() {
			done = "paused until " + stamp(end)
		}
		fmt.Fprintf(c.stdout, "subscriber %s: %s\n", cell(name), done)
		return nil
	})
}

// parseUntil reads --until: empty, an RFC 3339 time, or a duration from
// now.
func parseUntil(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("want an RFC 3339 time (2026-12-01T10:00:00Z) or a positive duration (2h)")
	}
	return time.Now().Add(d), nil
}
