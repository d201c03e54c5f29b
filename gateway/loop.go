package gateway

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/metrocast/metrocast/codec"
	"github.com/metrocast/metrocast/gateway/auth"
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
	vec       [maxStackIOV]unix.Iovec // writeNow's iovecs
	one       [1][]byte               // put's iov for writeNow
	out       []byte                  // scratch for control frames and responses
	corked    *conn                   // whose writes put holds back in cork, in OnTraffic
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
	cfg         *Config      // the live settings (Server.live), refreshed each tick
	untilSample int          // write batches until the next latency sample
	drainBegun  bool         // drainTotal is set
	drainTotal  int          // connections held when the drain began
	keys        *auth.KeySet // the key set housekeeping last checked grants against
	tokens      auth.TokenCache
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
	l.one[0] = b
	iov := l.one[:]
	if !l.writeNow(cn, &iov) {
		cn.flags |= flagQueued
		_, _ = cn.c.Writev(iov)
	}
	l.one[0] = nil
}

// putv is put for several buffers. Runs on the loop.
func (l *loop) putv(cn *conn, iov [][]byte) {
	if l.corked == cn {
		for _, b := range iov {
			l.cork = append(l.cork, b...)
		}
		return
	}
	if !l.writeNow(cn, &iov) {
		cn.flags |= flagQueued
		_, _ = cn.c.Writev(iov)
	}
}

// flush writes what put held back for l.corked, and ends the hold. The
// write may close the connection (OnClose runs from inside). Runs on the
// loop, at the end of OnTraffic (or before, to have the bytes out now).
func (l *loop) flush() {
	cn := l.corked
	l.corked = nil
	if cn != nil && len(l.cork) > 0 && cn.state != stateClosed {
		l.put(cn, l.cork)
	}
	l.cork = l.cork[:0]
}

// queued is what gnet's outbound buffer holds for cn, bytes that must
// leave before any written now (writeNow). Only put and putv hand gnet
// bytes, and they set flagQueued when they do: while it is clear, gnet's
// conn is not looked at, a cache line less a delivery (gnet's
// OutboundBuffered was 3.4% of the node's CPU at 50,000 deliveries/s to
// 10,000 connections). Cleared once gnet's buffer is seen empty. Runs on
// the loop.
func (cn *conn) queued() int {
	if cn.flags&flagQueued == 0 {
		return 0
	}
	n := cn.c.OutboundBuffered()
	if n == 0 {
		cn.flags &^= flagQueued
	}
	return n
}

// backlog is what cn has to send that the socket has not taken yet:
// gnet's outbound buffer and, in OnTraffic, what put holds back. Runs on
// the loop.
func (l *loop) backlog(cn *conn) int {
	n := cn.queued()
	if l.corked == cn {
		n += len(l.cork)
	}
	return n
}
