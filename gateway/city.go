package gateway

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/metrocast/metrocast/codec"
)

// city is one city's stream: its ring, its merged state and the event loops
// that hold its subscribers.
type city struct {
	name string
	ring *ring
	// epoch is the node's (Server.epoch), carried by the initial_data
	// frames an ingested snapshot becomes; set when the city is made.
	epoch uint64

	// Per event loop (indexed by loop.idx): how many of the loop's
	// subscribers watch this city (written by the loop, read by publishers)
	// and whether the loop has been told about new frames.
	loopSubs []atomic.Int32
	dirty    []atomic.Bool
	// subs counts the city's subscribers on every loop (metrics and
	// /api/stats; the loops' own lists are what the fanout uses).
	subs atomic.Int64
	// presence: the watchers of subscriptions made with "presence":true;
	// presenceDirty while the city waits in Server.presenceDirty.
	presence      presence
	presenceDirty atomic.Bool
	// active is when (mono) the city last had a frame, or lost its last
	// subscriber, or was created: how cold it is (hub.fit) and how long
	// idle (hub.sweep).
	active atomic.Int64

	mu sync.Mutex // guards everything below and appends to ring
	// dropped is set when hub.sweep drops the city: whoever still holds
	// it must look the city up again.
	dropped bool
	// history: the city has had a frame, on this node or before it was
	// dropped (restore); a dropped city keeps what it has only then.
	history bool
	// partial: the state lacks what the city had before it was dropped
	// (the node let go of that, see hub.fitKept), until a snapshot.
	partial bool
	// State: snapshot + merged data_update members, plus the payloads
	// not merged yet (oldest first; they alias their frames).
	state   map[string][]byte
	keys    []string // sorted member names of state
	pending [][]byte
	stateTS int64
	// maxState bounds size: IngestMaxLineBytes, what one snapshot may
	// carry (see fitsLocked).
	maxState int
	// size is the bytes of state as a JSON object (its names and values
	// and memberPunct each, the braces aside); pinned bounds the
	// memory they keep from being freed: they alias the payloads merged
	// since the last compaction (a whole frame each) or that
	// compaction's buffer (see mergeLocked). pendingBytes: pending's.
	size, pinned, pendingBytes int
	// recent alerts messages, oldest first, at most keepAlerts.
	recent     []codec.RecentAlert
	keepAlerts int
	// initial caches the initial_data frame for the current head.
	initial *frame
	// buf is a scratch buffer for building the state object.
	buf []byte
}

// newCity returns an empty city whose ring starts complete after seq floor
// (see ring.floor); sparse is cluster mode's (ring.sparse).
func newCity(name string, cfg *Config, loops int, floor uint64, sparse bool) *city {
	return &city{
		name:       name,
		ring:       newRing(cfg.RingSize, cfg.RingBytes, floor, sparse),
		loopSubs:   make([]atomic.Int32, loops),
		dirty:      make([]atomic.Bool, loops),
		keepAlerts: cfg.RecentAlerts,
		maxState:   cfg.IngestMaxLineBytes,
	}
}

// mergeFailures counts the payloads mergeLocked could not split into
// members: none, unless codec.CheckJSON and codec.EachMember part ways
// (metrocast_merge_failures_total). Process-wide, as the invariant is.
var mergeFailures atomic.Uint64

// maxPendingMerges and maxPendingBytes bound the data_update payloads kept
// unmerged: past either, append folds them into the state (amortised), so
// the state never lags by more than this much memory.
const (
	maxPendingMerges = 64
	maxPendingBytes  = 1 << 20
)

// payloadOverhead is what a payload's frame holds beside it, for
// city.pinned: the frame, the message's other members and the WebSocket
// header.
const payloadOverhead = int(frameOverhead) + 128

// errCityGone: the city was dropped (hub.sweep) after the caller looked it
// up; look it up again.
var errCityGone = errors.New("city dropped")

// errStateFull: a data_update would grow the city's state past maxState.
var errStateFull = errors.New("the city's state would grow past ingest-max-line-bytes, what one snapshot may carry: send a snapshot to replace it, or fewer members")

// append numbers in as the city's next message (a single node's seqs:
// one more than the last, or than the ring's floor), then stores it as
// appendSeq does. Safe for concurrent use.
func (c *city) append(in *codec.Ingest, accepted time.Time) (*frame, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.dropped:
		return nil, errCityGone
	case !c.fitsLocked(in):
		return nil, errStateFull
	}
	return c.appendLocked(in, c.ring.headSeqLocked()+1, accepted), nil
}

