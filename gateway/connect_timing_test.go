package gateway

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
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
// connect verifies one), insecure ones none.
func BenchmarkConnect(b *testing.B) {
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
			cx := newConnector(b, s, tok)
			defer cx.close(b)
			cx.connect(b, 256) // warm up: pools, buffers, the kernel's tables
			b.ReportAllocs()
			cpu := benchCPU()
			b.ResetTimer()
			cx.connect(b, b.N)
			b.StopTimer()
			b.ReportMetric(float64(benchCPU()-cpu)/1e3/float64(b.N), "cpu-µs/connect")
		})
	}
}

// connector is the child process of BenchmarkConnect.
type connector struct {
	s     *Server
	child *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	errs  bytes.Buffer
}

func newConnector(b *testing.B, s *Server, tok string) *connector {
	cx := &connector{s: s}
	cx.child = exec.Command(os.Args[0], "-test.run=^TestHelperConnects$", "-test.timeout=30m")
	cx.child.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s", connectsEnv, s.Addr(), tok))
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

// connect has the child make n connections, and waits until the node has
// closed every one of them.
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
	for cx.s.open.Load() != 0 {
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
