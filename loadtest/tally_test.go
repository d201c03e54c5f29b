package main

import "testing"

func TestTally(t *testing.T) {
	// ev: "b5" begin at 5, "r9" resync to 9, a number is a frame.
	type want struct{ received, dups, late, skipped, resyncs, lost uint64 }
	f := func(final uint64, w want, evs ...any) {
		t.Helper()
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
		got := want{ta.received, ta.dups, ta.late, ta.skipped, ta.resyncs, ta.lost(final)}
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
