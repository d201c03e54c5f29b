package main

import "sync"

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

// spreadHistograms folds every city's frames into start (first − sent) and
// fan (last − first) histograms. Call it once the readers have stopped.
func spreadHistograms(cities []frameSpread) (start, fan *histogram) {
	start, fan = new(histogram), new(histogram)
	for i := range cities {
		for _, a := range cities[i].frames {
			start.record(a.first - a.sent)
			fan.record(a.last - a.first)
		}
	}
	return start, fan
}
