package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/metrocast/metrocast/gateway/producer"
)

// pushDefaultAddr is the ingest address push dials without -addr.
const pushDefaultAddr = "127.0.0.1:7070"

// runPush implements `metrocast push`: it reads NDJSON from stdin, sends
// every non-empty line to the gateway's ingest port (pipelined, with at most
// producer.DefaultMaxInFlight lines unanswered; the producer resends those
// answered with "retry" for producer.DefaultRetryTimeout, the lines after
// them held back so that they are stored in order), prints one JSON
// line per answer to stdout and a summary to stderr. It returns an error if any line
// was rejected or may not have been stored.
func runPush(args []string) error {
	fs := flag.NewFlagSet("push", flag.ContinueOnError)
	def := pushDefaultAddr
	if v := os.Getenv("METROCAST_INGEST_ADDR"); v != "" {
		def = v
	}
	addr := fs.String("addr", def, "gateway ingest `address` (env METROCAST_INGEST_ADDR)")
	timeout := fs.Duration("timeout", producer.DefaultAckTimeout, "how long to wait to connect and for each answer")
	tokenFile := fs.String("token-file", "", "`file` holding the token sent first, for an ingest port beyond loopback (else env METROCAST_INGEST_TOKEN; see metrocast token -publish)")
	fs.Func("token", "refused: a token on the command line shows in ps; use -token-file or METROCAST_INGEST_TOKEN", func(string) error {
		return errors.New("a token on the command line is visible to every local user (ps): use -token-file FILE or METROCAST_INGEST_TOKEN")
	})
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: metrocast push [flags] < lines.ndjson

Sends each non-empty stdin line, one JSON object such as
  {"city":"nairobi","type":"data_update","data":{"temp":21}}
to the ingest port, and prints one line per answer to stdout:
  {"line":N,"seq":S}          stored under seq S
  {"line":N,"error":"..."}    rejected, or not known to be stored
where N is the stdin line number. Lines without an "id" get a generated one.
A line the gateway could not store for a fault of its cluster bus (NATS
down; its answer has "retry") is resent with the same id, backing off, for
up to a minute before it counts as not stored.
Exits non-zero if any line was not acked.

flags:
`)
		printFlags(fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{fmt.Sprintf("push: unexpected argument %q (lines are read from stdin)", fs.Arg(0))}
	}
	if *timeout <= 0 {
		return fmt.Errorf("push: -timeout (%s) must be > 0", *timeout)
	}
	token := os.Getenv("METROCAST_INGEST_TOKEN")
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("push: -token-file: %w", err)
		}
		token = string(bytes.TrimSpace(b))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return push(ctx, stop, os.Stdin, os.Stdout, os.Stderr, *addr, *timeout, token)
}

// push sends the lines of in and reports to out (answers) and errOut
// (connection events, summary). stop is called once reading ends, so that a
// second interrupt kills a push waiting for its last answers.
func push(ctx context.Context, stop func(), in io.Reader, out, errOut io.Writer, addr string, timeout time.Duration, token string) error {
	opts := producer.Options{
		DialTimeout: timeout,
		AckTimeout:  timeout,
		Logger:      slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if token != "" {
		opts.Token = func() (string, error) { return token, nil }
	}
	p, err := producer.Dial(ctx, addr, opts)
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	start := time.Now()
	rep := &pushReport{w: bufio.NewWriter(out)}
	rep.idle.L = &rep.mu
	const maxLine = producer.DefaultMaxLineBytes
	r := bufio.NewReaderSize(in, 64<<10)
	var (
		buf   []byte
		fatal error
	)
	for n := 1; fatal == nil; n++ {
		if msg := rep.refusal(); msg != "" {
			// Every line sent now would be refused the same way.
			fatal = refusedError(msg, addr, token, n)
			break
		}
		line, tooLong, rerr := pushReadLine(r, buf[:0], maxLine)
		buf = line
		switch {
		case tooLong:
			rep.local(n, fmt.Sprintf("line longer than %d bytes", maxLine))
		case len(bytes.TrimSpace(line)) > 0:
			fatal = pushLine(ctx, p, rep, line, n, timeout)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			fatal = fmt.Errorf("cannot read stdin: %w", rerr)
		}
	}
	stop()
	_ = p.Close() // waits for the answers still due
	werr := rep.flush()

	acked, rejected, unknown := rep.counts()
	fmt.Fprintf(errOut, "push: %d lines: %d acked, %d rejected, %d not known to be stored (%s)\n",
		acked+rejected+unknown, acked, rejected, unknown, time.Since(start).Round(time.Millisecond))
	if msg := rep.refusal(); msg != "" && fatal == nil {
		fatal = refusedError(msg, addr, token, 0)
	}
	switch {
	case fatal != nil:
		return fmt.Errorf("push: %w", fatal)
	case werr != nil:
		return fmt.Errorf("push: cannot write the answers: %w", werr)
	case rejected > 0 || unknown > 0:
		return fmt.Errorf("push: %d rejected and %d not known to be stored, of %d lines", rejected, unknown, acked+rejected+unknown)
	}
	return nil
}

// refusedError explains a connection the gateway refused, naming the
// remedy for a token it wants; from, when not 0, is the first stdin line
// not sent.
func refusedError(msg, addr, token string, from int) error {
	var err error
	switch {
	case !strings.HasPrefix(msg, "authentication failed"):
		err = fmt.Errorf("the gateway at %s refused the connection: %s", addr, msg)
	case token == "":
		err = fmt.Errorf("the ingest port at %s wants a token (%s): give one with a publish claim in -token-file or METROCAST_INGEST_TOKEN (metrocast token -sub NAME -publish CITIES > FILE mints one)", addr, msg)
	default:
		err = fmt.Errorf("the ingest port at %s refused the token (%s): give -token-file one with a publish claim that the node's keys verify (metrocast token -sub NAME -publish CITIES > FILE mints one)", addr, msg)
	}
	if from > 0 {
		err = fmt.Errorf("%w; stdin lines from %d on were not sent", err, from)
	}
	return err
}

// pushLine hands stdin line n to the producer. A line the producer refuses
// is reported; an error about the gateway (it cannot be reached) is retried,
// the producer pacing the dials with its backoff, until the gateway has been
// unreachable for timeout, and then returned, as is an interrupt.
func pushLine(ctx context.Context, p *producer.Producer, rep *pushReport, line []byte, n int, timeout time.Duration) error {
	var downSince time.Time
	for {
		rep.sent()
		err := p.SendAsync(ctx, line, func(seq uint64, err error) { rep.answer(n, seq, err) })
		switch {
		case err == nil:
			return nil
		case errors.Is(err, producer.ErrInvalidLine), errors.Is(err, producer.ErrLineTooLong):
			rep.unsent(n, err.Error())
			return nil
		}
		rep.unsent(0, "")
		if ctx.Err() != nil {
			return errors.New("interrupted")
		}
		if downSince.IsZero() {
			downSince = time.Now()
		}
		if time.Since(downSince) >= timeout {
			return err
		}
	}
}

// pushReport writes one JSON line per answer, in stdin order, and counts
// outcomes. Answers come in line order from the producer's callbacks (on its
// reader goroutine); a line refused before sending waits until every line
// before it is answered, so it too is reported in its place.
type pushReport struct {
	mu       sync.Mutex
	idle     sync.Cond // signalled when inFlight drops to 0; L is &mu
	w        *bufio.Writer
	err      error // first write error
	inFlight int
	acked    int
	rejected int
	unknown  int
	refused  string // the first refusal of a connection by the gateway
}

type pushAck struct {
	Line int    `json:"line"`
	Seq  uint64 `json:"seq"`
}

type pushError struct {
	Line  int    `json:"line"`
	Error string `json:"error"`
}

// sent counts a line handed to SendAsync; answer or unsent settles it.
func (r *pushReport) sent() {
	r.mu.Lock()
	r.inFlight++
	r.mu.Unlock()
}

// unsent settles a line SendAsync refused; n == 0 means it is not
// reported (the push is stopping).
func (r *pushReport) unsent(n int, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight--
	if n > 0 {
		r.rejectLocked(n, msg)
	}
}

// local reports a line refused before it reached the producer.
func (r *pushReport) local(n int, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rejectLocked(n, msg)
}

// rejectLocked reports a line refused before sending once the lines before
// it are answered. Every line in flight is answered within the producer's
// ack timeout, so the wait is bounded. r.mu must be held.
func (r *pushReport) rejectLocked(n int, msg string) {
	for r.inFlight > 0 {
		r.idle.Wait()
	}
	r.rejected++
	r.writeLocked(pushError{Line: n, Error: msg})
}

// answer reports the gateway's answer for stdin line n.
func (r *pushReport) answer(n int, seq uint64, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight--
	if r.inFlight == 0 {
		r.idle.Broadcast()
	}
	var (
		rej *producer.RejectError
		ref *producer.RefusedError
	)
	switch {
	case err == nil:
		r.acked++
		r.writeLocked(pushAck{Line: n, Seq: seq})
	case errors.As(err, &ref):
		// Not stored: the gateway refused the connection it was sent on.
		r.rejected++
		if r.refused == "" {
			r.refused = ref.Message
		}
		r.writeLocked(pushError{Line: n, Error: ref.Error()})
	case errors.As(err, &rej):
		// The gateway's line number counts lines on its connection, not
		// stdin lines: report its message alone.
		r.rejected++
		r.writeLocked(pushError{Line: n, Error: rej.Message})
	default:
		r.unknown++
		r.writeLocked(pushError{Line: n, Error: err.Error()})
	}
}

// writeLocked writes v as one line, flushing when nothing is in flight so
// that an interactive push shows each answer at once while a bulk push
// writes in blocks. r.mu must be held.
func (r *pushReport) writeLocked(v any) {
	if r.err != nil {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic("BUG: cannot marshal a push report: " + err.Error())
	}
	b = append(b, '\n')
	if _, err := r.w.Write(b); err != nil {
		r.err = err
		return
	}
	if r.inFlight == 0 {
		r.err = r.w.Flush()
	}
}

func (r *pushReport) flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		r.err = r.w.Flush()
	}
	return r.err
}

// refusal returns the gateway's reason for the first connection it
// refused, or "".
func (r *pushReport) refusal() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refused
}

func (r *pushReport) counts() (acked, rejected, unknown int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.acked, r.rejected, r.unknown
}

// pushReadLine reads the next line of r into buf, without its "\n" or
// "\r\n". A line longer than limit bytes is consumed through its newline and
// reported with tooLong, its bytes dropped. At the end of the input it
// returns the last, unterminated line (possibly empty) with io.EOF.
func pushReadLine(r *bufio.Reader, buf []byte, limit int) (line []byte, tooLong bool, err error) {
	for {
		chunk, err := r.ReadSlice('\n')
		if !tooLong {
			if len(buf)+len(chunk) > limit+2 { // room for "\r\n"
				tooLong, buf = true, buf[:0]
			} else {
				buf = append(buf, chunk...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		line = bytes.TrimSuffix(buf, []byte("\n"))
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) > limit {
			tooLong, line = true, line[:0]
		}
		return line, tooLong, err
	}
}