// fits reports whether in leaves the city's state within maxState (see
// fitsLocked). Cluster ingest asks before it publishes to the stream, so
// that a line is refused before its ack; the nodes apply whatever the
// stream holds. Safe for concurrent use.
func (c *city) fits(in *codec.Ingest) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fitsLocked(in)
}

// fitsLocked reports whether in leaves the state within maxState: a
// snapshot always does (it is one line), a data_update unless its new
// members, or bigger values, grow it past. Without a bound, a producer
// that names a new member in each line (a sensor id, a timestamp) grows
// a state for ever. Most lines are far below: they cost a sum; near the
// bound the state is merged and the line's members weighed. The city lock
// is held on entry.
func (c *city) fitsLocked(in *codec.Ingest) bool {
	// The object is size+1 bytes: its braces, less the last comma.
	if in.Kind != codec.KindDataUpdate || c.size+c.pendingBytes+len(in.Data) < c.maxState {
		return true
	}
	c.mergeLocked()
	grow := 0
	_ = codec.EachMember(in.Data, func(k string, v []byte) {
		if old, ok := c.state[k]; ok {
			grow += len(v) - len(old)
		} else {
			grow += len(k) + memberPunct + len(v) // a name twice in the line counts twice: a bound
		}
	})
	return c.size+grow < c.maxState
}

// appendSeq appends in with the given seq (the stream sequence in cluster
// mode), which must be above every seq the city holds. Safe for
// concurrent use.
func (c *city) appendSeq(in *codec.Ingest, seq uint64, accepted time.Time) (*frame, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dropped {
		return nil, errCityGone
	}
	return c.appendLocked(in, seq, accepted), nil
}

// encodeFrame encodes in as the message clients are sent, with seq (and,
// for a snapshot, which becomes an initial_data, the node's epoch). A
// message without a producer timestamp gets accepted's. Ring frames and
// frames replayed from the stream are built by this one function, so that
// a replay is byte for byte what the live fanout sent.
func encodeFrame(city string, epoch uint64, in *codec.Ingest, seq uint64, accepted time.Time) *frame {
	ts := in.Timestamp
	if ts == 0 {
		ts = accepted.UnixMilli()
	}
	f := &frame{seq: seq, kind: in.Kind, sev: in.Severity, accepted: monoOf(accepted)}
	size := 96 + len(city) + len(in.Data) + len(in.Alerts)
	switch in.Kind {
	case codec.KindDataUpdate:
		f.b = codec.AppendDataUpdate(make([]byte, 0, size), city, seq, ts, in.Data)
	case codec.KindSnapshot:
		f.b = codec.AppendInitialData(make([]byte, 0, size), &codec.InitialData{
			City: city, Seq: seq, Epoch: epoch, TS: ts, Resumed: true, Data: in.Data})
	case codec.KindAlerts:
		f.b = codec.AppendAlerts(make([]byte, 0, size), city, seq, ts, in.Alerts)
	}
	return f
}

// appendLocked encodes in once, stores it in the ring and queues it for
// the state, and returns its frame. Merging into the state is lazy: most
// messages are never asked for as initial_data. The city lock is held on
// entry.
func (c *city) appendLocked(in *codec.Ingest, seq uint64, accepted time.Time) *frame {
	f := encodeFrame(c.name, c.epoch, in, seq, accepted)
	f.pos = c.ring.head.Load() + 1
	ts := in.Timestamp
	if ts == 0 {
		ts = accepted.UnixMilli()
	}
	c.history = true
	switch in.Kind {
	case codec.KindSnapshot:
		c.state, c.keys, c.pending = nil, c.keys[:0], c.pending[:0]
		c.size, c.pinned, c.pendingBytes = 0, 0, 0
		c.partial = false
	case codec.KindAlerts:
		c.recent = append(c.recent, codec.RecentAlert{Seq: seq, TS: ts, Alerts: tail(f.b, len(in.Alerts))})
		if len(c.recent) > c.keepAlerts {
			c.recent = slices.Delete(c.recent, 0, len(c.recent)-c.keepAlerts)
		}
	}
	if in.Kind != codec.KindAlerts {
		// The payload sits at the end of the frame: keep a view, not a copy.
		c.pending = append(c.pending, tail(f.b, len(in.Data)))
		c.pendingBytes += len(in.Data)
		c.stateTS = ts
		if len(c.pending) >= maxPendingMerges || c.pendingBytes >= maxPendingBytes {
			c.mergeLocked()
		}
	}
	c.initial = nil
	c.ring.pushLocked(f)
	c.active.Store(f.accepted)
	return f
}

