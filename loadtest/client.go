package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// client is one simulated dashboard: a WebSocket connection subscribed to
// one city, reconnected with resume when the churner asks. Everything but
// the fields marked otherwise belongs to the client's goroutine (run), and
// to its poller while the poller reads the connection (read).
type client struct {
	w    *worker
	idx  int // global index: city idx%cities, source address, slow share
	city string
	slow bool // stops reading while the worker is paused

	br *bufio.Reader // the upgrade answer
	ts *tsReader
	// pend holds the bytes of a frame not yet whole; at the hand-over, the
	// frames that came with the upgrade answer, received at pendTS.
	pend   []byte
	pendTS int64
	// The read being handled: when it was read (Unix ns), and whether the
	// kernel gave no receive timestamp for it.
	readAt int64
	noTS   bool
	done   chan error // the poller's end of a connection: why

	tally tally
	epoch uint64
	// since is the dial time of the current connection (Unix ns): a frame
	// sent before it reached the client by replay, not live.
	since   int64
	dials   int           // connections made, reconnects included
	readyAt bool          // the current connection got its initial_data/subscribed
	resumes uint64        // reconnects answered resumed:true at the right seq
	bad     uint64        // protocol surprises: bad resume answer, unknown message, error message
	badTime uint64        // data_update without a parsable "t"
	dropped bool          // the server (or the network) ended it
	failed  bool          // never got ready
	ready   func(ok bool) // run's, called once the first connection is up or failed

	mu  sync.Mutex // guards cur and fd, for the churner's and closer's interrupt
	cur net.Conn   // while connecting
	fd  int        // while a poller reads it (detach), else -1

	// up is the connection's race between its first message and the
	// connect time-out: upWaiting, then upReady or upTimedOut.
	up atomic.Int32

	reconnect atomic.Bool   // set by the churner before it interrupts
	lastSeq   atomic.Uint64 // tally.last, for progress (behind) while running
	ended     atomic.Bool   // run has returned
}

// errClosing ends a read when the worker closes every connection.
var errClosing = errors.New("closing")

// closeError is a close frame from the server.
type closeError struct {
	code   ws.StatusCode
	reason string
}

func (e *closeError) Error() string { return fmt.Sprintf("closed by server: %d %s", e.code, e.reason) }

// run connects, reads until the connection ends, and reconnects with resume
// while the churner asks for it. ready is called once, when the first
// connection is subscribed or has failed for good.
func (c *client) run(ready func(ok bool)) {
	w := c.w
	defer c.ended.Store(true)
	c.ready = ready
	for {
		first := c.dials == 0
		start := time.Now()
		err := c.connect(start)
		if err == nil {
			c.since = start.UnixNano()
			err = c.read(start)
		}
		c.setConn(nil)
		if first && !c.readyAt {
			c.failed = true
			w.failed.Add(1)
			if r := (*refusalError)(nil); errors.As(err, &r) {
				w.noteErr("refused "+r.kind(), err)
			} else {
				w.noteErr("connect", err)
			}
			ready(false)
			return
		}
		if w.closing.Load() {
			return
		}
		if c.reconnect.CompareAndSwap(true, false) {
			continue
		}
		c.dropped = true
		w.dropped.Add(1)
		w.noteErr("dropped", err)
		return
	}
}

func (c *client) setConn(nc net.Conn) {
	c.mu.Lock()
	if c.cur != nil && nc == nil {
		_ = c.cur.Close()
	}
	c.cur = nc
	c.mu.Unlock()
}

// interrupt ends the current connection, if any, from another goroutine:
// it closes it while connecting, and shuts it down while a poller reads it
// (the poller closes it, so that its descriptor is never reused under it).
func (c *client) interrupt() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.cur != nil:
		_ = c.cur.Close()
	case c.fd >= 0:
		_ = unix.Shutdown(c.fd, unix.SHUT_RDWR)
	default:
		return false
	}
	return true
}

