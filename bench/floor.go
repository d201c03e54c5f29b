package main

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/metrocast/metrocast/codec"
)

// The loopback floor is what one delivery costs at best on this machine:
// the sender's CPU for one small write to a TCP socket over loopback, whose
// peer another thread reads. On loopback the sender's system call carries
// the frame through the receiver's TCP stack and wakes the reader, so this
// is the least a node can pay per frame it writes, whatever its code. The
// bench reports the node's CPU per delivery as a multiple of it: machines,
// and one machine from day to day, differ by 1.5× in absolute figures,
// much less in ratios measured in the same run.
//
// The sockets are plain (no Go netpoller, whose epoll would be woken as
// well): many of them, from source addresses spread over 127.0.0.2–254,
// TCP_NODELAY as gnet sets it, written round-robin as a fanout writes a
// frame to each subscriber in turn.

// floorFrameBytes is the size of the frame written: a data_update of a
// handful of gauges, as the node writes it (header included).
const floorFrameBytes = 130

// floorSockets is the number of connections the floor is measured over:
// as many as the shapes have subscribers (the floor is flat from 2,000 to
// 9,000 here).
const floorSockets = shapeConns

// floorBatch is the number of frames in one writev: what a subscriber
// behind by several frames gets in one call.
const floorBatch = 8

// floorFixture is a set of loopback connections: the sending ends, written
// by the measuring goroutine, and the receiving ends, read and discarded by
// a drainer on a thread of its own.
type floorFixture struct {
	send, recv []int
	frame      []byte
	iov        [floorBatch]unix.Iovec
	eagain     atomic.Uint64 // writes that met a full send buffer (skipped)

	epfd    int
	stop    atomic.Bool
	drained sync.WaitGroup
}

// newFloorFixture opens n loopback connections and starts their drainer.
func newFloorFixture(n int) (*floorFixture, error) {
	f := &floorFixture{epfd: -1, frame: floorFrame()}
	for i := range f.iov {
		f.iov[i].Base = &f.frame[0]
		f.iov[i].SetLen(len(f.frame))
	}
	if err := f.connect(n); err != nil {
		f.close()
		return nil, err
	}
	var err error
	if f.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		f.close()
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	for _, fd := range f.recv {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
		if err := unix.EpollCtl(f.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			f.close()
			return nil, fmt.Errorf("epoll_ctl: %w", err)
		}
	}
	f.drained.Add(1)
	go f.drain()
	return f, nil
}

// floorFrame is a data_update frame of floorFrameBytes: a handful of
// gauges, padded to the size.
func floorFrame() []byte {
	for pad := 0; ; pad++ {
		data := fmt.Appendf(nil, `{"aqi":57,"pm25":12.5,"no2":14,"x":"%s"}`, strings.Repeat("x", pad))
		b := codec.AppendDataUpdate(nil, "nairobi", 123456, 1764000000000, data)
		if len(b) >= floorFrameBytes {
			return b
		}
	}
}

// connect opens n connections to a listener of its own on 127.0.0.1
// (dialSpread), and accepts them.
func (f *floorFixture) connect(n int) error {
	lfd, to, err := listenLoopback()
	if err != nil {
		return err
	}
	defer unix.Close(lfd)
	for i := range n {
		c, err := dialSpread(to, i)
		if err != nil {
			return fmt.Errorf("connect %d of %d: %w", i, n, err)
		}
		f.recv = append(f.recv, c)
		s, err := acceptSender(lfd)
		if err != nil {
			return fmt.Errorf("accept %d of %d: %w", i, n, err)
		}
		f.send = append(f.send, s)
	}
	return nil
}

// acceptSender accepts a connection on the blocking listener lfd, to be
// written as a node writes its sockets: non-blocking, TCP_NODELAY as gnet
// sets it. It waits again when a signal (the Go runtime's preemption
// among them) interrupts the wait.
func acceptSender(lfd int) (int, error) {
	for {
		s, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return -1, err
		}
		if err := unix.SetsockoptInt(s, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			unix.Close(s)
			return -1, fmt.Errorf("TCP_NODELAY: %w", err)
		}
		return s, nil
	}
}

// listenLoopback opens a listening socket on 127.0.0.1, its port chosen by
// the kernel.
func listenLoopback() (int, *unix.SockaddrInet4, error) {
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Bind(lfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(lfd)
		return -1, nil, fmt.Errorf("bind: %w", err)
	}
	if err := unix.Listen(lfd, 4096); err != nil {
		unix.Close(lfd)
		return -1, nil, fmt.Errorf("listen: %w", err)
	}
	sa, err := unix.Getsockname(lfd)
	if err != nil {
		unix.Close(lfd)
		return -1, nil, fmt.Errorf("getsockname: %w", err)
	}
	return lfd, sa.(*unix.SockaddrInet4), nil
}

// dialSpread opens the i-th connection to a loopback listener, from
// 127.0.0.(2+i%253), the port chosen at connect time
// (IP_BIND_ADDRESS_NO_PORT) so that the source ports last, and returns it
// non-blocking.
func dialSpread(to *unix.SockaddrInet4, i int) (int, error) {
	c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	err = unix.SetsockoptInt(c, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	if err != nil {
		err = fmt.Errorf("IP_BIND_ADDRESS_NO_PORT: %w", err)
	} else if err = unix.Bind(c, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, byte(2 + i%253)}}); err != nil {
		err = fmt.Errorf("bind: %w", err)
	} else if err = unix.Connect(c, to); err != nil {
		// Blocking: on loopback the handshake completes at once, before
		// the accept.
		err = fmt.Errorf("connect: %w", err)
	} else {
		err = unix.SetNonblock(c, true)
	}
	if err != nil {
		unix.Close(c)
		return -1, err
	}
	return c, nil
}

