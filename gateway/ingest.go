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
type ingest struct {
	s  *Server
	ln net.Listener

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup

	frames   atomic.Uint64
	bytes    atomic.Uint64
	errors   atomic.Uint64
	rejected atomic.Uint64
}

func (s *Server) listenIngest() (*ingest, error) {
	ln, err := net.Listen("tcp", s.cfg.IngestAddr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen for ingest on %s: %w", s.cfg.IngestAddr, err)
	}
	return &ingest{s: s, ln: ln, conns: make(map[net.Conn]struct{})}, nil
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
		if !in.track(c) {
			in.rejected.Add(1)
			_, _ = c.Write(codec.AppendIngestError(nil, "too many producer connections", 0))
			_ = c.Close()
			continue
		}
		go in.handle(c)
	}
}

// track registers c unless the port is closed or full.
func (in *ingest) track(c net.Conn) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed || len(in.conns) >= in.s.cfg.IngestMaxConns {
		return false
	}
	in.conns[c] = struct{}{}
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
	in.mu.Unlock()
	st.IngestFrames = in.frames.Load()
	st.IngestBytes = in.bytes.Load()
	st.IngestErrors = in.errors.Load()
	st.IngestRejected = in.rejected.Load()
}

// handle serves one producer until it closes or stops reading its answers.
func (in *ingest) handle(c net.Conn) {
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
		out = out[:0]
		switch {
		case errors.Is(err, errLineTooLong):
			in.errors.Add(1)
			out = codec.AppendIngestError(out, fmt.Sprintf("line longer than %d bytes", cfg.IngestMaxLineBytes), n)
		case len(line) > 0:
			out = in.line(line, n, out)
		}
		if len(out) > 0 {
			_ = c.SetWriteDeadline(time.Now().Add(cfg.IngestWriteTimeout))
			if _, werr := w.Write(out); werr != nil {
				return
			}
		}
		// Answer once the producer's pipelined lines are all read.
		if r.buffered() == 0 || err != nil {
			if w.Flush() != nil {
				return
			}
		}
		if err != nil && !errors.Is(err, errLineTooLong) {
			break
		}
	}
	_ = w.Flush()
}

// line publishes one ingest line and appends its answer (ack or error).
func (in *ingest) line(line []byte, n int, out []byte) []byte {
	msg, err := codec.ParseIngest(line)
	if err == nil {
		var seq uint64
		seq, err = in.s.publish(&msg, time.Now())
		if err == nil {
			in.frames.Add(1)
			in.bytes.Add(uint64(len(line)))
			if msg.ID != "" {
				out = codec.AppendAck(out, msg.ID, seq)
			}
			return out
		}
	}
	in.errors.Add(1)
	return codec.AppendIngestError(out, err.Error(), n)
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
