// Command boxcar is the operator's tool of an app built on Boxcar: the
// relay's and every subscriber's state, health as a probe, dead letters
// (list, show, redrive, discard), replays with their progress, the outbox,
// and the schema commands.
//
// It talks to the running app through its admin handler (--url, see
// docs/ADMIN_API.md), or, when the app is down, reads its files (--db and
// --dir) with boxcar.Inspect: read commands work offline, writes need the
// running app. Install it with
//
//	go install github.com/boxcar-bus/boxcar/cmd/boxcar@latest
//
// and run "boxcar help" for the commands.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes.
const (
	exitOK = 0
	// exitUnhealthy: health found a component lagging, stalled, stopped or
	// losing events.
	exitUnhealthy = 1
	// exitUsage: bad arguments or flags, or a write asked of the files of
	// an app that is down.
	exitUsage = 2
	// exitUnreachable: the app's admin handler cannot be reached or does
	// not answer as one, or the app's files cannot be read.
	exitUnreachable = 3
	// exitFailed: the app (or its files) refused or failed the request: an
	// unknown subscriber or dead letter, a refused credential, an invalid
	// request, an internal error.
	exitFailed = 4
	// exitInterrupted: Ctrl-C while watching a replay (which goes on).
	exitInterrupted = 130
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs the command line args (without the program's name) and returns
// the exit code. getenv reads the environment (BOXCAR_URL ...).
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	c := newCLI(getenv, stdout, stderr)
	return c.dispatch(ctx, args)
}
