package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/boxcar-bus/boxcar"
)

const replaySynopsis = `boxcar replay SUBSCRIBER --from-stream-seq N | --from-outbox-seq N | --from-time RFC3339
                          [--no-dedupe] [--why TEXT] [--detach] [-o json]
       boxcar replay SUBSCRIBER --watch [-o json]`

const replayAbout = `Asks the app to hand the subscriber its events again, from the point given to the stream's end, in
order; then the live flow goes on. By default only the events its dedupe table has not recorded run
(recovery); with --no-dedupe every event runs (rebuilding a projection; required for a HandlerFunc
subscriber). Then it shows the replay's progress until it is done; --detach returns at once, --watch
follows a replay already started. Ctrl-C stops the watching, not the replay: it goes on in the app.`

// errInterrupted: Ctrl-C while watching.
var errInterrupted = errors.New("interrupted")

// replayArgs are replay's flags.
type replayArgs struct {
	streamSeq, outboxSeq  int64
	fromTime, why         string
	noDedupe, detach, see bool
}

func (r *replayArgs) define(fs *flag.FlagSet) {
	fs.Int64Var(&r.streamSeq, "from-stream-seq", 0, "replay from this stream seq")
	fs.Int64Var(&r.outboxSeq, "from-outbox-seq", 0, "replay from the event of this outbox seq")
	fs.StringVar(&r.fromTime, "from-time", "", "replay from the first event stored at or after this RFC 3339 time")
	fs.BoolVar(&r.noDedupe, "no-dedupe", false, "run every event again, even those the dedupe table recorded")
	fs.StringVar(&r.why, "why", "", "why, recorded in the app's log with who acts")
	fs.BoolVar(&r.detach, "detach", false, "start the replay and return, without watching it")
	fs.BoolVar(&r.see, "watch", false, "watch the replay in progress (start none)")
}

// from returns the ReplayFrom of the flags, or why they are wrong.
func (r *replayArgs) from() (boxcar.ReplayFrom, error) {
	var f boxcar.ReplayFrom
	set := 0
	if r.streamSeq != 0 {
		if r.streamSeq < 0 {
			return f, fmt.Errorf("--from-stream-seq %d: a seq is a number from 1", r.streamSeq)
		}
		f.StreamSeq, set = uint64(r.streamSeq), set+1
	}
	if r.outboxSeq != 0 {
		if r.outboxSeq < 0 {
			return f, fmt.Errorf("--from-outbox-seq %d: a seq is a number from 1", r.outboxSeq)
		}
		f.OutboxSeq, set = r.outboxSeq, set+1
	}
	if r.fromTime != "" {
		t, err := time.Parse(time.RFC3339, r.fromTime)
		if err != nil {
			return f, fmt.Errorf("--from-time %q: want an RFC 3339 time, e.g. 2026-12-01T10:00:00Z", r.fromTime)
		}
		f.Time, set = t, set+1
	}
	switch {
	case r.see && (set > 0 || r.detach || r.noDedupe || r.why != ""):
		return f, errors.New("--watch follows a replay already started: it takes no other flag")
	case r.see:
		return f, nil
	case set != 1:
		return f, errors.New("give exactly one of --from-stream-seq, --from-outbox-seq and --from-time (or --watch)")
	}
	return f, nil
}

