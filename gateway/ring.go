package gateway

import (
	"sync/atomic"

	"github.com/metrocast/metrocast/codec"
)

// frame is one encoded city message. It is immutable once published: every
// subscriber is sent the same b.
type frame struct {
	seq  uint64
	kind codec.Kind
	sev  codec.Severity
	// accepted is when ingest accepted the message (mono): where the
	// end-to-end delivery latency starts.
	accepted int64
	// b is the whole WebSocket frame, header included.
	b []byte
}

// ring holds the latest frames of one city, bounded by count and bytes.
//
// One writer (holding the city lock) appends; event loops read without a
// lock. A frame is stored in its slot before head moves, so a reader that
// loads head sees every frame up to it, and a reader that finds a slot holding
// a different seq (or a seq below tail) knows the writer lapped it.
type ring struct {
	slots []atomic.Pointer[frame]
	mask  uint64
	head  atomic.Uint64 // seq of the newest frame; 0 when empty
	tail  atomic.Uint64 // seq of the oldest frame still held
	// evictions counts frames dropped to make room (the ring lapping its
	// oldest frames), for metrics. Written under the city lock.
	evictions atomic.Uint64

	// Guarded by the city lock.
	bytes    int
	maxBytes int
}

func newRing(size, maxBytes int) *ring {
	n := 1
	for n < size {
		n <<= 1
	}
	r := &ring{slots: make([]atomic.Pointer[frame], n), mask: uint64(n - 1), maxBytes: maxBytes}
	r.tail.Store(1)
	return r
}

// push appends f, whose seq must be head+1, evicting the oldest frames past
// the byte bound. The city lock is held on entry.
func (r *ring) pushLocked(f *frame) {
	slot := &r.slots[f.seq&r.mask]
	if old := slot.Load(); old != nil {
		r.bytes -= len(old.b)
		r.tail.Store(old.seq + 1)
		r.evictions.Add(1)
	}
	slot.Store(f)
	r.bytes += len(f.b)
	r.head.Store(f.seq)
	for t := r.tail.Load(); r.bytes > r.maxBytes && t < f.seq; t++ {
		s := &r.slots[t&r.mask]
		r.bytes -= len(s.Load().b)
		s.Store(nil)
		r.tail.Store(t + 1)
		r.evictions.Add(1)
	}
}

// get returns the frame with the given seq, or nil when the ring no longer
// (or does not yet) hold it. Safe for concurrent use.
func (r *ring) get(seq uint64) *frame {
	if seq < r.tail.Load() {
		return nil
	}
	f := r.slots[seq&r.mask].Load()
	if f == nil || f.seq != seq {
		return nil
	}
	return f
}

// holds reports whether a subscriber whose last seq is cursor can continue
// from the ring without a gap.
func (r *ring) holds(cursor uint64) bool {
	head := r.head.Load()
	return cursor == head || (cursor < head && r.get(cursor+1) != nil)
}
