package schema

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/boxcar-bus/boxcar/sqlite"
)

// Exit codes of the "boxcar schema" commands: Command and the Run
// functions return them.
const (
	// ExitOK: the check found no problem; diff found no breaking change;
	// ls and show printed what was asked.
	ExitOK = 0
	// ExitProblems: the check found problems (an incompatible version, a
	// file that does not load, an example its version rejects, a directory
	// that disagrees with the database); diff found breaking changes.
	ExitProblems = 1
	// ExitUsage: bad arguments, a directory or database that cannot be
	// read, a database without a schema registry, an unknown type or
	// version.
	ExitUsage = 2
)

// CommandUsage is the help of Command.
const CommandUsage = `usage: boxcar schema <command> [arguments]

  check DIR [-db FILE]        check a schema directory: every file loads, each type's versions are
                              compatible under its mode, every example validates; with -db, also
                              that DIR agrees with the registry in that app database (offline)
  ls SRC                      list the types, versions, modes and examples
  show SRC TYPE [VERSION]     print a version's schema (default: the latest) and its examples
  diff SRC TYPE [FROM [TO]]   list the breaking changes between two versions in both directions
                              (default: the latest and the one before)

SRC is a schema directory (DIR/TYPE/N.json) or an app's SQLite database file, read as it is: the
commands never write to it. Exit status: 0 ok, 1 problems (check) or breaking changes (diff), 2 usage
or I/O errors.
`

// Command runs "boxcar schema <command>" with args (what follows "schema"
// on the command line), printing results to stdout and errors to stderr,
// and returns the exit code (ExitOK, ExitProblems, ExitUsage). cmd/boxcar
// wires it as os.Exit(schema.Command(ctx, os.Stdout, os.Stderr,
// os.Args[2:])).
func Command(ctx context.Context, stdout, stderr io.Writer, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, CommandUsage)
		return ExitUsage
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("boxcar schema "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, CommandUsage) }
	var db string
	if sub == "check" {
		fs.StringVar(&db, "db", "", "an app's SQLite database to check the directory against")
	}
	pos, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		return ExitUsage
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "boxcar schema %s: %s\n\n%s", sub, fmt.Sprintf(format, a...), CommandUsage)
		return ExitUsage
	}
	versionArg := func(i int, name string) (int, bool) {
		if len(pos) <= i {
			return 0, true
		}
		n, err := strconv.Atoi(strings.TrimPrefix(pos[i], "v"))
		if err != nil || n < 1 {
			usage("%s %q: a version is a number from 1", name, pos[i])
			return 0, false
		}
		return n, true
	}
	switch sub {
	case "check":
		if len(pos) != 1 {
			return usage("want one directory, got %d arguments", len(pos))
		}
		return RunCheck(ctx, stdout, stderr, pos[0], db)
	case "ls":
		if len(pos) != 1 {
			return usage("want one source (a directory or a database), got %d arguments", len(pos))
		}
		return RunList(ctx, stdout, stderr, pos[0])
	case "show":
		if len(pos) < 2 || len(pos) > 3 {
			return usage("want SRC TYPE [VERSION], got %d arguments", len(pos))
		}
		v, ok := versionArg(2, "VERSION")
		if !ok {
			return ExitUsage
		}
		return RunShow(ctx, stdout, stderr, pos[0], pos[1], v)
	case "diff":
		if len(pos) < 2 || len(pos) > 4 {
			return usage("want SRC TYPE [FROM [TO]], got %d arguments", len(pos))
		}
		from, ok := versionArg(2, "FROM")
		if !ok {
			return ExitUsage
		}
		to, ok := versionArg(3, "TO")
		if !ok {
			return ExitUsage
		}
		return RunDiff(ctx, stdout, stderr, pos[0], pos[1], from, to)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, CommandUsage)
		return ExitOK
	}
	return usage("unknown command %q", sub)
}

// parseInterleaved parses flags wherever they are among the positional
// arguments ("check DIR -db FILE" as well as "check -db FILE DIR").
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

