package nodetest

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// LongTimeout bounds the waits that take NATS round trips and reconnects,
// or many steps on a loaded machine: generous for 2 cores shared by
// parallel tests, and a failure bound, never a sleep.
const LongTimeout = 20 * time.Second

// AdminGet fetches path from the admin port at addr.
func AdminGet(t testing.TB, addr, path string) (int, []byte) {
	t.Helper()
	c := http.Client{Timeout: ReadTimeout}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %s", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %s", path, err)
	}
	return resp.StatusCode, b
}

// AdminDo sends a request to the admin port at addr with auth as its
// Authorization header (none when empty) and returns the status, the
// WWW-Authenticate header and the body.
func AdminDo(t testing.TB, addr, method, path, auth, body string) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	c := http.Client{Timeout: ReadTimeout}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %s", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %s", method, path, err)
	}
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), b
}

// Bearer returns an Authorization header for tok.
func Bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// MustDialAuth is DialAuth that fails the test unless the upgrade
// succeeds.
func MustDialAuth(t testing.TB, url string, h http.Header, protocols ...string) *GorillaClient {
	t.Helper()
	c, resp, err := DialAuth(t, url, h, protocols...)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("cannot dial %s: %d %s", url, status, err)
	}
	return c
}

// DialStatus dials url with the headers h and returns the upgrade's
// status: 101 (the connection is closed at once) or the refusal's.
func DialStatus(t testing.TB, url string, h http.Header) int {
	t.Helper()
	c, resp, err := DialAuth(t, url, h)
	if err == nil {
		c.Close()
		return http.StatusSwitchingProtocols
	}
	if resp == nil {
		t.Fatalf("dial: %s", err)
	}
	return resp.StatusCode
}

// LogBuffer collects a node's log lines. Safe for concurrent use.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
