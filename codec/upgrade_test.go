package codec

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// chromeRequest is what Chrome sends for new WebSocket(url), extension
// offer included.
const chromeRequest = "GET /ws?cities=paris,berlin&since=paris:12,berlin:40&epoch=3 HTTP/1.1\r\n" +
	"Host: live.example.com\r\n" +
	"Connection: Upgrade\r\n" +
	"Pragma: no-cache\r\n" +
	"Cache-Control: no-cache\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n" +
	"Upgrade: websocket\r\n" +
	"Origin: https://example.com\r\n" +
	"Sec-WebSocket-Version: 13\r\n" +
	"Accept-Encoding: gzip, deflate, br, zstd\r\n" +
	"Accept-Language: en-US,en;q=0.9\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
	"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" +
	"\r\n"

// The Sec-WebSocket-Accept for the RFC 6455 §1.3 sample key above.
const chromeAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

var testUpgrader = Upgrader{Path: "/ws", MaxHeaderBytes: 4096}

// wsRequest builds an upgrade request for target with the given extra
// header lines; a header given in extra replaces the default one.
func wsRequest(method, target string, extra ...string) string {
	hdr := map[string]string{
		"Host":                  "localhost:8080",
		"Upgrade":               "websocket",
		"Connection":            "Upgrade",
		"Sec-WebSocket-Key":     "dGhlIHNhbXBsZSBub25jZQ==",
		"Sec-WebSocket-Version": "13",
	}
	order := []string{"Host", "Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version"}
	for _, e := range extra {
		k, v, _ := strings.Cut(e, ": ")
		if _, ok := hdr[k]; !ok {
			order = append(order, k)
		}
		hdr[k] = v
	}
	var b strings.Builder
	b.WriteString(method + " " + target + " HTTP/1.1\r\n")
	for _, k := range order {
		if v := hdr[k]; v != "-" {
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	b.WriteString("\r\n")
	return b.String()
}

func readResponse(t *testing.T, resp []byte) *http.Response {
	t.Helper()
	r, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(resp)), nil)
	if err != nil {
		t.Fatalf("cannot parse response %q: %v", resp, err)
	}
	return r
}

func TestUpgradeBrowser(t *testing.T) {
	for _, out := range [][]byte{nil, make([]byte, 0, 1024), []byte("queued bytes|")} {
		prefix := string(out)
		up, resp, err := testUpgrader.Upgrade([]byte(chromeRequest), out, nil)
		if err != nil {
			t.Fatalf("Upgrade: %v; response %q", err, resp)
		}
		if !strings.HasPrefix(string(resp), prefix) {
			t.Fatalf("Upgrade did not append to out %q: %q", prefix, resp)
		}
		resp = resp[len(prefix):]
		if !bytes.HasPrefix(resp, []byte("HTTP/1.1 101 ")) || !bytes.HasSuffix(resp, []byte("\r\n\r\n")) {
			t.Fatalf("response %q", resp)
		}
		r := readResponse(t, resp)
		if r.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("status %d", r.StatusCode)
		}
		if got := r.Header.Get("Sec-WebSocket-Accept"); got != chromeAccept {
			t.Fatalf("Sec-WebSocket-Accept = %q, want %q", got, chromeAccept)
		}
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || !strings.EqualFold(r.Header.Get("Connection"), "upgrade") {
			t.Fatalf("response headers %v", r.Header)
		}
		// permessage-deflate is declined by leaving it out.
		if _, ok := r.Header["Sec-Websocket-Extensions"]; ok {
			t.Fatalf("response accepts an extension: %v", r.Header)
		}
		if _, ok := r.Header["Sec-Websocket-Protocol"]; ok {
			t.Fatalf("response picks a subprotocol: %v", r.Header)
		}
		if !slices.Equal(up.Cities, []string{"paris", "berlin"}) || up.Epoch != 3 ||
			!maps.Equal(up.Since, map[string]uint64{"paris": 12, "berlin": 40}) {
			t.Fatalf("Upgrade = %+v", up)
		}
	}
}

