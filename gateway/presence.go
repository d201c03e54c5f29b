package gateway

import (
	"hash/maphash"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/metrocast/metrocast/codec"
)

// Presence: who watches a city, for subscriptions made with
// "presence":true. Members are JWT subjects counted once however many
// connections (tabs) they hold, on this node or, in cluster mode, on
// others (Node.SharePresence). Joins and leaves are coalesced: they
// accumulate between flushes (one per housekeeping sweep) and go out as
// at most one user_joined and one user_left message (or one snapshot) per
// city per sweep, where a leave and a rejoin within the sweep cancel out,
// so a reconnect storm costs the other watchers nothing. Each watcher is
// sent the batches at its visit, its phase of the sweep.
const (
	// presenceMaxListed bounds the users a presence message names; the
	// others are counted in "more".
	presenceMaxListed = 100
	// presenceBatches is how many flushed batches a city keeps for loops
	// that have not sent them yet; a subscriber further behind gets a
	// fresh snapshot instead.
	presenceBatches = 8
)

// presence is a city's watchers. The zero value is ready to use. Its
// methods are safe for concurrent use.
type presence struct {
	gen atomic.Uint64 // batches flushed so far

	mu sync.Mutex // guards the fields below
	// members counts, per user, this node's connections and the other
	// nodes whose shares list the user; local counts the connections only.
	members map[string]int
	local   map[string]int
	// remote is the other nodes' shares by node id; remoteMore sums the
	// watchers they count but do not list.
	remote     map[string]*remoteShare
	remoteMore int
	// unshared: local changed since localShare last encoded it.
	unshared bool
	// sentCount is the count the last batch or snapshot told.
	sentCount int
	joined    map[string]struct{} // since the last flush
	left      map[string]struct{}
	batches   []presenceBatch // the last presenceBatches, oldest first
}

// remoteShare is another node's watchers of the city.
type remoteShare struct {
	users map[string]struct{}
	more  int
	sum   uint64    // shareSum of the share they were read from
	seen  time.Time // when the node last refreshed it
}

// shareSeed seeds shareSum.
var shareSeed = maphash.MakeSeed()

// shareSum hashes a presence share, to tell a refresh (the same share
// again, every third of the TTL) from a change without parsing it.
func shareSum(share []byte) uint64 { return maphash.Bytes(shareSeed, share) }

// presenceBatch is one flush: its user_joined and user_left frames, or a
// snapshot.
type presenceBatch struct {
	gen    uint64
	frames []byte
}

// empty reports whether the city has no watcher, on this node or another.
func (p *presence) empty() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.members) == 0 && len(p.remote) == 0 && p.remoteMore == 0
}

// join counts user as a watcher and returns the snapshot frame to send
// the new subscriber, and the generation it reflects. The events of the
// current tick may repeat it (joined users are a set, not a count).
func (p *presence) join(city, user string) ([]byte, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.local == nil {
		p.local = make(map[string]int)
	}
	p.local[user]++
	if p.local[user] == 1 {
		p.unshared = true
		p.ref(user)
	}
	return p.snapshotLocked(city), p.gen.Load()
}

// leave drops one connection of user.
func (p *presence) leave(user string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.local[user] == 0 {
		panic("BUG: presence leave without a join")
	}
	p.local[user]--
	if p.local[user] > 0 {
		return
	}
	delete(p.local, user)
	p.unshared = true
	p.unref(user)
}

// ref counts one more holder (a local connection or a node) of user,
// noting a join when it is the first. p.mu is held.
func (p *presence) ref(user string) {
	if p.members == nil {
		p.members = make(map[string]int)
		p.joined = make(map[string]struct{})
		p.left = make(map[string]struct{})
	}
	p.members[user]++
	if p.members[user] > 1 {
		return
	}
	if _, ok := p.left[user]; ok {
		delete(p.left, user)
	} else {
		p.joined[user] = struct{}{}
	}
}

