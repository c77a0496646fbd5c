package boxcar

import (
	"cmp"
	"slices"
	"sort"
)

// ackedSet is the set of stream seqs a subscriber acked above its
// consumer's ack floor, as sorted, disjoint, non-adjacent ranges.
//
// A message acked above the floor can come back: its ack was lost (the
// server redelivers it after AckWait), or the consumer was reset to its ack
// floor (at Subscribe after an unclean stop, or to recover a consumer an
// operator deleted). Delivering it to the handler again would repeat a
// plain handler's side effect, out of order. Acks of one key go in order and
// different keys interleave, so the set is a few ranges with gaps where
// messages are still held: its size is bounded by the messages in flight,
// not by how many were acked. Ranges at or below the server's ack floor are
// trimmed, since the server never redelivers those.
type ackedSet struct {
	r [][2]uint64 // [from, to], sorted
}

// add puts seq in the set.
func (s *ackedSet) add(seq uint64) {
	// i is the first range that ends at or after seq-1 (it may take seq).
	i := sort.Search(len(s.r), func(i int) bool { return s.r[i][1]+1 >= seq })
	switch {
	case i < len(s.r) && s.r[i][0] <= seq && seq <= s.r[i][1]:
		return // already in
	case i < len(s.r) && s.r[i][1]+1 == seq:
		s.r[i][1] = seq // extends range i up
		if i+1 < len(s.r) && s.r[i+1][0] == seq+1 {
			s.r[i][1] = s.r[i+1][1] // and joins the next
			s.r = append(s.r[:i+1], s.r[i+2:]...)
		}
	case i < len(s.r) && s.r[i][0] == seq+1:
		s.r[i][0] = seq // extends range i down
	default:
		s.r = append(s.r, [2]uint64{})
		copy(s.r[i+1:], s.r[i:])
		s.r[i] = [2]uint64{seq, seq}
	}
}

// has reports whether seq is in the set.
func (s *ackedSet) has(seq uint64) bool {
	i := sort.Search(len(s.r), func(i int) bool { return s.r[i][1] >= seq })
	return i < len(s.r) && s.r[i][0] <= seq
}

// trim drops every seq at or below floor.
func (s *ackedSet) trim(floor uint64) {
	i := sort.Search(len(s.r), func(i int) bool { return s.r[i][1] > floor })
	s.r = append(s.r[:0], s.r[i:]...)
	if len(s.r) > 0 && s.r[0][0] <= floor {
		s.r[0][0] = floor + 1
	}
}

// count is how many seqs in [from, to] the set holds.
func (s *ackedSet) count(from, to uint64) uint64 {
	var n uint64
	for _, r := range s.r {
		lo, hi := max(r[0], from), min(r[1], to)
		if lo <= hi {
			n += hi - lo + 1
		}
	}
	return n
}

// load replaces the set with ranges (as ranges returned them; sorted and
// merged again, whatever they are).
func (s *ackedSet) load(ranges [][2]uint64) {
	rs := slices.Clone(ranges)
	rs = slices.DeleteFunc(rs, func(r [2]uint64) bool { return r[0] > r[1] })
	slices.SortFunc(rs, func(a, b [2]uint64) int { return cmp.Compare(a[0], b[0]) })
	s.r = s.r[:0]
	for _, r := range rs {
		if n := len(s.r); n > 0 && r[0] <= s.r[n-1][1]+1 {
			s.r[n-1][1] = max(s.r[n-1][1], r[1])
			continue
		}
		s.r = append(s.r, r)
	}
}

// ranges returns a copy of the set's ranges.
func (s *ackedSet) ranges() [][2]uint64 { return append([][2]uint64(nil), s.r...) }

// contiguousFrom returns the last seq of the run of seqs in the set that
// starts at from (from-1 if from is not in the set).
func (s *ackedSet) contiguousFrom(from uint64) uint64 {
	i := sort.Search(len(s.r), func(i int) bool { return s.r[i][1] >= from })
	if i < len(s.r) && s.r[i][0] <= from {
		return s.r[i][1]
	}
	return from - 1
}
