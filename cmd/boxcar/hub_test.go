package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/boxcar-bus/boxcar/internal/leaftest"
)

// boxcar status of a leaf names its topology and instance and shows its
// link to the hub: connected and sourced, then down once the hub is gone.
func TestStatusOfALeafShowsItsHub(t *testing.T) {
	ctx := context.Background()
	bus, _, h := leaftest.Open(t, "billing")
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
