package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"golang.org/x/sys/unix"
)

// node is a metrocast process started for the run (-spawn).
type node struct {
	cmd    *exec.Cmd
	ws     string // host:port
	path   string
	ingest string
	exited chan struct{}

	mu   sync.Mutex
	tail []string // its last log lines, for errors
}

// spawnNode starts bin serve on loopback ports chosen by the kernel and
// waits for its "metrocast listening" log line, which names them. The admin
// port of builds that have one goes to a free port too (the environment
// variable is ignored by builds without it). With a secret file the node
// checks tokens with it; without, it runs -insecure.
func spawnNode(bin, extra, secretFile string, cpus *unix.CPUSet) (*node, error) {
	// Insecure by default: the bench measures fanout, not token checks
	// (those have BenchmarkClientGrant).
	args := []string{"serve", "-addr", "127.0.0.1:0", "-ingest-addr", "127.0.0.1:0", "-log-format", "json", "-insecure"}
	if secretFile != "" {
		args = append(args[:len(args)-1], "-auth-hmac-secret-file", secretFile)
	}
	args = append(args, strings.Fields(extra)...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "METROCAST_ADMIN_ADDR=127.0.0.1:0")
	// The node dies with the harness, also when the harness is killed
	// (make bench's time-out, a test binary's -timeout) and cannot stop it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := startOn(cmd, cpus); err != nil {
		return nil, fmt.Errorf("cannot start %s: %w", bin, err)
	}
	n := &node{cmd: cmd, exited: make(chan struct{})}
	up := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		listening := false
		for sc.Scan() {
			line := sc.Text()
			n.mu.Lock()
			if n.tail = append(n.tail, line); len(n.tail) > 20 {
				n.tail = n.tail[1:]
			}
			n.mu.Unlock()
			if !listening {
				var rec struct {
					Msg    string `json:"msg"`
					WS     string `json:"ws"`
					Ingest string `json:"ingest"`
				}
				if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "metrocast listening" {
					listening = true
					up <- n.setAddrs(rec.WS, rec.Ingest)
				}
			}
		}
		if !listening {
			up <- errors.New("exited before it listened")
		}
		// Wait closes the pipe: not before its last lines are read.
		_ = cmd.Wait()
		close(n.exited)
	}()
	select {
	case err = <-up:
	case <-time.After(30 * time.Second):
		err = errors.New("did not listen within 30s")
	}
	if err != nil {
		n.stop()
		return nil, fmt.Errorf("node %s: %w\n%s", bin, err, n.log())
	}
	return n, nil
}

// setAddrs takes "ws://host:port/path" and the ingest host:port.
func (n *node) setAddrs(wsURL, ingest string) error {
	rest, ok := strings.CutPrefix(wsURL, "ws://")
	if !ok || ingest == "" {
		return fmt.Errorf("cannot parse the listening line (ws %q, ingest %q)", wsURL, ingest)
	}
	host, path, _ := strings.Cut(rest, "/")
	n.ws, n.path, n.ingest = host, "/"+path, ingest
	return nil
}

func (n *node) pid() int { return n.cmd.Process.Pid }

func (n *node) log() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strings.Join(n.tail, "\n")
}

// stop asks the node to stop (SIGTERM) and kills it if it has not within
// 20 seconds.
func (n *node) stop() {
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(20 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.exited
	}
}

// spawnNodes starts count nodes of bin (see spawnNode): one alone, or a cluster on a NATS
// JetStream server run inside this process, on a loopback port with its
// store in a temporary directory. stop stops them all, NATS last.
func spawnNodes(bin, extra, secretFile string, count int, cpus *unix.CPUSet) (nodes []*node, stop func(), err error) {
	var ns *natsserver.Server
	var dir string
	stop = func() {
		for _, n := range nodes {
			n.stop()
		}
		if ns != nil {
			ns.Shutdown()
			ns.WaitForShutdown()
		}
		if dir != "" {
			_ = os.RemoveAll(dir)
		}
	}
	if count > 1 {
		if dir, err = os.MkdirTemp("", "loadtest-nats-"); err != nil {
			return nil, stop, err
		}
		ns, err = natsserver.NewServer(&natsserver.Options{
			Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true,
		})
		if err != nil {
			return nil, stop, fmt.Errorf("cannot create the NATS server: %w", err)
		}
		go ns.Start()
		if !ns.ReadyForConnections(30 * time.Second) {
			return nil, stop, errors.New("the NATS server did not start within 30s")
		}
		extra += " -nats " + ns.ClientURL()
	}
	for range count {
		n, err := spawnNode(bin, extra, secretFile, cpus)
		if err != nil {
			return nodes, stop, err
		}
		nodes = append(nodes, n)
	}
	return nodes, stop, nil
}
