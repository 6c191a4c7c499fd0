package main

import (
	"maps"
	"sync"
	"sync/atomic"
)

// Stats are one process's client-side counts over the measured window.
// Workers send theirs to the coordinator as JSON, which adds them up.
type Stats struct {
	Deliveries  uint64            `json:"deliveries"`  // live updates received
	Replayed    uint64            `json:"replayed"`    // snapshots and resumed updates (published before the join)
	Frames      uint64            `json:"frames"`      // frames that carried at least one update
	FrameMsgs   uint64            `json:"frame_msgs"`  // updates in those frames
	Gaps        uint64            `json:"gaps"`        // prev != the last seq held
	Dups        uint64            `json:"dups"`        // seq <= the last seq held
	NoSeq       uint64            `json:"no_seq"`      // updates without seq (gateway runs without history)
	Joined      uint64            `json:"joined"`      // joined replies
	Left        uint64            `json:"left"`        // left replies
	Errors      map[string]uint64 `json:"errors"`      // error replies by code
	Disconnects map[string]uint64 `json:"disconnects"` // unexpected ends, by close code or error kind
	Reconnects  uint64            `json:"reconnects"`  // planned reconnects done (soak)
	LatCount    uint64            `json:"lat_count"`   // latencies recorded
	LatSumNs    uint64            `json:"lat_sum_ns"`  // their sum
	LatMaxNs    uint64            `json:"lat_max_ns"`  // the largest
	Hist        [][2]uint64       `json:"hist"`        // latency histogram, sparse
	CPUSeconds  float64           `json:"cpu_seconds"` // this process's CPU time in the window
	Established int               `json:"established"` // connections up after the dial phase
	Failed      int               `json:"failed"`      // connections that could not be opened or joined
	Open        int               `json:"open"`        // connections open at the end of the window
}

func (s *Stats) add(o Stats, hist []uint64) {
	s.Deliveries += o.Deliveries
	s.Replayed += o.Replayed
	s.Frames += o.Frames
	s.FrameMsgs += o.FrameMsgs
	s.Gaps += o.Gaps
	s.Dups += o.Dups
	s.NoSeq += o.NoSeq
	s.Joined += o.Joined
	s.Left += o.Left
	s.Reconnects += o.Reconnects
	s.LatCount += o.LatCount
	s.LatSumNs += o.LatSumNs
	s.LatMaxNs = max(s.LatMaxNs, o.LatMaxNs)
	s.CPUSeconds += o.CPUSeconds
	s.Established += o.Established
	s.Failed += o.Failed
	s.Open += o.Open
	s.Errors = addMap(s.Errors, o.Errors)
	s.Disconnects = addMap(s.Disconnects, o.Disconnects)
	dense(o.Hist, hist)
}

func addMap(dst, src map[string]uint64) map[string]uint64 {
	if dst == nil {
		dst = map[string]uint64{}
	}
	for k, v := range src {
		dst[k] += v
	}
	return dst
}

// counters are recorded by many connection goroutines; they are sharded
// by connection so that goroutines on different cores seldom share a
// cache line.
type counters struct {
	deliveries, replayed, frames, frameMsgs atomic.Uint64
	gaps, dups, noSeq, joined, left         atomic.Uint64
	reconnects                              atomic.Uint64
	latCount, latSum, latMax                atomic.Uint64
	hist                                    hist
	_                                       [64]byte
}

const nShards = 16

type recorder struct {
	shards [nShards]counters

	mu          sync.Mutex // guards the rare events below
	errors      map[string]uint64
	disconnects map[string]uint64
}

func newRecorder() *recorder {
	return &recorder{errors: map[string]uint64{}, disconnects: map[string]uint64{}}
}

func (r *recorder) shard(conn int) *counters { return &r.shards[conn%nShards] }

func (r *recorder) errorReply(code string) {
	r.mu.Lock()
	r.errors[code]++
	r.mu.Unlock()
}

func (r *recorder) disconnect(why string) {
	r.mu.Lock()
	r.disconnects[why]++
	r.mu.Unlock()
}

func (c *counters) latency(ns uint64) {
	c.hist.record(ns)
	c.latCount.Add(1)
	c.latSum.Add(ns)
	for {
		m := c.latMax.Load()
		if ns <= m || c.latMax.CompareAndSwap(m, ns) {
			return
		}
	}
}

func (r *recorder) reset() {
	for i := range r.shards {
		c := &r.shards[i]
		for _, a := range []*atomic.Uint64{&c.deliveries, &c.replayed, &c.frames, &c.frameMsgs, &c.gaps, &c.dups,
			&c.noSeq, &c.joined, &c.left, &c.reconnects, &c.latCount, &c.latSum, &c.latMax} {
			a.Store(0)
		}
		c.hist.reset()
	}
	r.mu.Lock()
	clear(r.errors)
	clear(r.disconnects)
	r.mu.Unlock()
}

func (r *recorder) snapshot() Stats {
	var s Stats
	h := make([]uint64, histBuckets)
	for i := range r.shards {
		c := &r.shards[i]
		s.Deliveries += c.deliveries.Load()
		s.Replayed += c.replayed.Load()
		s.Frames += c.frames.Load()
		s.FrameMsgs += c.frameMsgs.Load()
		s.Gaps += c.gaps.Load()
		s.Dups += c.dups.Load()
		s.NoSeq += c.noSeq.Load()
		s.Joined += c.joined.Load()
		s.Left += c.left.Load()
		s.Reconnects += c.reconnects.Load()
		s.LatCount += c.latCount.Load()
		s.LatSumNs += c.latSum.Load()
		s.LatMaxNs = max(s.LatMaxNs, c.latMax.Load())
		c.hist.addTo(h)
	}
	s.Hist = sparse(h)
	r.mu.Lock()
	s.Errors = maps.Clone(r.errors)
	s.Disconnects = maps.Clone(r.disconnects)
	r.mu.Unlock()
	return s
}
