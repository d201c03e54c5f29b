package gateway

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/panjf2000/gnet/v2/pkg/socket"
	"golang.org/x/sys/unix"

	"github.com/metrocast/metrocast/codec"
	"github.com/metrocast/metrocast/gateway/auth"
	"github.com/metrocast/metrocast/gateway/ingest"
	"github.com/metrocast/metrocast/gateway/internal/limit"
)

// Server is one metrocast node. Create it with New, run it with Start, stop
// it with Shutdown. Its methods are safe for concurrent use.
type Server struct {
	cfg      Config                 // as started; see live
	live     atomic.Pointer[Config] // cfg with the settings Reload changed
	reloadMu sync.Mutex
	epoch    uint64
	hub      *hub
	upgrader codec.Upgrader

	eng      gnet.Engine
	addr     net.Addr
	booted   chan struct{}
	done     chan error
	stopped  chan struct{}             // closed by Drain: background goroutines stop
	draining atomic.Pointer[drainPlan] // set once, when Drain begins

	loopsMu sync.Mutex
	loops   atomic.Pointer[[]*loop] // copy on write, indexed by loop.idx

	accepted atomic.Uint64
	upgraded atomic.Uint64
	open     atomic.Int64
	admitted atomic.Int64 // connections counted against MaxConns

	auth    *auth.Authenticator // nil when insecure
	ips     *ipLimiter
	proxies proxies

	ingest  *ingest.Server
	admin   *admin
	metrics *serverMetrics
	// bus carries the ingest lines to the rings (bus.go); shared: its log
	// is shared with other nodes (View.Shared). Set before the node
	// listens.
	bus    Bus
	shared bool
	// poison counts the log's messages that are not valid ingest lines,
	// skipped (Node.Apply).
	poison atomic.Uint64

	presenceMu    sync.Mutex
	presenceDirty []*city   // cities with presence changes to flush
	flushedAt     time.Time // of presence, by OnTick; owned by gnet's ticker goroutine

	// throttles of repeated warnings
	warnSlow, warnBus, warnPoison, warnAdmin, warnCities limit.Throttle
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
		stopped:  make(chan struct{}),
		done:     make(chan error, 1),
	}
	for _, t := range []*limit.Throttle{&s.warnSlow, &s.warnBus, &s.warnPoison, &s.warnAdmin, &s.warnCities} {
		t.Period = limit.WarnEvery
	}
	s.live.Store(&cfg)
	s.hub = newHub(&s.cfg, cfg.Loops, s.epoch)
	s.hub.full = func(name string) {
		s.warn(&s.warnCities, "refused a new city: max_cities reached (idle cities are dropped after city_idle_ttl)",
			"city", name, "max_cities", s.cfg.MaxCities)
	}
	s.loops.Store(new([]*loop))
	s.metrics = newServerMetrics(s)
	s.ips = newIPLimiter(cfg.MaxConnsPerIP)
	s.proxies = newProxies(cfg.TrustedProxies)
	if !cfg.Insecure {
		a, err := auth.New(s.cfg.authConfig())
		if err != nil {
			return nil, err
		}
		s.auth = a
	}
	if s.bus = cfg.Bus; s.bus == nil {
		s.bus = newLocal(s)
	}
	return s, nil
}

