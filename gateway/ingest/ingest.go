package ingest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metrocast/metrocast/codec"
	"github.com/metrocast/metrocast/gateway/auth"
	"github.com/metrocast/metrocast/gateway/internal/limit"
)

// Server is the TCP ingest port: one goroutine per producer connection
// (there are few), each reading lines, handing them to the Store and
// answering acks and errors in line order. A producer that outruns the
// node is slowed by TCP backpressure: nothing is buffered beyond one line
// (and, with a store that answers later, MaxInFlight lines awaiting it).
// It serves HTTP ingest too (Publish), with the same protocol.
//
// Bound to loopback, producers are trusted neighbours. Bound to any other
// address on a node with keys, each producer must first send
// {"auth":"<token>"} with a token whose "publish" claim names the cities it
// may publish to. On a port that wants no token, such a first line is
// taken all the same (producerConn.authLine), so that one producer
// configuration works against a laptop and in production.
type Server struct {
	cfg Config
	ln  net.Listener
	// needToken: producers authenticate with their first line.
	needToken bool

	mu     sync.Mutex
	conns  map[net.Conn]*producerConn
	closed bool
	wg     sync.WaitGroup
	turns  *turns

	// throttles of repeated warnings
	warnAccept, warnRejected limit.Throttle

	frames       atomic.Uint64
	bytes        atomic.Uint64
	errors       atomic.Uint64
	rejected     atomic.Uint64
	authFailures atomic.Uint64
	dropped      atomic.Uint64
	timeouts     atomic.Uint64
	duplicates   atomic.Uint64 // lines acked as copies of an id stored before
}

// Config is what a Server needs: the node's ingest settings (gateway.Config
// names each one's key and default, and checks them), the producers'
// tokens, and where the lines go.
type Config struct {
	// Addr is the TCP port's listen address.
	Addr string
	// MaxLineBytes bounds a line.
	MaxLineBytes int
	// MaxErrors is how many bad lines a producer may send per minute (a
	// token bucket of that size); past it the producer is disconnected.
	MaxErrors int
	// MaxRate bounds the lines per second of one producer, which is
	// paced to it; 0: no bound.
	MaxRate int
	// AuthTimeout bounds the wait for the first byte of a producer's auth
	// line, where the port wants one.
	AuthTimeout time.Duration
	// TokenGrace is how long after its token's exp a producer's lines are
	// still taken.
	TokenGrace time.Duration
	// Live returns the settings a reload may change: read for each
	// producer connection (MaxConns, LineTimeout) and each write of
	// answers (WriteTimeout). Safe for concurrent use.
	Live func() Live
	// Auth checks the producers' tokens; nil: the node checks no token
	// (insecure).
	Auth *auth.Authenticator
	// Store takes the lines.
	Store Store
	// LoopsWaiting reports whether an event loop is waiting to run (woken
	// for new frames): a producer yields its processor before its next
	// line while one is (see turns). Safe for concurrent use.
	LoopsWaiting func() bool
	// Logger receives the warnings. Default slog.Default().
	Logger *slog.Logger
}

// Live are the ingest settings a reload may change.
type Live struct {
	// MaxConns bounds the producer connections at once; past it a new
	// one is answered an error and closed.
	MaxConns int
	// LineTimeout bounds a line once begun; 0: no bound.
	LineTimeout time.Duration
	// WriteTimeout closes a producer that does not read its answers
	// within it.
	WriteTimeout time.Duration
}

// producerConn is one producer connection. Its goroutine owns grant, rate
// and errs; the counters are read by Stats, and sub under Server.mu.
type producerConn struct {
	in        *Server
	addr      string
	sub       string // the token's subject, once authenticated
	needToken bool   // the first line must be {"auth":…}
	// authLine: the port wants no token, but a first line {"auth":…}
	// is an auth line all the same: checked on a node with keys (a bad
	// token is refused, a good one's publish claim holds), passed over
	// without an answer on an insecure node.
	authLine bool

	grant *auth.Grant  // nil on a port without tokens
	keys  *auth.KeySet // the key set grant was last checked against (revocation)
	rate  limit.Bucket // MaxRate pacing
	errs  limit.Bucket // bad lines (MaxErrors)
	turn  turn         // its hold on the node's ingest turn (see turns)
	// msg is the line being handed to the store: a field, not a
	// variable, because the Store is an interface and a pointer to a
	// variable would move it to the heap, for every line.
	msg codec.Ingest

	lines     atomic.Uint64
	bytes     atomic.Uint64
	errors    atomic.Uint64
	throttled atomic.Uint64
}

