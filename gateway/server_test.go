package gateway

import (
	"context"
	"strings"
	"testing"

	"github.com/panjf2000/gnet/v2"
)

// TestLoopsShareThePort: every loop accepts connections on the one port
// (SO_REUSEPORT), a port of 0 included, and a second node cannot take a
// port a node listens on.
func TestLoopsShareThePort(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{Loops: 2})
	var conns []*rawConn
	for range 64 {
		r := dialRaw(t, s)
		r.upgrade(t, "/ws")
		conns = append(conns, r)
	}
	for _, l := range *s.loops.Load() {
		got := make(chan int, 1)
		err := l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			got <- l.nconns
			return nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		if n := <-got; n == 0 || n == len(conns) {
			t.Errorf("loop %d holds %d of %d connections, want a share", l.idx, n, len(conns))
		}
	}
	if len(*s.loops.Load()) != 2 {
		t.Fatalf("%d loops took connections, want 2", len(*s.loops.Load()))
	}

	cfg := Config{Addr: s.Addr().String(), Insecure: true}.WithDefaults()
	cfg.IngestAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	other, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Start(); err == nil || !strings.Contains(err.Error(), "address already in use") {
		if err == nil {
			_ = other.Drain(context.Background(), 0)
		}
		t.Fatalf("a second node on %s: %v, want address already in use", s.Addr(), err)
	}
}
