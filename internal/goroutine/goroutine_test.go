package goroutine

import (
	"sync"
	"testing"
)

// IDs are the runtime's, and differ between goroutines that live together.
func TestID(t *testing.T) {
	if !fastChecked() {
		t.Log("the fast goroutine ID disagrees with the runtime's on this Go version: using the slow one")
	}
	if ID() != slowID() {
		t.Fatalf("ID %d, the runtime says %d", ID(), slowID())
	}
	const n = 50
	ids := make(chan int64, n)
	var wg, hold sync.WaitGroup
	hold.Add(1)
	for range n {
		wg.Go(func() {
			ids <- ID()
			hold.Wait() // all alive at once: their IDs must differ
		})
	}
	seen := map[int64]bool{ID(): true}
	for range n {
		id := <-ids
		if seen[id] {
			t.Fatalf("two live goroutines share ID %d", id)
		}
		seen[id] = true
	}
	hold.Done()
	wg.Wait()
}

func fastChecked() bool {
	ID()
	return fast
}

func BenchmarkID(b *testing.B) {
	for b.Loop() {
		ID()
	}
}
