package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"

	"github.com/metrocast/metrocast/codec"
	"github.com/metrocast/metrocast/gateway/auth"
	"github.com/metrocast/metrocast/gateway/internal/limit"
)

// Connection states.
const (
	stateHandshake uint8 = iota
	stateOpen
	stateClosing // close frame sent; the socket closes next
	stateClosed  // OnClose has run: never touch c again
)

// conn is one client connection. It is owned by its event loop: every
// field is read and written only there. It is kept small (128 bytes, the
// 128-byte size class): tens of thousands of idle ones sit in memory.
type conn struct {
	c gnet.Conn
	l *loop
	// grant is what the connection's token allows; nil until it has
	// authenticated. Shared, never modified (a refresh replaces it).
	grant   *auth.Grant
	idx     int32 // in its slot of l.wheel
	scanned int32 // bytes of the request head searched so far
	state   uint8
	reason  CloseReason
	errors  uint8  // bad client messages so far
	flags   uint16 // flag* bits
	// partialAt is when the unfinished frame or fragmented message began
	// (flagPartial), on msClock: housekeeping closes the connection past
	// FrameTimeout.
	partialAt uint32
	// phase is the connection's place in the loop's periodic duties: its
	// slot of the housekeeping wheel and its instant in each ping interval
	// (loop.nextPhase).
	phase uint32

	// opened is the Unix nanoseconds of the accept (handshake time-out),
	// then of the upgrade (auth time-out).
	opened   int64
	lastRead uint32 // when the last inbound bytes came, on msClock
	// fd is the socket, for writeNow: a delivery does not look at gnet's
	// conn (a cache line a delivery at 10,000 connections).
	fd int32
	// stalledAt is when the connection went over the backlog limit, or
	// last showed it reads (see loop.unstall), on msClock; stallAcked is
	// the bytes its peer had acknowledged then (the low 32 bits of
	// tcpi_bytes_acked). Both only with flagStalled.
	stalledAt  uint32
	stallAcked uint32
	rate       limit.Bucket // inbound messages (ClientMessageRate)

	subs []*sub
	// frag reassembles a fragmented message; nil between messages. A
	// pointer: fragmented messages are rare, and the conn stays in its
	// size class.
	frag *[]byte
	// client is the address a connection from a trusted proxy counts
	// against, once its request named it (flagProxied); a pointer for the
	// same reason.
	client *netip.Addr
}

// Connection flags.
const (
	flagAdmitted   uint16 = 1 << iota // counted against MaxConns and MaxConnsPerIP
	flagRefuseFull                    // answer 503 once the request is in
	flagRefuseIP                      // answer 429 once the request is in
	flagWarned                        // token_expiring sent for the current grant
	flagPresence                      // some subscription wants presence events
	flagProxied                       // from a trusted proxy: counted per IP by client
	flagPartial                       // a frame or fragmented message is unfinished (partialAt)
	flagHTTP                          // a plain HTTP request, not an upgrade: an SSE stream or a response (sse.go)
	flagStream                        // with flagHTTP: an SSE stream, not a response (conn.stream)
	flagStalled                       // over the backlog limit, not written to (stalledAt)
	flagQueued                        // gnet's outbound buffer may hold bytes (conn.queued)
)

// msClock is Unix milliseconds modulo 2³², for conn.partialAt, lastRead
// and stalledAt; msSince reads the time since one.
func msClock(ns int64) uint32 { return uint32(ns / int64(time.Millisecond)) }

// msSince is the time from t, on msClock, to now (Unix nanoseconds): exact
// for readings up to 24 days apart (a signed 32-bit difference; FrameTimeout
// is at most an hour, IdleTimeout a day, SlowTimeout an hour), and 0 when now
// is before t. The wall clock may step back: a connection is then neither
// idle nor stuck for it, where an unsigned difference made every connection
// that had just read look silent for 49 days.
func msSince(now int64, t uint32) time.Duration {
	return time.Duration(max(int32(msClock(now)-t), 0)) * time.Millisecond
}

