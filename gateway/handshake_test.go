package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// TestHandshakeRejects checks the HTTP answers to requests that do not
// upgrade, and that the server closes after them.
func TestHandshakeRejects(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	const key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	big := strings.Repeat("X-Filler: "+strings.Repeat("f", 990)+"\r\n", 9) // 9 KB of headers
	var failed uint64
	f := func(name, req string, status int, header ...string) {
		t.Helper()
		r := dialRaw(t, s)
		r.write(t, []byte(req))
		resp := r.response(t)
		if resp.StatusCode != status {
			t.Fatalf("%s: status %d, want %d", name, resp.StatusCode, status)
		}
		// Every refusal says that the connection closes, and why.
		if !resp.Close || resp.ContentLength <= 1 {
			t.Fatalf("%s: Connection: close %v, Content-Length %d; want close and a body", name, resp.Close, resp.ContentLength)
		}
		for i := 0; i+1 < len(header); i += 2 {
			if got := resp.Header.Get(header[i]); got != header[i+1] {
				t.Fatalf("%s: header %s: %q, want %q", name, header[i], got, header[i+1])
			}
		}
		r.expectEOF(t)
		failed++
		waitCloses(t, s, CloseHandshakeFailed, failed)
	}
	f("wrong path", upgradeRequest("/nope"), http.StatusNotFound)
	f("root path", upgradeRequest("/"), http.StatusNotFound)
	f("path prefix", upgradeRequest("/ws/x"), http.StatusNotFound)
	f("POST", strings.Replace(upgradeRequest("/ws"), "GET", "POST", 1), http.StatusMethodNotAllowed, "Allow", "GET")
	f("plain GET", "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", http.StatusUpgradeRequired,
		"Upgrade", "websocket", "Sec-WebSocket-Version", "13")
	f("bad key", strings.Replace(upgradeRequest("/ws"), key, "Sec-WebSocket-Key: c2hvcnQ=\r\n", 1), http.StatusBadRequest)
	f("no key", strings.Replace(upgradeRequest("/ws"), key, "", 1), http.StatusBadRequest)
	f("version 8", strings.Replace(upgradeRequest("/ws"), "Version: 13", "Version: 8", 1), http.StatusUpgradeRequired)
	f("no host", strings.Replace(upgradeRequest("/ws"), "Host: 127.0.0.1\r\n", "", 1), http.StatusBadRequest)
	f("two hosts", upgradeRequest("/ws", "Host: other.example\r\n"), http.StatusBadRequest) // RFC 9112 §3.2
	f("two keys", upgradeRequest("/ws", "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"), http.StatusBadRequest)
	f("two hosts, stream", "GET /sse?cities=a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", http.StatusBadRequest)
	f("HTTP/1.0", strings.Replace(upgradeRequest("/ws"), "HTTP/1.1", "HTTP/1.0", 1), http.StatusHTTPVersionNotSupported)
	f("garbage", "HELLO\r\n\r\n", http.StatusBadRequest)
	f("bad city", upgradeRequest("/ws?cities=Bad!"), http.StatusBadRequest)
	f("bad since", upgradeRequest("/ws?cities=a&since=x"), http.StatusBadRequest)
	f("bad epoch", upgradeRequest("/ws?cities=a&epoch=-1"), http.StatusBadRequest)
	f("header too big, whole", upgradeRequest("/ws", big), http.StatusRequestHeaderFieldsTooLarge)
	f("header too big, unfinished", strings.TrimSuffix(upgradeRequest("/ws", big), "\r\n"), http.StatusRequestHeaderFieldsTooLarge)
	f("one header line too big", upgradeRequest("/ws", "X-Filler: "+strings.Repeat("f", 9000)+"\r\n"), http.StatusRequestHeaderFieldsTooLarge)
	if st := s.Stats(); st.Upgraded != 0 || st.Connections != 0 {
		t.Fatalf("Upgraded %d, Connections %d, want 0, 0", st.Upgraded, st.Connections)
	}
}

