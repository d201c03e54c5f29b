package gateway

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/metrocast/metrocast/codec"
)

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

// stopGrace is how long past its window a drain may take to stop the
// loops, the admin port and the cluster link once the clients and
// producers are done: milliseconds, but on a loaded machine more than
// the window's last 10%, which is all a window of a second leaves once
// its last client closed (metrocast serve then exited 1 after a clean
// drain).
const stopGrace = time.Second

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
// the loops, the admin port and the link to the cluster stop. A window of 0 closes every client at
// once. Drain returns when the node has stopped or ctx expires; without a
// deadline, ctx is bounded to window plus stopGrace. Safe for concurrent
// use; a second call fails.
func (s *Server) Drain(ctx context.Context, window time.Duration) error {
	span := time.Duration(float64(max(window, 0)) * drainShare)
	if !s.draining.CompareAndSwap(nil, &drainPlan{start: time.Now().UnixNano(), span: int64(span)}) {
		return errors.New("shutdown already in progress")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, max(window, 0)+stopGrace)
		defer cancel()
	}
	s.cfg.Logger.Info("draining", "clients", s.open.Load(), "window", window)
	close(s.stopped)
	s.paceCloses(ctx, span)
	s.ingest.Close()
	s.ingest.Wait(ctx)
	err := s.stopEngine(ctx)
	s.admin.close(ctx)
	s.bus.Close()
	return err
}

// isDraining reports whether Drain has begun. Safe for concurrent use.
func (s *Server) isDraining() bool { return s.draining.Load() != nil }

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

// reconnectJitter bounds the after_ms of the reconnect hint sent when
// draining: the paced closes spread the clients over the window, and the
// jitter spreads those closed in the same housekeeping pass.
const reconnectJitter = time.Second

// drainStep closes this loop's share of the clients due by now in a drain:
// the connections the loop held when the drain began are closed evenly
// over p.span, so that by half the span half of them are gone. Clients
// that leave by themselves count towards the pace. An open client is sent a
// reconnect hint and closed with 1001; one still in its handshake is just
// closed. Runs on the loop, from housekeeping.
func (l *loop) drainStep(p *drainPlan) {
	if !l.drainBegun {
		l.drainBegun = true
		l.drainTotal = l.nconns
	}
	keep := 0
	// l.now is the loop's clock as of its wake: it may precede p.start,
	// and a window of 0 has no span to divide by.
	if elapsed := l.now - p.start; p.span > 0 && elapsed < p.span {
		keep = l.drainTotal - int(int64(l.drainTotal)*elapsed/p.span)
	}
	n := l.nconns - keep
	if n <= 0 {
		return
	}
	l.iterating = true
	for _, conns := range l.wheel {
		for i := len(conns) - 1; i >= 0 && n > 0; i-- {
			cn := conns[i]
			if cn.state >= stateClosing {
				continue
			}
			if cn.state == stateOpen {
				l.sendReconnect(cn, rand.Int64N(reconnectJitter.Milliseconds()))
			}
			l.closeConn(cn, CloseShutdown)
			n--
		}
	}
	l.iterating = false
	l.sweep()
}

// sendReconnect sends cn the drain's hint: connect again after ms. A
// stream gets it as an event with the retry field, so that a browser's
// EventSource waits that long by itself. Runs on the loop.
func (l *loop) sendReconnect(cn *conn, ms int64) {
	frame := codec.AppendReconnect(l.out[:0], ms)
	if cn.flags&flagHTTP != 0 {
		l.writeEvent(cn, codec.AppendRetry(l.http.ev[:0], ms), frame)
		return
	}
	l.send(cn, frame)
}
