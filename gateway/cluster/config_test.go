package cluster

import (
	"strings"
	"testing"
	"time"
)

// TestConfigValidate checks that each error names its key (the nats_* keys
// of the config file), the value and the allowed range; that every error
// is reported, not just the first; and that New refuses what Validate
// does, and a bus without NATS servers.
func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		set  func(*Config)
		want []string
	}{
		{func(*Config) {}, nil},
		{func(c *Config) { c.Stream = "a.b" }, []string{`nats_stream ("a.b") must be 1-64 of A-Z a-z 0-9 - _`}},
		{func(c *Config) { c.Stream = strings.Repeat("s", 65) }, []string{"nats_stream"}},
		{func(c *Config) { c.Replicas = 7 }, []string{"nats_replicas (7) must be in [1, 5]"}},
		{func(c *Config) { c.MaxAge = time.Second }, []string{"nats_max_age (1s) must be ≥ 1m"}},
		{func(c *Config) { c.MaxBytes = 1 << 10 }, []string{"nats_max_bytes (1024) must be ≥ 1048576"}},
		{func(c *Config) { c.Replay = 48 * time.Hour }, []string{"nats_replay (48h0m0s) must be in [0s, nats_max_age]"}},
		{func(c *Config) { c.ResumeMax = -1 }, []string{"nats_resume_max (-1) must be in [1, 1000000]"}},
		{func(c *Config) { c.PresenceTTL = time.Hour }, []string{"nats_presence_ttl (1h0m0s) must be in [1s, 10m]"}},
		{func(c *Config) { c.Stream = "-_Az09" }, nil},
		{func(c *Config) { c.Replicas, c.MaxAge = 6, time.Second },
			[]string{"nats_replicas (6)", "nats_max_age (1s)"}},
	} {
		c := Config{URL: "nats://127.0.0.1:4222"}
		tc.set(&c)
		c = c.WithDefaults()
		err := c.Validate()
		if len(tc.want) == 0 {
			if err != nil {
				t.Errorf("%+v: unexpected error: %s", c, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%+v: no error, want %q", c, tc.want)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not contain %q", err, w)
			}
		}
		if _, nerr := New(c); nerr == nil || nerr.Error() != err.Error() {
			t.Errorf("New: %v, want %v", nerr, err)
		}
	}
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "nats_url") {
		t.Errorf("New without a URL: %v, want an error naming nats_url", err)
	}
}
