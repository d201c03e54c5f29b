package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// TestShutdown checks that a drain with no window closes every client with
// a reconnect hint and 1001 (a handshake in progress just closes), answers
// the lines producers sent before closing them, and refuses new
// connections.
func TestShutdown(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	var clients []client
	for _, d := range dialers {
		c := d.dial(t, wsURL(s, "cities=sd"))
		readType(t, c, "subscribed")
		readType(t, c, "initial_data")
		clients = append(clients, c)
	}
	raw := dialUpgraded(t, s)
	half := dialRaw(t, s)
	half.write(t, []byte("GET /ws HTTP/1.1\r\n"))
	waitFor(t, readTimeout, func() bool { return s.Stats().Connections == 4 })

	busy := dialProducer(t, s)
	const lines = 5
	for i := range lines {
		busy.Write(t, fmt.Sprintf(`{"id":"s%d","city":"sd","type":"data_update","data":{"n":%d}}`, i, i))
	}
	idle := dialProducer(t, s)
	waitFor(t, readTimeout, func() bool {
		st := s.Stats()
		return st.IngestFrames == lines && st.IngestConns == 2
	})

	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	if err := s.Drain(ctx, 0); err != nil {
		t.Fatalf("Drain: %s", err)
	}

	for i, c := range clients {
		// Frames published before the shutdown may come first, in order,
		// then the reconnect hint.
		var last uint64
		hinted := false
		for {
			b, err := c.Next(readTimeout)
			var ce *closedError
			if errors.As(err, &ce) {
				if ce.Code != ws.StatusGoingAway || !hinted {
					t.Errorf("%s: closed with %d %q (hint sent: %v), want a hint then 1001", dialers[i].name, ce.Code, ce.Reason, hinted)
				}
				break
			}
			if err != nil {
				t.Fatalf("%s: read failed before a close frame: %s", dialers[i].name, err)
			}
			m, err := parseMsg(b)
			switch {
			case err == nil && !hinted && m.Type == "data_update" && m.Seq == last+1:
				last++
			case err == nil && !hinted && m.Type == "reconnect":
				hinted = true
			default:
				t.Fatalf("%s: got %s after seq %d (hint sent: %v)", dialers[i].name, b, last, hinted)
			}
		}
	}
	raw.expectClose(t, ws.StatusGoingAway)
	half.expectEOF(t)

	for i := range lines {
		if a := busy.Answer(t); a.Ack != fmt.Sprintf("s%d", i) || a.Seq != uint64(i+1) {
			t.Errorf("answer %d: %+v, want the ack of s%d", i, a, i)
		}
	}
	for _, p := range []*producer{busy, idle} {
		if _, err := p.Next(readTimeout); !errors.Is(err, io.EOF) {
			t.Errorf("producer: %v, want EOF after its answers", err)
		}
	}

	st := s.Stats()
	if n := st.Closes[CloseShutdown.String()]; n != 4 || st.Connections != 0 {
		t.Errorf("Closes[shutdown] = %d, Connections = %d; want 4, 0", n, st.Connections)
	}
	if st.IngestConns != 0 {
		t.Errorf("IngestConns = %d, want 0", st.IngestConns)
	}
	for _, addr := range []net.Addr{s.Addr(), s.IngestAddr()} {
		if c, err := net.DialTimeout("tcp", addr.String(), time.Second); err == nil {
			_ = c.SetReadDeadline(time.Now().Add(readTimeout))
			_, err := c.Read(make([]byte, 1))
			c.Close()
			if err == nil {
				t.Errorf("%s still serves after Shutdown", addr)
			}
		}
	}
	if err := s.Shutdown(context.Background()); err == nil {
		t.Errorf("Shutdown after Drain returned nil, want an error")
	}
}

// TestRestartOnSamePort: a node that drained its clients can be started
// again on the same address at once, as a restart does. The node closes
// first, so the client's socket sits in TIME_WAIT on the node's port, which
// a listener without SO_REUSEADDR cannot bind for a minute.
func TestRestartOnSamePort(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	raw := dialUpgraded(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	if err := s.Drain(ctx, 0); err != nil {
		t.Fatalf("Drain: %s", err)
	}
	raw.expectClose(t, ws.StatusGoingAway)
	raw.expectEOF(t)
	_ = raw.c.Close()

	cfg := s.cfg
	cfg.Addr = s.Addr().String()
	next, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := next.Start(); err != nil {
		t.Fatalf("restart on %s: %s", cfg.Addr, err)
	}
	t.Cleanup(func() { _ = next.Drain(context.Background(), 0) })
	c := dialGorilla(t, wsURL(next, "cities=rs"))
	readType(t, c, "subscribed")
}
