package gateway

import (
	"context"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/metrocast/metrocast/codec"
)

// Fanout batching: one writev carries at most this many frames or bytes.
const (
	maxIOV       = 64
	maxIOVBytes  = 256 << 10
	maxLoopCache = 64 << 10
)

// loop is the state of one gnet event loop. Fields under "loop-owned" are
// touched only on the loop's goroutine; the rest are safe for concurrent
// use.
type loop struct {
	s     *Server
	idx   int
	el    gnet.EventLoop
	stats loopStats

	// wake-ups from publishers
	mu        sync.Mutex
	pending   []*city // cities with new frames; each at most once (city.dirty)
	scheduled atomic.Bool
	wokeAt    atomic.Int64 // mono time of the wake that scheduled drainTask
	housekeep atomic.Bool
	drainTask gnet.RunnableFunc
	hkTask    gnet.RunnableFunc

	// loop-owned
	wheel     [wheelSlots][]*conn // connections by slot; conn.idx is the index in its slot
	nconns    int                 // in all slots
	hand      int                 // the slot housekeeping visits next
	handAt    int64               // when the hand last moved (Unix nanoseconds)
	visited   [wheelSlots]int64   // when housekeeping last visited each slot
	phases    uint32              // phases handed out (nextPhase)
	subs      map[*city][]*sub
	spare     []*city
	iov       [][]byte
	out       []byte // scratch for control frames and responses
	corked    *conn  // whose writes put holds back in cork, in OnTraffic
	cork      []byte
	wbuf      []byte // coalesces long fanout batches (see write)
	http      httpBufs
	fp        codec.FrameParser
	iterating bool    // inside a fanout: closes are deferred
	deferred  []*conn // closed while iterating
	now       int64   // Unix nanoseconds, refreshed per event
	subbed    []codec.SubscribedCity
	started   []started

	// loop-owned: live settings, metrics and drain
	cfg         *Config // the live settings (Server.live), refreshed each tick
	untilSample int     // write batches until the next latency sample
	drainBegun  bool    // drainTotal is set
	drainTotal  int     // connections held when the drain began
	keys        *keySet // the key set housekeeping last checked grants against
	tokens      tokenCache
}

func newLoop(s *Server, idx int, el gnet.EventLoop) *loop {
	l := &loop{s: s, idx: idx, el: el, subs: make(map[*city][]*sub), cfg: s.live.Load()}
	l.handAt = time.Now().UnixNano()
	for i := range l.visited {
		l.visited[i] = l.handAt
	}
	l.drainTask = l.drain
	l.hkTask = l.housekeeping
	return l
}

// wake tells the loop that c has new frames. Safe for concurrent use; a
// burst of frames for many cities costs one Execute per loop.
func (l *loop) wake(c *city) {
	if !c.dirty[l.idx].CompareAndSwap(false, true) {
		return
	}
	l.mu.Lock()
	l.pending = append(l.pending, c)
	l.mu.Unlock()
	if l.scheduled.CompareAndSwap(false, true) {
		l.wokeAt.Store(mono())
		_ = l.el.Execute(context.Background(), l.drainTask)
	}
}

// drain runs on the loop: it fans out every city that has new frames.
func (l *loop) drain(context.Context) error {
	l.s.metrics.taskLag.Update(seconds(mono() - l.wokeAt.Load()))
	l.scheduled.Store(false)
	l.mu.Lock()
	pending := l.pending
	l.pending = l.spare[:0]
	l.mu.Unlock()
	l.now = time.Now().UnixNano()
	for i, c := range pending {
		c.dirty[l.idx].Store(false)
		l.fanout(c)
		pending[i] = nil
	}
	l.spare = pending[:0]
	return nil
}

// fanout writes every local subscriber of c up to the ring's head. Runs on
// the loop.
//
// A fanout to thousands of subscribers takes milliseconds, and the last
// one waits for all the others: each fanout starts at another place in
// the list (fanoutStart), so that no subscriber is always last.
func (l *loop) fanout(c *city) {
	subs := l.subs[c]
	if len(subs) == 0 {
		return
	}
	head := c.ring.head.Load()
	start := fanoutStart(head, len(subs))
	l.iterating = true
	for _, part := range [2][]*sub{subs[start:], subs[:start]} {
		for _, s := range part {
			if s.cursor < head && !s.replaying {
				l.deliver(s, head)
			}
		}
	}
	l.iterating = false
	l.sweep()
}

