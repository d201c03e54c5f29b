package gateway

import (
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// events is the server as gnet's event handler: where each connection's
// life and every read enter the core, on the connection's loop (OnTick
// on gnet's ticker goroutine). A type of its own, so that gnet's
// callbacks stay out of Server's API.
type events struct {
	gnet.BuiltinEventEngine
	s *Server
}

// OnBoot records the engine and the bound address.
func (e *events) OnBoot(eng gnet.Engine) gnet.Action {
	s := e.s
	s.eng = eng
	fd, err := eng.Dup()
	if err == nil {
		if sa, err := unix.Getsockname(fd); err == nil {
			s.addr = sockaddrToTCP(sa)
		}
		_ = unix.Close(fd)
	}
	close(s.booted)
	return gnet.None
}

// OnOpen sets up a new connection. Runs on its loop.
func (e *events) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	s := e.s
	s.accepted.Add(1)
	l := s.loopOf(c.EventLoop())
	if s.isDraining() {
		l.stats.closes[CloseShutdown].Add(1)
		return nil, gnet.Close
	}
	l.now = time.Now().UnixNano()
	if n := l.cfg.SocketSendBuffer; n > 0 {
		_ = c.SetWriteBuffer(n)
	}
	cn := &conn{c: c, l: l, fd: int32(c.Fd()), opened: l.now, lastRead: msClock(l.now)}
	s.admit(cn)
	c.SetContext(cn)
	l.addConn(cn)
	s.open.Add(1)
	return nil, gnet.None
}

// OnTraffic reads what the connection sent. Runs on its loop.
func (e *events) OnTraffic(c gnet.Conn) gnet.Action {
	cn, ok := c.Context().(*conn)
	if !ok {
		return gnet.Close
	}
	l := cn.l
	l.now = time.Now().UnixNano()
	l.corked = cn
	act := cn.traffic()
	l.flush()
	if cn.state == stateClosed {
		return gnet.None
	}
	return act
}

// OnClose forgets the connection. Runs on its loop, possibly from inside a
// write that failed.
func (e *events) OnClose(c gnet.Conn, _ error) gnet.Action {
	s := e.s
	cn, ok := c.Context().(*conn)
	if !ok {
		return gnet.None
	}
	c.SetContext(nil)
	if cn.state < stateClosing {
		cn.reason = ClosePeer
	}
	cn.state = stateClosed
	cn.l.stats.closes[cn.reason].Add(1)
	cn.l.removeConn(cn)
	if cn.flags&flagAdmitted != 0 {
		s.admitted.Add(-1)
		switch {
		case cn.flags&flagProxied == 0:
			s.ips.release(ipKey(c.RemoteAddr()))
		case cn.client != nil:
			s.ips.release(*cn.client)
		}
	}
	s.open.Add(-1)
	return gnet.None
}

// OnTick schedules housekeeping on every loop, and flushes presence once
// a sweep: each watcher is visited once a sweep (at its phase), so a
// flush per tick would split the batches it sends into many small ones.
// Runs on gnet's ticker goroutine.
func (e *events) OnTick() (time.Duration, gnet.Action) {
	s := e.s
	cfg := s.live.Load()
	if now := time.Now(); now.Sub(s.flushedAt) >= cfg.sweep() {
		s.flushedAt = now
		s.flushPresence()
	}
	s.housekeepAll()
	return cfg.tick(), gnet.None
}