// TestHandshakeNearHeaderLimit checks that a request just under
// MaxHeaderBytes upgrades.
func TestHandshakeNearHeaderLimit(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{MaxHeaderBytes: 4096})
	req := upgradeRequest("/ws")
	pad := 4096 - len(req) - len("X-Filler: \r\n")
	r := dialRaw(t, s)
	r.write(t, []byte(upgradeRequest("/ws", "X-Filler: "+strings.Repeat("f", pad)+"\r\n")))
	if resp := r.response(t); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	r.write(t, text(`{"type":"ping"}`))
	r.msgType(t, "pong")
}

// TestHandshakeOneByteAtATime sends the request and a first frame one byte
// per write.
func TestHandshakeOneByteAtATime(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	r := dialRaw(t, s)
	for _, b := range []byte(upgradeRequest("/ws?cities=bytes")) {
		r.write(t, []byte{b})
	}
	resp := r.response(t)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="; got != want {
		t.Fatalf("Sec-WebSocket-Accept %q, want %q", got, want)
	}
	r.msgType(t, "subscribed")
	r.msgType(t, "initial_data")
	for _, b := range text(`{"type":"ping"}`) {
		r.write(t, []byte{b})
	}
	r.msgType(t, "pong")
}

// TestHandshakeFrameInSameWrite checks that frames sent in the same TCP
// write as the request are not lost to the upgrade's read-ahead.
func TestHandshakeFrameInSameWrite(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	f := func(target string, frames ...[]byte) {
		t.Helper()
		r := dialRaw(t, s)
		b := []byte(upgradeRequest(target))
		for _, f := range frames {
			b = append(b, f...)
		}
		r.write(t, b)
		if resp := r.response(t); resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("status %d, want 101", resp.StatusCode)
		}
		if strings.Contains(target, "cities=") {
			r.msgType(t, "subscribed")
			r.msgType(t, "initial_data")
		}
		for range frames {
			r.msgType(t, "pong")
		}
	}
	ping := text(`{"type":"ping"}`)
	f("/ws", ping)
	f("/ws", ping, ping, ping)
	f("/ws?cities=same-write", ping)
	// A partial frame behind the request, completed later.
	r := dialRaw(t, s)
	r.write(t, append([]byte(upgradeRequest("/ws")), ping[:3]...))
	if resp := r.response(t); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	r.write(t, ping[3:])
	r.msgType(t, "pong")
	// auth in the same write as the request.
	r = dialRaw(t, s)
	r.write(t, append([]byte(upgradeRequest("/ws")), text(`{"type":"auth","token":"t","cityId":"same-write"}`)...))
	r.response(t)
	r.msgType(t, "subscribed")
	r.msgType(t, "initial_data")
}

// TestHandshakeDeclinesDeflate checks that a permessage-deflate offer is
// declined by leaving it out of the response, and the connection works
// uncompressed.
func TestHandshakeDeclinesDeflate(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	r := dialRaw(t, s)
	r.write(t, []byte(upgradeRequest("/ws?cities=deflate",
		"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n")))
	resp := r.response(t)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	if ext, ok := resp.Header["Sec-Websocket-Extensions"]; ok {
		t.Fatalf("Sec-WebSocket-Extensions: %q in the response, want none", ext)
	}
	for _, want := range []string{"subscribed", "initial_data"} {
		f := r.frame(t)
		if f.Header.Rsv != 0 {
			t.Fatalf("frame with RSV bits %b: compressed?", f.Header.Rsv)
		}
		if m, err := parseMsg(f.Payload); err != nil || m.Type != want {
			t.Fatalf("got %q (%v), want %s", f.Payload, err, want)
		}
	}
	r.write(t, text(`{"type":"ping"}`))
	r.msgType(t, "pong")
}

