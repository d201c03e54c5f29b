package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/gorilla/websocket"
	"github.com/panjf2000/gnet/v2"

	"github.com/metrocast/metrocast/codec"
)

// readTimeout bounds every blocking read in the tests: it is the failure
// bound, never a synchronisation point.
const readTimeout = 5 * time.Second

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
	if natsBinary.path != "" {
		_ = os.RemoveAll(filepath.Dir(natsBinary.path))
	}
	os.Exit(code)
}

// waitFor polls fn until it returns true, failing the test after timeout.
// It is how tests wait for counters that other goroutines update (after
// nats-server's checkFor).
func waitFor(t testing.TB, timeout time.Duration, fn func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !fn() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
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

func wsURL(s *Server, query string) string {
	u := "ws://" + s.Addr().String() + "/ws"
	if query != "" {
		u += "?" + query
	}
	return u
}

// msg is any server → client message.
type msg struct {
	Type      string          `json:"type"`
	City      string          `json:"city"`
	Seq       uint64          `json:"seq"`
	Epoch     uint64          `json:"epoch"`
	Resumed   bool            `json:"resumed"`
	Timestamp int64           `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
	Alerts    json.RawMessage `json:"alerts"`
	Recent    []struct {
		Seq       uint64          `json:"seq"`
		Timestamp int64           `json:"timestamp"`
		Alerts    json.RawMessage `json:"alerts"`
	} `json:"recent_alerts"`
	Cities []struct {
		City    string `json:"city"`
		Seq     uint64 `json:"seq"`
		Resumed bool   `json:"resumed"`
	} `json:"cities"`
	Code    string `json:"code"`
	Message string `json:"message"`

	raw []byte
}

func (m *msg) String() string { return string(m.raw) }

func parseMsg(b []byte) (msg, error) {
	var m msg
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("cannot parse server message %q: %w", b, err)
	}
	if m.Type == "" {
		return m, fmt.Errorf("server message without type: %q", b)
	}
	m.raw = append([]byte(nil), b...)
	return m, nil
}

// closedError is a close frame received from the server.
type closedError struct {
	code   ws.StatusCode
	reason string
}

func (e *closedError) Error() string { return fmt.Sprintf("closed by server: %d %q", e.code, e.reason) }

// client is a WebSocket client from one of the libraries under test. Its
// methods are not safe for concurrent use, except close.
type client interface {
	// send writes one text message.
	send(text string) error
	// next returns the next data message, or a *closedError.
	next(timeout time.Duration) ([]byte, error)
	// sendClose starts the closing handshake.
	sendClose(code ws.StatusCode, reason string) error
	close()
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

type gobwasClient struct {
	c  net.Conn
	rw io.ReadWriter
}

func dialGobwas(t testing.TB, url string) client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	c, br, _, err := ws.Dial(ctx, url)
	if err != nil {
		t.Fatalf("gobwas: cannot dial %s: %s", url, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if br == nil {
		// Nothing was read ahead; a bufio.Reader over c keeps reads cheap.
		br = bufio.NewReader(c)
	}
	return &gobwasClient{c: c, rw: struct {
		io.Reader
		io.Writer
	}{br, c}}
}

func (g *gobwasClient) send(text string) error {
	return wsutil.WriteClientText(g.c, []byte(text))
}

func (g *gobwasClient) next(timeout time.Duration) ([]byte, error) {
	_ = g.c.SetReadDeadline(time.Now().Add(timeout))
	b, _, err := wsutil.ReadServerData(g.rw)
	var ce wsutil.ClosedError
	if errors.As(err, &ce) {
		return nil, &closedError{ce.Code, ce.Reason}
	}
	return b, err
}

func (g *gobwasClient) sendClose(code ws.StatusCode, reason string) error {
	return wsutil.WriteClientMessage(g.c, ws.OpClose, ws.NewCloseFrameBody(code, reason))
}

func (g *gobwasClient) close() { _ = g.c.Close() }

type gorillaClient struct{ c *websocket.Conn }

func dialGorilla(t testing.TB, url string) client {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: readTimeout}
	c, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("gorilla: cannot dial %s: %s", url, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &gorillaClient{c}
}

func (g *gorillaClient) send(text string) error {
	return g.c.WriteMessage(websocket.TextMessage, []byte(text))
}

func (g *gorillaClient) next(timeout time.Duration) ([]byte, error) {
	_ = g.c.SetReadDeadline(time.Now().Add(timeout))
	_, b, err := g.c.ReadMessage()
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return nil, &closedError{ws.StatusCode(ce.Code), ce.Text}
	}
	return b, err
}

func (g *gorillaClient) sendClose(code ws.StatusCode, reason string) error {
	return g.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(int(code), reason), time.Now().Add(readTimeout))
}

func (g *gorillaClient) close() { _ = g.c.Close() }

// send sends text on c, failing the test on error.
func send(t testing.TB, c client, text string) {
	t.Helper()
	if err := c.send(text); err != nil {
		t.Fatalf("cannot send %s: %s", text, err)
	}
}

// read returns the next message on c.
func read(t testing.TB, c client) msg {
	t.Helper()
	b, err := c.next(readTimeout)
	if err != nil {
		t.Fatalf("cannot read a message: %s", err)
	}
	m, err := parseMsg(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// readType returns the next message on c, which must be of type typ.
func readType(t testing.TB, c client, typ string) msg {
	t.Helper()
	m := read(t, c)
	if m.Type != typ {
		t.Fatalf("got %s, want a %s message", m.raw, typ)
	}
	return m
}

// expectClose reads until the server's close frame and checks its code.
func expectClose(t testing.TB, c client, code ws.StatusCode) {
	t.Helper()
	for {
		b, err := c.next(readTimeout)
		var ce *closedError
		switch {
		case errors.As(err, &ce):
			if ce.code != code {
				t.Fatalf("closed with %d %q, want %d", ce.code, ce.reason, code)
			}
			return
		case err != nil:
			t.Fatalf("read failed before a close frame (want %d): %s", code, err)
		}
		_ = b // messages sent before the close are allowed
	}
}

// subscribeAuth sends the original dashboard's auth message and reads its
// answers: subscribed, then initial_data.
func subscribeAuth(t testing.TB, c client, city string) (sub, initial msg) {
	t.Helper()
	send(t, c, `{"type":"auth","token":"t","cityId":"`+city+`"}`)
	sub = readType(t, c, "subscribed")
	if len(sub.Cities) != 1 || sub.Cities[0].City != city {
		t.Fatalf("subscribed %s, want city %s", sub.raw, city)
	}
	initial = readType(t, c, "initial_data")
	if initial.City != city || initial.Resumed {
		t.Fatalf("initial_data %s, want city %s resumed false", initial.raw, city)
	}
	return sub, initial
}

// producer is an ingest connection.
type producer struct {
	c  net.Conn
	br *bufio.Reader
}

// answer is an ingest ack or error line.
type answer struct {
	Ack   string `json:"ack"`
	Seq   uint64 `json:"seq"`
	Error string `json:"error"`
	Line  int    `json:"line"`
}

func dialProducer(t testing.TB, s *Server) *producer {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.IngestAddr().String(), readTimeout)
	if err != nil {
		t.Fatalf("cannot dial ingest: %s", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &producer{c: c, br: bufio.NewReader(c)}
}

// write sends lines, each followed by a newline.
func (p *producer) write(t testing.TB, lines ...string) {
	t.Helper()
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	_ = p.c.SetWriteDeadline(time.Now().Add(readTimeout))
	if _, err := p.c.Write(b.Bytes()); err != nil {
		t.Fatalf("cannot write ingest lines: %s", err)
	}
}

// next reads one answer line.
func (p *producer) next() (answer, error) {
	var a answer
	_ = p.c.SetReadDeadline(time.Now().Add(readTimeout))
	line, err := p.br.ReadBytes('\n')
	if err != nil {
		return a, fmt.Errorf("cannot read ingest answer: %w", err)
	}
	if err := json.Unmarshal(line, &a); err != nil {
		return a, fmt.Errorf("cannot parse ingest answer %q: %w", line, err)
	}
	return a, nil
}

func (p *producer) answer(t testing.TB) answer {
	t.Helper()
	a, err := p.next()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// publish sends one line, which must carry "id", and returns the seq of its
// ack.
func (p *producer) publish(t testing.TB, line string) uint64 {
	t.Helper()
	p.write(t, line)
	a := p.answer(t)
	if a.Error != "" || a.Ack == "" {
		t.Fatalf("line %s: got answer %+v, want an ack", line, a)
	}
	return a.Seq
}

// lineID numbers the lines of dataLine and alertLine; tests run in parallel.
var lineID atomic.Int64

// dataLine returns an ingest line of type typ ("data_update" or "snapshot")
// with a unique id.
func dataLine(city, typ, data string) string {
	return fmt.Sprintf(`{"id":"l%d","city":%q,"type":%q,"data":%s}`, lineID.Add(1), city, typ, data)
}

// alertLine returns an alerts ingest line with a unique id.
func alertLine(city string, sevs ...string) string {
	var b strings.Builder
	for i, s := range sevs {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"severity":%q,"message":"m%d"}`, s, i)
	}
	return fmt.Sprintf(`{"id":"l%d","city":%q,"type":"alerts","alerts":[%s]}`, lineID.Add(1), city, b.String())
}

// jsonEqual reports whether a and b hold the same JSON value.
func jsonEqual(t testing.TB, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("cannot parse %q: %s", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("cannot parse %q: %s", b, err)
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return bytes.Equal(ja, jb)
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
		t.Fatalf("got %s, want a %s message", m.raw, typ)
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
