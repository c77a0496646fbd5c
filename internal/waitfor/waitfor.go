// Package waitfor is the tests' poll for a condition.
package waitfor

import (
	"testing"
	"time"
)

// Cond polls cond every interval until it holds, failing the test once
// limit has passed. The limit is a liveness bound (the test's deadline
// budget), not a performance assertion.
func Cond(t testing.TB, what string, limit, every time.Duration, cond func() (ok bool, state string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s; last state: %s", limit, what, state)
		}
		time.Sleep(every)
	}
}
