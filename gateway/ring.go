package gateway

import (
	"sort"
	"sync/atomic"

	"github.com/metrocast/metrocast/codec"
)

// frame is one encoded city message. It is immutable once published: every
// subscriber is sent the same b.
type frame struct {
	// pos is the frame's place in its city's ring: 1 for the city's first
	// frame on this node, then +1 per frame. seq is the number clients
	// see. A single node numbers each city 1, 2, 3… and seq == pos; in
	// cluster mode seq is the JetStream stream sequence (the same on every
	// node, increasing per city but with gaps: the stream numbers every
	// city's messages in one sequence), while pos stays contiguous so that
	// the ring and the cursors work the same in both modes.
	pos  uint64
	seq  uint64
	kind codec.Kind
	sev  codec.Severity
	// accepted is when ingest accepted the message (mono): where the
	// end-to-end delivery latency starts.
	accepted int64
	// b is the whole WebSocket frame, header included.
	b []byte
	// sse is the frame as a Server-Sent Event, made on first use
	// (frame.event).
	sse atomic.Pointer[[]byte]
}

// ring holds the latest frames of one city, bounded by count and bytes.
//
// One writer (holding the city lock) appends; event loops read without a
// lock. A frame is stored in its slot before head moves, so a reader that
// loads head sees every frame up to it, and a reader that finds a slot holding
// a different pos (or a pos below tail) knows the writer lapped it.
type ring struct {
	slots []atomic.Pointer[frame]
	mask  uint64
	head  atomic.Uint64 // pos of the newest frame; 0 when empty
	tail  atomic.Uint64 // pos of the oldest frame still held
	// evictions counts frames dropped to make room (the ring lapping its
	// oldest frames), for metrics. Written under the city lock.
	evictions atomic.Uint64

	// Guarded by the city lock.
	bytes    int
	maxBytes int
	// floor is the seq after which the ring is complete: it holds every
	// frame of its city with a seq above floor. It starts at the seq the
	// node's view of the stream begins after (0 for a single node) and
	// rises to the seq of each frame evicted.
	floor uint64
	// sparse is set in cluster mode, where seqs have gaps and a seq above
	// the head is a position in the stream this node has not reached yet
	// rather than a mistake.
	sparse bool
}

func newRing(size, maxBytes int, floor uint64, sparse bool) *ring {
	n := 1
	for n < size {
		n <<= 1
	}
	r := &ring{slots: make([]atomic.Pointer[frame], n), mask: uint64(n - 1), maxBytes: maxBytes, floor: floor, sparse: sparse}
	r.tail.Store(1)
	return r
}

// pushLocked appends f, whose pos must be head+1, evicting the oldest
// frames past the byte bound. The city lock is held on entry.
func (r *ring) pushLocked(f *frame) {
	slot := &r.slots[f.pos&r.mask]
	if old := slot.Load(); old != nil {
		r.evictLocked(old)
	}
	slot.Store(f)
	r.bytes += len(f.b)
	r.head.Store(f.pos)
	for t := r.tail.Load(); r.bytes > r.maxBytes && t < f.pos; t++ {
		s := &r.slots[t&r.mask]
		r.evictLocked(s.Load())
		s.Store(nil)
	}
}

// evictLocked accounts for the oldest frame leaving the ring. The city
// lock is held on entry.
func (r *ring) evictLocked(old *frame) {
	r.bytes -= len(old.b)
	r.floor = max(r.floor, old.seq)
	r.tail.Store(old.pos + 1)
	r.evictions.Add(1)
}

// get returns the frame at pos, or nil when the ring no longer (or does
// not yet) hold it. Safe for concurrent use.
func (r *ring) get(pos uint64) *frame {
	if pos < r.tail.Load() {
		return nil
	}
	f := r.slots[pos&r.mask].Load()
	if f == nil || f.pos != pos {
		return nil
	}
	return f
}

// headSeqLocked returns the seq of the newest frame, or floor when that is
// higher (or the ring is empty): the seq as of which the ring's content is
// the city's whole story. The city lock is held on entry.
func (r *ring) headSeqLocked() uint64 {
	if f := r.get(r.head.Load()); f != nil {
		return max(f.seq, r.floor)
	}
	return r.floor
}

// resumeLocked returns the cursor (a pos) of a subscriber that has seen
// every frame up to seq since, when the ring holds every frame after it:
// the pos of the last frame with a seq at most since. ok is false when
// frames after since may be missing (evicted, or older than the node's view
// of the stream), or, on a single node, when since is beyond the head. The
// city lock is held on entry.
func (r *ring) resumeLocked(since uint64) (pos uint64, ok bool) {
	if since < r.floor {
		return 0, false
	}
	head, tail := r.head.Load(), r.tail.Load()
	if head < tail { // empty
		return head, r.sparse || since == r.floor
	}
	if last := r.get(head); since >= last.seq {
		return head, r.sparse || since == last.seq
	}
	// The last frame at or below since; seqs grow with pos.
	n := int(head - tail + 1)
	i := sort.Search(n, func(i int) bool { return r.get(tail+uint64(i)).seq > since })
	return tail + uint64(i) - 1, true
}
