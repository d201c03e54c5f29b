package gateway

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// The fanout. A city's new frame wakes each loop that holds subscribers
// of the city (wake: one Execute per loop per burst, whatever the number
// of frames and cities); the loop's drain task fans each woken city out
// (fanout) to its subscribers there, and deliver writes each subscriber
// the frames from its cursor up to the ring's head, several per writev.
// A subscriber whose backlog is over MaxBacklogBytes is skipped until it
// drains (unstall); one the ring laps meanwhile is conflated to a fresh
// initial_data. Everything here but wake and Server.wakeCity runs on the
// loop and allocates nothing per delivery (BenchmarkFanout, -benchmem).

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
	start := fanoutStart(c.ring.head.Load(), len(subs))
	l.iterating = true
	for _, part := range [2][]*sub{subs[start:], subs[:start]} {
		for _, s := range part {
			// The head as of s's turn: a frame that came during the
			// fanout goes to the subscribers not written yet in the same
			// writev as the frames before it, not a whole fanout later.
			if head := c.ring.head.Load(); s.cursor < head && !s.replaying {
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
	if s.fresh && cn.state == stateOpen {
		// Its initial_data waited for room (subscribe): the city's state
		// as of now, and the frames after it.
		if l.room(cn) == 0 {
			return
		}
		f := s.city.initialFrame(l.s.epoch)
		s.cursor, s.seq, s.fresh = f.pos, f.seq, false
		l.writeFrame(s, f)
	}
	// An SSE stream of several cities: the others' part of the event ids,
	// the same for every frame of this city's batch.
	var rest []byte
	if cn.flags&flagHTTP != 0 {
		rest = l.eventIDRest(s)
	}
	for s.cursor < head && cn.state == stateOpen {
		// room bounds the backlog to MaxBacklogBytes plus one frame.
		room := l.room(cn)
		if room == 0 {
			return
		}
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

// room returns how many bytes cn may be sent before its backlog reaches
// MaxBacklogBytes, or 0 when it is over it (it is then marked stalled, and
// unstall takes over) or stalled and not yet drained to half of it. Runs
// on the loop.
func (l *loop) room(cn *conn) int {
	buffered := l.backlog(cn)
	room := l.cfg.MaxBacklogBytes - buffered
	if room <= 0 {
		if cn.flags&flagStalled == 0 {
			cn.flags |= flagStalled
			cn.stalledAt, cn.stallAcked = msClock(l.now), bytesAcked(cn)
			l.stats.stalls.Add(1)
		}
		return 0
	}
	if cn.flags&flagStalled != 0 && buffered > l.cfg.MaxBacklogBytes/2 {
		return 0 // not drained enough yet: see unstall
	}
	cn.flags &^= flagStalled
	return room
}

// delivered counts a write of frames (and their bytes) to cn. Runs on the
// loop.
func (l *loop) delivered(cn *conn, frames, bytes int) {
	l.stats.writes.Add(1)
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

// maxStackIOV is how many buffers one writev of writeNow takes (its iovecs
// are the loop's vec).
const maxStackIOV = 8

// write sends a batch of frames in one system call. Up to maxStackIOV frames
// go out with writev as they are; a longer batch is copied into the loop's
// write buffer first: a copy of a few KiB is cheaper than a second system
// call (BenchmarkFanoutBurst). gnet copies whatever the socket does not take at
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
// log (Bus.Fetch): it writes the fetched frames up to the first
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
		if acked := bytesAcked(cn); acked-cn.stallAcked >= uint32(min(l.cfg.MaxBacklogBytes/2, math.MaxInt32)) {
			cn.stalledAt, cn.stallAcked = msClock(l.now), acked
			return
		}
		if stuck := msSince(l.now, cn.stalledAt); stuck > l.cfg.SlowTimeout {
			l.s.warn(&l.s.warnSlow, "closed a slow consumer", "client", cn.c.RemoteAddr().String(),
				"stuck", stuck, "backlog_bytes", cn.c.OutboundBuffered())
			l.closeConn(cn, CloseSlowConsumer)
		}
		return
	}
	cn.flags &^= flagStalled
	for _, s := range cn.subs {
		if head := s.city.ring.head.Load(); (s.cursor < head || s.fresh) && !s.replaying {
			l.deliver(s, head)
		}
	}
}

// bytesAcked returns the low 32 bits of the bytes c's peer has
// acknowledged (TCP_INFO's tcpi_bytes_acked, Linux 4.1 on), or 0 when the
// kernel does not say: then no progress shows, and a stalled client is
// judged by its backlog alone. Costs a system call; called only for
// stalled connections.
func bytesAcked(cn *conn) uint32 {
	info, err := unix.GetsockoptTCPInfo(int(cn.fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0
	}
	return uint32(info.Bytes_acked)
}

// wakeCity wakes the loops that follow c after a publish. Safe for
// concurrent use.
func (s *Server) wakeCity(c *city) {
	loops := *s.loops.Load()
	for i := range c.loopSubs {
		if c.loopSubs[i].Load() > 0 && i < len(loops) {
			loops[i].wake(c)
		}
	}
}
