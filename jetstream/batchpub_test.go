package jetstream

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

// setupShared starts a server with a shared event stream (atomic batches)
// whose max message size is 2000 bytes, and a BatchPublisher of origin o1,
// resynced.
func setupShared(t *testing.T) (*BatchPublisher, *bundle) {
	t.Helper()
	ctx := context.Background()
	srv, js, events := startStream(t, true)
	cfg := events.CachedInfo().Config
	cfg.MaxMsgSize = 2000
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	p := NewBatchPublisher(js, events, testLayout, "o1")
	if _, err := p.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	return p, &bundle{srv: srv, events: events}
}

// A refused commit of an atomic batch does not say which message the
// server refused: 10054 when it is the commit message, 10176 "incomplete
// batch" when a staged one was dropped. The error must name that message's
// outbox seq, as a permanent refusal, and the messages before it must be
// stored (once, in order), so that the relay sets aside that event alone.
func TestBatchPublisherNamesTheRefusedMessage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p, b := setupShared(t)
	withBig := func(from, to, big int64) []Outgoing {
		msgs := outgoing(from, to)
		msgs[big-from].Data = []byte(strings.Repeat("9", 3000))
		return msgs
	}
	p.Send(outgoing(1, 2))
	if _, _, err := p.Await(ctx); err != nil {
		t.Fatal(err)
	}
	want := []int64{1, 2}
	for _, tc := range []struct {
		name          string
		from, to, big int64
	}{
		{"refused in the middle", 3, 7, 5},
		{"refused last", 8, 10, 10},
		{"refused first", 11, 13, 11},
	} {
		p.Send(withBig(tc.from, tc.to, tc.big))
		_, _, err := p.Await(ctx)
		var pe *PublishError
		if !errors.As(err, &pe) || pe.Seq != tc.big || !IsPermanent(err) {
			t.Fatalf("%s: Await: %v; want a permanent *PublishError naming outbox seq %d", tc.name, err, tc.big)
		}
		// The relay sets the event aside, resyncs and goes on after it.
		stored := want[len(want)-1]
		if tc.big > tc.from {
			stored = tc.big - 1
		}
		end, err := p.Resync(ctx)
		if err != nil || end.OutboxSeq != stored {
			t.Fatalf("%s: resync: %+v %v; want the end at outbox seq %d, the last event before the refused one", tc.name, end, err, stored)
		}
		if tc.big < tc.to {
			p.Send(outgoing(tc.big+1, tc.to))
			if _, _, err := p.Await(ctx); err != nil {
				t.Fatalf("%s: the events after the refused one: %v", tc.name, err)
			}
		}
		for s := tc.from; s <= tc.to; s++ {
			if s != tc.big {
				want = append(want, s)
			}
		}
		if got := b.streamSeqs(t); !slices.Equal(got, want) {
			t.Fatalf("%s: stream holds outbox seqs %v, want %v: each event but the refused ones, once, in order", tc.name, got, want)
		}
	}

	// A Send behind the refused batch (the relay keeps two in flight) is not
	// sent; the first Await names the refused message.
	p.Send(outgoing(14, 14))
	p.Send(withBig(15, 16, 16))
	p.Send(outgoing(17, 18))
	if _, _, err := p.Await(ctx); err != nil {
		t.Fatal(err)
	}
	_, _, err := p.Await(ctx)
	var pe *PublishError
	if !errors.As(err, &pe) || pe.Seq != 16 || !IsPermanent(err) {
		t.Fatalf("Await: %v; want a permanent *PublishError naming outbox seq 16", err)
	}
	if _, _, err := p.Await(ctx); err == nil {
		t.Fatal("the Send after the refused batch succeeded")
	}
	if got := b.streamSeqs(t); !slices.Equal(got, append(want, 14, 15)) {
		t.Fatalf("stream holds outbox seqs %v, want %v", got, append(want, 14, 15))
	}
}
