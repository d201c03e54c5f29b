package producer

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Defaults for the zero values of Options.
const (
	DefaultDialTimeout  = 5 * time.Second
	DefaultAckTimeout   = 10 * time.Second
	DefaultMaxInFlight  = 1024
	DefaultMaxLineBytes = 1 << 20 // the gateway's default ingest line limit
	DefaultReconnectMin = 100 * time.Millisecond
	DefaultReconnectMax = 10 * time.Second
	DefaultRetryTimeout = time.Minute
)

// Options configures a Producer. The zero value is usable: every field says
// what zero means.
type Options struct {
	// DialTimeout bounds each connection attempt (the caller's context may
	// end it sooner). Zero means DefaultDialTimeout.
	DialTimeout time.Duration
	// AckTimeout is how long the gateway may stay silent while messages are
	// in flight. Past it the producer gives up on the connection, closes it
	// and fails every in-flight message with a *MaybeStoredError wrapping
	// ErrAckTimeout; the next send dials again. It also bounds how long a
	// write may block on TCP backpressure and how long Close waits for each
	// answer. Zero means DefaultAckTimeout.
	AckTimeout time.Duration
	// MaxInFlight bounds the messages sent or queued but not yet answered,
	// or waiting to be resent. Send and SendAsync block while it is
	// reached. With MaxLineBytes it bounds the producer's memory: each
	// message in flight keeps its line (to resend it), at most MaxInFlight
	// of them.
	// Zero means DefaultMaxInFlight.
	MaxInFlight int
	// MaxLineBytes is the longest line (without its newline, with the id the
	// producer may insert) a send accepts; set it to the gateway's ingest
	// line limit. Longer lines fail with ErrLineTooLong without being sent.
	// Zero means DefaultMaxLineBytes.
	MaxLineBytes int
	// ReconnectMin and ReconnectMax bound the pause before dialing again
	// after a failed dial or a lost connection. The pause starts at
	// ReconnectMin, doubles with each consecutive failure up to ReconnectMax,
	// and is jittered to a random value between half of it and all of it so
	// that many producers do not redial in step. A connection that received
	// an answer resets the sequence. Zero means DefaultReconnectMin and
	// DefaultReconnectMax (or ReconnectMin, if that is larger).
	ReconnectMin time.Duration
	ReconnectMax time.Duration
	// RetryTimeout is how long a message is resent, with the same id, while
	// the gateway answers it with "retry": the line is fine but the
	// gateway's cluster bus could not store it (NATS down, no stream
	// leader) or did not confirm it in time. The pauses between resends
	// follow ReconnectMin and ReconnectMax. Past RetryTimeout the message
	// fails with the last answer: a *RejectError with Retryable set (known
	// not stored) or a *MaybeStoredError (it may be stored). The messages
	// held behind a resent one (see the package doc) count their
	// RetryTimeout from the moment they are held, and fail as not stored
	// (*RejectError, Retryable, Line 0) when it has passed and the one
	// before them gives up. Zero means DefaultRetryTimeout; a negative
	// value never resends.
	RetryTimeout time.Duration
	// Token, when set, is called before each connection and its result
	// sent as the connection's first line, {"auth":"<token>"}: a gateway
	// whose ingest port is not on loopback requires one, with a "publish"
	// claim naming the cities. Being called per connection, it can hand out
	// a fresh token when the old one expires. An error fails the dial.
	Token func() (string, error)
	// Logger receives connection events (connected, lost, dial failed),
	// never one record per message. Nil discards them.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.DialTimeout == 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.AckTimeout == 0 {
		o.AckTimeout = DefaultAckTimeout
	}
	if o.MaxInFlight == 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.MaxLineBytes == 0 {
		o.MaxLineBytes = DefaultMaxLineBytes
	}
	if o.ReconnectMin == 0 {
		o.ReconnectMin = DefaultReconnectMin
	}
	if o.ReconnectMax == 0 {
		o.ReconnectMax = max(DefaultReconnectMax, o.ReconnectMin)
	}
	if o.RetryTimeout == 0 {
		o.RetryTimeout = DefaultRetryTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// minLineBytes leaves room for the smallest useful line plus an inserted id.
const minLineBytes = 256

// validate checks options that withDefaults has filled in; its errors name
// the field.
func (o Options) validate() error {
	switch {
	case o.DialTimeout < 0:
		return fmt.Errorf("Options.DialTimeout (%s) must be ≥ 0", o.DialTimeout)
	case o.AckTimeout < 0:
		return fmt.Errorf("Options.AckTimeout (%s) must be ≥ 0", o.AckTimeout)
	case o.MaxInFlight < 0:
		return fmt.Errorf("Options.MaxInFlight (%d) must be ≥ 0", o.MaxInFlight)
	case o.MaxLineBytes < minLineBytes:
		return fmt.Errorf("Options.MaxLineBytes (%d) must be ≥ %d", o.MaxLineBytes, minLineBytes)
	case o.ReconnectMin < 0:
		return fmt.Errorf("Options.ReconnectMin (%s) must be ≥ 0", o.ReconnectMin)
	case o.ReconnectMax < o.ReconnectMin:
		return fmt.Errorf("Options.ReconnectMax (%s) must be ≥ Options.ReconnectMin (%s)", o.ReconnectMax, o.ReconnectMin)
	}
	return nil
}

// backoff returns the pause before the next dial after failures consecutive
// failures (≥ 1): ReconnectMin doubled per failure, capped at ReconnectMax,
// then jittered into [d/2, d].
func (o Options) backoff(failures int) time.Duration {
	d := o.ReconnectMin
	for i := 1; i < failures && d < o.ReconnectMax; i++ {
		d *= 2
	}
	d = min(d, o.ReconnectMax)
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}
