package gateway

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"

	"github.com/metrocast/metrocast/codec"
	"github.com/metrocast/metrocast/gateway/auth"
)

// Server-Sent Events on the WebSocket port (README "Server-Sent Events"). A
// stream is a connection of the event loops like a WebSocket client, with
// the same subscriptions, cursors, fanout, limits and time-outs: only the
// bytes differ. A city frame's event is encoded once, on first use, and
// shared by every stream (frame.event); a stream of several cities adds
// the others' positions to each event's id from a buffer of the loop,
// written beside the shared event (loop.appendEvent). Control messages are
// built for WebSocket and turned into events as they are sent
// (loop.sendEvent). history.go answers GET /history beside it.

// The retry field a stream starts with: how long a browser waits before it
// reconnects a stream that broke, spread over a second so that the clients
// of a node that died do not all come back at once.
const (
	streamRetry       = time.Second
	streamRetryJitter = time.Second
)

// httpBufs are a loop's scratch buffers for streams. Loop-owned.
type httpBufs struct {
	// ids holds the other cities' positions that every event id of one
	// batch carries (eventIDRest): at most codec.MaxEventIDBytes.
	ids []byte
	// ev holds a control message turned into an event, or a history
	// response's body.
	ev []byte
}

// httpPath reports whether path is served as plain HTTP rather than
// upgraded.
func httpPath(path []byte) bool {
	switch string(path) {
	case codec.SSEPath, codec.HistoryPath:
		return true
	}
	return false
}

// serveHTTP answers a request for a stream or history (or its CORS
// preflight), in place of the upgrade: the head is whole. Refusals are
// HTTP errors before anything starts (400, 401, 403, 405, 503), with CORS
// headers for an allowed origin so that a page can read them. Runs on the
// loop, from handshake.
func (cn *conn) serveHTTP(head []byte) gnet.Action {
	l, s := cn.l, cn.l.s
	cn.flags |= flagHTTP
	req, err := codec.ParseRequest(head)
	cors := ""
	if req.Origin != "" && originAllowed(s.cfg.AllowedOrigins, req.Origin) {
		cors = codec.CORSHeaders(req.Origin)
	}
	reason := CloseHandshakeFailed
	if err == nil {
		reason, err = cn.checkRequest(&req)
	}
	if err != nil {
		var he *codec.HTTPError
		if !errors.As(err, &he) {
			he = &codec.HTTPError{Status: http.StatusBadRequest, Message: err.Error()}
		}
		l.out = he.AppendResponse(l.out[:0], cors)
		return cn.reject(reason)
	}
	switch {
	case req.Method == http.MethodOptions:
		l.out = codec.AppendPreflight(l.out[:0], cors)
		return cn.respond(l.out)
	case req.Path == codec.HistoryPath:
		return cn.respond(l.history(&req, cors))
	}
	return cn.stream(&req, cors)
}

// checkRequest admits a stream or history request as checkUpgrade admits an
// upgrade: the client's address behind a trusted proxy (429), its Origin
// (403) and its token (401; a stream needs one from the start, as it
// cannot send one later). Then its cities, each of which the token must
// cover (403): a stream starts whole or not at all. A refusal comes with
// the reason the connection closes for. Runs on the loop.
func (cn *conn) checkRequest(req *codec.Request) (CloseReason, error) {
	l, s := cn.l, cn.l.s
	if cn.flags&flagProxied != 0 {
		if err := cn.admitClient(req.ForwardedFor); err != nil {
			var he *codec.HTTPError
			if errors.As(err, &he) && he.Status == http.StatusTooManyRequests {
				return CloseIPLimit, err
			}
			return CloseHandshakeFailed, err
		}
	}
	if req.Origin != "" && !originAllowed(s.cfg.AllowedOrigins, req.Origin) {
		return CloseOriginForbidden, &codec.HTTPError{Status: http.StatusForbidden, Message: "origin not allowed"}
	}
	if req.Method == http.MethodOptions {
		return 0, nil
	}
	cn.grant = auth.Anonymous
	if s.auth != nil {
		if req.Token == "" {
			l.stats.authFailures.Add(1)
			return CloseUnauthorized, &codec.HTTPError{Status: http.StatusUnauthorized, Header: "WWW-Authenticate: Bearer\r\n",
				Message: auth.CodeRequired + ": send a token (Authorization: Bearer, or token= on the URL)"}
		}
		g, err := l.tokens.Grant(s.auth, req.Token)
		if err != nil {
			l.stats.authFailures.Add(1)
			return CloseUnauthorized, &codec.HTTPError{Status: http.StatusUnauthorized, Message: auth.CodeOf(err) + ": " + err.Error(),
				Header: "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n"}
		}
		cn.grant = g
	}
	cities := req.Cities
	if req.Path == codec.HistoryPath {
		cities = []string{req.City}
	}
	switch {
	case len(cities) == 0:
		return CloseHandshakeFailed, &codec.HTTPError{Status: http.StatusBadRequest, Message: "name the cities to follow: /sse?cities=a,b"}
	case len(cities) > l.cfg.MaxSubscriptions:
		return CloseHandshakeFailed, &codec.HTTPError{Status: http.StatusBadRequest, Message: "more cities than max-subscriptions allows one client"}
	case codec.EventIDSize(cities) > codec.MaxEventIDBytes:
		return CloseHandshakeFailed, &codec.HTTPError{Status: http.StatusBadRequest, Message: "too many cities for one stream: its event ids would not fit a request"}
	}
	for _, name := range cities {
		if !cn.grant.Allows(name) {
			l.stats.forbidden.Add(1)
			return CloseForbidden, &codec.HTTPError{Status: http.StatusForbidden, Message: "forbidden: the token does not cover " + name}
		}
	}
	if req.Path == codec.SSEPath {
		// Made now, so that the stream cannot start without one.
		for _, name := range cities {
			if _, err := s.hub.city(name); err != nil {
				return CloseHandshakeFailed, &codec.HTTPError{Status: http.StatusServiceUnavailable, Header: "Retry-After: 5\r\n", Message: err.Error()}
			}
		}
	}
	return 0, nil
}

