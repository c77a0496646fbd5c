package main

import "fmt"

// Failure mode 3, duplicate processing. The naive analytics consumer does
// the right thing in the right order (commit the increment, then ack the
// batch) but keeps no record of what it counted: the crash comes after a
// commit and before the ack, the batch is redelivered and counted again. On
// Boxcar the dedupe row commits with the increment; a redelivered event finds
// it and is acked without running the handler.
var scenarioDedupe = &scenario{
	num:       4,
	name:      "dedupe",
	failure:   "duplicates: redelivery",
	naiveWay:  "ack after commit, no dedupe",
	boxcarWay: "the dedupe row commits with the increment",
	wrong:     "signups counted twice",
	fault: func(cfg config) string {
		return fmt.Sprintf("analytics, after count #%d commits", cfg.crashAt())
	},
	point: "analytics",
	count: func(o outcome) (int, int) { return o.DoubleCounted(), o.Users },
}
