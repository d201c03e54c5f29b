package gateway

import (
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/gobwas/ws"

	"github.com/metrocast/metrocast/codec"
)

// Presence: who watches a city, for subscriptions made with
// "presence":true. Members are JWT subjects counted once however many
// connections (tabs) they hold. Joins and leaves are coalesced: they
// accumulate between housekeeping ticks and go out as at most one
// user_joined and one user_left message per city per tick, where a leave
// and a rejoin within the tick cancel out, so a reconnect storm costs
// the other watchers nothing. Single node only: in cluster mode each node
// reports its own watchers.
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

	mu      sync.Mutex // guards the fields below
	members map[string]int
	joined  map[string]struct{} // since the last flush
	left    map[string]struct{}
	batches []presenceBatch // the last presenceBatches, oldest first
}

// presenceBatch is one flush: its user_joined and user_left frames.
type presenceBatch struct {
	gen    uint64
	frames []byte
}

// join counts user as a watcher and returns the snapshot frame to send
// the new subscriber, and the generation it reflects. The events of the
// current tick may repeat it (joined users are a set, not a count).
func (p *presence) join(city, user string) ([]byte, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.members == nil {
		p.members = make(map[string]int)
		p.joined = make(map[string]struct{})
		p.left = make(map[string]struct{})
	}
	p.members[user]++
	if p.members[user] == 1 {
		if _, ok := p.left[user]; ok {
			delete(p.left, user)
		} else {
			p.joined[user] = struct{}{}
		}
	}
	return p.snapshotLocked(city), p.gen.Load()
}

// leave drops one connection of user.
func (p *presence) leave(user string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.members[user] == 0 {
		panic("BUG: presence leave without a join")
	}
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

// flush turns the joins and leaves since the last flush into a batch.
// Called once per tick (Server.OnTick).
func (p *presence) flush(city string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.joined) == 0 && len(p.left) == 0 {
		return
	}
	var frames []byte
	if len(p.joined) > 0 {
		frames = codec.AppendFrame(frames, ws.OpText, p.appendEvent(nil, "user_joined", city, p.joined))
		clear(p.joined)
	}
	if len(p.left) > 0 {
		frames = codec.AppendFrame(frames, ws.OpText, p.appendEvent(nil, "user_left", city, p.left))
		clear(p.left)
	}
	g := p.gen.Load() + 1
	p.batches = append(p.batches, presenceBatch{gen: g, frames: frames})
	if len(p.batches) > presenceBatches {
		p.batches = slices.Delete(p.batches, 0, len(p.batches)-presenceBatches)
	}
	p.gen.Store(g)
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
	b = strconv.AppendInt(b, int64(len(p.members)), 10)
	b = appendUsers(b, p.members)
	return codec.AppendFrame(nil, ws.OpText, append(b, '}'))
}

// appendEvent appends a user_joined or user_left message's JSON.
func (p *presence) appendEvent(b []byte, typ, city string, users map[string]struct{}) []byte {
	b = append(b, `{"type":"`...)
	b = append(b, typ...)
	b = append(b, `","city":`...)
	b = codec.AppendString(b, city)
	b = append(b, `,"count":`...)
	b = strconv.AppendInt(b, int64(len(p.members)), 10)
	b = appendUsers(b, users)
	return append(b, '}')
}

// appendUsers appends ,"users":[…] with at most presenceMaxListed names,
// sorted, and ,"more":N for the rest.
func appendUsers[V any](b []byte, set map[string]V) []byte {
	names := make([]string, 0, len(set))
	for u := range set {
		names = append(names, u)
	}
	slices.Sort(names)
	more := 0
	if len(names) > presenceMaxListed {
		more = len(names) - presenceMaxListed
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

// flushPresence flushes the joins and leaves of every city that had some.
// Runs on gnet's ticker goroutine, before the loops' housekeeping sends
// the batches.
func (s *Server) flushPresence() {
	s.presenceMu.Lock()
	dirty := s.presenceDirty
	s.presenceDirty = nil
	s.presenceMu.Unlock()
	for _, c := range dirty {
		c.presenceDirty.Store(false)
		c.presence.flush(c.name)
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
			_, _ = cn.c.Write(frames)
		}
		if cn.state != stateOpen {
			return
		}
	}
}
