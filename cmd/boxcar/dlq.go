package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/boxcar-bus/boxcar"
)

const dlqSynopsis = `boxcar dlq ls [--subscriber S] [--key K] [--type T] [--reason R] [--state S] [--after SEQ] [--limit N] [-o json]
       boxcar dlq show SEQ [-o json]
       boxcar dlq redrive SEQ | --subscriber S [--key K]  [--why TEXT] [-o json]
       boxcar dlq discard SEQ --why TEXT [-o json]`

func cmdDLQ(ctx context.Context, c *cli, args []string) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fmt.Fprintf(c.stdout, "usage: %s\n", dlqSynopsis)
			return exitOK
		}
		return c.usageError(spec{name: "dlq", synopsis: dlqSynopsis}, "want a subcommand: ls, show, redrive or discard")
	}
	switch sub, rest := args[0], args[1:]; sub {
	case "ls", "list":
		return dlqList(ctx, c, rest)
	case "show":
		return dlqShow(ctx, c, rest)
	case "redrive":
		return dlqRedrive(ctx, c, rest)
	case "discard":
		return dlqDiscard(ctx, c, rest)
	default:
		return c.usageError(spec{name: "dlq", synopsis: dlqSynopsis}, "unknown subcommand %q", sub)
	}
}

// dlqListJSON is the admin API's answer to a dead-letter list.
type dlqListJSON struct {
	Items []boxcar.DeadLetter `json:"items"`
	Next  uint64              `json:"next"`
}

func dlqList(ctx context.Context, c *cli, args []string) int {
	var f boxcar.DeadLetterFilter
	var state string
	s := spec{name: "dlq ls", synopsis: "boxcar dlq ls [--subscriber S] [--key K] [--type T] [--reason R] [--state S] [--after SEQ] [--limit N] [-o json]",
		about: "Dead letters, oldest first. Page on with --after the SEQ printed at the end.", json: true,
		define: func(fs *flag.FlagSet) {
			fs.StringVar(&f.Subscriber, "subscriber", "", "only this subscriber's")
			fs.StringVar(&f.Key, "key", "", "only this event key's")
			fs.StringVar(&f.Type, "type", "", "only this event type's")
			fs.StringVar(&f.Reason, "reason", "", "only this reason's: failed, permanent, schema, malformed, parked")
			fs.StringVar(&state, "state", "", "only this state's: pending, redriven, discarded")
			fs.Uint64Var(&f.After, "after", 0, "only letters after this SEQ (the next page)")
			fs.IntVar(&f.Limit, "limit", 100, "the most letters listed (1 to 1000)")
		}}
	pos, code, ok := c.parse(s, args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return c.usageError(s, "unexpected argument %q", pos[0])
	}
	if f.Limit < 1 || f.Limit > 1000 {
		return c.usageError(s, "--limit %d: use 1 to 1000", f.Limit)
	}
	// Checked here as the admin API checks them: offline, the library would
	// read a misspelt reason as one no letter has ("no dead letters"), and
	// an --after past 2^63 as 0 (every letter from the first).
	if f.Reason != "" && !slices.Contains(deadLetterReasons, f.Reason) {
		return c.usageError(s, "--reason %q: use one of %s", f.Reason, strings.Join(deadLetterReasons, ", "))
	}
	switch f.State = boxcar.DeadLetterState(state); f.State {
	case "", boxcar.DeadLetterPending, boxcar.DeadLetterRedriven, boxcar.DeadLetterDiscarded:
	default:
		return c.usageError(s, "--state %q: use pending, redriven or discarded", state)
	}
	if f.After > math.MaxInt64 {
		return c.usageError(s, "--after %d: a seq is below 2^63", f.After)
	}
	return c.with(ctx, "dlq ls", false, func(b backend) error {
		items, next, err := b.DeadLetters(ctx, f)
		if err != nil {
			return err
		}
		if c.jsonOut() {
			return c.printJSON(dlqListJSON{Items: items, Next: next})
		}
		printDeadLetters(c.stdout, items, next)
		return nil
	})
}

