package gateway

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// event is one Server-Sent Event as a browser's EventSource dispatches it.
type event struct {
	id   string // the last event id after it (an id field, or the one before)
	typ  string // the event field; "message" when absent
	data string
	// retry is the retry field of the event, or -1.
	retry int
	msg   msg // data parsed
}

// sseClient reads a stream the way the HTML standard's event stream
// interpretation does (fields, comments, the last event id), over a raw
// socket so that tests control every byte of the request.
type sseClient struct {
	c        net.Conn // nil when reading another program's output
	resp     *http.Response
	body     *bufio.Reader
	lastID   string
	retry    int // the last retry field seen, or -1
	comments int // comment lines read (heartbeats)
}

// sseGet sends a GET for target (with extra header lines, each ending in
// \r\n) and returns the response with its body unread.
func sseGet(t testing.TB, addr, target string, header ...string) (net.Conn, *http.Response) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, readTimeout)
	if err != nil {
		t.Fatalf("cannot dial: %s", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	req := "GET " + target + " HTTP/1.1\r\nHost: " + addr + "\r\nAccept: text/event-stream\r\n" + strings.Join(header, "") + "\r\n"
	_ = c.SetDeadline(time.Now().Add(readTimeout))
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatalf("cannot send the request: %s", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: cannot read the response: %s", target, err)
	}
	return c, resp
}

// sseStatus sends a GET for target and returns the status and body of a
// response that is not a stream.
func sseStatus(t testing.TB, addr, target string, header ...string) (*http.Response, string) {
	t.Helper()
	_, resp := sseGet(t, addr, target, header...)
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: cannot read the body: %s", target, err)
	}
	return resp, string(b)
}

// dialSSE opens a stream of s at target (/sse?…), which must start.
func dialSSE(t testing.TB, s *Server, target string, header ...string) *sseClient {
	t.Helper()
	c, resp := sseGet(t, s.Addr().String(), target, header...)
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: status %d %q, want 200", target, resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Content-Type %q, want text/event-stream", ct)
	}
	if len(resp.TransferEncoding) != 0 || resp.ContentLength != -1 {
		t.Fatalf("a stream with Transfer-Encoding %v, Content-Length %d: want neither", resp.TransferEncoding, resp.ContentLength)
	}
	return &sseClient{c: c, resp: resp, body: bufio.NewReader(resp.Body), retry: -1}
}

// nextEvent returns the next dispatched event, or an error (io.EOF when the
// server ended the stream).
func (sc *sseClient) nextEvent(timeout time.Duration) (event, error) {
	if sc.c != nil { // a pipe from a process is bounded by the process's context
		_ = sc.c.SetReadDeadline(time.Now().Add(timeout))
	}
	ev := event{retry: -1}
	var data []string
	for {
		line, err := sc.body.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		if strings.ContainsRune(line, '\r') {
			return ev, errors.New("a CR in the stream: " + strconv.Quote(line))
		}
		if line == "" {
			if data == nil {
				ev = event{retry: -1}
				continue // nothing to dispatch (after a comment or retry)
			}
			ev.id, ev.data = sc.lastID, strings.Join(data, "\n")
			if ev.typ == "" {
				ev.typ = "message"
			}
			m, err := parseMsg([]byte(ev.data))
			if err != nil {
				return ev, err
			}
			ev.msg = m
			return ev, nil
		}
		if strings.HasPrefix(line, ":") {
			sc.comments++
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "id":
			sc.lastID = value
		case "event":
			ev.typ = value
		case "data":
			data = append(data, value)
		case "retry":
			n, err := strconv.Atoi(value)
			if err != nil {
				return ev, errors.New("bad retry field: " + line)
			}
			ev.retry, sc.retry = n, n
		default:
			return ev, errors.New("unknown field: " + line)
		}
	}
}

// next returns the next event, failing the test on error.
func (sc *sseClient) next(t testing.TB) event {
	t.Helper()
	ev, err := sc.nextEvent(readTimeout)
	if err != nil {
		t.Fatalf("cannot read an event: %s", err)
	}
	if ev.typ != ev.msg.Type {
		t.Fatalf("event %q carries a %s message: %s", ev.typ, ev.msg.Type, ev.data)
	}
	return ev
}

// nextType returns the next event, which must be of type typ.
func (sc *sseClient) nextType(t testing.TB, typ string) event {
	t.Helper()
	ev := sc.next(t)
	if ev.typ != typ {
		t.Fatalf("got event %s %s, want a %s event", ev.typ, ev.data, typ)
	}
	return ev
}

// expectEnd reads events until the server ends the stream.
func (sc *sseClient) expectEnd(t testing.TB) {
	t.Helper()
	for {
		_, err := sc.nextEvent(readTimeout)
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			t.Fatalf("the server did not end the stream within %s", readTimeout)
		case err != nil:
			return // EOF or a reset: the server closed
		}
	}
}

func (sc *sseClient) close() { _ = sc.c.Close() }

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// needTool returns the path of an external program a test runs. Plain go
// test skips without it; make test, which installs it, sets
// METROCAST_REQUIRE_TOOLS so that a missing one fails instead.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("METROCAST_REQUIRE_TOOLS") != "" {
		t.Fatalf("%s is not installed (apt-get install %s)", name, name)
	}
	t.Skipf("%s is not installed (apt-get install %s; make test does)", name, name)
	return ""
}

// sameEvent checks that f's Server-Sent Event, read as an EventSource reads
// it, is one event named by the message's type, with the id of f's city
// and seq, whose data decodes (encoding/json) to what the WebSocket frame
// does.
func sameEvent(t *testing.T, f *frame, epoch uint64, city string) {
	t.Helper()
	ev := f.event(epoch, city, nil)
	lines := strings.Split(string(ev), "\n")
	if len(lines) != 5 || lines[3] != "" || lines[4] != "" || strings.ContainsRune(string(ev), '\r') {
		t.Fatalf("event %q: want id, event and data lines, then a blank one", ev)
	}
	var ws, sse map[string]any
	decodeFrame(t, f.b, &ws)
	data, ok := strings.CutPrefix(lines[2], "data: ")
	if err := json.Unmarshal([]byte(data), &sse); !ok || err != nil {
		t.Fatalf("event %q: its data does not decode: %v", ev, err)
	}
	if want := fmt.Sprintf("id: %d/%s:%d", epoch, city, f.seq); lines[0] != want || lines[1] != "event: "+ws["type"].(string) || !reflect.DeepEqual(ws, sse) {
		t.Fatalf("event %q, want %s, the type %v and the data of the frame %q", ev, want, ws["type"], f.b)
	}
}
