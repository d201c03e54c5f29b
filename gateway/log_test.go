package gateway

import "testing"

func TestThrottle(t *testing.T) {
	th := throttle{period: 10}
	f := func(now int64, wantOK bool, wantDropped uint64) {
		t.Helper()
		ok, dropped := th.allow(now)
		if ok != wantOK || dropped != wantDropped {
			t.Fatalf("allow(%d) = %v, %d; want %v, %d", now, ok, dropped, wantOK, wantDropped)
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