func printDeadLetters(w io.Writer, items []boxcar.DeadLetter, next uint64) {
	if len(items) == 0 {
		fmt.Fprintln(w, "no dead letters")
	} else {
		t := newTable(w, "SEQ", "SUBSCRIBER", "STATE", "REASON", "TYPE", "KEY", "ATTEMPTS", "DEAD", "ERROR")
		for _, d := range items {
			t.row(num(d.Seq), cell(d.Subscriber), cell(string(d.State)), cell(d.Reason), short(d.Type, 40), short(d.Key, 30),
				strconv.Itoa(d.Attempts), ago(d.DeadAt), short(d.Error, 60))
		}
		t.flush()
	}
	if next != 0 {
		fmt.Fprintf(w, "more: --after %d\n", next)
	}
}

// deadLetterReasons are the reasons of DeadLetter.Reason ("unknown" for a
// message that is not a Boxcar letter), as the admin API takes them.
var deadLetterReasons = []string{"failed", "permanent", "schema", "malformed", boxcar.DeadLetterReasonParked, "unknown"}

// seqArg reads a dead letter's SEQ.
func seqArg(s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("SEQ %q: a dead letter's seq is a number from 1 (dlq ls shows them)", s)
	}
	return n, nil
}

func dlqShow(ctx context.Context, c *cli, args []string) int {
	s := spec{name: "dlq show", synopsis: "boxcar dlq show SEQ [-o json]", json: true,
		about: "One dead letter: the event, its headers and payload (control characters escaped, binary as a hex\ndump), the errors of its attempts, and what was done to it."}
	pos, code, ok := c.parse(s, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return c.usageError(s, "want one SEQ, got %d arguments", len(pos))
	}
	seq, err := seqArg(pos[0])
	if err != nil {
		return c.usageError(s, "%v", err)
	}
	return c.with(ctx, "dlq show", false, func(b backend) error {
		dl, err := b.DeadLetter(ctx, seq)
		if err != nil {
			return err
		}
		if c.jsonOut() {
			return c.printJSON(dl)
		}
		printDeadLetter(c.stdout, dl)
		return nil
	})
}

func printDeadLetter(w io.Writer, d boxcar.DeadLetter) {
	t := newTable(w, "dead letter", num(d.Seq))
	t.row("state", cell(string(d.State)))
	t.row("subscriber", cell(d.Subscriber))
	t.row("reason", cell(d.Reason))
	t.row("error", cell(d.Error))
	t.row("attempts", strconv.Itoa(d.Attempts))
	t.row("event id", cell(d.EventID))
	t.row("type", cell(d.Type))
	t.row("key", cell(d.Key))
	t.row("schema version", strconv.Itoa(d.SchemaVersion))
	t.row("stream seq", num(d.StreamSeq))
	t.row("outbox seq", num(d.OutboxSeq))
	t.row("published", stamp(d.Created))
	t.row("dead at", stamp(d.DeadAt))
	if a := d.Action; a != nil {
		t.row("action", fmt.Sprintf("%s by %s, %s", cell(a.Action), cell(a.By), stamp(a.At)))
		t.row("why", cell(a.Why))
		if a.OutboxSeq != 0 {
			t.row("copy", "outbox seq "+num(a.OutboxSeq))
		}
	}
	if d.NotRedrivable != "" {
		t.row("not redrivable", cell(d.NotRedrivable))
	}
	t.flush()
	if len(d.History) > 0 {
		fmt.Fprintln(w, "\nattempts:")
		h := newTable(w, "  #", "AT", "ERROR")
		for _, a := range d.History {
			h.row("  "+strconv.Itoa(a.Attempt), a.At.Local().Format("2006-01-02 15:04:05.000"), cell(a.Error))
		}
		h.flush()
	}
	fmt.Fprintf(w, "\nheaders: %d\n", len(d.Headers))
	for _, k := range slices.Sorted(maps.Keys(d.Headers)) {
		fmt.Fprintf(w, "  %s: %s\n", cell(k), cell(d.Headers[k]))
	}
	about, body := renderPayload(d.Data, "  ")
	fmt.Fprintf(w, "\n%s\n%s", about, body)
}

