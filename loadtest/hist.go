package main

import (
	"math/bits"
	"sync/atomic"
)

// histogram is a log-linear histogram of non-negative int64 values: exact
// below 64, then 32 linear buckets per power of two, so a bucket is at most
// 1/32 (≈3%) wide relative to its values. That is ample for latency
// percentiles and needs no dependency (HdrHistogram would do the same with
// more knobs). record is lock-free and safe for concurrent use.
type histogram struct {
	counts [64 * subBuckets]atomic.Uint64
}

const (
	subBits    = 5
	subBuckets = 1 << subBits
)

func bucketOf(v int64) int {
	if v < 0 {
		v = 0
	}
	u := uint64(v)
	if u < 2*subBuckets {
		return int(u)
	}
	shift := bits.Len64(u) - subBits - 1
	return shift*subBuckets + int(u>>shift)
}

// bucketHigh is the largest value that falls in bucket i.
func bucketHigh(i int) int64 {
	if i < 2*subBuckets {
		return int64(i)
	}
	shift := i/subBuckets - 1
	low := uint64(i-shift*subBuckets) << shift
	return int64(low + (1 << shift) - 1)
}

func (h *histogram) record(v int64) { h.counts[bucketOf(v)].Add(1) }

// snapshot is a histogram copied for reading.
type snapshot struct {
	counts []uint64
	total  uint64
	max    int64
}

func (h *histogram) snapshot() snapshot {
	s := snapshot{counts: make([]uint64, len(h.counts))}
	for i := range h.counts {
		n := h.counts[i].Load()
		s.counts[i] = n
		s.total += n
		if n > 0 {
			s.max = bucketHigh(i)
		}
	}
	return s
}

// quantile returns the upper bound of the bucket holding the q-th value
// (0 < q ≤ 1): never below the true quantile, at most ~3% above.
func (s snapshot) quantile(q float64) int64 {
	if s.total == 0 {
		return 0
	}
	rank := uint64(q*float64(s.total) + 0.5)
	rank = max(rank, 1)
	var seen uint64
	for i, n := range s.counts {
		if seen += n; seen >= rank {
			return bucketHigh(i)
		}
	}
	return s.max
}

// sparse is a histogram's non-empty buckets, as [bucket, count] pairs: how
// workers send theirs to the coordinator.
type sparse [][2]uint64

func (h *histogram) sparse() sparse {
	var s sparse
	for i := range h.counts {
		if n := h.counts[i].Load(); n > 0 {
			s = append(s, [2]uint64{uint64(i), n})
		}
	}
	return s
}

// add merges s into h. Buckets out of range (a corrupt message) are
// ignored.
func (h *histogram) add(s sparse) {
	for _, p := range s {
		if p[0] < uint64(len(h.counts)) {
			h.counts[p[0]].Add(p[1])
		}
	}
}
