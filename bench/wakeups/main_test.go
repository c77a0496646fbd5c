package main

import (
	"bytes"
	"runtime/trace"
	"strings"
	"testing"
)

//go:noinline
func waitFor(ch <-chan struct{}) { <-ch }

//go:noinline
func wake(ch chan<- struct{}) { ch <- struct{}{} }

// 200 hand-offs between wake and waitFor are counted under those two
// functions: each wakes whichever side blocked first.
func TestCountsWakeUpsByWhereTheyBlockedAndWhoWoke(t *testing.T) {
	const n = 200
	var buf bytes.Buffer
	if err := trace.Start(&buf); err != nil {
		t.Fatal(err)
	}
	ch := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range n {
			waitFor(ch)
		}
	}()
	for range n {
		wake(ch)
	}
	<-done
	trace.Stop()

	counts, total, err := count(&buf)
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for k, c := range counts {
		if strings.HasSuffix(strings.Split(k, "  <-  ")[0], ".waitFor") && strings.HasSuffix(k, ".wake") {
			got += c
		}
	}
	// A send that finds the receiver already waiting wakes it; one that
	// comes first blocks the sender instead, and the receiver wakes it.
	// Either way each of the n hand-offs wakes one of the two.
	back := 0
	for k, c := range counts {
		if strings.HasSuffix(strings.Split(k, "  <-  ")[0], ".wake") && strings.HasSuffix(k, ".waitFor") {
			back += c
		}
	}
	if got+back < n || got == 0 || total < got+back {
		t.Fatalf("waitFor <- wake: %d, wake <- waitFor: %d, of %d hand-offs (total %d)\n%v", got, back, n, total, counts)
	}
}
