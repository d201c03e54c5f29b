// Package producer is the Go client for the metrocast ingest port, for
// upstream processors that push city frames to a gateway.
//
// A Producer holds one TCP connection and writes one JSON object per line:
//
//	{"city":"nairobi","type":"data_update","data":{...}}
//	{"city":"nairobi","type":"alerts","alerts":[{"severity":"critical","message":"..."}]}
//	{"city":"nairobi","type":"snapshot","data":{...}}
//
// The gateway answers a line that has an "id" with {"ack":"<id>","seq":N}
// once it is stored, and a malformed line with {"error":"...","line":N},
// always in line order. The producer gives every line an id (it inserts a
// generated one when the line has none), so every line is answered and
// answers are matched to messages by position on one reader goroutine.
//
// Send waits for the answer; SendAsync only queues the line and calls back,
// so a high-rate producer pipelines up to Options.MaxInFlight messages on the
// one connection. When the connection fails, messages not yet answered fail
// with a *MaybeStoredError: the gateway may or may not have stored them, and
// the caller decides whether to resend them with the same id; when the
// gateway refuses the connection (a bad token, say) they fail with a
// *RefusedError: not stored. The next send dials again, after a jittered
// backoff.
//
// A line the gateway answers with "retry" was fine, but the gateway's
// cluster bus could not store it, or did not confirm it: the producer
// resends it with the same id (which the gateway stores once), on the same
// connection, backing off, for up to Options.RetryTimeout, and the caller
// sees only the final answer. Meanwhile the connection holds back the
// messages sent after it, so that the gateway stores them in the order they
// were sent: the oldest is resent alone until it is stored, then the rest
// follow (those already in flight when the first "retry" came are answered
// as they come; one the gateway stored then is stored before the resent
// one). A message held for Options.RetryTimeout fails, not stored, when the
// one it waits behind gives up.
//
// Everything is bounded: lines (Options.MaxLineBytes), messages in flight
// (Options.MaxInFlight; sends block past it) and answer lines. A Producer
// runs two goroutines per connection and none per message.
package producer

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Producer sends messages to one gateway ingest address.
//
// All methods are safe for concurrent use by multiple goroutines. Lines are
// written in the order their sends enqueued them, and callbacks run in that
// order too, across reconnects: the messages of a failed connection are all
// failed before the next connection carries a line. The exception is a
// message the gateway answered "retry": its callback runs once it is
// resent and answered, after those of the messages that were already in
// flight behind it (those sent later wait for it, see the package doc).
type Producer struct {
	addr     string
	opts     Options
	log      *slog.Logger
	idPrefix string
	idSeq    atomic.Uint64

	slots     chan struct{} // one token per message in flight; cap MaxInFlight
	closing   chan struct{} // closed by Close
	dialing   chan struct{} // cap 1: held by the one sender that dials
	wg        sync.WaitGroup
	closeOnce sync.Once

	mu       sync.Mutex // guards the fields below
	cur      *conn      // the connection new lines go to; nil after a loss
	lost     *conn      // the last connection that failed
	closed   bool
	conns    uint64    // connections made so far
	failures int       // consecutive failed dials and losses without an answer
	retryAt  time.Time // no dial before this
}

