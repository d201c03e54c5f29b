package producer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"time"
)

// maxAnswerBytes bounds an answer line. An ack is at most a few hundred bytes
// (an id of MaxIDLen bytes, escaped, and a seq), so a longer answer can only
// be an error line; its text is dropped, not buffered.
const maxAnswerBytes = 64 << 10

// retainBytes is the largest output buffer kept between bursts; a larger one
// is dropped after its write so that one burst of big lines does not pin
// memory for the connection's life.
const retainBytes = 1 << 20

// entry is one message written (or queued) and not yet answered.
type entry struct {
	id   string
	line int    // 1-based line number on the connection
	raw  []byte // the line as written, with its newline, to resend it
	done func(seq uint64, err error)
	// Resends of a line the gateway answered with "retry": how many so
	// far, until when (zero before the first), and the last answer's
	// error, which the entry fails with if the connection dies first.
	resends int
	until   time.Time
	last    error
}

// queue is a FIFO of entries with a fixed capacity: every entry holds an
// in-flight slot, so it never holds more than Options.MaxInFlight.
type queue struct {
	buf  []entry
	head int
	n    int
}

func (q *queue) push(e entry) {
	if q.n == len(q.buf) {
		panic("BUG: producer: more entries in flight than in-flight slots")
	}
	q.buf[(q.head+q.n)%len(q.buf)] = e
	q.n++
}

func (q *queue) peek() (entry, bool) {
	if q.n == 0 {
		return entry{}, false
	}
	return q.buf[q.head], true
}

func (q *queue) pop() {
	q.buf[q.head] = entry{} // let the callback be collected
	q.head = (q.head + 1) % len(q.buf)
	q.n--
}

// conn is one connection to the gateway, served by two goroutines: writeLoop
// writes whatever senders appended to out since its last write (one write per
// batch, not per message), and readLoop matches answers to entries in line
// order and calls their callbacks. When the connection fails, readLoop fails
// every entry still queued.
//
// A line answered "retry" puts the connection on hold, so that lines reach
// the gateway's stream in the order they were sent: the lines written before
// it are answered as they come, those answered "retry" too kept in order
// (retried); lines sent meanwhile wait unwritten (later). After a backoff,
// once nothing is in flight, the oldest waiting line is written alone; when
// the gateway acks it, every other waiting line is written, in order, and
// the hold ends. A line still answered "retry" goes back to the front for
// another backoff; one that gives up (Options.RetryTimeout) fails, and the
// next is written alone in its turn. A line written before the hold that
// the gateway stored meanwhile is stored before the lines held: the gateway
// answers lines in order but stores those in flight concurrently.
type conn struct {
	p  *Producer
	nc net.Conn
	no uint64 // connection number within the producer, for logs

	wake chan struct{} // cap 1: out has bytes for writeLoop
	done chan struct{} // closed when readLoop has failed every entry and is exiting

	failOnce sync.Once
	answered bool // readLoop only: an answer arrived on this connection

	mu       sync.Mutex // guards the fields below
	out      []byte     // lines appended by senders, not yet taken by writeLoop
	pending  queue      // entries written, in line order
	lines    int        // lines appended so far
	dead     bool       // no more appends: the connection failed or is closing
	draining bool       // Close waits for pending and the hold to empty, then closes
	err      error      // why the connection failed (set with dead)
	// The hold (above; onHold): entries answered "retry", in line order,
	// then entries sent during the hold; due once the backoff has passed;
	// alone while the line written alone is in flight; timer counts the
	// backoff (in p.wg), the timerNo-th armed.
	due, alone     bool
	retried, later []entry
	timer          *time.Timer
	timerNo        uint64
}

// onHold reports whether the connection is on hold: lines wait in it, or
// one of them is written alone. c.mu must be held.
func (c *conn) onHold() bool { return c.alone || c.held() > 0 }

func newConn(p *Producer, nc net.Conn, no uint64) *conn {
	return &conn{
		p:       p,
		nc:      nc,
		no:      no,
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		pending: queue{buf: make([]entry, p.opts.MaxInFlight)},
	}
}

// alive reports whether the connection still takes new lines.
func (c *conn) alive() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.dead && !c.draining
}

