package limit

import (
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	const sec = int64(time.Second)
	f := func(b *Bucket, now int64, burst int, want bool) {
		t.Helper()
		if got := b.Take(now, sec, burst); got != want {
			t.Fatalf("take at %d (burst %d) = %v, want %v (tat %d)", now, burst, got, want, *b)
		}
	}
	var b Bucket
	// A burst of 3 at once, then one per second.
	f(&b, 100*sec, 3, true)
	f(&b, 100*sec, 3, true)
	f(&b, 100*sec, 3, true)
	f(&b, 100*sec, 3, false)
	f(&b, 100*sec+sec/2, 3, false)
	f(&b, 101*sec, 3, true)
	f(&b, 101*sec, 3, false)
	// Idle time refills up to the burst, not beyond.
	f(&b, 200*sec, 3, true)
	f(&b, 200*sec, 3, true)
	f(&b, 200*sec, 3, true)
	f(&b, 200*sec, 3, false)
	// Burst 1: one per interval.
	var one Bucket
	f(&one, 5*sec, 1, true)
	f(&one, 5*sec, 1, false)
	f(&one, 6*sec, 1, true)

	w := func(b *Bucket, now int64, want int64) {
		t.Helper()
		if got := b.Wait(now, sec, 2); got != want {
			t.Fatalf("wait at %d = %d, want %d", now, got, want)
		}
	}
	var p Bucket
	w(&p, 10*sec, 0)
	w(&p, 10*sec, 0)
	w(&p, 10*sec, sec)
	w(&p, 10*sec, 2*sec)
	w(&p, 20*sec, 0)
}

func TestThrottle(t *testing.T) {
	th := Throttle{Period: 10}
	f := func(now int64, wantOK bool, wantDropped uint64) {
		t.Helper()
		ok, dropped := th.Allow(now)
		if ok != wantOK || dropped != wantDropped {
			t.Fatalf("Allow(%d) = %v, %d; want %v, %d", now, ok, dropped, wantOK, wantDropped)
		}
	}
	f(100, true, 0)
	f(101, false, 0)
	f(109, false, 0)
	f(110, true, 2)
	f(115, false, 0)
	f(200, true, 1)
	f(210, true, 0)
}
