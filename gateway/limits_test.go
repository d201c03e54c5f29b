package gateway

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/metrocast/metrocast/gateway/auth"
)

func TestOriginAllowed(t *testing.T) {
	f := func(patterns []string, origin string, want bool) {
		t.Helper()
		if got := originAllowed(patterns, origin); got != want {
			t.Fatalf("originAllowed(%q, %q) = %v, want %v", patterns, origin, got, want)
		}
	}
	f(nil, "https://evil.example", true)
	f([]string{"*"}, "https://evil.example", true)
	dash := []string{"https://dash.example.com", "https://*.example.org", "http://localhost:3000"}
	f(dash, "https://dash.example.com", true)
	f(dash, "HTTPS://Dash.Example.com", true)
	f(dash, "http://dash.example.com", false)
	f(dash, "https://dash.example.com:8443", false)
	f(dash, "https://dash.example.com.evil.net", false)
	f(dash, "https://a.example.org", true)
	f(dash, "https://a.b.example.org", true)
	f(dash, "https://example.org", false)
	f(dash, "https://evilexample.org", false)
	f(dash, "http://a.example.org", false)
	f(dash, "https://x/.example.org", false)
	f(dash, "http://localhost:3000", true)
	f(dash, "http://localhost:3001", false)
	f(dash, "null", false)

	v := func(p string, want bool) {
		t.Helper()
		if got := validOriginPattern(p); got != want {
			t.Fatalf("validOriginPattern(%q) = %v, want %v", p, got, want)
		}
	}
	v("*", true)
	v("https://a.example", true)
	v("https://*.example", true)
	v("http://localhost:3000", true)
	v("a.example", false)
	v("https://a.example/", false)
	v("https://*", false)
	v("https://a.*.example", false)
	v("https://u@a.example", false)
}

func TestIPKey(t *testing.T) {
	f := func(addr, want string) {
		t.Helper()
		ap := netip.MustParseAddrPort(addr)
		if got := ipKey(net.TCPAddrFromAddrPort(ap)); got != netip.MustParseAddr(want) {
			t.Fatalf("ipKey(%s) = %s, want %s", addr, got, want)
		}
	}
	f("127.0.0.2:5000", "127.0.0.2")
	f("[::ffff:10.1.2.3]:80", "10.1.2.3")
	f("[2001:db8:1:2:3:4:5:6]:80", "2001:db8:1:2::")
	f("[2001:db8:1:2:ffff::1]:80", "2001:db8:1:2::")
}

// dialFrom opens a raw connection to s from the loopback address src.
func dialFrom(t testing.TB, s *Server, src string) *rawConn {
	t.Helper()
	d := net.Dialer{Timeout: readTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatalf("cannot dial from %s: %s", src, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{c: c, br: bufio.NewReader(c)}
}

// expectRefused sends a request on r and checks the HTTP refusal.
func expectRefused(t testing.TB, r *rawConn, status int) {
	t.Helper()
	r.write(t, []byte(upgradeRequest("/ws")))
	resp := r.response(t)
	if resp.StatusCode != status || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d, Retry-After %q; want %d with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"), status)
	}
	r.expectEOF(t)
}

// TestConnLimitPerIP fills one source address and checks that another is
// not affected and that a freed slot is usable again.
func TestConnLimitPerIP(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{MaxConnsPerIP: 2})
	a1, a2 := dialFrom(t, s, "127.0.0.2"), dialFrom(t, s, "127.0.0.2")
	a1.upgrade(t, "/ws")
	a2.upgrade(t, "/ws")
	expectRefused(t, dialFrom(t, s, "127.0.0.2"), http.StatusTooManyRequests)
	// Refused before the upgrade even when the request is slow to come.
	slow := dialFrom(t, s, "127.0.0.2")
	req := []byte(upgradeRequest("/ws"))
	slow.write(t, req[:10])
	slow.write(t, req[10:])
	if resp := slow.response(t); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429", resp.StatusCode)
	}
	// A refused client that sends nothing is not kept for the whole
	// handshake time-out.
	mute := dialFrom(t, s, "127.0.0.2")
	mute.expectEOF(t)
	for _, src := range []string{"127.0.0.3", "127.0.0.4"} {
		b1, b2 := dialFrom(t, s, src), dialFrom(t, s, src)
		b1.upgrade(t, "/ws")
		b2.upgrade(t, "/ws")
		b2.write(t, text(`{"type":"ping"}`))
		b2.msgType(t, "pong")
		expectRefused(t, dialFrom(t, s, src), http.StatusTooManyRequests)
	}
	waitCloses(t, s, CloseIPLimit, 4)
	// The first address frees a slot.
	_ = a1.c.Close()
	waitCloses(t, s, ClosePeer, 1)
	dialFrom(t, s, "127.0.0.2").upgrade(t, "/ws")
	expectRefused(t, dialFrom(t, s, "127.0.0.2"), http.StatusTooManyRequests)
	if st := s.Stats(); st.Upgraded != 7 {
		t.Fatalf("Upgraded = %d, want 7", st.Upgraded)
	}
}

