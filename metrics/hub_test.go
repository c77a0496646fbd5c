package metrics_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/boxcar-bus/boxcar/internal/leaftest"
	"github.com/boxcar-bus/boxcar/metrics"
)

// A leaf of a real 3-node hub exports its link: connected and sourced by
// the hub's aggregate, the source lag, and, with the hub gone, connected 0
// and a growing down time; a bus that is no leaf exports none of it.
func TestHubMetricsOfALeaf(t *testing.T) {
	ctx := t.Context()
	bus, db, h := leaftest.Open(t, "billing")
	reg := prometheus.NewPedanticRegistry()
	if _, err := metrics.Register(reg, bus, metrics.Options{}); err != nil {
		t.Fatal(err)
	}
	b := &bundle{t: t, ctx: ctx, db: db, bus: bus, reg: reg}
	b.publish("order.placed", "a", "b", "c")
	waitFor(t, "the hub to link and source the leaf", func() (bool, string) {
		s := b.gather()
		conn, linked, lag := s.value(t, "boxcar_hub_connected"), s.value(t, "boxcar_hub_linked"), s.value(t, "boxcar_hub_source_lag_events")
		return conn == 1 && linked == 1 && lag == 0, s.names()
	})
	if v := b.gather().value(t, "boxcar_hub_conflict"); v != 0 {
		t.Fatalf("hub_conflict %v on a leaf that joined", v)
	}
	h.Shutdown()
	waitFor(t, "the leaf to see the hub gone", func() (bool, string) {
		s := b.gather()
		return s.value(t, "boxcar_hub_connected") == 0 && s.value(t, "boxcar_hub_down_seconds") > 0, ""
	})

	single := setup(t, metrics.Options{})
	if got := single.gather().series("boxcar_hub_connected"); len(got) != 0 {
		t.Fatalf("a bus that is no leaf exports hub_connected: %v", got)
	}
}
