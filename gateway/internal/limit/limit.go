// Package limit holds the small limiters the node's packages share: a
// token bucket in one int64, and a throttle for repeated warnings.
package limit

import (
	"log/slog"
	"sync/atomic"
	"time"
)

// Bucket is a token bucket in one int64 (GCRA, the generic cell rate
// algorithm): it holds the theoretical arrival time of the next event, in
// Unix nanoseconds. An event at now conforms when it is at most
// interval×(burst−1) ahead of now; each conforming event moves the time on
// by interval. The same as a bucket of burst tokens refilled one per
// interval, for 8 bytes per connection. The zero value is a full bucket.
// Not safe for concurrent use: each has one owner.
type Bucket int64

// Take reports whether an event at now conforms, and counts it if so.
func (b *Bucket) Take(now, interval int64, burst int) bool {
	tat := max(int64(*b), now)
	if tat-now > interval*int64(burst-1) {
		return false
	}
	*b = Bucket(tat + interval)
	return true
}

// Wait is how long an event at now must wait to conform (0: it does now);
// the event is counted as happening then.
func (b *Bucket) Wait(now, interval int64, burst int) int64 {
	tat := max(int64(*b), now)
	d := max(tat-now-interval*int64(burst-1), 0)
	*b = Bucket(tat + interval)
	return d
}

// WarnEvery is how often a repeated warning is logged: the counters carry
// the volume, the log says that it happens.
const WarnEvery = 10 * time.Second

// Throttle lets one of a repeated warning through per Period and counts
// those it holds back. The zero value lets everything through; set
// Period. Safe for concurrent use.
type Throttle struct {
	Period  time.Duration
	next    atomic.Int64 // the time from which the next one may pass
	dropped atomic.Uint64
}

// Allow reports whether a warning may be logged at now (nanoseconds on a
// clock of the caller's, the same for every call), and how many were held
// back since the last one that was.
func (t *Throttle) Allow(now int64) (ok bool, dropped uint64) {
	next := t.next.Load()
	if now < next || !t.next.CompareAndSwap(next, now+int64(t.Period)) {
		t.dropped.Add(1)
		return false, 0
	}
	return true, t.dropped.Swap(0)
}

// start is the origin of Warn's monotonic clock.
var start = time.Now()

// Warn logs msg to l unless t holds it back, adding how many were held
// back since the last one logged. Safe for concurrent use.
func (t *Throttle) Warn(l *slog.Logger, msg string, args ...any) {
	ok, dropped := t.Allow(int64(time.Since(start)))
	if !ok {
		return
	}
	if dropped > 0 {
		args = append(args, "suppressed", dropped)
	}
	l.Warn(msg, args...)
}