// Start joins the bus's log (Bus.Open, Bus.Follow), then listens on the
// WebSocket, ingest and admin addresses and returns once all three accept
// connections.
func (s *Server) Start() error {
	v, err := s.bus.Open(&Node{s: s})
	if err != nil {
		return err
	}
	s.join(v)
	if err := s.bus.Follow(); err != nil {
		s.bus.Close()
		return err
	}
	ing, err := s.listenIngest()
	if err != nil {
		s.bus.Close()
		return err
	}
	adm, err := s.listenAdmin()
	if err != nil {
		ing.Close()
		s.bus.Close()
		return err
	}
	addr, release, err := reservePort(s.cfg.Addr)
	if err != nil {
		ing.Close()
		_ = adm.ln.Close()
		s.bus.Close()
		return fmt.Errorf("cannot listen on %s: %w", s.cfg.Addr, err)
	}
	go func() {
		s.done <- gnet.Run(&events{s: s}, "tcp://"+addr,
			gnet.WithMulticore(true),
			gnet.WithNumEventLoop(s.cfg.Loops),
			gnet.WithTicker(true),
			// Each loop accepts on a listener of its own (reservePort):
			// no hand-off from an accepting thread.
			gnet.WithReusePort(true),
			// The node closes its clients on a drain, so their sockets sit
			// in TIME_WAIT on our port: without SO_REUSEADDR a restart
			// cannot bind it for a minute (net.Listen sets it for ingest
			// and admin).
			gnet.WithReuseAddr(true),
			gnet.WithLogger(gnetLogger{s.cfg.Logger}),
		)
	}()
	select {
	case <-s.booted:
		// The first loop's listener holds the port now.
		release()
	case err := <-s.done:
		release()
		ing.Close()
		_ = adm.ln.Close()
		s.bus.Close()
		return fmt.Errorf("cannot listen on %s: %w", s.cfg.Addr, err)
	}
	s.ingest, s.admin = ing, adm
	go ing.Serve()
	go adm.serve()
	go s.sweepCities(s.stopped)
	if s.auth != nil {
		// Each returns at once when it has nothing to watch.
		go s.auth.WatchFiles(s.stopped)
		go s.auth.WatchJWKS(s.stopped)
	}
	attrs := []any{"ws", "ws://" + s.addr.String() + s.cfg.Path,
		"ingest", ing.Addr().String(), "admin", "http://" + adm.ln.Addr().String(),
		"loops", s.cfg.Loops, "epoch", s.epoch, "cluster", s.shared}
	if v.Node != "" {
		attrs = append(attrs, "node", v.Node)
	}
	s.cfg.Logger.Info("metrocast listening", attrs...)
	return nil
}

// reservePort binds a socket to addr as gnet's listeners will (the same
// address family, SO_REUSEADDR) and returns addr with the port it got (a
// port of 0 is the kernel's choice) and a function that closes it.
//
// Every event loop listens on the WebSocket port with SO_REUSEPORT and the
// kernel spreads the connections over them (gnet.WithReusePort), so that
// a loop accepts its own: without it, one thread accepts every connection
// and hands it to a loop with an Execute, a wake and a thread switch more
// per connection (BenchmarkConnect). The loops' listeners cannot each take
// port 0 (they would get different ports): this socket fixes the port for
// all of them. It binds before it sets SO_REUSEPORT, so that a port
// another process listens on is refused, as without SO_REUSEPORT, rather
// than shared; once set, the loops' listeners may bind beside it.
func reservePort(addr string) (string, func(), error) {
	sa, family, _, ipv6only, err := socket.GetTCPSockAddr("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return "", nil, os.NewSyscallError("socket", err)
	}
	release := func() { _ = unix.Close(fd) }
	if err := reserve(fd, sa, ipv6only); err != nil {
		release()
		return "", nil, err
	}
	port := 0
	switch a, _ := unix.Getsockname(fd); a := a.(type) {
	case *unix.SockaddrInet4:
		port = a.Port
	case *unix.SockaddrInet6:
		port = a.Port
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil || port == 0 {
		release()
		return "", nil, fmt.Errorf("cannot tell the port bound to %s: %v", addr, err)
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), release, nil
}

// reserve binds fd to sa, then lets SO_REUSEPORT sockets bind beside it.
func reserve(fd int, sa unix.Sockaddr, ipv6only bool) error {
	if ipv6only {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return os.NewSyscallError("setsockopt", err)
		}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return os.NewSyscallError("bind", err)
	}
	return os.NewSyscallError("setsockopt", unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1))
}

// join sets the node up on its bus's log, as Bus.Open tells, before the
// node listens: the cities' rings are created knowing where its view of
// the log begins.
func (s *Server) join(v View) {
	if v.Epoch != 0 {
		s.epoch, s.hub.epoch = v.Epoch, v.Epoch
	}
	s.hub.floor.Store(v.Floor)
	s.hub.sparse, s.shared = v.Shared, v.Shared
}

// Addr is the WebSocket listen address (useful with port 0).
func (s *Server) Addr() net.Addr { return s.addr }

// IngestAddr is the ingest listen address.
func (s *Server) IngestAddr() net.Addr { return s.ingest.Addr() }

