package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metrocast/metrocast/codec"
	"github.com/metrocast/metrocast/gateway/auth"
)

// TestSSEStream follows two cities over SSE and over WebSocket at once:
// every city message arrives as one event named by its type, with the
// data a WebSocket client gets byte for byte, and an id that alone says
// where the stream stands for every city.
func TestSSEStream(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	p := dialProducer(t, s)
	p.Publish(t, dataLine("sa", "data_update", `{"x":1}`))
	sc := dialSSE(t, s, "/sse?cities=sa,sb")
	wc := dialers[0].dial(t, wsURL(s, "cities=sa,sb"))
	epoch := strconv.FormatUint(s.Epoch(), 10)
	sub := sc.NextType(t, "subscribed")
	if sc.Retry < 1000 || sc.Retry >= 2000 {
		t.Fatalf("retry %d before the first event, want [1000, 2000) ms", sc.Retry)
	}
	if sub.ID != "" || len(sub.Msg.Cities) != 2 || sub.Msg.Epoch != s.Epoch() {
		t.Fatalf("subscribed %s (id %q), want two cities, epoch %d, no id", sub.Data, sub.ID, s.Epoch())
	}
	readType(t, wc, "subscribed")
	// Each initial_data's id names the cities whose state the client has.
	for i, want := range []string{epoch + "/sa:1", epoch + "/sb:0,sa:1"} {
		ev := sc.NextType(t, "initial_data")
		m := readType(t, wc, "initial_data")
		if ev.ID != want || ev.Data != string(m.Raw) {
			t.Fatalf("initial_data %d: id %q data %s, want id %q and the WebSocket's %s", i, ev.ID, ev.Data, want, m.Raw)
		}
	}
	lines := []string{
		dataLine("sa", "data_update", `{"x":2}`),
		alertLine("sb", "warning"),
		dataLine("sb", "snapshot", `{"y":3}`),
		// Line breaks are JSON white space: an event keeps its one line.
		strings.Replace(dataLine("sa", "data_update", `{"x": 4, "z":5}`), " ", "\r", 1),
	}
	ids := []string{epoch + "/sa:2,sb:0", epoch + "/sb:1,sa:2", epoch + "/sb:2,sa:2", epoch + "/sa:3,sb:2"}
	for i, line := range lines {
		p.Publish(t, line)
		ev := sc.Next(t)
		m := read(t, wc)
		want := strings.NewReplacer("\r", " ", "\n", " ").Replace(string(m.Raw))
		if ev.Type != m.Type || ev.Data != want || ev.ID != ids[i] {
			t.Fatalf("event %d: %s id %q %s; want %s id %q %s", i, ev.Type, ev.ID, ev.Data, m.Type, ids[i], want)
		}
	}
	st := s.Stats()
	if st.Transports.SSE.Connections != 1 || st.Transports.SSE.Opened != 1 || st.Transports.SSE.Subscriptions != 2 ||
		st.Transports.SSE.Deliveries != 4 || st.Transports.WebSocket.Deliveries != 4 || st.Transports.WebSocket.Subscriptions != 2 {
		t.Fatalf("transports %+v", st.Transports)
	}
	m := scrape(t, s)
	for name, want := range map[string]float64{
		`metrocast_transport_deliveries_total{transport="sse"}`:       4,
		`metrocast_transport_deliveries_total{transport="websocket"}`: 4,
		`metrocast_transport_connections{transport="sse"}`:            1,
		`metrocast_transport_subscriptions{transport="sse"}`:          2,
		`metrocast_transport_opened_total{transport="sse"}`:           1,
		`metrocast_transport_opened_total{transport="websocket"}`:     1,
	} {
		if got := series(t, m, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	code, body := adminGet(t, s, "/api/stats")
	var api statsResponse
	if err := jsonUnmarshal(string(body), &api); code != http.StatusOK || err != nil ||
		api.Transports.SSE.Connections != 1 || api.Transports.SSE.Deliveries != 4 || api.Transports.WebSocket.Deliveries != 4 {
		t.Fatalf("/api/stats: %d %s", code, body)
	}
	sc.Close()
	waitFor(t, readTimeout, func() bool { return s.Stats().Transports.SSE.Connections == 0 })
	if st := s.Stats(); st.Transports.SSE.Subscriptions != 0 || st.Subscriptions != 2 {
		t.Fatalf("after the stream left: %+v, subscriptions %d", st.Transports, st.Subscriptions)
	}
}

// TestSSEResume drops streams and resumes them with Last-Event-ID alone (as
// a browser's EventSource does): exactly the frames missed, for every city
// of the stream; an id from another epoch, or one the ring no longer
// covers, starts from initial_data. since= on the URL works as for
// WebSocket, and Last-Event-ID wins over it.
func TestSSEResume(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{RingSize: 8})
	p := dialProducer(t, s)
	sc := dialSSE(t, s, "/sse?cities=ra,rb&since=ra:0,rb:0")
	sc.NextType(t, "subscribed")
	p.Publish(t, dataLine("ra", "data_update", `{"a":1}`))
	p.Publish(t, dataLine("rb", "data_update", `{"b":1}`))
	sc.NextType(t, "data_update")
	last := sc.NextType(t, "data_update").ID
	sc.Close()
	for i := range 3 {
		p.Publish(t, dataLine("ra", "data_update", fmt.Sprintf(`{"a":%d}`, i+2)))
		p.Publish(t, dataLine("rb", "data_update", fmt.Sprintf(`{"b":%d}`, i+2)))
	}
	// The URL's since is stale; the header is where the client stands.
	sc = dialSSE(t, s, "/sse?cities=ra,rb&since=ra:0,rb:0", "Last-Event-ID: "+last+"\r\n")
	sub := sc.NextType(t, "subscribed")
	if !sub.Msg.Cities[0].Resumed || !sub.Msg.Cities[1].Resumed || sub.Msg.Cities[0].Seq != 1 || sub.Msg.Cities[1].Seq != 1 {
		t.Fatalf("subscribed %s, want both resumed at 1", sub.Data)
	}
	// Each city's missed frames, in order (the cities one after the other).
	next := map[string]uint64{"ra": 2, "rb": 2}
	for range 6 {
		ev := sc.NextType(t, "data_update")
		if ev.Msg.Seq != next[ev.Msg.City] {
			t.Fatalf("%s, want %s seq %d", ev.Data, ev.Msg.City, next[ev.Msg.City])
		}
		next[ev.Msg.City]++
	}
	last = sc.LastID
	if _, since, err := codec.ParseEventID(last); err != nil || since["ra"] != 4 || since["rb"] != 4 {
		t.Fatalf("last id %q (%v), want ra:4 and rb:4", last, err)
	}
	sc.Close()
	// Another run's id: initial_data for both.
	other := strings.Replace(last, strconv.FormatUint(s.Epoch(), 10), "12345", 1)
	sc = dialSSE(t, s, "/sse?cities=ra,rb", "Last-Event-ID: "+other+"\r\n")
	if sub := sc.NextType(t, "subscribed"); sub.Msg.Cities[0].Resumed || sub.Msg.Cities[1].Resumed {
		t.Fatalf("subscribed %s, want no resume from another epoch", sub.Data)
	}
	sc.NextType(t, "initial_data")
	sc.NextType(t, "initial_data")
	sc.Close()
	// Lapped: the ring of 8 no longer holds ra's frames after 4.
	for i := range 10 {
		p.Publish(t, dataLine("ra", "data_update", fmt.Sprintf(`{"a":%d}`, 10+i)))
	}
	sc = dialSSE(t, s, "/sse?cities=ra,rb", "Last-Event-ID: "+last+"\r\n")
	sub = sc.NextType(t, "subscribed")
	if sub.Msg.Cities[0].Resumed || !sub.Msg.Cities[1].Resumed {
		t.Fatalf("subscribed %s, want ra from initial_data and rb resumed", sub.Data)
	}
	if ev := sc.NextType(t, "initial_data"); ev.Msg.City != "ra" || ev.Msg.Seq != 14 {
		t.Fatalf("%s, want ra's initial_data at 14", ev.Data)
	}
	// A city of the URL the id does not name starts from initial_data.
	sc.Close()
	sc = dialSSE(t, s, "/sse?cities=ra,rc", "Last-Event-ID: "+sc.LastID+"\r\n")
	if sub := sc.NextType(t, "subscribed"); !sub.Msg.Cities[0].Resumed || sub.Msg.Cities[1].Resumed {
		t.Fatalf("subscribed %s, want ra resumed, rc not", sub.Data)
	}
}

// TestSSEFilter checks types= and minSeverity= on the URL.
func TestSSEFilter(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	p := dialProducer(t, s)
	sc := dialSSE(t, s, "/sse?cities=fa&types=alerts&minSeverity=warning")
	sc.NextType(t, "subscribed")
	sc.NextType(t, "initial_data")
	p.Publish(t, dataLine("fa", "data_update", `{"a":1}`))
	p.Publish(t, alertLine("fa", "info"))
	want := p.Publish(t, alertLine("fa", "info", "critical"))
	if ev := sc.NextType(t, "alerts"); ev.Msg.Seq != want {
		t.Fatalf("%s, want the alerts at seq %d alone", ev.Data, want)
	}
	for _, q := range []string{"types=gauges", "minSeverity=loud"} {
		if resp, body := sseStatus(t, s.Addr().String(), "/sse?cities=fa&"+q); resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("%s: status %d %q, want 400", q, resp.StatusCode, body)
		}
	}
}

