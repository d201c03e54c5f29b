package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/metrocast/metrocast/loadtest/result"
)

type config struct {
	out       string
	micro     bool
	quick     bool
	quietLoad float64
	tries     int     // runs of a step at most (runStepQuietly)
	maxOthers float64 // share of the machine other processes may take
	only      []string
	loadtest  string // prebuilt binaries, or "" to build
	node      string
}

// The load behind the targets.
const (
	sweepConns   = 10_000 // connections of the latency sweep
	sweepCities  = 12
	nominalRate  = 5 // frames/s per city at the nominal load: 50,000 deliveries/s
	ceilingConns = 19_000
	connectRate  = 1000
	// The shapes of issue 13 at one delivery rate: shapeConns connections
	// × shapeRate frames/s per city = 50,000 deliveries/s, however many
	// cities share them.
	shapeConns = 5000
	shapeRate  = 10
)

// shapes are the steps of the shapes, the hot city first.
var shapes = []string{"hot", "hotapart", "cities12", "cities500"}

// apartArgs run the node on one CPU with one loop and the load generator
// on another (the first two this process may run on): on two cores the
// hot city's fanout is otherwise the node's writes and the load
// generator's reads of them together (the shared bound), and its p99 says
// little of the node's own bound. A machine of one CPU skips the step.
func apartArgs() []string {
	var set unix.CPUSet
	var cpus []string
	if unix.SchedGetaffinity(0, &set) == nil {
		for cpu := 0; cpu < 1024 && len(cpus) < 2; cpu++ {
			if set.IsSet(cpu) {
				cpus = append(cpus, strconv.Itoa(cpu))
			}
		}
	}
	for len(cpus) < 2 {
		cpus = append(cpus, "0")
	}
	return []string{"-cpus", cpus[1], "-spawn-cpus", cpus[0], "-server-args", "-loops 1"}
}

// noPings makes the node ping nobody within a run: the other half of the
// pings pair.
const noPings = "-ping-interval 1h -idle-timeout 2h"

// sweepRates are the frames/s per city of the latency sweep: ×10,000
// deliveries/s each with 10,000 connections over 12 cities.
var sweepRates = []float64{1, 2, nominalRate, 7, 10, 14, 20, 30, 40}

// step is one loadtest run against a fresh node.
type step struct {
	name     string
	what     string // for the table
	scenario string
	args     []string
	est      time.Duration // about how long it runs, node start and drain included
}