// Epoch identifies this run of the node; it is sent to clients.
func (s *Server) Epoch() uint64 { return s.epoch }

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
	st.RingMemory = s.hub.mem.Load()
	st.RingTrimmed, st.CitiesDropped, st.CitiesRefused = s.hub.trimmed.Load(), s.hub.dropped.Load(), s.hub.refused.Load()
	st.IdleStateMemory = s.hub.keptMem.Load()
	st.IdleStatesRestored, st.IdleStatesEvicted, st.IdleStatesForgotten = s.hub.restored.Load(), s.hub.evicted.Load(), s.hub.forgotten.Load()
	for _, l := range *s.loops.Load() {
		// The SSE share first: the totals count a delivery before the
		// share does, so read after it they are never below it.
		sse := &st.Transports.SSE
		sse.Connections += l.stats.sse.streams.Load()
		sse.Opened += l.stats.sse.opened.Load()
		sse.Subscriptions += l.stats.sse.subscriptions.Load()
		sse.Deliveries += l.stats.sse.deliveries.Load()
		sse.BytesWritten += l.stats.sse.bytesWritten.Load()
		sse.Conflations += l.stats.sse.conflations.Load()
		st.HistoryRequests += l.stats.history.Load()
		st.Subscriptions += l.stats.subscriptions.Load()
		st.Deliveries += l.stats.deliveries.Load()
		st.BytesWritten += l.stats.bytesWritten.Load()
		st.DeliveryWrites += l.stats.writes.Load()
		st.Conflations += l.stats.conflations.Load()
		st.Stalls += l.stats.stalls.Load()
		st.AuthFailures += l.stats.authFailures.Load()
		st.RateLimited += l.stats.rateLimited.Load()
		st.Forbidden += l.stats.forbidden.Load()
		for r := range l.stats.closes {
			st.Closes[CloseReason(r).String()] += l.stats.closes[r].Load()
		}
	}
	sse := st.Transports.SSE
	st.Transports.WebSocket = TransportStats{
		// Gauges move apart for an instant while a stream opens or
		// closes.
		Connections:   max(st.Connections-sse.Connections, 0),
		Opened:        st.Upgraded,
		Subscriptions: max(st.Subscriptions-sse.Subscriptions, 0),
		Deliveries:    st.Deliveries - sse.Deliveries,
		BytesWritten:  st.BytesWritten - sse.BytesWritten,
		Conflations:   st.Conflations - sse.Conflations,
	}
	if s.ingest != nil {
		st.addIngest(s.ingest.Stats())
	}
	if s.admin != nil {
		st.AdminRefused = s.admin.refused.Load()
	}
	if a := s.auth; a != nil {
		st.JWKSFetches, st.JWKSFetchErrors = a.JWKSFetches()
		st.Revocations = int64(a.Keys().RevocationsAt(time.Now().UnixNano()))
	}
	return st
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

// admit counts a new connection against MaxConns and MaxConnsPerIP, or marks
// it to be refused (503 or 429) once its request has arrived. A connection
// from a trusted proxy counts against MaxConnsPerIP by its client's
// address, known from its request (admitClient). Runs on the connection's
// loop.
func (s *Server) admit(cn *conn) {
	if s.admitted.Add(1) > int64(s.cfg.MaxConns) {
		s.admitted.Add(-1)
		cn.flags |= flagRefuseFull
		return
	}
	// The proxy's own address, not its /64: a trusted IPv6 proxy may be
	// listed alone.
	peer := peerAddr(cn.c.RemoteAddr())
	if len(s.proxies) > 0 && s.proxies.trusts(peer) {
		cn.flags |= flagAdmitted | flagProxied
		return
	}
	if !s.ips.acquire(limitKey(peer)) {
		s.admitted.Add(-1)
		cn.flags |= flagRefuseIP
		return
	}
	cn.flags |= flagAdmitted
}

// publish stores one ingest message and wakes the loops that follow its
// city. Safe for concurrent use.
func (s *Server) publish(in *codec.Ingest, now time.Time) (uint64, error) {
	for {
		c, err := s.hub.city(in.City)
		if err != nil {
			return 0, err
		}
		f, err := c.append(in, now)
		if errors.Is(err, errCityGone) {
			continue // dropped just now: a new one takes the frame
		}
		if err != nil {
			return 0, err
		}
		s.wakeCity(c)
		s.hub.fit()
		return f.seq, nil
	}
}

// sweepCities drops idle cities (hub.sweep) every sweepEvery of the live
// CityIdleTTL, until stop is closed. It looks at the setting every second,
// so that a reload applies within one.
func (s *Server) sweepCities(stop <-chan struct{}) {
	t := time.NewTicker(min(sweepEvery(s.cfg.CityIdleTTL), time.Second))
	defer t.Stop()
	last := mono()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ttl := s.live.Load().CityIdleTTL
		if now := mono(); now-last >= int64(sweepEvery(ttl)) {
			s.hub.sweep(now, ttl)
			last = now
		}
	}
}
