// Package nodetest is the client side of metrocast's end-to-end tests:
// WebSocket, Server-Sent Events, ingest and admin clients that talk to a
// real node over loopback, the server messages they read, and the polling
// helper tests wait with. It imports no metrocast package but codec, so
// that the tests of package gateway and those of the packages around it
// (gateway/cluster) share one definition. Only tests import it.
package nodetest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/gorilla/websocket"
)

// ReadTimeout bounds every blocking read in the tests: it is the failure
// bound, never a synchronisation point.
const ReadTimeout = 5 * time.Second

// WaitFor polls fn until it returns true, failing the test after timeout.
// It is how tests wait for counters that other goroutines update (after
// nats-server's checkFor).
func WaitFor(t testing.TB, timeout time.Duration, fn func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !fn() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// WSURL is the WebSocket URL of a node listening on addr, with query.
func WSURL(addr, query string) string {
	u := "ws://" + addr + "/ws"
	if query != "" {
		u += "?" + query
	}
	return u
}

// Msg is any server → client message.
type Msg struct {
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

	// Raw is the message as it came.
	Raw []byte `json:"-"`
}

func (m *Msg) String() string { return string(m.Raw) }

// ParseMsg parses a server message, which must have a type.
func ParseMsg(b []byte) (Msg, error) {
	var m Msg
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("cannot parse server message %q: %w", b, err)
	}
	if m.Type == "" {
		return m, fmt.Errorf("server message without type: %q", b)
	}
	m.Raw = append([]byte(nil), b...)
	return m, nil
}

// PresenceMsg is a presence, user_joined or user_left message.
type PresenceMsg struct {
	Type  string   `json:"type"`
	City  string   `json:"city"`
	Count int      `json:"count"`
	Users []string `json:"users"`
	More  int      `json:"more"`
}

// ClosedError is a close frame received from the server.
type ClosedError struct {
	Code   ws.StatusCode
	Reason string
}

func (e *ClosedError) Error() string {
	return fmt.Sprintf("closed by server: %d %q", e.Code, e.Reason)
}

// Client is a WebSocket client from one of the libraries under test. Its
// methods are not safe for concurrent use, except Close.
type Client interface {
	// Send writes one text message.
	Send(text string) error
	// Next returns the next data message, or a *ClosedError.
	Next(timeout time.Duration) ([]byte, error)
	// SendClose starts the closing handshake.
	SendClose(code ws.StatusCode, reason string) error
	Close()
}

type gobwasClient struct {
	c  net.Conn
	rw io.ReadWriter
}

// DialGobwas opens a gobwas/ws client, closed when the test ends.
func DialGobwas(t testing.TB, url string) Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ReadTimeout)
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

func (g *gobwasClient) Send(text string) error {
	return wsutil.WriteClientText(g.c, []byte(text))
}

func (g *gobwasClient) Next(timeout time.Duration) ([]byte, error) {
	_ = g.c.SetReadDeadline(time.Now().Add(timeout))
	b, _, err := wsutil.ReadServerData(g.rw)
	var ce wsutil.ClosedError
	if errors.As(err, &ce) {
		return nil, &ClosedError{ce.Code, ce.Reason}
	}
	return b, err
}

func (g *gobwasClient) SendClose(code ws.StatusCode, reason string) error {
	return wsutil.WriteClientMessage(g.c, ws.OpClose, ws.NewCloseFrameBody(code, reason))
}

func (g *gobwasClient) Close() { _ = g.c.Close() }

// GorillaClient is a gorilla/websocket client.
type GorillaClient struct{ C *websocket.Conn }

// DialGorilla opens a gorilla/websocket client, closed when the test ends.
func DialGorilla(t testing.TB, url string) Client {
	t.Helper()
	c, resp, err := DialAuth(t, url, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("gorilla: cannot dial %s: %d %s", url, status, err)
	}
	return c
}

// DialAuth opens a gorilla/websocket client, closed when the test ends,
// with extra request headers (nil: none) and subprotocols. On a refused
// upgrade it returns the HTTP response (its body read into the error
// text) and a nil client.
func DialAuth(t testing.TB, url string, h http.Header, protocols ...string) (*GorillaClient, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: ReadTimeout, Subprotocols: protocols}
	c, resp, err := d.Dial(url, h)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			err = errors.New(string(body))
		}
		return nil, resp, err
	}
	t.Cleanup(func() { _ = c.Close() })
	return &GorillaClient{c}, resp, nil
}

func (g *GorillaClient) Send(text string) error {
	return g.C.WriteMessage(websocket.TextMessage, []byte(text))
}

func (g *GorillaClient) Next(timeout time.Duration) ([]byte, error) {
	_ = g.C.SetReadDeadline(time.Now().Add(timeout))
	_, b, err := g.C.ReadMessage()
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return nil, &ClosedError{ws.StatusCode(ce.Code), ce.Text}
	}
	return b, err
}

func (g *GorillaClient) SendClose(code ws.StatusCode, reason string) error {
	return g.C.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(int(code), reason), time.Now().Add(ReadTimeout))
}

func (g *GorillaClient) Close() { _ = g.C.Close() }

// Send sends text on c, failing the test on error.
func Send(t testing.TB, c Client, text string) {
	t.Helper()
	if err := c.Send(text); err != nil {
		t.Fatalf("cannot send %s: %s", text, err)
	}
}

// Read returns the next message on c.
func Read(t testing.TB, c Client) Msg {
	t.Helper()
	b, err := c.Next(ReadTimeout)
	if err != nil {
		t.Fatalf("cannot read a message: %s", err)
	}
	m, err := ParseMsg(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// ReadType returns the next message on c, which must be of type typ.
func ReadType(t testing.TB, c Client, typ string) Msg {
	t.Helper()
	m := Read(t, c)
	if m.Type != typ {
		t.Fatalf("got %s, want a %s message", m.Raw, typ)
	}
	return m
}

// ExpectClose reads until the server's close frame and checks its code.
func ExpectClose(t testing.TB, c Client, code ws.StatusCode) {
	t.Helper()
	for {
		_, err := c.Next(ReadTimeout)
		var ce *ClosedError
		switch {
		case errors.As(err, &ce):
			if ce.Code != code {
				t.Fatalf("closed with %d %q, want %d", ce.Code, ce.Reason, code)
			}
			return
		case err != nil:
			t.Fatalf("read failed before a close frame (want %d): %s", code, err)
		}
		// messages sent before the close are allowed
	}
}

// JSONEqual reports whether a and b hold the same JSON value.
func JSONEqual(t testing.TB, a, b []byte) bool {
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
	return string(ja) == string(jb)
}
