package main

import "fmt"

// Failure mode 1, lost messages, second pattern: acknowledging before
// processing. The naive billing consumer uses AckNone, JetStream's
// auto-commit: a delivered message is done, so a crash in the middle of a
// batch loses the rest of it. On Boxcar the ack follows the handler's commit;
// the restarted subscriber gets every unacked event again.
var scenarioAutoAck = &scenario{
	num:       2,
	name:      "auto-ack",
	failure:   "lost: ack before processing",
	naiveWay:  "AckNone (auto-ack)",
	boxcarWay: "the ack follows the handler's commit",
	wrong:     "signups never billed",
	fault: func(cfg config) string {
		return fmt.Sprintf("billing, handling event #%d", cfg.crashAt())
	},
	point: "billing",
	count: func(o outcome) (int, int) { return o.NotBilled, o.Users },
}
