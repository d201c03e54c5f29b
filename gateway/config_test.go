package gateway

import (
	"strings"
	"testing"
	"time"
)

// TestConfigValidate checks that each error names its key, the value and
// the allowed range, and that every error is reported, not just the first.
func TestConfigValidate(t *testing.T) {
	f := func(mod func(*Config), want ...string) {
		t.Helper()
		c := Config{Insecure: true}.WithDefaults()
		mod(&c)
		err := c.Validate()
		if len(want) == 0 {
			if err != nil {
				t.Fatalf("unexpected error: %s", err)
			}
			return
		}
		if err == nil {
			t.Fatalf("no error, want %q", want)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("error %q does not contain %q", err, w)
			}
		}
	}
	f(func(*Config) {})
	f(func(c *Config) { c.RingSize = 1 }, "ring_size (1) must be in [2, 1048576]")
	f(func(c *Config) { c.Path = "ws" }, `path ("ws") must start with /`)
	f(func(c *Config) { c.Path = "/sse" }, `path ("/sse") is taken by Server-Sent Events`)
	f(func(c *Config) { c.Path = "/history" }, `path ("/history") is taken`)
	f(func(c *Config) { c.IdleTimeout = c.PingInterval }, "idle_timeout (25s) must be > ping_interval (25s)")
	f(func(c *Config) { c.IdleTimeout = 25 * time.Hour }, "idle_timeout (25h0m0s) must be ≤ 24h")
	f(func(c *Config) { c.DrainWindow = 2 * time.Hour }, "drain_window (2h0m0s) must be in (0s, 1h]")
	f(func(c *Config) { c.MaxHeaderBytes, c.Loops = 10, 1000 },
		"max_header_bytes (10) must be in [1024, 1048576]", "loops (1000) must be in [1, 256]")
}