// enqueue appends f to the output and its entry to the pending queue. It
// never blocks on I/O. It returns errConnDead when the connection failed
// (the caller dials again) and ErrClosed when the producer is closing.
func (c *conn) enqueue(f *frame, done func(uint64, error)) error {
	c.mu.Lock()
	switch {
	case c.draining:
		c.mu.Unlock()
		return ErrClosed
	case c.dead:
		c.mu.Unlock()
		return errConnDead
	}
	if c.onHold() {
		// Held from now on, for at most RetryTimeout, as if refused now.
		c.later = append(c.later, entry{id: f.id, raw: appendFrame(nil, f), done: done,
			until: time.Now().Add(c.p.opts.RetryTimeout)})
		c.mu.Unlock()
		return nil
	}
	c.lines++
	if c.pending.n == 0 {
		// The gateway owes an answer from now on: arm the ack timeout.
		// readLoop re-arms it on each answer and disarms it when idle.
		_ = c.nc.SetReadDeadline(time.Now().Add(c.p.opts.AckTimeout))
	}
	start := len(c.out)
	c.out = appendFrame(c.out, f)
	e := entry{id: f.id, line: c.lines, done: done}
	if c.p.opts.RetryTimeout > 0 {
		e.raw = bytes.Clone(c.out[start:])
	}
	c.pending.push(e)
	c.mu.Unlock()
	c.kick()
	return nil
}

// kick wakes writeLoop.
func (c *conn) kick() {
	select {
	case c.wake <- struct{}{}:
	default: // writeLoop is already due to run
	}
}

// writeHeld writes held entries as the connection's next lines, the ack
// timeout armed if nothing was in flight. c.mu must be held; the caller
// kicks writeLoop once it is released.
func (c *conn) writeHeld(es ...entry) {
	if c.pending.n == 0 && len(es) > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(c.p.opts.AckTimeout))
	}
	for _, e := range es {
		c.lines++
		e.line = c.lines
		c.pending.push(e)
		c.out = append(c.out, e.raw...)
	}
}

// writeNext writes the oldest held entry alone, if the hold is due and
// nothing is in flight, and reports whether it did. c.mu must be held.
func (c *conn) writeNext() bool {
	if !c.due || c.pending.n > 0 || c.dead {
		return false
	}
	var e entry
	switch {
	case len(c.retried) > 0:
		e, c.retried = c.retried[0], c.retried[1:]
	case len(c.later) > 0:
		e, c.later = c.later[0], c.later[1:]
	default: // the hold is over
		c.due = false
		return false
	}
	c.due, c.alone = false, true
	c.writeHeld(e)
	return true
}

// stopTimer stops the hold's backoff timer, if it has not fired: Close
// need not wait for it. c.mu must be held.
func (c *conn) stopTimer() {
	if c.timer != nil && c.timer.Stop() {
		c.p.wg.Done()
	}
	c.timer = nil
}

// expire takes out of the hold every entry whose RetryTimeout has passed
// (a line written alone has just given up), in line order. c.mu must be
// held; the caller completes them once it is released.
func (c *conn) expire(now time.Time) []entry {
	var out []entry
	keep := func(es []entry) []entry {
		kept := es[:0]
		for _, e := range es {
			if now.Before(e.until) {
				kept = append(kept, e)
			} else {
				out = append(out, e)
			}
		}
		clear(es[len(kept):]) // let the callbacks be collected
		return kept
	}
	c.retried, c.later = keep(c.retried), keep(c.later)
	return out
}

// complete releases e's slot and runs its callback with err, or with its
// last answer's error when it was answered "retry" and err is nil; a line
// never written fails as not stored.
func (c *conn) complete(e entry, err error) {
	c.p.release()
	if e.done == nil {
		return
	}
	switch {
	case err != nil:
	case e.last != nil:
		err = e.last
	default:
		err = &RejectError{Retryable: true,
			Message: fmt.Sprintf("not sent: held behind a line the gateway could not store within %s", c.p.opts.RetryTimeout)}
	}
	e.done(0, err)
}

// held reports how many entries the hold keeps unwritten. c.mu must be held.
func (c *conn) held() int { return len(c.retried) + len(c.later) }

