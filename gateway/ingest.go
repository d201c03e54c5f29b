package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metrocast/metrocast/codec"
)

// ingest is the TCP ingest port: one goroutine per producer connection (there
// are few), each reading lines, publishing them and answering acks and
// errors in line order. A producer that outruns the gateway is slowed by TCP
// backpressure: nothing is buffered beyond one line.
//
// Bound to loopback, producers are trusted neighbours. Bound to any other
// address on a node with keys, each producer must first send
// {"auth":"<token>"} with a token whose "publish" claim names the cities it
// may publish to.
type ingest struct {
	s  *Server
	ln net.Listener
	// needToken: producers authenticate with their first line.
	needToken bool

	mu     sync.Mutex
	conns  map[net.Conn]*producerConn
	closed bool
	wg     sync.WaitGroup

	frames       atomic.Uint64
	bytes        atomic.Uint64
	errors       atomic.Uint64
	rejected     atomic.Uint64
	authFailures atomic.Uint64
	dropped      atomic.Uint64
}

// producerConn is one producer connection. Its goroutine owns grant, rate
// and errs; the counters are read by Stats, and sub under ingest.mu.
type producerConn struct {
	in   *ingest
	addr string
	sub  string // the token's subject, once authenticated

	grant *grant // nil on a port without tokens
	rate  bucket // IngestMaxRate pacing
	errs  bucket // bad lines (IngestMaxErrors)

	lines     atomic.Uint64
	bytes     atomic.Uint64
	errors    atomic.Uint64
	throttled atomic.Uint64
}

func (s *Server) listenIngest() (*ingest, error) {
	ln, err := net.Listen("tcp", s.cfg.IngestAddr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen for ingest on %s: %w", s.cfg.IngestAddr, err)
	}
	in := &ingest{s: s, ln: ln, conns: make(map[net.Conn]*producerConn)}
	if ta, ok := ln.Addr().(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
		if s.auth != nil {
			in.needToken = true
		} else {
			s.cfg.Logger.Warn("ingest port open beyond loopback without tokens (insecure)", "addr", ln.Addr().String())
		}
	}
	return in, nil
}

func (in *ingest) serve() {
	for {
		c, err := in.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			in.s.cfg.Logger.Warn("ingest accept failed", "err", err)
			time.Sleep(50 * time.Millisecond) // e.g. EMFILE: do not spin
			continue
		}
		pc := &producerConn{in: in, addr: c.RemoteAddr().String()}
		if !in.track(c, pc) {
			in.rejected.Add(1)
			_, _ = c.Write(codec.AppendIngestError(nil, "too many producer connections", 0))
			_ = c.Close()
			continue
		}
		go in.handle(c, pc)
	}
}

// track registers c unless the port is closed or full.
func (in *ingest) track(c net.Conn, pc *producerConn) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed || len(in.conns) >= in.s.cfg.IngestMaxConns {
		return false
	}
	in.conns[c] = pc
	in.wg.Add(1)
	return true
}

func (in *ingest) untrack(c net.Conn) {
	in.mu.Lock()
	delete(in.conns, c)
	in.mu.Unlock()
	in.wg.Done()
}

// close stops accepting and makes every producer stop reading: each one
// answers the lines it has already read, then closes.
func (in *ingest) close() {
	in.mu.Lock()
	in.closed = true
	for c := range in.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.CloseRead()
		}
	}
	in.mu.Unlock()
	_ = in.ln.Close()
}