func dlqRedrive(ctx context.Context, c *cli, args []string) int {
	var subscriber, key, why string
	s := spec{name: "dlq redrive", synopsis: "boxcar dlq redrive SEQ | --subscriber S [--key K]  [--why TEXT] [-o json]", json: true,
		about: "Puts copies of dead letters back on the way to their subscriber, through the outbox: one letter (SEQ),\n" +
			"or every pending letter of a subscriber (of one key with --key), in their original order.",
		define: func(fs *flag.FlagSet) {
			fs.StringVar(&subscriber, "subscriber", "", "redrive every pending letter of this subscriber")
			fs.StringVar(&key, "key", "", "with --subscriber: only the letters of this key")
			fs.StringVar(&why, "why", "", "why, recorded with the letters")
		}}
	pos, code, ok := c.parse(s, args)
	if !ok {
		return code
	}
	var seq uint64
	switch {
	case c.explicit["key"] && key == "":
		// --key "$KEY" with KEY unset would redrive every key.
		return c.usageError(s, "--key is empty: give the key, or leave --key out to redrive every key of the subscriber")
	case len(pos) == 1 && subscriber == "" && key == "":
		var err error
		if seq, err = seqArg(pos[0]); err != nil {
			return c.usageError(s, "%v", err)
		}
	case len(pos) == 0 && subscriber != "":
	case len(pos) == 0 && key != "":
		return c.usageError(s, "--key needs --subscriber")
	default:
		return c.usageError(s, "give one SEQ, or --subscriber (and --key), not both")
	}
	return c.with(ctx, "dlq redrive", true, func(b backend) error {
		var res boxcar.RedriveResult
		var err error
		look := "boxcar dlq show " + num(seq)
		if seq != 0 {
			res, err = b.Redrive(ctx, seq, why)
		} else {
			res, err = b.RedriveAll(ctx, subscriber, key, why)
			look = "boxcar dlq ls --subscriber " + cell(subscriber)
		}
		if err != nil {
			return unanswered(err, look)
		}
		if c.jsonOut() {
			return c.printJSON(res)
		}
		seqs := make([]string, len(res.Redriven))
		for i, s := range res.Redriven {
			seqs[i] = num(s)
		}
		fmt.Fprintf(c.stdout, "redriven: %d %s; acted on before, left as they were: %d\n", len(seqs), strings.Join(seqs, " "), res.Done)
		if res.Gone > 0 {
			fmt.Fprintf(c.stdout, "no longer in the dead-letter stream (its retention removed them): %d\n", res.Gone)
		}
		return nil
	})
}

// discardJSON is the admin API's answer to a discard.
type discardJSON struct {
	Discarded bool `json:"discarded"`
}

func dlqDiscard(ctx context.Context, c *cli, args []string) int {
	var why string
	s := spec{name: "dlq discard", synopsis: "boxcar dlq discard SEQ --why TEXT [-o json]", json: true,
		about: "Gives up on a dead letter for good (the head of a parked key releases the events it held).",
		define: func(fs *flag.FlagSet) {
			fs.StringVar(&why, "why", "", "why the event is given up (required: it is recorded)")
		}}
	pos, code, ok := c.parse(s, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return c.usageError(s, "want one SEQ, got %d arguments", len(pos))
	}
	seq, err := seqArg(pos[0])
	if err != nil {
		return c.usageError(s, "%v", err)
	}
	if strings.TrimSpace(why) == "" {
		return c.usageError(s, "--why is required: say why the event is given up")
	}
	return c.with(ctx, "dlq discard", true, func(b backend) error {
		done, err := b.Discard(ctx, seq, why)
		if err != nil {
			return unanswered(err, "boxcar dlq show "+num(seq))
		}
		if c.jsonOut() {
			return c.printJSON(discardJSON{Discarded: done})
		}
		if done {
			fmt.Fprintf(c.stdout, "dead letter %d discarded\n", seq)
		} else {
			fmt.Fprintf(c.stdout, "dead letter %d was redriven or discarded before: nothing done\n", seq)
		}
		return nil
	})
}
