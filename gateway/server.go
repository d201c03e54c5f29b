// Package gateway is the metrocast node: WebSocket connections on gnet
// event loops, per-city rings, fanout, and the TCP ingest port.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/metrocast/metrocast/codec"
)

// Server is one metrocast node. Create it with New, run it with Start, stop
// it with Shutdown. Its methods are safe for concurrent use.
type Server struct {
	gnet.BuiltinEventEngine

	cfg      Config                 // as started; see live
	live     atomic.Pointer[Config] // cfg with the settings Reload changed
	reloadMu sync.Mutex
	epoch    uint64
	hub      *hub
	upgrader codec.Upgrader

	eng    gnet.Engine
	addr   net.Addr
	booted chan struct{}
	done   chan error
	drain  atomic.Pointer[drainPlan] // set once, when Drain begins

	loopsMu sync.Mutex
	loops   atomic.Pointer[[]*loop] // copy on write, indexed by loop.idx

	accepted atomic.Uint64
	upgraded atomic.Uint64
	open     atomic.Int64

	ingest  *ingest
	admin   *admin
	metrics *serverMetrics

	// throttles of repeated warnings
	warnSlow, warnAccept, warnRejected throttle
}

// New checks cfg (after WithDefaults) and returns a server ready to Start.
func New(cfg Config) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg,
		// The epoch tells clients a restarted node from a continuing one:
		// seqs restart with it.
		epoch:    uint64(time.Now().UnixMilli()),
		upgrader: codec.Upgrader{Path: cfg.Path, MaxHeaderBytes: cfg.MaxHeaderBytes},
		booted:   make(chan struct{}),
		done:     make(chan error, 1),
	}
	for _, t := range []*throttle{&s.warnSlow, &s.warnAccept, &s.warnRejected} {
		t.period = warnEvery
	}
	s.live.Store(&cfg)
	s.hub = newHub(&s.cfg, cfg.Loops)
	s.loops.Store(new([]*loop))
	s.metrics = newServerMetrics(s)
	return s, nil
}

// Start listens on the WebSocket, ingest and admin addresses and returns
// once all three accept connections.
func (s *Server) Start() error {
	ing, err := s.listenIngest()
	if err != nil {
		return err
	}
	adm, err := s.listenAdmin()
	if err != nil {
		ing.close()
		return err
	}
	go func() {
		s.done <- gnet.Run(s, "tcp://"+s.cfg.Addr,
			gnet.WithMulticore(true),
			gnet.WithNumEventLoop(s.cfg.Loops),
			gnet.WithTicker(true),
			gnet.WithReusePort(false),
			gnet.WithLogger(gnetLogger{s.cfg.Logger}),
		)
	}()
	select {
	case <-s.booted:
	case err := <-s.done:
		ing.close()
		_ = adm.ln.Close()
		return fmt.Errorf("cannot listen on %s: %w", s.cfg.Addr, err)
	}
	s.ingest, s.admin = ing, adm
	go ing.serve()
	go adm.serve()
	s.cfg.Logger.Info("metrocast listening", "ws", "ws://"+s.addr.String()+s.cfg.Path,
		"ingest", ing.ln.Addr().String(), "admin", "http://"+adm.ln.Addr().String(),
		"loops", s.cfg.Loops, "epoch", s.epoch)
	return nil
}

// Addr is the WebSocket listen address (useful with port 0).
func (s *Server) Addr() net.Addr { return s.addr }

// IngestAddr is the ingest listen address.
func (s *Server) IngestAddr() net.Addr { return s.ingest.ln.Addr() }

// Epoch identifies this run of the node; it is sent to clients.
func (s *Server) Epoch() uint64 { return s.epoch }

// Reload applies the live settings of next (LiveKeys) to the running
// server and ignores the others, which take a restart. next is completed
// with WithDefaults and must pass Validate, as must the result; on error
// nothing changes. Event loops apply the change at once (a housekeeping
// pass is scheduled), producers at their next write or connection. Safe
// for concurrent use.
func (s *Server) Reload(next Config) error {
	next = next.WithDefaults()
	if err := next.Validate(); err != nil {
		return err
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	cfg := *s.live.Load()
	for _, ls := range liveSettings {
		ls.apply(&cfg, &next)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	s.live.Store(&cfg)
	s.housekeepAll()
	return nil
}

// Shutdown drains the node over the drain window: see Drain.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.Drain(ctx, s.live.Load().DrainWindow)
}

// drainPlan is a drain in progress: the loops close their clients evenly
// between start (Unix nanoseconds) and start+span.
type drainPlan struct {
	start int64
	span  int64
}

// drainShare is the part of the drain window over which clients are
// closed; the rest is for the producers and for the loops to stop.
const drainShare = 0.9

// Drain stops the node without a thundering herd. /readyz answers 503 at
// once and new connections are closed as they arrive (gnet cannot pause
// its listener without stopping the loops). The clients are closed evenly
// over the first 90% of window, per loop, from the loops' housekeeping:
// each open one is sent {"type":"reconnect","after_ms":N} (N random below
// a second) and then closed with 1001, so that the nodes they move to see a
// steady trickle. Then the producers are answered for every line read and
// closed (the lines not read yet get no answer: they were not stored), and
// the loops and the admin port stop. A window of 0 closes every client at
// once. Drain returns when the node has stopped or ctx expires; without a
// deadline, ctx is bounded to window (at least a second). Safe for
// concurrent use; a second call fails.
func (s *Server) Drain(ctx context.Context, window time.Duration) error {
	span := time.Duration(float64(max(window, 0)) * drainShare)
	if !s.drain.CompareAndSwap(nil, &drainPlan{start: time.Now().UnixNano(), span: int64(span)}) {
		return errors.New("shutdown already in progress")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, max(window, time.Second))
		defer cancel()
	}
	s.cfg.Logger.Info("draining", "clients", s.open.Load(), "window", window)
	s.paceCloses(ctx, span)
	s.ingest.close()
	s.ingest.wait(ctx)
	err := s.stopEngine(ctx)
	s.admin.close(ctx)
	return err
}