// unref drops one holder of user, noting a leave when it was the last.
// p.mu is held.
func (p *presence) unref(user string) {
	p.members[user]--
	if p.members[user] > 0 {
		return
	}
	delete(p.members, user)
	if _, ok := p.joined[user]; ok {
		delete(p.joined, user)
	} else {
		p.left[user] = struct{}{}
	}
}

// count is the number of watchers: those known by name and those the
// other nodes only count. p.mu is held.
func (p *presence) count() int { return len(p.members) + p.remoteMore }

// setRemote replaces node's share with users and more, read from a share
// hashed sum (shareSum), seen at seen; no users and no more forget the
// node. It reports whether the city's watchers changed.
func (p *presence) setRemote(node string, users []string, more int, sum uint64, seen time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.setRemoteLocked(node, users, more, sum, seen)
}

func (p *presence) setRemoteLocked(node string, users []string, more int, sum uint64, seen time.Time) bool {
	old := p.remote[node]
	if old == nil {
		old = &remoteShare{}
	}
	next := &remoteShare{users: make(map[string]struct{}, len(users)), more: more, sum: sum, seen: seen}
	changed := more != old.more
	for _, u := range users {
		next.users[u] = struct{}{}
		if _, had := old.users[u]; !had {
			p.ref(u)
			changed = true
		}
	}
	for u := range old.users {
		if _, kept := next.users[u]; !kept {
			p.unref(u)
			changed = true
		}
	}
	p.remoteMore += more - old.more
	if len(users) == 0 && more == 0 {
		delete(p.remote, node)
		return changed
	}
	if p.remote == nil {
		p.remote = make(map[string]*remoteShare)
	}
	p.remote[node] = next
	return changed
}

// renew marks node's share as refreshed at seen, if the city has it and
// it was read from a share hashed sum.
func (p *presence) renew(node string, sum uint64, seen time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.remote[node]
	if r == nil || r.sum != sum {
		return false
	}
	r.seen = seen
	return true
}

// expire forgets the shares not refreshed since before and returns their
// nodes. It reports whether the watchers changed and whether any share is
// left.
func (p *presence) expire(before time.Time) (nodes []string, changed, left bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for node, r := range p.remote {
		if r.seen.Before(before) {
			nodes = append(nodes, node)
			changed = p.setRemoteLocked(node, nil, 0, 0, r.seen) || changed
		}
	}
	return nodes, changed, len(p.remote) > 0
}

// localShare returns this node's watchers as a presence share (nil when
// there are none), and clears unshared.
func (p *presence) localShare() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unshared = false
	if len(p.local) == 0 {
		return nil
	}
	users := make([]string, 0, len(p.local))
	for u := range p.local {
		users = append(users, u)
	}
	slices.Sort(users)
	return codec.AppendPresenceShare(nil, users, 0)
}

// flush turns the joins and leaves since the last flush into a batch of
// events that name every user that came or went. When more than
// presenceMaxListed came or went, or when only the count changed (the
// watchers other nodes count but do not list), the batch is a snapshot
// instead: a subscriber that applies events and snapshots as set
// operations never keeps a user who left. It reports whether this node's
// watchers changed since they were last shared. Called once per tick
// (events.OnTick).
func (p *presence) flush(city string) (unshared bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var frames []byte
	switch {
	case len(p.joined) == 0 && len(p.left) == 0 && p.count() == p.sentCount:
		return p.unshared
	case len(p.joined) == 0 && len(p.left) == 0,
		len(p.joined) > presenceMaxListed, len(p.left) > presenceMaxListed:
		frames = p.snapshotLocked(city)
	default:
		if len(p.joined) > 0 {
			frames = codec.AppendFrame(frames, ws.OpText, p.appendEvent(nil, "user_joined", city, p.joined))
		}
		if len(p.left) > 0 {
			frames = codec.AppendFrame(frames, ws.OpText, p.appendEvent(nil, "user_left", city, p.left))
		}
	}
	clear(p.joined)
	clear(p.left)
	p.sentCount = p.count()
	g := p.gen.Load() + 1
	p.batches = append(p.batches, presenceBatch{gen: g, frames: frames})
	if len(p.batches) > presenceBatches {
		p.batches = slices.Delete(p.batches, 0, len(p.batches)-presenceBatches)
	}
	p.gen.Store(g)
	return p.unshared
}