// Listen listens on cfg.Addr; Serve then accepts producers.
func Listen(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen for ingest on %s: %w", cfg.Addr, err)
	}
	in := &Server{cfg: cfg, ln: ln, conns: make(map[net.Conn]*producerConn), turns: newTurns(cfg.LoopsWaiting)}
	in.warnAccept.Period, in.warnRejected.Period = limit.WarnEvery, limit.WarnEvery
	if !auth.Loopback(ln.Addr()) {
		if cfg.Auth != nil {
			in.needToken = true
		} else {
			cfg.Logger.Warn("ingest port open beyond loopback without tokens (insecure)", "addr", ln.Addr().String())
		}
	}
	return in, nil
}

// Addr is the TCP port's address.
func (in *Server) Addr() net.Addr { return in.ln.Addr() }

// Serve accepts producers until Close. Runs on its own goroutine.
func (in *Server) Serve() {
	for {
		c, err := in.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			in.warnAccept.Warn(in.cfg.Logger, "ingest accept failed", "err", err)
			time.Sleep(50 * time.Millisecond) // e.g. EMFILE: do not spin
			continue
		}
		pc := &producerConn{in: in, addr: c.RemoteAddr().String(), needToken: in.needToken, authLine: !in.needToken}
		if !in.track(c, pc) {
			in.rejected.Add(1)
			in.warnRejected.Warn(in.cfg.Logger, "refused a producer connection: ingest_max_conns reached",
				"producer", c.RemoteAddr().String())
			_, _ = c.Write(codec.AppendIngestError(nil, "too many producer connections", 0))
			_ = c.Close()
			continue
		}
		go in.handle(c, pc)
	}
}

// track registers c unless the port is closed or full.
func (in *Server) track(c net.Conn, pc *producerConn) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed || len(in.conns) >= in.cfg.Live().MaxConns {
		return false
	}
	in.conns[c] = pc
	in.wg.Add(1)
	return true
}

// enter registers an HTTP publish unless the port is closed; leave ends
// it. Shutdown waits for these as for producer connections.
func (in *Server) enter() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return false
	}
	in.wg.Add(1)
	return true
}

func (in *Server) leave() { in.wg.Done() }

func (in *Server) untrack(c net.Conn) {
	in.mu.Lock()
	delete(in.conns, c)
	in.mu.Unlock()
	in.wg.Done()
}

// Close stops accepting and makes every producer stop reading: each one
// answers the lines it has already read, then closes. A read deadline in
// the past, rather than CloseRead, so that a producer that keeps sending
// is not read from forever, and a line cut short is dropped (unanswered:
// not stored) instead of parsed.
func (in *Server) Close() {
	in.mu.Lock()
	in.closed = true
	for c := range in.conns {
		_ = c.SetReadDeadline(time.Now())
	}
	in.mu.Unlock()
	_ = in.ln.Close()
}

// Wait waits for the producer goroutines (and HTTP publishes), at most
// until ctx is done, then closes the connections left. Call it after
// Close.
func (in *Server) Wait(ctx context.Context) {
	done := make(chan struct{})
	go func() { in.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		in.mu.Lock()
		for c := range in.conns {
			_ = c.Close()
		}
		in.mu.Unlock()
	}
}

// Stats are the port's counters (and HTTP ingest's), as gateway.Stats
// reports them: Conns is IngestConns, Frames IngestFrames, and so on.
type Stats struct {
	Conns        int64
	Frames       uint64
	Bytes        uint64
	Errors       uint64
	Rejected     uint64
	AuthFailures uint64
	Dropped      uint64
	Timeouts     uint64
	Duplicates   uint64
	Producers    []ProducerStats // the connected producers
}

