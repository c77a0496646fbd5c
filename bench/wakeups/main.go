// Command wakeups counts the goroutine wake-ups in a runtime execution
// trace (such as the one `go run ./bench -only load -load-trace FILE`
// writes), grouped by where the woken goroutine was blocked and by the
// function that woke it: how bench/RESULTS.md counts wake-ups per event.
//
//	go run ./bench -only load -load-rates 3000 -idle 0 -events 15000 -load-trace /tmp/t.out
//	cd bench/wakeups && go run . -events 15000 /tmp/t.out
//
// It is a module of its own so that the bus does not depend on
// golang.org/x/exp.
package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"slices"
	"strings"

	"golang.org/x/exp/trace"
)

func main() {
	events := flag.Int("events", 0, "events in the traced run: also print wake-ups per event")
	top := flag.Int("top", 30, "rows to print")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: wakeups [-events N] [-top N] trace.out")
		os.Exit(2)
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	counts, total, err := count(f)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d wake-ups", total)
	if *events > 0 {
		fmt.Printf(", %.1f per event", float64(total)/float64(*events))
	}
	fmt.Println()
	type row struct {
		what string
		n    int
	}
	var rows []row
	for k, n := range counts {
		rows = append(rows, row{k, n})
	}
	slices.SortFunc(rows, func(a, b row) int { return cmp.Or(cmp.Compare(b.n, a.n), strings.Compare(a.what, b.what)) })
	for i, r := range rows {
		if i == *top {
			break
		}
		if *events > 0 {
			fmt.Printf("%8d %6.2f  %s\n", r.n, float64(r.n)/float64(*events), r.what)
		} else {
			fmt.Printf("%8d  %s\n", r.n, r.what)
		}
	}
}

// count reads the trace and counts each goroutine's moves from waiting to
// runnable, by "blocked in <frame> <- woken by <frame>".
func count(r io.Reader) (map[string]int, int, error) {
	tr, err := trace.NewReader(r)
	if err != nil {
		return nil, 0, err
	}
	blockedIn := map[trace.GoID]string{}
	counts := map[string]int{}
	total := 0
	for {
		ev, err := tr.ReadEvent()
		if errors.Is(err, io.EOF) {
			return counts, total, nil
		}
		if err != nil {
			return nil, 0, err
		}
		if ev.Kind() != trace.EventStateTransition {
			continue
		}
		st := ev.StateTransition()
		if st.Resource.Kind != trace.ResourceGoroutine {
			continue
		}
		id := st.Resource.Goroutine()
		from, to := st.Goroutine()
		switch {
		case to == trace.GoWaiting:
			blockedIn[id] = firstOwn(st.Stack)
		case from == trace.GoWaiting && to == trace.GoRunnable:
			total++
			where, seen := blockedIn[id]
			if !seen {
				where = "(blocked before the trace began)"
			}
			counts[where+"  <-  "+firstOwn(ev.Stack())]++
		}
	}
}

// firstOwn is the first frame of s outside the runtime, sync, time and
// internal packages: the code that blocked, or that woke a goroutine.
func firstOwn(s trace.Stack) string {
	for fr := range s.Frames() {
		if !strings.HasPrefix(fr.Func, "runtime.") && !strings.HasPrefix(fr.Func, "sync.") &&
			!strings.HasPrefix(fr.Func, "internal/") && !strings.HasPrefix(fr.Func, "time.") {
			return fr.Func
		}
	}
	return "?"
}