// TestConnLimitNode checks MaxConns.
func TestConnLimitNode(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{MaxConns: 3})
	var open []*rawConn
	for i := range 3 {
		r := dialFrom(t, s, "127.0.1."+string(rune('1'+i)))
		r.upgrade(t, "/ws")
		open = append(open, r)
	}
	expectRefused(t, dialFrom(t, s, "127.0.1.9"), http.StatusServiceUnavailable)
	waitCloses(t, s, CloseNodeFull, 1)
	_ = open[0].c.Close()
	waitCloses(t, s, ClosePeer, 1)
	dialUpgraded(t, s)
	expectRefused(t, dialRaw(t, s), http.StatusServiceUnavailable)
}

// TestOriginAllowList checks the 403 for a browser from another site.
func TestOriginAllowList(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{AllowedOrigins: []string{"https://dash.example.com", "https://*.example.org"}})
	f := func(origin string, status int) {
		t.Helper()
		r := dialRaw(t, s)
		var extra []string
		if origin != "" {
			extra = append(extra, "Origin: "+origin+"\r\n")
		}
		r.write(t, []byte(upgradeRequest("/ws", extra...)))
		if resp := r.response(t); resp.StatusCode != status {
			t.Fatalf("Origin %q: status %d, want %d", origin, resp.StatusCode, status)
		}
	}
	f("", http.StatusSwitchingProtocols)
	f("https://dash.example.com", http.StatusSwitchingProtocols)
	f("https://a.example.org", http.StatusSwitchingProtocols)
	f("https://evil.example.net", http.StatusForbidden)
	f("https://example.org", http.StatusForbidden)
	f("null", http.StatusForbidden)
	waitCloses(t, s, CloseOriginForbidden, 3)
}

// TestRateLimit trips the message rate: over it each message is answered
// rate_limited, and MaxClientErrors of those close the connection (1008);
// a neighbour is not affected.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	// One message a minute after a burst of 5: nothing refills during
	// the test.
	s := startServer(t, Config{ClientMessageRate: 1, ClientMessageBurst: 5, MaxClientErrors: 3})
	calm := dialUpgraded(t, s)
	r := dialUpgraded(t, s)
	var burst []byte
	for range 5 {
		burst = append(burst, text(`{"type":"ping"}`)...)
	}
	r.write(t, burst)
	for range 5 {
		r.msgType(t, "pong")
	}
	// Pings count too: a ping frame over the rate is not answered.
	r.write(t, clientFrame(true, ws.OpPing, []byte("p")))
	if m := r.msgType(t, "error"); m.Code != "rate_limited" {
		t.Fatalf("%s, want rate_limited", m.Raw)
	}
	r.write(t, text(`{"type":"ping"}`))
	r.msgType(t, "error")
	r.write(t, text(`{"type":"ping"}`))
	r.msgType(t, "error")
	r.expectClose(t, ws.StatusPolicyViolation)
	waitCloses(t, s, CloseRateLimited, 1)
	if st := s.Stats(); st.RateLimited != 3 {
		t.Fatalf("RateLimited = %d, want 3", st.RateLimited)
	}
	calm.write(t, text(`{"type":"ping"}`))
	calm.msgType(t, "pong")
}

// TestUnauthenticatedAbuse checks the limits on a connection that has not
// authenticated yet, on a node with keys: a slowloris request, an oversized
// first message and a flood are all cut off.
func TestUnauthenticatedAbuse(t *testing.T) {
	t.Parallel()
	cfg, _ := authConfig(t)
	cfg.HandshakeTimeout = 200 * time.Millisecond
	cfg.MaxMessageBytes = 1024
	cfg.ClientMessageRate, cfg.ClientMessageBurst, cfg.MaxClientErrors = 1, 2, 2
	s := startServer(t, cfg)

	slow := dialRaw(t, s)
	req := []byte(upgradeRequest("/ws"))
	slow.write(t, req[:len(req)-3])
	slow.expectEOF(t)
	waitCloses(t, s, CloseHandshakeTimeout, 1)

	big := dialUpgraded(t, s)
	big.write(t, text(`{"type":"auth","token":"`+strings.Repeat("x", 2048)+`"}`))
	big.expectClose(t, ws.StatusMessageTooBig)

	flood := dialUpgraded(t, s)
	flood.write(t, bytes.Repeat(text(`{`), 4))
	flood.msgType(t, "error") // bad_json
	flood.msgType(t, "error") // bad_json
	flood.expectClose(t, ws.StatusPolicyViolation)

	flood = dialUpgraded(t, s)
	flood.write(t, bytes.Repeat(text(`{"type":"ping"}`), 4))
	if m := flood.msgType(t, "auth_error"); m.Code != auth.CodeRequired {
		t.Fatalf("%s, want auth_required", m.Raw)
	}
	flood.expectClose(t, StatusAuthFailed)
	if st := s.Stats(); st.Upgraded != 3 {
		t.Fatalf("Upgraded = %d, want 3", st.Upgraded)
	}
}