// TestSSEAuth checks that a stream takes the same tokens as a WebSocket (in
// the Authorization header or on the URL) and that every refusal is an
// HTTP error before the stream starts, readable by a page of an allowed
// origin.
func TestSSEAuth(t *testing.T) {
	t.Parallel()
	cfg, _ := authConfig(t)
	cfg.AllowedOrigins = []string{"https://dash.example.com"}
	s := startServer(t, cfg)
	addr := s.Addr().String()
	tok := hs256(t, claims("alice", time.Hour, "na", "nb"))
	dialSSE(t, s, "/sse?cities=na", "Authorization: Bearer "+tok+"\r\n").NextType(t, "subscribed")
	sc := dialSSE(t, s, "/sse?cities=na,nb&token="+tok, "Origin: https://dash.example.com\r\n")
	if got := sc.Resp.Header.Get("Access-Control-Allow-Origin"); got != "https://dash.example.com" {
		t.Fatalf("Access-Control-Allow-Origin %q", got)
	}
	sc.NextType(t, "subscribed")
	f := func(target string, status int, wantBody string, header ...string) {
		t.Helper()
		resp, body := sseStatus(t, addr, target, header...)
		if resp.StatusCode != status || !strings.Contains(body, wantBody) {
			t.Fatalf("GET %s: %d %q, want %d with %q", target, resp.StatusCode, body, status, wantBody)
		}
		if status == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
			t.Fatalf("GET %s: 401 without WWW-Authenticate", target)
		}
	}
	f("/sse?cities=na", http.StatusUnauthorized, "auth_required")
	f("/sse?cities=na&token=nope", http.StatusUnauthorized, "invalid_token")
	f("/sse?cities=na&token="+hs256(t, claims("alice", -time.Minute, "na")), http.StatusUnauthorized, "token_expired")
	f("/sse?cities=na,nc&token="+tok, http.StatusForbidden, "nc")
	f("/sse?token="+tok, http.StatusBadRequest, "cities")
	f("/sse?cities=na&token="+tok, http.StatusForbidden, "origin", "Origin: https://evil.example.com\r\n")
	f("/history?city=nc&token="+tok, http.StatusForbidden, "nc")
	f("/history?city=na", http.StatusUnauthorized, "auth_required")
	// A page of an allowed origin can read a refusal, and preflight.
	resp, _ := sseStatus(t, addr, "/sse?cities=nc&token="+tok, "Origin: https://dash.example.com\r\n")
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Access-Control-Allow-Origin") != "https://dash.example.com" {
		t.Fatalf("refusal to an allowed origin: %d, ACAO %q", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}
	c := dialRaw(t, s)
	c.write(t, []byte("OPTIONS /sse?cities=na HTTP/1.1\r\nHost: x\r\nOrigin: https://dash.example.com\r\n"+
		"Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: authorization, last-event-id\r\n\r\n"))
	pre := c.response(t)
	if pre.StatusCode != http.StatusNoContent || pre.Header.Get("Access-Control-Allow-Origin") != "https://dash.example.com" ||
		!strings.Contains(pre.Header.Get("Access-Control-Allow-Headers"), "Last-Event-ID") {
		t.Fatalf("preflight: %d %v", pre.StatusCode, pre.Header)
	}
	c.expectEOF(t)
	st := s.Stats()
	if st.AuthFailures < 4 || st.Closes["unauthorized"] < 4 || st.Closes["forbidden"] < 2 || st.Closes["origin_forbidden"] < 1 {
		t.Fatalf("auth failures %d, closes %v", st.AuthFailures, st.Closes)
	}
}

