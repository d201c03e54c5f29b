package main

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestMain lets this test binary serve as a load worker: the coordinator
// starts workers by re-executing its own executable with workerEnv set.
func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "1" {
		os.Exit(workerMain(os.Stdin, os.Stdout))
	}
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

// nodeBinary builds cmd/metrocast once per test run: the scenarios run
// against the real binary, as its own process, as the bench does.
func nodeBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "loadtest-bin-"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "metrocast")
		cmd := exec.Command(goTool(), "build", "-o", binPath, "../cmd/metrocast")
		cmd.Stderr = os.Stderr
		binErr = cmd.Run()
	})
	if binErr != nil {
		t.Fatalf("cannot build cmd/metrocast: %v", binErr)
	}
	return binPath
}

// goTool is the go command that runs these tests.
func goTool() string {
	if p := filepath.Join(os.Getenv("GOROOT"), "bin", "go"); os.Getenv("GOROOT") != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}

// smoke returns options for a small, short run of scenario: a few hundred
// connections, phases of a second, no progress line.
func smoke(t *testing.T, scenario string) *options {
	t.Helper()
	o := defaultOptions(scenario)
	o.Conns = 300
	o.Cities = 6
	o.Duration = time.Second
	o.Warmup = 300 * time.Millisecond
	o.Drain = 10 * time.Second
	o.Settle = 0
	o.Progress = 0
	o.Procs = 1
	return &o
}

// runScenario runs o and fails the test on a run error.
func runScenario(t *testing.T, o *options) *Result {
	t.Helper()
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := run(ctx, o, io.Discard, io.Discard)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if testing.Verbose() {
		printResult(os.Stdout, res)
	}
	return res
}

// verdicts maps each check of res to its outcome.
func verdicts(res *Result) map[string]bool {
	v := map[string]bool{}
	for _, c := range res.Checks {
		v[c.Name] = c.Pass
	}
	return v
}

// mustPass fails unless each named check ran and passed. Latency checks
// are left out of the smoke tests on purpose: a test machine shared with
// other jobs cannot promise milliseconds, while accounting must be exact
// anywhere.
func mustPass(t *testing.T, res *Result, names ...string) {
	t.Helper()
	v := verdicts(res)
	for _, n := range names {
		pass, ok := v[n]
		switch {
		case !ok:
			t.Errorf("check %q did not run", n)
		case !pass:
			for _, c := range res.Checks {
				if c.Name == n {
					t.Errorf("check %q failed: got %s, want %s", n, c.Got, c.Want)
				}
			}
		}
	}
}

// TestDialerSpread: clients start on node idx%n and each reconnect moves
// to the next node.
func TestDialerSpread(t *testing.T) {
	d := newDialer("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", 10)
	if !d.local {
		t.Fatal("loopback nodes: want source addresses spread")
	}
	for _, c := range []struct {
		idx, dials int
		want       string
	}{{0, 1, "127.0.0.1:1"}, {1, 1, "127.0.0.1:2"}, {4, 1, "127.0.0.1:2"}, {4, 2, "127.0.0.1:3"}, {4, 3, "127.0.0.1:1"}} {
		if got := d.addr(c.idx, c.dials); got != c.want {
			t.Errorf("addr(%d, %d) = %s, want %s", c.idx, c.dials, got, c.want)
		}
	}
	if newDialer("127.0.0.1:1,10.0.0.1:2", 10).local {
		t.Fatal("a node off loopback: want the kernel's source address")
	}
	if p, err := parsePids("12, 34"); err != nil || len(p) != 2 || p[0] != 12 || p[1] != 34 {
		t.Fatalf("parsePids: %v %v", p, err)
	}
	if _, err := parsePids("12,x"); err == nil {
		t.Fatal("parsePids accepted x")
	}
}
