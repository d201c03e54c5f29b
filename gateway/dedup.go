package gateway

import (
	"hash/maphash"
	"sync"
	"time"
)

// A single node's duplicate window, the counterpart of JetStream's in
// cluster mode: an ingest line with an id that the node stored within the
// last idWindow is not stored again, and is acked with the first copy's
// seq. So a producer that resends after losing its answers (a dropped
// connection, a time-out) behaves the same on a laptop as in a cluster.
const (
	// idWindow is how long an id is remembered: JetStream's duplicate
	// window as the stream is created (cluster.setup).
	idWindow = 2 * time.Minute
	// maxRecentIDs bounds the ids remembered, and so the memory: about
	// 100 bytes an id of 16-40 bytes, 6 MiB in all. Past it the oldest are
	// forgotten first, and the window is shorter than idWindow (above
	// ~550 lines with an id per second).
	maxRecentIDs = 1 << 16
	idShards     = 16
)

// recentIDs is the window, sharded by id so that producers rarely meet
// on a lock. Safe for concurrent use.
type recentIDs struct {
	seed   maphash.Seed
	shards [idShards]idShard
}

// idShard holds its ids in a map, for lookups, and in the order they were
// stored, for expiry: order[head:] are the ids in seqs, oldest first.
type idShard struct {
	mu    sync.Mutex
	seqs  map[string]uint64
	order []storedID
	head  int
}

type storedID struct {
	id string
	at int64 // mono time it was stored
}

func newRecentIDs() *recentIDs { return &recentIDs{seed: maphash.MakeSeed()} }

// once calls store unless id was stored within the window, and remembers
// id with the seq store returns. It returns the seq of id's first copy
// and whether this was a copy (store not called). The shard's lock is
// held during store, so that two copies sent at once are stored once.
// Safe for concurrent use.
func (r *recentIDs) once(id string, now int64, store func() (uint64, error)) (seq uint64, dup bool, err error) {
	sh := &r.shards[maphash.String(r.seed, id)%idShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.expireLocked(now)
	if seq, ok := sh.seqs[id]; ok {
		return seq, true, nil
	}
	if seq, err = store(); err != nil {
		return 0, false, err
	}
	if sh.seqs == nil {
		sh.seqs = make(map[string]uint64)
	}
	sh.seqs[id] = seq
	sh.order = append(sh.order, storedID{id, now})
	return seq, false, nil
}

// expireLocked forgets the ids stored before now - idWindow, and the
// oldest beyond the shard's share of maxRecentIDs (leaving room for one
// more). The shard's lock is held on entry.
func (sh *idShard) expireLocked(now int64) {
	for sh.head < len(sh.order) {
		o := sh.order[sh.head]
		if now-o.at < int64(idWindow) && len(sh.order)-sh.head < maxRecentIDs/idShards {
			break
		}
		delete(sh.seqs, o.id)
		sh.order[sh.head] = storedID{}
		sh.head++
	}
	// Move the live part to the front once it is at most half the slice:
	// each id is copied at most once on average.
	if sh.head > 0 && sh.head >= len(sh.order)-sh.head {
		n := copy(sh.order, sh.order[sh.head:])
		clear(sh.order[n:])
		sh.order, sh.head = sh.order[:n], 0
	}
}