func cmdReplay(ctx context.Context, c *cli, args []string) int {
	var r replayArgs
	s := spec{name: "replay", synopsis: replaySynopsis, about: replayAbout, json: true, define: r.define}
	pos, code, ok := c.parse(s, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return c.usageError(s, "want one subscriber name, got %d arguments", len(pos))
	}
	from, err := r.from()
	if err != nil {
		return c.usageError(s, "%v", err)
	}
	name := pos[0]
	return c.with(ctx, "replay", !r.see, func(b backend) error {
		var st boxcar.ReplayStatus
		var err error
		if r.see {
			st, err = b.ReplayProgress(ctx, name)
		} else if st, err = b.Replay(ctx, name, from, r.noDedupe, r.why); err != nil {
			err = unanswered(err, "boxcar replay "+cell(name)+" --watch")
		}
		if err != nil {
			return err
		}
		if !r.see {
			fmt.Fprintf(c.stderr, "replay of %s started: stream seqs %d to %d%s\n", cell(name), st.From, st.Through, map[bool]string{true: ", every event (no dedupe)"}[st.NoDedupe])
		}
		if !r.detach {
			st, err = c.watchReplay(ctx, b, name, st)
		} else if !c.jsonOut() {
			fmt.Fprintf(c.stdout, "detached: follow it with boxcar replay %s --watch\n", cell(name))
		}
		if c.jsonOut() && !errors.Is(err, errInterrupted) {
			if jerr := c.printJSON(st); err == nil {
				err = jerr
			}
		}
		return err
	})
}

// watchReplay shows the replay's progress until it is done or ctx ends
// (errInterrupted).
func (c *cli) watchReplay(ctx context.Context, b backend, name string, st boxcar.ReplayStatus) (boxcar.ReplayStatus, error) {
	// A replay's From is known from the answer that started it; the
	// progress of a replay in progress does not say it (the app keeps only
	// where it ends): then the bar counts from where the watch began.
	from := st.From
	if from == 0 {
		from = st.At + 1
	}
	bar := &progressBar{w: c.stderr, tty: isTerminal(c.stderr), name: name, from: from}
	t := time.NewTicker(c.pollEvery)
	defer t.Stop()
	for {
		bar.show(st)
		if st.Done {
			bar.end(fmt.Sprintf("replay of %s done: through stream seq %d", cell(name), st.Through))
			return st, nil
		}
		select {
		case <-ctx.Done():
			bar.end(fmt.Sprintf("stopped watching: the replay of %s goes on in the app (boxcar replay %s --watch follows it again)", cell(name), cell(name)))
			return st, errInterrupted
		case <-t.C:
		}
		next, err := b.ReplayProgress(ctx, name)
		if err != nil {
			if ctx.Err() != nil {
				continue // the select above reports it
			}
			bar.end("")
			return st, fmt.Errorf("reading the replay's progress (the replay goes on in the app): %w", err)
		}
		st = next
	}
}

// progressBar draws a replay's progress: on a terminal, one line redrawn
// in place; elsewhere (a log, a pipe), a line each time it moves.
type progressBar struct {
	w    io.Writer
	tty  bool
	name string
	from uint64 // the first stream seq the bar counts
	last string
	drew bool
}

const barWidth = 30

// line is the progress of st as one line.
func (p *progressBar) line(st boxcar.ReplayStatus) string {
	total := max(int64(st.Through)-int64(p.from)+1, 1)
	done := min(max(int64(st.At)-int64(p.from)+1, 0), total)
	if st.Done {
		done = total
	}
	fill := int(done * barWidth / total)
	bar := strings.Repeat("=", fill)
	if fill < barWidth {
		bar += ">" + strings.Repeat(" ", barWidth-fill-1)
	}
	return fmt.Sprintf("replay %s [%s] %3d%%  at stream seq %d of %d", cell(p.name), bar, done*100/total, st.At, st.Through)
}

func (p *progressBar) show(st boxcar.ReplayStatus) {
	l := p.line(st)
	if l == p.last {
		return
	}
	p.last, p.drew = l, true
	if p.tty {
		fmt.Fprintf(p.w, "\r%s\x1b[K", l) // \x1b[K: clear the rest of a longer line before
		return
	}
	fmt.Fprintln(p.w, l)
}

// end finishes the bar's line and prints msg.
func (p *progressBar) end(msg string) {
	if p.tty && p.drew {
		fmt.Fprintln(p.w)
	}
	if msg != "" {
		fmt.Fprintln(p.w, msg)
	}
}
