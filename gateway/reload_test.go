package gateway

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
)

// loopsSee reports whether every loop's settings satisfy fn, asking each
// loop (its cfg is loop-owned).
func loopsSee(s *Server, fn func(*Config) bool) bool {
	for _, l := range *s.loops.Load() {
		got := make(chan bool, 1)
		err := l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			got <- fn(l.cfg)
			return nil
		}))
		if err != nil {
			return false
		}
		select {
		case ok := <-got:
			if !ok {
				return false
			}
		case <-time.After(readTimeout):
			return false
		}
	}
	return true
}

// TestReload changes a live limit on a running server: the connections
// already open follow the new limit; a bad configuration changes nothing;
// settings that take a restart are left alone.
func TestReload(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{RingSize: 64})
	c := dialGorilla(t, wsURL(s, ""))
	for range 2 {
		send(t, c, `{"type":"nope"}`)
		readType(t, c, "error")
	}

	err := s.Reload(Config{MaxClientErrors: 3, PingInterval: time.Minute, IdleTimeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "idle_timeout (1s) must be > ping_interval (1m0s)") {
		t.Fatalf("Reload of a bad config: %v, want the idle_timeout error", err)
	}
	if got := s.live.Load().MaxClientErrors; got != 10 {
		t.Fatalf("a failed Reload changed max_client_errors to %d", got)
	}

	if err := s.Reload(Config{MaxClientErrors: 3, RingSize: 2}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, readTimeout, func() bool { return loopsSee(s, func(c *Config) bool { return c.MaxClientErrors == 3 }) })
	if live := s.live.Load(); live.RingSize != 64 || s.cfg.RingSize != 64 {
		t.Errorf("ring_size became %d: it takes a restart", live.RingSize)
	}
	send(t, c, `{"type":"nope"}`)
	readType(t, c, "error")
	expectClose(t, c, ws.StatusPolicyViolation)
}

// TestLiveKeys checks that each live key is a key Validate knows, and that
// each names a distinct setting.
func TestLiveKeys(t *testing.T) {
	keys := LiveKeys()
	if len(slices.Compact(slices.Sorted(slices.Values(keys)))) != len(keys) {
		t.Fatalf("duplicate live keys: %v", keys)
	}
	// Every setting at an invalid value: Validate names every key.
	bad := Config{Path: "x", Loops: -1, MaxHeaderBytes: -1, MaxMessageBytes: -1, MaxSubscriptions: -1,
		MaxCities: -1, MaxClientErrors: -1, RingSize: -1, RingBytes: -1, RecentAlerts: -1,
		MaxBacklogBytes: -1, SlowTimeout: -1, SocketSendBuffer: -1, PingInterval: -1, IdleTimeout: -1,
		HandshakeTimeout: -1, IngestMaxLineBytes: -1, IngestMaxConns: -1, IngestWriteTimeout: -1, DrainWindow: -1}
	msg := bad.Validate().Error()
	for _, k := range keys {
		if !strings.Contains(msg, k+" (") {
			t.Errorf("live key %s is not a key Validate names", k)
		}
	}
}