// fail marks the connection dead with cause (the first cause wins) and
// closes the socket, which ends both loops. Safe for concurrent use.
func (c *conn) fail(cause error) {
	c.failOnce.Do(func() {
		// Tell the producer first, so that a sender that sees dead also
		// sees the reconnect backoff.
		c.p.connLost(c, cause)
		c.mu.Lock()
		c.dead, c.err = true, cause
		c.mu.Unlock()
		_ = c.nc.Close()
	})
}

// drain makes the connection refuse new lines and close once every pending
// entry is answered (or the connection fails). Called by Producer.Close.
func (c *conn) drain() {
	c.mu.Lock()
	c.draining = true
	idle := c.pending.n == 0 && c.held() == 0
	c.mu.Unlock()
	if idle {
		c.fail(errClosing)
	}
}

// writeLoop runs on its own goroutine for the connection's life.
func (c *conn) writeLoop() {
	var buf []byte
	for {
		select {
		case <-c.wake:
		case <-c.done:
			return
		}
		c.mu.Lock()
		buf, c.out = c.out, buf[:0]
		c.mu.Unlock()
		if len(buf) == 0 {
			continue
		}
		// A write blocked by TCP backpressure ends when the ack timeout
		// makes readLoop close the socket.
		if _, err := c.nc.Write(buf); err != nil {
			c.fail(fmt.Errorf("cannot write to the gateway: %w", err))
			return
		}
		if cap(buf) > retainBytes {
			buf = nil
		}
	}
}

// readLoop runs on its own goroutine for the connection's life; every
// callback of a message sent on this connection runs here.
func (c *conn) readLoop() {
	br := bufio.NewReaderSize(c.nc, 4<<10)
	var line []byte
	for {
		var (
			tooLong bool
			err     error
		)
		line, tooLong, err = readAnswer(br, line[:0])
		if err != nil {
			c.fail(c.readError(err))
			break
		}
		if err := c.answer(line, tooLong); err != nil {
			c.fail(err)
			break
		}
	}
	c.mu.Lock()
	failed := c.pending
	c.pending = queue{}
	cause := c.err
	held := append(c.retried, c.later...)
	c.retried, c.later = nil, nil
	c.stopTimer()
	c.mu.Unlock()
	// After a refusal the gateway has answered every line it read: those
	// left were not stored.
	var refused *RefusedError
	errors.As(cause, &refused)
	for ; failed.n > 0; failed.pop() {
		e, _ := failed.peek()
		c.p.release()
		switch {
		case e.done == nil:
		case refused != nil:
			e.done(0, refused)
		default:
			e.done(0, &MaybeStoredError{ID: e.id, Err: cause})
		}
	}
	// Then the hold's, in line order: an entry answered "retry" with that
	// answer, one never written as the in-flight ones (it was not stored,
	// and may be sent again with its id as they may).
	for _, e := range held {
		switch {
		case e.last != nil:
			c.complete(e, nil)
		case refused != nil:
			c.complete(e, refused)
		default:
			c.complete(e, &MaybeStoredError{ID: e.id, Err: cause})
		}
	}
	// After the callbacks: the next connection waits for done (see
	// Producer.redial) so that callbacks keep line order.
	close(c.done)
}

// readError turns a read error into the cause given to in-flight messages.
func (c *conn) readError(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w (%s)", ErrAckTimeout, c.p.opts.AckTimeout)
	}
	return fmt.Errorf("connection to the gateway lost: %w", err)
}

