package gateway

import (
	"errors"
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// hub finds cities by name. Cities are spread over shards by a hash of the
// name, so that ingest and subscriptions for different cities rarely meet on
// one lock.
type hub struct {
	cfg    *Config
	loops  int
	seed   maphash.Seed
	shards [64]hubShard
	count  atomic.Int64
	// floor is where new cities' rings start complete (ring.floor): 0 on a
	// single node; in cluster mode the stream seq the node's view starts
	// after, raised if the stream drops messages the node had not read.
	floor atomic.Uint64
	// sparse is set (before the node listens) in cluster mode: ring.sparse.
	sparse bool
	// epoch is the node's, given to each city (city.epoch); set before
	// the node listens (in cluster mode, the stream's).
	epoch uint64
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
// MaxCities. Safe for concurrent use.
func (h *hub) city(name string) (*city, error) {
	if c := h.lookup(name); c != nil {
		return c, nil
	}
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
	for {
		old := h.floor.Load()
		if old >= seq || h.floor.CompareAndSwap(old, seq) {
			break
		}
	}
	h.each(func(c *city) { c.raiseFloor(seq) })
}