// TestTrustedProxy: connections from a trusted proxy count per client by
// X-Forwarded-For (the rightmost untrusted entry), those from anywhere
// else by their own address whatever they claim; a malformed header from
// the proxy is a 400.
func TestTrustedProxy(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{MaxConnsPerIP: 2, TrustedProxies: []string{"127.0.0.2", "10.0.0.0/8"}})
	via := func(xff string) *rawConn {
		t.Helper()
		r := dialFrom(t, s, "127.0.0.2")
		r.write(t, []byte(upgradeRequest("/ws", "X-Forwarded-For: "+xff+"\r\n")))
		return r
	}
	status := func(r *rawConn) int {
		t.Helper()
		return r.response(t).StatusCode
	}
	// Two clients of 203.0.113.7 through the proxy; a third is refused,
	// however it prefixes the header, and even through a second proxy.
	first := via("203.0.113.7")
	for _, r := range []*rawConn{first, via("198.51.100.1, 203.0.113.7")} {
		if got := status(r); got != http.StatusSwitchingProtocols {
			t.Fatalf("status %d, want 101", got)
		}
	}
	for _, xff := range []string{"203.0.113.7", "192.0.2.1, 203.0.113.7", "203.0.113.7, 10.1.2.3"} {
		r := via(xff)
		if resp := r.response(t); resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("%s: status %d, Retry-After %q; want 429", xff, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	// Other clients behind the same proxy are not affected, nor is the
	// proxy's own address (a request without the header counts on it).
	for _, xff := range []string{"203.0.113.8", "2001:db8::1", "2001:db8::2"} {
		if got := status(via(xff)); got != http.StatusSwitchingProtocols {
			t.Fatalf("%s: status %d, want 101", xff, got)
		}
	}
	if got := status(via("2001:db8::3")); got != http.StatusTooManyRequests {
		t.Fatalf("a third client of one IPv6 /64: status %d, want 429", got)
	}
	proxy := dialFrom(t, s, "127.0.0.2")
	proxy.upgrade(t, "/ws")
	// A malformed header from the proxy: 400, and nothing counted.
	for _, xff := range []string{"unknown", "203.0.113.9,", "203.0.113.9, bogus"} {
		if got := status(via(xff)); got != http.StatusBadRequest {
			t.Fatalf("%q: status %d, want 400", xff, got)
		}
	}
	// A client that is not a trusted proxy is counted by its own address.
	direct := func(xff string) int {
		r := dialFrom(t, s, "127.0.0.3")
		r.write(t, []byte(upgradeRequest("/ws", "X-Forwarded-For: "+xff+"\r\n")))
		return status(r)
	}
	if a, b, c := direct("192.0.2.10"), direct("192.0.2.11"), direct("192.0.2.12"); a != 101 || b != 101 || c != 429 {
		t.Fatalf("spoofed headers from an untrusted address: %d %d %d, want 101 101 429", a, b, c)
	}
	// A client's slot is freed when it leaves.
	_ = first.c.Close()
	waitCloses(t, s, ClosePeer, 1)
	if got := status(via("203.0.113.7")); got != http.StatusSwitchingProtocols {
		t.Fatalf("after one left: status %d, want 101", got)
	}
	waitCloses(t, s, CloseIPLimit, 5)
	if got := closes(s, CloseHandshakeFailed); got != 3 {
		t.Fatalf("%d handshake failures, want the 3 malformed headers", got)
	}
}

// TestTrustedProxyIPv6: a trusted IPv6 proxy listed by its own address
// (not its /64) is trusted.
func TestTrustedProxyIPv6(t *testing.T) {
	t.Parallel()
	if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %s", err)
	} else {
		_ = ln.Close()
	}
	s := startServer(t, Config{Addr: "[::1]:0", MaxConnsPerIP: 1, TrustedProxies: []string{"::1"}})
	for _, xff := range []string{"203.0.113.7", "203.0.113.8"} {
		c, err := net.DialTimeout("tcp", s.Addr().String(), readTimeout)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		r := &rawConn{c: c, br: bufio.NewReader(c)}
		r.write(t, []byte(upgradeRequest("/ws", "X-Forwarded-For: "+xff+"\r\n")))
		if got := r.response(t).StatusCode; got != http.StatusSwitchingProtocols {
			t.Fatalf("%s through the proxy [::1]: status %d, want 101", xff, got)
		}
	}
}
