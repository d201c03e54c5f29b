package gateway

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/metrocast/metrocast/codec"
)

// TestRingResume checks where a subscriber resuming after a seq continues,
// on a single node (contiguous seqs) and in cluster mode (the stream's
// seqs, with gaps, and a floor where the node's view of the stream
// begins).
func TestRingResume(t *testing.T) {
	cfg := Config{RingSize: 4}.WithDefaults()
	in := codec.Ingest{City: "r", Kind: codec.KindDataUpdate, Data: []byte(`{"a":1}`)}
	f := func(c *city, since uint64, wantPos uint64, wantOK bool) {
		t.Helper()
		pos, ok := c.resume(since)
		if ok != wantOK || ok && pos != wantPos {
			t.Fatalf("resume(%d) = %d, %v; want %d, %v", since, pos, ok, wantPos, wantOK)
		}
	}

	single := newCity("r", &cfg, 1, 0, false)
	f(single, 0, 0, true)
	f(single, 1, 0, false) // beyond the head: not a seq of this node
	for range 6 {          // seqs 1-6; a ring of 4 keeps 3-6
		if _, err := single.append(&in, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	f(single, 1, 0, false)
	f(single, 2, 2, true) // the frame after it, 3, is held
	f(single, 5, 5, true)
	f(single, 6, 6, true)
	f(single, 7, 0, false)

	// Cluster mode: the node began reading after stream seq 100.
	sparse := newCity("r", &cfg, 1, 100, true)
	f(sparse, 99, 0, false) // older than the node's view: ask the stream
	f(sparse, 100, 0, true)
	f(sparse, 150, 0, true) // no frame of this city yet
	for _, seq := range []uint64{103, 110, 111, 140, 170, 171} {
		sparse.appendSeq(&in, seq, time.Now())
	}
	// Positions 3-6 (seqs 111, 140, 170, 171) are held; 103 and 110 were
	// evicted, so the ring vouches for what follows 110.
	f(sparse, 100, 0, false)
	f(sparse, 109, 0, false)
	f(sparse, 110, 2, true)
	f(sparse, 111, 3, true)
	f(sparse, 139, 3, true) // between frames: continue after 111
	f(sparse, 170, 5, true)
	f(sparse, 171, 6, true)
	f(sparse, 500, 6, true) // ahead of this node: continue as frames arrive
	if got := sparse.initialFrame(1).seq; got != 171 {
		t.Fatalf("initial_data seq %d, want 171", got)
	}
	sparse.raiseFloor(140)
	f(sparse, 139, 0, false)
	f(sparse, 140, 4, true)
}

// TestRingMemory checks a ring's slots and its account of the node's ring
// memory: no slots before the first frame, slots that grow with the frames
// up to ring_size with every frame still readable, an account that is
// always the frames' and slots' size, and a trim that frees it all and
// leaves the seqs going on.
func TestRingMemory(t *testing.T) {
	cfg := Config{RingSize: 64}.WithDefaults()
	var mem atomic.Int64
	c := newCity("m", &cfg, 1, 0, false)
	c.ring.mem = &mem
	in := codec.Ingest{City: "m", Kind: codec.KindDataUpdate, Data: []byte(`{"a":1}`)}
	r := c.ring
	check := func(wantSlots int) {
		t.Helper()
		b := r.buf.Load()
		if got := slotCount(b); got != wantSlots {
			t.Fatalf("%d slots, want %d", got, wantSlots)
		}
		want := slotBytes * int64(slotCount(b))
		for pos := r.tail.Load(); pos <= r.head.Load(); pos++ {
			f := r.get(pos)
			if f == nil || f.pos != pos {
				t.Fatalf("frame %d not held (tail %d, head %d)", pos, r.tail.Load(), r.head.Load())
			}
			want += int64(cap(f.b)) + frameOverhead
		}
		if got := mem.Load(); got != want {
			t.Fatalf("ring memory %d, want %d", got, want)
		}
	}
	check(0)
	for i := 1; i <= 100; i++ {
		if _, err := c.append(&in, time.Now()); err != nil {
			t.Fatal(err)
		}
		slots := minSlots
		for slots < min(i, 64) {
			slots *= 2
		}
		check(slots)
	}
	if tail := r.tail.Load(); tail != 100-64+1 {
		t.Fatalf("tail %d, want %d: a full ring laps", tail, 100-64+1)
	}
	if n := c.trim(1); n != 1 || r.floor != 37 {
		t.Fatalf("trim(1) dropped %d frames, floor %d; want 1 and 37", n, r.floor)
	}
	check(64)
	if n := c.trim(trimAll); n != 63 {
		t.Fatalf("trim dropped %d frames, want 63", n)
	}
	check(0)
	if r.get(r.head.Load()) != nil {
		t.Fatal("a trimmed ring still gives its head frame")
	}
	if f, _ := c.append(&in, time.Now()); f.seq != 101 {
		t.Fatalf("seq %d after a trim, want 101", f.seq)
	}
	check(minSlots)
}
