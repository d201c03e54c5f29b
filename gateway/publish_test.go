package gateway

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/metrocast/metrocast/gateway/ingest"
)

// adminPost posts body to path on s's admin port.
func adminPost(t testing.TB, s *Server, path string, body io.Reader) (int, []byte) {
	t.Helper()
	return adminPostWithin(t, s, path, body, readTimeout)
}

// adminPostWithin is adminPost that gives up after timeout.
func adminPostWithin(t testing.TB, s *Server, path string, body io.Reader, timeout time.Duration) (int, []byte) {
	t.Helper()
	c := http.Client{Timeout: timeout}
	resp, err := c.Post("http://"+s.AdminAddr().String()+path, "application/x-ndjson", body)
	if err != nil {
		t.Fatalf("POST %s: %s", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: %s", path, err)
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusMethodNotAllowed && ct != "application/x-ndjson" {
		t.Errorf("POST %s: Content-Type %q", path, ct)
	}
	return resp.StatusCode, b
}

func TestHTTPPublish(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{IngestMaxLineBytes: 1024})
	c := dialGorilla(t, wsURL(s, "cities=hp"))
	readType(t, c, "subscribed")
	readType(t, c, "initial_data")

	// One frame, no trailing newline: stored and acked.
	code, body := adminPost(t, s, "/api/publish", strings.NewReader(`{"id":"h1","city":"hp","type":"data_update","data":{"n":1}}`))
	if code != http.StatusOK || string(body) != `{"ack":"h1","seq":1}`+"\n" {
		t.Fatalf("one frame: %d %q", code, body)
	}
	if m := readType(t, c, "data_update"); m.Seq != 1 || string(m.Data) != `{"n":1}` {
		t.Fatalf("got %s", m.Raw)
	}
	// Without an id: stored, nothing to answer.
	code, body = adminPost(t, s, "/api/publish", strings.NewReader(`{"city":"hp","type":"data_update","data":{"n":2}}`+"\n"))
	if code != http.StatusOK || len(body) != 0 {
		t.Fatalf("frame without id: %d %q", code, body)
	}
	readType(t, c, "data_update")

	if code, _ := adminGet(t, s, "/api/publish"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /api/publish: %d, want 405", code)
	}
	if st := s.Stats(); st.IngestFrames != 2 || st.IngestErrors != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestHTTPPublishSameAnswersAsTCP sends the same NDJSON (good, malformed,
// unanswered, too long and pipelined lines) to the TCP port and over HTTP,
// each to a node of its own (its ids would be resends on one node), and
// expects the same answers byte for byte.
func TestHTTPPublishSameAnswersAsTCP(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{IngestMaxLineBytes: 1024})
	s2 := startServer(t, Config{IngestMaxLineBytes: 1024})
	ndjson := func(city string) string {
		return strings.Join([]string{
			`{"id":"a","city":"` + city + `","type":"data_update","data":{"n":1}}`,
			`{"id":"b","city":"` + city + `","type":"data_update","data":[1]}`,
			`not json`,
			`{"city":"` + city + `","type":"alerts","alerts":[{"severity":"critical","message":"m"}]}`,
			``,
			`{"id":"c","city":"` + city + `","data":` + strings.Repeat("x", 2000) + `}`,
			`{"id":"d","city":"` + city + `","type":"snapshot","data":{"n":2}}`,
		}, "\n") + "\n"
	}

	p := dialProducer(t, s)
	p.Write(t, strings.TrimSuffix(ndjson("viatcp"), "\n"))
	var tcp bytes.Buffer
	br := bufio.NewReader(p.C)
	for range 5 {
		_ = p.C.SetReadDeadline(time.Now().Add(readTimeout))
		line, err := br.ReadBytes('\n')
		if err != nil {
			t.Fatalf("TCP answers so far %q: %s", tcp.String(), err)
		}
		tcp.Write(line)
	}

	code, body := adminPost(t, s2, "/api/publish", strings.NewReader(ndjson("viahttp")))
	if code != http.StatusBadRequest {
		t.Errorf("status %d, want 400 (some lines failed)", code)
	}
	if string(body) != tcp.String() {
		t.Errorf("HTTP answers:\n%s\nTCP answers:\n%s", body, tcp.String())
	}
	for _, want := range []string{`{"ack":"a","seq":1}`, `"line":2}`, `"line":3}`, `line longer than 1024 bytes","line":6}`, `{"ack":"d","seq":3}`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("answers lack %s:\n%s", want, body)
		}
	}
	for city, s := range map[string]*Server{"viatcp": s, "viahttp": s2} {
		if cs := s.Cities([]string{city}, 0); len(cs) != 1 || cs[0].Head != 3 || cs[0].RecentAlerts != 1 {
			t.Errorf("%s: %+v, want 3 frames, 1 alert", city, cs)
		}
	}
}

// repeatReader yields b forever.
type repeatReader byte

// Read fills p by doubling a copy: a loop storing byte by byte takes
// seconds for a 64 MiB body under the race detector, which instruments
// every store (copy is one range access).
func (r repeatReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = byte(r)
	for n := 1; n < len(p); n *= 2 {
		copy(p[n:], p[:n])
	}
	return len(p), nil
}

func TestHTTPPublishBodyLimit(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	body := io.MultiReader(
		strings.NewReader(`{"id":"first","city":"big","type":"data_update","data":{}}`+"\n"),
		io.LimitReader(repeatReader('x'), ingest.MaxPublishBody))
	// 64 MiB through loopback: seconds on a loaded machine under the race
	// detector, so a longer bound to give up.
	code, answers := adminPostWithin(t, s, "/api/publish", body, 6*readTimeout)
	if code != http.StatusRequestEntityTooLarge {
		t.Errorf("status %d, want 413", code)
	}
	if !strings.HasPrefix(string(answers), `{"ack":"first","seq":1}`+"\n") || !strings.Contains(string(answers), "body larger than") {
		t.Errorf("answers %q", answers)
	}
}