// fanoutStart returns where in a list of n subscribers the fanout up to
// head begins: head's place in the golden-ratio (Weyl) sequence, scaled to
// n, so that successive frames start evenly spread over the list, and a
// subscriber's place in the order is as often near the front as near the
// back. It needs no state.
func fanoutStart(head uint64, n int) int {
	frac := head * 0x9E3779B97F4A7C15 >> 32
	return int(frac * uint64(n) >> 32)
}

// deliver writes s's frames after its cursor up to head, batching them into
// writev calls. A subscriber over the backlog limit is skipped (it catches up
// when it drains); one the ring has lapped is conflated. Runs on the loop;
// allocates nothing.
func (l *loop) deliver(s *sub, head uint64) {
	cn := s.conn
	// An SSE stream of several cities: the others' part of the event ids,
	// the same for every frame of this city's batch.
	var rest []byte
	if cn.flags&flagHTTP != 0 {
		rest = l.eventIDRest(s)
	}
	for s.cursor < head && cn.state == stateOpen {
		// room bounds the backlog to MaxBacklogBytes plus one frame.
		buffered := l.backlog(cn)
		room := l.cfg.MaxBacklogBytes - buffered
		if room <= 0 {
			if cn.flags&flagStalled == 0 {
				cn.flags |= flagStalled
				cn.stalledAt, cn.stallAcked = msClock(l.now), bytesAcked(cn.c)
				l.stats.stalls.Add(1)
			}
			return
		}
		if cn.flags&flagStalled != 0 && buffered > l.cfg.MaxBacklogBytes/2 {
			return // not drained enough yet: see unstall
		}
		cn.flags &^= flagStalled
		room = min(room, maxIOVBytes)
		iov, n, k, oldest := l.iov[:0], 0, 0, int64(0)
		for s.cursor < head && len(iov) < maxIOV && n < room {
			f := s.city.ring.get(s.cursor + 1)
			if f == nil {
				break
			}
			s.cursor = f.pos
			if f.seq <= s.seq {
				// Seen already: the client resumed (cluster mode) from a
				// node further ahead than this one.
				continue
			}
			s.seq = f.seq
			if s.filter.Pass(f.kind, f.sev) {
				if k == 0 {
					oldest = f.accepted
				}
				k++
				if cn.flags&flagHTTP != 0 {
					iov, n = l.appendEvent(iov, n, s, f, s.city.ring.mem, rest)
				} else {
					iov = append(iov, f.b)
					n += len(f.b)
				}
			}
		}
		if k == 0 && s.cursor < head {
			l.conflate(s)
			continue
		}
		if k > 0 {
			l.delivered(cn, k, n)
			l.write(cn, iov)
			if l.untilSample--; l.untilSample <= 0 {
				l.untilSample = 1 + rand.IntN(2*latencySampleEvery-1)
				l.s.metrics.latency.Update(seconds(mono() - oldest))
			}
		}
		clear(iov)
		l.iov = iov[:0]
	}
}

// delivered counts frames (and their bytes) written to cn. Runs on the
// loop.
func (l *loop) delivered(cn *conn, frames, bytes int) {
	l.stats.deliveries.Add(uint64(frames))
	l.stats.bytesWritten.Add(uint64(bytes))
	if cn.flags&flagHTTP != 0 {
		l.stats.sse.deliveries.Add(uint64(frames))
		l.stats.sse.bytesWritten.Add(uint64(bytes))
	}
}

// latencySampleEvery is how many write batches a loop makes, on average,
// per delivery latency sample. Timing a batch costs ~35 ns (a clock read
// and an update of the histogram both loops share, measured alone), about
// 1% of a one-frame write and more when the loops contend for the
// histogram's lock; one batch in 16, at random intervals so that the
// sample does not lock onto one subscriber's place in a fanout, costs ~2 ns
// a batch and does not show in a CPU profile of BenchmarkFanoutBurst.
const latencySampleEvery = 16

// maxStackIOV is how many buffers x/sys/unix passes to writev without
// allocating its iovec array.
const maxStackIOV = 8

