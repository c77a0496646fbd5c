package metrics_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/internal/hub"
	"github.com/boxcar-bus/boxcar/metrics"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// A leaf of a real 3-node hub exports its link: connected and sourced by
// the hub's aggregate, the source lag, and, with the hub gone, connected 0
// and a growing down time; a bus that is no leaf exports none of it.
func TestHubMetricsOfALeaf(t *testing.T) {
	ctx := t.Context()
	hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	h, err := hub.Start(hctx, hub.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Shutdown)
	var urls []string
	for _, u := range h.LeafURLs() {
		urls = append(urls, u.String())
	}
	dir := t.TempDir()
	db, err := sqlite.Open(filepath.Join(dir, "app.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	bus, err := boxcar.Open(ctx, db, boxcar.Config{Dir: filepath.Join(dir, "nats"), InstanceID: "billing",
		Leaf: &boxcar.LeafConfig{URLs: urls, ReconnectInterval: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		bus.Close(cctx)
	})
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
