package codec

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/gobwas/ws"
)

// ErrRequestTooLarge is an upgrade request whose head exceeds the limit.
var ErrRequestTooLarge = errors.New("request header too large")

// Upgrade is what the gateway needs from an accepted upgrade request.
type Upgrade struct {
	// Cities from ?cities=a,b (may be empty).
	Cities []string
	// Since holds resume positions from ?since=N (applies to every city in
	// Cities) or ?since=a:N,b:M. Nil when absent.
	Since map[string]uint64
	// Epoch from ?epoch=N; 0 when absent.
	Epoch uint64
	// Token is the request's bearer token: from "Authorization: Bearer",
	// else from a "bearer.<token>" entry of Sec-WebSocket-Protocol, else
	// from ?token=. Empty when absent.
	Token string
	// Origin is the Origin header; empty when absent (clients other than
	// browsers seldom send one).
	Origin string
	// ForwardedFor is the X-Forwarded-For header, its lines joined with
	// commas; empty when absent. See ClientAddr.
	ForwardedFor string
	// Protocol is the subprotocol echoed in the response: Subprotocol when
	// the client offered it, else empty.
	Protocol string
}

// Subprotocol is the one subprotocol the gateway speaks. A browser, which
// cannot set headers on a WebSocket, passes its token as a second offered
// subprotocol: new WebSocket(url, ["metrocast", "bearer." + token]). The
// response echoes "metrocast" (never the token): a browser fails a
// connection whose response names a subprotocol it did not offer, or none
// when it offered some.
const Subprotocol = "metrocast"

// bearerProtocol prefixes a token offered as a subprotocol. A JWT is made of
// base64url and dots, all valid in a subprotocol token (RFC 6455 §4.1).
const bearerProtocol = "bearer."

// HTTPError is an upgrade refused with an HTTP status, as returned by an
// Upgrader.Upgrade check.
type HTTPError struct {
	Status  int
	Message string
	// Header holds extra response header lines, each ending in "\r\n".
	Header string
}

func (e *HTTPError) Error() string { return e.Message }

// RequestEnd returns the length of the HTTP request head in b (through the
// blank line), or 0 when b does not hold a whole head yet. from is where the
// previous call stopped looking (0 at first): a request that trickles in one
// byte at a time is scanned once, not once per byte.
func RequestEnd(b []byte, from int) int {
	if from > 3 {
		from -= 3
	} else {
		from = 0
	}
	if i := bytes.Index(b[from:], []byte("\r\n\r\n")); i >= 0 {
		return from + i + 4
	}
	return 0
}

// Upgrader answers WebSocket upgrade requests for one path. It is safe for
// concurrent use.
type Upgrader struct {
	// Path is the only path that upgrades; others get 404.
	Path string
	// MaxHeaderBytes bounds the request head.
	MaxHeaderBytes int
}

// Upgrade parses a whole request head (as delimited by RequestEnd), appends
// the HTTP response to out and returns it. On error the response is an HTTP
// error (400, 404, 405, 426 or 505, or the check's status) after which the
// connection must close; it says so (Connection: close), as every refusal
// is written by AppendHTTPError. Extension offers (permessage-deflate from browsers)
// are declined by leaving them out of the response, as RFC 6455 §9.1 allows.
//
// check, when not nil, runs once the request is known to be a valid upgrade,
// before the response is written; an *HTTPError from it is the response and
// is returned as the error (any other error answers 400).
func (u *Upgrader) Upgrade(head []byte, out []byte, check func(*Upgrade) error) (Upgrade, []byte, error) {
	// What the callbacks fill in, in one allocation: each variable they
	// shared was one of its own (BenchmarkUpgrade).
	st := &upgradeState{u: u, head: head, check: check}
	st.rw = headRW{r: head, w: bytes.NewBuffer(out)}
	wu := ws.Upgrader{
		ReadBufferSize:  u.MaxHeaderBytes,
		WriteBufferSize: 256,
		OnRequest:       st.onRequest,
		OnHeader:        st.onHeader,
		ProtocolCustom:  st.protocol,
		OnBeforeUpgrade: st.beforeUpgrade,
	}
	hs, err := wu.Upgrade(&st.rw)
	up := st.up
	if err == nil {
		up.Protocol = hs.Protocol
		return up, st.rw.w.Bytes(), nil
	}
	// gobwas/ws has written its answer (or none, for a line it cannot
	// read); ours replaces it.
	he := st.refused
	if he == nil {
		he = refusal(err, head)
	}
	if st.checkErr != nil {
		err = st.checkErr
	}
	return up, AppendHTTPError(out, he.Status, he.Header, he.Message), err
}