// write sends a batch of frames in one system call. Up to maxStackIOV frames
// go out with writev as they are; a longer batch is copied into the loop's
// write buffer first, because x/sys/unix allocates the iovecs for more than
// eight buffers and a copy of a few KiB is cheaper than a second system call
// (BenchmarkFanoutBurst). gnet copies whatever the socket does not take at
// once, so the buffer is free again on return. Writing may close the conn
// (EPIPE) and call OnClose from inside; callers iterating sweep after.
func (l *loop) write(cn *conn, iov [][]byte) {
	if len(iov) <= maxStackIOV || l.corked == cn {
		l.putv(cn, iov)
		return
	}
	b := l.wbuf[:0]
	for _, f := range iov {
		b = append(b, f...)
	}
	l.wbuf = b
	l.put(cn, b)
}

// conflate replaces a lapped subscriber's missed frames with the city's
// current state. Runs on the loop.
func (l *loop) conflate(s *sub) {
	f := s.city.initialFrame(l.s.epoch)
	s.cursor, s.seq = f.pos, f.seq
	l.stats.conflations.Add(1)
	if s.conn.flags&flagHTTP != 0 {
		l.stats.sse.conflations.Add(1)
	}
	l.writeFrame(s, f)
}

// finishReplay continues a subscription that waited for frames from the
// stream (cluster.replay): it writes the fetched frames up to the first
// point from which the ring holds every frame, then goes on from the ring
// like any subscriber. When the stream could not serve it, or the ring
// moved past the fetched frames meanwhile, the subscriber is conflated
// (initial_data, resumed false) instead. Runs on the loop.
func (l *loop) finishReplay(sb *sub, since uint64, frames []*frame, ok bool) {
	cn := sb.conn
	if cn.state != stateOpen || !slices.Contains(cn.subs, sb) {
		return // gone while the frames were fetched
	}
	sb.replaying = false
	resumed, upTo, last := false, 0, since
	for ok && upTo <= len(frames) {
		if upTo > 0 {
			last = frames[upTo-1].seq
		}
		if sb.cursor, resumed = sb.city.resume(last); resumed {
			break
		}
		upTo++
	}
	if !resumed {
		l.conflate(sb)
	} else {
		sb.seq = last
		for _, f := range frames[:upTo] {
			if cn.state != stateOpen {
				return
			}
			if sb.filter.Pass(f.kind, f.sev) {
				l.delivered(cn, 1, l.writeFrame(sb, f))
			}
		}
	}
	if head := sb.city.ring.head.Load(); sb.cursor < head && cn.state == stateOpen {
		l.deliver(sb, head)
	}
}

// addSub registers s with the loop and its city. Runs on the loop.
func (l *loop) addSub(s *sub) {
	list := l.subs[s.city]
	if len(list) == 0 {
		s.city.loopSubs[l.idx].Add(1)
	}
	s.city.subs.Add(1)
	l.stats.subscriptions.Add(1)
	if s.conn.flags&flagHTTP != 0 {
		l.stats.sse.subscriptions.Add(1)
	}
	s.idx = len(list)
	l.subs[s.city] = append(list, s)
}

// removeSub unregisters s. Runs on the loop, never inside a fanout of
// s.city (closes there are deferred to sweep).
func (l *loop) removeSub(s *sub) {
	if s.presence {
		s.city.presence.leave(s.conn.grant.sub)
		l.s.presenceChanged(s.city)
	}
	if s.city.subs.Add(-1) == 0 {
		// Idle from now on, not from its last frame (hub.sweep).
		s.city.active.Store(mono())
	}
	l.stats.subscriptions.Add(-1)
	if s.conn.flags&flagHTTP != 0 {
		l.stats.sse.subscriptions.Add(-1)
	}
	list := l.subs[s.city]
	last := len(list) - 1
	list[s.idx] = list[last]
	list[s.idx].idx = s.idx
	list[last] = nil
	if last == 0 {
		delete(l.subs, s.city)
		s.city.loopSubs[l.idx].Add(-1)
		return
	}
	l.subs[s.city] = list[:last]
}

// addConn registers a new connection in the slot of its phase. Runs on
// the loop.
func (l *loop) addConn(cn *conn) {
	cn.phase = l.nextPhase()
	slot := &l.wheel[cn.slot()]
	cn.idx = int32(len(*slot))
	*slot = append(*slot, cn)
	l.nconns++
}