// Dial connects to the gateway's ingest port at addr (host:port) and returns
// a Producer. It makes one attempt, bounded by ctx and Options.DialTimeout,
// so that a wrong address fails at start-up; later sends redial on their own.
// ctx is not retained.
func Dial(ctx context.Context, addr string, opts Options) (*Producer, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("invalid producer options: %w", err)
	}
	p := &Producer{
		addr: addr,
		opts: opts,
		log:  opts.Logger,
		// 60 random bits: ids from different producers (or restarts of
		// one) do not collide.
		idPrefix: rand.Text()[:12],
		slots:    make(chan struct{}, opts.MaxInFlight),
		closing:  make(chan struct{}),
		dialing:  make(chan struct{}, 1),
	}
	if _, err := p.connect(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// Send sends one message and waits for the gateway's answer. line is one
// JSON object (surrounding whitespace and a trailing newline are ignored);
// when it has no "id" the producer inserts a generated one. Send returns the
// seq the gateway stored the message under, or:
//   - an error wrapping ErrInvalidLine or ErrLineTooLong: nothing was sent;
//   - *RejectError: the gateway refused the line (Retryable: its cluster
//     bus could not store it, for Options.RetryTimeout of resends);
//   - *RefusedError: the gateway refused the connection (a bad token, too
//     many producers): the line was not stored;
//   - *MaybeStoredError: the connection failed, the ack timed out, ctx
//     ended after the line was queued, or the gateway's cluster bus could
//     not confirm it for Options.RetryTimeout; the outcome is unknown;
//   - ErrClosed, ctx's error or a dial error: nothing was sent.
//
// Send blocks while Options.MaxInFlight messages are in flight, while it
// redials, and until the answer; ctx bounds all three. line is not retained
// after Send returns.
func (p *Producer) Send(ctx context.Context, line []byte) (seq uint64, err error) {
	f, err := parseLine(line, p.opts.MaxLineBytes, p.newID)
	if err != nil {
		return 0, err
	}
	return p.sendWait(ctx, &f)
}

// SendAsync queues one message like Send but does not wait for its answer:
// done is called with the seq or the error (*RejectError, *RefusedError or
// *MaybeStoredError) once the gateway answers or the connection fails.
//
// SendAsync still blocks while Options.MaxInFlight messages are in flight,
// and while it redials; ctx bounds those waits only. If it returns an error
// (as for Send: invalid line, ErrClosed, ctx's error, a dial error), nothing
// was sent and done is never called; otherwise done is called exactly once.
// line may be reused as soon as SendAsync returns.
//
// done runs on the connection's reader goroutine, in the order the lines
// were written, and answers behind it wait while it runs: keep it short, and
// never call Send, SendAsync, Publish or Close from it (they may wait for an
// in-flight slot that only this goroutine can free). done may be nil.
func (p *Producer) SendAsync(ctx context.Context, line []byte, done func(seq uint64, err error)) error {
	f, err := parseLine(line, p.opts.MaxLineBytes, p.newID)
	if err != nil {
		return err
	}
	return p.send(ctx, &f, done)
}

// publishMsg is the line Publish writes. Its id is always set, so the line
// needs no parsing before it is sent.
type publishMsg struct {
	ID     string `json:"id"`
	City   string `json:"city"`
	Type   string `json:"type"`
	Data   any    `json:"data,omitempty"`
	Alerts any    `json:"alerts,omitempty"`
}

// Publish marshals a message with encoding/json, sends it and waits like
// Send. typ is "data_update" or "snapshot" with data a JSON object (a map, a
// struct or a json.RawMessage), or "alerts" with data a JSON array of
// {"severity","message"} objects, which Publish writes as "alerts". The
// gateway validates city and typ; a bad one comes back as *RejectError.
func (p *Producer) Publish(ctx context.Context, city, typ string, data any) (seq uint64, err error) {
	m := publishMsg{ID: p.newID(), City: city, Type: typ}
	if typ == "alerts" {
		m.Alerts = data
	} else {
		m.Data = data
	}
	// encoding/json escapes control characters and compacts raw messages,
	// so the line has no newline in it.
	body, err := json.Marshal(&m)
	if err != nil {
		return 0, fmt.Errorf("cannot marshal %s for %q: %w", typ, city, err)
	}
	if len(body) > p.opts.MaxLineBytes {
		return 0, fmt.Errorf("%w: %d bytes, the limit is %d", ErrLineTooLong, len(body), p.opts.MaxLineBytes)
	}
	return p.sendWait(ctx, &frame{body: body, id: m.ID})
}

// Close stops new sends (they fail with ErrClosed, and so do sends waiting
// for an in-flight slot), waits until every message in flight is answered,
// then closes the connection. Each answer may take up to Options.AckTimeout;
// a gateway that stays silent longer has its messages failed with
// *MaybeStoredError. A message being resent, and those held behind it,
// keep Close waiting until it is acked or its Options.RetryTimeout has
// passed. When Close returns, every callback has run and the producer's
// goroutines have exited. Close is idempotent and returns nil.
func (p *Producer) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		c := p.cur
		p.mu.Unlock()
		close(p.closing)
		if c != nil {
			c.drain()
		}
		p.wg.Wait()
	})
	return nil
}

// sendWait sends f and waits for its answer.
func (p *Producer) sendWait(ctx context.Context, f *frame) (uint64, error) {
	type result struct {
		seq uint64
		err error
	}
	ch := make(chan result, 1)
	if err := p.send(ctx, f, func(seq uint64, err error) { ch <- result{seq, err} }); err != nil {
		return 0, err
	}
	select {
	case r := <-ch:
		return r.seq, r.err
	case <-ctx.Done():
		select {
		case r := <-ch: // answered at the same moment: report it
			return r.seq, r.err
		default:
		}
		return 0, &MaybeStoredError{ID: f.id, Err: ctx.Err()}
	}
}

// send takes an in-flight slot and queues f on a live connection, dialing
// if there is none.
func (p *Producer) send(ctx context.Context, f *frame, done func(uint64, error)) error {
	if err := p.acquire(ctx); err != nil {
		return err
	}
	for {
		c, err := p.conn(ctx)
		if err != nil {
			p.release()
			return err
		}
		err = c.enqueue(f, done)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errConnDead) {
			p.release()
			return err
		}
		// The connection failed after conn returned it: dial again.
	}
}

// acquire takes an in-flight slot, waiting while all are taken.
func (p *Producer) acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-p.closing:
		return ErrClosed
	default:
	}
	select {
	case p.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-p.closing:
		return ErrClosed
	}
}

// release frees an in-flight slot taken by acquire.
func (p *Producer) release() { <-p.slots }

