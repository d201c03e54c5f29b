package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/metrocast/metrocast/codec"
)

// connectsEnv carries "<ws addr> <token>" to TestHelperConnects: a token
// for every client, "-" for none, mintEach for one of its own each.
const connectsEnv = "METROCAST_BENCH_CONNECTS"

const mintEach = "each"

// BenchmarkConnect is the node's CPU per connection, from the accept to
// the close: the upgrade with an HS256 token on the URL, the subscribed
// answer and the city's initial_data, then the client closes. The clients
// run in a child process (TestHelperConnects), 64 at a time, so that this
// process's CPU time is the node's alone (cpu-µs/connect); allocs/op are
// the node's per connection. HS256 clients share one token (the loops
// verify it once: auth.TokenCache), HS256-each have a token each (every
// connect verifies one), insecure ones none. floor is the same clients
// served by connectFloor, a bare epoll loop making only the system calls a
// connect needs; the node's cpu-µs/connect over it is x-floor.
func BenchmarkConnect(b *testing.B) {
	var floor float64
	b.Run("floor", func(b *testing.B) {
		f := newConnectFloor(b)
		defer f.close()
		cx := newConnector(b, f.addr, "-", f.open)
		defer cx.close(b)
		cx.connect(b, 256)
		cpu := benchCPU()
		b.ResetTimer()
		cx.connect(b, b.N)
		b.StopTimer()
		floor = float64(benchCPU()-cpu) / 1e3 / float64(b.N)
		b.ReportMetric(floor, "cpu-µs/connect")
	})
	for _, name := range []string{"HS256", "HS256-each", "insecure"} {
		secure := name != "insecure"
		b.Run(name, func(b *testing.B) {
			cfg := Config{
				Addr:       "127.0.0.1:0",
				IngestAddr: "127.0.0.1:0",
				AdminAddr:  "127.0.0.1:0",
				Loops:      2,
				Logger:     slog.New(slog.DiscardHandler),
			}
			tok := "-"
			if secure {
				cfg, _ = authConfig(b)
				cfg.Addr, cfg.IngestAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
				cfg.Loops, cfg.Logger = 2, slog.New(slog.DiscardHandler)
				tok = hs256(b, claims("bench", time.Hour, benchCity))
				if name == "HS256-each" {
					tok = mintEach
				}
			} else {
				cfg.Insecure = true
			}
			s := startServer(b, cfg)
			in := benchIngest(benchCity)
			if _, err := s.publish(&in, time.Now()); err != nil {
				b.Fatal(err)
			}
			cx := newConnector(b, s.Addr().String(), tok, s.open.Load)
			defer cx.close(b)
			cx.connect(b, 256) // warm up: pools, buffers, the kernel's tables
			b.ReportAllocs()
			cpu := benchCPU()
			b.ResetTimer()
			cx.connect(b, b.N)
			b.StopTimer()
			us := float64(benchCPU()-cpu) / 1e3 / float64(b.N)
			b.ReportMetric(us, "cpu-µs/connect")
			if floor > 0 {
				b.ReportMetric(us/floor, "x-floor")
			}
		})
	}
}

// connector is the child process of BenchmarkConnect, and how many of
// its connections the server holds open.
type connector struct {
	open  func() int64
	child *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	errs  bytes.Buffer
}

func newConnector(b *testing.B, addr, tok string, open func() int64) *connector {
	cx := &connector{open: open}
	cx.child = exec.Command(os.Args[0], "-test.run=^TestHelperConnects$", "-test.timeout=30m")
	cx.child.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s", connectsEnv, addr, tok))
	cx.child.Stderr = &cx.errs
	var err error
	if cx.stdin, err = cx.child.StdinPipe(); err != nil {
		b.Fatal(err)
	}
	stdout, err := cx.child.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cx.out = bufio.NewReader(stdout)
	if err := cx.child.Start(); err != nil {
		b.Fatal(err)
	}
	return cx
}

// connect has the child make n connections, and waits until the server
// has closed every one of them.
func (cx *connector) connect(b *testing.B, n int) {
	if _, err := fmt.Fprintln(cx.stdin, n); err != nil {
		b.Fatal(err)
	}
	for {
		line, err := cx.out.ReadString('\n')
		if err != nil {
			b.Fatalf("client process: %v\n%s", err, cx.errs.String())
		}
		if line == "ok\n" {
			break
		}
		if !strings.HasPrefix(line, "=== RUN") && !strings.HasPrefix(line, "PASS") {
			b.Fatalf("client process: %s", line)
		}
	}
	for cx.open() != 0 {
		time.Sleep(100 * time.Microsecond)
	}
}

func (cx *connector) close(b *testing.B) {
	_ = cx.stdin.Close()
	if err := cx.child.Wait(); err != nil {
		b.Errorf("client process: %v\n%s", err, cx.errs.String())
	}
}