// TestSSETokenExpiry checks the end of a stream whose token expires: it
// cannot refresh it, so it is told (token_expiring), then ended at closeAt
// (auth_error, then the connection closes); a revoked token ends at once.
func TestSSETokenExpiry(t *testing.T) {
	t.Parallel()
	cfg, _ := authConfig(t)
	// Told at its first housekeeping visit, as in TestTokenExpiry: a
	// warning window of a second before the expiry was missed whole by a
	// loop held back that long (-race on a loaded machine).
	cfg.TokenExpiryWarning = time.Hour
	cfg.TokenGrace = 200 * time.Millisecond
	cfg.AuthLeeway = 0
	s := startServer(t, cfg)
	sc := dialSSE(t, s, "/sse?cities=ta&token="+hs256(t, claims("alice", 3*time.Second, "ta")))
	sc.NextType(t, "subscribed")
	sc.NextType(t, "initial_data")
	if ev := sc.NextType(t, "token_expiring"); ev.ID == "" {
		t.Fatalf("%s: the event id was lost", ev.Data)
	}
	// It says what a stream can do: not refresh, but reconnect.
	if ev := sc.NextType(t, "auth_error"); ev.Msg.Code != auth.CodeExpired || strings.Contains(ev.Msg.Message, "refresh") || !strings.Contains(ev.Msg.Message, "reconnect") {
		t.Fatalf("%s, want %s telling to reconnect", ev.Data, auth.CodeExpired)
	}
	sc.ExpectEnd(t)
	waitCloses(t, s, CloseTokenExpired, 1)
}

