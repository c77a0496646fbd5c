package boxcar

import (
	"math"
	"sync/atomic"
	"time"
)

// Histogram is a distribution of durations, in seconds, counted in fixed
// buckets: Counts[i] counts the observations at or below Bounds[i] and above
// Bounds[i-1]; the last count is of those above the last bound. It is what a
// Prometheus histogram needs (package metrics exports it).
type Histogram struct {
	Bounds []float64 `json:"bounds"` // upper bounds, seconds, ascending
	Counts []uint64  `json:"counts"` // len(Bounds)+1
	Count  uint64    `json:"count"`
	Sum    float64   `json:"sum"` // seconds
}

// Quantile estimates the q-th quantile (0 < q < 1) from the buckets: the
// upper bound of the bucket it falls in (the last bound, for the last
// bucket). 0 with no observation.
func (h Histogram) Quantile(q float64) float64 {
	if h.Count == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.Count)))
	var seen uint64
	for i, c := range h.Counts {
		seen += c
		if seen >= rank {
			if i < len(h.Bounds) {
				return h.Bounds[i]
			}
			break
		}
	}
	return h.Bounds[len(h.Bounds)-1]
}

// durationBounds are the buckets of Boxcar's histograms: from 100 µs to an
// hour, two or three a decade.
var durationBounds = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600}

// histogram counts durations without locks.
type histogram struct {
	counts [21]atomic.Uint64 // len(durationBounds)+1
	count  atomic.Uint64
	sumNS  atomic.Int64
}

func (h *histogram) observe(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(durationBounds) && s > durationBounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.count.Add(1)
	h.sumNS.Add(int64(d))
}

func (h *histogram) snapshot() Histogram {
	out := Histogram{Bounds: durationBounds, Counts: make([]uint64, len(h.counts))}
	for i := range h.counts {
		out.Counts[i] = h.counts[i].Load()
		out.Count += out.Counts[i]
	}
	out.Sum = time.Duration(h.sumNS.Load()).Seconds()
	return out
}
