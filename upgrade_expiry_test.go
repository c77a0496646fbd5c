package boxcar

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	bjs "github.com/boxcar-bus/boxcar/jetstream"
)

// expiringJS simulates Config.Retention expiring the old stream's oldest
// message right after the upgrade read the old stream's info (a store with
// steady traffic has a message reaching MaxAge every moment; the staging of
// a large stream takes seconds).
type expiringJS struct {
	jetstream.JetStream
	once  sync.Once
	calls int
	t     *testing.T
}

func (e *expiringJS) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	s, err := e.JetStream.Stream(ctx, name)
	if err != nil || name != DefaultStream {
		return s, err
	}
	if v, _, _ := bjs.StreamLayout(s.CachedInfo().Config); v != 1 {
		return s, err
	}
	if e.calls++; e.calls < 2 {
		return s, nil // EnsureStreams' look
	}
	e.once.Do(func() {
		first := s.CachedInfo().State.FirstSeq
		if derr := s.DeleteMsg(ctx, first); derr != nil {
			e.t.Errorf("expire seq %d: %v", first, derr)
		}
		e.t.Logf("old stream seq %d expired after its info was read", first)
	})
	return s, nil
}

// An old event reaching Retention while the upgrade stages the old stream
// (on a busy store there is always one) made the first Open fail with
// "staged 49 of the stream's 50 messages": the count was the one read before
// staging. Now what expired meanwhile need not be staged.
func TestUpgradeGoesOnWhenAnOldEventExpiresDuringStaging(t *testing.T) {
	tb := setup(t, Config{})

	makeLegacyStore(t, tb, 30, 20, storeJS(t, tb))
	cfg := tb.cfg
	cfg.seams = &testSeams{wrapJetStream: func(js jetstream.JetStream) jetstream.JetStream { return &expiringJS{JetStream: js, t: t} }}
	bus, err := Open(context.Background(), tb.db, cfg)
	if err != nil {
		if strings.Contains(err.Error(), "staged") {
			if bus2, err2 := Open(context.Background(), tb.db, tb.cfg); err2 != nil {
				t.Errorf("and the second Open too: %v", err2)
			} else {
				t.Logf("the second Open succeeded")
				bus2.Close(context.Background())
			}
			t.Fatalf("the first Open after the upgrade failed because one old event expired meanwhile: %v", err)
		}
		t.Fatalf("open: %v", err)
	}
	bus.Close(context.Background())
}
