package gateway

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// Slow attackers: input that starts and never ends. Each test drives the
// clock through small time-outs; the writer's ticker is the stimulus, the
// server's answers are what the test waits for.

// trickle writes chunks to c, one per tick of every, from a goroutine, until
// all are written or a write fails (the server closed). A nil chunk writes
// nothing on its tick: a pause. The test's cleanup stops it.
func trickle(t testing.TB, c net.Conn, every time.Duration, chunks ...[]byte) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(every)
		defer tk.Stop()
		for _, b := range chunks {
			<-tk.C
			if len(b) == 0 {
				continue
			}
			if _, err := c.Write(b); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		_ = c.Close()
		<-done
	})
}

// bytewise cuts b into chunks of n bytes.
func bytewise(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > n {
		out = append(out, b[:n])
		b = b[n:]
	}
	return append(out, b)
}

// TestFrameTimeoutTrickledFrame: a client that sends a 230-byte text frame a
// byte at a time keeps the idle clock at zero, but its frame is not whole
// within FrameTimeout: closed 1008 and counted as frame_timeout.
func TestFrameTimeoutTrickledFrame(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{FrameTimeout: 300 * time.Millisecond,
		PingInterval: 100 * time.Millisecond, IdleTimeout: 5 * time.Second})
	r := dialUpgraded(t, s)
	frame := text(`{"type":"ping","pad":"` + strings.Repeat("x", 230-len(`{"type":"ping","pad":""}`)) + `"}`)
	// A byte per 50 ms: the frame would be whole after 12 s.
	trickle(t, r.c, 50*time.Millisecond, bytewise(frame, 1)...)
	r.expectClose(t, ws.StatusPolicyViolation)
	waitCloses(t, s, CloseFrameTimeout, 1)
	if n := closes(s, CloseIdle); n != 0 {
		t.Fatalf("Closes[idle] = %d, want 0", n)
	}
}

// TestFrameTimeoutFragmentedMessage: every fragment arrives whole and at
// once, but the message never ends.
func TestFrameTimeoutFragmentedMessage(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{FrameTimeout: 300 * time.Millisecond,
		PingInterval: 100 * time.Millisecond, IdleTimeout: 5 * time.Second})
	r := dialUpgraded(t, s)
	chunks := [][]byte{clientFrame(false, ws.OpText, []byte(`{"type":"ping","pad":"`))}
	for range 200 {
		chunks = append(chunks, clientFrame(false, ws.OpContinuation, []byte("x")))
	}
	trickle(t, r.c, 50*time.Millisecond, chunks...)
	r.expectClose(t, ws.StatusPolicyViolation)
	waitCloses(t, s, CloseFrameTimeout, 1)
}

// TestFrameTimeoutSlowButWhole: frames and fragmented messages that each
// arrive whole within FrameTimeout, written in pieces that straddle them so
// that the server never has an empty buffer, for longer than the time-out
// (the clock starts again with each message): none is closed, every
// message is answered.
func TestFrameTimeoutSlowButWhole(t *testing.T) {
	t.Parallel()
	// Each message takes 150 ms of the 2 s time-out: the writer may be
	// held back by the scheduler for over a second (a loaded machine, the
	// race detector: gaps of 500 ms between its writes were seen) and
	// still finish it in time.
	const timeout = 2 * time.Second
	s := startServer(t, Config{FrameTimeout: timeout,
		PingInterval: 100 * time.Millisecond, IdleTimeout: 5 * time.Second})
	r := dialUpgraded(t, s)
	var stream []byte
	const messages = 32
	for i := range messages {
		if i%2 == 0 {
			stream = append(stream, text(`{"type":"ping"}`)...)
			continue
		}
		stream = append(stream, clientFrame(false, ws.OpText, []byte(`{"type"`))...)
		stream = append(stream, clientFrame(true, ws.OpContinuation, []byte(`:"ping"}`))...)
	}
	// 7 bytes a tick: a 21-byte frame or a 29-byte fragmented message
	// takes at most 5 ticks, 150 ms; the 32 messages about 3.5 s.
	trickle(t, r.c, 30*time.Millisecond, bytewise(stream, 7)...)
	for i := range messages {
		f := r.frame(t)
		switch {
		case f.Header.OpCode == ws.OpPing:
			i-- // the server's heartbeat: not an answer
		case f.Header.OpCode != ws.OpText || !bytes.Contains(f.Payload, []byte(`"pong"`)):
			t.Fatalf("message %d: got opcode %d %q, want a pong", i, f.Header.OpCode, f.Payload)
		}
	}
	if n := closes(s, CloseFrameTimeout); n != 0 {
		t.Fatalf("Closes[frame_timeout] = %d, want 0", n)
	}
	if st := s.Stats(); st.Connections != 1 {
		t.Fatalf("Connections = %d, want 1", st.Connections)
	}
}

