package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/admin/client"
)

// jsonOut reports whether -o json was asked for.
func (c *cli) jsonOut() bool { return c.output == "json" }

// printJSON writes v as indented JSON: the root package's types with their
// json tags, as the admin API answers them.
func (c *cli) printJSON(v any) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	_, err := c.stdout.Write(jsonSafe(b.Bytes()))
	return err
}

// table writes aligned columns; every cell goes through cell or short.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	t.row(header...)
	return t
}

// row writes one row of cells that are already safe.
func (t *table) row(cells ...string) { fmt.Fprintln(t.tw, strings.Join(cells, "\t")) }

func (t *table) flush() { t.tw.Flush() }

// dur formats a duration for a person: rounded, "-" when zero.
func dur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < 24*time.Hour:
		return d.Round(time.Second).String()
	}
	return fmt.Sprintf("%dd%s", d/(24*time.Hour), (d % (24 * time.Hour)).Round(time.Minute))
}

// ago formats how long ago t was; "-" for the zero time.
func ago(t time.Time) string {
	if t.IsZero() || t.Unix() <= 0 {
		return "-"
	}
	d := time.Since(t)
	if d < 0 {
		return "in " + dur(-d)
	}
	return dur(d) + " ago"
}

// stamp formats a time with how long ago it was.
func stamp(t time.Time) string {
	if t.IsZero() || t.Unix() <= 0 {
		return "-"
	}
	return t.Local().Format(time.RFC3339) + " (" + ago(t) + ")"
}

func num[T ~int | ~int64 | ~uint64](n T) string { return fmt.Sprint(n) }

// fail reports err for command name and returns its exit code.
func (c *cli) fail(name string, err error) int {
	code := exitCode(err)
	msg := err.Error()
	var apiErr *client.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.Code {
		case "unauthorized":
			msg += "; give the admin handler's token: --token or BOXCAR_TOKEN"
		case "forbidden":
			msg += "; the token is wrong, or (for a write) the handler has no write token and is read-only"
		case "read_only":
			msg += "; the admin handler is on a read-only bus (boxcar.Inspect)"
		}
	}
	if errors.Is(err, errUsage) {
		msg = strings.TrimPrefix(msg, errUsage.Error()+": ")
	}
	text, _ := escapeText(msg)
	fmt.Fprintf(c.stderr, "boxcar %s: %s\n", name, strings.ReplaceAll(text, "\n", `\n`))
	if errors.Is(err, errUsage) {
		fmt.Fprintf(c.stderr, "usage: see boxcar %s -h, and boxcar help for where the app is\n", name)
	}
	return code
}

// exitCode is the exit status of an error.
func exitCode(err error) int {
	var apiErr *client.APIError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errUsage), errors.Is(err, errOffline):
		return exitUsage
	case errors.As(err, &apiErr):
		if apiErr.Code == "closed" {
			return exitUnreachable
		}
		return exitFailed
	case errors.Is(err, client.ErrUnreachable), errors.Is(err, client.ErrUnexpectedResponse),
		errors.Is(err, errCannotOpen), errors.Is(err, boxcar.ErrClosed):
		return exitUnreachable
	}
	return exitFailed
}
