package gateway

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metrocast/metrocast/gateway/internal/nodetest"
)

func TestAdminEndpoints(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	f := func(path string, wantCode int, wantBody string) {
		t.Helper()
		code, body := adminGet(t, s, path)
		if code != wantCode || !strings.Contains(string(body), wantBody) {
			t.Errorf("GET %s: %d %.200q, want %d with %q", path, code, body, wantCode, wantBody)
		}
	}
	f("/healthz", http.StatusOK, "ok")
	f("/readyz", http.StatusOK, "ready")
	f("/debug/pprof/", http.StatusOK, "goroutine")
	f("/debug/pprof/cmdline", http.StatusOK, "")
	f("/api/stats?limit=x", http.StatusBadRequest, "limit")
	f("/nothing", http.StatusNotFound, "")
}

// TestAdminStats checks /api/stats: counters, and per city its
// subscribers, ring seqs and state size.
func TestAdminStats(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{RingSize: 4})
	c := dialGobwas(t, wsURL(s, "cities=st1"))
	readType(t, c, "subscribed")
	p := dialProducer(t, s)
	p.Publish(t, dataLine("st1", "snapshot", `{"a":1,"bb":22}`))
	for range 5 {
		p.Publish(t, dataLine("st1", "data_update", `{"c":3}`))
	}
	p.Publish(t, dataLine("st2", "data_update", `{"z":0}`))

	get := func(query string) statsResponse {
		t.Helper()
		code, body := adminGet(t, s, "/api/stats"+query)
		if code != http.StatusOK {
			t.Fatalf("/api/stats%s: status %d %s", query, code, body)
		}
		var r statsResponse
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatalf("/api/stats%s: %s\n%s", query, err, body)
		}
		return r
	}
	r := get("")
	if r.Epoch != s.Epoch() || r.Draining || r.Connections != 1 || r.IngestFrames != 7 || r.Stats.Cities != 2 {
		t.Errorf("stats = %+v", r)
	}
	if len(r.Cities) != 2 || r.Cities[0].City != "st1" || r.Cities[1].City != "st2" {
		t.Fatalf("cities = %+v, want st1 (1 subscriber) then st2", r.Cities)
	}
	// Ring of 4: seqs 3..6 held, 2 evicted.
	want := CityStats{City: "st1", Subscribers: 1, Head: 6, Tail: 3, RingFrames: 4,
		StateKeys: 3, StateBytes: len(`a1bb22c3`), RecentAlerts: 0}
	got := r.Cities[0]
	got.RingBytes = 0
	if got != want {
		t.Errorf("st1 = %+v\nwant %+v", got, want)
	}
	if r.RingEvictions != 2 {
		t.Errorf("ring evictions = %d, want 2", r.RingEvictions)
	}
	if r := get("?city=st2,nowhere"); len(r.Cities) != 1 || r.Cities[0].City != "st2" || r.Cities[0].Head != 1 {
		t.Errorf("?city=st2,nowhere: %+v", r.Cities)
	}
	if r := get("?limit=1"); len(r.Cities) != 1 || r.Cities[0].City != "st1" {
		t.Errorf("?limit=1: %+v", r.Cities)
	}
}

