package metrics

import (
	"maps"
	"testing"

	"github.com/boxcar-bus/boxcar"
)

// TestCumulative checks the conversion of Boxcar's per-bucket counts into
// Prometheus's cumulative buckets, and the refusal of malformed ones.
func TestCumulative(t *testing.T) {
	t.Parallel()
	// 1 at or below 0.1, none in (0.1, 1], 2 in (1, 10], 4 above 10.
	h := boxcar.Histogram{Bounds: []float64{0.1, 1, 10}, Counts: []uint64{1, 0, 2, 4}, Count: 7, Sum: 99}
	count, buckets, err := cumulative(h)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[float64]uint64{0.1: 1, 1: 1, 10: 3}; count != 7 || !maps.Equal(buckets, want) {
		t.Errorf("cumulative = %d %v, want 7 %v", count, buckets, want)
	}
	// A count read apart from the buckets: +Inf follows the buckets.
	h.Count = 5
	if count, _, _ := cumulative(h); count != 7 {
		t.Errorf("count %d, want 7 (the sum of the buckets)", count)
	}
	// No observation yet.
	if count, buckets, err := cumulative(boxcar.Histogram{Bounds: []float64{1, 2}}); err != nil || count != 0 || len(buckets) != 2 {
		t.Errorf("empty histogram = %d %v %v", count, buckets, err)
	}
	for what, bad := range map[string]boxcar.Histogram{
		"a count short":      {Bounds: []float64{1, 2}, Counts: []uint64{1, 1}, Count: 2},
		"bounds descending":  {Bounds: []float64{2, 1}, Counts: []uint64{1, 1, 1}, Count: 3},
		"a bound repeated":   {Bounds: []float64{1, 1}, Counts: []uint64{1, 1, 1}, Count: 3},
		"counts, no bounds ": {Counts: []uint64{1, 1}, Count: 2},
	} {
		if _, _, err := cumulative(bad); err == nil {
			t.Errorf("%s: no error", what)
		}
	}
}
