// Package leaftest is for tests of the packages on top of the root
// (metrics, cmd/boxcar): a bus opened as a leaf (Config.Leaf) of a real
// 3-node hub on 127.0.0.1, with its own database and store, all stopped at
// the end of the test.
package leaftest

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/internal/hub"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// Open starts a hub and opens a bus of instance id as its leaf.
func Open(t *testing.T, id string) (*boxcar.Bus, *sql.DB, *hub.Cluster) {
	t.Helper()
	hctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
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
	bus, err := boxcar.Open(context.Background(), db, boxcar.Config{Dir: filepath.Join(dir, "nats"), InstanceID: id,
		Leaf: &boxcar.LeafConfig{URLs: urls, ReconnectInterval: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := bus.Close(ctx); err != nil {
			t.Errorf("close the leaf's bus: %v", err)
		}
	})
	return bus, db, h
}