// upgradeState is one Upgrade's: the request as gobwas/ws's callbacks
// read it.
type upgradeState struct {
	u     *Upgrader
	head  []byte
	check func(*Upgrade) error
	rw    headRW
	up    Upgrade
	// checkErr is check's error; refused, the answer our callbacks chose
	// (gobwas/ws's own refusals are mapped by refusal).
	checkErr error
	refused  *HTTPError
	// The token in each place it may come; Authorization wins.
	headerToken, protoToken string
}

func (st *upgradeState) reject(he *HTTPError) error {
	st.refused = he
	return ws.RejectConnectionError(ws.RejectionStatus(he.Status), ws.RejectionReason(he.Message))
}

func (st *upgradeState) onRequest(uri []byte) error {
	path, query, _ := strings.Cut(string(uri), "?")
	if path != st.u.Path {
		return st.reject(&HTTPError{Status: http.StatusNotFound, Message: "not found: the WebSocket endpoint is " + st.u.Path})
	}
	var err error
	if st.up, err = parseQuery(query); err != nil {
		return st.reject(&HTTPError{Status: http.StatusBadRequest, Message: err.Error()})
	}
	return nil
}

func (st *upgradeState) onHeader(key, value []byte) error {
	switch string(key) { // canonical: gobwas/ws normalises the case
	case "Authorization":
		if scheme, tok, ok := strings.Cut(string(value), " "); ok && strings.EqualFold(scheme, "Bearer") {
			st.headerToken = strings.TrimSpace(tok)
		}
	case "Origin":
		st.up.Origin = string(value)
	case "X-Forwarded-For":
		if st.up.ForwardedFor != "" {
			st.up.ForwardedFor += ","
		}
		st.up.ForwardedFor += string(value)
	}
	return nil
}

func (st *upgradeState) protocol(value []byte) (string, bool) {
	offered := false
	for p := range strings.SplitSeq(string(value), ",") {
		p = strings.TrimSpace(p)
		switch {
		case p == Subprotocol:
			offered = true
		case strings.HasPrefix(p, bearerProtocol) && st.protoToken == "":
			st.protoToken = p[len(bearerProtocol):]
		}
	}
	if offered {
		return Subprotocol, true
	}
	return "", true
}

func (st *upgradeState) beforeUpgrade() (ws.HandshakeHeader, error) {
	if !validKeys(st.head) {
		// gobwas/ws checks the key's length only.
		return nil, st.reject(&HTTPError{Status: http.StatusBadRequest, Message: "bad Sec-WebSocket-Key: must be 16 bytes in base64"})
	}
	if headerLines(st.head, "host:") > 1 {
		// gobwas/ws takes the last.
		return nil, st.reject(badRequest("more than one Host header")) // RFC 9112 §3.2
	}
	switch {
	case st.headerToken != "":
		st.up.Token = st.headerToken
	case st.protoToken != "":
		st.up.Token = st.protoToken
	}
	if st.check == nil {
		return nil, nil
	}
	st.checkErr = st.check(&st.up)
	if st.checkErr == nil {
		return nil, nil
	}
	he, ok := errors.AsType[*HTTPError](st.checkErr)
	if !ok {
		he = &HTTPError{Status: http.StatusBadRequest, Message: st.checkErr.Error()}
	}
	return nil, st.reject(he)
}

// upgradeHeader is what a 426 says the endpoint speaks.
const upgradeHeader = "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"

// refusal is the answer to a request gobwas/ws refused.
func refusal(err error, head []byte) *HTTPError {
	switch {
	case errors.Is(err, ws.ErrHandshakeBadMethod):
		// RFC 9110 §15.5.6: a 405 names the methods the resource takes.
		return &HTTPError{Status: http.StatusMethodNotAllowed, Header: "Allow: GET\r\n",
			Message: "method not allowed: a WebSocket upgrade is a GET"}
	case errors.Is(err, ws.ErrHandshakeBadProtocol):
		return &HTTPError{Status: http.StatusHTTPVersionNotSupported, Message: "a WebSocket upgrade needs HTTP/1.1"}
	case errors.Is(err, ws.ErrHandshakeUpgradeRequired):
		return &HTTPError{Status: http.StatusUpgradeRequired, Header: upgradeHeader,
			Message: "unsupported Sec-WebSocket-Version: this endpoint speaks 13"}
	case errors.Is(err, ws.ErrHandshakeBadUpgrade) && !hasHeader(head, "upgrade"):
		// A plain HTTP request on the WebSocket port: tell it what to do.
		return &HTTPError{Status: http.StatusUpgradeRequired, Header: upgradeHeader,
			Message: "this endpoint speaks WebSocket only"}
	}
	return &HTTPError{Status: http.StatusBadRequest, Message: err.Error()}
}

