package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The floor at a load's pace. The floor of floor.go writes back to back to
// sockets a thread drains without pause; a node under a steady load writes
// each socket a few times a second, a frame's subscribers in one burst, to
// clients that sleep between bursts. That costs the sender more per write,
// for reasons that are the kernel's and the client's, not the node's: the
// reader is woken once per burst, and a receiving TCP whose last segment is
// older than its retransmission time-out (200 ms at least) acknowledges the
// next ones at once ("quick ack"), in the softirq that loopback runs on the
// sender's CPU, where a reader that keeps up acknowledges from its own
// read. Here, 400 writes a burst: 5.4 µs a write at 200 ms between a
// socket's frames, 6.3 at 217 ms; the node 8.3–9.4 µs a delivery at 160 ms
// (8,000 connections × 6.25 frames/s) and 9.8–11.3 at 240 ms (12,000 ×
// 4.17), the same 50,000 deliveries/s. The nominal load (10,000 × 12 cities
// × 5 frames/s) sits on that edge.
//
// So the bench also measures the floor at the pace of the loads it judges:
// the same frame, written to as many sockets as the load has connections,
// a city's share of them in one burst, cities × rate bursts a second, by
// one thread; the readers are another process (this binary again, see
// floorReader), each socket read when epoll says, as a client does. The
// sender's CPU over the whole run (bursts and the sleeps between them, as
// a loop's wake-ups) over the writes is the floor at that pace.

// readerEnv, set to "<host:port> <n>", makes this binary (bench, or its
// test binary) the reading side of a paced floor: floorReader.
const readerEnv = "METROCAST_BENCH_FLOOR_READER"

// pacedFigures is the floor written at a load's pace.
type pacedFigures struct {
	Sockets int     `json:"sockets"`
	Cities  int     `json:"cities"`
	Rate    float64 `json:"frames_per_s_per_city"`
	// WriteNs is the sender's CPU per write, the median of the passes.
	WriteNs float64   `json:"write_cpu_ns"`
	Passes  []float64 `json:"passes_cpu_ns"`
	EAGAIN  uint64    `json:"eagain"`
}

// pacedFixture is the sending ends of n loopback connections whose
// receiving ends a reader process holds.
type pacedFixture struct {
	send   []int
	frame  []byte
	reader *exec.Cmd
	stdin  io.WriteCloser
	eagain uint64
}

// newPacedFixture starts a reader process that opens n connections to a
// listener of this process's, and accepts them.
func newPacedFixture(n int) (*pacedFixture, error) {
	f := &pacedFixture{frame: floorFrame()}
	if err := f.open(n); err != nil {
		f.close()
		return nil, err
	}
	return f, nil
}

func (f *pacedFixture) open(n int) error {
	lfd, to, err := listenLoopback()
	if err != nil {
		return err
	}
	defer unix.Close(lfd)
	// accept waits at most this long for the reader's next connection.
	tv := unix.NsecToTimeval((10 * time.Second).Nanoseconds())
	if err := unix.SetsockoptTimeval(lfd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("SO_RCVTIMEO: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	f.reader = exec.Command(exe)
	f.reader.Env = append(os.Environ(), fmt.Sprintf("%s=127.0.0.1:%d %d", readerEnv, to.Port, n))
	f.reader.Stderr = os.Stderr
	if f.stdin, err = f.reader.StdinPipe(); err != nil {
		return err
	}
	out, err := f.reader.StdoutPipe()
	if err != nil {
		return err
	}
	if err := f.reader.Start(); err != nil {
		return fmt.Errorf("cannot start the floor's reader: %w", err)
	}
	for i := range n {
		s, err := acceptSender(lfd)
		if err != nil {
			return fmt.Errorf("accept %d of %d from the floor's reader: %w", i, n, err)
		}
		f.send = append(f.send, s)
	}
	if line, err := bufio.NewReader(out).ReadString('\n'); line != "reading\n" {
		return fmt.Errorf("the floor's reader did not start reading: %q, %v", line, err)
	}
	return nil
}

// measure writes the frame to the first p.conns sockets as a steady load
// of p.cities × p.rate frames a second does (a frame to a city's share of
// the sockets in one burst, the cities in turn) for warm, untimed, then
// for passes of pass each, and returns the sender's CPU per write.
func (f *pacedFixture) measure(p pace, warm, pass time.Duration, passes int) (*pacedFigures, error) {
	if p.conns > len(f.send) || p.cities < 1 || p.conns < p.cities || p.rate <= 0 {
		return nil, fmt.Errorf("paced floor: %d sockets (of %d) over %d cities at %g frames/s", p.conns, len(f.send), p.cities, p.rate)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	res := &pacedFigures{Sockets: p.conns, Cities: p.cities, Rate: p.rate}
	group, every := p.conns/p.cities, res.every()
	next, city := time.Now(), 0
	run := func(d time.Duration) (ns float64, err error) {
		end := time.Now().Add(d)
		t0, writes := threadCPU(), 0
		for time.Now().Before(end) {
			time.Sleep(time.Until(next))
			next = next.Add(every)
			for _, fd := range f.send[city*group : (city+1)*group] {
				switch _, err := unix.Write(fd, f.frame); {
				case err == nil:
				case errors.Is(err, unix.EAGAIN):
					f.eagain++
				default:
					return 0, fmt.Errorf("write: %w", err)
				}
			}
			writes += group
			city = (city + 1) % p.cities
		}
		return float64((threadCPU() - t0).Nanoseconds()) / float64(max(writes, 1)), nil
	}
	eagain := f.eagain
	if _, err := run(warm); err != nil {
		return nil, err
	}
	for range passes {
		ns, err := run(pass)
		if err != nil {
			return nil, err
		}
		res.Passes = append(res.Passes, ns)
	}
	res.WriteNs, res.EAGAIN = median(res.Passes), f.eagain-eagain
	return res, nil
}

// close ends the reader process (its standard input closes) and closes
// the sockets.
func (f *pacedFixture) close() {
	if f.stdin != nil {
		_ = f.stdin.Close() // first: the reader is not woken by every socket's end
	}
	for _, fd := range f.send {
		_ = unix.Close(fd)
	}
	if f.reader != nil && f.reader.Process != nil {
		_ = f.reader.Wait()
	}
}

// floorReader is the reading side of a paced floor, in a process of its
// own (readerEnv): it opens n connections to addr from source addresses
// spread as floorFixture's, says "reading", and reads every socket epoll
// reports until its standard input closes. It returns the exit status.
func floorReader(spec string) int {
	addr, count, _ := strings.Cut(spec, " ")
	host, port, _ := strings.Cut(addr, ":")
	n, err1 := strconv.Atoi(count)
	p, err2 := strconv.Atoi(port)
	if host != "127.0.0.1" || err1 != nil || err2 != nil {
		fmt.Fprintf(os.Stderr, "floor reader: %s=%q: want \"127.0.0.1:<port> <n>\"\n", readerEnv, spec)
		return 2
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor reader: epoll_create1:", err)
		return 1
	}
	watch := func(fd int) error {
		return unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)})
	}
	to := &unix.SockaddrInet4{Port: p, Addr: [4]byte{127, 0, 0, 1}}
	for i := range n {
		fd, err := dialSpread(to, i)
		if err == nil {
			err = watch(fd)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "floor reader: connection %d of %d: %v\n", i, n, err)
			return 1
		}
	}
	if err := watch(0); err != nil {
		fmt.Fprintln(os.Stderr, "floor reader: epoll_ctl of stdin:", err)
		return 1
	}
	fmt.Println("reading")
	events := make([]unix.EpollEvent, 512)
	buf := make([]byte, 64<<10)
	for {
		k, err := unix.EpollWait(epfd, events, -1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			fmt.Fprintln(os.Stderr, "floor reader: epoll_wait:", err)
			return 1
		}
		for _, ev := range events[:max(k, 0)] {
			if ev.Fd == 0 {
				return 0 // the bench closed our standard input
			}
			_, _ = unix.Read(int(ev.Fd), buf)
		}
	}
}

