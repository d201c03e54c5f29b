package gateway

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/metrocast/metrocast/codec"
)

// TestFanoutStartSpread: successive frames start the fanout all over the
// list, each place about as often as the others.
func TestFanoutStartSpread(t *testing.T) {
	f := func(n, frames int) {
		t.Helper()
		counts := make([]int, n)
		for head := uint64(1); head <= uint64(frames); head++ {
			i := fanoutStart(head, n)
			if i < 0 || i >= n {
				t.Fatalf("fanoutStart(%d, %d) = %d, out of range", head, n, i)
			}
			counts[i]++
		}
		want := frames / n
		for i, c := range counts {
			if c < want-2 || c > want+2 {
				t.Fatalf("n=%d, %d frames: place %d starts %d fanouts, want %d±2 (%v)", n, frames, i, c, want, counts)
			}
		}
	}
	f(1, 10)
	f(2, 1000)
	f(7, 7000)
	f(2500, 250_000)
	f(5000, 50_000)
}

// TestFanoutFair: a city's subscribers on one loop are written in a
// different order for each frame, so that none is always last. The order
// is read from the kernel's receive timestamps on the clients' sockets.
func TestFanoutFair(t *testing.T) {
	t.Parallel()
	const (
		n      = 8
		frames = 24
	)
	s := startServer(t, Config{Loops: 1})
	p := dialProducer(t, s)
	p.Publish(t, dataLine("fair", "data_update", `{"a":0}`))
	readers := make([]*stampedReader, n)
	conns := make([]*rawConn, n)
	for i := range readers {
		r := dialFollowing(t, s, "fair")
		sr, err := stamped(r)
		if err != nil {
			t.Fatal(err)
		}
		readers[i], conns[i] = sr, r
	}
	waitStamping(t)
	last := make([]int, n) // frames each client got last
	first := make([]int, n)
	for k := 1; k <= frames; k++ {
		p.Publish(t, dataLine("fair", "data_update", `{"a":`+strconv.Itoa(k)+`}`))
		at := make([]time.Time, n)
		for i, sr := range readers {
			_ = conns[i].c.SetReadDeadline(time.Now().Add(readTimeout))
			b, t0, err := sr.next()
			if err != nil {
				t.Fatalf("client %d, frame %d: %v", i, k, err)
			}
			if m, err := parseMsg(b[2:]); err != nil || m.Type != "data_update" {
				t.Fatalf("client %d, frame %d: %q, want one data_update", i, k, b)
			}
			at[i] = t0
		}
		byTime := make([]int, n)
		for i := range byTime {
			byTime[i] = i
		}
		slices.SortFunc(byTime, func(a, b int) int { return at[a].Compare(at[b]) })
		first[byTime[0]]++
		last[byTime[n-1]]++
	}
	t.Logf("frames each client got first: %v, last: %v", first, last)
	for i := range n {
		if last[i] > frames/4 || first[i] > frames/4 {
			t.Errorf("client %d was first %d and last %d times of %d frames, want each at most %d", i, first[i], last[i], frames, frames/4)
		}
	}
}

// TestFanoutTakesLateFrames: a frame that comes while a fanout is under
// way goes to the subscribers not written yet in the same write as the
// frame being fanned out, not a whole fanout later: two frames to n
// subscribers take fewer than 2n writes (metrocast_delivery_writes_total),
// where they took 2n when each fanout went up to the head as of its start.
// The second frame is published once the loop has made the first
// fanout's first delivery. A round counts only if the second frame was in
// the ring while at least two subscribers were still to be written (the
// deliveries made by then, read after the publish, say so): one of them
// is then written after it, whatever the machine's load. A round whose
// second frame came too late (the publishing goroutine was not scheduled
// in time) is made again.
func TestFanoutTakesLateFrames(t *testing.T) {
	const (
		n      = 400
		rounds = 100
	)
	s := startServer(t, Config{Loops: 1})
	publish := func(k int) error {
		in := codec.Ingest{City: "late", Kind: codec.KindDataUpdate, Data: fmt.Appendf(nil, `{"k":%d}`, k)}
		_, err := s.publish(&in, time.Now())
		return err
	}
	if err := publish(0); err != nil {
		t.Fatal(err)
	}
	conns := make([]*rawConn, n)
	for i := range conns {
		conns[i] = dialFollowing(t, s, "late")
	}
	l := (*s.loops.Load())[0]
	for round := range rounds {
		deliveries, writes := l.stats.deliveries.Load(), l.stats.writes.Load()
		type published struct {
			written uint64 // deliveries made by the time the second frame was in the ring
			err     error
		}
		late := make(chan published, 1)
		go func() {
			for stop := time.Now().Add(longTimeout); l.stats.deliveries.Load() == deliveries; {
				if time.Now().After(stop) {
					late <- published{err: errors.New("the first frame's fanout never began")}
					return
				}
				runtime.Gosched()
			}
			err := publish(2*round + 2)
			late <- published{l.stats.deliveries.Load() - deliveries, err}
		}()
		if err := publish(2*round + 1); err != nil {
			t.Fatal(err)
		}
		second := <-late
		if second.err != nil {
			t.Fatal(second.err)
		}
		for i, r := range conns {
			for k := range 2 {
				m := r.msgType(t, "data_update")
				if want := fmt.Sprintf(`{"k":%d}`, 2*round+1+k); string(m.Data) != want {
					t.Fatalf("round %d, client %d: %s, want data %s", round, i, m.Raw, want)
				}
			}
		}
		if d := l.stats.deliveries.Load() - deliveries; d != 2*n {
			t.Fatalf("round %d: %d deliveries, want %d", round, d, 2*n)
		}
		if second.written >= n-1 {
			continue // the second frame came as the fanout ended
		}
		w := l.stats.writes.Load() - writes
		t.Logf("round %d: the second frame came after %d of %d deliveries; the two frames took %d writes", round, second.written, n, w)
		if w >= 2*n {
			t.Fatalf("a frame that came while %d subscribers were still to be written was not sent with the frame before it: %d writes for %d deliveries", n-second.written, w, 2*n)
		}
		return
	}
	t.Skipf("in %d rounds the second frame never came during the fanout (a machine too loaded to schedule its publisher in time)", rounds)
}
