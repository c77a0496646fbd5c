package boxcar

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// The ranges agree with a plain set through adds in any order and trims,
// and stay few: one per gap.
func TestAckedSet(t *testing.T) {
	t.Parallel()
	var s ackedSet
	want := map[uint64]bool{}
	rng := rand.New(rand.NewPCG(1, 2))
	floor := uint64(0)
	for step := range 20_000 {
		seq := floor + 1 + uint64(rng.IntN(300))
		s.add(seq)
		want[seq] = true
		if step%1000 == 999 {
			floor += 150
			s.trim(floor)
			for k := range want {
				if k <= floor {
					delete(want, k)
				}
			}
		}
		if step%97 == 0 {
			for q := floor; q < floor+310; q++ {
				if s.has(q) != want[q] {
					t.Fatalf("step %d: has(%d) = %v, want %v (ranges %v)", step, q, s.has(q), want[q], s.r)
				}
			}
		}
	}
	for i := 1; i < len(s.r); i++ {
		if s.r[i-1][1]+1 >= s.r[i][0] {
			t.Fatalf("ranges %v and %v touch or overlap: they should have merged", s.r[i-1], s.r[i])
		}
	}
	if len(s.r) > 300 {
		t.Fatalf("%d ranges for seqs within 300 of the floor", len(s.r))
	}
	var l ackedSet
	l.load([][2]uint64{{10, 12}, {1, 3}, {4, 5}, {11, 20}, {30, 29}})
	if got := fmt.Sprint(l.r); got != "[[1 5] [10 20]]" {
		t.Fatalf("load merged to %s, want [[1 5] [10 20]]", got)
	}
	var c ackedSet
	for _, q := range []uint64{5, 6, 7, 9, 10, 20} {
		c.add(q)
	}
	if got := c.count(6, 10); got != 4 {
		t.Fatalf("count(6, 10) = %d, want 4", got)
	}
	if got := c.contiguousFrom(5); got != 7 {
		t.Fatalf("contiguousFrom(5) = %d, want 7", got)
	}
	if got := c.contiguousFrom(8); got != 7 {
		t.Fatalf("contiguousFrom(8) = %d, want 7 (8 is not in the set)", got)
	}
}

// The acked set against a map, over random adds and trims: membership, the
// ranges' shape (disjoint, not adjacent, ordered) and contiguousFrom.
func TestAckedSetMatchesAMap(t *testing.T) {
	t.Parallel()
	seed := rand.Uint64()
	r := rand.New(rand.NewPCG(seed, 0))
	for round := range 2000 {
		var s ackedSet
		m := map[uint64]bool{}
		floor := uint64(0)
		for range 200 {
			if r.IntN(10) == 0 {
				floor = max(floor, uint64(r.IntN(60)))
				s.trim(floor)
				for k := range m {
					if k <= floor {
						delete(m, k)
					}
				}
			} else if v := uint64(r.IntN(64) + 1); v > floor {
				s.add(v)
				m[v] = true
			}
			for v := range uint64(70) {
				if s.has(v) != m[v] {
					t.Fatalf("seed %d round %d: has(%d)=%v, want %v; ranges %v", seed, round, v, s.has(v), m[v], s.r)
				}
			}
			for j := 1; j < len(s.r); j++ {
				if s.r[j][0] <= s.r[j-1][1]+1 {
					t.Fatalf("seed %d: ranges not disjoint, ordered and apart: %v", seed, s.r)
				}
			}
			want := floor
			for m[want+1] {
				want++
			}
			if got := s.contiguousFrom(floor + 1); got != want {
				t.Fatalf("seed %d: contiguousFrom(%d)=%d, want %d; %v", seed, floor+1, got, want, s.r)
			}
		}
	}
}