// TestSSEHeartbeat checks the comments that keep a quiet stream's proxies
// from closing it, and that a stream whose client never speaks is not
// closed as idle.
func TestSSEHeartbeat(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{PingInterval: 50 * time.Millisecond, IdleTimeout: 100 * time.Millisecond})
	sc := dialSSE(t, s, "/sse?cities=ha")
	sc.NextType(t, "subscribed")
	sc.NextType(t, "initial_data")
	p := dialProducer(t, s)
	waitFor(t, readTimeout, func() bool {
		// Each read waits for the next event: heartbeats come meanwhile.
		p.Publish(t, dataLine("ha", "data_update", `{"a":1}`))
		sc.NextType(t, "data_update")
		return sc.Comments >= 3
	})
	if n := closes(s, CloseIdle); n != 0 {
		t.Fatalf("%d idle closes", n)
	}
}

// TestSSEDrain checks that a draining node sends its reconnect hint as an
// event with the retry field (so that a browser waits that long), then
// ends the stream.
func TestSSEDrain(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	sc := dialSSE(t, s, "/sse?cities=da")
	sc.NextType(t, "subscribed")
	sc.NextType(t, "initial_data")
	go func() { _ = s.Drain(context.Background(), 0) }()
	ev := sc.NextType(t, "reconnect")
	var m struct {
		AfterMs int `json:"after_ms"`
	}
	if err := jsonUnmarshal(ev.Data, &m); err != nil || ev.Retry != m.AfterMs || ev.Retry < 0 || ev.Retry >= 1000 {
		t.Fatalf("reconnect %s with retry %d: want retry = after_ms in [0, 1000)", ev.Data, ev.Retry)
	}
	sc.ExpectEnd(t)
}