// traffic handles inbound bytes. Runs on the loop (OnTraffic).
func (cn *conn) traffic() gnet.Action {
	l := cn.l
	cn.lastRead = msClock(l.now)
	if cn.state == stateHandshake {
		if act, done := cn.handshake(); !done {
			return act
		}
	}
	if cn.flags&flagHTTP != 0 {
		// An SSE client has nothing to say after its request.
		_, _ = cn.c.Discard(-1)
		return gnet.None
	}
	buf, _ := cn.c.Peek(-1)
	off := 0
	between := false // a message ended in this read, with none begun after it
	for off < len(buf) && cn.state == stateOpen {
		n := cn.frame(buf[off:])
		if n == 0 {
			break
		}
		off += n
		between = cn.frag == nil
	}
	switch cn.state {
	case stateClosed:
		return gnet.None
	case stateClosing:
		return gnet.Close
	}
	// Bytes of an unfinished frame count as life for the idle time-out, so
	// the frame (or fragmented message) has FrameTimeout from its first
	// byte to be whole; housekeeping checks.
	switch {
	case off == len(buf) && cn.frag == nil:
		cn.flags &^= flagPartial
	case cn.flags&flagPartial == 0 || between:
		cn.flags |= flagPartial
		cn.partialAt = msClock(l.now)
	}
	// gnet's Discard(n) with n <= 0 drops everything buffered: with a
	// partial frame (off == 0) the bytes must stay for the next pass.
	if off > 0 {
		_, _ = cn.c.Discard(off)
	}
	return gnet.None
}

// handshake answers the upgrade request once its head is complete. done
// reports that the connection is open and the bytes behind the request (if
// any) are frames to read.
func (cn *conn) handshake() (act gnet.Action, done bool) {
	l, s := cn.l, cn.l.s
	buf, _ := cn.c.Peek(-1)
	end := codec.RequestEnd(buf, int(cn.scanned))
	if end == 0 && len(buf) <= s.cfg.MaxHeaderBytes {
		cn.scanned = int32(len(buf))
		return gnet.None, false
	}
	switch {
	case cn.flags&flagRefuseFull != 0:
		l.out = append(l.out[:0], respNodeFull...)
		return cn.reject(CloseNodeFull), false
	case cn.flags&flagRefuseIP != 0:
		l.out = append(l.out[:0], respIPLimit...)
		return cn.reject(CloseIPLimit), false
	case end == 0 || end > s.cfg.MaxHeaderBytes:
		// A whole head that arrived in one read is held to the limit
		// too, or the 431 would depend on how the request was split.
		l.out = codec.AppendHTTPError(l.out[:0], http.StatusRequestHeaderFieldsTooLarge, "",
			"request head larger than "+strconv.Itoa(s.cfg.MaxHeaderBytes)+" bytes")
		return cn.reject(CloseHandshakeFailed), false
	}
	if _, path, ok := codec.RequestTarget(buf[:end]); ok && httpPath(path) {
		return cn.serveHTTP(buf[:end]), false
	}
	up, resp, err := s.upgrader.Upgrade(buf[:end], l.out[:0], cn.checkUpgrade)
	l.out = resp
	if err != nil {
		reason := CloseHandshakeFailed
		var he *codec.HTTPError
		if errors.As(err, &he) {
			switch he.Status {
			case http.StatusForbidden:
				reason = CloseOriginForbidden
			case http.StatusTooManyRequests:
				reason = CloseIPLimit
			case http.StatusUnauthorized:
				reason = CloseUnauthorized
			}
		}
		return cn.reject(reason), false
	}
	l.put(cn, resp)
	_, _ = cn.c.Discard(end)
	cn.state = stateOpen
	cn.scanned = 0
	s.upgraded.Add(1)
	s.metrics.handshake.Update(seconds(l.now - cn.opened))
	cn.opened = l.now
	if len(up.Cities) > 0 {
		cn.subscribe(&codec.ClientMessage{Type: codec.TypeSubscribe, Cities: up.Cities, Since: up.Since, Epoch: up.Epoch})
		if cn.state != stateOpen {
			// Closing: too many of the URL's cities were refused
			// (MaxClientErrors). Housekeeping leaves a closing
			// WebSocket alone, so it closes now or never.
			return gnet.Close, false
		}
	}
	return gnet.None, true
}

// admitClient counts a connection from a trusted proxy against
// MaxConnsPerIP by the client's address in its X-Forwarded-For header (the
// proxy's own without one): 400 for a malformed header, 429 past the limit.
// Runs on the loop, inside Upgrader.Upgrade.
func (cn *conn) admitClient(forwardedFor string) error {
	s := cn.l.s
	key := ipKey(cn.c.RemoteAddr())
	if forwardedFor != "" {
		a, err := codec.ClientAddr(forwardedFor, s.proxies.trusts)
		if err != nil {
			return &codec.HTTPError{Status: http.StatusBadRequest, Message: err.Error()}
		}
		key = limitKey(a)
	}
	if !s.ips.acquire(key) {
		return &codec.HTTPError{Status: http.StatusTooManyRequests, Header: "Retry-After: 10\r\n",
			Message: "too many connections from your address"}
	}
	cn.client = &key
	return nil
}