// RunCheck is "boxcar schema check": it checks the schema directory dir
// (CheckDir) and, if dbPath is not empty, checks it against the registry in
// that database as well — the versions registered there are the
// directory's first ones, unchanged, and the directory's new versions would
// register. It prints the report to stdout and returns ExitProblems if it
// found any, ExitUsage if dir or the database cannot be read.
func RunCheck(ctx context.Context, stdout, stderr io.Writer, dir, dbPath string) int {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		fmt.Fprintf(stderr, "boxcar schema check: %s: %s\n", dir, notADir(err))
		return ExitUsage
	}
	var against []*Registry
	if dbPath != "" {
		reg, db, err := openRegistryFile(ctx, dbPath)
		if err != nil {
			fmt.Fprintf(stderr, "boxcar schema check: %v\n", err)
			return ExitUsage
		}
		defer db.Close()
		against = append(against, reg)
	}
	rep := CheckDir(ctx, dir, against...)
	fmt.Fprint(stdout, rep.String())
	if !rep.OK() {
		return ExitProblems
	}
	return ExitOK
}

// RunList is "boxcar schema ls": one line per event type of src (a schema
// directory or a database file) with its versions, mode, latest
// fingerprint and examples.
func RunList(ctx context.Context, stdout, stderr io.Writer, src string) int {
	fail := failer(stderr, "ls")
	v, closeView, err := openView(ctx, src)
	if err != nil {
		return fail(err)
	}
	defer closeView()
	types, err := v.types(ctx)
	if err != nil {
		return fail(err)
	}
	if len(types) == 0 {
		fmt.Fprintf(stdout, "no schemas in %s\n", src)
		return ExitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TYPE\tVERSIONS\tMODE\tLATEST\tEXAMPLES")
	var warnings []string
	for _, typ := range types {
		versions, err := v.Versions(ctx, typ)
		if err != nil {
			return fail(err)
		}
		mode, err := v.mode(ctx, typ)
		if err != nil {
			return fail(err)
		}
		examples := 0
		for _, s := range versions {
			ex, err := v.Examples(ctx, typ, s.Version())
			if err != nil {
				return fail(err)
			}
			examples += len(ex)
			if msg := s.unprovable(); msg != "" {
				warnings = append(warnings, msg)
			}
		}
		latest := versions[len(versions)-1]
		fmt.Fprintf(tw, "%s\t%d\t%s\tv%d sha256:%s\t%d\n", typ, len(versions), mode, latest.Version(), latest.Fingerprint()[:12], examples)
	}
	tw.Flush()
	warn(stderr, "ls", warnings...)
	return ExitOK
}

// warn reports, for command sub, versions the checker cannot reason about
// (Schema.unprovable): on stderr, so that stdout stays what was asked for.
func warn(stderr io.Writer, sub string, msgs ...string) {
	for _, msg := range msgs {
		if msg != "" {
			fmt.Fprintf(stderr, "boxcar schema %s: warning: %s\n", sub, msg)
		}
	}
}

// RunShow is "boxcar schema show": version (0: the latest) of typ in src,
// its mode, its schema as indented JSON and its examples.
func RunShow(ctx context.Context, stdout, stderr io.Writer, src, typ string, version int) int {
	fail := failer(stderr, "show")
	v, closeView, err := openView(ctx, src)
	if err != nil {
		return fail(err)
	}
	defer closeView()
	s, err := v.get(ctx, typ, version)
	if err != nil {
		return fail(err)
	}
	mode, err := v.mode(ctx, typ)
	if err != nil {
		return fail(err)
	}
	examples, err := v.Examples(ctx, typ, s.Version())
	if err != nil {
		return fail(err)
	}
	fmt.Fprintf(stdout, "%s v%d of %s\nmode: %s\nsha256: %s\n", typ, s.Version(), v.where(typ, s.Version()), mode, s.Fingerprint())
	fmt.Fprintln(stdout, indentJSON(s.Canonical()))
	fmt.Fprintf(stdout, "examples: %d\n", len(examples))
	for _, ex := range examples {
		fmt.Fprintf(stdout, "  %s\n", bytes.TrimSpace(ex))
	}
	warn(stderr, "show", s.unprovable())
	return ExitOK
}

// RunDiff is "boxcar schema diff": the breaking changes from version from
// to version to of typ in src, in both directions (Diff). to 0 is the
// latest; from 0 the version before to. It returns ExitProblems if there
// are any.
func RunDiff(ctx context.Context, stdout, stderr io.Writer, src, typ string, from, to int) int {
	fail := failer(stderr, "diff")
	v, closeView, err := openView(ctx, src)
	if err != nil {
		return fail(err)
	}
	defer closeView()
	b, err := v.get(ctx, typ, to)
	if err != nil {
		return fail(err)
	}
	if from == 0 {
		if b.Version() == 1 {
			fmt.Fprintf(stderr, "boxcar schema diff: %s has only version 1 in %s: nothing to compare it with\n", typ, src)
			return ExitUsage
		}
		from = b.Version() - 1
	}
	a, err := v.get(ctx, typ, from)
	if err != nil {
		return fail(err)
	}
	changes := Diff(a, b)
	fmt.Fprintf(stdout, "%s v%d → v%d in %s: ", typ, a.Version(), b.Version(), src)
	if len(changes) == 0 {
		fmt.Fprintln(stdout, "no breaking changes")
		return ExitOK
	}
	fmt.Fprintf(stdout, "%d breaking %s\n%s", len(changes), plural(len(changes), "change", "changes"), FormatChanges(changes))
	return ExitProblems
}

// failer returns a func that reports err for command sub and gives
// ExitUsage.
func failer(stderr io.Writer, sub string) func(err error) int {
	return func(err error) int {
		fmt.Fprintf(stderr, "boxcar schema %s: %v\n", sub, err)
		return ExitUsage
	}
}

func notADir(err error) string {
	if err != nil {
		return err.Error()
	}
	return "not a directory"
}

func indentJSON(raw []byte) string {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return string(raw)
	}
	return b.String()
}