// TestSSERequestSplit sends a stream request one byte per segment: the
// stream starts once the head is whole, and bytes after it are dropped.
func TestSSERequestSplit(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	c := dialRaw(t, s)
	_ = c.c.(interface{ SetNoDelay(bool) error }).SetNoDelay(true)
	req := []byte("GET /sse?cities=sp HTTP/1.1\r\nHost: x\r\nLast-Event-ID: " + strconv.FormatUint(s.Epoch(), 10) + "/sp:0\r\n\r\nGET / HTTP/1.1\r\n\r\n")
	for i := range req {
		c.write(t, req[i:i+1])
	}
	sc := &sseClient{C: c.c, Retry: -1}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("response %v, %v", resp, err)
	}
	sc.Resp, sc.Body = resp, c.br
	if sub := sc.NextType(t, "subscribed"); !sub.Msg.Cities[0].Resumed {
		t.Fatalf("subscribed %s, want a resume from the header", sub.Data)
	}
	p := dialProducer(t, s)
	p.Publish(t, dataLine("sp", "data_update", `{"a":1}`))
	sc.NextType(t, "data_update")
}

// TestSSEHeaderInjection checks that a request whose Origin holds a bare
// line break, which CORS would write back into the response's head (any
// origin is allowed here), is refused with no header of the client's
// making in the answer.
func TestSSEHeaderInjection(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	for _, req := range []string{
		"GET /sse?cities=hi HTTP/1.1\r\nHost: x\r\nOrigin: http://a\nSet-Cookie: injected=1\r\n\r\n",
		"OPTIONS /sse HTTP/1.1\r\nHost: x\r\nOrigin: http://a\rSet-Cookie: injected=1\r\n\r\n",
		"GET /history?city=hi HTTP/1.1\r\nHost: x\r\nOrigin: http://a\nSet-Cookie: injected=1\r\n\r\n",
	} {
		c := dialRaw(t, s)
		c.write(t, []byte(req))
		_ = c.c.SetReadDeadline(time.Now().Add(readTimeout))
		b, err := io.ReadAll(c.br)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("%q: the connection stayed open", req)
		}
		head, _, _ := bytes.Cut(b, []byte("\r\n\r\n"))
		if !bytes.HasPrefix(head, []byte("HTTP/1.1 400 ")) || bytes.Contains(head, []byte("injected")) {
			t.Fatalf("%q: answered %q, want a 400 without the client's header", req, head)
		}
	}
}

// TestSSELimits checks that streams count against max-conns-per-ip and
// max-conns like WebSocket connections.
func TestSSELimits(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{MaxConnsPerIP: 2})
	a := dialFrom(t, s, "127.0.0.5")
	a.write(t, []byte("GET /sse?cities=la HTTP/1.1\r\nHost: x\r\n\r\n"))
	dialFrom(t, s, "127.0.0.5").upgrade(t, "/ws")
	r := dialFrom(t, s, "127.0.0.5")
	r.write(t, []byte("GET /sse?cities=la HTTP/1.1\r\nHost: x\r\n\r\n"))
	if resp := r.response(t); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third connection: %d, want 429", resp.StatusCode)
	}
}