// drain reads every receiving socket until stop, on a thread of its own:
// what a client process does, as far as the sender can tell.
func (f *floorFixture) drain() {
	defer f.drained.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	events := make([]unix.EpollEvent, 256)
	buf := make([]byte, 64<<10)
	for !f.stop.Load() {
		n, err := unix.EpollWait(f.epfd, events, 100)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		for _, ev := range events[:max(n, 0)] {
			_, _ = unix.Read(int(ev.Fd), buf)
		}
	}
}

// writes makes n writes of batch frames (1: write, else writev), to the
// sockets in turn, on the calling goroutine's thread, and returns the
// thread's CPU time for them. A write that meets a full send buffer (the
// drainer fell behind) is counted in eagain and not retried.
func (f *floorFixture) writes(n, batch int) (time.Duration, error) {
	if batch < 1 || batch > floorBatch {
		return 0, fmt.Errorf("batch %d: want 1 to %d frames", batch, floorBatch)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	t0 := threadCPU()
	for i := range n {
		fd := f.send[i%len(f.send)]
		var err error
		if batch == 1 {
			_, err = unix.Write(fd, f.frame)
		} else {
			_, _, e := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&f.iov[0])), uintptr(batch))
			if e != 0 {
				err = e
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, unix.EAGAIN):
			f.eagain.Add(1)
		default:
			return 0, fmt.Errorf("write: %w", err)
		}
	}
	return threadCPU() - t0, nil
}

// threadCPU is the CPU time of the calling thread.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// close stops the drainer and closes every socket.
func (f *floorFixture) close() {
	f.stop.Store(true)
	f.drained.Wait()
	for _, fd := range slices.Concat(f.send, f.recv) {
		_ = unix.Close(fd)
	}
	if f.epfd >= 0 {
		_ = unix.Close(f.epfd)
	}
}

// floorFigures is this machine's floor as the bench measured it.
type floorFigures struct {
	Sockets    int `json:"sockets"`
	FrameBytes int `json:"frame_bytes"`
	// WriteNs is the sender's CPU for one write of one frame, WritevNs for
	// one writev of floorBatch frames: the median of the passes.
	WriteNs  float64 `json:"write_cpu_ns"`
	WritevNs float64 `json:"writev8_cpu_ns"`
	// The passes, in order; a spread between them is noise from the rest
	// of the machine.
	WritePasses  []float64 `json:"write_passes_cpu_ns"`
	WritevPasses []float64 `json:"writev8_passes_cpu_ns"`
	EAGAIN       uint64    `json:"eagain"`
	// StartWriteNs and EndWriteNs are the write floor measured before the
	// steps and after them, when add joined the two measurements.
	StartWriteNs float64 `json:"start_write_cpu_ns,omitempty"`
	EndWriteNs   float64 `json:"end_write_cpu_ns,omitempty"`
}

// add joins a later measurement of the same floor to f: the medians are
// taken over both.
func (f *floorFigures) add(end *floorFigures) {
	f.StartWriteNs, f.EndWriteNs = f.WriteNs, end.WriteNs
	f.WritePasses = append(f.WritePasses, end.WritePasses...)
	f.WritevPasses = append(f.WritevPasses, end.WritevPasses...)
	f.WriteNs, f.WritevNs = median(f.WritePasses), median(f.WritevPasses)
	f.EAGAIN += end.EAGAIN
}

// perFrame is the floor of one frame sent in a batch of floorBatch.
func (f *floorFigures) perFrame() float64 { return f.WritevNs / floorBatch }

// measureFloor measures the floor over sockets connections: passes rounds
// of writes of one frame and of writev of floorBatch frames, alternated,
// each of about perPass calls.
func measureFloor(sockets, perPass, passes int) (*floorFigures, error) {
	f, err := newFloorFixture(sockets)
	if err != nil {
		return nil, err
	}
	defer f.close()
	// Warm up, untimed: as many writes of each kind as three timed passes
	// (every socket at least twice). After a shorter warm-up
	// (every socket written twice) the first timed pass came out 1.5× the
	// third, the passes still falling: the sockets' buffers, the kernel's
	// caches and the drainer were not in their steady state yet (passes
	// 15.0, 10.7, 10.1 µs; after one pass of warm-up 10.3, 10.2, 8.3; after
	// three 8.3, 9.3, 8.7).
	for _, batch := range []int{1, floorBatch} {
		if _, err := f.writes(max(2*sockets, 3*perPass), batch); err != nil {
			return nil, err
		}
	}
	res := &floorFigures{Sockets: sockets, FrameBytes: len(f.frame)}
	for range passes {
		for _, batch := range []int{1, floorBatch} {
			cpu, err := f.writes(perPass, batch)
			if err != nil {
				return nil, err
			}
			ns := float64(cpu.Nanoseconds()) / float64(perPass)
			if batch == 1 {
				res.WritePasses = append(res.WritePasses, ns)
			} else {
				res.WritevPasses = append(res.WritevPasses, ns)
			}
		}
	}
	res.WriteNs, res.WritevNs = median(res.WritePasses), median(res.WritevPasses)
	res.EAGAIN = f.eagain.Load()
	return res, nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