// TestAdminConnBounds checks that the admin port, whose public routes
// answer anyone, cannot be made to hold connections without bound: an
// idle keep-alive connection is closed after IdleTimeout, and past
// maxAdminConns a new connection is closed at once.
func TestAdminConnBounds(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{PingInterval: 100 * time.Millisecond, IdleTimeout: 500 * time.Millisecond})
	addr := s.AdminAddr().String()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.DialTimeout("tcp", addr, readTimeout)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	// healthz sends a request on c and reads its answer; it reports
	// whether there was one.
	healthz := func(c net.Conn, br *bufio.Reader) bool {
		_ = c.SetDeadline(time.Now().Add(readTimeout))
		if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			return false
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	// A keep-alive connection left idle is closed.
	idle := dial()
	br := bufio.NewReader(idle)
	if !healthz(idle, br) {
		t.Fatal("no answer to /healthz")
	}
	_ = idle.SetReadDeadline(time.Now().Add(readTimeout))
	if n, err := br.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("an idle keep-alive connection is still open after %s (read %d, %v)", readTimeout, n, err)
	}
	// Past maxAdminConns, a new connection is closed unanswered; once
	// one goes, there is room again.
	conns := make([]net.Conn, maxAdminConns)
	for i := range conns {
		conns[i] = dial()
	}
	waitFor(t, readTimeout, func() bool { return s.admin.conns.Load() == maxAdminConns })
	over := dial()
	if healthz(over, bufio.NewReader(over)) {
		t.Fatalf("connection %d was answered, want it closed", maxAdminConns+1)
	}
	_ = conns[0].Close()
	waitFor(t, readTimeout, func() bool { return s.admin.conns.Load() < maxAdminConns })
	again := dial()
	if !healthz(again, bufio.NewReader(again)) {
		t.Fatal("no answer once a connection left")
	}
}

// adminDo sends a request to s's admin port with tok as Authorization:
// Bearer (none when empty) and returns the status, the WWW-Authenticate
// header and the body.
func adminDo(t testing.TB, s *Server, method, path, tok, body string) (int, string, []byte) {
	t.Helper()
	if tok != "" {
		tok = "Bearer " + tok
	}
	return adminDoAuth(t, s, method, path, tok, body)
}

// adminDoAuth is adminDo with the whole Authorization header (none when
// empty).
func adminDoAuth(t testing.TB, s *Server, method, path, auth, body string) (int, string, []byte) {
	t.Helper()
	return nodetest.AdminDo(t, "127.0.0.1:"+portOf(s.AdminAddr()), method, path, auth, body)
}

