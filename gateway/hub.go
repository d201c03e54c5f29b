package gateway

import (
	"cmp"
	"errors"
	"hash/maphash"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
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
// is dropped, its merged state with it (see sweep).
type hub struct {
	cfg    *Config
	loops  int
	seed   maphash.Seed
	shards [64]hubShard
	count  atomic.Int64
	// floor is where new cities' rings start complete (ring.floor): 0 on a
	// single node; in cluster mode the stream seq the node's view starts
	// after, raised if the stream drops messages the node had not read.
	// Dropping a city raises it to the city's last seq, so that the city,
	// should it come back, neither reuses a seq nor vouches for the frames
	// it dropped.
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

	trimmed atomic.Uint64 // frames trimmed to keep mem within RingMemory
	dropped atomic.Uint64 // idle cities dropped
	refused atomic.Uint64 // new cities refused at MaxCities
	// full, when set, is told the name of each city refused at MaxCities
	// (outside the hub's locks).
	full func(name string)
}

type hubShard struct {
	mu     sync.RWMutex
	cities map[string]*city
	_      [shardSize - 32]byte
}

// shardSize is the size of a lock shard (hubShard, ipShard): two 64-byte
// cache lines, the pair x86's adjacent-line prefetcher moves together, so
// that the locks of two shards never share a line however the array is
// aligned (Go aligns it to 8 bytes only). TestShardSizes holds the
// padding to it.
const shardSize = 128

var errTooManyCities = errors.New("too many cities on this node")

func newHub(cfg *Config, loops int, epoch uint64) *hub {
	h := &hub{cfg: cfg, loops: loops, seed: maphash.MakeSeed(), epoch: epoch}
	for i := range h.shards {
		h.shards[i].cities = make(map[string]*city)
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
// uses it: city.publish tells, and subscribers check city.gone. Safe for
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
// holds MaxCities.
func (h *hub) create(name string) (*city, error) {
	s := h.shard(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.cities[name]; c != nil {
		return c, nil
	}
	if h.count.Load() >= int64(h.cfg.MaxCities) {
		return nil, errTooManyCities
	}
	c := newCity(name, h.cfg, h.loops, h.floor.Load(), h.sparse)
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
// node never read). Safe for concurrent use.
func (h *hub) raiseFloor(seq uint64) {
	h.raiseNewFloor(seq)
	h.each(func(c *city) { c.raiseFloor(seq) })
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
// rings, their state, their place among MaxCities. Safe for concurrent
// use.
func (h *hub) sweep(now int64, ttl time.Duration) {
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for name, c := range sh.cities {
			if c.subs.Load() != 0 || now-c.active.Load() < int64(ttl) {
				continue
			}
			seq, ok := c.drop(now, ttl)
			if !ok {
				continue
			}
			// Under the shard lock: the city's successor, if any, is
			// created after the floor is raised.
			h.raiseNewFloor(seq)
			delete(sh.cities, name)
			h.count.Add(-1)
			h.dropped.Add(1)
		}
		sh.mu.Unlock()
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
