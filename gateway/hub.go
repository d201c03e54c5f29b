package gateway

import (
	"cmp"
	"hash/maphash"
	"maps"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/metrocast/metrocast/codec"
	"github.com/metrocast/metrocast/gateway/ingest"
)

// hub finds cities by name. Cities are spread over shards by a hash of the
// name, so that ingest and subscriptions for different cities rarely meet on
// one lock.
//
// It also keeps what the cities hold within the node's means: at most
// MaxCities of them (a new one past it is refused, counted and logged);
// their rings within RingMemory together, trimming the oldest frames of
// the cities that have gone longest without activity when over it (see
// fit); and a city that has had no subscriber and no frame for CityIdleTTL
// is dropped, its merged state kept, compact, within IdleStateMemory (see
// sweep, fitKept).
type hub struct {
	cfg    *Config
	loops  int
	seed   maphash.Seed
	shards [64]hubShard
	count  atomic.Int64
	// floor is where new cities' rings start complete (ring.floor): 0 on a
	// single node; in cluster mode the stream seq the node's view starts
	// after, raised if the stream drops messages the node had not read.
	// A dropped city keeps its last seq (keptState.seq) and comes back
	// after it; letting go of that too raises the floor to it, so that the
	// city, should it come back, neither reuses a seq nor vouches for the
	// frames it dropped.
	floor atomic.Uint64
	// sparse is set (before the node listens) in cluster mode: ring.sparse.
	sparse bool
	// epoch is the node's, given to each city (city.epoch); set before
	// the node listens (in cluster mode, the stream's).
	epoch uint64

	// mem is the memory the rings hold, frames and slots (ring.mem).
	mem    atomic.Int64
	trimMu sync.Mutex
	// cold lists the cities with frames as of fit's last look, coldest
	// first; fit trims them from next on. Guarded by trimMu.
	cold []coldCity
	next int

	// keptMem is the memory the kept states of dropped cities hold
	// (keptState.size); fitKept keeps it within IdleStateMemory, one
	// caller at a time (keptMu).
	keptMem atomic.Int64
	keptMu  sync.Mutex

	trimmed   atomic.Uint64 // frames trimmed to keep mem within RingMemory
	dropped   atomic.Uint64 // idle cities dropped
	refused   atomic.Uint64 // new cities refused at MaxCities
	restored  atomic.Uint64 // dropped cities come back with what they kept
	evicted   atomic.Uint64 // kept states let go of, leaving a mark
	forgotten atomic.Uint64 // marks let go of
	// full, when set, is told the name of each city refused at MaxCities
	// (outside the hub's locks).
	full func(name string)
}

type hubShard struct {
	mu     sync.RWMutex
	cities map[string]*city
	// kept holds what the cities dropped from cities left (keptState), by
	// name, until they come back or fitKept lets go of it.
	kept map[string]*keptState
	_    [shardSize - 40]byte
}

// shardSize is the size of a lock shard (hubShard, ipShard): two 64-byte
// cache lines, the pair x86's adjacent-line prefetcher moves together, so
// that the locks of two shards never share a line however the array is
// aligned (Go aligns it to 8 bytes only). TestShardSizes holds the
// padding to it.
const shardSize = 128

func newHub(cfg *Config, loops int, epoch uint64) *hub {
	h := &hub{cfg: cfg, loops: loops, seed: maphash.MakeSeed(), epoch: epoch}
	for i := range h.shards {
		h.shards[i].cities = make(map[string]*city)
		h.shards[i].kept = make(map[string]*keptState)
	}
	return h
}

func (h *hub) shard(name string) *hubShard {
	return &h.shards[maphash.String(h.seed, name)%uint64(len(h.shards))]
}

// lookup returns the city, or nil. Safe for concurrent use.
func (h *hub) lookup(name string) *city {
	s := h.shard(name)
	s.mu.RLock()
	c := s.cities[name]
	s.mu.RUnlock()
	return c
}

// city returns the named city, creating it unless the node already holds
// MaxCities. A city found may be dropped (sweep) by the time the caller
// uses it: city.append tells, and subscribers check city.gone. Safe for
// concurrent use.
func (h *hub) city(name string) (*city, error) {
	if c := h.lookup(name); c != nil {
		return c, nil
	}
	c, err := h.create(name)
	if err != nil {
		h.refused.Add(1)
		if h.full != nil {
			h.full(name)
		}
	}
	return c, err
}