// writeAdminToken writes an admin token file and returns its path and the
// token.
func writeAdminToken(t testing.TB) (string, string) {
	t.Helper()
	tok := "admin-" + strings.Repeat("0123456789", 4)
	f := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(f, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f, tok
}

// TestAdminBeyondLoopbackNeedsToken checks that a node asked to expose its
// admin port beyond loopback without an admin token refuses to start, and
// says why.
func TestAdminBeyondLoopbackNeedsToken(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"0.0.0.0:0", ":9090", "10.77.0.1:9090", "[::]:9090", "admin.example:9090"} {
		_, err := New(Config{Insecure: true, AdminAddr: addr})
		if err == nil || !strings.Contains(err.Error(), "admin_token_file") || !strings.Contains(err.Error(), "beyond loopback") {
			t.Errorf("admin_addr %s without a token: %v, want an error naming admin_token_file", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "localhost:0", "[::1]:9090", "127.0.0.2:9090"} {
		if _, err := New(Config{Insecure: true, AdminAddr: addr}); err != nil {
			t.Errorf("admin_addr %s: %v", addr, err)
		}
	}
	// A token too short to be one.
	short := filepath.Join(t.TempDir(), "short")
	if err := os.WriteFile(short, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Insecure: true, Addr: "127.0.0.1:0", IngestAddr: "127.0.0.1:0", AdminAddr: "0.0.0.0:0", AdminTokenFile: short})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err == nil || !strings.Contains(err.Error(), "admin_token_file") {
		t.Fatalf("a 6-byte admin token: %v, want an error", err)
	}
}

// TestAdminToken checks an admin port beyond loopback: probes and scrapes
// need nothing, the operators' routes the admin token, pprof is off unless
// asked for, HTTP ingest takes a producer token or the admin token, and
// the dashboard works with its client token, which shows it only its
// cities.
func TestAdminToken(t *testing.T) {
	t.Parallel()
	cfg, _ := authConfig(t)
	file, admin := writeAdminToken(t)
	cfg.AdminAddr, cfg.AdminTokenFile = "0.0.0.0:0", file // tests dial 127.0.0.1
	s := startServer(t, cfg)
	p := dialProducer(t, s)
	p.Publish(t, dataLine("at-a", "data_update", `{"x":1}`))
	p.Publish(t, dataLine("at-b", "data_update", `{"x":1}`))
	viewer := hs256(t, claims("viewer", time.Hour, "at-a"))
	producer := hs256(t, publishClaims("feeder", time.Hour, "at-a"))

	refused := uint64(0)
	f := func(method, path, tok, body string, want int, wantBody string) {
		t.Helper()
		code, challenge, b := adminDo(t, s, method, path, tok, body)
		if code != want || !strings.Contains(string(b), wantBody) {
			t.Errorf("%s %s with %.12q: %d %.200q, want %d with %q", method, path, tok, code, b, want, wantBody)
		}
		if code == http.StatusUnauthorized {
			refused++
			if challenge == "" {
				t.Errorf("%s %s: 401 without WWW-Authenticate", method, path)
			}
		}
	}
	// Public.
	f("GET", "/healthz", "", "", http.StatusOK, "ok")
	f("GET", "/readyz", "", "", http.StatusOK, "ready")
	f("GET", "/metrics", "", "", http.StatusOK, "metrocast_connections")
	f("GET", "/", "", "", http.StatusOK, "<script")
	f("GET", "/web/dashboard.js", "", "", http.StatusOK, "import")
	// The operators'.
	for _, tok := range []string{"", "nope", admin + "x", admin[:len(admin)-1], viewer, producer, "Bearer " + admin} {
		f("GET", "/api/stats", tok, "", http.StatusUnauthorized, "admin token")
	}
	f("GET", "/api/stats", admin, "", http.StatusOK, `"city": "at-a"`)
	// The scheme's case does not matter (RFC 9110 §11.1), nor the spaces
	// after it, as on the WebSocket port; another scheme is no token.
	for _, auth := range []string{"bearer " + admin, "BEARER " + admin, "Bearer  " + admin} {
		if code, _, b := adminDoAuth(t, s, "GET", "/api/stats", auth, ""); code != http.StatusOK {
			t.Errorf("GET /api/stats with %.10q…: %d %.200q, want 200", auth, code, b)
		}
	}
	if code, _, b := adminDoAuth(t, s, "GET", "/api/cities", "bearer "+viewer, ""); code != http.StatusOK || !strings.Contains(string(b), `{"cities":["at-a"]}`) {
		t.Errorf("GET /api/cities with a client token as bearer: %d %.200q, want 200", code, b)
	}
	if code, _, b := adminDoAuth(t, s, "POST", "/api/publish", "bearer "+producer, `{"id":"hb","city":"at-a","type":"data_update","data":{"x":3}}`); code != http.StatusOK {
		t.Errorf("POST /api/publish with a producer token as bearer: %d %.200q, want 200", code, b)
	}
	for _, auth := range []string{"Basic " + admin, "Bearer" + admin, admin} {
		if code, _, _ := adminDoAuth(t, s, "GET", "/api/stats", auth, ""); code != http.StatusUnauthorized {
			t.Errorf("GET /api/stats with %.10q…: %d, want 401", auth, code)
		}
		refused++
	}
	// pprof is off beyond loopback unless asked for: not there even for
	// the admin.
	f("GET", "/debug/pprof/cmdline", admin, "", http.StatusNotFound, "")
	f("GET", "/debug/pprof/", admin, "", http.StatusNotFound, "")
	// HTTP ingest: a producer token for its cities, or the admin token.
	line := `{"id":"h","city":"at-a","type":"data_update","data":{"x":2}}`
	f("POST", "/api/publish", "", line, http.StatusUnauthorized, "token")
	f("POST", "/api/publish", viewer, line, http.StatusUnauthorized, "token")
	f("POST", "/api/publish", producer, line, http.StatusOK, `"ack":"h"`)
	f("POST", "/api/publish", producer, strings.ReplaceAll(line, "at-a", "at-b"), http.StatusBadRequest, "forbidden")
	f("POST", "/api/publish", admin, strings.ReplaceAll(line, "at-a", "at-b"), http.StatusOK, `"ack":"h"`)
	// The dashboard's data, with its client token: its cities only.
	f("GET", "/api/client", "", "", http.StatusUnauthorized, "client token")
	f("GET", "/api/client", "nope", "", http.StatusUnauthorized, "client token")
	f("GET", "/api/client", viewer, "", http.StatusOK, `"ws_path":"/ws"`)
	f("GET", "/api/cities", "", "", http.StatusUnauthorized, "client token")
	f("GET", "/api/cities", viewer, "", http.StatusOK, `{"cities":["at-a"]}`)
	f("GET", "/api/cities", admin, "", http.StatusOK, `{"cities":["at-a","at-b"]}`)
	if got := s.Stats().AdminRefused; got != refused {
		t.Errorf("AdminRefused %d, want %d", got, refused)
	}
	if m := scrape(t, s); m["metrocast_admin_refused_total"] != float64(refused) {
		t.Errorf("metrocast_admin_refused_total %v, want %d", m["metrocast_admin_refused_total"], refused)
	}

	// Asked for, pprof is there, behind the token.
	cfg.AdminPprof = true
	s = startServer(t, cfg)
	f("GET", "/debug/pprof/cmdline", "", "", http.StatusUnauthorized, "admin token")
	f("GET", "/debug/pprof/cmdline", admin, "", http.StatusOK, "")
	f("GET", "/debug/pprof/", admin, "", http.StatusOK, "goroutine")

	// On loopback, a token set is a token required.
	cfg.AdminAddr, cfg.AdminPprof = "", false
	s = startServer(t, cfg)
	f("GET", "/api/stats", "", "", http.StatusUnauthorized, "admin token")
	f("GET", "/debug/pprof/cmdline", "", "", http.StatusUnauthorized, "admin token")
	f("GET", "/debug/pprof/cmdline", admin, "", http.StatusOK, "")
}

// TestAdminTokenReload checks that the admin token rotates without a
// restart: after the file changes and ReloadAdminToken (SIGHUP), the old
// token is refused and the new one taken; a file that is no longer a
// usable token changes nothing and says why.
func TestAdminTokenReload(t *testing.T) {
	t.Parallel()
	file, old := writeAdminToken(t)
	s := startServer(t, Config{AdminAddr: "0.0.0.0:0", AdminTokenFile: file})
	want := func(tok string, code int) {
		t.Helper()
		if got, _, b := adminDo(t, s, "GET", "/api/stats", tok, ""); got != code {
			t.Errorf("/api/stats with %.12q: %d %.100q, want %d", tok, got, b, code)
		}
	}
	want(old, http.StatusOK)
	rotated := "rotated-" + strings.Repeat("9876543210", 4)
	if err := os.WriteFile(file, []byte(rotated+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	want(rotated, http.StatusUnauthorized) // not before the reload
	if err := s.ReloadAdminToken(); err != nil {
		t.Fatal(err)
	}
	want(old, http.StatusUnauthorized)
	want(rotated, http.StatusOK)
	// Too short, then gone: the rotated token stays.
	if err := os.WriteFile(file, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.ReloadAdminToken(); err == nil || !strings.Contains(err.Error(), "want at least 32") {
		t.Errorf("a 5-byte token: %v, want an error saying the length wanted", err)
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if err := s.ReloadAdminToken(); err == nil || !strings.Contains(err.Error(), "admin_token_file") {
		t.Errorf("a removed file: %v, want an error naming admin_token_file", err)
	}
	want(rotated, http.StatusOK)
	want("short", http.StatusUnauthorized)
}
