package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"

	"github.com/metrocast/metrocast/codec"
	"github.com/metrocast/metrocast/gateway/internal/nodetest"
)

// The client side of the tests is nodetest's, shared with the tests of
// the packages around the core (gateway/cluster); these are its names here.
const (
	readTimeout = nodetest.ReadTimeout
	longTimeout = nodetest.LongTimeout
)

type (
	msg           = nodetest.Msg
	presenceMsg   = nodetest.PresenceMsg
	client        = nodetest.Client
	closedError   = nodetest.ClosedError
	gorillaClient = nodetest.GorillaClient
	producer      = nodetest.Producer
	answer        = nodetest.Answer
	event         = nodetest.Event
	sseClient     = nodetest.SSEClient
	logBuffer     = nodetest.LogBuffer
)

var (
	waitFor      = nodetest.WaitFor
	parseMsg     = nodetest.ParseMsg
	dialGobwas   = nodetest.DialGobwas
	dialGorilla  = nodetest.DialGorilla
	dialAuth     = nodetest.DialAuth
	mustDialAuth = nodetest.MustDialAuth
	bearer       = nodetest.Bearer
	send         = nodetest.Send
	read         = nodetest.Read
	readType     = nodetest.ReadType
	expectClose  = nodetest.ExpectClose
	dataLine     = nodetest.DataLine
	alertLine    = nodetest.AlertLine
	jsonEqual    = nodetest.JSONEqual
	sseGet       = nodetest.SSEGet
	parseMetrics = nodetest.ParseMetrics
	series       = nodetest.Series
)

func wsURL(s *Server, query string) string { return nodetest.WSURL(s.Addr().String(), query) }

func dialProducer(t testing.TB, s *Server) *producer {
	t.Helper()
	return nodetest.DialProducer(t, s.IngestAddr().String())
}

// dialSSE opens a stream of s at target (/sse?…), which must start.
func dialSSE(t testing.TB, s *Server, target string, header ...string) *sseClient {
	t.Helper()
	return nodetest.DialSSE(t, s.Addr().String(), target, header...)
}

// scrape fetches and parses s's /metrics (nodetest.Scrape).
func scrape(t testing.TB, s *Server) map[string]float64 {
	t.Helper()
	return nodetest.Scrape(t, s.AdminAddr().String())
}

// adminGet fetches path from s's admin port.
func adminGet(t testing.TB, s *Server, path string) (int, []byte) {
	t.Helper()
	return nodetest.AdminGet(t, s.AdminAddr().String(), path)
}

// startServer starts a server on loopback ports with cfg (Addr, IngestAddr
// and, when zero, Loops and Logger are filled in) and shuts it down when the
// test ends. Without a key in cfg the server runs insecure: every client is
// anonymous with every city.
func startServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.AdminAddr == "" {
		cfg.AdminAddr = "127.0.0.1:0"
	}
	if cfg.IngestAddr == "" {
		cfg.IngestAddr = "127.0.0.1:0"
	}
	cfg.Insecure = !cfg.hasKeys()
	if cfg.ClientMessageRate == 0 {
		// Tests fire messages faster than any dashboard; the rate limit
		// has tests of its own.
		cfg.ClientMessageRate = 600_000
	}
	if cfg.Loops == 0 {
		cfg.Loops = 2
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("cannot create server: %s", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("cannot start server: %s", err)
	}
	t.Cleanup(func() {
		shutdowns.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = s.Drain(ctx, 0) // the test may have shut it down already
		})
	})
	return s
}

// shutdowns tracks the servers stopping in the background, so that no
// test waits for another's loops to stop. TestMain waits for them all.
var shutdowns sync.WaitGroup

func TestMain(m *testing.M) {
	// As the binary does: TYPE lines let the tests' Prometheus parser
	// check histograms and counters as such.
	metrics.ExposeMetadata(true)
	code := m.Run()
	shutdowns.Wait()
	os.Exit(code)
}

