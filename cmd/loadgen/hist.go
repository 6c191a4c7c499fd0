package main

import (
	"math/bits"
	"sync/atomic"
)

// Latencies go into a fixed log-linear histogram: values below 32 ns get a
// bucket each, above that every power of two is split into 32 buckets, so
// a bucket is at most about 3% wide. Recording is one atomic add and the
// memory is fixed whatever the run length.
const (
	histSub     = 32 // buckets per power of two
	histSubBits = 5
	histBuckets = 64 * histSub
)

func histIndex(v uint64) int {
	if v < histSub {
		return int(v)
	}
	e := bits.Len64(v) - histSubBits - 1
	return (e+1)*histSub + int(v>>e) - histSub
}

// histValue returns the middle of bucket i.
func histValue(i int) uint64 {
	if i < histSub {
		return uint64(i)
	}
	e := i/histSub - 1
	m := uint64(i%histSub + histSub)
	lo := m << e
	return lo + (uint64(1)<<e)/2
}

// hist is safe for concurrent recording.
type hist struct {
	counts [histBuckets]atomic.Uint64
}

func (h *hist) record(v uint64) { h.counts[histIndex(v)].Add(1) }

func (h *hist) reset() {
	for i := range h.counts {
		h.counts[i].Store(0)
	}
}

// addTo adds the counts into dst (len histBuckets).
func (h *hist) addTo(dst []uint64) {
	for i := range h.counts {
		dst[i] += h.counts[i].Load()
	}
}

// quantile returns the value at quantile q (0..1) of counts, 0 if empty.
func quantile(counts []uint64, q float64) uint64 {
	var total uint64
	for _, c := range counts {
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := uint64(q*float64(total-1)) + 1
	var seen uint64
	for i, c := range counts {
		seen += c
		if seen >= rank {
			return histValue(i)
		}
	}
	return histValue(len(counts) - 1)
}

// sparse turns counts into [index, count] pairs, for the workers' reports.
func sparse(counts []uint64) [][2]uint64 {
	var out [][2]uint64
	for i, c := range counts {
		if c > 0 {
			out = append(out, [2]uint64{uint64(i), c})
		}
	}
	return out
}

func dense(pairs [][2]uint64, dst []uint64) {
	for _, p := range pairs {
		if p[0] < uint64(len(dst)) {
			dst[p[0]] += p[1]
		}
	}
}
