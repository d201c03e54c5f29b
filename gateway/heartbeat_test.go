package gateway

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// TestIdleClientIsPingedThenClosed checks that the server pings a client that
// sends nothing and closes it with 1001 after IdleTimeout, when it never
// answers.
func TestIdleClientIsPingedThenClosed(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{PingInterval: 100 * time.Millisecond, IdleTimeout: 300 * time.Millisecond})

	// gobwas at the frame level: it answers nothing by itself.
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	c, br, _, err := ws.Dial(ctx, wsURL(s, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if br == nil {
		br = bufio.NewReader(c)
	}
	_ = c.SetReadDeadline(time.Now().Add(readTimeout))
	pings := 0
	for {
		f, err := ws.ReadFrame(br)
		if err != nil {
			t.Fatalf("after %d pings: %s", pings, err)
		}
		if f.Header.OpCode == ws.OpPing {
			if len(f.Payload) != 0 || f.Header.Masked {
				t.Fatalf("ping with payload %q masked %v", f.Payload, f.Header.Masked)
			}
			pings++
			continue
		}
		if f.Header.OpCode != ws.OpClose {
			t.Fatalf("got a frame of opcode %d (%q), want pings then a close", f.Header.OpCode, f.Payload)
		}
		if code := ws.StatusCode(binary.BigEndian.Uint16(f.Payload)); code != ws.StatusGoingAway {
			t.Fatalf("closed with %d, want 1001", code)
		}
		break
	}
	if pings == 0 {
		t.Fatal("closed for idleness without a ping first")
	}
	waitCloses(t, s, CloseIdle, 1)
}

// TestPongKeepsClientAlive checks that clients answering the server's pings
// are not closed, whatever their library; and that pongs count as traffic.
func TestPongKeepsClientAlive(t *testing.T) {
	t.Parallel()
	const idle = 300 * time.Millisecond
	s := startServer(t, Config{PingInterval: 50 * time.Millisecond, IdleTimeout: idle})
	var clients []client
	for _, d := range dialers {
		clients = append(clients, d.dial(t, wsURL(s, "cities=alive")))
	}
	// Both libraries answer pings while they read. Reading for three idle
	// time-outs must end in the read deadline, not a close.
	errs := make([]error, len(clients))
	done := make(chan int)
	for i, c := range clients {
		go func() {
			defer func() { done <- i }()
			for {
				b, err := c.next(3 * idle)
				if err != nil {
					errs[i] = err
					return
				}
				if m, err := parseMsg(b); err != nil || (m.Type != "subscribed" && m.Type != "initial_data") {
					errs[i] = errors.New("unexpected message " + string(b))
					return
				}
			}
		}()
	}
	for range clients {
		<-done
	}
	for i, err := range errs {
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("%s: %v, want only the read deadline", dialers[i].name, err)
		}
	}
	if n := closes(s, CloseIdle); n != 0 {
		t.Fatalf("Closes[idle] = %d, want 0", n)
	}
	if st := s.Stats(); st.Connections != int64(len(clients)) {
		t.Fatalf("Connections = %d, want %d", st.Connections, len(clients))
	}
}

// TestPongFramesResetIdle answers pings from a raw client: it is not closed,
// and once it stops answering it is.
func TestPongFramesResetIdle(t *testing.T) {
	t.Parallel()
	const idle = 300 * time.Millisecond
	s := startServer(t, Config{PingInterval: 50 * time.Millisecond, IdleTimeout: idle})
	r := dialUpgraded(t, s)
	start := time.Now()
	pings := 0
	for time.Since(start) < 2*idle {
		f := r.frame(t)
		if f.Header.OpCode != ws.OpPing {
			t.Fatalf("got a frame of opcode %d (%q) after %s, want pings", f.Header.OpCode, f.Payload, time.Since(start))
		}
		pings++
		r.write(t, clientFrame(true, ws.OpPong, nil))
	}
	if pings < 2 {
		t.Fatalf("%d pings in %s, want several", pings, 2*idle)
	}
	// Stop answering.
	r.expectClose(t, ws.StatusGoingAway)
	waitCloses(t, s, CloseIdle, 1)
}