// draining reports whether Drain has begun. Safe for concurrent use.
func (s *Server) draining() bool { return s.drain.Load() != nil }

// paceCloses drives the loops' housekeeping, which closes the clients due
// (loop.drainStep), every few milliseconds until no client is left or ctx
// expires.
func (s *Server) paceCloses(ctx context.Context, span time.Duration) {
	t := time.NewTicker(min(max(span/200, 5*time.Millisecond), 50*time.Millisecond))
	defer t.Stop()
	for {
		s.housekeepAll()
		if s.open.Load() == 0 {
			return
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

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

// stopEngine stops the event loops and waits for gnet.Run to return:
// sooner than Engine.Stop, which polls for the end every 500 ms.
func (s *Server) stopEngine(ctx context.Context) error {
	stopCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = s.eng.Stop(stopCtx) }()
	select {
	case err := <-s.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Connections: s.open.Load(),
		Accepted:    s.accepted.Load(),
		Upgraded:    s.upgraded.Load(),
		Closes:      make(map[string]uint64, closeReasons),
		Cities:      s.hub.count.Load(),
	}
	for _, name := range closeReasonNames {
		st.Closes[name] = 0
	}
	s.hub.each(func(c *city) { st.RingEvictions += c.ring.evictions.Load() })
	for _, l := range *s.loops.Load() {
		st.Subscriptions += l.stats.subscriptions.Load()
		st.Deliveries += l.stats.deliveries.Load()
		st.BytesWritten += l.stats.bytesWritten.Load()
		st.Conflations += l.stats.conflations.Load()
		st.Stalls += l.stats.stalls.Load()
		for r := range l.stats.closes {
			st.Closes[CloseReason(r).String()] += l.stats.closes[r].Load()
		}
	}
	if s.ingest != nil {
		s.ingest.stats(&st)
	}
	return st
}

// OnBoot records the engine and the bound address.
func (s *Server) OnBoot(eng gnet.Engine) gnet.Action {
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

func sockaddrToTCP(sa unix.Sockaddr) *net.TCPAddr {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
	}
	return nil
}

// loopOf returns the state of the event loop el, creating it on first use.
// Runs on el.
func (s *Server) loopOf(el gnet.EventLoop) *loop {
	for _, l := range *s.loops.Load() {
		if l.el == el {
			return l
		}
	}
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	old := *s.loops.Load()
	if len(old) >= s.cfg.Loops {
		panic("BUG: more event loops than Config.Loops")
	}
	l := newLoop(s, len(old), el)
	loops := append(old[:len(old):len(old)], l)
	s.loops.Store(&loops)
	return l
}

// OnOpen sets up a new connection. Runs on its loop.
func (s *Server) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	s.accepted.Add(1)
	l := s.loopOf(c.EventLoop())
	if s.draining() {
		l.stats.closes[CloseShutdown].Add(1)
		return nil, gnet.Close
	}
	l.now = time.Now().UnixNano()
	if n := l.cfg.SocketSendBuffer; n > 0 {
		_ = c.SetWriteBuffer(n)
	}
	cn := &conn{c: c, l: l, opened: l.now, lastRead: l.now}
	c.SetContext(cn)
	l.addConn(cn)
	s.open.Add(1)
	return nil, gnet.None
}

// OnTraffic reads what the connection sent. Runs on its loop.
func (s *Server) OnTraffic(c gnet.Conn) gnet.Action {
	cn, ok := c.Context().(*conn)
	if !ok {
		return gnet.Close
	}
	cn.l.now = time.Now().UnixNano()
	return cn.traffic()
}

// OnClose forgets the connection. Runs on its loop, possibly from inside a
// write that failed.
func (s *Server) OnClose(c gnet.Conn, _ error) gnet.Action {
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
	s.open.Add(-1)
	return gnet.None
}

// OnTick schedules housekeeping on every loop. Runs on gnet's ticker
// goroutine.
func (s *Server) OnTick() (time.Duration, gnet.Action) {
	s.housekeepAll()
	return s.live.Load().tick(), gnet.None
}

// publish stores one ingest message and wakes the loops that follow its
// city. Safe for concurrent use.
func (s *Server) publish(in *codec.Ingest, now time.Time) (uint64, error) {
	c, err := s.hub.city(in.City)
	if err != nil {
		return 0, err
	}
	f, err := c.publish(in, now)
	if err != nil {
		return 0, err
	}
	loops := *s.loops.Load()
	for i := range c.loopSubs {
		if c.loopSubs[i].Load() > 0 && i < len(loops) {
			loops[i].wake(c)
		}
	}
	return f.seq, nil
}