// wait waits for the producer goroutines, at most until ctx is done.
func (in *ingest) wait(ctx context.Context) {
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

func (in *ingest) stats(st *Stats) {
	in.mu.Lock()
	st.IngestConns = int64(len(in.conns))
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
	st.IngestFrames = in.frames.Load()
	st.IngestBytes = in.bytes.Load()
	st.IngestErrors = in.errors.Load()
	st.IngestRejected = in.rejected.Load()
	st.IngestAuthFailures = in.authFailures.Load()
	st.IngestDropped = in.dropped.Load()
}

// handle serves one producer until it closes, stops reading its answers,
// presents a bad token, or sends too many bad lines.
func (in *ingest) handle(c net.Conn, pc *producerConn) {
	defer in.untrack(c)
	defer c.Close()
	cfg := &in.s.cfg
	r := newLineReader(c, cfg.IngestMaxLineBytes)
	w := bufio.NewWriterSize(c, 4<<10)
	var out []byte
	for n := 1; ; n++ {
		line, err := r.next()
		if err != nil && len(line) == 0 && !errors.Is(err, errLineTooLong) {
			break
		}
		pc.lines.Add(1)
		pc.bytes.Add(uint64(len(line)))
		out = out[:0]
		fatal := false
		switch {
		case in.needToken && pc.grant == nil:
			out, fatal = pc.authenticate(line, out)
		case errors.Is(err, errLineTooLong):
			out, fatal = pc.refuse(out, fmt.Sprintf("line longer than %d bytes", cfg.IngestMaxLineBytes), n)
		case len(line) > 0:
			out, fatal = pc.line(line, n, out)
		}
		if len(out) > 0 {
			_ = c.SetWriteDeadline(time.Now().Add(cfg.IngestWriteTimeout))
			if _, werr := w.Write(out); werr != nil {
				return
			}
		}
		// Answer once the producer's pipelined lines are all read, and
		// before pausing it.
		wait := pc.pace()
		if r.buffered() == 0 || err != nil || fatal || wait > 0 {
			if w.Flush() != nil {
				return
			}
		}
		if fatal || err != nil && !errors.Is(err, errLineTooLong) {
			break
		}
		if wait > 0 {
			pc.throttled.Add(1)
			time.Sleep(wait)
		}
	}
	_ = w.Flush()
}

// authenticate checks the producer's first line, {"auth":"<token>"}. A bad
// one is answered (line 0: it is about the connection) and ends it.
func (p *producerConn) authenticate(line, out []byte) ([]byte, bool) {
	tok, err := codec.ParseIngestAuth(line)
	if err == nil {
		p.grant, err = p.in.s.auth.producerGrant(tok)
	}
	if err != nil {
		p.in.authFailures.Add(1)
		return codec.AppendIngestError(out, "authentication failed: "+err.Error(), 0), true
	}
	p.in.mu.Lock()
	p.sub = p.grant.sub
	p.in.mu.Unlock()
	return out, false
}

// line publishes one ingest line and appends its answer (ack or error).
func (p *producerConn) line(line []byte, n int, out []byte) ([]byte, bool) {
	in := p.in
	if g := p.grant; g != nil && time.Now().UnixNano() > g.exp+int64(in.s.cfg.TokenGrace) {
		in.authFailures.Add(1)
		return codec.AppendIngestError(out, "the token expired: reconnect with a new one", 0), true
	}
	msg, err := codec.ParseIngest(line)
	if err == nil && p.grant != nil && !p.grant.allows(msg.City) {
		err = fmt.Errorf("forbidden: the token does not allow publishing to %q", msg.City)
	}
	if err == nil {
		var seq uint64
		seq, err = in.s.publish(&msg, time.Now())
		if err == nil {
			in.frames.Add(1)
			in.bytes.Add(uint64(len(line)))
			if msg.ID != "" {
				out = codec.AppendAck(out, msg.ID, seq)
			}
			return out, false
		}
	}
	return p.refuse(out, err.Error(), n)
}

// refuse answers a bad line and counts it; past IngestMaxErrors per minute
// the producer is disconnected, with a last answer that says why.
func (p *producerConn) refuse(out []byte, msg string, n int) ([]byte, bool) {
	in, cfg := p.in, &p.in.s.cfg
	in.errors.Add(1)
	p.errors.Add(1)
	out = codec.AppendIngestError(out, msg, n)
	if !p.errs.take(time.Now().UnixNano(), int64(time.Minute)/int64(cfg.IngestMaxErrors), cfg.IngestMaxErrors) {
		in.dropped.Add(1)
		return codec.AppendIngestError(out, fmt.Sprintf("more than %d bad lines per minute: disconnecting", cfg.IngestMaxErrors), 0), true
	}
	return out, false
}

// pace returns how long to wait before reading the next line to keep the
// producer within IngestMaxRate (0 without a bound).
func (p *producerConn) pace() time.Duration {
	rate := p.in.s.cfg.IngestMaxRate
	if rate == 0 {
		return 0
	}
	return time.Duration(p.rate.wait(time.Now().UnixNano(), int64(time.Second)/int64(rate), rate))
}

var errLineTooLong = errors.New("line too long")

// lineReader reads newline-terminated lines of at most max bytes. A longer
// line is skipped through its newline and reported as errLineTooLong.
type lineReader struct {
	r   *bufio.Reader
	buf []byte
	max int
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

func (lr *lineReader) buffered() int { return lr.r.Buffered() }

// next returns the next line without its "\n" (or "\r\n"). The line is valid
// until the next call. At EOF it returns a last unterminated line with the
// error.
func (lr *lineReader) next() ([]byte, error) {
	lr.buf = lr.buf[:0]
	tooLong := false
	for {
		chunk, err := lr.r.ReadSlice('\n')
		if !tooLong {
			if len(lr.buf)+len(chunk) > lr.max+2 {
				tooLong = true
				lr.buf = lr.buf[:0]
			} else {
				lr.buf = append(lr.buf, chunk...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if tooLong {
			return nil, errLineTooLong
		}
		line := bytes.TrimRight(lr.buf, "\r\n")
		if len(line) > lr.max {
			return nil, errLineTooLong
		}
		return line, err
	}
}
