package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/internal/hub"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// boxcar status of a leaf names its topology and instance and shows its
// link to the hub: connected and sourced, then down once the hub is gone.
func TestStatusOfALeafShowsItsHub(t *testing.T) {
	ctx := context.Background()
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
	url, _ := startAdmin(t, bus)
	env := map[string]string{"BOXCAR_URL": url}
	status := func(want string) string {
		deadline := time.Now().Add(time.Minute)
		for {
			r := runCLI(ctx, env, "status")
			if r.code == exitOK || r.code == exitUnhealthy {
				if strings.Contains(r.stdout, want) {
					return r.stdout
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("boxcar status never showed %q: %s", want, r)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	out := status("sourced by")
	if !strings.Contains(out, "leaf, instance billing") || !strings.Contains(out, "hub") || !strings.Contains(out, "connected") {
		t.Fatalf("status of a leaf:\n%s", out)
	}
	h.Shutdown()
	status("DOWN for")
}