// connect dials, upgrades and subscribes: with the URL's ?cities= (and
// since/epoch when resuming) or, per the subscribe option, with an auth or
// subscribe message. A resume alternates between the URL and the subscribe
// message, so that churn covers both.
func (c *client) connect(start time.Time) error {
	w, o := c.w, c.w.o
	resume := c.tally.begun
	c.dials++
	c.readyAt = false
	byURL := o.Subscribe == "url"
	if resume {
		byURL = c.dials%2 == 0
	}
	q := url.Values{}
	if o.Token != "" {
		q.Set("token", o.Token)
	}
	if byURL {
		q.Set("cities", c.city)
		if resume {
			q.Set("since", strconv.FormatUint(c.tally.last, 10))
			q.Set("epoch", strconv.FormatUint(c.epoch, 10))
		}
	}
	target := o.Path
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	var nc net.Conn
	var err error
	addr := w.d.addr(c.idx, c.dials)
	for attempt := range 3 {
		if attempt > 0 {
			w.retries.Add(1)
			select {
			case <-w.ctx.Done():
				return w.ctx.Err()
			case <-time.After(time.Duration(attempt) * 250 * time.Millisecond):
			}
		}
		if nc, err = w.dial(c, addr); err == nil {
			break
		}
	}
	if err != nil {
		return err
	}
	c.setConn(nc)
	if w.closing.Load() {
		return errClosing
	}
	_ = nc.SetDeadline(start.Add(o.ConnectTimeout))
	if c.ts, err = newTSReader(nc); err != nil {
		return err
	}
	if c.br == nil {
		c.br = bufio.NewReaderSize(c.ts, 4<<10)
	} else {
		c.br.Reset(c.ts)
	}
	if err := handshake(nc, c.br, addr, target); err != nil {
		return err
	}
	switch {
	case byURL:
		return nil
	case resume:
		return c.send(nc, fmt.Sprintf(`{"type":"subscribe","cities":[%q],"since":{%q:%d},"epoch":%d}`,
			c.city, c.city, c.tally.last, c.epoch))
	case o.Subscribe == "auth":
		return c.send(nc, fmt.Sprintf(`{"type":"auth","token":%q,"cityId":%q}`, o.Token, c.city))
	default:
		return c.send(nc, fmt.Sprintf(`{"type":"subscribe","cities":[%q]}`, c.city))
	}
}

// send writes one masked text frame.
func (c *client) send(nc net.Conn, msg string) error {
	return ws.WriteFrame(nc, ws.MaskFrameInPlace(ws.NewTextFrame([]byte(msg))))
}

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// handshake sends the upgrade request and reads the 101 response through
// br, which keeps whatever the server sent behind it.
func handshake(nc net.Conn, br *bufio.Reader, host, target string) error {
	var key [16]byte
	_, _ = rand.Read(key[:])
	k := base64.StdEncoding.EncodeToString(key[:])
	req := "GET " + target + " HTTP/1.1\r\nHost: " + host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + k +
		"\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		return fmt.Errorf("cannot send upgrade request: %w", err)
	}
	status, err := br.ReadSlice('\n')
	if err != nil {
		return fmt.Errorf("cannot read upgrade response: %w", err)
	}
	if !bytes.HasPrefix(status, []byte("HTTP/1.1 101 ")) {
		return readRefusal(br, status)
	}
	sum := sha1.Sum([]byte(k + wsGUID))
	want := base64.StdEncoding.EncodeToString(sum[:])
	accepted := false
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("cannot read upgrade response: %w", err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, val, _ := bytes.Cut(line, []byte(":"))
		if bytes.EqualFold(name, []byte("Sec-WebSocket-Accept")) && string(bytes.TrimSpace(val)) == want {
			accepted = true
		}
	}
	if !accepted {
		return errors.New("upgrade response without the right Sec-WebSocket-Accept")
	}
	return nil
}

// refusalError is the node's HTTP answer to an upgrade it refused: its
// status and the code and message of its body ("invalid_token: …").
type refusalError struct {
	status int
	code   string
	msg    string
}

func (e *refusalError) Error() string {
	return fmt.Sprintf("upgrade refused: %d %s", e.status, e.msg)
}

// kind names the refusal in the report: "401 invalid_token", "503".
func (e *refusalError) kind() string {
	if e.code == "" {
		return strconv.Itoa(e.status)
	}
	return strconv.Itoa(e.status) + " " + e.code
}

// readRefusal reads the rest of a refused upgrade's answer (status is its
// first line) for its status and the code of its body.
func readRefusal(br *bufio.Reader, status []byte) error {
	e := &refusalError{msg: string(bytes.TrimSpace(status))}
	if f := bytes.Fields(status); len(f) >= 2 {
		e.status, _ = strconv.Atoi(string(f[1]))
	}
	n := 0
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return e
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, val, _ := bytes.Cut(line, []byte(":"))
		if bytes.EqualFold(name, []byte("Content-Length")) {
			n, _ = strconv.Atoi(string(bytes.TrimSpace(val)))
		}
	}
	body := make([]byte, max(0, min(n, 512)))
	if _, err := io.ReadFull(br, body); err != nil || len(body) == 0 {
		return e
	}
	e.msg = strings.TrimSpace(string(body))
	// The node's bodies read "code: message", the code in snake_case.
	if code, _, ok := strings.Cut(e.msg, ": "); ok && code != "" && strings.Trim(code, "abcdefghijklmnopqrstuvwxyz_") == "" {
		e.code = code
	}
	return e
}

