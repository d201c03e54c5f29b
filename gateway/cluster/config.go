package cluster

import (
	"errors"
	"fmt"
	"time"
)

// Config is cluster mode's configuration, the nats_* keys: the NATS
// servers, and the JetStream stream every node shares. Zero fields take
// the default named in their comment (see WithDefaults); Validate names
// the offending key.
type Config struct {
	// URL names the NATS servers (comma-separated nats:// or tls:// URLs)
	// whose JetStream carries every node's frames (nats_url). Empty: no
	// cluster; cmd/metrocast then runs the node alone.
	URL string
	// Stream names the JetStream stream. Default "metrocast".
	Stream string
	// Replicas is the stream's replica count (the NATS cluster must have
	// that many servers). Default 1.
	Replicas int
	// MaxAge is how long the stream keeps frames: the longest a client can
	// be away and still resume. Default 24h.
	MaxAge time.Duration
	// MaxBytes bounds the stream's size; the oldest frames go first.
	// Default 1 GiB.
	MaxBytes int64
	// Replay is how far back a starting node reads the stream to rebuild
	// its cities' state and rings. Zero: only new frames.
	Replay time.Duration
	// ResumeMax bounds the frames one resume request is served from the
	// stream; past it the client gets initial_data. Default 10,000.
	ResumeMax int
	// PresenceTTL is how long a node's watchers count on the other nodes
	// without a refresh (a node refreshes every third of it): how long a
	// crashed node's watchers linger. Default 15s.
	PresenceTTL time.Duration
	// Creds is a NATS credentials file (JWT and NKey). Empty: none.
	Creds string
	// TLSCA is a CA file to verify the NATS servers' certificates (tls://
	// URLs). Empty: the system's roots.
	TLSCA string
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Stream == "" {
		c.Stream = "metrocast"
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.MaxAge == 0 {
		c.MaxAge = 24 * time.Hour
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 1 << 30
	}
	if c.ResumeMax == 0 {
		c.ResumeMax = 10_000
	}
	if c.PresenceTTL == 0 {
		c.PresenceTTL = 15 * time.Second
	}
	return c
}

// Validate reports every out-of-range setting, by its config key.
func (c *Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(validStreamName(c.Stream), "nats_stream (%q) must be 1-64 of A-Z a-z 0-9 - _", c.Stream)
	check(c.Replicas >= 1 && c.Replicas <= 5, "nats_replicas (%d) must be in [1, 5]", c.Replicas)
	check(c.MaxAge >= time.Minute, "nats_max_age (%s) must be ≥ 1m", c.MaxAge)
	check(c.MaxBytes >= 1<<20, "nats_max_bytes (%d) must be ≥ 1048576", c.MaxBytes)
	check(c.Replay >= 0 && c.Replay <= c.MaxAge, "nats_replay (%s) must be in [0s, nats_max_age]", c.Replay)
	check(c.ResumeMax >= 1 && c.ResumeMax <= 1_000_000, "nats_resume_max (%d) must be in [1, 1000000]", c.ResumeMax)
	check(c.PresenceTTL >= time.Second && c.PresenceTTL <= 10*time.Minute, "nats_presence_ttl (%s) must be in [1s, 10m]", c.PresenceTTL)
	return errors.Join(errs...)
}

// validStreamName reports whether name is a JetStream stream name this
// node accepts: a plain token, so that it never needs quoting.
func validStreamName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}