// view is a schema directory or a registry, as the commands read them.
type view interface {
	Get(ctx context.Context, typ string, version int) (*Schema, error)
	Versions(ctx context.Context, typ string) ([]*Schema, error)
	Examples(ctx context.Context, typ string, version int) ([][]byte, error)
	types(ctx context.Context) ([]string, error)
	mode(ctx context.Context, typ string) (Mode, error)
	// get is Get, with version 0 the latest.
	get(ctx context.Context, typ string, version int) (*Schema, error)
	// where names the file or database a version is read from.
	where(typ string, version int) string
}

type dirView struct{ *Set }

func (d dirView) types(context.Context) ([]string, error) { return d.Types(), nil }
func (d dirView) mode(_ context.Context, typ string) (Mode, error) {
	m, _ := d.Mode(typ)
	return m, nil
}
func (d dirView) get(ctx context.Context, typ string, version int) (*Schema, error) {
	if version == 0 {
		return d.Latest(ctx, typ)
	}
	return d.Get(ctx, typ, version)
}
func (d dirView) where(typ string, version int) string { return d.File(typ, version) }

type dbView struct {
	*Registry
	path string
}

func (d dbView) types(ctx context.Context) ([]string, error) { return d.Types(ctx) }
func (d dbView) mode(ctx context.Context, typ string) (Mode, error) {
	return d.Mode(ctx, typ)
}
func (d dbView) get(ctx context.Context, typ string, version int) (*Schema, error) {
	if version == 0 {
		return d.Latest(ctx, typ)
	}
	return d.Get(ctx, typ, version)
}
func (d dbView) where(string, int) string { return d.path }

// openView opens src: a directory is a schema directory, a file an app's
// database.
func openView(ctx context.Context, src string) (view, func(), error) {
	fi, err := os.Stat(src)
	if err != nil {
		return nil, nil, err
	}
	if fi.IsDir() {
		set, err := LoadDir(src)
		if err != nil {
			return nil, nil, err
		}
		return dirView{set}, func() {}, nil
	}
	reg, db, err := openRegistryFile(ctx, src)
	if err != nil {
		return nil, nil, err
	}
	return dbView{reg, src}, func() { db.Close() }, nil
}

// openRegistryFile opens the registry in an existing database file without
// migrating it: the commands read a database (perhaps a running app's, or a
// copy of production's) and never write to it.
func openRegistryFile(ctx context.Context, path string) (*Registry, *sql.DB, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	if fi.IsDir() {
		return nil, nil, fmt.Errorf("%s: a directory, not a database file", path)
	}
	db, err := sqlite.Open(path)
	if err != nil {
		return nil, nil, err
	}
	reg, err := loadRegistry(ctx, db)
	if err != nil {
		db.Close()
		if strings.Contains(err.Error(), "no such table") {
			return nil, nil, fmt.Errorf("%s has no schema registry: open it with boxcar.Open or schema.NewRegistry first", path)
		}
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return reg, db, nil
}
