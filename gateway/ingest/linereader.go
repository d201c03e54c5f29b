package ingest

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"time"
)

var (
	errLineTooLong = errors.New("line too long")
	errLineTimeout = errors.New("line not complete in time")
)

// lineReader reads newline-terminated lines of at most max bytes. A longer
// line is skipped through its newline and reported as errLineTooLong. With
// a timeout, a line must be whole within it of its first byte
// (errLineTimeout), however long the wait for that byte.
type lineReader struct {
	r   *bufio.Reader
	src readWatch
	buf []byte
	max int

	// timeout bounds a line once begun, through deadline, which sets the
	// source's read deadline (the zero time: none). A producer that
	// trickles a line forever would hold its goroutine and buffer.
	timeout  time.Duration
	deadline func(time.Time) error
	due      time.Time // the deadline in force; zero: none
	// begin, when set, bounds the wait for the next line's first byte
	// (see firstBy); zero: the wait is unbounded.
	begin time.Time
}

// newLineReader reads lines from r. timeout > 0 bounds each line through
// deadline, r's read deadline (net.Conn.SetReadDeadline).
func newLineReader(r io.Reader, max int, timeout time.Duration, deadline func(time.Time) error) *lineReader {
	lr := &lineReader{src: readWatch{r: r}, max: max}
	lr.r = bufio.NewReaderSize(&lr.src, 64<<10)
	if timeout > 0 && deadline != nil {
		lr.timeout, lr.deadline = timeout, deadline
	}
	return lr
}

// readWatch tells whether the last read filled the buffer it was given:
// then the source likely has more waiting (a producer sending faster than
// it is read).
type readWatch struct {
	r    io.Reader
	full bool
}

func (w *readWatch) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	w.full = n == len(p)
	return n, err
}

// backlog reports whether the producer has likely sent more than the
// reader has taken in.
func (lr *lineReader) backlog() bool { return lr.src.full }

func (lr *lineReader) buffered() int { return lr.r.Buffered() }

// hasLine reports whether a whole line is buffered: next returns it
// without reading.
func (lr *lineReader) hasLine() bool {
	n := lr.r.Buffered()
	if n == 0 {
		return false
	}
	b, _ := lr.r.Peek(n)
	return bytes.IndexByte(b, '\n') >= 0
}

// next returns the next line without its "\n" (or "\r\n"). The line is valid
// until the next call. At EOF it returns a last unterminated line with the
// error.
func (lr *lineReader) next() ([]byte, error) {
	if lr.timeout > 0 {
		if err := lr.arm(); err != nil {
			return nil, err
		}
	}
	line, err := lr.read()
	if err != nil && !lr.due.IsZero() && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(lr.due) {
		// Our deadline, not one set from outside (Server.Close).
		return nil, errLineTimeout
	}
	return line, err
}

// firstBy bounds the wait for the first byte of the next line (a
// producer's auth line) to t: past it, next returns
// os.ErrDeadlineExceeded. Lines after it wait without a bound. It needs
// the reader's deadline (a timeout).
func (lr *lineReader) firstBy(t time.Time) {
	if lr.deadline != nil {
		lr.begin = t
	}
}

// arm waits for the first byte of the next line (without a bound but
// firstBy's), then sets the deadline for the rest of it, unless the line
// is buffered whole (no read to bound: a producer that pipelines its
// lines costs no deadline per line).
func (lr *lineReader) arm() error {
	if lr.r.Buffered() == 0 {
		if !lr.due.IsZero() || !lr.begin.IsZero() {
			// firstBy's deadline, else none; one left in force stays
			// in due, to be lifted at the next line.
			lr.due, lr.begin = lr.begin, time.Time{}
			if err := lr.deadline(lr.due); err != nil {
				return err
			}
		}
		if _, err := lr.r.Peek(1); err != nil {
			return err
		}
	}
	if lr.hasLine() {
		return nil
	}
	lr.due = time.Now().Add(lr.timeout)
	return lr.deadline(lr.due)
}

// read reads the next line (see next).
func (lr *lineReader) read() ([]byte, error) {
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
