package main

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// row is one scenario's line in the final table.
type row struct {
	sc            *scenario
	fault         string
	naive, boxcar sideResult
}

// allZero reports whether every check of a Boxcar run is exact, not only
// its scenario's: Boxcar runs all three services in every scenario.
func allZero(o outcome) bool {
	return o.NotWelcomed == 0 && o.NotBilled == 0 && o.StaleEmail == 0 && o.DoubleCounted() == 0
}

// printTable writes the final table, then how Boxcar contained each fault,
// with the bus's own numbers from its last process.
func printTable(w io.Writer, rows []row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tfailure mode (article)\tfault (1-4: a SIGKILL of a real process)\tthe naive way\tnaive got wrong\tBoxcar")
	fmt.Fprintln(tw, "-\t----------------------\t-----------------------------------------\t-------------\t---------------\t------")
	for _, r := range rows {
		nw, nof := r.sc.count(r.naive.out)
		bw, bof := r.sc.count(r.boxcar.out)
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d of %d %s\t%d of %d\n", r.sc.num, r.sc.failure, r.fault, r.sc.naiveWay, nw, nof, r.sc.wrong, bw, bof)
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "How Boxcar contained it:")
	for _, r := range rows {
		fmt.Fprintf(w, "%d  %s: %s\n", r.sc.num, r.sc.boxcarWay, boxcarNote(r))
		for _, side := range []struct {
			name string
			res  sideResult
		}{{"naive", r.naive}, {"Boxcar", r.boxcar}} {
			for i, n := range side.res.notes {
				label := ""
				if i == 0 {
					label = side.name + ":"
				}
				fmt.Fprintf(w, "   %-7s %s\n", label, n)
			}
		}
	}
	fmt.Fprintln(w)
	clean := true
	for _, r := range rows {
		if o := r.boxcar.out; !allZero(o) {
			clean = false
			fmt.Fprintf(w, "scenario %d: Boxcar NOT exact: %d not emailed, %d not billed, %d stale addresses, counter off by %d\n",
				r.sc.num, o.NotWelcomed, o.NotBilled, o.StaleEmail, o.DoubleCounted())
		}
	}
	if clean {
		fmt.Fprintln(w, "Boxcar ran email, analytics and billing in every scenario; all four checks (emailed, billed,")
		fmt.Fprintln(w, "billing address, signup counter) were exact in every run, not only the scenario's own.")
	}
}

// boxcarNote says what the bus's numbers show for a scenario.
func boxcarNote(r row) string {
	s := r.boxcar.stats
	switch r.sc {
	case scenarioDualWrite:
		return fmt.Sprintf("%d event(s) still in the outbox at the kill were relayed after the restart", s["relayed"])
	case scenarioAutoAck:
		return fmt.Sprintf("after the restart billing got its unacked events again: %d handled, %d found done in the dedupe table",
			s["billing_handled"], s["billing_skipped"])
	case scenarioReorder:
		return fmt.Sprintf("the relay stopped at the first failed publish and resent from there (%d failed round(s))", s["relay_failures"])
	case scenarioDedupe:
		return fmt.Sprintf("after the restart %d redelivered events were found in the dedupe table and skipped", s["analytics_skipped"])
	case scenarioOps:
		return fmt.Sprintf("%d keys parked behind their dead letter, holding %d later events; after the fix the redrive released %d in their original order; a replay without dedupe rebuilt billing into a fresh table: %d rows, as the live table's %d, %d differ",
			s["parked_keys"], s["held"], s["redriven"], s["rebuilt_rows"], s["live_rows"], s["differ"])
	case scenarioSchemaDrift:
		return fmt.Sprintf("%d v1 events (%d from before the rename, %d from an old producer instance after it) reached the v2 consumers through the upcaster, beside %d v2 events; %d handler calls failed",
			s["v1_before"]+s["v1_after"], s["v1_before"], s["v1_after"], s["v2_events"], s["failures"])
	}
	return ""
}
