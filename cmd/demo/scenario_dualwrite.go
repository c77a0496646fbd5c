package main

import "fmt"

// Failure mode 1, lost messages, first pattern: the dual write. The naive
// auth service commits the user row, then publishes UserSignedUp; a crash
// between the two leaves a user whom no service ever hears of. On Boxcar the
// event is an outbox row in the user's transaction: it exists if and only if
// the user does, and the relay sends it after the restart.
var scenarioDualWrite = &scenario{
	num:       1,
	name:      "dual-write",
	failure:   "lost: dual write",
	naiveWay:  "commit, then publish",
	boxcarWay: "the event is an outbox row in the user's transaction",
	wrong:     "signups never emailed",
	fault: func(cfg config) string {
		return fmt.Sprintf("auth, after signup #%d commits", cfg.crashAt())
	},
	point: "auth-committed",
	count: func(o outcome) (int, int) { return o.NotWelcomed, o.Users },
}
