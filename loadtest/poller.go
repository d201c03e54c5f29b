package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// poller reads many connections on one goroutine, through epoll: the load
// generator must cost less per frame than the node it measures, and a
// goroutine per connection does not (a scheduler wake-up and a read per
// frame, ~9 µs a frame here, more than the node spends to send it). A
// connection is dialled, upgraded and subscribed on its client's goroutine,
// then handed to a poller (client.read), which reads it until it ends: one
// epoll_wait for every ready connection, one recvmsg per connection for
// whatever arrived (often several frames), the kernel's receive timestamp
// (SO_TIMESTAMPNS) taken from it as before. The client's goroutine waits
// for the end, and dials again when the churner asked.
//
// The sockets read here are out of Go's netpoller (client.detach): its
// epoll would be woken by every frame as well.
type poller struct {
	w    *worker
	epfd int
	ep   *os.File        // epfd, in the runtime's netpoller
	rc   syscall.RawConn // ep's
	wake int             // an eventfd in epfd: new connections, a resume, stop

	mu      sync.Mutex
	adds    []*client // handed over, not yet in epfd
	stopped bool

	// The poller goroutine's own.
	conns  []*client // by fd
	paused []*client // slow clients out of epfd while the worker pauses them
	events []unix.EpollEvent
	buf    []byte
	oob    [128]byte
	done   chan struct{}
}

// pollBuf is what one recvmsg reads at most: a connection with more
// waiting is read again in the next round (epoll is level-triggered).
const pollBuf = 64 << 10

// maxFrame bounds a frame from the node (the harness never asks for more).
const maxFrame = 64 << 20

func newPoller(w *worker) (*poller, error) {
	p := &poller{w: w, epfd: -1, wake: -1, events: make([]unix.EpollEvent, 512), buf: make([]byte, pollBuf),
		done: make(chan struct{})}
	var err error
	if p.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if p.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		p.closeFDs()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(p.wake)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, p.wake, &ev); err != nil {
		p.closeFDs()
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	// Non-blocking, os.NewFile puts it in the runtime's netpoller.
	if err := unix.SetNonblock(p.epfd, true); err != nil {
		p.closeFDs()
		return nil, err
	}
	p.ep = os.NewFile(uintptr(p.epfd), "epoll")
	if p.rc, err = p.ep.SyscallConn(); err != nil {
		p.closeFDs()
		return nil, err
	}
	go p.run()
	return p, nil
}

// add hands c, whose connection is c.fd, to the poller. Safe for
// concurrent use; c's state belongs to the poller until it sends on c.done.
func (p *poller) add(c *client) {
	p.mu.Lock()
	p.adds = append(p.adds, c)
	first := len(p.adds) == 1
	p.mu.Unlock()
	if first {
		p.poke()
	}
}

// poke wakes the poller to look at its adds, the worker's pause and its
// closing. Safe for concurrent use.
func (p *poller) poke() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	_, _ = unix.Write(p.wake, one[:])
}

// stop ends the poller once its connections have ended (the worker closed
// them) and releases its descriptors.
func (p *poller) stop() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	p.poke()
	<-p.done
	p.closeFDs()
}

func (p *poller) closeFDs() {
	if p.wake >= 0 {
		_ = unix.Close(p.wake)
	}
	switch {
	case p.ep != nil:
		_ = p.ep.Close()
	case p.epfd >= 0:
		_ = unix.Close(p.epfd)
	}
}

// run handles the ready connections until stop. It never blocks in
// epoll_wait: a goroutine blocked in a system call keeps the runtime's
// sysmon waking every 20 µs to retake its P, which cost more than the
// reads. The epoll descriptor is itself pollable (readable while it has
// events), so the runtime's netpoller waits for it, and each round takes
// every ready connection with epoll_wait(0).
func (p *poller) run() {
	defer close(p.done)
	err := p.rc.Read(func(uintptr) bool {
		for {
			n, err := epollPoll(p.epfd, p.events)
			switch {
			case errors.Is(err, unix.EINTR):
				continue
			case err != nil:
				// Cannot happen with a valid epfd; end every connection
				// rather than hang their clients.
				p.endAll(fmt.Errorf("epoll_wait: %w", err))
				return true
			case n == 0:
				return false // the netpoller waits for the next event
			}
			for _, ev := range p.events[:n] {
				fd := int(ev.Fd)
				if fd == p.wake {
					if p.commands() {
						return true
					}
					continue
				}
				if fd < len(p.conns) && p.conns[fd] != nil {
					p.read(p.conns[fd])
				}
			}
		}
	})
	if err != nil {
		p.endAll(fmt.Errorf("epoll: %w", err))
	}
}

