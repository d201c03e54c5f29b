package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// TestIdleClientIsPingedThenClosed checks that the server pings a client that
// sends nothing and closes it with 1001 after IdleTimeout, when it never
// answers.
func TestIdleClientIsPingedThenClosed(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{PingInterval: 100 * time.Millisecond, IdleTimeout: 300 * time.Millisecond})

	// gobwas at the frame level: it answers nothing by itself.
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	c, br, _, err := ws.Dial(ctx, wsURL(s, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if br == nil {
		br = bufio.NewReader(c)
	}
	_ = c.SetReadDeadline(time.Now().Add(readTimeout))
	pings := 0
	for {
		f, err := ws.ReadFrame(br)
		if err != nil {
			t.Fatalf("after %d pings: %s", pings, err)
		}
		if f.Header.OpCode == ws.OpPing {
			if len(f.Payload) != 0 || f.Header.Masked {
				t.Fatalf("ping with payload %q masked %v", f.Payload, f.Header.Masked)
			}
			pings++
			continue
		}
		if f.Header.OpCode != ws.OpClose {
			t.Fatalf("got a frame of opcode %d (%q), want pings then a close", f.Header.OpCode, f.Payload)
		}
		if code := ws.StatusCode(binary.BigEndian.Uint16(f.Payload)); code != ws.StatusGoingAway {
			t.Fatalf("closed with %d, want 1001", code)
		}
		break
	}
	if pings == 0 {
		t.Fatal("closed for idleness without a ping first")
	}
	waitCloses(t, s, CloseIdle, 1)
}

// TestPongKeepsClientAlive checks that clients answering the server's pings
// are not closed, whatever their library; and that pongs count as traffic.
func TestPongKeepsClientAlive(t *testing.T) {
	t.Parallel()
	// Pings every 100 ms, the idle time-out ten times that: a client may
	// be held back by the scheduler for most of a second (a loaded
	// machine, the race detector) and still answer in time.
	const idle = time.Second
	s := startServer(t, Config{PingInterval: 100 * time.Millisecond, IdleTimeout: idle})
	var clients []client
	for _, d := range dialers {
		clients = append(clients, d.dial(t, wsURL(s, "cities=alive")))
	}
	// Both libraries answer pings while they read. Reading for two idle
	// time-outs must end in the read deadline, not a close.
	errs := make([]error, len(clients))
	done := make(chan int)
	for i, c := range clients {
		go func() {
			defer func() { done <- i }()
			for {
				b, err := c.Next(2 * idle)
				if err != nil {
					errs[i] = err
					return
				}
				if m, err := parseMsg(b); err != nil || (m.Type != "subscribed" && m.Type != "initial_data") {
					errs[i] = errors.New("unexpected message " + string(b))
					return
				}
			}
		}()
	}
	for range clients {
		<-done
	}
	for i, err := range errs {
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("%s: %v, want only the read deadline", dialers[i].name, err)
		}
	}
	if n := closes(s, CloseIdle); n != 0 {
		t.Fatalf("Closes[idle] = %d, want 0", n)
	}
	if st := s.Stats(); st.Connections != int64(len(clients)) {
		t.Fatalf("Connections = %d, want %d", st.Connections, len(clients))
	}
}

// TestPongFramesResetIdle answers pings from a raw client: it is not closed,
// and once it stops answering it is.
func TestPongFramesResetIdle(t *testing.T) {
	t.Parallel()
	const idle = time.Second // ten pings: see TestPongKeepsClientAlive
	s := startServer(t, Config{PingInterval: 100 * time.Millisecond, IdleTimeout: idle})
	r := dialUpgraded(t, s)
	start := time.Now()
	pings := 0
	for time.Since(start) < 2*idle {
		f := r.frame(t)
		if f.Header.OpCode != ws.OpPing {
			t.Fatalf("got a frame of opcode %d (%q) after %s, want pings", f.Header.OpCode, f.Payload, time.Since(start))
		}
		pings++
		r.write(t, clientFrame(true, ws.OpPong, nil))
	}
	if pings < 2 {
		t.Fatalf("%d pings in %s, want several", pings, 2*idle)
	}
	// Stop answering.
	r.expectClose(t, ws.StatusGoingAway)
	waitCloses(t, s, CloseIdle, 1)
}

// TestStalledLoopSparesClients stalls the node's loop for twice its idle
// time-out, as a descheduled thread or a long pause would: its client,
// which answers every ping, was not pinged meanwhile and is not closed as
// idle when the loop resumes; pinged again, it answers and stays.
func TestStalledLoopSparesClients(t *testing.T) {
	t.Parallel()
	const idle = time.Second
	s := startServer(t, Config{Loops: 1, PingInterval: 100 * time.Millisecond, IdleTimeout: idle})
	r := dialUpgraded(t, s)
	pong := func() {
		t.Helper()
		if f := r.frame(t); f.Header.OpCode != ws.OpPing {
			t.Fatalf("got a frame of opcode %d (%q), want a ping", f.Header.OpCode, f.Payload)
		}
		r.write(t, clientFrame(true, ws.OpPong, nil))
	}
	pong()

	release := stallLoop(t, s)
	// The stall itself, the stimulus: the loop runs nothing for 2 s.
	time.Sleep(2 * idle)
	release()

	for start := time.Now(); time.Since(start) < 2*idle; {
		pong()
	}
	if n := closes(s, CloseIdle); n != 0 {
		t.Fatalf("Closes[idle] = %d, want 0", n)
	}
}

