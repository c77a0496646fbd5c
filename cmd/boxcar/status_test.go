package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/boxcar-bus/boxcar"
)

// After a failed WAL fsync the status says so in the relay's table and,
// through Health, in its reasons; on a sound disk it says nothing of it.
func TestStatusShowsAFailedWALFsync(t *testing.T) {
	reason := "no outbox event is published, no transactional ack is sent: sqlite: an fsync of the WAL failed: input/output error"
	h := boxcar.Health{State: boxcar.HealthStopped, At: time.Now(), Components: []boxcar.ComponentHealth{
		{Component: "relay", State: boxcar.HealthStopped, Reasons: []string{reason}},
		{Component: "outbox", State: boxcar.HealthOK},
	}}
	var out bytes.Buffer
	printStatus(&out, "app.db", false, boxcar.Stats{WALSyncFailed: "sqlite: an fsync of the WAL failed: input/output error"}, h, nil)
	for _, want := range []string{"WAL fsync", "FAILED: no outbox event is published, no transactional ack is sent", "docs/RUNBOOK.md#disk-fsync", reason} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	printStatus(&out, "app.db", false, boxcar.Stats{}, boxcar.Health{State: boxcar.HealthOK, At: time.Now()}, nil)
	if strings.Contains(out.String(), "WAL fsync") {
		t.Errorf("a sound disk's status mentions the WAL fsync:\n%s", out.String())
	}
}
