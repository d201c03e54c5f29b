package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metrocast/metrocast/gateway"
	"github.com/metrocast/metrocast/gateway/producer"
)

// subNode is a node with an HMAC secret, for sub to mint with.
type subNode struct {
	s      *gateway.Server
	secret string // the secret's file
	ingest *producer.Producer
}

func startSubNode(t *testing.T) subNode {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "hmac-secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := gateway.New(gateway.Config{
		Addr: "127.0.0.1:0", IngestAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Loops: 1,
		AuthHMACSecretFile: secret,
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	p, err := producer.Dial(context.Background(), s.IngestAddr().String(), producer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return subNode{s: s, secret: secret, ingest: p}
}

func (n subNode) publish(t *testing.T, line string) uint64 {
	t.Helper()
	seq, err := n.ingest.Send(context.Background(), []byte(line))
	if err != nil {
		t.Fatalf("publish %s: %v", line, err)
	}
	return seq
}

// lines is sub's stdout, read while it runs.
type lines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(strings.TrimSuffix(l.buf.String(), "\n"), "\n")
}

// wait polls until some line contains want.
func (l *lines) wait(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, s := range l.all() {
			if strings.Contains(s, want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no line with %s in:\n%s", want, strings.Join(l.all(), "\n"))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// startSub runs `metrocast sub args` against url until the test ends.
func startSub(t *testing.T, url string, args ...string) (*lines, <-chan error) {
	t.Helper()
	out := &lines{}
	done, finished := make(chan error, 1), make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		done <- subMain(ctx, append([]string{"-url", url}, args...), out, io.Discard)
		close(finished)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-finished:
		case <-time.After(10 * time.Second):
			t.Error("sub did not stop")
		}
	})
	return out, done
}

// cutter forwards TCP connections to a node and cuts them on demand.
type cutter struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func startCutter(t *testing.T, to string) *cutter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln}
	t.Cleanup(func() { _ = ln.Close(); c.cut() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", to)
			if err != nil {
				_ = in.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, in, out)
			c.mu.Unlock()
			go func() { _, _ = io.Copy(out, in); _ = out.Close() }()
			go func() { _, _ = io.Copy(in, out); _ = in.Close() }()
		}
	}()
	return c
}

// cut closes every connection forwarded so far.
func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, nc := range c.conns {
		_ = nc.Close()
	}
	c.conns = nil
}

// dataSeqs returns the seqs of the data_update lines, in order.
func dataSeqs(t *testing.T, ls []string) []uint64 {
	t.Helper()
	var seqs []uint64
	for _, l := range ls {
		var m subMessage
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("sub printed a line that is not JSON: %q", l)
		}
		if m.Type == "data_update" {
			seqs = append(seqs, *m.Seq)
		}
	}
	return seqs
}

// transports are sub's ways to follow: WebSocket, and -sse.
var transports = []struct{ name, flag string }{{"websocket", "-sse=false"}, {"sse", "-sse"}}

// TestSubResumes: sub mints a token with the secret, prints the frames, and
// after its connection is cut resumes after the last seq it printed: the
// frame published while it was away arrives once, nothing twice. Over
// WebSocket and over SSE alike.
func TestSubResumes(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { testSubResumes(t, tr.flag) })
	}
}

func testSubResumes(t *testing.T, transport string) {
	n := startSubNode(t)
	cut := startCutter(t, n.s.Addr().String())
	out, _ := startSub(t, "ws://"+cut.ln.Addr().String()+"/ws", transport, "-auth-hmac-secret-file", n.secret, "nairobi")
	out.wait(t, `"type":"initial_data"`)
	n.publish(t, `{"city":"nairobi","type":"data_update","data":{"pm25":1}}`)
	n.publish(t, `{"city":"nairobi","type":"data_update","data":{"pm25":2}}`)
	out.wait(t, `"seq":2`)
	cut.cut()
	n.publish(t, `{"city":"nairobi","type":"data_update","data":{"pm25":3}}`)
	out.wait(t, `"seq":3`)
	out.wait(t, `{"city":"nairobi","seq":2,"resumed":true}`)
	n.publish(t, `{"city":"nairobi","type":"data_update","data":{"pm25":4}}`)
	out.wait(t, `"seq":4`)
	if got := dataSeqs(t, out.all()); !equalSeqs(got, []uint64{1, 2, 3, 4}) {
		t.Fatalf("data_update seqs %v, want 1 2 3 4 once each:\n%s", got, strings.Join(out.all(), "\n"))
	}
}

