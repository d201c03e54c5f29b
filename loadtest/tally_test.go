package main

import "testing"

func TestTally(t *testing.T) {
	// ev: "b5" begin at 5, "r9" resync to 9, a number is a frame.
	type want struct{ received, dups, late, skipped, resyncs, lost uint64 }
	// final: the city's acked seqs are 1..final.
	f := func(final uint64, w want, evs ...any) {
		t.Helper()
		acked := seqSet{{1, final}}
		var ta tally
		for _, e := range evs {
			switch e := e.(type) {
			case int:
				ta.frame(uint64(e))
			case [2]any:
				switch e[0] {
				case "begin":
					ta.begin(uint64(e[1].(int)))
				case "resync":
					ta.resync(uint64(e[1].(int)))
				}
			}
		}
		got := want{ta.received, ta.dups, ta.late, ta.skipped(acked), ta.resyncs, ta.lost(acked)}
		if got != w {
			t.Errorf("events %v final %d: got %+v, want %+v", evs, final, got, w)
		}
	}
	b := func(seq int) [2]any { return [2]any{"begin", seq} }
	r := func(seq int) [2]any { return [2]any{"resync", seq} }

	// In order, complete.
	f(5, want{received: 5}, b(0), 1, 2, 3, 4, 5)
	// Frames before begin are not owed and not counted.
	f(5, want{received: 2}, 2, 3, b(3), 4, 5)
	// A gap is lost.
	f(5, want{received: 4, lost: 1}, b(0), 1, 2, 4, 5)
	// The tail not received by the end is lost.
	f(7, want{received: 5, lost: 2}, b(0), 1, 2, 3, 4, 5)
	// A repeated frame is a duplicate, immediately or later.
	f(3, want{received: 3, dups: 2}, b(0), 1, 2, 2, 3, 1)
	// A frame behind a higher one but not seen before is late, not lost.
	f(4, want{received: 4, late: 1}, b(0), 1, 3, 2, 4)
	// ... and a second copy of it is a duplicate.
	f(4, want{received: 4, late: 1, dups: 1}, b(0), 1, 3, 2, 2, 4)
	// A resync replaces frames: skipped, not lost.
	f(20, want{received: 7, late: 3, skipped: 13, resyncs: 1}, b(0), 1, 2, r(15), 16, 20, 17, 18, 19)
	// A frame from before the start is never owed: a duplicate.
	f(3, want{received: 3, dups: 1}, b(10), 11, 12, 13, 10)
	// Past the late window a lower seq cannot be told apart: duplicate.
	f(100, want{received: 2, dups: 1, lost: 98}, b(0), 1, 100, 2)
	// A second begin is ignored (the caller resyncs).
	f(3, want{received: 3}, b(0), 1, b(2), 2, 3)
	// Nothing begun: nothing owed.
	f(9, want{}, 1, 2)
}

func TestTallyWindow(t *testing.T) {
	var ta tally
	ta.begin(0)
	// Receive every even seq up to 2*lateWindow, then the odd ones: those
	// within the window of the last are late, the older ones duplicates.
	for s := uint64(2); s <= 2*lateWindow; s += 2 {
		ta.frame(s)
	}
	for s := uint64(1); s < 2*lateWindow; s += 2 {
		ta.frame(s)
	}
	if ta.late != lateWindow/2 || ta.dups != lateWindow/2 {
		t.Fatalf("late %d dups %d, want %d each", ta.late, ta.dups, lateWindow/2)
	}
}

func TestSeqSet(t *testing.T) {
	var s seqSet
	for _, q := range []uint64{3, 4, 5, 9, 12, 13} {
		s.add(q)
	}
	if want := (seqSet{{3, 5}, {9, 9}, {12, 13}}); len(s) != 3 || s[0] != want[0] || s[1] != want[1] || s[2] != want[2] {
		t.Fatalf("runs %v, want %v", s, want)
	}
	for _, c := range []struct{ lo, hi, want uint64 }{
		{0, 100, 6}, {2, 13, 6}, {3, 13, 5}, {5, 12, 2}, {5, 8, 0}, {9, 9, 0}, {8, 9, 1}, {13, 100, 0}, {4, 4, 0},
	} {
		if got := s.countIn(c.lo, c.hi); got != c.want {
			t.Errorf("countIn(%d, %d) = %d, want %d", c.lo, c.hi, got, c.want)
		}
	}
	if s.last() != 13 || (seqSet{}).last() != 0 {
		t.Fatal("last")
	}
}

// TestTallyCluster: in cluster mode a city's seqs skip (the stream numbers
// every city); only the acked ones are owed.
func TestTallyCluster(t *testing.T) {
	acked := seqSet{{2, 2}, {5, 5}, {9, 9}, {10, 10}, {17, 17}}
	var ta tally
	ta.begin(2)
	for _, q := range []uint64{5, 9, 10, 17} {
		ta.frame(q)
	}
	if ta.owed(acked) != 4 || ta.lost(acked) != 0 || ta.dups != 0 || ta.late != 0 {
		t.Fatalf("owed %d lost %d dups %d late %d", ta.owed(acked), ta.lost(acked), ta.dups, ta.late)
	}
	// A client that missed 10 and was resynced past 9..10 skipped 9 and 10.
	var tb tally
	tb.begin(2)
	tb.frame(5)
	tb.resync(10)
	tb.frame(17)
	if tb.owed(acked) != 2 || tb.lost(acked) != 0 || tb.skipped(acked) != 2 {
		t.Fatalf("owed %d lost %d skipped %d", tb.owed(acked), tb.lost(acked), tb.skipped(acked))
	}
	// One that missed 9 lost it.
	var tc tally
	tc.begin(2)
	for _, q := range []uint64{5, 10, 17} {
		tc.frame(q)
	}
	if tc.lost(acked) != 1 {
		t.Fatalf("lost %d, want 1", tc.lost(acked))
	}
}
