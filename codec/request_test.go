package codec

import (
	"errors"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// eventSourceRequest is what Chrome sends for new EventSource(url) after a
// dropped stream: the last event id it saw.
const eventSourceRequest = "GET /sse?cities=paris,berlin&token=t.k.n HTTP/1.1\r\n" +
	"Host: live.example.com\r\n" +
	"Connection: keep-alive\r\n" +
	"Accept: text/event-stream\r\n" +
	"Cache-Control: no-cache\r\n" +
	"Last-Event-ID: 1795780000000/paris:12,berlin:40\r\n" +
	"Origin: https://dash.example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n" +
	"Accept-Encoding: gzip, deflate, br, zstd\r\n" +
	"\r\n"

func TestRequestTarget(t *testing.T) {
	f := func(head, method, path string, ok bool) {
		t.Helper()
		m, p, gotOK := RequestTarget([]byte(head))
		if string(m) != method || string(p) != path || gotOK != ok {
			t.Fatalf("RequestTarget(%q) = %q, %q, %v; want %q, %q, %v", head, m, p, gotOK, method, path, ok)
		}
	}
	f(eventSourceRequest, "GET", "/sse", true)
	f("GET /history?city=a HTTP/1.1\r\n\r\n", "GET", "/history", true)
	f("OPTIONS /sse HTTP/1.1\r\n\r\n", "OPTIONS", "/sse", true)
	f("GET /ws HTTP/1.1", "GET", "/ws", true)
	f("GET /ws\r\n\r\n", "", "", false)
	f(" /ws HTTP/1.1\r\n", "", "", false)
	f("", "", "", false)
	if n := testing.AllocsPerRun(100, func() { RequestTarget([]byte(eventSourceRequest)) }); n != 0 {
		t.Fatalf("RequestTarget allocates %v times", n)
	}
}

func TestParseRequest(t *testing.T) {
	f := func(head string, want Request) {
		t.Helper()
		got, err := ParseRequest([]byte(head))
		if err != nil {
			t.Fatalf("ParseRequest(%q): %v", head, err)
		}
		if got.Method != want.Method || got.Path != want.Path || !slices.Equal(got.Cities, want.Cities) ||
			!maps.Equal(got.Since, want.Since) || got.Epoch != want.Epoch || got.Filter != want.Filter ||
			got.HasFilter != want.HasFilter || got.LastEventID != want.LastEventID || got.City != want.City ||
			got.Token != want.Token || got.Origin != want.Origin || got.ForwardedFor != want.ForwardedFor {
			t.Fatalf("ParseRequest(%q)\n = %+v\nwant %+v", head, got, want)
		}
	}
	get := func(target string, header ...string) string {
		return "GET " + target + " HTTP/1.1\r\nHost: x\r\n" + strings.Join(header, "") + "\r\n"
	}
	f(eventSourceRequest, Request{Method: "GET", Path: SSEPath, Cities: []string{"paris", "berlin"},
		Since: map[string]uint64{"paris": 12, "berlin": 40}, Epoch: 1795780000000, LastEventID: true,
		Token: "t.k.n", Origin: "https://dash.example.com"})
	// The URL's since and epoch, unless a Last-Event-ID is there.
	f(get("/sse?cities=a,b&since=a:3&epoch=9"), Request{Method: "GET", Path: SSEPath, Cities: []string{"a", "b"},
		Since: map[string]uint64{"a": 3}, Epoch: 9})
	f(get("/sse?cities=a&since=3&epoch=9", "last-event-id: 5/a:4\r\n"), Request{Method: "GET", Path: SSEPath,
		Cities: []string{"a"}, Since: map[string]uint64{"a": 4}, Epoch: 5, LastEventID: true})
	// The header's token wins over the URL's, in any case.
	f(get("/sse?cities=a&token=url", "authorization: bearer  hdr \r\n"), Request{Method: "GET", Path: SSEPath,
		Cities: []string{"a"}, Token: "hdr"})
	f(get("/sse?cities=a&token=url", "Authorization: Basic abc\r\n"), Request{Method: "GET", Path: SSEPath,
		Cities: []string{"a"}, Token: "url"})
	f(get("/sse?cities=a&types=alerts,data_update&minSeverity=critical"), Request{Method: "GET", Path: SSEPath,
		Cities: []string{"a"}, Filter: Filter{Kinds: KindAlerts | KindDataUpdate, MinSeverity: SeverityCritical}, HasFilter: true})
	f(get("/sse?cities=a&types=alerts&types=snapshot"), Request{Method: "GET", Path: SSEPath,
		Cities: []string{"a"}, Filter: Filter{Kinds: KindAlerts | KindSnapshot}, HasFilter: true})
	f(get("/sse?cities=a", "X-Forwarded-For: 10.0.0.1\r\n", "x-forwarded-for: 10.0.0.2, 10.0.0.3\r\n"),
		Request{Method: "GET", Path: SSEPath, Cities: []string{"a"}, ForwardedFor: "10.0.0.1,10.0.0.2, 10.0.0.3"})
	f(get("/sse"), Request{Method: "GET", Path: SSEPath})
	f(get("/history?city=a&since=17&epoch=3&token=k"), Request{Method: "GET", Path: HistoryPath, City: "a",
		Since: map[string]uint64{"a": 17}, Epoch: 3, Token: "k"})
	// History has no Last-Event-ID: since is on its URL.
	f(get("/history?city=a", "Last-Event-ID: 1/a:4\r\n"), Request{Method: "GET", Path: HistoryPath, City: "a",
		Since: map[string]uint64{"a": 0}})
	f("GET /history?city=a HTTP/1.0\r\n\r\n", Request{Method: "GET", Path: HistoryPath, City: "a", Since: map[string]uint64{"a": 0}})
	// A preflight: no query parsed, no token needed.
	f("OPTIONS /sse?cities=BAD HTTP/1.1\r\nHost: x\r\nOrigin: https://a\r\n\r\n", Request{Method: "OPTIONS", Path: SSEPath, Origin: "https://a"})
}

// TestParseRequestMalformed is the table of requests refused, each with the
// status and a word of the message.
func TestParseRequestMalformed(t *testing.T) {
	f := func(head string, status int, word string) {
		t.Helper()
		_, err := ParseRequest([]byte(head))
		var he *HTTPError
		if !errors.As(err, &he) || he.Status != status || !strings.Contains(he.Message, word) {
			t.Fatalf("ParseRequest(%q) = %v, want %d with %q", head, err, status, word)
		}
	}
	get := func(target string, header ...string) string {
		return "GET " + target + " HTTP/1.1\r\nHost: x\r\n" + strings.Join(header, "") + "\r\n"
	}
	f("POST /sse HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusMethodNotAllowed, "POST")
	f("HEAD /history HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusMethodNotAllowed, "HEAD")
	f("GET /sse HTTP/2.0\r\nHost: x\r\n\r\n", http.StatusHTTPVersionNotSupported, "1.1")
	f("GET /sse SPDY\r\nHost: x\r\n\r\n", http.StatusBadRequest, "request line")
	f("GET /sse  HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusBadRequest, "request line")
	f("GET sse HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusBadRequest, "request line")
	f("GET /sse\r\n\r\n", http.StatusBadRequest, "request line")
	f("GET /sse HTTP/1.1\r\n\r\n", http.StatusBadRequest, "Host")
	f(get("/sse?cities=a", "Host: y\r\n"), http.StatusBadRequest, "more than one Host") // RFC 9112 §3.2
	f(get("/sse", "Bad Header: x\r\n"), http.StatusBadRequest, "header")
	f(get("/sse", " folded\r\n"), http.StatusBadRequest, "header")
	f(get("/sse", "NoColon\r\n"), http.StatusBadRequest, "header")
	f(get("/sse", ": empty\r\n"), http.StatusBadRequest, "header")
	// A control character in a header (Origin is written back: a bare
	// line break would split the response) or in the request line.
	f(get("/sse?cities=a", "Origin: http://a\nSet-Cookie: x=1\r\n"), http.StatusBadRequest, "control character")
	f(get("/sse?cities=a", "Origin: http://a\rX: 1\r\n"), http.StatusBadRequest, "control character")
	f(get("/sse?cities=a", "Origin: http://a\x00\r\n"), http.StatusBadRequest, "control character")
	f(get("/sse?cities=a", "X-Any: a\x7fb\r\n"), http.StatusBadRequest, "control character")
	f("OPTIONS /sse HTTP/1.1\r\nHost: x\r\nOrigin: http://a\nX: 1\r\n\r\n", http.StatusBadRequest, "control character")
	f("GET /sse?cities=a\n HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusBadRequest, "control character")
	f(get("/nope"), http.StatusNotFound, "not found")
	f(get("/sse?cities=Paris"), http.StatusBadRequest, "invalid city")
	f(get("/sse?cities=a&since=a:x"), http.StatusBadRequest, "since")
	f(get("/sse?cities=a&epoch=-1"), http.StatusBadRequest, "epoch")
	f(get("/sse?cities=a&types=gauges"), http.StatusBadRequest, "gauges")
	f(get("/sse?cities=a&minSeverity=loud"), http.StatusBadRequest, "loud")
	f(get("/sse?cities=a&%zz"), http.StatusBadRequest, "query")
	f(get("/sse?cities="+strings.Repeat("c,", MaxCitiesPerMessage+1)), http.StatusBadRequest, "cities")
	f(get("/sse?cities=a", "Last-Event-ID: 12\r\n"), http.StatusBadRequest, "Last-Event-ID")
	f(get("/sse?cities=a", "Last-Event-ID: x/a:1\r\n"), http.StatusBadRequest, "Last-Event-ID")
	f(get("/history"), http.StatusBadRequest, "city")
	f(get("/history?city=A"), http.StatusBadRequest, "city")
	f(get("/history?city=a&since=a:1"), http.StatusBadRequest, "since")
	f(get("/history?city=a&epoch=e"), http.StatusBadRequest, "epoch")
}

// FuzzParseRequest feeds a request split at a fuzzed offset: the head is
// found the same way whatever the split, and parsing never panics and
// refuses only with an HTTP error; what it accepts holds valid cities.
func FuzzParseRequest(f *testing.F) {
	seeds := []string{
		eventSourceRequest,
		"GET /sse?cities=a,b&since=a:1,b:2&epoch=4&token=t&types=alerts&minSeverity=warning HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /history?city=a&since=3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n\r\n",
		"OPTIONS /sse HTTP/1.1\r\nHost: x\r\nOrigin: http://a\r\n\r\n",
		"GET /sse?cities=a HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1/a:2,b:3\r\n\r\n",
		"GET /sse HTTP/1.1\r\n folded\r\n\r\n",
		"POST /history HTTP/1.1\r\n\r\n",
		"GET /sse HTTP/1.1\r\nHost: x\r\n\r\nGET /sse HTTP/1.1\r\n\r\n",
		"OPTIONS / HTTP/1.0\r\n0:\r\n\r\n",
		"OPTIONS /sse HTTP/1.1\r\nHost: x\r\nOrigin: http://a\nX: 1\r\n\r\n",
		"\r\n\r\n",
	}
	for i, s := range seeds {
		f.Add([]byte(s), uint16(i*11))
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		k := int(split) % (len(data) + 1)
		end := RequestEnd(data[:k], 0)
		if end == 0 {
			end = RequestEnd(data, k)
		}
		if end != RequestEnd(data, 0) {
			t.Fatalf("RequestEnd split at %d = %d; input %q", k, end, data)
		}
		if end == 0 {
			return
		}
		head := data[:end]
		RequestTarget(head)
		req, err := ParseRequest(head)
		if err != nil {
			var he *HTTPError
			if !errors.As(err, &he) {
				t.Fatalf("ParseRequest(%q): %v is not an *HTTPError", head, err)
			}
			switch he.Status {
			case http.StatusBadRequest, http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusHTTPVersionNotSupported:
			default:
				t.Fatalf("ParseRequest(%q): status %d", head, he.Status)
			}
			return
		}
		if req.Path != SSEPath && req.Path != HistoryPath {
			t.Fatalf("ParseRequest(%q) accepted path %q", head, req.Path)
		}
		// What may be written back into a response holds no line break.
		for _, v := range []string{req.Origin, req.ForwardedFor, req.Token} {
			if strings.ContainsAny(v, "\r\n\x00") {
				t.Fatalf("ParseRequest(%q) accepted a header value %q", head, v)
			}
		}
		for _, c := range append(slices.Clone(req.Cities), slices.Collect(maps.Keys(req.Since))...) {
			if !ValidCity(c) {
				t.Fatalf("ParseRequest(%q) accepted city %q", head, c)
			}
		}
		if req.Path == HistoryPath && req.Method == http.MethodGet && !ValidCity(req.City) {
			t.Fatalf("ParseRequest(%q) accepted history city %q", head, req.City)
		}
	})
}