// create returns the named city, creating it unless the node already
// holds MaxCities. A city dropped for idleness comes back with what it
// kept: its state and its seqs going on after its last.
func (h *hub) create(name string) (*city, error) {
	s := h.shard(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.cities[name]; c != nil {
		return c, nil
	}
	if h.count.Load() >= int64(h.cfg.MaxCities) {
		return nil, ingest.ErrTooManyCities
	}
	floor := h.floor.Load()
	k := s.kept[name]
	if k != nil {
		// Its ring holds every frame after its last seq: the node has
		// applied (or numbered) each since, to this city (raiseFloor
		// raised seq past what the stream lost).
		floor = k.seq
		delete(s.kept, name)
		h.keptMem.Add(-k.size)
		h.restored.Add(1)
	}
	c := newCity(name, h.cfg, h.loops, floor, h.sparse)
	if k != nil {
		c.restore(k)
	}
	c.epoch = h.epoch
	c.ring.mem = &h.mem
	c.active.Store(mono())
	s.cities[name] = c
	h.count.Add(1)
	return c, nil
}

// each calls fn for every city, outside the shard locks. Safe for
// concurrent use; cities created meanwhile may be missed.
func (h *hub) each(fn func(*city)) {
	var batch []*city
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		batch = batch[:0]
		for _, c := range sh.cities {
			batch = append(batch, c)
		}
		sh.mu.RUnlock()
		for _, c := range batch {
			fn(c)
		}
	}
}

// raiseFloor makes every ring, and those created from now on, vouch only
// for the frames after seq (the stream lost messages before it that this
// node never read), and the cities dropped too, should they come back.
// Safe for concurrent use.
func (h *hub) raiseFloor(seq uint64) {
	h.raiseNewFloor(seq)
	for i := range h.shards {
		// Under the lock a city moves between cities and kept.
		sh := &h.shards[i]
		sh.mu.Lock()
		for _, c := range sh.cities {
			c.raiseFloor(seq)
		}
		for _, k := range sh.kept {
			k.seq = max(k.seq, seq)
		}
		sh.mu.Unlock()
	}
}

// raiseNewFloor raises the floor of the rings created from now on to seq,
// if it is lower. Safe for concurrent use.
func (h *hub) raiseNewFloor(seq uint64) {
	for {
		old := h.floor.Load()
		if old >= seq || h.floor.CompareAndSwap(old, seq) {
			break
		}
	}
}

// coldCity is a city with frames and when it was last active, for fit.
type coldCity struct {
	c      *city
	active int64
}

// fit trims the rings back within RingMemory when they hold more: the
// oldest frames first of the city that has gone longest without activity
// (a frame, or a subscriber leaving), then of the next, until the rings
// hold 7/8 of it, so that trims come in batches rather than per frame.
// Their subscribers that had not read the trimmed frames get initial_data,
// as when a ring laps them, and a resume from before them initial_data (a
// single node) or frames from the stream (cluster mode). Only one caller
// trims at a time; the others go on. Safe for concurrent use, but not
// with a city lock held.
//
// The order of the cities is taken once and used up over the trims that
// follow: a city active since (its place in the order is stale) is passed
// over, and those created since are warmer than all in it. So a trim costs
// the cities it trims, and a look at every city only once they are used up.
func (h *hub) fit() {
	if h.mem.Load() <= h.cfg.RingMemory || !h.trimMu.TryLock() {
		return
	}
	defer h.trimMu.Unlock()
	target := h.cfg.RingMemory - h.cfg.RingMemory/8
	looked := false
	for {
		over := h.mem.Load() - target
		if over <= 0 {
			return
		}
		if h.next == len(h.cold) {
			if looked {
				return // nothing left to trim
			}
			h.look()
			looked = true
			continue
		}
		cc := h.cold[h.next]
		if cc.c.active.Load() == cc.active {
			h.trimmed.Add(uint64(cc.c.trim(over)))
			if h.mem.Load() <= target {
				return // more of this city next time, if it has more
			}
		}
		h.cold[h.next] = coldCity{}
		h.next++
	}
}

// look lists the cities with frames, coldest first, for fit. trimMu is
// held on entry.
func (h *hub) look() {
	cold := h.cold[:0]
	h.each(func(c *city) {
		if c.ring.head.Load() >= c.ring.tail.Load() {
			cold = append(cold, coldCity{c, c.active.Load()})
		}
	})
	slices.SortFunc(cold, func(a, b coldCity) int { return cmp.Compare(a.active, b.active) })
	h.cold, h.next = cold, 0
}

