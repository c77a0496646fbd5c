package proto

import (
	"context"
	"github.com/boxcar-bus/boxcar/internal/hub"
	"testing"
	"time"
)

func TestHubTime(t *testing.T) {
	for i := 0; i < 2; i++ {
		t0 := time.Now()
		h, err := hub.Start(context.Background(), hub.Config{Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("up %v", time.Since(t0))
		t1 := time.Now()
		h.StopAll()
		t.Logf("stop %v", time.Since(t1))
		t1 = time.Now()
		if err := h.RestartAll(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Logf("restart %v", time.Since(t1))
		h.Shutdown()
	}
}