func steps(quick bool) []step {
	if quick {
		return []step{
			{"connect", "connect storm", "connect-storm", []string{"-conns", "300", "-conn-rate", "1000", "-duration", "100ms"}, 2 * time.Second},
			{"sweep", "latency sweep", "steady", []string{"-conns", "240", "-cities", "12", "-rate", "1,5",
				"-duration", "500ms", "-warmup", "200ms", "-sweep-stop", "50ms"}, 2 * time.Second},
			{"churn", "churn", "churn", []string{"-conns", "200", "-rate", "10", "-churn-rate", "100", "-duration", "500ms", "-warmup", "200ms"}, 2 * time.Second},
			{"slow", "slow consumers", "slow-consumers", []string{"-conns", "200", "-rate", "20", "-payload", "2048",
				"-duration", "500ms", "-warmup", "200ms", "-server-args", slowNodeArgs}, 2 * time.Second},
			{"spike", "spike ×10", "spike", []string{"-conns", "200", "-rate", "2", "-duration", "500ms", "-spike-duration", "500ms", "-warmup", "200ms"}, 2 * time.Second},
			{"flood", "producer flood", "flood", []string{"-conns", "200", "-rate", "10", "-flood-producers", "4", "-duration", "500ms", "-warmup", "200ms"}, 2 * time.Second},
			{"hot", "shape: 1 city × 200 subscribers", "steady", []string{"-conns", "200", "-cities", "1", "-rate", "10",
				"-duration", "500ms", "-warmup", "200ms", "-spread"}, 2 * time.Second},
			{"hotapart", "shape: 1 city × 200 subscribers, node and load generator apart", "steady", append([]string{"-conns", "200", "-cities", "1", "-rate", "10",
				"-duration", "500ms", "-warmup", "200ms", "-spread"}, apartArgs()...), 2 * time.Second},
			{"cities12", "shape: 12 cities × 17 subscribers", "steady", []string{"-conns", "200", "-cities", "12", "-rate", "10",
				"-duration", "500ms", "-warmup", "200ms"}, 2 * time.Second},
			{"cities500", "shape: 100 cities × 2 subscribers", "steady", []string{"-conns", "200", "-cities", "100", "-rate", "10",
				"-duration", "500ms", "-warmup", "200ms"}, 2 * time.Second},
			{"pings", "pings on (ping_interval 1s)", "steady", []string{"-conns", "200", "-cities", "12", "-rate", "10",
				"-duration", "1500ms", "-warmup", "200ms", "-server-args", "-ping-interval 1s -idle-timeout 3s"}, 3 * time.Second},
			{"nopings", "pings off (" + noPings + ")", "steady", []string{"-conns", "200", "-cities", "12", "-rate", "10",
				"-duration", "1500ms", "-warmup", "200ms", "-server-args", noPings}, 3 * time.Second},
			{"pings2", "pings on (ping_interval 1s), again", "steady", []string{"-conns", "200", "-cities", "12", "-rate", "10",
				"-duration", "1500ms", "-warmup", "200ms", "-server-args", "-ping-interval 1s -idle-timeout 3s"}, 3 * time.Second},
			{"nopings2", "pings off (" + noPings + "), again", "steady", []string{"-conns", "200", "-cities", "12", "-rate", "10",
				"-duration", "1500ms", "-warmup", "200ms", "-server-args", noPings}, 3 * time.Second},
			{"ceiling", "connection ceiling", "idle", []string{"-conns", "400", "-procs", "2", "-settle", "0s", "-duration", "100ms"}, 2 * time.Second},
			{"cluster", "cluster of 2, churn across nodes", "churn", []string{"-nodes", "2", "-conns", "240", "-cities", "12", "-rate", "5",
				"-churn-rate", "100", "-duration", "500ms", "-warmup", "200ms"}, 3 * time.Second},
		}
	}
	return []step{
		{"connect", "connect storm", "connect-storm", []string{"-conns", "10000", "-conn-rate", strconv.Itoa(connectRate), "-duration", "1s"}, 15 * time.Second},
		{"sweep", "latency sweep", "steady", []string{"-conns", strconv.Itoa(sweepConns), "-cities", strconv.Itoa(sweepCities),
			"-rate", joinRates(sweepRates), "-duration", "8s", "-warmup", "3s", "-sweep-stop", "50ms", "-drain", "15s"}, 90 * time.Second},
		{"churn", "churn", "churn", []string{"-conns", "2000", "-rate", "10", "-churn-rate", "200", "-duration", "10s"}, 15 * time.Second},
		{"slow", "slow consumers", "slow-consumers", []string{"-conns", "2000", "-rate", "20", "-payload", "2048",
			"-slow-share", "0.1", "-duration", "8s", "-server-args", slowNodeArgs}, 25 * time.Second},
		// From a tenth of the nominal load to the nominal load for 3 s.
		{"spike", "spike ×10", "spike", []string{"-conns", "5000", "-rate", "1", "-spike-factor", "10",
			"-duration", "5s", "-spike-duration", "3s"}, 20 * time.Second},
		// 20 producers sending as fast as TCP allows to cities nobody
		// follows, while 1,000 clients are fed 10,000 deliveries/s: the
		// clients' latency targets hold, the flood is slowed and paced.
		{"flood", "producer flood", "flood", []string{"-conns", "1000", "-rate", "10", "-flood-producers", "20",
			"-duration", "8s"}, 25 * time.Second},
		// The same 50,000 deliveries/s to one hot city, to 12 and to 500:
		// what the fanout's cost and latency owe to the subscribers per
		// frame. The hot city's per-frame spread (first → last subscriber)
		// shows the fanout itself.
		{"hot", fmt.Sprintf("shape: 1 city × %s subscribers", thousands(shapeConns)), "steady", shapeArgs(1, "-spread"), 20 * time.Second},
		// The same with the node on a core of its own (one loop) and the
		// load generator on the other: the node's own bound.
		{"hotapart", fmt.Sprintf("shape: 1 city × %s subscribers, node and load generator on CPUs of their own", thousands(shapeConns)),
			"steady", shapeArgs(1, append([]string{"-spread"}, apartArgs()...)...), 20 * time.Second},
		{"cities12", fmt.Sprintf("shape: 12 cities × %d subscribers", shapeConns/12), "steady", shapeArgs(12), 20 * time.Second},
		{"cities500", fmt.Sprintf("shape: 500 cities × %d subscribers", shapeConns/500), "steady", shapeArgs(500), 25 * time.Second},
		// The 12-city shape with the default ping_interval (25 s) and with
		// pings off, each measured over 30 s so that the first round of
		// pings (25 s after the connections opened) falls in it. Twice,
		// alternated: on two shared cores a second in which the load
		// generator and the node want the same core makes a tail in
		// whichever run it falls, so each side keeps its quieter run.
		{"pings", "pings on (ping_interval 25s), 12 cities", "steady", pingArgs(""), 45 * time.Second},
		{"nopings", "pings off (" + noPings + "), 12 cities", "steady", pingArgs(noPings), 45 * time.Second},
		{"pings2", "pings on (ping_interval 25s), 12 cities, again", "steady", pingArgs(""), 45 * time.Second},
		{"nopings2", "pings off (" + noPings + "), 12 cities, again", "steady", pingArgs(noPings), 45 * time.Second},
		{"ceiling", "connection ceiling", "idle", []string{"-conns", strconv.Itoa(ceilingConns), "-procs", "2",
			"-conn-rate", "2500", "-settle", "5s", "-duration", "2s"}, 20 * time.Second},
		// The nominal load through NATS JetStream on two nodes, every
		// reconnect resumed on the other node.
		{"cluster", "cluster of 2, churn across nodes", "churn", []string{"-nodes", "2", "-conns", strconv.Itoa(sweepConns),
			"-cities", strconv.Itoa(sweepCities), "-rate", strconv.Itoa(nominalRate), "-churn-rate", "200", "-duration", "10s"}, 30 * time.Second},
	}
}