// answer matches one answer line to the oldest pending entry and completes
// it. An error means the stream can no longer be trusted; the entry stays
// pending and is failed with the rest. Runs on readLoop.
func (c *conn) answer(line []byte, tooLong bool) error {
	var r response
	if !tooLong {
		var err error
		if r, err = parseResponse(line); err != nil {
			return err
		}
		if r.Error != nil && r.Line == 0 {
			// Not about a line: the gateway refuses the connection (e.g.
			// "too many producer connections") and closes it.
			return &RefusedError{Message: *r.Error}
		}
	}
	c.mu.Lock()
	e, ok := c.pending.peek()
	c.mu.Unlock()
	var (
		seq    uint64
		err    error
		resend bool
	)
	switch {
	case !ok:
		return fmt.Errorf("unexpected answer %.200q: nothing in flight", line)
	case tooLong:
		err = &RejectError{Line: e.line, Message: fmt.Sprintf("(error text longer than %d bytes, not shown)", maxAnswerBytes)}
	case r.Ack != nil:
		if *r.Ack != e.id {
			return fmt.Errorf("ack for id %q where %q (line %d) was due", *r.Ack, e.id, e.line)
		}
		seq = r.Seq
	default:
		if r.Line != e.line {
			return fmt.Errorf("error for line %d where line %d was due: %s", r.Line, e.line, *r.Error)
		}
		if r.Retry == retryMaybeStored {
			err = &MaybeStoredError{ID: e.id, Err: fmt.Errorf("gateway: %s", *r.Error)}
		} else {
			err = &RejectError{Line: r.Line, Message: *r.Error, Retryable: r.Retry != ""}
		}
		resend = r.Retry != "" && c.p.resendable(&e)
	}
	var (
		wrote   bool
		expired []entry
	)
	c.mu.Lock()
	c.pending.pop()
	alone := c.alone
	c.alone = false
	if resend {
		// A hold starts, or its line written alone was refused again:
		// back off.
		backOff := alone || c.held() == 0
		e.resends++
		e.last = err
		if alone {
			// The oldest held: back to the front.
			c.retried = slices.Insert(c.retried, 0, e)
		} else {
			// Written before the hold, answered in line order.
			c.retried = append(c.retried, e)
		}
		if backOff {
			c.due = false
			c.stopTimer()
			c.p.wg.Add(1) // readLoop is counted in p.wg: this Add precedes any Wait on zero
			c.timerNo++
			no := c.timerNo
			c.timer = time.AfterFunc(c.p.opts.backoff(e.resends), func() { c.holdDue(no) })
		}
	}
	switch {
	case alone && !resend && err == nil && !c.dead:
		// The gateway stored the line written alone: write everything
		// held, in order. (A line written before the hold and acked
		// says no more than it did: the hold waits for its backoff.)
		c.writeHeld(c.retried...)
		c.writeHeld(c.later...)
		c.retried, c.later, c.due = nil, nil, false
		c.stopTimer()
		wrote = c.pending.n > 0
	case alone && !resend:
		// The line written alone failed for good, and so do the held
		// lines whose time is up; the next goes alone now.
		expired = c.expire(time.Now())
		c.due = true
		wrote = c.writeNext()
	default:
		wrote = c.writeNext()
	}
	switch {
	case c.pending.n > 0:
		_ = c.nc.SetReadDeadline(time.Now().Add(c.p.opts.AckTimeout))
	default:
		_ = c.nc.SetReadDeadline(time.Time{})
	}
	closeNow := c.draining && c.pending.n == 0 && c.held() == 0
	c.mu.Unlock()
	if wrote {
		c.kick()
	}
	if !c.answered {
		c.answered = true
		c.p.connAnswered()
	}
	if resend {
		return nil // it keeps its in-flight slot
	}
	c.p.release()
	if e.done != nil {
		e.done(seq, err)
	}
	for _, x := range expired {
		c.complete(x, nil)
	}
	if closeNow {
		return errClosing
	}
	return nil
}

// holdDue runs when the no-th hold backoff has passed: the oldest held line
// is written alone once nothing is in flight. A timer that fired as it was
// stopped, another armed since, does nothing. Runs on a timer's goroutine.
func (c *conn) holdDue(no uint64) {
	defer c.p.wg.Done()
	c.mu.Lock()
	if no != c.timerNo || c.timer == nil {
		c.mu.Unlock()
		return
	}
	c.timer, c.due = nil, true
	wrote := c.writeNext()
	c.mu.Unlock()
	if wrote {
		c.kick()
	}
}

// readAnswer reads one answer line into buf (without its newline). A line
// longer than maxAnswerBytes is consumed through its newline and reported
// with tooLong, its bytes dropped. An unterminated last line is an error.
func readAnswer(br *bufio.Reader, buf []byte) (line []byte, tooLong bool, err error) {
	for {
		chunk, err := br.ReadSlice('\n')
		if !tooLong {
			if len(buf)+len(chunk) > maxAnswerBytes+1 {
				tooLong, buf = true, buf[:0]
			} else {
				buf = append(buf, chunk...)
			}
		}
		switch {
		case err == nil:
			if tooLong {
				return buf, true, nil
			}
			return buf[:len(buf)-1], false, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return buf, false, err
		}
	}
}