// removeConn forgets a closed connection and its subscriptions. Runs on the
// loop.
func (l *loop) removeConn(cn *conn) {
	if l.iterating {
		l.deferred = append(l.deferred, cn)
		return
	}
	for _, s := range cn.subs {
		l.removeSub(s)
	}
	cn.subs = nil
	// After its subscriptions: a reader that sees the stream gone sees
	// them gone too.
	if cn.flags&flagStream != 0 {
		l.stats.sse.streams.Add(-1)
	}
	slot := &l.wheel[cn.slot()]
	conns := *slot
	last := len(conns) - 1
	conns[cn.idx] = conns[last]
	conns[cn.idx].idx = cn.idx
	conns[last] = nil
	*slot = conns[:last]
	l.nconns--
}

// sweep removes the connections closed during an iteration.
func (l *loop) sweep() {
	for i, cn := range l.deferred {
		l.removeConn(cn)
		l.deferred[i] = nil
	}
	l.deferred = l.deferred[:0]
}

// The housekeeping wheel. Every connection's periodic duties (its
// time-outs, token checks, ping, presence sends, the catch-up of a stalled
// subscriber) come round once per sweep (Config.sweep), at its own phase:
// the loop keeps its connections in wheelSlots slots, and each tick visits
// only the slots due since the last, so that a tick touches a
// wheelSlots-th of the connections instead of all of them at once. Pings
// go further: each connection has its own instant in every PingInterval
// (pingDue), so that connections opened together, and answering together,
// are not pinged together for ever after.
const (
	wheelBits  = 5
	wheelSlots = 1 << wheelBits
)

// nextPhase returns the phase of the loop's next connection. Consecutive
// connections go round the slots; within a slot, their instants in the
// ping interval follow the van der Corput sequence (the bits of their
// number reversed), so that however many there are, each slot and each
// part of the interval hold an even share.
func (l *loop) nextPhase() uint32 {
	n := l.phases
	l.phases++
	return n%wheelSlots<<(32-wheelBits) | bits.Reverse32(n/wheelSlots)>>wheelBits
}

// slot is cn's place on the housekeeping wheel: the top bits of its phase.
func (cn *conn) slot() int { return int(cn.phase >> (32 - wheelBits)) }

// pingDue reports whether cn's ping instant, its phase of each interval
// (the low bits of its phase, as a fraction of the interval), fell after
// since: the previous visit of its slot.
func (l *loop) pingDue(cn *conn, since int64) bool {
	p := int64(l.cfg.PingInterval)
	off, _ := bits.Mul64(uint64(p), uint64(cn.phase<<wheelBits)<<32)
	return (l.now-int64(off))/p > (since-int64(off))/p
}

// housekeeping runs on the loop every tick: it visits the slots of the
// wheel due by now, and paces a drain. Revocations are checked against
// every connection at once, not at their phase: a revoked token is closed
// "at once" (Server.Revoke).
func (l *loop) housekeeping(context.Context) error {
	l.housekeep.Store(false)
	// Settings changed by Server.Reload apply from here on.
	l.cfg = l.s.live.Load()
	l.now = time.Now().UnixNano()
	if ks := l.newRevocations(); ks != nil {
		l.revokeAll(ks)
	}
	sweep := int64(l.cfg.sweep())
	step := sweep / wheelSlots
	due := (l.now - l.handAt) / step
	if due >= wheelSlots {
		// Late by a whole sweep (a reload, a stalled loop): one full
		// turn, and the wheel starts again from now.
		due, l.handAt = wheelSlots, l.now
	} else {
		l.handAt += due * step
	}
	quiet := l.cfg.pingQuiet()
	l.iterating = true
	for range due {
		slot := l.hand
		l.hand = (slot + 1) % wheelSlots
		since := l.visited[slot]
		l.visited[slot] = l.now
		// A visit more than a sweep late (a stalled loop, a starved
		// ticker): its connections were not pinged meanwhile.
		late := l.now - since - sweep
		if late <= sweep {
			late = 0
		}
		for _, cn := range l.wheel[slot] {
			l.visit(cn, since, quiet, late)
		}
	}
	l.iterating = false
	l.sweep()
	if p := l.s.draining.Load(); p != nil {
		l.drainStep(p)
	}
	if cap(l.out) > maxLoopCache {
		l.out = nil
	}
	if cap(l.cork) > maxLoopCache {
		l.cork = nil
	}
	if cap(l.wbuf) > maxIOVBytes+maxLoopCache {
		l.wbuf = nil
	}
	return nil
}