// TestHelperConnects is not a test: BenchmarkConnect runs this test binary
// again with connectsEnv set. For each count n it reads from stdin, it
// makes n connections, 64 at a time: each upgrades with ?cities= (and the
// token, unless it is "-"), reads until its initial_data and closes. It
// answers "ok" on stdout when all n are done.
func TestHelperConnects(t *testing.T) {
	spec := os.Getenv(connectsEnv)
	if spec == "" {
		t.Skip("helper process for BenchmarkConnect")
	}
	f := strings.Fields(spec)
	if len(f) != 2 {
		t.Fatalf("%s=%q: want <addr> <token>", connectsEnv, spec)
	}
	addr, target := f[0], "/ws?cities="+benchCity
	request := func(int) []byte { return []byte(upgradeRequest(target)) }
	switch tok := f[1]; tok {
	case "-":
	case mintEach:
		request = func(i int) []byte {
			tok := hs256(t, claims("bench-"+strconv.Itoa(i), time.Hour, benchCity))
			return []byte(upgradeRequest(target + "&token=" + tok))
		}
	default:
		target += "&token=" + url.QueryEscape(tok)
	}
	in := bufio.NewScanner(os.Stdin)
	var next int
	for in.Scan() {
		n, err := strconv.Atoi(in.Text())
		if err != nil {
			t.Fatal(err)
		}
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			fail error
			sem  = make(chan struct{}, 64)
		)
		for range n {
			sem <- struct{}{}
			wg.Add(1)
			src, req := benchSource(next), request(next)
			next++
			go func() {
				defer func() { <-sem; wg.Done() }()
				if err := connectOnce(addr, src, req); err != nil {
					mu.Lock()
					fail = err
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if fail != nil {
			t.Fatal(fail)
		}
		fmt.Println("ok")
	}
}

// connectOnce upgrades, reads until the initial_data and closes.
func connectOnce(addr string, src net.IP, req []byte) error {
	c, err := benchDial(addr, src)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write(req); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(got, []byte(`"initial_data"`)) {
		n, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("after %q: %w", got, err)
		}
		got = append(got, buf[:n]...)
	}
	return nil
}

// connectFloor is the least a connect costs a server here: one thread in
// an epoll loop that accepts, reads the request, writes an answer of a
// node's size (the 101, subscribed and initial_data) in one write, reads
// the client's end and closes. Those are a node's system calls for a
// connect (gnet's as well: TCP_NODELAY, the epoll registration and its
// removal), with no parsing, no token, no state.
type connectFloor struct {
	addr   string
	lfd    int
	epfd   int
	answer []byte
	opened atomic.Int64
	stop   atomic.Bool
	done   sync.WaitGroup
}

func newConnectFloor(b *testing.B) *connectFloor {
	f := &connectFloor{lfd: -1, epfd: -1}
	f.answer = []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
	f.answer = codec.AppendFrame(f.answer, ws.OpText, []byte(`{"type":"subscribed","cities":[{"cityId":"`+benchCity+`","seq":1}]}`))
	f.answer = codec.AppendFrame(f.answer, ws.OpText, []byte(`{"type":"initial_data","cityId":"`+benchCity+
		`","seq":1,"data":{"aqi":57,"pm25":12.5,"no2":14,"o3":31,"co":0.4,"so2":2}}`))
	fail := func(what string, err error) {
		f.close()
		b.Fatalf("connect floor: %s: %v", what, err)
	}
	var err error
	if f.lfd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0); err != nil {
		fail("socket", err)
	}
	if err := unix.Bind(f.lfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		fail("bind", err)
	}
	if err := unix.Listen(f.lfd, 4096); err != nil {
		fail("listen", err)
	}
	sa, err := unix.Getsockname(f.lfd)
	if err != nil {
		fail("getsockname", err)
	}
	f.addr = fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
	if f.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		fail("epoll_create1", err)
	}
	if err := unix.EpollCtl(f.epfd, unix.EPOLL_CTL_ADD, f.lfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(f.lfd)}); err != nil {
		fail("epoll_ctl", err)
	}
	f.done.Add(1)
	go f.serve()
	return f
}

func (f *connectFloor) open() int64 { return f.opened.Load() }

// serve is the loop, on a thread of its own, until close.
func (f *connectFloor) serve() {
	defer f.done.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	events := make([]unix.EpollEvent, 128)
	buf := make([]byte, 4096)
	for !f.stop.Load() {
		n, err := unix.EpollWait(f.epfd, events, 100)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		for _, ev := range events[:max(n, 0)] {
			fd := int(ev.Fd)
			if fd == f.lfd {
				f.accept()
				continue
			}
			switch k, err := unix.Read(fd, buf); {
			case k > 0:
				// The request comes in one segment on loopback.
				_, _ = unix.Write(fd, f.answer)
			case k == 0 || !errors.Is(err, unix.EAGAIN):
				_ = unix.EpollCtl(f.epfd, unix.EPOLL_CTL_DEL, fd, nil)
				_ = unix.Close(fd)
				f.opened.Add(-1)
			}
		}
	}
}

func (f *connectFloor) accept() {
	for {
		fd, _, err := unix.Accept4(f.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			return
		}
		f.opened.Add(1)
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		_ = unix.EpollCtl(f.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)})
	}
}

func (f *connectFloor) close() {
	f.stop.Store(true)
	f.done.Wait()
	for _, fd := range []int{f.epfd, f.lfd} {
		if fd >= 0 {
			_ = unix.Close(fd)
		}
	}
}
