package main

import "sort"

// seqSet is a set of seqs as sorted, disjoint runs [lo, hi]: the seqs a
// publisher was acked for one city. On a single node a city's seqs are
// contiguous (one run); in cluster mode they are the stream's, which
// numbers every city in one sequence, so they skip.
type seqSet [][2]uint64

// add adds seq, which is above every seq in s (acks come in line order).
func (s *seqSet) add(seq uint64) {
	if n := len(*s); n > 0 && (*s)[n-1][1]+1 == seq {
		(*s)[n-1][1] = seq
		return
	}
	*s = append(*s, [2]uint64{seq, seq})
}

// last is the highest seq in s, 0 when empty.
func (s seqSet) last() uint64 {
	if len(s) == 0 {
		return 0
	}
	return s[len(s)-1][1]
}

// countIn is how many seqs of s are in (lo, hi].
func (s seqSet) countIn(lo, hi uint64) uint64 {
	var n uint64
	for i := sort.Search(len(s), func(i int) bool { return s[i][1] > lo }); i < len(s) && s[i][0] <= hi; i++ {
		n += min(s[i][1], hi) - max(s[i][0], lo+1) + 1
	}
	return n
}

// tally is the exact accounting of one client's stream of one city: which
// seqs it was owed and which it got. It is pure bookkeeping on seqs, used by
// the client's reader goroutine only.
//
// The stream starts at the seq of the client's first initial_data (begin).
// From there the client is owed every acked seq of its city, except the
// ones the server deliberately replaced with a fresh initial_data (resync:
// a resume out of the ring, or a conflation of a slow consumer): those are
// counted as skipped, never as lost. A frame missing without such an
// initial_data is lost; a frame received twice is a duplicate.
type tally struct {
	begun bool
	start uint64 // seq of the first initial_data: owed are the seqs after it
	last  uint64 // highest seq received (or resynced to)
	// seen has bit i set when seq last-1-i was received: a frame that
	// arrives late (after a higher seq) is told from a duplicate within
	// this window.
	seen uint64

	received uint64 // distinct owed seqs received
	dups     uint64 // seqs received again (or too late to tell, see frame)
	late     uint64 // seqs received after a higher one (out of order)
	resyncs  uint64 // initial_data (resumed:false) after the first
	// skips are the seqs replaced by resync initial_data: (lo, hi] each.
	skips [][2]uint64
}

// lateWindow is how far back (in seqs) a late frame can be told from a
// duplicate.
const lateWindow = 64

// begin records the first initial_data at seq. It reports false when the
// stream had already begun (the caller should resync instead).
func (t *tally) begin(seq uint64) bool {
	if t.begun {
		return false
	}
	t.begun, t.start, t.last, t.seen = true, seq, seq, 0
	return true
}

// resync records an initial_data that replaces the frames after last up to
// seq: a resume the ring could not serve, or a conflation.
func (t *tally) resync(seq uint64) {
	t.resyncs++
	if seq > t.last {
		t.skips = append(t.skips, [2]uint64{t.last, seq})
		t.last, t.seen = seq, 0
	}
}

// frame records a city frame with seq and reports whether it was new (not a
// duplicate). A frame before begin is ignored: nothing was owed yet.
func (t *tally) frame(seq uint64) bool {
	if !t.begun {
		return false
	}
	switch {
	case seq > t.last:
		k := seq - t.last
		if k > lateWindow {
			t.seen = 0
		} else {
			// The old last becomes last-k: bit k-1.
			t.seen = t.seen<<k | 1<<(k-1)
		}
		t.last = seq
		t.received++
		return true
	case seq == t.last:
		t.dups++
		return false
	}
	d := t.last - seq // ≥ 1: seq is bit d-1
	if d > lateWindow || seq <= t.start {
		// Too old to tell late from repeated, or never owed: either way
		// the server sent something it should not have.
		t.dups++
		return false
	}
	bit := uint64(1) << (d - 1)
	if t.seen&bit != 0 {
		t.dups++
		return false
	}
	t.seen |= bit
	t.late++
	t.received++
	return true
}

// skipped is how many of acked a resync replaced.
func (t *tally) skipped(acked seqSet) uint64 {
	var n uint64
	for _, s := range t.skips {
		n += acked.countIn(s[0], s[1])
	}
	return n
}

// owed is how many frames the client should have received once acked, the
// city's acked seqs, is final.
func (t *tally) owed(acked seqSet) uint64 {
	if !t.begun {
		return 0
	}
	return acked.countIn(t.start, acked.last()) - t.skipped(acked)
}

// lost is the owed frames not received. Frames of another producer on the
// same city would make received exceed owed: those are not negative loss.
func (t *tally) lost(acked seqSet) uint64 {
	if o := t.owed(acked); o > t.received {
		return o - t.received
	}
	return 0
}