// visit does cn's periodic duties: its time-outs, token expiry, ping,
// catch-up and presence. since is the previous visit of its slot; quiet is
// Config.pingQuiet; late is how much later than a sweep after since the
// visit comes, when it is over a sweep late (else 0). Runs on the loop, in
// housekeeping.
func (l *loop) visit(cn *conn, since, quiet, late int64) {
	cfg := l.cfg
	switch cn.state {
	case stateHandshake:
		// From the accept, not the last byte: a client trickling its
		// request (slowloris) does not reset the clock. A connection
		// refused for a limit holds a descriptor only briefly.
		limit := int64(cfg.HandshakeTimeout)
		if cn.flags&(flagRefuseFull|flagRefuseIP) != 0 {
			limit = min(limit, int64(refuseWait))
		}
		if l.now-cn.opened > limit {
			l.closeConn(cn, CloseHandshakeTimeout)
		}
	case stateOpen:
		if cn.flags&flagHTTP != 0 {
			l.tickStream(cn, since)
			return
		}
		if !l.checkToken(cn) {
			return
		}
		if cn.flags&flagPartial != 0 && int64(msClock(l.now)-cn.partialAt) > cfg.FrameTimeout.Milliseconds() && !cn.unread() {
			l.closeConn(cn, CloseFrameTimeout)
			return
		}
		if late > 0 {
			// The time the loop was not looking is not the client's
			// silence: it was not pinged, and its pong or its bytes
			// may be waiting unread. A client that answers every
			// ping is not closed because the node stalled.
			cn.lastRead = min(cn.lastRead+late, l.now)
		}
		switch idle := l.now - cn.lastRead; {
		case idle > int64(cfg.IdleTimeout) && !cn.unread():
			l.closeConn(cn, CloseIdle)
			return
		case idle >= quiet && l.pingDue(cn, since):
			l.put(cn, pingFrame)
		}
		if cn.flags&flagStalled != 0 {
			l.unstall(cn)
		}
		if cn.flags&flagPresence != 0 && cn.state == stateOpen {
			l.sendPresence(cn)
		}
	case stateClosing:
		if cn.flags&flagHTTP != 0 {
			l.tickResponse(cn)
		}
	}
}

// unread reports whether bytes from the client wait in its socket, not
// yet read: the loop is behind (tasks run before the reads that came in
// meanwhile; a thread held back on a loaded machine), and a time-out that
// blames the client's silence would blame it for the loop's. Those bytes
// are read before the next visit judges again. One system call, made only
// before such a close. Runs on the loop.
func (cn *conn) unread() bool {
	n, err := unix.IoctlGetInt(cn.c.Fd(), unix.SIOCINQ)
	return err == nil && n > 0
}

// newRevocations returns the key set in force when it changed since the
// loop last looked (a reload, Server.ReloadKeys, Server.Revoke, new keys
// from a JWKS URL) and revokes something, so that housekeeping checks
// every connection against its revocations once; else nil. Runs on the
// loop.
func (l *loop) newRevocations() *keySet {
	if l.s.auth == nil {
		return nil
	}
	ks := l.s.auth.keys.Load()
	if ks == l.keys {
		return nil
	}
	l.keys = ks
	if !ks.revokesAny() {
		return nil
	}
	return ks
}

// revokeAll sends auth_error to every open connection whose token ks
// revokes, and closes it (4001). Runs on the loop, in housekeeping.
func (l *loop) revokeAll(ks *keySet) {
	l.iterating = true
	for _, conns := range l.wheel {
		for _, cn := range conns {
			if g := cn.grant; cn.state == stateOpen && g != nil && ks.revokes(g.sub, g.jti, l.now) {
				cn.authFail(authRevoked, "the token was revoked")
				l.closeFailed(cn)
			}
		}
	}
	l.iterating = false
	l.sweep()
}

// refuseWait bounds how long a connection refused for a limit (503, 429)
// may take to send its request before it is closed without an answer.
const refuseWait = time.Second