// conn returns the live connection, dialing (once for all waiting senders,
// after the backoff) when there is none.
func (p *Producer) conn(ctx context.Context) (*conn, error) {
	for {
		p.mu.Lock()
		c, closed := p.cur, p.closed
		p.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		if c != nil && c.alive() {
			return c, nil
		}
		select {
		case p.dialing <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-p.closing:
			return nil, ErrClosed
		}
		c, err := p.redial(ctx)
		<-p.dialing
		if c != nil || err != nil {
			return c, err
		}
	}
}

// redial dials unless another sender did while this one waited; the caller
// holds p.dialing. It returns (nil, nil) when the caller should look again.
func (p *Producer) redial(ctx context.Context) (*conn, error) {
	p.mu.Lock()
	c, lost, wait := p.cur, p.lost, time.Until(p.retryAt)
	p.mu.Unlock()
	if c != nil {
		return nil, nil
	}
	if lost != nil {
		// Let the failed connection's callbacks run first, so that
		// callbacks keep the order of the lines across a reconnect. Its
		// socket is closed already: this waits for callbacks only.
		select {
		case <-lost.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-p.closing:
			return nil, ErrClosed
		}
	}
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-p.closing:
			return nil, ErrClosed
		}
	}
	return p.connect(ctx)
}

// connect dials, installs the connection as p.cur and starts its
// goroutines.
func (p *Producer) connect(ctx context.Context) (*conn, error) {
	var auth []byte
	if p.opts.Token != nil {
		tok, err := p.opts.Token()
		if err != nil {
			return nil, fmt.Errorf("cannot get a token for %s: %w", p.addr, err)
		}
		if auth, err = json.Marshal(struct {
			Auth string `json:"auth"`
		}{tok}); err != nil {
			return nil, fmt.Errorf("cannot encode the token: %w", err)
		}
		auth = append(auth, '\n')
	}
	d := net.Dialer{Timeout: p.opts.DialTimeout}
	nc, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		if ctx.Err() != nil {
			// The caller gave up; that says nothing about the gateway.
			return nil, fmt.Errorf("cannot connect to %s: %w", p.addr, err)
		}
		p.mu.Lock()
		p.failures++
		failures := p.failures
		p.retryAt = time.Now().Add(p.opts.backoff(failures))
		p.mu.Unlock()
		p.log.Warn("cannot connect to the metrocast ingest port", "addr", p.addr, "failures", failures, "err", err)
		return nil, fmt.Errorf("cannot connect to %s: %w", p.addr, err)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		_ = nc.Close()
		return nil, ErrClosed
	}
	p.conns++
	c := newConn(p, nc, p.conns)
	if auth != nil {
		// The first line; the gateway answers it only to refuse it. Line
		// numbers count it, as the gateway's do.
		c.out, c.lines = auth, 1
		c.wake <- struct{}{}
	}
	p.cur = c
	// Added under p.mu after the closed check, so never after Close's Wait
	// has started.
	p.wg.Add(2)
	p.mu.Unlock()
	go func() { defer p.wg.Done(); c.readLoop() }()
	go func() { defer p.wg.Done(); c.writeLoop() }()
	p.log.Info("connected to the metrocast ingest port", "addr", p.addr, "conn", c.no)
	return c, nil
}

// connLost is called once per connection, from conn.fail, before the
// connection is marked dead. It schedules the next dial.
func (p *Producer) connLost(c *conn, cause error) {
	c.mu.Lock()
	inFlight := c.pending.n
	c.mu.Unlock()
	p.mu.Lock()
	if p.cur == c {
		p.cur = nil
	}
	p.lost = c
	if cause == errClosing {
		p.mu.Unlock()
		return
	}
	p.failures++
	p.retryAt = time.Now().Add(p.opts.backoff(p.failures))
	p.mu.Unlock()
	p.log.Warn("lost the connection to the metrocast ingest port", "addr", p.addr, "conn", c.no, "in_flight", inFlight, "err", cause)
}

// resendable reports whether e, answered with "retry", is to be resent:
// within Options.RetryTimeout of its first such answer. Runs on readLoop.
func (p *Producer) resendable(e *entry) bool {
	if p.opts.RetryTimeout < 0 {
		return false
	}
	now := time.Now()
	if e.until.IsZero() {
		e.until = now.Add(p.opts.RetryTimeout)
	}
	return now.Before(e.until)
}

// connAnswered is called on a connection's first answer: the gateway works,
// so the backoff starts over.
func (p *Producer) connAnswered() {
	p.mu.Lock()
	p.failures = 0
	p.mu.Unlock()
}

// newID returns a message id unique to this producer: its random prefix and
// a counter. Safe for concurrent use.
func (p *Producer) newID() string {
	var b [32]byte
	id := append(b[:0], p.idPrefix...)
	id = append(id, '-')
	id = strconv.AppendUint(id, p.idSeq.Add(1), 36)
	return string(id)
}