// Connection states between the poller and the connect time-out.
const (
	upWaiting = iota
	upReady
	upTimedOut
)

// read hands the connection to a poller and waits until it ends; the first
// message must come within the connect time-out of start, the dial. The
// poller answers pings and accounts every city message (frames).
func (c *client) read(start time.Time) error {
	w := c.w
	if err := c.detach(); err != nil {
		return err
	}
	c.up.Store(upWaiting)
	w.poller.add(c)
	t := time.NewTimer(time.Until(start.Add(w.o.ConnectTimeout)))
	defer t.Stop()
	select {
	case err := <-c.done:
		return err
	case <-t.C:
	}
	if !c.up.CompareAndSwap(upWaiting, upTimedOut) {
		return <-c.done
	}
	c.interrupt()
	<-c.done
	return fmt.Errorf("no answer to the subscription within %s", w.o.ConnectTimeout)
}

// detach takes the connection out of Go's netpoller for a poller: it keeps
// a duplicate of the socket and closes the net.Conn (which removes it from
// the runtime's epoll), and keeps what the upgrade's reader read ahead.
// Under mu, so that an interrupt closes either the net.Conn, before (then
// the duplicate fails), or the duplicate, after.
func (c *client) detach() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	nc := c.cur
	if nc == nil {
		return errClosing
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return errNotTCP
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return err
	}
	if derr != nil {
		return fmt.Errorf("cannot duplicate the socket: %w", derr)
	}
	_ = nc.Close()
	c.cur, c.fd = nil, fd
	ahead, _ := c.br.Peek(c.br.Buffered())
	c.pend = append(c.pend[:0], ahead...)
	c.pendTS = c.ts.ts
	return nil
}

// frames handles every whole frame at the start of b, which arrived at ts
// (the kernel's receive timestamp, Unix ns; 0: none) and was read at now,
// and returns the bytes they took. An error ends the connection. Runs on
// the poller.
func (c *client) frames(b []byte, ts, now int64) (int, error) {
	c.readAt, c.noTS = now, ts == 0
	at := ts
	if at == 0 {
		at = now
	}
	used := 0
	for {
		op, payload, n, err := nextFrame(b[used:])
		if err != nil || n == 0 {
			return used, err
		}
		used += n
		if err := c.frame(op, payload, at); err != nil {
			return used, err
		}
	}
}

// frame handles one frame that arrived at at.
func (c *client) frame(op ws.OpCode, payload []byte, at int64) error {
	switch op {
	case ws.OpText:
		if c.message(payload, at) && !c.readyAt && c.up.CompareAndSwap(upWaiting, upReady) {
			c.readyAt = true
			lat := at - c.since
			if c.dials == 1 {
				c.w.connect.record(lat)
				c.ready(true)
			} else {
				c.w.reconnectLat.record(lat)
			}
		}
	case ws.OpPing:
		pong := ws.MustCompileFrame(ws.MaskFrameInPlace(ws.NewPongFrame(bytes.Clone(payload))))
		if n, err := unix.Write(c.fd, pong); err != nil || n != len(pong) {
			return fmt.Errorf("cannot answer a ping (%d of %d bytes written): %v", n, len(pong), err)
		}
	case ws.OpClose:
		ce := &closeError{code: ws.StatusNoStatusRcvd}
		if len(payload) >= 2 {
			ce.code = ws.StatusCode(binary.BigEndian.Uint16(payload))
			ce.reason = string(payload[2:])
		}
		return ce
	}
	return nil
}

var (
	prefixData       = []byte(`{"type":"data_update"`)
	prefixAlerts     = []byte(`{"type":"alerts"`)
	prefixInitial    = []byte(`{"type":"initial_data"`)
	prefixSubscribed = []byte(`{"type":"subscribed"`)
	prefixPong       = []byte(`{"type":"pong"`)
	keySeq           = []byte(`"seq":`)
	keyEpoch         = []byte(`"epoch":`)
	keyResumedFalse  = []byte(`"resumed":false`)
	keyT             = []byte(`"data":{"t":`)
)