// since returns the frames a subscriber that has sent up to generation
// have needs, and the generation they bring it to: the batches after
// have, or a snapshot when those are no longer kept. The frames are
// shared: write them, do not modify them.
func (p *presence) since(city string, have uint64) ([]byte, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	g := p.gen.Load()
	if len(p.batches) == 0 || p.batches[0].gen > have+1 {
		return p.snapshotLocked(city), g
	}
	var out []byte
	for _, b := range p.batches {
		if b.gen > have {
			out = append(out, b.frames...)
		}
	}
	return out, g
}

// snapshotLocked builds the presence frame: every watcher (up to
// presenceMaxListed, sorted) and their count. p.mu is held.
func (p *presence) snapshotLocked(city string) []byte {
	b := append([]byte(nil), `{"type":"presence","city":`...)
	b = codec.AppendString(b, city)
	b = append(b, `,"count":`...)
	b = strconv.AppendInt(b, int64(p.count()), 10)
	b = appendUsers(b, p.members, p.remoteMore)
	return codec.AppendFrame(nil, ws.OpText, append(b, '}'))
}

// appendEvent appends a user_joined or user_left message's JSON.
func (p *presence) appendEvent(b []byte, typ, city string, users map[string]struct{}) []byte {
	b = append(b, `{"type":"`...)
	b = append(b, typ...)
	b = append(b, `","city":`...)
	b = codec.AppendString(b, city)
	b = append(b, `,"count":`...)
	b = strconv.AppendInt(b, int64(p.count()), 10)
	b = appendUsers(b, users, 0)
	return append(b, '}')
}

// appendUsers appends ,"users":[…] with at most presenceMaxListed names,
// sorted, and ,"more":N for the rest and extra.
func appendUsers[V any](b []byte, set map[string]V, extra int) []byte {
	names := make([]string, 0, len(set))
	for u := range set {
		names = append(names, u)
	}
	slices.Sort(names)
	more := extra
	if len(names) > presenceMaxListed {
		more += len(names) - presenceMaxListed
		names = names[:presenceMaxListed]
	}
	b = append(b, `,"users":[`...)
	for i, u := range names {
		if i > 0 {
			b = append(b, ',')
		}
		b = codec.AppendString(b, u)
	}
	b = append(b, ']')
	if more > 0 {
		b = append(b, `,"more":`...)
		b = strconv.AppendInt(b, int64(more), 10)
	}
	return b
}

// flushPresence flushes the joins and leaves of every city that had some
// and tells the bus the cities whose local watchers changed, to share
// them in cluster mode. Runs on gnet's ticker goroutine, once a sweep;
// the loops' housekeeping sends the batches at each watcher's visit.
func (s *Server) flushPresence() {
	s.presenceMu.Lock()
	dirty := s.presenceDirty
	s.presenceDirty = nil
	s.presenceMu.Unlock()
	for _, c := range dirty {
		c.presenceDirty.Store(false)
		if c.presence.flush(c.name) {
			s.bus.PresenceChanged(c.name)
		}
	}
}

// presenceChanged queues c for the next flush. Safe for concurrent use.
func (s *Server) presenceChanged(c *city) {
	if !c.presenceDirty.CompareAndSwap(false, true) {
		return
	}
	s.presenceMu.Lock()
	s.presenceDirty = append(s.presenceDirty, c)
	s.presenceMu.Unlock()
}

// sendPresence writes the presence batches cn's presence subscriptions
// have not had. Runs on the loop, in housekeeping.
func (l *loop) sendPresence(cn *conn) {
	for _, sb := range cn.subs {
		if !sb.presence || sb.city.presence.gen.Load() == sb.presenceGen {
			continue
		}
		frames, g := sb.city.presence.since(sb.city.name, sb.presenceGen)
		sb.presenceGen = g
		if len(frames) > 0 {
			l.put(cn, frames)
		}
		if cn.state != stateOpen {
			return
		}
	}
}