// TestHandshakeTimeout checks that a connection that does not complete its
// upgrade within HandshakeTimeout is closed: silent, partial, or trickling
// its request a byte at a time (slowloris).
func TestHandshakeTimeout(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{HandshakeTimeout: 200 * time.Millisecond})
	req := []byte(upgradeRequest("/ws"))

	// Each client starts at once; they time out together.
	silent := dialRaw(t, s)
	partial := dialRaw(t, s)
	partial.write(t, req[:len(req)/2])
	slow := dialRaw(t, s)
	stop := make(chan struct{})
	trickled := make(chan int, 1)
	go func() {
		// One byte every 20 ms: the request would take seconds to finish.
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		n := 0
		defer func() { trickled <- n }()
		for ; n < len(req)-1; n++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := slow.c.Write(req[n : n+1]); err != nil {
				return
			}
		}
	}()
	defer close(stop)

	for _, r := range []*rawConn{silent, partial, slow} {
		_ = r.c.SetReadDeadline(time.Now().Add(readTimeout))
		n, err := r.br.Read(make([]byte, 1))
		var ne net.Error
		if n != 0 || err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("read %d bytes, err %v; want the server to close without an answer", n, err)
		}
	}
	if n := <-trickled; n >= len(req)-1 {
		t.Fatalf("the slow client sent its whole request (%d bytes) before being closed", n)
	}
	waitCloses(t, s, CloseHandshakeTimeout, 3)

	// A prompt client on the same server is not affected.
	r := dialUpgraded(t, s)
	r.write(t, text(`{"type":"ping"}`))
	r.msgType(t, "pong")
	if st := s.Stats(); st.Upgraded != 1 {
		t.Fatalf("Upgraded = %d, want 1", st.Upgraded)
	}
}

// TestHandshakeClients upgrades clients of both libraries with and without
// URL parameters, and closes them cleanly.
func TestHandshakeClients(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	f := func(query string, initial int) {
		t.Helper()
		for _, d := range dialers {
			c := d.dial(t, wsURL(s, query))
			if query != "" {
				readType(t, c, "subscribed")
			}
			for range initial {
				readType(t, c, "initial_data")
			}
			expectPong(t, c)
			if err := c.SendClose(ws.StatusNormalClosure, ""); err != nil {
				t.Fatal(err)
			}
			expectClose(t, c, ws.StatusNormalClosure)
		}
	}
	f("", 0)
	f("cities=hs-a,hs-b", 2)
	f("cities=hs-a&since=0&epoch="+fmt.Sprint(s.Epoch()), 0) // resumed at the head
	f("cities=hs-a&since=0&epoch=1", 1)                      // another epoch
	f("token=abc&cities=hs-b", 1)
	waitCloses(t, s, ClosePeer, 10)
}

// TestHandshakeOneWrite checks that an upgrade that subscribes on the URL
// is answered with one write: the 101, subscribed and initial_data leave
// in one TCP segment (the server's socket counts them), and so do the
// answers to several messages that arrive in one read.
func TestHandshakeOneWrite(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{Loops: 1})
	p := dialProducer(t, s)
	p.Publish(t, dataLine("ow", "data_update", `{"a":1}`))
	r := dialRaw(t, s)
	r.upgrade(t, "/ws?cities=ow")
	if m := r.msg(t); m.Type != "subscribed" {
		t.Fatalf("%s, want subscribed", m.Raw)
	}
	if m := r.msg(t); m.Type != "initial_data" {
		t.Fatalf("%s, want initial_data", m.Raw)
	}
	if n := dataSegsOut(t, s); n != 1 {
		t.Fatalf("the server sent the answer to the upgrade in %d segments, want 1", n)
	}
	r.write(t, bytes.Repeat(text(`{"type":"ping"}`), 3))
	for range 3 {
		if m := r.msg(t); m.Type != "pong" {
			t.Fatalf("%s, want pong", m.Raw)
		}
	}
	if n := dataSegsOut(t, s); n != 2 {
		t.Fatalf("the server sent %d segments in all, want 2: one per read", n)
	}
}

// dataSegsOut returns the data segments the server has sent on its only
// connection (TCP_INFO), asking its loop.
func dataSegsOut(t *testing.T, s *Server) uint32 {
	t.Helper()
	l := (*s.loops.Load())[0]
	got := make(chan uint32, 1)
	err := l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		var n uint32
		for _, conns := range l.wheel {
			for _, cn := range conns {
				info, err := unix.GetsockoptTCPInfo(cn.c.Fd(), unix.IPPROTO_TCP, unix.TCP_INFO)
				if err != nil {
					t.Error(err)
				} else {
					n += info.Data_segs_out
				}
			}
		}
		got <- n
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	return <-got
}