// checkToken enforces the auth time-out and the token's expiry: an
// unauthenticated connection past AuthTimeout, or one whose token expired
// more than TokenGrace ago, gets auth_error and is closed (4001); one
// whose token expires within TokenExpiryWarning is told once
// (token_expiring). It reports whether cn is still open. Runs on the loop,
// in housekeeping.
func (l *loop) checkToken(cn *conn) bool {
	cfg := &l.s.cfg
	g := cn.grant
	switch {
	case g == nil:
		if l.now-cn.opened <= int64(cfg.AuthTimeout) {
			return true
		}
		cn.authFail(authTimeout, "no auth message within "+cfg.AuthTimeout.String())
	case g.exp == 0 || time.Unix(0, l.now).Before(g.expPlus(-cfg.TokenExpiryWarning)):
		return true
	case !time.Unix(0, l.now).After(g.expPlus(cfg.TokenGrace)):
		if cn.flags&flagWarned == 0 {
			cn.flags |= flagWarned
			exp, closeAt := g.deadlines(cfg)
			l.send(cn, codec.AppendTokenEvent(l.out[:0], "token_expiring", exp, closeAt))
		}
		return cn.state == stateOpen
	case cn.flags&flagHTTP != 0:
		// A stream cannot send refresh.
		cn.authFail(authExpired, "the token expired: reconnect with a fresh token and Last-Event-ID (or since= and epoch=)")
	default:
		cn.authFail(authExpired, "the token expired; send {\"type\":\"refresh\",\"token\":…} before closeAt")
	}
	l.closeFailed(cn)
	return false
}

// closeFailed closes a connection that authFail has sent auth_error and
// marked closing, unless that write closed it already. Runs on the loop.
func (l *loop) closeFailed(cn *conn) {
	if cn.state != stateClosed {
		_ = l.el.Close(cn.c)
	}
}

// unstall resumes a stalled connection whose backlog drained, or closes it
// once it has been stuck for SlowTimeout. Runs on the loop.
//
// A stalled connection resumes only once half its backlog has drained: a
// stuck client whose kernel still takes a few bytes now and then (it merges
// small segments to free receive space) would otherwise dip under the limit,
// resume, and restart its slow clock forever.
//
// Stuck means taking less than half the limit in SlowTimeout, not staying
// over it that long. The backlog counted is gnet's; the socket buffers in
// front of it (the node's send buffer, the client's receive buffer:
// megabytes each with the kernel's autotuning) fill first and drain first.
// A client that pauses for less than SlowTimeout and then reads as fast as
// frames come must read all of that before gnet's backlog moves, and was
// closed though it never stopped for SlowTimeout (TestPausedReaders). So
// the clock restarts whenever the peer has acknowledged another half of
// the limit (TCP_INFO): a reading client is slow, not stuck, and is
// conflated once it has caught up with what it was sent.
func (l *loop) unstall(cn *conn) {
	if cn.c.OutboundBuffered() > l.cfg.MaxBacklogBytes/2 {
		now := msClock(l.now)
		if acked := bytesAcked(cn.c); acked-cn.stallAcked >= uint32(min(l.cfg.MaxBacklogBytes/2, math.MaxInt32)) {
			cn.stalledAt, cn.stallAcked = now, acked
			return
		}
		if stuck := time.Duration(now-cn.stalledAt) * time.Millisecond; stuck > l.cfg.SlowTimeout {
			l.s.warn(&l.s.warnSlow, "closed a slow consumer", "client", cn.c.RemoteAddr().String(),
				"stuck", stuck, "backlog_bytes", cn.c.OutboundBuffered())
			l.closeConn(cn, CloseSlowConsumer)
		}
		return
	}
	cn.flags &^= flagStalled
	for _, s := range cn.subs {
		if head := s.city.ring.head.Load(); s.cursor < head && !s.replaying {
			l.deliver(s, head)
		}
	}
}

// bytesAcked returns the low 32 bits of the bytes c's peer has
// acknowledged (TCP_INFO's tcpi_bytes_acked, Linux 4.1 on), or 0 when the
// kernel does not say: then no progress shows, and a stalled client is
// judged by its backlog alone. Costs a system call; called only for
// stalled connections.
func bytesAcked(c gnet.Conn) uint32 {
	info, err := unix.GetsockoptTCPInfo(c.Fd(), unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0
	}
	return uint32(info.Bytes_acked)
}