// ProducerStats is one producer connection's accounting.
type ProducerStats struct {
	Addr      string `json:"addr"`      // remote address
	Sub       string `json:"sub"`       // the token's subject; empty without a token
	Lines     uint64 `json:"lines"`     // lines read
	Bytes     uint64 `json:"bytes"`     // bytes of lines read
	Errors    uint64 `json:"errors"`    // lines refused
	Throttled uint64 `json:"throttled"` // lines delayed by MaxRate
}

// Stats returns the port's counters. Safe for concurrent use.
func (in *Server) Stats() Stats {
	var st Stats
	in.mu.Lock()
	st.Conns = int64(len(in.conns))
	for _, pc := range in.conns {
		st.Producers = append(st.Producers, ProducerStats{
			Addr:      pc.addr,
			Sub:       pc.sub,
			Lines:     pc.lines.Load(),
			Bytes:     pc.bytes.Load(),
			Errors:    pc.errors.Load(),
			Throttled: pc.throttled.Load(),
		})
	}
	in.mu.Unlock()
	st.Frames = in.frames.Load()
	st.Bytes = in.bytes.Load()
	st.Errors = in.errors.Load()
	st.Rejected = in.rejected.Load()
	st.AuthFailures = in.authFailures.Load()
	st.Dropped = in.dropped.Load()
	st.Timeouts = in.timeouts.Load()
	st.Duplicates = in.duplicates.Load()
	return st
}

// handle serves one producer until it closes, stops reading its answers,
// presents a bad token, or sends too many bad lines.
func (in *Server) handle(c net.Conn, pc *producerConn) {
	defer func() {
		// Forget the producer before closing: once it sees EOF, Stats no
		// longer lists it.
		in.untrack(c)
		_ = c.Close()
	}()
	w := bufio.NewWriterSize(deadlineWriter{c, in.cfg.Live, &pc.turn}, 4<<10)
	lr := newLineReader(c, in.cfg.MaxLineBytes, in.cfg.Live().LineTimeout, func(t time.Time) error {
		return in.setReadDeadline(c, t)
	})
	if pc.needToken {
		// Its auth line must begin within AuthTimeout, as a WebSocket
		// client's auth message must come: one of MaxConns is not for a
		// connection that says nothing. (The line, once begun, is bounded
		// by LineTimeout.)
		lr.firstBy(time.Now().Add(in.cfg.AuthTimeout))
	}
	_, _, _ = in.serveLines(pc, lr, w, w.Flush)
	if w.Flush() == nil && in.isClosed() {
		linger(c)
	}
}

// setReadDeadline sets a producer connection's read deadline, unless close
// has stopped the reading (its deadline in the past stays: this one set
// after it would undo it).
func (in *Server) setReadDeadline(c net.Conn, t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	if in.isClosed() {
		return c.SetReadDeadline(time.Now())
	}
	return nil
}

func (in *Server) isClosed() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.closed
}

// ingestLinger bounds how long a producer connection stopped by a drain
// is read and discarded after its last answer.
const ingestLinger = 200 * time.Millisecond

// linger ends a producer connection that the drain stopped reading: a FIN
// after the answers, then the lines it sent meanwhile are read and dropped
// for a moment. Closing with unread input would reset the connection
// instead, and a reset can cost the producer the end of its answers.
func linger(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	_ = c.SetReadDeadline(time.Now().Add(ingestLinger))
	_, _ = io.Copy(io.Discard, c)
}

// deadlineWriter writes to a producer connection, closing it if the
// producer does not read its answers within WriteTimeout. A write may
// wait: it gives up the producer's turn first.
type deadlineWriter struct {
	c    net.Conn
	live func() Live
	turn *turn
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	d.turn.release()
	_ = d.c.SetWriteDeadline(time.Now().Add(d.live().WriteTimeout))
	return d.c.Write(p)
}

