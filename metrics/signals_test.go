package metrics_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/metrics"
)

// These tests check that the signals the alerts and the runbook rely on
// show what they say, on a real bus.

// TestStuckWriterShows leaves an app transaction open after a write (the
// leak of docs/RUNBOOK.md#stuck-writer): writer_held_seconds grows and a
// Publish behind it is counted in writers_waiting; the rollback frees both.
func TestStuckWriterShows(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	if _, err := b.db.ExecContext(b.ctx, `CREATE TABLE notes (body TEXT)`); err != nil {
		t.Fatal(err)
	}
	tx, err := b.db.BeginTx(b.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(b.ctx, `INSERT INTO notes VALUES ('left open')`); err != nil {
		t.Fatal(err)
	}
	published := make(chan error, 1)
	go func() {
		published <- b.bus.Publish(context.Background(), boxcar.Event{Type: typOrder, Key: "k", Data: []byte(`{}`)})
	}()
	var held float64
	waitFor(t, "the writer held and a write waiting", func() (bool, string) {
		s := b.gather()
		h, w := s.value(t, "boxcar_writer_held_seconds"), s.value(t, "boxcar_writers_waiting")
		ok := h > held && held > 0 && w >= 1 // held grows from one scrape to the next
		held = h
		return ok, fmt.Sprintf("held %vs, waiting %v", h, w)
	})
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := <-published; err != nil {
		t.Fatalf("the Publish behind the leaked transaction: %v", err)
	}
	waitFor(t, "the writer free", func() (bool, string) {
		s := b.gather()
		h, w := s.value(t, "boxcar_writer_held_seconds"), s.value(t, "boxcar_writers_waiting")
		return h == 0 && w == 0, fmt.Sprintf("held %vs, waiting %v", h, w)
	})
}

// TestReplayWithDedupeCountsSkipped replays a TxHandler subscriber from the
// stream's start with dedupe on (the recovery replay of the runbook): every
// event is found in the dedupe table, counted as skipped, and the handler
// does not run again.
func TestReplayWithDedupeCountsSkipped(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	if _, err := b.db.ExecContext(b.ctx, `CREATE TABLE applied (id TEXT PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	_, err := b.bus.Subscribe(b.ctx, "projector", boxcar.TxHandler(func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO applied VALUES (?)`, m.ID) // fails if applied twice
		return err
	}), boxcar.SubscribeOptions{Types: []string{typOrder}})
	if err != nil {
		t.Fatal(err)
	}
	b.publish(typOrder, keys("k", 8)...)
	b.waitIdle("projector", 8, 0)
	st, err := b.bus.Replay(b.ctx, boxcar.ReplayRequest{Subscriber: "projector", From: boxcar.ReplayFrom{StreamSeq: 1}, By: "test", Why: "rehearsal"})
	if err != nil {
		t.Fatal(err)
	}
	label := "subscriber=projector"
	waitFor(t, "the replay skipped", func() (bool, string) {
		s := b.gather()
		skipped := s.value(t, "boxcar_subscriber_handled_total", label, "result=skipped")
		return skipped == 8, fmt.Sprintf("skipped %v (replay %+v)", skipped, st)
	})
	s := b.gather()
	wantValues(t, s, map[string]float64{"boxcar_subscriber_handled_total": 8}, label, "result=ok")
	wantValues(t, s, map[string]float64{"boxcar_subscriber_handled_total": 0}, label, "result=failed")
	var n int
	if err := b.db.QueryRowContext(b.ctx, `SELECT count(*) FROM applied`).Scan(&n); err != nil || n != 8 {
		t.Errorf("applied rows %d, %v; want 8 (none twice)", n, err)
	}
}