var pingFrame = codec.AppendFrame(nil, ws.OpPing, nil)

// closeCodes maps a close reason to its close frame; reasons without one
// (the peer left, HTTP-stage failures) map to 0.
var closeCodes = [closeReasons]ws.StatusCode{
	CloseProtocol:        ws.StatusProtocolError,
	CloseTooBig:          ws.StatusMessageTooBig,
	CloseInvalidUTF8:     ws.StatusInvalidFramePayloadData,
	CloseUnsupportedData: ws.StatusUnsupportedData,
	CloseAbuse:           ws.StatusPolicyViolation,
	CloseSlowConsumer:    ws.StatusPolicyViolation,
	CloseIdle:            ws.StatusGoingAway,
	CloseShutdown:        ws.StatusGoingAway,
	CloseAuthFailed:      StatusAuthFailed,
	CloseAuthTimeout:     StatusAuthFailed,
	CloseTokenExpired:    StatusAuthFailed,
	CloseRateLimited:     ws.StatusPolicyViolation,
	CloseFrameTimeout:    ws.StatusPolicyViolation,
}

// StatusAuthFailed is the close code after an auth_error: the token was
// refused, missing, or expired (4000-4999 are for applications, RFC 6455
// §7.4.2).
const StatusAuthFailed = 4001

// closeConn sends the close frame for reason and closes cn. Runs on the
// loop, but not inside OnTraffic: there, call beginClose and return
// gnet.Close.
func (l *loop) closeConn(cn *conn, reason CloseReason) {
	if cn.state >= stateClosing {
		return
	}
	l.beginClose(cn, reason, reason.String())
	if cn.state != stateClosed {
		_ = l.el.Close(cn.c)
	}
}

// beginClose sends the close frame for reason, if it has one, and marks cn
// closing. The write may fail and close cn at once (state becomes
// stateClosed). Runs on the loop.
func (l *loop) beginClose(cn *conn, reason CloseReason, msg string) {
	if cn.state >= stateClosing {
		return
	}
	open := cn.state == stateOpen
	cn.state = stateClosing
	cn.reason = reason
	if code := closeCodes[reason]; code != 0 && open {
		l.send(cn, codec.AppendClose(l.out[:0], code, msg))
	}
}

// send writes a message built in l.out. The codec's encoders return the
// frame alone, which starts a few bytes into the buffer (the header is
// right-aligned against the payload): keep l.out itself unless the encoder
// had to grow it. Runs on the loop.
func (l *loop) send(cn *conn, frame []byte) {
	if cap(frame) > cap(l.out) {
		l.out = frame[:0]
	}
	if cn.flags&flagHTTP != 0 {
		l.sendEvent(cn, frame)
		return
	}
	l.put(cn, frame)
}

// put writes b to cn: at once, or, while cn's inbound bytes are being
// handled (OnTraffic: cn is l.corked), into l.cork, which flush writes
// when they are done, so that the answers to one read (the upgrade's 101,
// subscribed and initial_data; the replies to a batch of messages) leave
// in one system call, as nats-server flushes once per read. Runs on the
// loop.
func (l *loop) put(cn *conn, b []byte) {
	if l.corked == cn {
		l.cork = append(l.cork, b...)
		return
	}
	_, _ = cn.c.Write(b)
}

// putv is put for several buffers. Runs on the loop.
func (l *loop) putv(cn *conn, iov [][]byte) {
	if l.corked == cn {
		for _, b := range iov {
			l.cork = append(l.cork, b...)
		}
		return
	}
	_, _ = cn.c.Writev(iov)
}

// flush writes what put held back for l.corked, and ends the hold. The
// write may close the connection (OnClose runs from inside). Runs on the
// loop, at the end of OnTraffic (or before, to have the bytes out now).
func (l *loop) flush() {
	cn := l.corked
	l.corked = nil
	if cn != nil && len(l.cork) > 0 && cn.state != stateClosed {
		_, _ = cn.c.Write(l.cork)
	}
	l.cork = l.cork[:0]
}

// backlog is what cn has to send that the socket has not taken yet:
// gnet's outbound buffer and, in OnTraffic, what put holds back. Runs on
// the loop.
func (l *loop) backlog(cn *conn) int {
	n := cn.c.OutboundBuffered()
	if l.corked == cn {
		n += len(l.cork)
	}
	return n
}
