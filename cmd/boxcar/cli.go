package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/boxcar-bus/boxcar/schema"
)

// command is one command of the dispatcher.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, c *cli, args []string) int
}

// commands are the commands, in the order of the help. (schema and help
// are dispatched before.)
var commands = []command{
	{"status", "the relay and every subscriber, as tables", cmdStatus},
	{"health", "overall state and why; exit 0 when ok, 1 when not (a probe)", cmdHealth},
	{"subscribers", "list subscribers; show, pause, resume or retire one", cmdSubscribers},
	{"dlq", "dead letters: ls, show, redrive, discard", cmdDLQ},
	{"replay", "replay a subscriber's events, with a progress bar", cmdReplay},
	{"outbox", "events waiting in the outbox, or set aside by the relay: ls", cmdOutbox},
	{"schema", "schema registry checks: check, ls, show, diff (offline)", nil},
}

const usageText = `usage: boxcar <command> [arguments] [flags]

commands:
%s
Where the app is (flags or environment; a flag beats the environment):
  running: --url URL         the app's admin handler (BOXCAR_URL), e.g. http://127.0.0.1:8080/admin
           --token TOKEN     its bearer token (BOXCAR_TOKEN): the write token, or the read token
           --operator NAME   who you are, recorded with every write (BOXCAR_OPERATOR, default $USER)
           --timeout D       per request (default 30s)
  down:    --db FILE         the app's SQLite database (BOXCAR_DB); it must exist
           --dir DIR         the app's Config.Dir (BOXCAR_DIR)
           --stream, --subject-prefix, --store-key (BOXCAR_STORE_KEY), --store-cipher:
                             the app's Config values, when not the defaults
  Offline, the read commands read the files; writes need the running app.

Output: -o json (--output json) prints the root package's types as JSON, for scripts.

Exit status: 0 ok; 1 health not ok; 2 usage (or a write with the app down); 3 the app or
its files cannot be reached or read; 4 the app refused or failed the request; 130 Ctrl-C
while watching a replay (the replay goes on).
Run "boxcar <command> -h" for a command's flags.
`

// cli holds what every command uses: the streams, the environment and the
// connection flags.
type cli struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	conn           connFlags
	output         string
	// explicit are the flags set on the command line.
	explicit map[string]bool
	// pollEvery is how often a replay's progress is read (tests lower it).
	pollEvery time.Duration
}

func newCLI(getenv func(string) string, stdout, stderr io.Writer) *cli {
	c := &cli{stdout: stdout, stderr: stderr, getenv: getenv, explicit: map[string]bool{}, pollEvery: time.Second}
	c.conn = connFromEnv(getenv)
	return c
}

func (c *cli) usage(w io.Writer) {
	var b strings.Builder
	for _, cmd := range commands {
		fmt.Fprintf(&b, "  %-12s %s\n", cmd.name, cmd.summary)
	}
	fmt.Fprintf(w, usageText, b.String())
}

// dispatch parses the flags before the command, then runs it.
func (c *cli) dispatch(ctx context.Context, args []string) int {
	root := flag.NewFlagSet("boxcar", flag.ContinueOnError)
	root.SetOutput(c.stderr)
	root.Usage = func() { c.usage(c.stderr) }
	c.conn.define(root)
	root.StringVar(&c.output, "o", c.output, "")
	root.StringVar(&c.output, "output", c.output, "")
	if err := root.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.usage(c.stdout)
			return exitOK
		}
		return exitUsage
	}
	root.Visit(func(f *flag.Flag) { c.explicit[f.Name] = true })
	args = root.Args()
	if len(args) == 0 {
		fmt.Fprintln(c.stderr, "boxcar: no command given")
		c.usage(c.stderr)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "--help":
		return c.help(rest)
	case "schema":
		return schema.Command(ctx, c.stdout, c.stderr, rest)
	}
	i := slices.IndexFunc(commands, func(cmd command) bool { return cmd.name == name })
	if i < 0 {
		fmt.Fprintf(c.stderr, "boxcar: unknown command %q\n\n", name)
		c.usage(c.stderr)
		return exitUsage
	}
	return commands[i].run(ctx, c, rest)
}

func (c *cli) help(args []string) int {
	if len(args) == 0 {
		c.usage(c.stdout)
		return exitOK
	}
	if args[0] == "schema" {
		fmt.Fprint(c.stdout, schema.CommandUsage)
		return exitOK
	}
	for _, cmd := range commands {
		if cmd.name == args[0] {
			return cmd.run(context.Background(), &cli{stdout: c.stdout, stderr: c.stdout, getenv: c.getenv, explicit: map[string]bool{}}, append(args[1:], "-h"))
		}
	}
	fmt.Fprintf(c.stderr, "boxcar help: unknown command %q\n", args[0])
	return exitUsage
}

// spec is one command's (or subcommand's) usage and flags.
type spec struct {
	name     string // "dlq ls"
	synopsis string // what follows "usage: "
	about    string // a paragraph, may be empty
	// json: the command takes -o json.
	json bool
	// define adds the command's own flags.
	define func(fs *flag.FlagSet)
}

// parse parses a command's args (flags anywhere among the positional
// arguments) and returns the positional ones. ok false: return code.
func (c *cli) parse(s spec, args []string) (pos []string, code int, ok bool) {
	fs := flag.NewFlagSet("boxcar "+s.name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	own := map[string]bool{}
	if s.define != nil {
		s.define(fs)
	}
	if s.json {
		fs.StringVar(&c.output, "o", c.output, "output format: text or json")
		fs.StringVar(&c.output, "output", c.output, "output format: text or json")
	}
	fs.VisitAll(func(f *flag.Flag) { own[f.Name] = true })
	c.conn.define(fs)
	fs.Usage = func() { c.commandUsage(c.stderr, s, fs, own) }
	pos, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		c.commandUsage(c.stdout, s, fs, own)
		return nil, exitOK, false
	}
	if err != nil {
		return nil, exitUsage, false
	}
	fs.Visit(func(f *flag.Flag) { c.explicit[f.Name] = true })
	if c.output != "" && c.output != "text" && c.output != "json" {
		return nil, c.usageError(s, "-o %q: use text or json", c.output), false
	}
	return pos, 0, true
}

// usageError prints msg and the command's synopsis, and returns exitUsage.
func (c *cli) usageError(s spec, format string, a ...any) int {
	fmt.Fprintf(c.stderr, "boxcar %s: %s\nusage: %s\n(boxcar %s -h for the flags)\n", s.name, fmt.Sprintf(format, a...), s.synopsis, s.name)
	return exitUsage
}

func (c *cli) commandUsage(w io.Writer, s spec, fs *flag.FlagSet, own map[string]bool) {
	fmt.Fprintf(w, "usage: %s\n", s.synopsis)
	if s.about != "" {
		fmt.Fprintf(w, "\n%s\n", s.about)
	}
	if len(own) > 0 {
		fmt.Fprintln(w, "\nflags:")
	}
	fs.VisitAll(func(f *flag.Flag) {
		if !own[f.Name] || f.Name == "o" {
			return
		}
		typ, help := flag.UnquoteUsage(f)
		name := "--" + f.Name
		if f.Name == "output" {
			name, typ = "-o, --output", "FORMAT"
		}
		fmt.Fprintf(w, "  %s %s\n    \t%s", name, typ, help)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
	fmt.Fprintln(w, "\nand where the app is: --url, --token, --operator (running) or --db, --dir (down): see boxcar help")
}

// parseInterleaved parses flags wherever they are among the positional
// arguments ("dlq show 7 -o json" as well as "dlq show -o json 7").
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