// TestHistory checks GET /history: the frames held after since as NDJSON,
// each line what a WebSocket client got; pages of MaxBacklogBytes; 410
// with the oldest seq held once the ring no longer covers since.
func TestHistory(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{RingSize: 16, MaxBacklogBytes: 1024})
	addr := s.Addr().String()
	p := dialProducer(t, s)
	wc := dialers[1].dial(t, wsURL(s, "cities=hx"))
	readType(t, wc, "subscribed")
	readType(t, wc, "initial_data")
	var sent []string
	for i := range 12 {
		line := dataLine("hx", "data_update", fmt.Sprintf(`{"n":%d,"pad":"%s"}`, i, strings.Repeat("x", 100)))
		if i%4 == 3 {
			line = alertLine("hx", "critical")
		}
		p.Publish(t, line)
		sent = append(sent, string(read(t, wc).Raw))
	}
	requests := 0
	get := func(q string) (*http.Response, []string) {
		t.Helper()
		requests++
		resp, body := sseStatus(t, addr, "/history?"+q)
		if resp.StatusCode == http.StatusOK && resp.Header.Get("Content-Type") != "application/x-ndjson" {
			t.Fatalf("Content-Type %q", resp.Header.Get("Content-Type"))
		}
		lines := strings.SplitAfter(body, "\n")
		return resp, lines[:len(lines)-1]
	}
	// Pages: at most MaxBacklogBytes of lines (at least one).
	var got []string
	since := 0
	for since < 12 {
		resp, lines := get(fmt.Sprintf("city=hx&since=%d&epoch=%d", since, s.Epoch()))
		if resp.StatusCode != http.StatusOK || len(lines) == 0 || resp.Header.Get("Metrocast-Head") != "12" {
			t.Fatalf("since %d: %d, %d lines, head %q", since, resp.StatusCode, len(lines), resp.Header.Get("Metrocast-Head"))
		}
		if n := len(strings.Join(lines, "")); len(lines) > 1 && n-len(lines[len(lines)-1]) >= 1024 {
			t.Fatalf("since %d: a page of %d bytes", since, n)
		}
		got = append(got, lines...)
		since += len(lines)
	}
	for i := range sent {
		if got[i] != sent[i]+"\n" {
			t.Fatalf("line %d: %q, want %q", i, got[i], sent[i]+"\n")
		}
	}
	if _, lines := get("city=hx&since=12"); len(lines) != 0 {
		t.Fatalf("since the head: %q", lines)
	}
	if _, lines := get("city=never"); len(lines) != 0 {
		t.Fatalf("a city never seen: %q", lines)
	}
	// Gone: lapped, from another epoch, ahead of the node, never seen.
	for i := range 8 {
		p.Publish(t, dataLine("hx", "data_update", fmt.Sprintf(`{"n":%d}`, 100+i)))
	}
	for _, q := range []string{"city=hx&since=2", "city=hx&since=19&epoch=7", "city=hx&since=99", "city=never&since=3"} {
		requests++
		resp, body := sseStatus(t, addr, "/history?"+q)
		var gone struct {
			Code   string `json:"code"`
			Oldest uint64 `json:"oldest"`
			Head   uint64 `json:"head"`
		}
		if err := jsonUnmarshal(body, &gone); err != nil || resp.StatusCode != http.StatusGone || gone.Code != "gone" {
			t.Fatalf("%s: %d %q, want 410", q, resp.StatusCode, body)
		}
		if want := uint64(5); q[5] == 'h' && (gone.Oldest != want || gone.Head != 20) {
			t.Fatalf("%s: oldest %d head %d, want %d and 20", q, gone.Oldest, gone.Head, want)
		}
	}
	for _, q := range []string{"", "city=", "city=A", "city=hx&since=x", "city=hx&epoch=-1"} {
		if resp, body := sseStatus(t, addr, "/history?"+q); resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("%q: %d %q, want 400", q, resp.StatusCode, body)
		}
	}
	waitFor(t, readTimeout, func() bool { return s.Stats().HistoryRequests == uint64(requests) })
	if st := s.Stats(); st.Closes["responded"] < uint64(requests) || st.Transports.SSE.Connections != 0 {
		t.Fatalf("closes %v, transports %+v", st.Closes, st.Transports)
	}
}

// TestHistoryLarge checks that a response bigger than the socket takes at
// once is written whole before the connection closes, to a client that
// reads slowly.
func TestHistoryLarge(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{SocketSendBuffer: 4096, MaxBacklogBytes: 1 << 20, RingBytes: 2 << 20})
	p := dialProducer(t, s)
	pad := strings.Repeat("y", 4000)
	var lines []string
	for i := range 200 {
		lines = append(lines, dataLine("hl", "data_update", fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad)))
	}
	p.Write(t, lines...)
	for range lines {
		p.Answer(t)
	}
	c := dialSmallWindowRaw(t, s)
	c.write(t, []byte("GET /history?city=hl HTTP/1.1\r\nHost: x\r\n\r\n"))
	// Let the server fill the socket before reading.
	waitFor(t, readTimeout, func() bool { return s.Stats().HistoryRequests == 1 })
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil || int64(body.Len()) != resp.ContentLength || bytes.Count(body.Bytes(), []byte("\n")) != 200 {
		t.Fatalf("read %d of %d bytes (%v), %d lines", body.Len(), resp.ContentLength, err, bytes.Count(body.Bytes(), []byte("\n")))
	}
	c.expectEOF(t)
}