// pace is a steady load whose floor the bench measures: conns
// connections over cities, rate frames/s per city.
type pace struct {
	conns, cities int
	rate          float64
}

// paces are the loads the targets judge against the floor: the nominal
// load (issue 13.2) and the hot city (13.4).
// They are read from the steps' own flags, so that the two cannot drift
// apart (a pace with no floor would judge its target against the
// back-to-back floor without a word).
func paces(quick bool) []pace {
	var ps []pace
	for _, st := range steps(quick) {
		rate := map[string]float64{"sweep": nominalRate, "hot": shapeRate}[st.name]
		if rate == 0 {
			continue
		}
		conns, _ := strconv.Atoi(flagValue(st.args, "conns"))
		cities, _ := strconv.Atoi(flagValue(st.args, "cities"))
		ps = append(ps, pace{conns, cities, rate})
	}
	return ps
}

// measurePaced measures the floor at each pace, over one reader process
// holding as many connections as the largest needs.
func measurePaced(ps []pace, quick bool, w io.Writer) ([]*pacedFigures, error) {
	warm, pass := 2*time.Second, 2*time.Second
	if quick {
		warm, pass = 100*time.Millisecond, 200*time.Millisecond
	}
	n := 0
	for _, p := range ps {
		n = max(n, p.conns)
	}
	fmt.Fprintf(w, "== the loopback floor at the loads' pace: %d sockets read by another process\n", n)
	f, err := newPacedFixture(n)
	if err != nil {
		return nil, err
	}
	defer f.close()
	var res []*pacedFigures
	for _, p := range ps {
		pf, err := f.measure(p, warm, pass, 3)
		if err != nil {
			return nil, err
		}
		res = append(res, pf)
	}
	return res, nil
}

// add joins a later measurement at the same pace to p: the median is taken
// over both.
func (p *pacedFigures) add(end *pacedFigures) {
	p.Passes = append(p.Passes, end.Passes...)
	p.WriteNs, p.EAGAIN = median(p.Passes), p.EAGAIN+end.EAGAIN
}

// every is the time between two bursts.
func (p *pacedFigures) every() time.Duration {
	return time.Duration(float64(time.Second) / (float64(p.Cities) * p.Rate))
}

// pacedFloor is the floor measured at the pace of conns connections over
// cities at rate frames/s per city, or nil.
func (r *suiteResult) pacedFloor(conns, cities int, rate float64) *pacedFigures {
	for _, p := range r.Paced {
		if p.Sockets == conns && p.Cities == cities && p.Rate == rate {
			return p
		}
	}
	return nil
}

// passesUs formats passes of ns as µs: "5.41 5.85 7.40".
func passesUs(ns []float64) string {
	s := make([]string, len(ns))
	for i, v := range ns {
		s[i] = strconv.FormatFloat(v/1e3, 'f', 2, 64)
	}
	return strings.Join(s, " ")
}