// headRW feeds exactly the request head to gobwas/ws, so its read-ahead never
// swallows a frame the client sent right behind the request.
type headRW struct {
	r []byte
	w *bytes.Buffer
}

func (h *headRW) Read(p []byte) (int, error) {
	if len(h.r) == 0 {
		return 0, errEndOfHead
	}
	n := copy(p, h.r)
	h.r = h.r[n:]
	return n, nil
}

func (h *headRW) Write(p []byte) (int, error) { return h.w.Write(p) }

var errEndOfHead = errors.New("malformed request head")

func hasHeader(head []byte, name string) bool {
	for line := range bytes.SplitSeq(head, []byte("\r\n")) {
		k, _, ok := bytes.Cut(line, []byte(":"))
		if ok && strings.EqualFold(strings.TrimSpace(string(k)), name) {
			return true
		}
	}
	return false
}

// validKeys reports whether head has one Sec-WebSocket-Key header, 16
// bytes in base64, as RFC 6455 §4.1 and §4.2.1 require (gobwas/ws checks
// that one is there). It allocates nothing.
func validKeys(head []byte) bool {
	if headerLines(head, "sec-websocket-key:") > 1 {
		return false // exactly one (RFC 6455 §4.1)
	}
	const name = "sec-websocket-key:"
	for line := range bytes.SplitSeq(head, []byte("\r\n")) {
		if len(line) < len(name) || !strings.EqualFold(string(line[:len(name)]), name) {
			continue
		}
		var key [18]byte
		v := bytes.TrimSpace(line[len(name):])
		if base64.StdEncoding.DecodedLen(len(v)) > len(key) {
			return false
		}
		if n, err := base64.StdEncoding.Decode(key[:], v); err != nil || n != 16 {
			return false
		}
	}
	return true
}

// headerLines counts the lines of head that start with name (lower case,
// with its colon), in any case. It allocates nothing.
func headerLines(head []byte, name string) int {
	n := 0
	for line := range bytes.SplitSeq(head, []byte("\r\n")) {
		if len(line) >= len(name) && strings.EqualFold(string(line[:len(name)]), name) {
			n++
		}
	}
	return n
}

// AppendHTTPError appends to dst an HTTP/1.1 answer with status code, the
// extra header lines headers (each ending in "\r\n"), and body as plain
// text, and says that the connection closes after it. A 426 carries an
// Upgrade header, so its Connection header lists "Upgrade" too (RFC 9110
// §7.8), in the same, single header.
func AppendHTTPError(dst []byte, code int, headers, body string) []byte {
	conn := "close"
	if code == http.StatusUpgradeRequired {
		conn = "Upgrade, close"
	}
	return fmt.Appendf(dst, "HTTP/1.1 %d %s\r\n%sContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n%s\n",
		code, http.StatusText(code), headers, len(body)+1, conn, body)
}

func parseQuery(q string) (Upgrade, error) {
	var up Upgrade
	if q == "" {
		return up, nil
	}
	vals, err := url.ParseQuery(q)
	if err != nil {
		return up, fmt.Errorf("cannot parse query: %w", err)
	}
	return parseValues(vals)
}

// parseValues reads the subscription of a WebSocket or SSE URL: cities,
// since, epoch and token.
func parseValues(vals url.Values) (Upgrade, error) {
	var up Upgrade
	for _, c := range vals["cities"] {
		for name := range strings.SplitSeq(c, ",") {
			if name == "" {
				continue
			}
			if !ValidCity(name) {
				return up, fmt.Errorf("invalid city %q in cities", name)
			}
			up.Cities = append(up.Cities, name)
		}
	}
	// The same bound as a subscribe message: the URL is one too.
	if len(up.Cities) > MaxCitiesPerMessage {
		return up, fmt.Errorf("more than %d cities", MaxCitiesPerMessage)
	}
	if s := vals.Get("since"); s != "" {
		up.Since = make(map[string]uint64)
		if n, err := strconv.ParseUint(s, 10, 64); err == nil {
			for _, c := range up.Cities {
				up.Since[c] = n
			}
		} else {
			for part := range strings.SplitSeq(s, ",") {
				city, num, ok := strings.Cut(part, ":")
				n, err := strconv.ParseUint(num, 10, 64)
				if !ok || err != nil || !ValidCity(city) {
					return up, fmt.Errorf("cannot parse since %q: want N or city:N,city:N", s)
				}
				up.Since[city] = n
			}
		}
	}
	if s := vals.Get("epoch"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return up, fmt.Errorf("cannot parse epoch %q: %w", s, err)
		}
		up.Epoch = n
	}
	up.Token = vals.Get("token")
	return up, nil
}