func equalSeqs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestSubSinceFilterCount: -since starts after a seq, -filter passes the
// protocol's filter, -count ends sub after that many frames.
func TestSubSinceFilterCount(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { testSubSinceFilterCount(t, tr.flag) })
	}
}

func testSubSinceFilterCount(t *testing.T, transport string) {
	n := startSubNode(t)
	url := "ws://" + n.s.Addr().String() + "/ws"
	n.publish(t, `{"city":"lagos","type":"data_update","data":{"a":1}}`)
	n.publish(t, `{"city":"lagos","type":"alerts","alerts":[{"severity":"info","message":"x"}]}`)
	n.publish(t, `{"city":"lagos","type":"data_update","data":{"a":3}}`)
	n.publish(t, `{"city":"lagos","type":"alerts","alerts":[{"severity":"critical","message":"y"}]}`)

	out, done := startSub(t, url, transport, "-auth-hmac-secret-file", n.secret, "-since", "1",
		"-filter", `{"types":["alerts"]}`, "-count", "3", "lagos")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := out.all()
	want := []string{`"type":"subscribed"`, `"seq":2`, `"seq":4`}
	if len(got) != len(want) {
		t.Fatalf("printed %d lines, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i, w := range want {
		if !strings.Contains(got[i], w) || i > 0 && !strings.Contains(got[i], `"type":"alerts"`) {
			t.Errorf("line %d: %s, want alerts with %s", i+1, got[i], w)
		}
	}
}

// TestSubRefusals: a refusal ends sub with the node's status and code, and
// says where a token comes from.
func TestSubRefusals(t *testing.T) {
	n := startSubNode(t)
	url := "ws://" + n.s.Addr().String() + "/ws"
	f := func(env string, args []string, want ...string) {
		t.Helper()
		if env != "" {
			t.Setenv("METROCAST_TOKEN", env)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := subMain(ctx, append([]string{"-url", url}, args...), io.Discard, io.Discard)
		if err == nil {
			t.Fatalf("sub %v: no error", args)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("sub %v: %v, want it to say %q", args, err, w)
			}
		}
	}
	t.Chdir(t.TempDir()) // no bin/demo-hmac-secret here
	f("", []string{"nairobi"}, "auth_required", "METROCAST_TOKEN")
	f("not.a.token", []string{"nairobi"}, "401 invalid_token", "-token-file")
	other := filepath.Join(t.TempDir(), "other")
	if err := os.WriteFile(other, []byte("another secret of 32 bytes or more"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("METROCAST_TOKEN", "")
	f("", []string{"-auth-hmac-secret-file", other, "nairobi"}, "401 invalid_token")
	f("", []string{"-auth-hmac-secret-file", filepath.Join(t.TempDir(), "missing"), "nairobi"}, "no such file")
	f("", []string{"-filter", "alerts", "nairobi"}, "-filter")
	f("", []string{"-since", "nairobi=3", "nairobi"}, "-since")
	f("", nil, "at least one city")
	f("", []string{"-token", "x", "nairobi"}, "-token-file")
	f("", []string{"-sse", "nairobi"}, "refused the stream: 401 auth_required", "METROCAST_TOKEN")
	f("", []string{"-sse", "-auth-hmac-secret-file", other, "nairobi"}, "refused the stream: 401 invalid_token")
}

// TestSubDefaultURL: sub dials where serve listens with the same
// environment.
func TestSubDefaultURL(t *testing.T) {
	f := func(addr, path, want string) {
		t.Helper()
		t.Setenv("METROCAST_ADDR", addr)
		t.Setenv("METROCAST_PATH", path)
		if got := subDefaultURL(); got != want {
			t.Errorf("METROCAST_ADDR=%q METROCAST_PATH=%q: %s, want %s", addr, path, got, want)
		}
	}
	f("", "", "ws://127.0.0.1:8080/ws")
	f(":9000", "", "ws://127.0.0.1:9000/ws")
	f("0.0.0.0:9000", "/live", "ws://127.0.0.1:9000/live")
	f("10.0.0.5:8080", "", "ws://10.0.0.5:8080/ws")
}