// serveLines is the ingest protocol, shared by the TCP port and HTTP
// publish: it reads lines from lr until the input ends, publishes each, and
// writes each answer (an ack for a line with an id, an error for a bad
// line) to w in line order. flush, unless nil, is called whenever every line
// read so far is answered and no more input is buffered, so that a producer
// that pipelines lines gets its answers in batches. With a store that
// answers later (a Pending: a cluster's log), the lines a producer
// pipelines are sent without waiting for each answer (up to MaxInFlight
// at once), and answered as the store's answers come back. It returns how
// many lines failed, how many of those for a fault of the store (a
// BusError, answered with "retry"), and the error that ended the input
// (nil at EOF) or a write.
//
// pc is the producer: its token (the first line must be {"auth":…} when
// pc.needToken), its accounting, its pacing and its bad-line budget. A
// producer over that budget, or whose token fails, gets a last answer and
// errProducerDropped. Store faults are not the producer's: they do not
// count toward the budget, and the producer stays connected. Lines are
// stored in the producer's turns (see turns), and nothing that may wait
// runs in one: with a store that answers later a turn only prepares its
// lines (Store.Append), and they are sent when it ends (pause).
func (in *Server) serveLines(pc *producerConn, lr *lineReader, w io.Writer, flush func() error) (failed, retry int, err error) {
	q := &answers{in: in, w: w}
	pc.turn.t = in.turns
	defer pc.turn.release()
	// pause ends the producer's turn, before anything that may wait, and
	// sends the lines it prepared (Pending.Send).
	pause := func() {
		pc.turn.release()
		q.send()
	}
	// finish answers every line read, as at the end of any input.
	finish := func(err error) (int, int, error) {
		pause()
		if werr := q.settle(true); werr != nil {
			return q.failed, q.retry, werr
		}
		if flush != nil {
			if werr := flush(); werr != nil {
				return q.failed, q.retry, werr
			}
		}
		return q.failed, q.retry, eofIsNil(err)
	}
	for n := 1; ; n++ {
		if !lr.hasLine() {
			pause() // the read may wait
		}
		line, rerr := lr.next()
		if errors.Is(rerr, os.ErrDeadlineExceeded) {
			if pc.needToken && pc.grant == nil && !in.isClosed() {
				// No auth line within AuthTimeout (handle).
				in.authFailures.Add(1)
				q.answer(codec.AppendIngestError(q.scratch(), "authentication failed: no {\"auth\":…} line within "+in.cfg.AuthTimeout.String(), 0), false)
			}
			// Else close stopped the reading; a part line is not
			// answered.
			return finish(nil)
		}
		if errors.Is(rerr, errLineTimeout) {
			in.timeouts.Add(1)
			q.answer(codec.AppendIngestError(q.scratch(), fmt.Sprintf("line %d not complete within %s: disconnecting", n, lr.timeout), 0), false)
			return finish(errLineTimeout)
		}
		tooLong := errors.Is(rerr, errLineTooLong)
		if rerr != nil && len(line) == 0 && !tooLong {
			return finish(rerr)
		}
		pc.lines.Add(1)
		pc.bytes.Add(uint64(len(line)))
		fatal := false
		isAuth := pc.needToken && pc.grant == nil
		if n == 1 && pc.authLine && !tooLong {
			_, err := codec.ParseIngestAuth(line)
			isAuth = err == nil
		}
		switch {
		case isAuth && in.cfg.Auth != nil:
			fatal = pc.authenticate(line, q)
		case isAuth:
			// An insecure node has no key to check it with.
		case tooLong:
			fatal = pc.refuse(q, fmt.Sprintf("line longer than %d bytes", lr.max), n)
		case len(line) > 0:
			if pc.turn.spent() {
				pause()
			}
			pc.turn.take(len(line), lr.backlog())
			fatal = pc.line(line, n, q)
		}
		if fatal {
			return finish(errProducerDropped)
		}
		// Answer once the producer's pipelined lines are all read, and
		// before pausing it.
		wait := pc.pace()
		idle := lr.buffered() == 0 || rerr != nil || wait > 0
		settle := idle || len(q.queue) >= MaxInFlight
		if settle {
			pause() // waits for the store's answers, then writes
		}
		if err := q.settle(settle); err != nil {
			return q.failed, q.retry, err
		}
		if flush != nil && idle {
			if err := flush(); err != nil {
				return q.failed, q.retry, err
			}
		}
		switch {
		case rerr != nil && !tooLong:
			return q.failed, q.retry, eofIsNil(rerr)
		case wait > 0:
			pc.throttled.Add(1)
			time.Sleep(wait)
		}
	}
}

