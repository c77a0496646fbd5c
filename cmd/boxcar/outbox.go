package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/boxcar-bus/boxcar"
)

const outboxSynopsis = `boxcar outbox ls [--after SEQ] [--limit N] [-o json]
       boxcar outbox ls --dead [--after SEQ [--after-id ID]] [--limit N] [-o json]`

const outboxAbout = `The events committed but not yet in the stream (pending: the relay is behind, or the app is down),
oldest first, with their age; with --dead, the events the relay set aside because the stream refuses
them for good (too large, bad headers), with why.`

// outboxDeadJSON is the admin API's answer to /api/outbox/dead.
type outboxDeadJSON struct {
	Items []boxcar.OutboxDeadLetter `json:"items"`
	Total int                       `json:"total"`
	More  bool                      `json:"more"`
}

func cmdOutbox(ctx context.Context, c *cli, args []string) int {
	base := spec{name: "outbox", synopsis: outboxSynopsis}
	if len(args) == 0 || args[0] != "ls" && args[0] != "list" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fmt.Fprintf(c.stdout, "usage: %s\n\n%s\n", outboxSynopsis, outboxAbout)
			return exitOK
		}
		return c.usageError(base, "want the subcommand ls")
	}
	var dead bool
	var after int64
	var afterID string
	var limit int
	s := spec{name: "outbox ls", synopsis: outboxSynopsis, about: outboxAbout, json: true,
		define: func(fs *flag.FlagSet) {
			fs.BoolVar(&dead, "dead", false, "list the events the relay set aside (boxcar_outbox_dead)")
			fs.Int64Var(&after, "after", 0, "only events after this outbox seq (the next page)")
			fs.StringVar(&afterID, "after-id", "", "with --dead and --after: the ID printed with the next page's seq")
			fs.IntVar(&limit, "limit", 100, "the most events listed (1 to 1000)")
		}}
	pos, code, ok := c.parse(s, args[1:])
	if !ok {
		return code
	}
	switch {
	case len(pos) > 0:
		return c.usageError(s, "unexpected argument %q", pos[0])
	case limit < 1 || limit > 1000:
		return c.usageError(s, "--limit %d: use 1 to 1000", limit)
	case after < 0:
		return c.usageError(s, "--after %d: a seq is not negative", after)
	case afterID != "" && !dead:
		return c.usageError(s, "--after-id goes with --dead")
	}
	return c.with(ctx, "outbox ls", false, func(b backend) error {
		if dead {
			items, total, more, err := b.OutboxDead(ctx, after, afterID, limit)
			if err != nil {
				return err
			}
			if c.jsonOut() {
				return c.printJSON(outboxDeadJSON{Items: items, Total: total, More: more})
			}
			printOutboxDead(c.stdout, items, total, more)
			return nil
		}
		items, err := b.OutboxPending(ctx, after, limit)
		if err != nil {
			return err
		}
		if c.jsonOut() {
			return c.printJSON(listJSON[boxcar.OutboxEvent]{Items: items})
		}
		printOutbox(c.stdout, items, limit)
		return nil
	})
}

func headerCell(h map[string]string) string {
	if len(h) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(h))
	for _, k := range slices.Sorted(maps.Keys(h)) {
		parts = append(parts, k+"="+h[k])
	}
	return short(strings.Join(parts, " "), 50)
}

func printOutbox(w io.Writer, items []boxcar.OutboxEvent, limit int) {
	if len(items) == 0 {
		fmt.Fprintln(w, "no events pending: the relay has put every committed event in the stream")
		return
	}
	t := newTable(w, "SEQ", "ID", "TYPE", "KEY", "SIZE", "AGE", "HEADERS")
	for _, e := range items {
		t.row(num(e.Seq), cell(e.ID), short(e.Type, 40), short(e.Key, 30), num(int64(e.Size)), dur(e.Age), headerCell(e.Headers))
	}
	t.flush()
	if len(items) == limit {
		fmt.Fprintf(w, "more may follow: --after %d\n", items[len(items)-1].Seq)
	}
}

func printOutboxDead(w io.Writer, items []boxcar.OutboxDeadLetter, total int, more bool) {
	if len(items) == 0 {
		fmt.Fprintf(w, "no events set aside here (%d in all)\n", total)
		return
	}
	t := newTable(w, "SEQ", "ID", "TYPE", "KEY", "SIZE", "REASON", "AGE", "SET ASIDE", "ERROR")
	for _, e := range items {
		t.row(num(e.Seq), cell(e.ID), short(e.Type, 40), short(e.Key, 30), num(int64(len(e.Data))), cell(e.Reason),
			dur(time.Since(e.Created)), ago(e.SetAt), short(e.Error, 60))
	}
	t.flush()
	fmt.Fprintf(w, "%d set aside in all\n", total)
	if more {
		last := items[len(items)-1]
		fmt.Fprintf(w, "more may follow: --after %d --after-id %s\n", last.Seq, cell(last.ID))
	}
}