// commands takes the new connections, resumes or ends the paused ones as
// worker says, and reports whether the poller stops.
func (p *poller) commands() bool {
	var b [8]byte
	_, _ = unix.Read(p.wake, b[:])
	p.mu.Lock()
	adds, stopped := p.adds, p.stopped
	p.adds = nil
	p.mu.Unlock()
	for _, c := range adds {
		p.start(c)
	}
	w := p.w
	switch {
	case w.closing.Load():
		for _, c := range p.paused {
			p.end(c, errClosing)
		}
		p.paused = p.paused[:0]
	case !w.paused.Load():
		for _, c := range p.paused {
			p.watch(c)
		}
		p.paused = p.paused[:0]
	}
	if stopped {
		p.endAll(errClosing)
		return true
	}
	return false
}

// start takes c's connection: the frames that came with the upgrade
// answer first (they are in c.pend), then the socket in epoll.
func (p *poller) start(c *client) {
	for c.fd >= len(p.conns) {
		p.conns = append(p.conns, make([]*client, max(64, len(p.conns)))...)
	}
	p.conns[c.fd] = c
	if p.w.closing.Load() {
		p.end(c, errClosing)
		return
	}
	if len(c.pend) > 0 {
		n, err := c.frames(c.pend, c.pendTS, time.Now().UnixNano())
		if err != nil {
			p.end(c, err)
			return
		}
		c.pend = c.pend[:copy(c.pend, c.pend[n:])]
	}
	p.watch(c)
}

// watch puts c's socket in epoll: readable, or closed by the peer.
func (p *poller) watch(c *client) {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(c.fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		p.end(c, fmt.Errorf("epoll_ctl: %w", err))
	}
}

// read reads what arrived on c's socket and handles every whole frame.
func (p *poller) read(c *client) {
	w := c.w
	if w.closing.Load() {
		p.end(c, errClosing)
		return
	}
	if c.slow && w.paused.Load() {
		// It stops reading while paused; out of epoll, or the
		// readable socket would come back every round.
		_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
		p.paused = append(p.paused, c)
		return
	}
	n, oobn, err := recvmsg(c.fd, p.buf, p.oob[:])
	switch {
	case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
		return
	case err != nil:
		p.end(c, err)
		return
	case n == 0:
		p.end(c, io.EOF)
		return
	}
	ts, now := timestampNS(p.oob[:oobn]), time.Now().UnixNano()
	data := p.buf[:n]
	if len(c.pend) > 0 {
		c.pend = append(c.pend, data...)
		data = c.pend
	}
	used, err := c.frames(data, ts, now)
	if err != nil {
		p.end(c, err)
		return
	}
	// Keep the start of a frame that is not whole yet.
	if len(c.pend) > 0 {
		c.pend = c.pend[:copy(c.pend, data[used:])]
	} else if used < len(data) {
		c.pend = append(c.pend, data[used:]...)
	}
}

// end closes c's connection and gives c back to its goroutine with the
// reason. The poller does not touch c after it.
func (p *poller) end(c *client, err error) {
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	p.conns[c.fd] = nil
	c.pend = c.pend[:0]
	c.mu.Lock()
	_ = unix.Close(c.fd)
	c.fd = -1
	c.mu.Unlock()
	c.done <- err
}

// endAll ends every connection left, paused ones included.
func (p *poller) endAll(err error) {
	for _, c := range p.conns {
		if c != nil {
			p.end(c, err)
		}
	}
	p.paused = p.paused[:0]
}

// nextFrame parses the server frame at the start of b: its opcode and
// payload, and n, the bytes it takes; n == 0 means b does not hold it
// whole yet. The payload is a slice of b.
func nextFrame(b []byte) (op ws.OpCode, payload []byte, n int, err error) {
	if len(b) < 2 {
		return 0, nil, 0, nil
	}
	op = ws.OpCode(b[0] & 0x0f)
	if b[1]&0x80 != 0 {
		return 0, nil, 0, errors.New("masked frame from the server")
	}
	size, hn := uint64(b[1]&0x7f), 2
	switch size {
	case 126:
		if len(b) < 4 {
			return 0, nil, 0, nil
		}
		size, hn = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return 0, nil, 0, nil
		}
		size, hn = binary.BigEndian.Uint64(b[2:]), 10
	}
	if size > maxFrame {
		return 0, nil, 0, fmt.Errorf("frame of %d bytes", size)
	}
	if uint64(len(b)-hn) < size {
		return 0, nil, 0, nil
	}
	n = hn + int(size)
	return op, b[hn:n], n, nil
}