// errProducerDropped ends a producer whose token failed or who sent too many
// bad lines; its last answer says which.
var errProducerDropped = errors.New("producer disconnected")

func eofIsNil(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// authenticate checks the producer's first line, {"auth":"<token>"}. A bad
// one is answered (line 0: it is about the connection) and ends it (fatal).
func (p *producerConn) authenticate(line []byte, q *answers) (fatal bool) {
	tok, err := codec.ParseIngestAuth(line)
	if err == nil {
		p.grant, err = p.in.cfg.Auth.ProducerGrant(tok)
	}
	if err != nil {
		p.in.authFailures.Add(1)
		q.answer(codec.AppendIngestError(q.scratch(), "authentication failed: "+err.Error(), 0), false)
		return true
	}
	p.in.mu.Lock()
	p.sub = p.grant.Sub()
	p.in.mu.Unlock()
	return false
}

// revoked reports whether the producer's token is revoked by the key set in
// force, checked at the first line and after each reload: one atomic load
// per line otherwise. (Not at authentication: a reload may come between
// the token's check and the key set this would record.)
func (p *producerConn) revoked() bool {
	ks := p.in.cfg.Auth.Keys()
	if ks == p.keys {
		return false
	}
	p.keys = ks
	return ks.Revokes(p.grant.Sub(), p.grant.JTI(), time.Now().UnixNano())
}

// line hands one ingest line to the store and queues its answer: an ack
// if the line has an id, or an error, known on return or, from a store
// that answers later, waiting for its answer (Appended.Pending). fatal:
// the producer is cut off.
func (p *producerConn) line(line []byte, n int, q *answers) (fatal bool) {
	in := p.in
	if g := p.grant; g != nil && g.Exp() != 0 && time.Now().After(g.ExpPlus(in.cfg.TokenGrace)) {
		in.authFailures.Add(1)
		q.answer(codec.AppendIngestError(q.scratch(), "the token expired: reconnect with a new one", 0), false)
		return true
	}
	if p.grant != nil && p.revoked() {
		in.authFailures.Add(1)
		q.answer(codec.AppendIngestError(q.scratch(), "the token was revoked", 0), false)
		return true
	}
	var err error
	msg := &p.msg
	*msg, err = codec.ParseIngest(line)
	if err == nil && p.grant != nil && !p.grant.Allows(msg.City) {
		err = fmt.Errorf("forbidden: the token does not allow publishing to %q", msg.City)
	}
	if err == nil {
		a := in.cfg.Store.Append(msg, line)
		switch {
		case a.Pending != nil:
			q.publish(a.Pending, msg.ID, n, len(line))
			return false
		case a.Err == nil:
			q.stored(msg.ID, a.Seq, len(line), a.Dup)
			return false
		}
		err = a.Err
	}
	if errors.Is(err, ErrTooManyCities) {
		// The node is full, the line is fine: like a store fault, it is
		// not the producer's bad line (MaxErrors), and its lines for the
		// cities the node holds go on.
		in.errors.Add(1)
		p.errors.Add(1)
		q.answer(codec.AppendIngestError(q.scratch(), err.Error(), n), false)
		return false
	}
	return p.refuse(q, err.Error(), n)
}

// refuse answers a bad line and counts it; past MaxErrors per minute
// the producer is disconnected (fatal), with a last answer that says why.
func (p *producerConn) refuse(q *answers, msg string, n int) (fatal bool) {
	in, cfg := p.in, &p.in.cfg
	in.errors.Add(1)
	p.errors.Add(1)
	q.answer(codec.AppendIngestError(q.scratch(), msg, n), false)
	if !p.errs.Take(time.Now().UnixNano(), int64(time.Minute)/int64(cfg.MaxErrors), cfg.MaxErrors) {
		in.dropped.Add(1)
		q.answer(codec.AppendIngestError(q.scratch(), fmt.Sprintf("more than %d bad lines per minute: disconnecting", cfg.MaxErrors), 0), true)
		return true
	}
	return false
}

// pace returns how long to wait before reading the next line to keep the
// producer within MaxRate (0 without a bound).
func (p *producerConn) pace() time.Duration {
	rate := p.in.cfg.MaxRate
	if rate == 0 {
		return 0
	}
	return time.Duration(p.rate.Wait(time.Now().UnixNano(), int64(time.Second)/int64(rate), rate))
}

// MaxInFlight bounds the lines of one producer handed to a store that
// answers later and not answered yet: past it, serveLines waits for the
// answers before it reads on, and TCP backpressure slows the producer.
const MaxInFlight = 256

// answers holds a producer's answers in line order: those known, and
// those waiting for the store's (a Pending). Owned by the producer's
// goroutine.
type answers struct {
	in     *Server
	w      io.Writer
	buf    []byte    // scratch for an answer written at once
	queue  []queued  // answers waiting behind an ack, oldest first
	unsent []Pending // lines of queue prepared for the log, not sent yet
	failed int       // lines answered with an error
	retry  int       // of those, lines the store failed (answered with "retry")
	err    error     // the first write error
}

// queued is an answer not written yet.
type queued struct {
	b    []byte  // the answer, when known
	pub  Pending // else the log's answer it waits for
	id   string
	n    int // line number
	size int // line bytes
}

// scratch returns the answer buffer, empty.
func (q *answers) scratch() []byte { return q.buf[:0] }

// stored counts a stored line, or a copy of one that was not stored again
// (dup), and answers it with its seq if it has an id.
func (q *answers) stored(id string, seq uint64, size int, dup bool) {
	q.count(size, dup)
	if id != "" {
		q.answer(codec.AppendAck(q.scratch(), id, seq), true)
	}
}

// count counts a stored line of size bytes, or a copy of one (dup).
func (q *answers) count(size int, dup bool) {
	if dup {
		q.in.duplicates.Add(1)
		return
	}
	q.in.frames.Add(1)
	q.in.bytes.Add(uint64(size))
}

// publish queues the answer of line n (its id and size), which waits for
// the log's answer to p, and p to be sent (send).
func (q *answers) publish(p Pending, id string, n, size int) {
	q.queue = append(q.queue, queued{pub: p, id: id, n: n, size: size})
	q.unsent = append(q.unsent, p)
}

// send sends the lines prepared for the log, in line order. It may wait:
// call it outside the turn.
func (q *answers) send() {
	for i, p := range q.unsent {
		p.Send()
		q.unsent[i] = nil
	}
	q.unsent = q.unsent[:0]
}

// answer writes b (built in scratch) now, or queues a copy behind the
// answers still waiting for acks.
func (q *answers) answer(b []byte, ok bool) {
	q.buf = b[:0]
	if !ok {
		q.failed++
	}
	if len(q.queue) > 0 {
		q.queue = append(q.queue, queued{b: bytes.Clone(b)})
		return
	}
	q.write(b)
}

func (q *answers) write(b []byte) {
	if q.err == nil && len(b) > 0 {
		_, q.err = q.w.Write(b)
	}
}

// settle writes the queued answers whose acks have come, in order; with
// wait, it sends the lines not sent yet and waits for every ack, so call it
// outside the turn then. It returns the first write error.
func (q *answers) settle(wait bool) error {
	if wait {
		q.send()
	}
	done := 0
	for _, a := range q.queue {
		if a.pub != nil {
			r, ok := a.pub.Poll(wait)
			if !ok {
				break
			}
			if r.Err != nil {
				// Counted as an ingest error, but not against the
				// producer.
				be := asBusError(r.Err)
				q.in.errors.Add(1)
				q.failed++
				q.retry++
				a.b = codec.AppendIngestRetry(q.scratch(), be.Msg, a.n, be.Retry())
			} else {
				q.count(a.size, r.Dup)
				a.b = q.scratch()
				if a.id != "" {
					a.b = codec.AppendAck(a.b, a.id, r.Seq)
				}
			}
			q.buf = a.b[:0]
		}
		q.write(a.b)
		done++
	}
	clear(q.queue[:done])
	q.queue = append(q.queue[:0], q.queue[done:]...)
	return q.err
}