// trim drops the oldest frames of the ring until n bytes of ring memory
// are freed or the ring is empty, and returns how many it dropped. An
// emptied ring's city keeps its state, merged, so that it holds on to the
// payloads of its current members only, and lets go of its cached
// initial_data. Safe for concurrent use.
func (c *city) trim(n int64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, frames := c.ring.trimLocked(n)
	if c.ring.tail.Load() > c.ring.head.Load() {
		c.mergeLocked()
		c.initial = nil
	}
	return frames
}

// drop marks the city dropped if it still has no subscriber, no presence
// watcher and no activity for ttl as of now (mono), and lets go of its
// frames and state. It returns the city's last seq, and what the city
// needs to come back as it was (nil for a city that never had a frame).
// Safe for concurrent use.
//
// Subscribers count themselves (loop.addSub) before checking gone, under
// the city lock as drop is: either drop sees the subscriber, or the
// subscriber sees the city dropped.
func (c *city) drop(now int64, ttl time.Duration) (k *keptState, last uint64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.subs.Load() != 0 || now-c.active.Load() < int64(ttl) || c.presenceDirty.Load() || !c.presence.empty() {
		return nil, 0, false
	}
	c.dropped = true
	last = c.ring.headSeqLocked()
	if c.history {
		k = c.keepLocked(last, now)
	}
	c.ring.trimLocked(trimAll)
	c.state, c.keys, c.pending, c.recent, c.initial, c.buf = nil, nil, nil, nil, nil, nil
	c.size, c.pinned, c.pendingBytes = 0, 0, 0
	return k, last, true
}

// keepLocked returns the city's state as of seq, compact: the object
// initial_data carries and the recent alerts, copied into one buffer (the
// frames they alias go with the ring). The city lock is held on entry.
func (c *city) keepLocked(seq uint64, now int64) *keptState {
	c.mergeLocked()
	if c.partial && len(c.keys) == 0 && len(c.recent) == 0 {
		return &keptState{seq: seq, at: now, partial: true} // still a mark
	}
	c.buf = codec.AppendObject(c.buf[:0], c.keys, c.state)
	n := len(c.buf)
	for _, r := range c.recent {
		n += len(r.Alerts)
	}
	k := &keptState{seq: seq, at: now, ts: c.stateTS, obj: len(c.buf), partial: c.partial}
	k.b = append(make([]byte, 0, n), c.buf...)
	if len(c.recent) > 0 {
		k.recent = make([]codec.RecentAlert, len(c.recent))
		for i, r := range c.recent {
			off := len(k.b)
			k.b = append(k.b, r.Alerts...)
			k.recent[i] = codec.RecentAlert{Seq: r.Seq, TS: r.TS, Alerts: k.b[off:len(k.b):len(k.b)]}
		}
	}
	return k
}

// restore gives a new city, not yet in the hub, what a dropped one of its
// name kept: it comes back as it was (or, from a mark, partial). Its ring
// starts after the kept seq (newCity's floor).
func (c *city) restore(k *keptState) {
	c.history = true
	c.partial = k.partial
	c.stateTS = k.ts
	c.recent = k.recent
	if k.obj > 0 {
		// Merged lazily, as a data_update's payload; k.b is not written
		// again.
		c.pending = append(c.pending, k.b[:k.obj:k.obj])
		c.pendingBytes += k.obj
	}
}

// gone reports whether the city was dropped. Safe for concurrent use.
func (c *city) gone() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}

// tail returns the n bytes before the closing brace of an encoded message.
func tail(b []byte, n int) []byte {
	end := len(b) - 1
	return b[end-n : end : end]
}