// respond writes resp, a whole HTTP response, and has the connection closed
// once it is out: at once when the socket took it all, else by housekeeping
// (tickResponse). Runs on the loop, from serveHTTP.
func (cn *conn) respond(resp []byte) gnet.Action {
	// Out now, not at the end of OnTraffic: whether it is all out decides
	// the close.
	cn.l.put(cn, resp)
	cn.l.flush()
	if cn.state == stateClosed {
		return gnet.None
	}
	_, _ = cn.c.Discard(-1)
	cn.state, cn.reason, cn.opened = stateClosing, CloseResponded, cn.l.now
	if cn.c.OutboundBuffered() == 0 {
		return gnet.Close
	}
	return gnet.None
}

// tickResponse closes a connection whose HTTP response has been written,
// or that has not read it within SlowTimeout, or when the node drains.
// Runs on the loop, in housekeeping.
func (l *loop) tickResponse(cn *conn) {
	if cn.c.OutboundBuffered() == 0 || l.now-cn.opened > int64(l.cfg.SlowTimeout) || l.s.isDraining() {
		_ = l.el.Close(cn.c)
	}
}

// stream starts a Server-Sent Events stream: the response head and the
// retry field, then what a subscribe message with the request's cities,
// resume positions and filter gets over WebSocket, as events. Runs on the
// loop, from serveHTTP.
func (cn *conn) stream(req *codec.Request, cors string) gnet.Action {
	l := cn.l
	retry := streamRetry + rand.N(streamRetryJitter)
	l.out = codec.AppendStreamHead(l.out[:0], cors, retry.Milliseconds())
	l.put(cn, l.out)
	_, _ = cn.c.Discard(-1)
	cn.state = stateOpen
	cn.opened = l.now
	cn.flags |= flagStream
	l.stats.sse.opened.Add(1)
	l.stats.sse.streams.Add(1)
	cn.subscribe(&codec.ClientMessage{Type: codec.TypeSubscribe, Cities: req.Cities,
		Since: req.Since, Epoch: req.Epoch, Filter: req.Filter, HasFilter: req.HasFilter})
	switch {
	case cn.state != stateOpen:
		// Closed by the errors of refused cities (MaxClientErrors).
		return gnet.Close
	case len(cn.subs) == 0:
		// Every city refused after all (checkRequest made them, but a
		// limit may still refuse one): nothing to stream.
		cn.state, cn.reason = stateClosing, CloseResponded
		return gnet.Close
	}
	return gnet.None
}

// tickStream is housekeeping for an open stream: the token's expiry as
// for WebSocket (a stream cannot refresh its token: it gets
// token_expiring, then auth_error and its end at closeAt; a client
// reconnects with a fresh token and Last-Event-ID or since=), a heartbeat
// comment once every PingInterval at the stream's own instant (since is
// the previous visit of its slot: loop.pingDue), and the catch-up of a
// stalled stream. A stream has no idle time-out: its client never speaks.
// Runs on the loop, in housekeeping.
func (l *loop) tickStream(cn *conn, since int64) {
	if !l.checkToken(cn) {
		return
	}
	if cn.flags&flagStalled != 0 {
		l.unstall(cn)
		return
	}
	if l.pingDue(cn, since) {
		l.put(cn, codec.Heartbeat)
	}
}