// shapeArgs are the loadtest flags of a shape over cities.
func shapeArgs(cities int, extra ...string) []string {
	return append([]string{"-conns", strconv.Itoa(shapeConns), "-cities", strconv.Itoa(cities),
		"-rate", strconv.Itoa(shapeRate), "-duration", "8s", "-warmup", "2s"}, extra...)
}

// pingArgs are the loadtest flags of one run of the pings pair, the node
// started with nodeArgs.
func pingArgs(nodeArgs string) []string {
	a := []string{"-conns", strconv.Itoa(shapeConns), "-cities", "12", "-rate", strconv.Itoa(shapeRate),
		"-duration", "30s", "-warmup", "2s"}
	if nodeArgs != "" {
		a = append(a, "-server-args", nodeArgs)
	}
	return a
}

// slowNodeArgs make the node stall a client that stops reading after a few
// hundred KiB instead of a few MiB, and lap it after 64 frames, so that
// the slow consumers are paused and conflated within the run.
const slowNodeArgs = "-socket-send-buffer 16384 -max-backlog-bytes 65536 -ring-size 64"

func stepNames() []string {
	var n []string
	for _, s := range steps(false) {
		n = append(n, s.name)
	}
	return n
}

func joinRates(r []float64) string {
	s := make([]string, len(r))
	for i, v := range r {
		s[i] = strconv.FormatFloat(v, 'g', -1, 64)
	}
	return strings.Join(s, ",")
}

// ltResult is the part of loadtest's JSON result the bench reads, in
// loadtest's own types.
type ltResult struct {
	Node       *result.Node                 `json:"node"`
	Connect    *result.Connect              `json:"connect"`
	Options    *ltOptions                   `json:"options"`
	Phases     []result.Phase               `json:"phases"`
	Accounting map[string]result.Accounting `json:"accounting"`
	Checks     []result.Check               `json:"checks"`
	Spread     *result.Spread               `json:"spread"`
}

