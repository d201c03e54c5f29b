package gateway

import (
	"context"
	"math/bits"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/metrocast/metrocast/codec"
	"github.com/metrocast/metrocast/gateway/auth"
)

// The housekeeping wheel. Every connection's periodic duties (its
// time-outs, token checks, ping, presence sends, the catch-up of a stalled
// subscriber) come round once per sweep (Config.sweep), at its own phase:
// the loop keeps its connections in wheelSlots slots, and each tick
// (Config.tick) visits only the slots due since the last, so that a tick
// touches a share of the connections instead of all of them at once. Pings
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
		if cn.flags&flagPartial != 0 && msSince(l.now, cn.partialAt) > cfg.FrameTimeout && !cn.unread() {
			l.closeConn(cn, CloseFrameTimeout)
			return
		}
		idle := msSince(l.now, cn.lastRead)
		if late > 0 {
			// The time the loop was not looking is not the client's
			// silence: it was not pinged, and its pong or its bytes
			// may be waiting unread. A client that answers every
			// ping is not closed because the node stalled.
			forgiven := min(time.Duration(late), idle)
			cn.lastRead += uint32(forgiven / time.Millisecond)
			idle -= forgiven
		}
		switch {
		case idle > cfg.IdleTimeout && !cn.unread():
			l.closeConn(cn, CloseIdle)
			return
		case int64(idle) >= quiet && l.pingDue(cn, since):
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
	n, err := unix.IoctlGetInt(int(cn.fd), unix.SIOCINQ)
	return err == nil && n > 0
}

// newRevocations returns the key set in force when it changed since the
// loop last looked (a reload, Server.ReloadKeys, Server.Revoke, new keys
// from a JWKS URL) and revokes something, so that housekeeping checks
// every connection against its revocations once; else nil. Runs on the
// loop.
func (l *loop) newRevocations() *auth.KeySet {
	if l.s.auth == nil {
		return nil
	}
	ks := l.s.auth.Keys()
	if ks == l.keys {
		return nil
	}
	l.keys = ks
	if !ks.RevokesAny() {
		return nil
	}
	return ks
}

// revokeAll sends auth_error to every open connection whose token ks
// revokes, and closes it (4001). Runs on the loop, in housekeeping.
func (l *loop) revokeAll(ks *auth.KeySet) {
	l.iterating = true
	for _, conns := range l.wheel {
		for _, cn := range conns {
			if g := cn.grant; cn.state == stateOpen && g != nil && ks.Revokes(g.Sub(), g.JTI(), l.now) {
				cn.authFail(auth.CodeRevoked, "the token was revoked")
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
		cn.authFail(auth.CodeTimeout, "no auth message within "+cfg.AuthTimeout.String())
	case g.Exp() == 0 || time.Unix(0, l.now).Before(g.ExpPlus(-cfg.TokenExpiryWarning)):
		return true
	case !time.Unix(0, l.now).After(g.ExpPlus(cfg.TokenGrace)):
		if cn.flags&flagWarned == 0 {
			cn.flags |= flagWarned
			exp, closeAt := g.Deadlines(cfg.TokenGrace)
			l.send(cn, codec.AppendTokenEvent(l.out[:0], "token_expiring", exp, closeAt))
		}
		return cn.state == stateOpen
	case cn.flags&flagHTTP != 0:
		// A stream cannot send refresh.
		cn.authFail(auth.CodeExpired, "the token expired: reconnect with a fresh token and Last-Event-ID (or since= and epoch=)")
	default:
		cn.authFail(auth.CodeExpired, "the token expired; send {\"type\":\"refresh\",\"token\":…} before closeAt")
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

var pingFrame = codec.AppendFrame(nil, ws.OpPing, nil)

// housekeepAll schedules housekeeping on every loop that has none pending.
// Safe for concurrent use.
func (s *Server) housekeepAll() {
	for _, l := range *s.loops.Load() {
		if l.housekeep.CompareAndSwap(false, true) {
			if l.el.Execute(context.Background(), l.hkTask) != nil {
				l.housekeep.Store(false)
			}
		}
	}
}
