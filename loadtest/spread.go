package main

import (
	"sync"

	"github.com/metrocast/metrocast/loadtest/result"
)

// frameSpread tracks, per frame of one city, when the first and the last
// subscriber received it (kernel timestamps). The first arrival minus the
// send time is the wake path (ingest read, publish, loop wake-up); last
// minus first is the fanout itself. That tells the two apart when the
// latency misses its target.
type frameSpread struct {
	mu     sync.Mutex
	frames map[uint64]*arrivals
}

type arrivals struct{ sent, first, last int64 }

func (f *frameSpread) note(seq uint64, sent, at int64) {
	f.mu.Lock()
	a := f.frames[seq]
	if a == nil {
		if f.frames == nil {
			f.frames = make(map[uint64]*arrivals)
		}
		a = &arrivals{sent: sent, first: at, last: at}
		f.frames[seq] = a
	}
	a.first = min(a.first, at)
	a.last = max(a.last, at)
	f.mu.Unlock()
}

// spreadFrame is one frame's arrivals as a worker reports them.
type spreadFrame struct {
	City  int    `json:"c"`
	Seq   uint64 `json:"s"`
	Sent  int64  `json:"t"`
	First int64  `json:"f"`
	Last  int64  `json:"l"`
}

// mergeSpread folds the workers' frames (a frame's subscribers may sit in
// several workers) into start (first − sent) and fan (last − first)
// histograms.
func mergeSpread(frames []spreadFrame) result.Spread {
	type key struct {
		city int
		seq  uint64
	}
	all := make(map[key]*arrivals)
	for _, f := range frames {
		k := key{f.City, f.Seq}
		if a := all[k]; a != nil {
			a.first = min(a.first, f.First)
			a.last = max(a.last, f.Last)
		} else {
			all[k] = &arrivals{sent: f.Sent, first: f.First, last: f.Last}
		}
	}
	var start, fan histogram
	for _, a := range all {
		start.record(a.first - a.sent)
		fan.record(a.last - a.first)
	}
	s, f := summarize(&start), summarize(&fan)
	return result.Spread{Frames: s.Count, FirstP50: s.P50, FirstP99: s.P99, FirstMax: s.Max,
		FanP50: f.P50, FanP99: f.P99, FanMax: f.Max}
}