// mergeLocked folds the pending payloads into the state, {...prev, ...update}.
// ParseIngest accepted each with the same scanner that splits it here
// (codec.CheckJSON), so a payload that does not split is a broken
// invariant: it is left out of the state and counted, never a panic on the
// data path. The city lock is held on entry.
//
// Names and values alias the payloads (frames are immutable), which saves
// a copy per member, but a member keeps its whole frame from being freed
// however small it is: a producer that sends {"k<n>":1,"big":"<500 KB>"}
// made each frame stay for its one small member, 600 MB for a state of
// 0.5 MB after 1,000 lines. So once the payloads it pins (pinned) pass
// twice the state (and compactSlack), the state is copied into one buffer
// of its own size: the copies cost at most the bytes merged since the
// last one, and what the state holds stays within about twice its size.
func (c *city) mergeLocked() {
	if len(c.pending) == 0 {
		return
	}
	for i, p := range c.pending {
		c.pinned += len(p) + payloadOverhead
		err := codec.EachMember(p, func(k string, v []byte) {
			if c.state == nil {
				c.state = make(map[string][]byte)
			}
			if old, ok := c.state[k]; ok {
				c.size -= len(old)
			} else {
				c.keys = append(c.keys, k)
				c.size += len(k) + memberPunct
			}
			c.size += len(v)
			c.state[k] = v
		})
		if err != nil {
			mergeFailures.Add(1)
		}
		c.pending[i] = nil
	}
	c.pending, c.pendingBytes = c.pending[:0], 0
	slices.Sort(c.keys)
	if c.pinned > 2*c.size+compactSlack {
		c.compactLocked()
	}
}

// memberPunct is what a member adds to an object beside its name and
// value: the name's quotes, the colon and a comma.
const memberPunct = 4

// compactSlack is how much more than twice its size a state may hold
// before it is compacted: small states are not copied over and over.
const compactSlack = 64 << 10

// compactLocked copies the state's names and values into one buffer, so
// that it holds no frame any more. The city lock is held on entry.
func (c *city) compactLocked() {
	b := make([]byte, 0, c.size)
	state := make(map[string][]byte, len(c.keys))
	for i, k := range c.keys {
		v := c.state[k]
		off := len(b)
		b = append(b, k...)
		b = append(b, v...)
		// b has room for the whole state: it never moves.
		name := unsafe.String(unsafe.SliceData(b[off:]), len(k))
		state[name] = b[off+len(k) : len(b) : len(b)]
		c.keys[i] = name
	}
	c.state, c.pinned = state, len(b)
}

// initialFrame returns an initial_data frame (resumed: false) with the
// current state, as of the ring's head. It is built at most once per head
// and shared by every subscriber that needs it. Safe for concurrent use.
func (c *city) initialFrame(epoch uint64) *frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.initial != nil {
		return c.initial
	}
	c.mergeLocked()
	c.buf = codec.AppendObject(c.buf[:0], c.keys, c.state)
	d := codec.InitialData{
		City:    c.name,
		Seq:     c.ring.headSeqLocked(),
		Epoch:   epoch,
		TS:      c.stateTS,
		Partial: c.partial,
		Data:    c.buf,
		Recent:  c.recent,
	}
	c.initial = &frame{pos: c.ring.head.Load(), seq: d.Seq, kind: codec.KindSnapshot, b: codec.AppendInitialData(nil, &d)}
	return c.initial
}

// stats describes the city for /api/stats. It merges the pending updates
// (as initialFrame would) to measure the state. Safe for concurrent use.
func (c *city) stats() CityStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mergeLocked()
	st := CityStats{
		City:         c.name,
		Subscribers:  c.subs.Load(),
		Head:         c.ring.headSeqLocked(),
		RingBytes:    c.ring.bytes,
		StateKeys:    len(c.keys),
		RecentAlerts: len(c.recent),
	}
	if head, tail := c.ring.head.Load(), c.ring.tail.Load(); head >= tail {
		st.RingFrames = int(head - tail + 1)
		st.Tail = c.ring.get(tail).seq
	} else {
		st.Tail = st.Head + 1
	}
	for _, k := range c.keys {
		st.StateBytes += len(k) + len(c.state[k])
	}
	return st
}

// resume returns the cursor of a subscriber that has seen the city's
// frames up to seq since, if the ring holds every frame after it (see
// ring.resumeLocked). Safe for concurrent use.
func (c *city) resume(since uint64) (pos uint64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ring.resumeLocked(since)
}

// floorSeq returns the seq after which the ring holds every frame of the
// city. Safe for concurrent use.
func (c *city) floorSeq() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ring.floor
}

// raiseFloor lifts the ring's floor to at least seq. Safe for concurrent
// use.
func (c *city) raiseFloor(seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ring.floor = max(c.ring.floor, seq)
	c.initial = nil
}