// ltOptions are the options of a loadtest run the bench reads.
type ltOptions struct {
	Cities     int    `json:"cities"`
	ServerArgs string `json:"server_args"`
	SpawnCPUs  string `json:"spawn_cpus"` // the node pinned apart from the load generator
}

// loadgenPerDelivery is the load generator's CPU per delivery in p, in
// µs, or 0. (Computed here rather than read: loadtest binaries from
// before it reported it, given with -loadtest, compare too.)
func loadgenPerDelivery(p *result.Phase) float64 {
	if p.Deliveries == 0 {
		return 0
	}
	return p.LoadgenCPU / float64(p.Deliveries) * 1e6
}

// stepRun is one step's outcome: the loadtest result as parsed and as
// written (kept verbatim in the bench's JSON), or why there is none.
type stepRun struct {
	Name   string          `json:"name"`
	What   string          `json:"what"`
	Args   []string        `json:"args"`
	Err    string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	// Others is the largest share of the machine's CPU that other
	// processes used during one of the step's phases; Attempts, how many
	// runs it took to get one they disturbed less (see runStepQuietly).
	Others   float64 `json:"others_cpu_share"`
	Attempts int     `json:"attempts"`
	parsed   *ltResult
}

// othersShare is the largest share of the machine's CPU that processes
// other than the node and the load generator used in a phase of l.
func othersShare(l *ltResult, cpus int) float64 {
	share := 0.0
	for _, p := range l.Phases {
		if p.Seconds > 0 && cpus > 0 {
			share = max(share, p.OthersCPU/(p.Seconds*float64(cpus)))
		}
	}
	return share
}

// runStepQuietly runs s, and again (at most tries times in all, and only
// while another run would end before deadline) while other processes took
// more than maxOthers of the machine during one of its phases: on a shared
// machine their load shows in the latency. It keeps the least disturbed run
// and says how disturbed it was.
func runStepQuietly(ctx context.Context, lt, node, dir string, s step, cpus, tries int, maxOthers float64,
	deadline time.Time, w io.Writer) *stepRun {
	var best *stepRun
	for attempt := 1; attempt <= tries && ctx.Err() == nil; attempt++ {
		t0 := time.Now()
		r := runStep(ctx, lt, node, dir, s, w)
		if r.parsed != nil {
			r.Others = othersShare(r.parsed, cpus)
		}
		if best == nil || best.parsed == nil || r.parsed != nil && r.Others < best.Others {
			best = r
		}
		best.Attempts = attempt
		if best.parsed == nil || best.Others <= maxOthers || attempt == tries || time.Now().Add(time.Since(t0)).After(deadline) {
			break
		}
		fmt.Fprintf(w, "== %s: other processes used %.0f%% of the machine during a phase (over %.0f%%): running it again\n",
			s.what, 100*best.Others, 100*maxOthers)
	}
	return best
}

// runStep runs loadtest for s against a node of its own and reads its
// result. A run whose checks failed (exit 1) still has a result; any other
// failure is recorded in Err.
func runStep(ctx context.Context, lt, node, dir string, s step, w io.Writer) *stepRun {
	out := filepath.Join(dir, s.name+".json")
	args := append([]string{s.scenario, "-spawn", node, "-json", out, "-progress", "5s"}, s.args...)
	r := &stepRun{Name: s.name, What: s.what, Args: args[1:]}
	fmt.Fprintf(w, "\n== %s: loadtest %s\n", s.what, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, lt, args...)
	cmd.Stdout, cmd.Stderr = w, w
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1) {
		r.Err = err.Error()
	}
	b, rerr := os.ReadFile(out)
	if rerr != nil {
		if r.Err == "" {
			r.Err = rerr.Error()
		}
		return r
	}
	r.Result = b
	r.parsed = new(ltResult)
	if err := json.Unmarshal(b, r.parsed); err != nil {
		r.Err, r.parsed = fmt.Sprintf("cannot parse %s: %v", out, err), nil
	}
	return r
}

// wanted reports whether the step is in cfg.only (or there is no filter).
func (c *config) wanted(name string) bool {
	return len(c.only) == 0 || slices.Contains(c.only, name)
}
