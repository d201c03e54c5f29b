package main

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestHistogramBuckets(t *testing.T) {
	// Every value falls in a bucket whose upper bound is ≥ it and at most
	// 1/32 above it (exact below 64).
	f := func(v int64) {
		t.Helper()
		hi := bucketHigh(bucketOf(v))
		if hi < v || float64(hi-v) > float64(v)/subBuckets {
			t.Errorf("value %d: bucket %d high %d", v, bucketOf(v), hi)
		}
	}
	for v := range int64(5000) {
		f(v)
	}
	for _, v := range []int64{1 << 20, 1<<20 + 1, 1e9, 1e12, 1<<62 - 1} {
		f(v)
	}
	if bucketOf(-5) != 0 {
		t.Error("negative values go to bucket 0")
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	vals := make([]int64, 10_000)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range vals {
		vals[i] = r.Int64N(100_000_000) // up to 100 ms in ns
		h.record(vals[i])
	}
	slices.Sort(vals)
	s := h.snapshot()
	if s.total != uint64(len(vals)) {
		t.Fatalf("total %d", s.total)
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
		exact := vals[int(q*float64(len(vals)))-1]
		got := s.quantile(q)
		if got < exact || float64(got-exact) > float64(exact)/subBuckets+1 {
			t.Errorf("q%.3f: got %d, exact %d", q, got, exact)
		}
	}
	var empty histogram
	if empty.snapshot().quantile(0.99) != 0 {
		t.Error("empty histogram: quantile should be 0")
	}
}

func TestHistogramSparseRoundTrip(t *testing.T) {
	var a, b histogram
	for _, v := range []int64{0, 1, 63, 64, 1000, 1e6, 1e6, 5e9} {
		a.record(v)
	}
	b.add(a.sparse())
	b.add(a.sparse())
	sa, sb := a.snapshot(), b.snapshot()
	if sb.total != 2*sa.total || sb.max != sa.max || sb.quantile(0.5) != sa.quantile(0.5) {
		t.Fatalf("merged: total %d max %d p50 %d; want %d %d %d",
			sb.total, sb.max, sb.quantile(0.5), 2*sa.total, sa.max, sa.quantile(0.5))
	}
	b.add(sparse{{1 << 40, 7}}) // out of range: ignored
	if b.snapshot().total != sb.total {
		t.Fatal("an out-of-range bucket was counted")
	}
}
