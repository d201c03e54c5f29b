package nodetest

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Event is one Server-Sent Event as a browser's EventSource dispatches it.
type Event struct {
	ID   string // the last event id after it (an id field, or the one before)
	Type string // the event field; "message" when absent
	Data string
	// Retry is the retry field of the event, or -1.
	Retry int
	Msg   Msg // Data parsed
}

// SSEClient reads a stream the way the HTML standard's event stream
// interpretation does (fields, comments, the last event id), over a raw
// socket so that tests control every byte of the request.
type SSEClient struct {
	C        net.Conn // nil when reading another program's output
	Resp     *http.Response
	Body     *bufio.Reader
	LastID   string
	Retry    int // the last retry field seen, or -1
	Comments int // comment lines read (heartbeats)
}

// SSEGet sends a GET for target to addr (with extra header lines, each
// ending in \r\n) and returns the response with its body unread.
func SSEGet(t testing.TB, addr, target string, header ...string) (net.Conn, *http.Response) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, ReadTimeout)
	if err != nil {
		t.Fatalf("cannot dial: %s", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	req := "GET " + target + " HTTP/1.1\r\nHost: " + addr + "\r\nAccept: text/event-stream\r\n" + strings.Join(header, "") + "\r\n"
	_ = c.SetDeadline(time.Now().Add(ReadTimeout))
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatalf("cannot send the request: %s", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: cannot read the response: %s", target, err)
	}
	return c, resp
}

// DialSSE opens a stream of the node listening on addr at target
// (/sse?…), which must start.
func DialSSE(t testing.TB, addr, target string, header ...string) *SSEClient {
	t.Helper()
	c, resp := SSEGet(t, addr, target, header...)
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
	return &SSEClient{C: c, Resp: resp, Body: bufio.NewReader(resp.Body), Retry: -1}
}

// NextEvent returns the next dispatched event, or an error (io.EOF when
// the server ended the stream).
func (sc *SSEClient) NextEvent(timeout time.Duration) (Event, error) {
	if sc.C != nil { // a pipe from a process is bounded by the process's context
		_ = sc.C.SetReadDeadline(time.Now().Add(timeout))
	}
	ev := Event{Retry: -1}
	var data []string
	for {
		line, err := sc.Body.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		if strings.ContainsRune(line, '\r') {
			return ev, errors.New("a CR in the stream: " + strconv.Quote(line))
		}
		if line == "" {
			if data == nil {
				ev = Event{Retry: -1}
				continue // nothing to dispatch (after a comment or retry)
			}
			ev.ID, ev.Data = sc.LastID, strings.Join(data, "\n")
			if ev.Type == "" {
				ev.Type = "message"
			}
			m, err := ParseMsg([]byte(ev.Data))
			if err != nil {
				return ev, err
			}
			ev.Msg = m
			return ev, nil
		}
		if strings.HasPrefix(line, ":") {
			sc.Comments++
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "id":
			sc.LastID = value
		case "event":
			ev.Type = value
		case "data":
			data = append(data, value)
		case "retry":
			n, err := strconv.Atoi(value)
			if err != nil {
				return ev, errors.New("bad retry field: " + line)
			}
			ev.Retry, sc.Retry = n, n
		default:
			return ev, errors.New("unknown field: " + line)
		}
	}
}

// Next returns the next event, failing the test on error.
func (sc *SSEClient) Next(t testing.TB) Event {
	t.Helper()
	ev, err := sc.NextEvent(ReadTimeout)
	if err != nil {
		t.Fatalf("cannot read an event: %s", err)
	}
	if ev.Type != ev.Msg.Type {
		t.Fatalf("event %q carries a %s message: %s", ev.Type, ev.Msg.Type, ev.Data)
	}
	return ev
}

// NextType returns the next event, which must be of type typ.
func (sc *SSEClient) NextType(t testing.TB, typ string) Event {
	t.Helper()
	ev := sc.Next(t)
	if ev.Type != typ {
		t.Fatalf("got event %s %s, want a %s event", ev.Type, ev.Data, typ)
	}
	return ev
}

// ExpectEnd reads events until the server ends the stream.
func (sc *SSEClient) ExpectEnd(t testing.TB) {
	t.Helper()
	for {
		_, err := sc.NextEvent(ReadTimeout)
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			t.Fatalf("the server did not end the stream within %s", ReadTimeout)
		case err != nil:
			return // EOF or a reset: the server closed
		}
	}
}

// Close closes the stream's connection.
func (sc *SSEClient) Close() { _ = sc.C.Close() }