// TestEventIDRoundTrip checks the id format on its own: what AppendCityEvent
// and AppendEventIDEntry write, ParseEventID reads.
func TestEventIDRoundTrip(t *testing.T) {
	ev := codec.AppendCityEvent(nil, 42, "a", 7, []byte(`{"type":"data_update"}`))
	i := bytes.IndexByte(ev, '\n')
	id := string(ev[len("id: "):i]) + ",b:9"
	epoch, since, err := codec.ParseEventID(id)
	if err != nil || epoch != 42 || since["a"] != 7 || since["b"] != 9 || len(since) != 2 {
		t.Fatalf("ParseEventID(%q) = %d, %v, %v", id, epoch, since, err)
	}
}

// TestSSECurl follows two cities with the curl binary, as the README's
// first screen does, resumes with Last-Event-ID, and fetches the history.
func TestSSECurl(t *testing.T) {
	t.Parallel()
	curl := needTool(t, "curl")
	cfg, _ := authConfig(t)
	s := startServer(t, cfg)
	tok := hs256(t, claims("ops", time.Hour, "nairobi", "lagos"))
	base := "http://" + s.Addr().String()
	p := dialProducer(t, s)
	first := p.Publish(t, dataLine("nairobi", "data_update", `{"pm25":12}`))

	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, curl, "-sN", "-H", "Authorization: Bearer "+tok, base+"/sse?cities=nairobi,lagos")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	sc := &sseClient{Body: bufio.NewReader(out), Retry: -1}
	next := func(typ string) event {
		t.Helper()
		ev, err := sc.NextEvent(readTimeout)
		if err != nil || ev.Type != typ {
			t.Fatalf("curl: %+v, %v; want a %s event", ev, err, typ)
		}
		return ev
	}
	next("subscribed")
	if ev := next("initial_data"); !strings.Contains(ev.Data, `"pm25":12`) || ev.Msg.Seq != first {
		t.Fatalf("curl: %s", ev.Data)
	}
	next("initial_data")
	seq := p.Publish(t, alertLine("lagos", "critical"))
	if ev := next("alerts"); ev.Msg.Seq != seq || ev.Msg.City != "lagos" {
		t.Fatalf("curl: %s", ev.Data)
	}
	last := sc.LastID
	cancel()
	_ = cmd.Wait()

	missed := p.Publish(t, dataLine("nairobi", "data_update", `{"pm25":14}`))
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		defer cancel()
		b, err := exec.CommandContext(ctx, curl, append([]string{"-s", "-H", "Authorization: Bearer " + tok}, args...)...).Output()
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 28 {
			err = nil // --max-time ended a stream
		}
		if err != nil {
			t.Fatalf("curl %v: %v", args, err)
		}
		return string(b)
	}
	// Resumed by Last-Event-ID alone: the missed frame, no initial_data.
	got := run("-N", "--max-time", "1", "-H", "Last-Event-ID: "+last, base+"/sse?cities=nairobi,lagos")
	if strings.Contains(got, "initial_data") || !strings.Contains(got, fmt.Sprintf(`"seq":%d,`, missed)) {
		t.Fatalf("curl resume from %s:\n%s", last, got)
	}
	hist := run(fmt.Sprintf("%s/history?city=nairobi&since=%d", base, first-1))
	if lines := strings.Split(strings.TrimSuffix(hist, "\n"), "\n"); len(lines) != 2 ||
		!strings.Contains(lines[0], `"pm25":12`) || !strings.Contains(lines[1], `"pm25":14`) {
		t.Fatalf("curl history:\n%s", hist)
	}
	if got := run("-o", "/dev/null", "-w", "%{http_code}", base+"/history?city=nairobi&since=0&epoch=1"); got != "410" {
		t.Fatalf("curl history of another epoch: %s, want 410", got)
	}
}

