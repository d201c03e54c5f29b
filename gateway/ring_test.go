package gateway

import (
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
		if _, err := single.publish(&in, time.Now()); err != nil {
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
		sparse.publishSeq(&in, seq, time.Now())
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