// TestFrameTimeoutStalledLoop: the rest of a frame that arrives in time,
// while the loop is stalled past FrameTimeout, is the client's answer, not
// a time-out: after the stall, housekeeping runs before the loop reads it.
func TestFrameTimeoutStalledLoop(t *testing.T) {
	t.Parallel()
	// The frame's clock runs from its start, before the stall: the test
	// has the time-out to begin the stall, however loaded the machine.
	const timeout = 2 * time.Second
	s := startServer(t, Config{Loops: 1, FrameTimeout: timeout,
		PingInterval: 100 * time.Millisecond, IdleTimeout: 5 * time.Second})
	r := dialUpgraded(t, s)
	pong := func() {
		t.Helper()
		for {
			f := r.frame(t)
			if f.Header.OpCode == ws.OpPing {
				continue // the server's heartbeat
			}
			if f.Header.OpCode != ws.OpText || !bytes.Contains(f.Payload, []byte(`"pong"`)) {
				t.Fatalf("got opcode %d %q, want a pong", f.Header.OpCode, f.Payload)
			}
			return
		}
	}
	// A message and the start of the next, in one write: once the first
	// is answered, the loop has read the start and the frame's clock runs.
	ping := text(`{"type":"ping"}`)
	r.write(t, append(slices.Clone(ping), ping[:8]...))
	pong()
	release := stallLoop(t, s)
	r.write(t, ping[8:])
	// The stall, the stimulus: twice the time-out.
	time.Sleep(2 * timeout)
	release()
	pong()
	if n := closes(s, CloseFrameTimeout); n != 0 {
		t.Fatalf("Closes[frame_timeout] = %d, want 0", n)
	}
}

// TestIngestLineTimeout: a producer that trickles a line that never ends
// is answered and disconnected after IngestLineTimeout; one that pauses
// between lines, or sends a line in pieces within the bound, is not.
func TestIngestLineTimeout(t *testing.T) {
	t.Parallel()
	// A line in two pieces 100 ms apart within a 1 s bound: the writer may
	// be held back by the scheduler for most of a second (a loaded machine,
	// the race detector) and still finish it in time.
	const timeout = time.Second
	s := startServer(t, Config{IngestLineTimeout: timeout})

	// A line in two pieces, then a pause longer than the bound (12
	// ticks, 1.2 s) before the next line.
	p := dialProducer(t, s)
	first, second := dataLine("lt", "data_update", `{"n":1}`)+"\n", dataLine("lt", "data_update", `{"n":2}`)+"\n"
	pieces := [][]byte{[]byte(first[:10]), []byte(first[10:])}
	pieces = append(pieces, make([][]byte, 12)...)
	trickle(t, p.C, 100*time.Millisecond, append(pieces, []byte(second))...)
	for range 2 {
		if a := p.Answer(t); a.Ack == "" {
			t.Fatalf("got %+v, want an ack", a)
		}
	}

	// A line a byte at a time, 50 ms apart: whole after 30 s.
	p = dialProducer(t, s)
	p.Write(t, dataLine("lt", "data_update", `{"n":3}`))
	if a := p.Answer(t); a.Ack == "" {
		t.Fatalf("got %+v, want an ack", a)
	}
	slow := dataLine("lt", "data_update", `{"pad":"`+strings.Repeat("x", 500)+`"}`) + "\n"
	trickle(t, p.C, 50*time.Millisecond, bytewise([]byte(slow), 1)...)
	expectDropped(t, p, "not complete within")
	if st := s.Stats(); st.IngestTimeouts != 1 || st.IngestFrames != 3 {
		t.Fatalf("IngestTimeouts %d IngestFrames %d, want 1 and 3", st.IngestTimeouts, st.IngestFrames)
	}
}

// TestHTTPPublishLineTimeout: the same bound for a body trickled to POST
// /api/publish: 408, with the answers to the lines before it.
func TestHTTPPublishLineTimeout(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{IngestLineTimeout: 300 * time.Millisecond})
	// The request by hand: Go's client may report the write that meets
	// the closed connection instead of the response that came before it.
	c, err := net.Dial("tcp", s.AdminAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	chunk := func(b string) []byte { return fmt.Appendf(nil, "%x\r\n%s\r\n", len(b), b) }
	req := append([]byte("POST /api/publish HTTP/1.1\r\nHost: metrocast\r\n"+
		"Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"),
		chunk(`{"id":"h1","city":"hlt","type":"data_update","data":{}}`+"\n")...)
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	// Then a byte every 50 ms: whole after 30 s, if ever.
	x := make([][]byte, 600)
	for i := range x {
		x[i] = chunk("x")
	}
	trickle(t, c, 50*time.Millisecond, x...)
	_ = c.SetReadDeadline(time.Now().Add(readTimeout))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if code := resp.StatusCode; code != http.StatusRequestTimeout {
		t.Fatalf("status %d %q, want 408", code, body)
	}
	if !strings.HasPrefix(string(body), `{"ack":"h1","seq":1}`+"\n") || !strings.Contains(string(body), "not complete within") {
		t.Fatalf("answers %q", body)
	}
	if st := s.Stats(); st.IngestTimeouts != 1 {
		t.Fatalf("IngestTimeouts %d, want 1", st.IngestTimeouts)
	}
}
