package gateway

import (
	"testing"
	"time"
	"unsafe"
)

// TestConnSize keeps conn within the 128-byte allocation class: tens of
// thousands of idle connections hold one each, so a field that pushes it
// over costs 16 bytes or more per connection.
func TestConnSize(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 128 {
		t.Fatalf("conn is %d bytes, over the 128-byte size class", n)
	}
}

// TestMsSince: the time since a reading of msClock, across the clock's
// wrap, and 0 when the wall clock stepped back past the reading (it made
// every connection that had just read look silent for 49 days, closed as
// idle at its next visit).
func TestMsSince(t *testing.T) {
	const ms = int64(time.Millisecond)
	wrap := int64(1<<32) * ms // msClock wraps here
	for _, c := range []struct {
		now, at int64
		want    time.Duration
	}{
		{now: 5000 * ms, at: 2000 * ms, want: 3 * time.Second},
		{now: wrap + 1000*ms, at: wrap - 500*ms, want: 1500 * time.Millisecond},
		{now: 2000 * ms, at: 5000 * ms, want: 0},          // stepped back
		{now: wrap - 500*ms, at: wrap + 1000*ms, want: 0}, // back across the wrap
		{now: 24 * time.Hour.Milliseconds() * ms, at: 0, want: 24 * time.Hour},
	} {
		if got := msSince(c.now, msClock(c.at)); got != c.want {
			t.Errorf("msSince(%d ms, msClock(%d ms)) = %s, want %s", c.now/ms, c.at/ms, got, c.want)
		}
	}
}
