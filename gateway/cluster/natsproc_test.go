package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/metrocast/metrocast/gateway/internal/nodetest"
)

// Real nats-server processes, for the tests that must kill one the way an
// operator or the kernel does (SIGKILL): an embedded server shuts down
// politely, closing its routes and stepping down as a leader first, which
// is not what the other servers and the clients see when a process dies.

// natsBinary is the nats-server built once per test binary from the
// module's own dependency (go.mod), so the tests run offline and against
// the server version the gateway is tested with.
var natsBinary struct {
	once sync.Once
	path string
	err  error
}

// natsServerBinary returns the path of a nats-server binary, building it
// on first use, or skips the test if it cannot be built.
func natsServerBinary(t testing.TB) string {
	t.Helper()
	natsBinary.once.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			natsBinary.err = fmt.Errorf("no go command in PATH: %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "metrocast-nats-server-")
		if err != nil {
			natsBinary.err = err
			return
		}
		natsBinary.path = filepath.Join(dir, "nats-server")
		out, err := exec.Command(goBin, "build", "-o", natsBinary.path, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			natsBinary.err = fmt.Errorf("go build github.com/nats-io/nats-server/v2: %w\n%s", err, out)
		}
	})
	if natsBinary.err != nil {
		t.Skipf("skipped: needs a nats-server binary, which cannot be built here: %s", natsBinary.err)
	}
	return natsBinary.path
}

// natsProc is one nats-server process of a cluster.
type natsProc struct {
	name    string
	port    int // client port
	monPort int // monitoring (HTTP) port
	cmd     *exec.Cmd
}

func (p *natsProc) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", p.port) }

// freeze stops the server (SIGSTOP) with its connections open, and waits
// until the kernel says it is stopped; thaw (SIGCONT) lets it go on.
func (p *natsProc) freeze(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("cannot stop nats-server %s: %s", p.name, err)
	}
	stat := fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid)
	nodetest.WaitFor(t, clusterTimeout, func() bool {
		b, err := os.ReadFile(stat)
		if err != nil {
			return true // no /proc: the signal is all there is to go on
		}
		// pid (comm) state …: comm may hold spaces, not ')'.
		i := bytes.LastIndexByte(b, ')')
		return i >= 0 && i+2 < len(b) && b[i+2] == 'T'
	})
}

func (p *natsProc) thaw(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("cannot continue nats-server %s: %s", p.name, err)
	}
}

// kill sends SIGKILL and reaps the process: the kernel closes its sockets,
// nothing else is said to its peers or clients.
func (p *natsProc) kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
}

// jsz is the part of a server's /jsz the tests read.
type jsz struct {
	Meta struct {
		Leader string `json:"leader"`
		Size   int    `json:"cluster_size"`
	} `json:"meta_cluster"`
}

func (p *natsProc) jsz() (jsz, error) {
	var j jsz
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/jsz", p.monPort))
	if err != nil {
		return j, err
	}
	defer resp.Body.Close()
	return j, json.NewDecoder(resp.Body).Decode(&j)
}

// startNATSProcs starts n nats-server processes routed into one JetStream
// cluster (one: a lone server), waits until it has a meta leader that knows
// all of them and each takes clients, and kills them when the test ends. Each logs to a file in its store
// directory, shown if the test fails.
func startNATSProcs(t testing.TB, n int) []*natsProc {
	t.Helper()
	bin := natsServerBinary(t)
	procs := make([]*natsProc, n)
	routePorts := make([]int, n)
	for i := range procs {
		procs[i] = &natsProc{name: fmt.Sprintf("n%d", i+1), port: freePort(t), monPort: freePort(t)}
		routePorts[i] = freePort(t)
	}
	for i, p := range procs {
		dir := t.TempDir()
		var routes []string
		for j, rp := range routePorts {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", rp))
			}
		}
		conf := fmt.Sprintf(`server_name: %s
listen: "127.0.0.1:%d"
http: "127.0.0.1:%d"
jetstream { store_dir: %q }
`, p.name, p.port, p.monPort, dir)
		if n > 1 {
			conf += fmt.Sprintf(`cluster { name: "metrocast-test", listen: "127.0.0.1:%d", routes: [%s] }
`, routePorts[i], strings.Join(routes, ", "))
		}
		confPath := filepath.Join(dir, "nats.conf")
		if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		logPath := filepath.Join(dir, "nats.log")
		p.cmd = exec.Command(bin, "-c", confPath, "-l", logPath)
		// Killed with the test binary too when it dies without its
		// cleanups (a panic, -timeout): no server outlives the run.
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := p.cmd.Start(); err != nil {
			t.Fatalf("cannot start nats-server: %s", err)
		}
		t.Cleanup(func() {
			p.kill()
			if t.Failed() {
				if b, err := os.ReadFile(logPath); err == nil {
					t.Logf("nats-server %s log (tail):\n%s", p.name, logTail(b, 4<<10))
				}
			}
		})
	}
	// The monitor port answers before the client port listens (a node
	// dialed in between failed with "no servers available"): both.
	nodetest.WaitFor(t, clusterTimeout, func() bool {
		for _, p := range procs {
			j, err := p.jsz()
			if err != nil || n > 1 && (j.Meta.Leader == "" || j.Meta.Size != n) {
				return false
			}
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.port))
			if err != nil {
				return false
			}
			_ = c.Close()
		}
		return true
	})
	return procs
}

// logTail returns the last max bytes of b.
func logTail(b []byte, max int) []byte {
	if len(b) > max {
		return b[len(b)-max:]
	}
	return b
}

// natsURLs returns the client URLs of procs, the i-th first.
func natsURLs(procs []*natsProc, first int) string {
	var u []string
	for i := range procs {
		u = append(u, procs[(first+i)%len(procs)].url())
	}
	return strings.Join(u, ",")
}