// event returns f as a Server-Sent Event of city (codec.AppendCityEvent),
// encoded on first use and then shared by every stream that is sent f: a
// city followed over WebSocket alone never pays for it. mem is the node's
// ring memory account when f is a ring's frame (the event counts there
// until the frame leaves the ring: dropEvent), nil for a frame of no ring
// (initial_data, a replay from the stream). Safe for concurrent use: loops
// that race build it more than once and keep one.
func (f *frame) event(epoch uint64, city string, mem *atomic.Int64) []byte {
	p := f.sse.Load()
	if p != nil && p != evictedEvent {
		return *p
	}
	_, msg := codec.ServerPayload(f.b)
	b := codec.AppendCityEvent(make([]byte, 0, len(msg)+len(city)+80), epoch, city, f.seq, msg)
	if p == nil && f.sse.CompareAndSwap(nil, &b) {
		if mem != nil {
			mem.Add(int64(cap(b)))
		}
		return b
	}
	if q := f.sse.Load(); q != evictedEvent {
		return *q // another loop's
	}
	return b // the frame left its ring meanwhile: not kept
}

// evictedEvent marks the event of a frame that left its ring: one built
// from then on (a loop still sending the frame) is neither kept nor
// accounted.
var evictedEvent = new([]byte)

// dropEvent marks f as out of its ring and returns the bytes of the event
// it held, which leave the ring memory account with it. The city lock is
// held on entry (ring.evictLocked).
func (f *frame) dropEvent() int64 {
	if p := f.sse.Swap(evictedEvent); p != nil && p != evictedEvent {
		return int64(cap(*p))
	}
	return 0
}

// eventIDRest returns the part of the event ids of sb's stream that the
// other cities add: ",city:seq" for each (but those whose initial_data has
// not gone out yet), or nil when there is none, so that Last-Event-ID
// alone resumes every city. It is the same for every frame of one of sb's
// batches and valid until the next call. Runs on the loop; allocates
// nothing once the buffer has grown (the stream's cities are bounded by
// codec.MaxEventIDBytes).
func (l *loop) eventIDRest(sb *sub) []byte {
	cn := sb.conn
	if len(cn.subs) < 2 {
		return nil
	}
	b := l.http.ids[:0]
	for _, o := range cn.subs {
		if o != sb && !o.fresh {
			b = codec.AppendEventIDEntry(append(b, ','), o.city.name, o.seq)
		}
	}
	l.http.ids = b
	if len(b) == 0 {
		return nil
	}
	return b
}

// appendEvent appends f's event for sb's stream to iov and its size to n:
// the shared event, or, with rest (eventIDRest), the event with rest
// inserted at the end of its id line. mem: frame.event. Runs on the loop; allocates nothing
// but f's event when it is its first use.
func (l *loop) appendEvent(iov [][]byte, n int, sb *sub, f *frame, mem *atomic.Int64, rest []byte) ([][]byte, int) {
	ev := f.event(l.s.epoch, sb.city.name, mem)
	if rest == nil {
		return append(iov, ev), n + len(ev)
	}
	i := bytes.IndexByte(ev, '\n')
	return append(iov, ev[:i], rest, ev[i:]), n + len(ev) + len(rest)
}

// writeFrame writes one city frame to sb's connection, as a WebSocket
// frame or as an event, and returns the bytes written. Runs on the loop.
func (l *loop) writeFrame(sb *sub, f *frame) int {
	cn := sb.conn
	if cn.flags&flagHTTP == 0 {
		l.put(cn, f.b)
		return len(f.b)
	}
	iov, n := l.appendEvent(l.iov[:0], 0, sb, f, nil, l.eventIDRest(sb))
	l.putv(cn, iov)
	clear(iov)
	l.iov = iov[:0]
	return n
}

// sendEvent writes frame, a message built for WebSocket (in l.out), to the
// stream cn as an event named by its type. A close frame (the stream is
// ending; the reason went before it as a message) has no event. Runs on
// the loop.
func (l *loop) sendEvent(cn *conn, frame []byte) {
	l.writeEvent(cn, l.http.ev[:0], frame)
}

// writeEvent appends frame's message as an event to b (l.http.ev, holding
// fields that go before it) and writes it. Runs on the loop.
func (l *loop) writeEvent(cn *conn, b []byte, frame []byte) {
	op, msg := codec.ServerPayload(frame)
	if op != ws.OpText || cn.state == stateClosed {
		return
	}
	l.http.ev = codec.AppendEvent(b, msg)
	l.put(cn, l.http.ev)
}