// TestPingsSpread checks that quiet connections are pinged each at its own
// instant of the interval, not together: connections whose last read came
// at the same moment (here all at once, as after a storm of pongs) are
// pinged evenly over the next interval. It counts the pings per eighth of
// the interval by the time the kernel received them (SO_TIMESTAMPNS), so
// that a reader the scheduler held back does not bunch them up.
func TestPingsSpread(t *testing.T) {
	t.Parallel()
	const (
		n       = 256
		ping    = 2 * time.Second
		windows = 8
	)
	s := startServer(t, Config{PingInterval: ping, IdleTimeout: time.Hour})
	clients := make([]*rawConn, n)
	readers := make([]*stampedReader, n)
	for i := range clients {
		clients[i] = dialUpgraded(t, s)
		sr, err := stamped(clients[i])
		if err != nil {
			t.Fatal(err)
		}
		readers[i] = sr
	}
	waitStamping(t)
	// Every connection reads at once: an unsolicited pong is traffic.
	pong := clientFrame(true, ws.OpPong, nil)
	for _, r := range clients {
		r.write(t, pong)
	}
	start := time.Now()
	end := start.Add(ping + ping/2 + ping/4)

	var (
		mu    sync.Mutex
		times []time.Time
		wg    sync.WaitGroup
		errs  = make(chan error, n)
	)
	for i, r := range clients {
		wg.Go(func() {
			got, err := pingTimes(r, readers[i], end)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			times = append(times, got...)
			mu.Unlock()
			if len(got) == 0 || len(got) > 2 {
				errs <- fmt.Errorf("%d pings within %s, want 1 or 2", len(got), end.Sub(start))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Quiet for half an interval (pingQuiet), each connection is pinged at
	// its first instant after that: all of them in the next interval.
	var per [windows]int
	for _, at := range times {
		if d := at.Sub(start) - ping/2; d >= 0 && d < ping {
			per[d*windows/ping]++
		}
	}
	t.Logf("pings per %s from %s after the pongs: %v", ping/windows, ping/2, per)
	total := 0
	for w, k := range per {
		total += k
		if k > 2*n/windows {
			t.Errorf("%d pings in window %d, want about %d (of %d connections)", k, w, n/windows, n)
		}
	}
	if total < n*9/10 {
		t.Errorf("%d pings in the interval after the quiet half, want about %d", total, n)
	}
}

// pingTimes reads the pings r receives until deadline, through its
// stampedReader sr, and returns when the kernel received each.
func pingTimes(r *rawConn, sr *stampedReader, deadline time.Time) ([]time.Time, error) {
	_ = r.c.SetReadDeadline(deadline)
	var times []time.Time
	for {
		b, at, err := sr.next()
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return times, nil
		}
		if err != nil {
			return nil, err
		}
		if len(b) == 0 || len(b)%2 != 0 || !bytes.Equal(b, bytes.Repeat(pingFrame, len(b)/2)) {
			return nil, fmt.Errorf("got % x, want pings", b)
		}
		for range len(b) / 2 {
			times = append(times, at)
		}
	}
}

// stampedReader reads a raw client's socket with the time the kernel
// received the bytes (SO_TIMESTAMPNS): when the server wrote them, on
// loopback, however late the test reads.
type stampedReader struct {
	rc  syscall.RawConn
	buf [4096]byte
	oob []byte
}

// stamped turns on receive timestamps on r, whose reader must hold no
// bytes: from now on read it with the stampedReader alone.
func stamped(r *rawConn) (*stampedReader, error) {
	if r.br.Buffered() > 0 {
		return nil, errors.New("bytes buffered before the timestamps")
	}
	rc, err := r.c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return nil, err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil || serr != nil {
		return nil, errors.Join(err, serr)
	}
	return &stampedReader{rc: rc, oob: make([]byte, unix.CmsgSpace(16))}, nil
}

// waitStamping waits until the kernel stamps the bytes it receives. The
// first socket to ask (stamped) turns stamping on from a work queue,
// later than its setsockopt returns (on a loaded machine, much later),
// and bytes received meanwhile carry no stamp. Call it once the test's
// sockets have asked: they keep stamping on until they close.
func waitStamping(t testing.TB) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	w, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := &rawConn{c: c, br: bufio.NewReader(c)}
	sr, err := stamped(r)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, readTimeout, func() bool {
		if _, err := w.Write([]byte{0}); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(readTimeout))
		_, _, err := sr.next()
		return err == nil
	})
}

// next returns the bytes of one read (valid until the next call) and when
// the kernel received the first of them. The conn's read deadline applies.
func (sr *stampedReader) next() ([]byte, time.Time, error) {
	var n, oobn int
	var rerr error
	err := sr.rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = unix.Recvmsg(int(fd), sr.buf[:], sr.oob, 0)
		return rerr != unix.EAGAIN
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return nil, time.Time{}, err
	}
	if n == 0 {
		return nil, time.Time{}, io.EOF
	}
	at, err := rxTime(sr.oob[:oobn])
	return sr.buf[:n], at, err
}

// rxTime returns the SO_TIMESTAMPNS receive time in a control message.
func rxTime(oob []byte) (time.Time, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}, err
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
			sec := binary.NativeEndian.Uint64(m.Data)
			nsec := binary.NativeEndian.Uint64(m.Data[8:])
			return time.Unix(int64(sec), int64(nsec)), nil
		}
	}
	return time.Time{}, errors.New("no receive timestamp")
}