// checkUpgrade decides, once the request is a valid upgrade, whether it may
// upgrade: its Origin (403) and its token, if it carries one (401). A
// request without a token upgrades and must authenticate with its first
// message, unless it subscribes on the URL. Runs on the loop, inside
// Upgrader.Upgrade.
func (cn *conn) checkUpgrade(up *codec.Upgrade) error {
	s := cn.l.s
	if cn.flags&flagProxied != 0 {
		if err := cn.admitClient(up.ForwardedFor); err != nil {
			return err
		}
	}
	if up.Origin != "" && !originAllowed(s.cfg.AllowedOrigins, up.Origin) {
		return &codec.HTTPError{Status: http.StatusForbidden, Message: "origin not allowed"}
	}
	if s.auth == nil {
		cn.grant = auth.Anonymous
		return nil
	}
	if up.Token == "" {
		if len(up.Cities) > 0 {
			return &codec.HTTPError{Status: http.StatusUnauthorized, Header: "WWW-Authenticate: Bearer\r\n",
				Message: auth.CodeRequired + ": cities on the URL need a token in the request (token=, Authorization or Sec-WebSocket-Protocol)"}
		}
		return nil
	}
	g, err := cn.l.tokens.Grant(s.auth, up.Token)
	if err != nil {
		cn.l.stats.authFailures.Add(1)
		return &codec.HTTPError{Status: http.StatusUnauthorized, Message: auth.CodeOf(err) + ": " + err.Error(),
			Header: "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n"}
	}
	cn.grant = g
	return nil
}

// reject writes the HTTP error in l.out and closes.
func (cn *conn) reject(reason CloseReason) gnet.Action {
	cn.l.put(cn, cn.l.out)
	cn.state = stateClosing
	cn.reason = reason
	return gnet.Close
}

// frame handles the first frame in b and returns its size, or 0 when b does
// not hold it whole yet or the connection is closing because of it.
func (cn *conn) frame(b []byte) int {
	l := cn.l
	h, hn, err := l.fp.Header(b)
	if err == nil && hn > 0 {
		have := 0
		if cn.frag != nil {
			have = len(*cn.frag)
		}
		err = codec.CheckClientHeader(h, cn.frag != nil, int64(have), int64(l.cfg.MaxMessageBytes))
	}
	if err != nil {
		l.beginClose(cn, reasonOf(err), err.Error())
		return 0
	}
	total := hn + int(h.Length)
	if hn == 0 || len(b) < total {
		return 0
	}
	payload := b[hn:total]
	codec.Unmask(h, payload)

	switch h.OpCode {
	case ws.OpPing:
		if !cn.allow() {
			return total
		}
		l.send(cn, codec.AppendFrame(l.out[:0], ws.OpPong, payload))
	case ws.OpPong:
	case ws.OpClose:
		code, _, err := codec.ParseClose(payload)
		if err != nil {
			l.beginClose(cn, reasonOf(err), err.Error())
			return 0
		}
		// Echo the close (RFC 6455 §5.5.1); the peer started it.
		cn.state = stateClosing
		cn.reason = ClosePeer
		if code == ws.StatusNoStatusRcvd {
			l.send(cn, codec.AppendFrame(l.out[:0], ws.OpClose, nil))
		} else {
			l.send(cn, codec.AppendClose(l.out[:0], code, ""))
		}
	case ws.OpBinary:
		l.beginClose(cn, CloseUnsupportedData, "binary messages are not supported; send JSON text")
		return 0
	case ws.OpText, ws.OpContinuation:
		if !h.Fin || cn.frag != nil {
			if cn.frag == nil {
				b := make([]byte, 0, len(payload))
				cn.frag = &b
			}
			*cn.frag = append(*cn.frag, payload...)
			if !h.Fin {
				return total
			}
			payload, cn.frag = *cn.frag, nil
		}
		if !utf8.Valid(payload) {
			l.beginClose(cn, CloseInvalidUTF8, "text message is not valid UTF-8")
			return 0
		}
		if cn.allow() {
			cn.message(payload)
		}
	}
	return total
}

// allow takes a token from the connection's message bucket. Past the rate
// the message is answered rate_limited and counts as a bad message: after
// MaxClientErrors of them the connection closes (1008).
func (cn *conn) allow() bool {
	l := cn.l
	cfg := &l.s.cfg
	if cn.rate.Take(l.now, int64(time.Minute)/int64(cfg.ClientMessageRate), cfg.ClientMessageBurst) {
		return true
	}
	l.stats.rateLimited.Add(1)
	cn.failAs(CloseRateLimited, "rate_limited", "", fmt.Sprintf("over %d messages per minute", cfg.ClientMessageRate))
	return false
}