// TestSSESlowConsumer checks that a stream that stops reading is treated as
// a slow WebSocket client: paused over the backlog limit, conflated to a
// fresh initial_data once its ring laps it, and in order again after.
func TestSSESlowConsumer(t *testing.T) {
	t.Parallel()
	const ring = 32
	s := startServer(t, Config{RingSize: ring, MaxBacklogBytes: 8 << 10, SocketSendBuffer: 4096, SlowTimeout: time.Minute})
	c := dialSmallWindowRaw(t, s)
	c.write(t, []byte("GET /sse?cities=sl HTTP/1.1\r\nHost: x\r\n\r\n"))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%v, %v", resp, err)
	}
	sc := &sseClient{C: c.c, Resp: resp, Body: c.br, Retry: -1}
	sc.NextType(t, "subscribed")
	sc.NextType(t, "initial_data")
	p := dialProducer(t, s)
	pad := strings.Repeat("z", 1000)
	var head uint64
	for s.Stats().Stalls == 0 || head < 4*ring {
		if head > 2000 {
			t.Fatalf("no stall after %d frames: %+v", head, s.Stats())
		}
		head = p.Publish(t, dataLine("sl", "data_update", fmt.Sprintf(`{"pad":%q}`, pad)))
	}
	// Reading again: what was queued, then initial_data, then the rest.
	last, conflated := uint64(0), false
	for last < head {
		ev := sc.Next(t)
		switch {
		case ev.Type == "initial_data" && !ev.Msg.Resumed && ev.Msg.Seq > last:
			conflated = true
		case ev.Type == "data_update" && (last == 0 || ev.Msg.Seq == last+1):
		default:
			t.Fatalf("%s after seq %d", ev.Data, last)
		}
		if !strings.HasSuffix(ev.ID, fmt.Sprintf("/sl:%d", ev.Msg.Seq)) {
			t.Fatalf("event %s with id %q", ev.Data, ev.ID)
		}
		last = ev.Msg.Seq
	}
	if st := s.Stats(); !conflated || st.Transports.SSE.Conflations == 0 || st.Transports.WebSocket.Conflations != 0 {
		t.Fatalf("conflated %v, transports %+v", conflated, st.Transports)
	}
}

// TestRingMemoryEvents checks that the events a city's frames are sent as
// count in the node's ring memory while the frames are in the ring, and
// leave it with them: one built for a frame already gone (a loop still
// sending it) is neither kept nor counted.
func TestRingMemoryEvents(t *testing.T) {
	cfg := Config{RingSize: 16}.WithDefaults()
	var mem atomic.Int64
	c := newCity("m", &cfg, 1, 0, false)
	c.ring.mem = &mem
	r := c.ring
	check := func() {
		t.Helper()
		want := slotBytes * int64(slotCount(r.buf.Load()))
		for pos := r.tail.Load(); pos <= r.head.Load(); pos++ {
			f := r.get(pos)
			want += int64(cap(f.b)) + frameOverhead
			if p := f.sse.Load(); p != nil {
				want += int64(cap(*p))
			}
		}
		if got := mem.Load(); got != want {
			t.Fatalf("ring memory %d, want %d", got, want)
		}
	}
	in := codec.Ingest{City: "m", Kind: codec.KindDataUpdate, Data: []byte(`{"a":1}`)}
	var old *frame
	for i := range 40 {
		f, err := c.append(&in, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			ev := f.event(7, "m", &mem)
			if again := f.event(7, "m", &mem); &again[0] != &ev[0] {
				t.Fatal("the event was built twice")
			}
		}
		if i == 0 {
			old = f
		}
		check()
	}
	// Lapped long ago: its event is gone, and one built now is not kept.
	if p := old.sse.Load(); p != evictedEvent {
		t.Fatalf("an evicted frame keeps its event: %v", p)
	}
	before := mem.Load()
	if ev := old.event(7, "m", &mem); !bytes.HasPrefix(ev, []byte("id: 7/m:1\n")) || mem.Load() != before || old.sse.Load() != evictedEvent {
		t.Fatalf("event of an evicted frame: %q, memory %d → %d", ev, before, mem.Load())
	}
	c.trim(trimAll)
	check()
	if mem.Load() != 0 {
		t.Fatalf("ring memory %d after a trim of everything", mem.Load())
	}
}
