package main

import (
	"bytes"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

func TestNextFrame(t *testing.T) {
	f := func(in []byte, op ws.OpCode, payload string, n int, wantErr string) {
		t.Helper()
		gotOp, gotPayload, gotN, err := nextFrame(in)
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Errorf("nextFrame(% x): err %v, want %q", in, err, wantErr)
			}
			return
		}
		if err != nil || gotN != n || gotN > 0 && (gotOp != op || string(gotPayload) != payload) {
			t.Errorf("nextFrame(% x) = %v %q %d %v; want %v %q %d", in, gotOp, gotPayload, gotN, err, op, payload, n)
		}
	}
	long := strings.Repeat("x", 300)
	f(nil, 0, "", 0, "")
	f([]byte{0x81}, 0, "", 0, "")                                    // half a header
	f([]byte{0x81, 3, 'a', 'b'}, 0, "", 0, "")                       // half a payload
	f([]byte{0x81, 3, 'a', 'b', 'c', 0x81}, ws.OpText, "abc", 5, "") // one whole, the next begun
	f([]byte{0x89, 0}, ws.OpPing, "", 2, "")
	f(append([]byte{0x81, 126, 1, 44}, long...), ws.OpText, long, 304, "")
	f([]byte{0x81, 126, 1}, 0, "", 0, "")                         // half a 16-bit length
	f([]byte{0x82, 127, 0, 0, 0, 0, 0, 0, 0}, 0, "", 0, "")       // half a 64-bit length
	f([]byte{0x82, 127, 0, 0, 0, 0, 0, 0, 0, 3, 1}, 0, "", 0, "") // 64-bit length, payload short
	// Malformed: a masked frame from a server, a frame over the bound.
	f([]byte{0x81, 0x83, 1, 2, 3, 4, 'a', 'b', 'c'}, 0, "", 0, "masked")
	f([]byte{0x82, 127, 0, 0, 0, 0, 0x10, 0, 0, 0}, 0, "", 0, "frame of")
}

// FuzzNextFrame feeds a stream in two reads, split at a fuzzed offset, the
// way the poller keeps a frame that is not whole: the frames must be the
// ones parsing the stream at once gives, and nothing may panic.
func FuzzNextFrame(f *testing.F) {
	f.Add([]byte{0x81, 3, 'a', 'b', 'c', 0x89, 0}, 4)
	f.Add(append([]byte{0x81, 126, 0, 200}, bytes.Repeat([]byte("y"), 200)...), 3)
	f.Add([]byte{0x82, 127, 0, 0, 0, 0, 0, 0, 0, 1, 'z'}, 9)
	f.Fuzz(func(t *testing.T, stream []byte, split int) {
		whole := parseAll(stream)
		if split < 0 || split > len(stream) {
			split = len(stream) / 2
		}
		var pend []byte
		var got []string
		for _, part := range [][]byte{stream[:split], stream[split:]} {
			pend = append(pend, part...)
			frames, used, err := parseSome(pend)
			got = append(got, frames...)
			if err != nil {
				got = append(got, "error")
				break
			}
			pend = pend[:copy(pend, pend[used:])]
		}
		if fmt.Sprint(got) != fmt.Sprint(whole) {
			t.Errorf("split at %d: %q, at once: %q", split, got, whole)
		}
	})
}

func parseSome(b []byte) (frames []string, used int, err error) {
	for {
		op, payload, n, err := nextFrame(b[used:])
		if err != nil || n == 0 {
			return frames, used, err
		}
		frames = append(frames, fmt.Sprintf("%d:%s", op, payload))
		used += n
	}
}

func parseAll(b []byte) []string {
	frames, _, err := parseSome(b)
	if err != nil {
		frames = append(frames, "error")
	}
	return frames
}

// pingFirstNode upgrades each connection and sends a ping; only after the
// client's pong does it send subscribed and initial_data. silent makes it
// send nothing after the upgrade.
func pingFirstNode(t *testing.T, silent bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				var city string
				u := ws.Upgrader{OnRequest: func(uri []byte) error {
					q, err := url.Parse(string(uri))
					if err == nil {
						city = q.Query().Get("cities")
					}
					return err
				}}
				if _, err := u.Upgrade(c); err != nil {
					return
				}
				if silent {
					_, _ = c.Read(make([]byte, 1)) // until the client leaves
					return
				}
				_ = ws.WriteFrame(c, ws.NewPingFrame([]byte("hi")))
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				fr, err := ws.ReadFrame(c)
				if err != nil || fr.Header.OpCode != ws.OpPong || string(ws.UnmaskFrame(fr).Payload) != "hi" {
					return // no pong: the client never gets ready
				}
				_ = ws.WriteFrame(c, ws.NewTextFrame([]byte(fmt.Sprintf(
					`{"type":"subscribed","epoch":1,"cities":[{"city":%q,"seq":0,"resumed":false}]}`, city))))
				_ = ws.WriteFrame(c, ws.NewTextFrame([]byte(fmt.Sprintf(
					`{"type":"initial_data","city":%q,"seq":0,"epoch":1,"resumed":false,"timestamp":0,"data":{}}`, city))))
				_, _ = c.Read(make([]byte, 1))
			})
		}
	})
	return ln.Addr().String()
}

// TestPollerAnswersPings: the poller answers a ping with its payload
// before the subscription is answered.
func TestPollerAnswersPings(t *testing.T) {
	o := smoke(t, "idle")
	o.Addr = pingFirstNode(t, false)
	o.Conns, o.Duration = 20, 10*time.Millisecond
	res := runScenario(t, o)
	mustPass(t, res, "every connection up", "no connection dropped")
}

// TestPollerConnectTimeout: a node that upgrades and then says nothing
// fails every connection at -connect-timeout, with the reason.
func TestPollerConnectTimeout(t *testing.T) {
	o := smoke(t, "idle")
	o.Addr = pingFirstNode(t, true)
	o.Conns, o.ConnectTimeout = 10, 300*time.Millisecond
	w, err := newWorker(spec{Opts: *o, Lo: 0, Hi: o.Conns, Limit: int64(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	defer w.closeAll()
	if _, err := w.handle(command{Op: "dial"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for w.dialing.Load() || w.failed.Load() < int64(o.Conns) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d failed after 30s; want all at the time-out", w.failed.Load(), o.Conns)
		}
		time.Sleep(10 * time.Millisecond)
	}
	w.closeAll()
	if e := w.report().Errors["connect"]; e.Count != 10 || !strings.Contains(e.Example, "no answer to the subscription within 300ms") {
		t.Errorf("connect errors %+v: want 10 time-outs", e)
	}
}