// message accounts one text message received at (Unix ns) and reports
// whether it makes the connection ready: the initial_data of a new
// subscription, or the subscribed answer of a resume.
func (c *client) message(m []byte, at int64) bool {
	w := c.w
	switch {
	case bytes.HasPrefix(m, prefixData), bytes.HasPrefix(m, prefixAlerts):
		seq, ok := numberAfter(m, keySeq)
		if !ok {
			c.bad++
			return false
		}
		c.cityFrame(m, seq, at)
	case bytes.HasPrefix(m, prefixInitial):
		seq, _ := numberAfter(m, keySeq)
		if !bytes.Contains(m, keyResumedFalse) {
			// A snapshot from ingest, in stream: a city frame.
			c.cityFrame(m, seq, at)
			return false
		}
		if !c.tally.begin(seq) {
			c.tally.resync(seq)
			w.resyncs.Add(1)
		}
		c.lastSeq.Store(c.tally.last)
		return true
	case bytes.HasPrefix(m, prefixSubscribed):
		if e, ok := numberAfter(m, keyEpoch); ok {
			c.epoch = e
		}
		if !c.tally.begun {
			return false // the initial_data follows
		}
		if bytes.Contains(m, keyResumedFalse) {
			return false // out of the ring: an initial_data follows
		}
		// resumed:true must continue exactly after the seq we gave.
		if seq, ok := numberAfter(m, keySeq); !ok || seq != c.tally.last {
			c.bad++
			w.noteErr("resume", fmt.Errorf("resumed at seq %d, asked for %d", seq, c.tally.last))
		} else {
			c.resumes++
		}
		return true
	case bytes.HasPrefix(m, prefixPong):
	default:
		c.bad++
		w.noteErr("message", fmt.Errorf("unexpected message %.120s", m))
	}
	return false
}

// cityFrame accounts a data_update, alerts or in-stream snapshot with seq,
// and records its latency from the send time the publisher put in it.
func (c *client) cityFrame(m []byte, seq uint64, at int64) {
	w := c.w
	if !c.tally.frame(seq) {
		return
	}
	c.lastSeq.Store(c.tally.last)
	w.deliveries.Add(1)
	sent, ok := numberAfter(m, keyT)
	if !ok {
		c.badTime++
		return
	}
	w.sample(c, seq, int64(sent), at, c.readAt)
}

// numberAfter parses the unsigned integer that follows the first key in m.
func numberAfter(m, key []byte) (uint64, bool) {
	i := bytes.Index(m, key)
	if i < 0 {
		return 0, false
	}
	var n uint64
	digits := 0
	for _, ch := range m[i+len(key):] {
		if ch < '0' || ch > '9' || digits == 19 {
			break
		}
		n = n*10 + uint64(ch-'0')
		digits++
	}
	return n, digits > 0
}

// dialer opens TCP connections to the nodes, from rotating 127.0.0.x source
// addresses when they are on loopback.
type dialer struct {
	addrs []string // the nodes' WebSocket addresses (-addr, comma-separated)
	srcs  int      // source addresses, from 127.0.0.2
	local bool     // the nodes are on loopback: spread the source addresses
}

func newDialer(addrs string, srcs int) *dialer {
	d := &dialer{addrs: strings.Split(addrs, ","), srcs: srcs, local: true}
	for _, a := range d.addrs {
		if ap, err := netip.ParseAddrPort(a); err == nil {
			d.local = d.local && ap.Addr().IsLoopback()
		} else if host, _, err := net.SplitHostPort(a); err != nil || host != "localhost" {
			d.local = false
		}
	}
	return d
}

// addr is the node of client idx's dials-th connection: clients are spread
// over the nodes, and each reconnect moves to the next node (a resume on
// another node, in a cluster).
func (d *dialer) addr(idx, dials int) string {
	return d.addrs[(idx+max(dials-1, 0))%len(d.addrs)]
}

// dial connects client idx to addr. IP_BIND_ADDRESS_NO_PORT defers the port choice
// to connect(), where the kernel may reuse a port for different
// destinations: without it every bind takes a port of its own. rcvbuf, when
// positive, shrinks the receive buffer before the connection exists (a slow
// consumer fills up sooner).
func (d *dialer) dial(ctx context.Context, addr string, idx, rcvbuf int) (net.Conn, error) {
	nd := net.Dialer{
		Timeout: 10 * time.Second,
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = enableTimestamps(fd)
				if serr == nil && d.local {
					serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
				}
				if serr == nil && rcvbuf > 0 {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
				}
			}); err != nil {
				return err
			}
			return serr
		},
	}
	if d.local {
		nd.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+idx%d.srcs))}
	}
	return nd.DialContext(ctx, "tcp", addr)
}