// sweep drops the cities that have had no subscriber, no presence
// watcher and no activity (see city.active) for ttl as of now (mono): their
// rings and their place among MaxCities. What a city needs to come back as
// it was (its last seq, merged state and recent alerts: keptState) stays,
// within IdleStateMemory (fitKept). Safe for concurrent use.
func (h *hub) sweep(now int64, ttl time.Duration) {
	dropped := h.dropped.Load()
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for name, c := range sh.cities {
			if c.subs.Load() != 0 || now-c.active.Load() < int64(ttl) {
				continue
			}
			k, seq, ok := c.drop(now, ttl)
			if !ok {
				continue
			}
			// Under the shard lock: the city's successor, if any, is
			// created with what it kept, or after the floor is raised.
			if k != nil {
				k.size = keptSize(name, k)
				sh.kept[name] = k
				h.keptMem.Add(k.size)
			} else {
				h.raiseNewFloor(seq)
			}
			delete(sh.cities, name)
			h.count.Add(-1)
			h.dropped.Add(1)
		}
		sh.mu.Unlock()
	}
	if h.dropped.Load() != dropped {
		// fit's list of cold cities holds the dropped ones, and their
		// memory: let go of it (fit looks again when it needs to).
		h.trimMu.Lock()
		clear(h.cold)
		h.cold, h.next = h.cold[:0], 0
		h.trimMu.Unlock()
	}
	h.fitKept()
}

// fitKept lets go of what dropped cities kept while it holds more than
// IdleStateMemory, until it holds 7/8 of it: first the states, those
// dropped first first, each leaving a mark (its seq), so that its city
// comes back partial (its initial_data says so until its next snapshot);
// then, if the marks alone hold more, the oldest marks, raising the floor
// of new cities past their seqs (see floor). Both counted. Safe for
// concurrent use, but not with a shard lock held.
func (h *hub) fitKept() {
	limit := h.cfg.IdleStateMemory
	if h.keptMem.Load() <= limit {
		return
	}
	h.keptMu.Lock()
	defer h.keptMu.Unlock()
	target := limit - limit/8
	type entry struct {
		sh   *hubShard
		name string
		k    *keptState
	}
	var all []entry
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for name, k := range sh.kept {
			all = append(all, entry{sh, name, k})
		}
		sh.mu.RUnlock()
	}
	slices.SortFunc(all, func(a, b entry) int { return cmp.Compare(a.k.at, b.k.at) })
	for _, e := range all {
		if h.keptMem.Load() <= target {
			return
		}
		e.sh.mu.Lock()
		if e.sh.kept[e.name] == e.k && !e.k.mark() {
			old := e.k.size
			e.k.forget()
			e.k.size = keptSize(e.name, e.k)
			h.keptMem.Add(e.k.size - old)
			h.evicted.Add(1)
		}
		e.sh.mu.Unlock()
	}
	forgot := false
	for _, e := range all {
		if h.keptMem.Load() <= target {
			break
		}
		e.sh.mu.Lock()
		if e.sh.kept[e.name] == e.k {
			h.raiseNewFloor(e.k.seq)
			delete(e.sh.kept, e.name)
			h.keptMem.Add(-e.k.size)
			h.forgotten.Add(1)
			forgot = true
		}
		e.sh.mu.Unlock()
	}
	if forgot {
		// A map keeps the room of every entry it had: a burst of drops
		// would hold it for good.
		for i := range h.shards {
			sh := &h.shards[i]
			sh.mu.Lock()
			sh.kept = maps.Collect(maps.All(sh.kept))
			sh.mu.Unlock()
		}
	}
}

// sweepEvery is how often the cities are swept for a ttl: a city goes at
// most a quarter of ttl late, looked at no more often than 4 times a
// second nor less than once a minute.
func sweepEvery(ttl time.Duration) time.Duration {
	return min(max(ttl/4, 250*time.Millisecond), time.Minute)
}

// trimAll is trim's "everything".
const trimAll = math.MaxInt64

// keptState is what a city dropped for idleness leaves behind, so that it
// comes back as it was on every node: its last seq, and its merged state
// and recent alerts in one buffer; or, once fitKept let go of those, only
// a mark (its seq), so that it comes back partial. Guarded by its shard's
// lock once in kept.
type keptState struct {
	seq     uint64 // the city's last seq, raised by hub.raiseFloor
	at      int64  // when it was dropped (mono): the oldest go first
	size    int64  // what it holds (keptSize), in hub.keptMem
	ts      int64  // the state's timestamp
	b       []byte // the state object, then the recent alerts' arrays
	obj     int    // the object's length in b
	recent  []codec.RecentAlert
	partial bool // the state lacks what came before a mark
}

// mark reports whether only the mark is left.
func (k *keptState) mark() bool { return k.b == nil && k.partial }

// forget lets go of the state, leaving the mark.
func (k *keptState) forget() {
	k.b, k.obj, k.recent, k.ts, k.partial = nil, 0, nil, 0, true
}

// keptOverhead estimates what a kept entry costs besides its name and
// buffers: the struct and its place in the map.
const keptOverhead = int64(unsafe.Sizeof(keptState{})) + 64

// keptSize is what k, kept under name, holds.
func keptSize(name string, k *keptState) int64 {
	return keptOverhead + int64(len(name)+cap(k.b)) + int64(cap(k.recent))*int64(unsafe.Sizeof(codec.RecentAlert{}))
}