// message handles one client message. Runs on the loop.
func (cn *conn) message(b []byte) {
	m, err := codec.ParseClientMessage(b)
	if err != nil {
		code := "bad_request"
		switch {
		case errors.Is(err, codec.ErrBadJSON):
			code = "bad_json"
		case errors.Is(err, codec.ErrUnknownType):
			code = "unknown_type"
		}
		cn.fail(code, "", err.Error())
		return
	}
	if cn.grant == nil && m.Type != codec.TypeAuth {
		cn.authFail(auth.CodeRequired, `send {"type":"auth","token":"…"} first`)
		return
	}
	l := cn.l
	switch m.Type {
	case codec.TypePing:
		l.put(cn, codec.PongFrame)
	case codec.TypeAuth:
		if !cn.authenticate(m.Token) {
			return
		}
		if len(m.Cities) == 0 && !m.HasFilter {
			l.send(cn, codec.AppendSubscribed(l.out[:0], "subscribed", l.s.epoch, nil))
			return
		}
		cn.subscribe(&m)
	case codec.TypeRefresh:
		if !cn.authenticate(m.Token) {
			return
		}
		exp, closeAt := cn.grant.Deadlines(l.s.cfg.TokenGrace)
		l.send(cn, codec.AppendTokenEvent(l.out[:0], "refreshed", exp, closeAt))
	case codec.TypeSubscribe:
		cn.subscribe(&m)
	case codec.TypeUnsubscribe:
		cn.unsubscribe(m.Cities)
	}
}

// authenticate verifies a token from an auth or refresh message and makes
// it the connection's grant. A connection that has a grant keeps it when
// the message carries no token, and may only take a token for the same
// subject. Subscriptions the new token does not cover end (each with a
// forbidden error). On failure the client gets auth_error and the
// connection closes (4001). An insecure node takes any token. Runs on the
// loop.
func (cn *conn) authenticate(token string) bool {
	a := cn.l.s.auth
	switch {
	case a == nil:
		cn.grant = auth.Anonymous
		return true
	case token == "" && cn.grant != nil:
		return true
	case token == "":
		cn.authFail(auth.CodeRequired, "the auth message carries no token")
		return false
	}
	g, err := cn.l.tokens.Grant(a, token)
	if err != nil {
		cn.authFail(auth.CodeOf(err), err.Error())
		return false
	}
	if cn.grant != nil && cn.grant.Sub() != g.Sub() {
		cn.authFail(auth.CodeSubMismatch, "the token is for another subject than the connection's")
		return false
	}
	cn.grant = g
	cn.flags &^= flagWarned
	l := cn.l
	for i := 0; i < len(cn.subs); {
		sb := cn.subs[i]
		if g.Allows(sb.city.name) {
			i++
			continue
		}
		l.removeSub(sb)
		cn.subs = append(cn.subs[:i], cn.subs[i+1:]...)
		cn.forbid(sb.city.name, "the new token does not cover this city: unsubscribed")
	}
	return true
}

// authFail sends auth_error and closes the connection (4001). Runs on the
// loop.
func (cn *conn) authFail(code, msg string) {
	l := cn.l
	l.stats.authFailures.Add(1)
	l.send(cn, codec.AppendAuthError(l.out[:0], code, msg))
	reason := CloseAuthFailed
	switch code {
	case auth.CodeTimeout:
		reason = CloseAuthTimeout
	case auth.CodeExpired:
		reason = CloseTokenExpired
	}
	l.beginClose(cn, reason, code)
}

// forbid refuses a city outside the token; the connection stays, and this
// does not count as a bad message. Runs on the loop.
func (cn *conn) forbid(city, msg string) {
	l := cn.l
	l.stats.forbidden.Add(1)
	l.send(cn, codec.AppendError(l.out[:0], "forbidden", city, msg))
}

// fail sends an error message and counts it; past MaxClientErrors the
// connection closes with 1008.
func (cn *conn) fail(code, city, msg string) { cn.failAs(CloseAbuse, code, city, msg) }

// failAs is fail with the close reason to count when it closes.
func (cn *conn) failAs(reason CloseReason, code, city, msg string) {
	l := cn.l
	l.send(cn, codec.AppendError(l.out[:0], code, city, msg))
	if cn.errors++; int(cn.errors) >= l.cfg.MaxClientErrors && cn.state == stateOpen {
		l.beginClose(cn, reason, "too many bad messages")
	}
}
