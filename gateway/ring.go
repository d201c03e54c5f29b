package gateway

import (
	"sort"
	"sync/atomic"
	"unsafe"

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
	// (frame.event); evictedEvent once the frame left its ring.
	sse atomic.Pointer[[]byte]
}

// ring holds the latest frames of one city, bounded by count and bytes.
//
// One writer (holding the city lock) appends; event loops read without a
// lock. A frame is stored in its slot before head moves, so a reader that
// loads head sees every frame up to it, and a reader that finds a slot holding
// a different pos (or a pos below tail) knows the writer lapped it.
//
// The slots are allocated on the first frame, a few at first, doubling
// while the ring fills up to its size: a city without frames (one a client
// subscribed to before any data, or one the node's ring memory budget
// trimmed) holds no slots, and a quiet one few. A growing ring copies its
// frames into new slots and swaps them in before head moves on; readers
// holding the old slots find them unchanged (nothing is written there
// after the swap), so they read either.
type ring struct {
	buf  atomic.Pointer[slots]
	head atomic.Uint64 // pos of the newest frame; 0 when empty
	tail atomic.Uint64 // pos of the oldest frame still held
	// evictions counts frames dropped to make room (the ring lapping its
	// oldest frames, or the node's ring memory budget), for metrics.
	// Written under the city lock.
	evictions atomic.Uint64

	// Guarded by the city lock.
	bytes    int
	maxBytes int
	size     int // the most slots: RingSize, a power of two
	// floor is the seq after which the ring is complete: it holds every
	// frame of its city with a seq above floor. It starts at the seq the
	// node's view of the stream begins after (0 for a single node) and
	// rises to the seq of each frame evicted.
	floor uint64
	// sparse is set in cluster mode, where seqs have gaps and a seq above
	// the head is a position in the stream this node has not reached yet
	// rather than a mistake.
	sparse bool
	// mem is the node's account of the memory its rings hold (hub.mem),
	// frames and slots; nil: not accounted (a city on its own, in tests).
	mem *atomic.Int64
}

// slots is a ring's array of frames; len(s) is a power of two.
type slots struct {
	s    []atomic.Pointer[frame]
	mask uint64
}

// noSlots stands for the slots of a ring that has none: it holds no frame
// and is never written.
var noSlots = &slots{s: make([]atomic.Pointer[frame], 1)}

// minSlots is how many slots a ring starts with at its first frame.
const minSlots = 8

// frameOverhead is what a frame costs besides the bytes of its message.
const frameOverhead = int64(unsafe.Sizeof(frame{}))

// slotBytes is what a slot costs.
const slotBytes = int64(unsafe.Sizeof(atomic.Pointer[frame]{}))

func newRing(size, maxBytes int, floor uint64, sparse bool) *ring {
	n := 1
	for n < size {
		n <<= 1
	}
	r := &ring{size: n, maxBytes: maxBytes, floor: floor, sparse: sparse}
	r.buf.Store(noSlots)
	r.tail.Store(1)
	return r
}

// account adds d bytes to the node's ring memory.
func (r *ring) account(d int64) {
	if r.mem != nil {
		r.mem.Add(d)
	}
}

// pushLocked appends f, whose pos must be head+1, evicting the oldest
// frames past the byte bound. The city lock is held on entry.
func (r *ring) pushLocked(f *frame) {
	b := r.buf.Load()
	if held := f.pos - r.tail.Load(); b == noSlots || held >= uint64(len(b.s)) && len(b.s) < r.size {
		b = r.growLocked(b)
	}
	slot := &b.s[f.pos&b.mask]
	if old := slot.Load(); old != nil {
		r.evictLocked(old)
	}
	slot.Store(f)
	r.bytes += len(f.b)
	r.account(int64(cap(f.b)) + frameOverhead)
	r.head.Store(f.pos)
	for t := r.tail.Load(); r.bytes > r.maxBytes && t < f.pos; t++ {
		s := &b.s[t&b.mask]
		r.evictLocked(s.Load())
		s.Store(nil)
	}
}

// growLocked replaces b, which the frames held fill, with slots twice as
// many (or minSlots for the first frame), holding the same frames. The
// city lock is held on entry.
func (r *ring) growLocked(b *slots) *slots {
	n := minSlots
	if b != noSlots {
		n = 2 * len(b.s)
	}
	n = min(n, r.size)
	nb := &slots{s: make([]atomic.Pointer[frame], n), mask: uint64(n - 1)}
	for pos := r.tail.Load(); pos <= r.head.Load(); pos++ {
		nb.s[pos&nb.mask].Store(b.s[pos&b.mask].Load())
	}
	r.buf.Store(nb)
	r.account(slotBytes * int64(n-slotCount(b)))
	return nb
}

// slotCount is how many slots b accounts for: none for noSlots.
func slotCount(b *slots) int {
	if b == noSlots {
		return 0
	}
	return len(b.s)
}

// evictLocked accounts for the oldest frame leaving the ring, its event
// included (frame.dropEvent), and returns the node's ring memory it freed.
// The city lock is held on entry.
func (r *ring) evictLocked(old *frame) int64 {
	freed := int64(cap(old.b)) + frameOverhead + old.dropEvent()
	r.bytes -= len(old.b)
	r.account(-freed)
	r.floor = max(r.floor, old.seq)
	r.tail.Store(old.pos + 1)
	r.evictions.Add(1)
	return freed
}

// trimLocked evicts the oldest frames until at least n bytes of the node's
// ring memory are freed or the ring is empty, and gives an emptied ring's
// slots up. It returns the bytes freed and the frames evicted. The city
// lock is held on entry.
func (r *ring) trimLocked(n int64) (freed int64, frames int) {
	b := r.buf.Load()
	head := r.head.Load()
	for t := r.tail.Load(); t <= head && freed < n; t++ {
		s := &b.s[t&b.mask]
		freed += r.evictLocked(s.Load())
		s.Store(nil)
		frames++
	}
	if r.tail.Load() > head && b != noSlots {
		r.buf.Store(noSlots)
		freed += slotBytes * int64(len(b.s))
		r.account(-slotBytes * int64(len(b.s)))
	}
	return freed, frames
}

// get returns the frame at pos, or nil when the ring no longer (or does
// not yet) hold it. Safe for concurrent use.
func (r *ring) get(pos uint64) *frame {
	if pos < r.tail.Load() {
		return nil
	}
	b := r.buf.Load()
	f := b.s[pos&b.mask].Load()
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