func TestUpgrade(t *testing.T) {
	var raw string // the last response
	f := func(req string, wantStatus int, wantErr bool) *http.Response {
		t.Helper()
		_, resp, err := testUpgrader.Upgrade([]byte(req), []byte("|"), nil)
		raw = string(resp)
		if (err != nil) != wantErr {
			t.Fatalf("Upgrade(%q): err = %v, want error: %v", req, err, wantErr)
		}
		if resp[0] != '|' {
			t.Fatalf("Upgrade(%q) did not append to out: %q", req, resp)
		}
		r := readResponse(t, resp[1:])
		if r.StatusCode != wantStatus {
			t.Fatalf("Upgrade(%q): status %d, want %d; response %q", req, r.StatusCode, wantStatus, resp)
		}
		if wantErr && r.Header.Get("Sec-WebSocket-Accept") != "" {
			t.Fatalf("Upgrade(%q): an error response with Sec-WebSocket-Accept", req)
		}
		if wantErr {
			// The connection closes after a refusal, and the answer says
			// so in one Connection header; it explains itself in its body.
			// (net/http takes "close" out of the header into r.Close.)
			if n := strings.Count(string(resp), "\r\nConnection:"); n != 1 || !r.Close || r.ContentLength <= 1 {
				t.Fatalf("Upgrade(%q): %d Connection headers, close %v, Content-Length %d; want one that says close, and a body\n%s",
					req, n, r.Close, r.ContentLength, resp)
			}
			body, err := io.ReadAll(r.Body)
			if err != nil || int64(len(body)) != r.ContentLength {
				t.Fatalf("Upgrade(%q): body %q (%v), Content-Length %d", req, body, err, r.ContentLength)
			}
		}
		return r
	}
	// Good variants.
	f(wsRequest("GET", "/ws"), 101, false)
	f(wsRequest("GET", "/ws?"), 101, false)
	f(wsRequest("GET", "/ws", "Connection: keep-alive, Upgrade"), 101, false) // Firefox
	f(wsRequest("GET", "/ws", "Upgrade: WebSocket", "Connection: upgrade"), 101, false)
	f(wsRequest("GET", "/ws", "Sec-WebSocket-Protocol: chat"), 101, false)
	f(strings.ReplaceAll(wsRequest("GET", "/ws"), "HTTP/1.1", "HTTP/1.2"), 101, false)

	// Wrong path, even with an otherwise perfect request.
	f(wsRequest("GET", "/"), http.StatusNotFound, true)
	f(wsRequest("GET", "/ws/"), http.StatusNotFound, true)
	f(wsRequest("GET", "/wss?cities=paris"), http.StatusNotFound, true)
	f(wsRequest("GET", "http://localhost/ws"), http.StatusNotFound, true)
	// Not GET: 405 says what is allowed (RFC 9110 §15.5.6).
	if r := f(wsRequest("POST", "/ws"), http.StatusMethodNotAllowed, true); r.Header.Get("Allow") != "GET" {
		t.Fatalf("405 without Allow: GET: %v", r.Header)
	}
	f(wsRequest("HEAD", "/ws"), http.StatusMethodNotAllowed, true)
	f(wsRequest("get", "/ws"), http.StatusMethodNotAllowed, true)
	// A plain HTTP GET (a browser tab, curl, a health checker).
	r := f("GET /ws HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n", http.StatusUpgradeRequired, true)
	// RFC 9110 §7.8: Upgrade is named in Connection, beside close.
	const upgradeClose = "\r\nConnection: Upgrade, close\r\n"
	if r.Header.Get("Upgrade") != "websocket" || r.Header.Get("Sec-WebSocket-Version") != "13" || !strings.Contains(raw, upgradeClose) {
		t.Fatalf("426 response headers %v", r.Header)
	}
	f(wsRequest("GET", "/ws", "Upgrade: -"), http.StatusUpgradeRequired, true)
	// An Upgrade header asking for something else is a bad request.
	f(wsRequest("GET", "/ws", "Upgrade: h2c"), http.StatusBadRequest, true)
	f(wsRequest("GET", "/ws", "Connection: -"), http.StatusBadRequest, true)
	f(wsRequest("GET", "/ws", "Connection: keep-alive"), http.StatusBadRequest, true)
	f(wsRequest("GET", "/ws", "Host: -"), http.StatusBadRequest, true)
	f(strings.Replace(wsRequest("GET", "/ws"), "\r\n\r\n", "\r\nHost: other.example\r\n\r\n", 1), http.StatusBadRequest, true) // RFC 9112 §3.2
	// Sec-WebSocket-Key.
	f(wsRequest("GET", "/ws", "Sec-WebSocket-Key: -"), http.StatusBadRequest, true)
	f(wsRequest("GET", "/ws", "Sec-WebSocket-Key: "), http.StatusBadRequest, true)
	f(wsRequest("GET", "/ws", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ"), http.StatusBadRequest, true)
	f(wsRequest("GET", "/ws", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==="), http.StatusBadRequest, true)
	// 24 characters, as gobwas/ws checks, but not 16 bytes in base64.
	f(wsRequest("GET", "/ws", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQxx"), http.StatusBadRequest, true)
	f(wsRequest("GET", "/ws", "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!=="), http.StatusBadRequest, true)
	f(strings.Replace(wsRequest("GET", "/ws"), "\r\n\r\n", "\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\r\n", 1), http.StatusBadRequest, true) // exactly one
	// Sec-WebSocket-Version: absent is 400, another version is 426 with
	// the one we speak.
	f(wsRequest("GET", "/ws", "Sec-WebSocket-Version: -"), http.StatusBadRequest, true)
	r = f(wsRequest("GET", "/ws", "Sec-WebSocket-Version: 8"), http.StatusUpgradeRequired, true)
	if r.Header.Get("Sec-WebSocket-Version") != "13" || !strings.Contains(raw, upgradeClose) {
		t.Fatalf("426 response headers %v", r.Header)
	}
	// HTTP version.
	f(strings.ReplaceAll(wsRequest("GET", "/ws"), "HTTP/1.1", "HTTP/1.0"), http.StatusHTTPVersionNotSupported, true)
	f(strings.ReplaceAll(wsRequest("GET", "/ws"), "HTTP/1.1", "HTTP/2.0"), http.StatusHTTPVersionNotSupported, true)
	// Garbage that gobwas/ws answers nothing to: we answer 400.
	f("\r\n\r\n", http.StatusBadRequest, true)
	f("GET\r\n\r\n", http.StatusBadRequest, true)
	f("GET /ws\r\n\r\n", http.StatusBadRequest, true)
	f("GET /ws HTTP/1.1\r\nHost: x\r\n", http.StatusBadRequest, true) // no blank line
	f("GET /ws HTTP/1.1\r\nno colon here\r\n\r\n", http.StatusBadRequest, true)
	f("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", http.StatusBadRequest, true) // TLS on the plain port
}

func TestUpgradeQuery(t *testing.T) {
	f := func(query string, want Upgrade) {
		t.Helper()
		up, resp, err := testUpgrader.Upgrade([]byte(wsRequest("GET", "/ws?"+query)), nil, nil)
		if err != nil {
			t.Fatalf("query %q: %v; response %q", query, err, resp)
		}
		if !slices.Equal(up.Cities, want.Cities) || !maps.Equal(up.Since, want.Since) ||
			(up.Since == nil) != (want.Since == nil) || up.Epoch != want.Epoch || up.Token != want.Token {
			t.Fatalf("query %q: got %+v, want %+v", query, up, want)
		}
	}
	f("", Upgrade{})
	f("cities=paris", Upgrade{Cities: []string{"paris"}})
	f("cities=a,b", Upgrade{Cities: []string{"a", "b"}})
	f("cities=a,,b,", Upgrade{Cities: []string{"a", "b"}})
	f("cities=a&cities=b", Upgrade{Cities: []string{"a", "b"}})
	f("cities=a%2Cb", Upgrade{Cities: []string{"a", "b"}})
	f("cities=", Upgrade{})
	f("cities=a,b&since=12", Upgrade{Cities: []string{"a", "b"}, Since: map[string]uint64{"a": 12, "b": 12}})
	f("since=12&cities=a,b", Upgrade{Cities: []string{"a", "b"}, Since: map[string]uint64{"a": 12, "b": 12}})
	f("since=12", Upgrade{Since: map[string]uint64{}})
	f("since=a:1,b:2", Upgrade{Since: map[string]uint64{"a": 1, "b": 2}})
	f("cities=a&since=a:18446744073709551615", Upgrade{Cities: []string{"a"}, Since: map[string]uint64{"a": 1<<64 - 1}})
	f("since=", Upgrade{})
	f("epoch=", Upgrade{})
	f("epoch=7", Upgrade{Epoch: 7})
	f("token=s3cr%20t", Upgrade{Token: "s3cr t"})
	f("other=x&cities=a", Upgrade{Cities: []string{"a"}})
	f("cities="+strings.Repeat("c,", MaxCitiesPerMessage), Upgrade{Cities: slices.Repeat([]string{"c"}, MaxCitiesPerMessage)})

	bad := func(query, wantInBody string) {
		t.Helper()
		up, resp, err := testUpgrader.Upgrade([]byte(wsRequest("GET", "/ws?"+query)), nil, nil)
		if err == nil {
			t.Fatalf("query %q accepted: %+v", query, up)
		}
		r := readResponse(t, resp)
		if r.StatusCode != http.StatusBadRequest {
			t.Fatalf("query %q: status %d, want 400", query, r.StatusCode)
		}
		if !bytes.Contains(resp, []byte(wantInBody)) {
			t.Fatalf("query %q: response %q does not say %q", query, resp, wantInBody)
		}
	}
	bad("cities=Paris", "invalid city")
	bad("cities=a,b%20c", "invalid city")
	bad("cities=a/b", "invalid city")
	bad("cities="+strings.Repeat("x", MaxCityLen+1), "invalid city")
	bad("cities="+strings.Repeat("c,", MaxCitiesPerMessage+1), "cities")
	bad("since=x", "since")
	bad("since=-1", "since")
	bad("since=a", "since")
	bad("since=a:", "since")
	bad("since=a:x", "since")
	bad("since=A:1", "since")
	bad("since=a:1,,b:2", "since")
	bad("epoch=x", "epoch")
	bad("epoch=-1", "epoch")
	bad("cities=a;b", "query")
	bad("cities=%zz", "query")
}

// TestUpgradeToken checks where a token may come from, which wins, and
// that the subprotocol carrying it is never echoed.
func TestUpgradeToken(t *testing.T) {
	f := func(target string, wantToken, wantProto string, extra ...string) {
		t.Helper()
		up, resp, err := testUpgrader.Upgrade([]byte(wsRequest("GET", target, extra...)), nil, nil)
		if err != nil {
			t.Fatalf("%s %q: %v; response %q", target, extra, err, resp)
		}
		if up.Token != wantToken || up.Protocol != wantProto {
			t.Fatalf("%s %q: token %q protocol %q, want %q %q", target, extra, up.Token, up.Protocol, wantToken, wantProto)
		}
		got := readResponse(t, resp).Header.Values("Sec-WebSocket-Protocol")
		if (wantProto == "") != (len(got) == 0) || len(got) > 0 && (len(got) != 1 || got[0] != wantProto) {
			t.Fatalf("%s %q: response subprotocol %q, want %q", target, extra, got, wantProto)
		}
	}
	f("/ws", "", "")
	f("/ws?token=q", "q", "")
	f("/ws", "h", "", "Authorization: Bearer h")
	f("/ws", "h", "", "Authorization: bearer   h ")
	f("/ws", "", "", "Authorization: Basic dXNlcjpwdw==")
	f("/ws", "", "", "Authorization: Bearer")
	f("/ws", "p.q.r", Subprotocol, "Sec-WebSocket-Protocol: metrocast, bearer.p.q.r")
	f("/ws", "p.q.r", Subprotocol, "Sec-WebSocket-Protocol: bearer.p.q.r,metrocast")
	// Offered alone, the token is read but nothing is echoed: only a
	// subprotocol the server speaks may be.
	f("/ws", "p.q.r", "", "Sec-WebSocket-Protocol: bearer.p.q.r")
	f("/ws", "", Subprotocol, "Sec-WebSocket-Protocol: metrocast")
	f("/ws", "", "", "Sec-WebSocket-Protocol: chat, superchat")
	// Authorization wins over the subprotocol, which wins over the query.
	f("/ws?token=q", "h", Subprotocol, "Authorization: Bearer h", "Sec-WebSocket-Protocol: metrocast, bearer.p")
	f("/ws?token=q", "p", Subprotocol, "Sec-WebSocket-Protocol: metrocast, bearer.p")

	up, _, err := testUpgrader.Upgrade([]byte(chromeRequest), nil, nil)
	if err != nil || up.Origin != "https://example.com" {
		t.Fatalf("Origin = %q (%v), want https://example.com", up.Origin, err)
	}
}

// TestUpgradeCheck checks that the check sees the parsed request and that
// its error is the response.
func TestUpgradeCheck(t *testing.T) {
	var seen Upgrade
	calls := 0
	check := func(status int) func(*Upgrade) error {
		return func(up *Upgrade) error {
			seen, calls = *up, calls+1
			switch status {
			case 0:
				return nil
			case -1:
				return errors.New("not an HTTPError")
			}
			return &HTTPError{Status: status, Message: "no entry", Header: "WWW-Authenticate: Bearer\r\n"}
		}
	}
	f := func(req string, status int, wantStatus, wantCalls int) *http.Response {
		t.Helper()
		calls = 0
		_, resp, err := testUpgrader.Upgrade([]byte(req), nil, check(status))
		r := readResponse(t, resp)
		if r.StatusCode != wantStatus || calls != wantCalls || (err == nil) != (wantStatus == 101) {
			t.Fatalf("check %d: status %d, %d calls, err %v; want %d, %d calls", status, r.StatusCode, calls, err, wantStatus, wantCalls)
		}
		return r
	}
	f(wsRequest("GET", "/ws?cities=a&token=t", "Origin: https://x.example"), 0, 101, 1)
	if seen.Token != "t" || seen.Origin != "https://x.example" || !slices.Equal(seen.Cities, []string{"a"}) {
		t.Fatalf("check saw %+v", seen)
	}
	r := f(wsRequest("GET", "/ws"), http.StatusUnauthorized, 401, 1)
	if r.Header.Get("WWW-Authenticate") != "Bearer" {
		t.Fatalf("401 headers %v", r.Header)
	}
	f(wsRequest("GET", "/ws"), http.StatusForbidden, 403, 1)
	f(wsRequest("GET", "/ws"), -1, 400, 1)
	// An invalid request is refused before the check.
	f(wsRequest("GET", "/nope"), 0, 404, 0)
	f(wsRequest("GET", "/ws", "Sec-WebSocket-Version: 8"), 0, 426, 0)
}

// TestUpgradeNoAlias checks that nothing in an accepted Upgrade points into
// the request buffer, which the gateway reuses.
func TestUpgradeNoAlias(t *testing.T) {
	head := []byte(wsRequest("GET", "/ws?cities=paris,lyon&since=paris:4&token=tok"))
	up, _, err := testUpgrader.Upgrade(head, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range head {
		head[i] = 'X'
	}
	if !slices.Equal(up.Cities, []string{"paris", "lyon"}) || up.Token != "tok" || up.Since["paris"] != 4 {
		t.Fatalf("Upgrade aliases the request: %+v", up)
	}
}

func TestRequestEnd(t *testing.T) {
	f := func(in string, want int) {
		t.Helper()
		if got := RequestEnd([]byte(in), 0); got != want {
			t.Fatalf("RequestEnd(%q, 0) = %d, want %d", in, got, want)
		}
		// Fed one byte at a time, resuming where the previous call stopped.
		b := []byte(in)
		prev, got := 0, 0
		for i := 0; i <= len(b); i++ {
			if got = RequestEnd(b[:i], prev); got != 0 {
				if i != want {
					t.Fatalf("RequestEnd(%q, %d) = %d at %d bytes, want it at %d", b[:i], prev, got, i, want)
				}
				break
			}
			prev = i
		}
		if got != want {
			t.Fatalf("RequestEnd of %q byte by byte = %d, want %d", in, got, want)
		}
	}
	f("", 0)
	f("\r\n\r", 0)
	f("\r\n\r\n", 4)
	f("GET / HTTP/1.1\r\n", 0)
	f("GET / HTTP/1.1\r\nHost: x\r\n\r", 0)
	f("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27)
	f("GET / HTTP/1.1\r\nHost: x\r\n\r\n\x81\x80\x00\x00\x00\x00", 27) // a frame right behind
	f("GET / HTTP/1.1\r\nHost: x\r\n\r\n\r\n\r\n", 27)
	f("GET / HTTP/1.1\n\n", 0) // bare LF is not enough
	f("GET / HTTP/1.1\r\n\n\r\n", 0)
	f("GET / HTTP/1.1\r\r\n\r\n", 19)
	f(chromeRequest, len(chromeRequest))
	f(chromeRequest+chromeRequest, len(chromeRequest))
}

// TestRequestEndChunks feeds the request in chunks of every size and checks
// the answer against a full scan.
func TestRequestEndChunks(t *testing.T) {
	in := []byte(chromeRequest + "\x81\x80junk\r\n\r\n")
	want := RequestEnd(in, 0)
	if want != len(chromeRequest) {
		t.Fatalf("RequestEnd = %d, want %d", want, len(chromeRequest))
	}
	for chunk := 1; chunk <= len(in); chunk++ {
		prev, got := 0, 0
		for i := chunk; ; i += chunk {
			i = min(i, len(in))
			if got = RequestEnd(in[:i], prev); got != 0 || i == len(in) {
				break
			}
			prev = i
		}
		if got != want {
			t.Fatalf("chunks of %d: RequestEnd = %d, want %d", chunk, got, want)
		}
	}
}

// FuzzUpgrade feeds a request split at a fuzzed offset, as the gateway
// does when it arrives in two reads: whatever the split, the head found and
// the answer to it are those of the whole input, and no input panics or
// gets a response outside the documented set.
func FuzzUpgrade(f *testing.F) {
	seeds := []string{
		chromeRequest,
		wsRequest("GET", "/ws"),
		wsRequest("GET", "/ws?cities=a,b&since=12"),
		wsRequest("GET", "/ws?since=a:1,b:2&epoch=4&token=t"),
		wsRequest("GET", "/ws", "Authorization: Bearer x.y.z", "Origin: http://a"),
		wsRequest("GET", "/ws", "Sec-WebSocket-Protocol: metrocast, bearer.x.y.z"),
		wsRequest("GET", "/ws?cities=A"),
		wsRequest("GET", "/"),
		wsRequest("POST", "/ws"),
		wsRequest("GET", "/ws", "Upgrade: -"),
		wsRequest("GET", "/ws", "Sec-WebSocket-Key: short"),
		wsRequest("GET", "/ws", "Sec-WebSocket-Version: 8"),
		"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /ws HTTP/1.0\r\n\r\n",
		"GET /ws HTTP/1.1\r\nbad\r\n\r\n",
		"\r\n\r\n",
		"GET",
		chromeRequest + "\x81\x80\x01\x02\x03\x04",
	}
	for i, s := range seeds {
		f.Add([]byte(s), uint16(i*7))
	}
	u := Upgrader{Path: "/ws", MaxHeaderBytes: 4096}
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		full := RequestEnd(data, 0)
		if full < 0 || full > len(data) || (full > 0 && (full < 4 || string(data[full-4:full]) != "\r\n\r\n")) {
			t.Fatalf("RequestEnd(%q) = %d", data, full)
		}
		if full > 0 && bytes.Contains(data[:full-1], []byte("\r\n\r\n")) {
			t.Fatalf("RequestEnd(%q) = %d is not the first blank line", data, full)
		}
		k := int(split) % (len(data) + 1)
		end := RequestEnd(data[:k], 0)
		if end == 0 {
			end = RequestEnd(data, k)
		}
		if end != full {
			t.Fatalf("RequestEnd split at %d = %d, whole = %d; input %q", k, end, full, data)
		}
		if full == 0 {
			return
		}
		head := data[:full]
		up, resp, err := u.Upgrade(head, nil, nil)
		up2, resp2, err2 := u.Upgrade(bytes.Clone(head), []byte("prefix"), nil)
		if string(resp2) != "prefix"+string(resp) || (err == nil) != (err2 == nil) ||
			!slices.Equal(up.Cities, up2.Cities) || !maps.Equal(up.Since, up2.Since) {
			t.Fatalf("Upgrade(%q) differs between calls: %q, %v vs %q, %v", head, resp, err, resp2, err2)
		}
		if !bytes.Contains(resp, []byte("\r\n\r\n")) {
			t.Fatalf("Upgrade(%q): response %q has no end of head", head, resp)
		}
		r := readResponse(t, resp)
		if err == nil {
			if !bytes.HasPrefix(resp, []byte("HTTP/1.1 101 ")) || r.Header.Get("Sec-WebSocket-Accept") == "" || !validKeys(head) {
				t.Fatalf("Upgrade(%q) accepted with %q", head, resp)
			}
			if _, ok := r.Header["Sec-Websocket-Extensions"]; ok {
				t.Fatalf("Upgrade(%q) accepted an extension: %q", head, resp)
			}
			if up.Protocol != "" && up.Protocol != Subprotocol || r.Header.Get("Sec-WebSocket-Protocol") != up.Protocol {
				t.Fatalf("Upgrade(%q) echoed subprotocol %q (%q)", head, r.Header.Get("Sec-WebSocket-Protocol"), up.Protocol)
			}
			if len(up.Cities) > MaxCitiesPerMessage {
				t.Fatalf("Upgrade(%q): %d cities", head, len(up.Cities))
			}
			for _, c := range up.Cities {
				if !ValidCity(c) {
					t.Fatalf("Upgrade(%q) accepted city %q", head, c)
				}
			}
			for c := range up.Since {
				if !ValidCity(c) {
					t.Fatalf("Upgrade(%q) accepted since city %q", head, c)
				}
			}
			return
		}
		switch r.StatusCode {
		case 400, 404, 405, 426, 505:
		default:
			t.Fatalf("Upgrade(%q): %v with status %d: %q", head, err, r.StatusCode, resp)
		}
	})
}