// stallLoop holds s's first event loop in a task until release is called
// (at the latest when the test ends), as a thread held back on a loaded
// machine would be: meanwhile the loop reads nothing, and the housekeeping
// the ticker asks for waits behind the task, to run before the next read.
func stallLoop(t testing.TB, s *Server) (release func()) {
	t.Helper()
	stalled, done := make(chan struct{}), make(chan struct{})
	l := (*s.loops.Load())[0]
	err := l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		close(stalled)
		<-done
		return nil
	}))
	if err != nil {
		t.Fatalf("cannot stall the loop: %s", err)
	}
	<-stalled
	var once sync.Once
	release = func() { once.Do(func() { close(done) }) }
	t.Cleanup(release)
	return release
}

// closes returns the server's count of closes for reason.
func closes(s *Server, reason CloseReason) uint64 {
	return s.Stats().Closes[reason.String()]
}

// waitCloses waits until the count of closes for reason reaches want.
func waitCloses(t testing.TB, s *Server, reason CloseReason, want uint64) {
	t.Helper()
	deadline := time.Now().Add(readTimeout)
	for {
		got := closes(s, reason)
		if got >= want {
			if got > want {
				t.Fatalf("Closes[%s] = %d, want %d", reason, got, want)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Closes[%s] = %d after %s, want %d", reason, got, readTimeout, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// dialer opens a client of one library.
type dialer struct {
	name string
	dial func(t testing.TB, url string) client
}

var dialers = []dialer{
	{"gobwas", dialGobwas},
	{"gorilla", dialGorilla},
}

// subscribeAuth sends the original dashboard's auth message and reads its
// answers: subscribed, then initial_data.
func subscribeAuth(t testing.TB, c client, city string) (sub, initial msg) {
	t.Helper()
	send(t, c, `{"type":"auth","token":"t","cityId":"`+city+`"}`)
	sub = readType(t, c, "subscribed")
	if len(sub.Cities) != 1 || sub.Cities[0].City != city {
		t.Fatalf("subscribed %s, want city %s", sub.Raw, city)
	}
	initial = readType(t, c, "initial_data")
	if initial.City != city || initial.Resumed {
		t.Fatalf("initial_data %s, want city %s resumed false", initial.Raw, city)
	}
	return sub, initial
}

// rawConn is a client on a plain TCP socket, for byte-level tests.
type rawConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t testing.TB, s *Server) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr().String(), readTimeout)
	if err != nil {
		t.Fatalf("cannot dial: %s", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{c: c, br: bufio.NewReader(c)}
}

// upgradeRequest returns a valid upgrade request for target with extra
// header lines (each ending in \r\n).
func upgradeRequest(target string, extra ...string) string {
	return "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
		strings.Join(extra, "") + "\r\n"
}

func (r *rawConn) write(t testing.TB, b []byte) {
	t.Helper()
	_ = r.c.SetWriteDeadline(time.Now().Add(readTimeout))
	if _, err := r.c.Write(b); err != nil {
		t.Fatalf("cannot write: %s", err)
	}
}

// response reads the HTTP response head (and body) from the server.
func (r *rawConn) response(t testing.TB) *http.Response {
	t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(readTimeout))
	resp, err := http.ReadResponse(r.br, nil)
	if err != nil {
		t.Fatalf("cannot read HTTP response: %s", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		_, _ = io.Copy(io.Discard, resp.Body)
	}
	_ = resp.Body.Close()
	return resp
}

// upgrade performs a valid handshake on target.
func (r *rawConn) upgrade(t testing.TB, target string) {
	t.Helper()
	r.write(t, []byte(upgradeRequest(target)))
	if resp := r.response(t); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: status %d, want 101", resp.StatusCode)
	}
}

// dialUpgraded opens a raw connection that has completed its handshake.
func dialUpgraded(t testing.TB, s *Server) *rawConn {
	t.Helper()
	r := dialRaw(t, s)
	r.upgrade(t, "/ws")
	return r
}

// dialFollowing opens a raw connection upgraded with ?cities=city, its
// subscribed and initial_data read.
func dialFollowing(t testing.TB, s *Server, city string) *rawConn {
	t.Helper()
	r := dialRaw(t, s)
	r.upgrade(t, "/ws?cities="+city)
	r.msgType(t, "subscribed")
	r.msgType(t, "initial_data")
	return r
}

// clientFrame returns one masked client frame.
func clientFrame(fin bool, op ws.OpCode, payload []byte) []byte {
	return clientFrameRsv(fin, 0, op, payload)
}

func clientFrameRsv(fin bool, rsv byte, op ws.OpCode, payload []byte) []byte {
	var b bytes.Buffer
	h := ws.Header{Fin: fin, Rsv: rsv, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(len(payload))}
	if err := ws.WriteHeader(&b, h); err != nil {
		panic(err)
	}
	p := append([]byte(nil), payload...)
	ws.Cipher(p, h.Mask, 0)
	b.Write(p)
	return b.Bytes()
}

// text returns a masked, final text frame.
func text(s string) []byte { return clientFrame(true, ws.OpText, []byte(s)) }

// closePayload returns a close frame payload.
func closePayload(code ws.StatusCode, reason string) []byte {
	return ws.NewCloseFrameBody(code, reason)
}

// frame reads the next server frame. Server frames are unmasked and whole.
func (r *rawConn) frame(t testing.TB) ws.Frame {
	t.Helper()
	f, err := r.nextFrame(readTimeout)
	if err != nil {
		t.Fatalf("cannot read a frame: %s", err)
	}
	return f
}

func (r *rawConn) nextFrame(timeout time.Duration) (ws.Frame, error) {
	_ = r.c.SetReadDeadline(time.Now().Add(timeout))
	f, err := ws.ReadFrame(r.br)
	if err == nil && f.Header.Masked {
		err = errors.New("server sent a masked frame")
	}
	if err == nil && !f.Header.Fin {
		err = errors.New("server sent a fragment")
	}
	return f, err
}

// msg reads the next server frame, which must be a text message.
func (r *rawConn) msg(t testing.TB) msg {
	t.Helper()
	f := r.frame(t)
	if f.Header.OpCode != ws.OpText {
		t.Fatalf("got a frame of opcode %d (%q), want text", f.Header.OpCode, f.Payload)
	}
	m, err := parseMsg(f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (r *rawConn) msgType(t testing.TB, typ string) msg {
	t.Helper()
	m := r.msg(t)
	if m.Type != typ {
		t.Fatalf("got %s, want a %s message", m.Raw, typ)
	}
	return m
}

// expectClose reads frames until a close frame, checks its code, and then
// checks that the server closes the TCP connection.
func (r *rawConn) expectClose(t testing.TB, code ws.StatusCode) {
	t.Helper()
	for {
		f := r.frame(t)
		if f.Header.OpCode != ws.OpClose {
			continue
		}
		got, reason := ws.StatusNoStatusRcvd, ""
		if len(f.Payload) >= 2 {
			got, reason = ws.ParseCloseFrameData(f.Payload)
		}
		if got != code {
			t.Fatalf("closed with %d %q, want %d", got, reason, code)
		}
		break
	}
	r.expectEOF(t)
}

// expectEOF checks that the server closes the connection (with nothing
// else to read but frames or bytes it had queued before).
func (r *rawConn) expectEOF(t testing.TB) {
	t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(readTimeout))
	_, err := io.Copy(io.Discard, r.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server did not close the connection within %s", readTimeout)
	}
	// nil (EOF) or a reset: either way the server closed.
}

// unmaskedText is a text frame as a server would send it: no mask.
func unmaskedText(s string) []byte { return codec.AppendFrame(nil, ws.OpText, []byte(s)) }
