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
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/metrocast/metrocast/loadtest/result"
)

// suiteResult is what bench/results/<date>-<host>.json holds.
type suiteResult struct {
	Date    string        `json:"date"`
	Host    string        `json:"host"`
	Started time.Time     `json:"started"`
	Seconds float64       `json:"seconds"`
	Command string        `json:"command"`
	Machine machine       `json:"machine"`
	Floor   *floorFigures `json:"floor,omitempty"`
	// Paced is the floor at the pace of the loads the targets judge
	// (paced.go): the nominal load's and the hot city's.
	Paced   []*pacedFigures `json:"paced_floors,omitempty"`
	Targets []target        `json:"targets"`
	Figures figures         `json:"figures"`
	Sweep   []sweepPoint    `json:"sweep"`
	Shapes  []shape         `json:"shapes,omitempty"`
	Pings   *pingsPair      `json:"pings,omitempty"`
	Micro   []microResult   `json:"micro,omitempty"`
	Steps   []*stepRun      `json:"steps"`
}

type machine struct {
	CPUs   int    `json:"cpus"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
	Commit string `json:"commit"`
	// LoadBefore is the 1-minute load average when the bench started:
	// at or above QuietLoad, someone else was using the machine. (Later
	// readings include the bench's own load.)
	LoadBefore float64 `json:"load1_before"`
	LoadAfter  float64 `json:"load1_after"`
	QuietLoad  float64 `json:"quiet_load"`
	// OthersMax is the largest share of the machine's CPU that processes
	// other than the node and the load generator used during a sweep rate.
	OthersMax float64 `json:"others_cpu_share_max"`
	// VsReference is this machine's floor (one write) over the reference
	// machine's: 1.3 means 30% slower than the machine the README
	// publishes, and absolute figures about that much worse.
	VsReference float64 `json:"floor_vs_reference"`
}

// target is a target of the suite. An open one is an issue's target not
// met yet: reported, PASS or FAIL, but it does not fail the run.
type target struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Pass bool   `json:"pass"`
	Open bool   `json:"open,omitempty"`
}

// shape is one run of the shapes: the same deliveries/s over a number of
// cities.
type shape struct {
	Step      string         `json:"step"`
	Cities    int            `json:"cities"`
	Conns     int            `json:"connections"`
	Delivered float64        `json:"deliveries_per_s"`
	Latency   result.Latency `json:"latency"`
	// Node and load generator CPU per delivery (µs), the node's also as a
	// multiple of the floor's write.
	NodeCPU    float64 `json:"node_cpu_us_per_delivery"`
	FloorRatio float64 `json:"node_cpu_floor_ratio"`
	LoadgenCPU float64 `json:"loadgen_cpu_us_per_delivery"`
	// FanP99 is the time from a frame's first subscriber to its last
	// (kernel timestamps), when measured.
	FanP99 float64 `json:"fan_p99_ms,omitempty"`
	// BoundMs (one city) is subscribers ÷ loops × the floor's write at
	// this load's pace (BoundWriteNs; the floor's back-to-back write when
	// that was not measured): how long a loop takes to write a frame to
	// its share of the subscribers at the floor's cost, which the last of
	// them waits; P99Bound is the p99 over it.
	BoundMs      float64 `json:"bound_ms,omitempty"`
	BoundWriteNs float64 `json:"bound_write_cpu_ns,omitempty"`
	P99Bound     float64 `json:"p99_bound_ratio,omitempty"`
	// SharedMs (one city) is the bound on one host: subscribers × (the
	// node's + the load generator's CPU per delivery) ÷ CPUs, the least
	// time the cores take to write a frame to every subscriber and read it
	// there when the load generator shares them; P99Shared is the p99
	// over it.
	SharedMs  float64 `json:"shared_bound_ms,omitempty"`
	P99Shared float64 `json:"p99_shared_bound_ratio,omitempty"`
	// Apart: the node and the load generator ran on CPUs of their own
	// (loadtest -spawn-cpus), the node with Loops loops.
	Apart bool `json:"apart,omitempty"`
	Loops int  `json:"loops,omitempty"`
}

// pingsPair is the same steady load with pings and without.
type pingsPair struct {
	On    result.Latency `json:"on"`
	Off   result.Latency `json:"off"`
	Ratio float64        `json:"p999_ratio"` // On.P999 / Off.P999
}

// figures are the numbers to beat, reported whatever they are.
type figures struct {
	SweepConns     int             `json:"sweep_connections"`
	MaxDeliveries  float64         `json:"max_deliveries_per_s_p99_under_50ms"`
	MaxRatePerCity float64         `json:"max_rate_per_city"`
	AtMax          *result.Latency `json:"latency_at_max,omitempty"`
	CPUAtMax       float64         `json:"node_cpu_s_per_million_deliveries_at_max"`
	// NodeBound is what the node's CPU per delivery at the highest rate
	// allows on every core of the machine, had it them to itself (in the
	// sweep it shares them with the load generator): an estimate.
	NodeBound        float64         `json:"node_cpu_bound_deliveries_per_s"`
	Nominal          *result.Latency `json:"latency_at_nominal,omitempty"`
	NominalDelivered float64         `json:"nominal_deliveries_per_s"`
	CPUAtNominal     float64         `json:"node_cpu_s_per_million_deliveries_at_nominal"`
	// The node's CPU per delivery as a multiple of the floor's write, at
	// the nominal load and at the highest rate; the load generator's CPU
	// per delivery (µs) at the nominal load.
	FloorRatioAtNominal float64 `json:"node_cpu_floor_ratio_at_nominal"`
	// PacedRatioAtNominal is the same over the floor at the nominal
	// load's pace, when measured (issue 13.2's target).
	PacedRatioAtNominal float64 `json:"node_cpu_paced_floor_ratio_at_nominal,omitempty"`
	FloorRatioAtMax     float64 `json:"node_cpu_floor_ratio_at_max"`
	LoadgenAtNominal    float64 `json:"loadgen_cpu_us_per_delivery_at_nominal"`
	ConnectP99          float64 `json:"connect_p99_ms"`
	ConnectRate         float64 `json:"connect_rate_per_s"`
	CeilingConns        int64   `json:"ceiling_connections"`
	CeilingRSS          int64   `json:"ceiling_node_rss"`
	RSSPerConn          float64 `json:"rss_per_connection_at_ceiling"`
}

// sweepPoint is one rate of the latency sweep.
type sweepPoint struct {
	RatePerCity float64        `json:"rate_per_city"`
	Delivered   float64        `json:"deliveries_per_s"`
	Latency     result.Latency `json:"latency"`
	ReadP99     float64        `json:"read_p99_ms"`
	NodeCPU     float64        `json:"node_cpu_s_per_million_deliveries"`
	FloorRatio  float64        `json:"node_cpu_floor_ratio"`
	LoadgenCPU  float64        `json:"loadgen_cpu_s"`
	// LoadgenPerDelivery is the load generator's CPU per delivery (µs):
	// below the node's, it measures the node rather than itself.
	LoadgenPerDelivery float64 `json:"loadgen_cpu_us_per_delivery"`
	OthersCPU          float64 `json:"others_cpu_s"`
	// OthersShare is OthersCPU as a share of the machine over the rate.
	OthersShare float64 `json:"others_cpu_share"`
}

func (r *suiteResult) passed() bool {
	for _, t := range r.Targets {
		if !t.Pass && !t.Open {
			return false
		}
	}
	return true
}

// floorRatio is µs of CPU per delivery as a multiple of the floor's write,
// or 0 without a floor.
func (r *suiteResult) floorRatio(us float64) float64 {
	if r.Floor == nil || r.Floor.WriteNs <= 0 {
		return 0
	}
	return us * 1e3 / r.Floor.WriteNs
}

// retryBudget bounds the time after which no step is run again for a
// quieter machine: make bench must end within 12 minutes.
const retryBudget = 9 * time.Minute

// runSuite builds, runs every wanted step and reports.
func runSuite(ctx context.Context, cfg config, w io.Writer) (*suiteResult, error) {
	host, _ := os.Hostname()
	start := time.Now()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	res := &suiteResult{
		Date: start.Format("2006-01-02"), Host: host, Started: start.UTC().Truncate(time.Second),
		Command: "make bench (go run ./bench " + strings.Join(os.Args[1:], " ") + ")",
		Machine: machine{CPUs: runtime.NumCPU(), Kernel: strings.TrimSpace(string(kernel)), Go: runtime.Version(),
			LoadBefore: result.Load1(), QuietLoad: cfg.quietLoad},
	}
	if cfg.quick {
		res.Command += " — quick: figures not comparable"
	}
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	res.Machine.Commit = gitDescribe(root)
	tmp, err := os.MkdirTemp("", "metrocast-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	lt, node := cfg.loadtest, cfg.node
	if lt == "" {
		lt = filepath.Join(tmp, "loadtest")
		if err := goCmd(ctx, root, w, "build", "-o", lt, "./loadtest"); err != nil {
			return nil, fmt.Errorf("cannot build loadtest: %w", err)
		}
	}
	if node == "" {
		node = filepath.Join(tmp, "metrocast")
		if err := goCmd(ctx, root, w, "build", "-trimpath", "-o", node, "./cmd/metrocast"); err != nil {
			return nil, fmt.Errorf("cannot build metrocast: %w", err)
		}
	}
	sockets, perPass := floorSockets, 30_000
	if cfg.quick {
		sockets, perPass = 200, 2000
	}
	fmt.Fprintf(w, "== the loopback floor: write and writev of %d-byte frames to %d sockets\n", floorFrameBytes, sockets)
	if res.Floor, err = measureFloor(sockets, perPass, 3); err != nil {
		return nil, fmt.Errorf("cannot measure the floor: %w", err)
	}
	if res.Paced, err = measurePaced(paces(cfg.quick), cfg.quick, w); err != nil {
		return nil, fmt.Errorf("cannot measure the floor at the loads' pace: %w", err)
	}
	if cfg.micro {
		fmt.Fprintln(w, "== micro-benchmarks: go test -run '^$' -bench . -benchmem ./codec/ ./gateway/ ./bench/")
		var out strings.Builder
		err := goCmd(ctx, root, io.MultiWriter(w, &out), "test", "-run", "^$", "-bench", ".", "-benchmem", "./codec/", "./gateway/", "./bench/")
		if err != nil {
			return nil, fmt.Errorf("micro-benchmarks: %w", err)
		}
		res.Micro = parseMicro(strings.NewReader(out.String()))
	}
	var todo []step
	for _, s := range steps(cfg.quick) {
		if !cfg.wanted(s.name) {
			continue
		}
		if slices.Contains(s.args, "-spawn-cpus") && res.Machine.CPUs < 2 {
			fmt.Fprintf(w, "skipped %s: it runs the node and the load generator on a CPU each\n", s.what)
			continue
		}
		todo = append(todo, s)
	}
	for i, s := range todo {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// Runs again for a quieter machine must leave time for the rest.
		deadline := start.Add(retryBudget)
		for _, next := range todo[i+1:] {
			deadline = deadline.Add(-next.est)
		}
		res.Steps = append(res.Steps, runStepQuietly(ctx, lt, node, tmp, s, res.Machine.CPUs, cfg.tries, cfg.maxOthers, deadline, w))
	}
	// Again at the end: a floor that moved during the run says the machine
	// did.
	end, err := measureFloor(sockets, perPass, 3)
	if err != nil {
		return nil, fmt.Errorf("cannot measure the floor: %w", err)
	}
	res.Floor.add(end)
	endPaced, err := measurePaced(paces(cfg.quick), cfg.quick, w)
	if err != nil {
		return nil, fmt.Errorf("cannot measure the floor at the loads' pace: %w", err)
	}
	for i, p := range endPaced {
		res.Paced[i].add(p)
	}
	res.Seconds = time.Since(start).Seconds()
	res.Machine.LoadAfter = result.Load1()
	res.evaluate()
	res.print(w)
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return res, err
	}
	jsonPath, svgPath := resultPaths(cfg.out, res.Date, host)
	if len(res.Sweep) > 0 {
		if err := os.WriteFile(svgPath, []byte(chart(res)), 0o644); err != nil {
			return res, err
		}
		fmt.Fprintln(w, "wrote", svgPath)
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return res, err
	}
	if err := os.WriteFile(jsonPath, append(b, '\n'), 0o644); err != nil {
		return res, err
	}
	fmt.Fprintln(w, "wrote", jsonPath)
	return res, nil
}

// moduleRoot is the directory of go.mod, at or above the working
// directory: the bench runs from there (make bench) or from bench/ (tests).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if fileExists(filepath.Join(dir, "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find go.mod above the working directory")
		}
		dir = parent
	}
}

// goCmd runs the go command that runs the bench, in dir.
func goCmd(ctx context.Context, dir string, w io.Writer, args ...string) error {
	tool := "go"
	if root := runtime.GOROOT(); root != "" {
		if p := filepath.Join(root, "bin", "go"); fileExists(p) {
			tool = p
		}
	}
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = w, w
	return cmd.Run()
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// gitDescribe names the commit the bench runs on, "-dirty" when tracked
// files other than the results (which the bench itself rewrites) differ
// from it.
func gitDescribe(dir string) string {
	git := func(args ...string) string {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	rev := git("describe", "--tags", "--always")
	if rev != "" && git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results") != "" {
		rev += "-dirty"
	}
	return rev
}

func (r *suiteResult) step(name string) *stepRun {
	for _, s := range r.Steps {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func (r *suiteResult) add(name, want, got string, pass bool) {
	r.Targets = append(r.Targets, target{Name: name, Want: want, Got: got, Pass: pass})
}

// addOpen adds a target of an open issue: reported, not failing the run.
func (r *suiteResult) addOpen(name, want, got string, pass bool) {
	r.Targets = append(r.Targets, target{Name: name, Want: want, Got: got, Pass: pass, Open: true})
}

// evaluate fills the targets, the figures and the sweep from the steps.
// A step that did not run (or could not) fails its targets.
func (r *suiteResult) evaluate() {
	if r.Floor != nil && reference.WriteNs > 0 {
		r.Machine.VsReference = r.Floor.WriteNs / reference.WriteNs
	}
	missing := func(s *stepRun) string {
		switch {
		case s == nil:
			return "not run"
		case s.parsed == nil:
			return "no result: " + s.Err
		}
		return ""
	}
	// Connect storm.
	if s := r.step("connect"); s != nil {
		if m := missing(s); m != "" {
			r.add("connect p99 at 1,000 new connections/s", "< 100ms", m, false)
		} else if c := s.parsed.Connect; c != nil {
			r.Figures.ConnectP99, r.Figures.ConnectRate = c.Latency.P99, c.RatePerS
			r.add(fmt.Sprintf("connect p99, %d connections at %.0f/s", c.Conns, c.RatePerS), "< 100ms",
				fmt.Sprintf("%s (%d failed)", result.Ms(c.Latency.P99), c.Failed), c.Latency.P99 < 100 && c.Failed == 0 && c.Up == int64(c.Conns))
		}
	}

	// Latency sweep: the nominal load, the highest rate under 50 ms.
	if s := r.step("sweep"); s != nil {
		if m := missing(s); m != "" {
			r.add("ingest→client p99 at the nominal load", "< 50ms", m, false)
		} else {
			r.sweep(s.parsed)
		}
	}

	r.shapes(missing)
	r.pings(missing)

	// Zero loss everywhere, and each scenario's own checks.
	var lost, dups, owed uint64
	for _, s := range r.Steps {
		if s.parsed == nil {
			continue
		}
		for _, a := range s.parsed.Accounting {
			lost += a.Lost
			dups += a.Dups
			owed += a.Owed
		}
	}
	if owed > 0 || lost+dups > 0 {
		r.add("zero loss, no duplicates (every scenario)", "0 lost, 0 dups",
			fmt.Sprintf("%d lost, %d dups of %d owed", lost, dups, owed), lost == 0 && dups == 0)
	}
	for _, name := range []string{"churn", "slow", "spike", "flood", "ceiling", "cluster"} {
		s := r.step(name)
		if s == nil {
			continue
		}
		if m := missing(s); m != "" {
			r.add(name+": every check", "all pass", m, false)
			continue
		}
		var failed []string
		for _, c := range s.parsed.Checks {
			if !c.Pass {
				failed = append(failed, fmt.Sprintf("%s (%s, want %s)", c.Name, c.Got, c.Want))
			}
		}
		got := fmt.Sprintf("%d of %d pass", len(s.parsed.Checks)-len(failed), len(s.parsed.Checks))
		if len(failed) > 0 {
			got += ": " + strings.Join(failed, "; ")
		}
		r.add(s.What+": every check", "all pass", got, len(failed) == 0 && len(s.parsed.Checks) > 0)
		if name == "ceiling" {
			if c, n := s.parsed.Connect, s.parsed.Node; c != nil && n != nil {
				r.Figures.CeilingConns, r.Figures.CeilingRSS, r.Figures.RSSPerConn = c.Up, n.RSSConnected, n.RSSPerConn
			}
		}
	}
}

// sweep reads the latency sweep: each rate a point of the chart, the
// nominal rate for the targets, the highest rate with p99 < 50 ms and no
// loss for the figures.
func (r *suiteResult) sweep(l *ltResult) {
	var lost uint64
	for _, a := range l.Accounting {
		lost += a.Lost + a.Dups
	}
	var nominal *result.Phase
	for i := range l.Phases {
		p := &l.Phases[i]
		if p.Name == "warmup" {
			continue
		}
		sp := sweepPoint{RatePerCity: p.RatePerCity, Delivered: p.PerSecond, Latency: p.Latency,
			ReadP99: p.Read.P99, NodeCPU: p.NodeCPUPerMDel, FloorRatio: r.floorRatio(p.NodeCPUPerMDel),
			LoadgenCPU: p.LoadgenCPU, LoadgenPerDelivery: loadgenPerDelivery(p), OthersCPU: p.OthersCPU}
		if p.Seconds > 0 && r.Machine.CPUs > 0 {
			sp.OthersShare = max(0, p.OthersCPU/(p.Seconds*float64(r.Machine.CPUs)))
			r.Machine.OthersMax = max(r.Machine.OthersMax, sp.OthersShare)
		}
		r.Sweep = append(r.Sweep, sp)
		if p.RatePerCity == nominalRate {
			nominal = p
		}
		if p.Latency.Count > 0 && p.Latency.P99 < 50 && lost == 0 && p.PerSecond > r.Figures.MaxDeliveries {
			lat := p.Latency
			r.Figures.MaxDeliveries, r.Figures.MaxRatePerCity, r.Figures.AtMax, r.Figures.CPUAtMax =
				p.PerSecond, p.RatePerCity, &lat, p.NodeCPUPerMDel
			r.Figures.FloorRatioAtMax = r.floorRatio(p.NodeCPUPerMDel)
			if p.NodeCPUPerMDel > 0 {
				r.Figures.NodeBound = float64(r.Machine.CPUs) / p.NodeCPUPerMDel * 1e6
			}
		}
	}
	conns := 0
	if l.Connect != nil {
		conns = l.Connect.Conns
	}
	r.Figures.SweepConns = conns
	if nominal == nil {
		r.add("ingest→client p99 at the nominal load", "< 50ms", "the sweep stopped before it", false)
		return
	}
	lat := nominal.Latency
	r.Figures.Nominal, r.Figures.NominalDelivered, r.Figures.CPUAtNominal = &lat, nominal.PerSecond, nominal.NodeCPUPerMDel
	r.Figures.FloorRatioAtNominal = r.floorRatio(nominal.NodeCPUPerMDel)
	pf := r.pacedFloor(conns, sweepCities, nominal.RatePerCity)
	if pf != nil && pf.WriteNs > 0 {
		r.Figures.PacedRatioAtNominal = nominal.NodeCPUPerMDel * 1e3 / pf.WriteNs
	}
	r.Figures.LoadgenAtNominal = loadgenPerDelivery(nominal)
	at := fmt.Sprintf(" at %.0f deliveries/s (%d connections, %g frames/s × %d cities)",
		nominal.PerSecond, conns, nominal.RatePerCity, sweepCities)
	r.add("ingest→client p99"+at, "< 50ms", result.Ms(lat.P99), lat.Count > 0 && lat.P99 < 50)
	r.add("ingest→client p99.9"+at, "< 100ms", result.Ms(lat.P999), lat.Count > 0 && lat.P999 < 100)
	switch f := r.Figures; {
	case f.PacedRatioAtNominal > 0:
		r.addOpen("node CPU per delivery"+at+" (issue 13.2)", fmt.Sprintf("≤ %.2f× the floor at this pace", maxFloorRatio),
			fmt.Sprintf("%.2f µs, %.2f× the floor at this pace (%.2f µs), %.2f× back to back", nominal.NodeCPUPerMDel,
				f.PacedRatioAtNominal, pf.WriteNs/1e3, f.FloorRatioAtNominal), f.PacedRatioAtNominal <= maxFloorRatio)
	case f.FloorRatioAtNominal > 0:
		r.addOpen("node CPU per delivery"+at+" (issue 13.2)", fmt.Sprintf("≤ %.2f× the floor", maxFloorRatio),
			fmt.Sprintf("%.2f µs, %.2f× the floor", nominal.NodeCPUPerMDel, f.FloorRatioAtNominal), f.FloorRatioAtNominal <= maxFloorRatio)
	}
}

// The targets of issue 13 the shapes and the pings pair judge.
const (
	maxFloorRatio = 1.15 // node CPU per delivery over the floor's write (at its pace), at the nominal load
	maxBoundRatio = 1.3  // the hot city's p99 over subscribers ÷ loops × the floor's write at its pace
	maxPingsRatio = 1.1  // p99.9 with pings over p99.9 without
)

// shapes reads the shape steps: each one's figures, and the hot city
// against its bound.
func (r *suiteResult) shapes(missing func(*stepRun) string) {
	for _, name := range shapes {
		s := r.step(name)
		if s == nil {
			continue
		}
		if m := missing(s); m != "" {
			r.add(s.What, "a result", m, false)
			continue
		}
		row := shape{Step: name}
		// The node runs a loop per CPU it may run on (its default) unless
		// told.
		loops, apart := r.Machine.CPUs, false
		if o := s.parsed.Options; o != nil {
			row.Cities, apart = o.Cities, o.SpawnCPUs != ""
			if apart {
				loops = cpuCount(o.SpawnCPUs)
			}
			if n := loopsArg(o.ServerArgs); n > 0 {
				loops = n
			}
		}
		row.Apart, row.Loops = apart, loops
		if c := s.parsed.Connect; c != nil {
			row.Conns = c.Conns
		}
		rate := 0.0
		for i := range s.parsed.Phases {
			p := &s.parsed.Phases[i]
			if p.Name == "warmup" {
				continue
			}
			rate = p.RatePerCity
			row.Delivered, row.Latency, row.NodeCPU = p.PerSecond, p.Latency, p.NodeCPUPerMDel
			row.FloorRatio, row.LoadgenCPU = r.floorRatio(p.NodeCPUPerMDel), loadgenPerDelivery(p)
		}
		if sp := s.parsed.Spread; sp != nil {
			row.FanP99 = sp.FanP99
		}
		if row.Cities == 12 && row.NodeCPU > 0 && row.LoadgenCPU > 0 {
			// Above the node's, the figures would be the load generator's.
			// Issue 13.6's target: open, as the others of that issue.
			r.addOpen("the load generator measures the node, not itself: its CPU per delivery, 12 cities (issue 13.6)", "< the node's",
				fmt.Sprintf("%.2f µs against %.2f µs, %.2f×", row.LoadgenCPU, row.NodeCPU, row.LoadgenCPU/row.NodeCPU),
				row.LoadgenCPU < row.NodeCPU)
		}
		if row.Cities == 1 && r.Floor != nil && loops > 0 && row.Conns > 0 {
			row.BoundWriteNs = r.Floor.WriteNs
			if pf := r.pacedFloor(row.Conns, 1, rate); pf != nil && pf.WriteNs > 0 {
				row.BoundWriteNs = pf.WriteNs
			}
			row.BoundMs = float64(row.Conns) / float64(loops) * row.BoundWriteNs / 1e6
			row.P99Bound = row.Latency.P99 / row.BoundMs
			if row.NodeCPU > 0 && row.LoadgenCPU > 0 && !apart && r.Machine.CPUs > 0 {
				row.SharedMs = float64(row.Conns) * (row.NodeCPU + row.LoadgenCPU) / float64(r.Machine.CPUs) / 1e3
				row.P99Shared = row.Latency.P99 / row.SharedMs
			}
			where := ""
			if apart {
				n := fmt.Sprintf("%d loops", loops)
				if loops == 1 {
					n = "one loop"
				}
				where = ", node (" + n + ") and load generator on CPUs of their own"
			}
			r.addOpen(fmt.Sprintf("hot city p99 against subscribers ÷ loops × write floor (%.2f µs) = %s%s (issue 13.4)", row.BoundWriteNs/1e3, result.Ms(row.BoundMs), where),
				fmt.Sprintf("≤ %.1f×", maxBoundRatio), fmt.Sprintf("%s, %.2f×", result.Ms(row.Latency.P99), row.P99Bound),
				row.Latency.Count > 0 && row.P99Bound <= maxBoundRatio)
		}
		r.Shapes = append(r.Shapes, row)
	}
}

// cpuCount is how many CPUs a list as taskset -c takes names ("0,2-3":
// 3), or 0 when it cannot be read.
func cpuCount(list string) int {
	cpus, err := result.CPUs(list)
	if err != nil {
		return 0
	}
	return len(cpus)
}

// loopsArg returns the N of a "-loops N" in a node's flags, or 0.
func loopsArg(args string) int {
	n, _ := strconv.Atoi(flagValue(strings.Fields(args), "loops"))
	return n
}

// flagValue returns the value of flag name in args ("-name v", "--name
// v" or "-name=v"), or "".
func flagValue(args []string, name string) string {
	for i, a := range args {
		a = strings.TrimLeft(a, "-")
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

// pings compares the pings pair's p99.9: each side's quieter run (the
// lower p99.9) when it ran twice.
func (r *suiteResult) pings(missing func(*stepRun) string) {
	var runs [2][]*stepRun
	for i, names := range [2][2]string{{"pings", "pings2"}, {"nopings", "nopings2"}} {
		for _, n := range names {
			if s := r.step(n); s != nil {
				if m := missing(s); m != "" {
					r.add(s.What, "a result", m, false)
					return
				}
				runs[i] = append(runs[i], s)
			}
		}
	}
	if len(runs[0]) == 0 || len(runs[1]) == 0 {
		return
	}
	quieter := func(ss []*stepRun) result.Latency {
		var best result.Latency
		for i, s := range ss {
			var lat result.Latency
			for _, p := range s.parsed.Phases {
				if p.Name != "warmup" {
					lat = p.Latency
				}
			}
			if i == 0 || lat.P999 < best.P999 {
				best = lat
			}
		}
		return best
	}
	pp := &pingsPair{On: quieter(runs[0]), Off: quieter(runs[1])}
	if pp.Off.P999 > 0 {
		pp.Ratio = pp.On.P999 / pp.Off.P999
	}
	r.Pings = pp
	r.addOpen("p99.9 with pings against without, same load (issue 13.1)", fmt.Sprintf("≤ %.1f×", maxPingsRatio),
		fmt.Sprintf("%s against %s, %.2f×", result.Ms(pp.On.P999), result.Ms(pp.Off.P999), pp.Ratio),
		pp.On.Count > 0 && pp.Off.Count > 0 && pp.Ratio <= maxPingsRatio)
}

func (r *suiteResult) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "\nmetrocast bench %s on %s: %d CPUs, %s, %s; load %.2f at the start; %.0fs\n",
		r.Machine.Commit, r.Host, r.Machine.CPUs, r.Machine.Kernel, r.Machine.Go, r.Machine.LoadBefore, r.Seconds)
	r.printFloor(tw)
	if r.Machine.LoadBefore >= r.Machine.QuietLoad {
		fmt.Fprintf(tw, "NOTE: the load was %.2f (≥ %.2f) at the start: other programs shared the machine, the figures are pessimistic; compare the ratios to the floor\n",
			r.Machine.LoadBefore, r.Machine.QuietLoad)
	}
	if len(r.Sweep) > 0 {
		fmt.Fprintf(tw, "other processes used at most %.0f%% of the machine during a sweep rate\n", 100*r.Machine.OthersMax)
	}
	for _, s := range r.Steps {
		if s.Attempts > 1 || s.Others > 0.1 {
			fmt.Fprintf(tw, "%s: other processes used up to %.0f%% of the machine in a phase (%d runs, the least disturbed kept)\n",
				s.What, 100*s.Others, s.Attempts)
		}
	}
	fmt.Fprintln(tw, "\ntarget\twant\tgot\tresult")
	for _, t := range r.Targets {
		v := "PASS"
		if !t.Pass {
			v = "FAIL"
		}
		if t.Open {
			v += " (open issue, not gating)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, t.Want, t.Got, v)
	}
	if len(r.Sweep) > 0 {
		fmt.Fprintln(tw, "\nsweep: frames/s per city\tdeliveries/s\tp50\tp99\tp99.9\tmax\tread p99\tnode µs/delivery\t×floor\tload generator µs/delivery\tothers")
		for _, p := range r.Sweep {
			fmt.Fprintf(tw, "%g\t%.0f\t%s\t%s\t%s\t%s\t%s\t%.2f\t%s\t%.2f\t%.0f%%\n", p.RatePerCity, p.Delivered,
				result.Ms(p.Latency.P50), result.Ms(p.Latency.P99), result.Ms(p.Latency.P999), result.Ms(p.Latency.Max), result.Ms(p.ReadP99), p.NodeCPU,
				ratio(p.FloorRatio), p.LoadgenPerDelivery, 100*p.OthersShare)
		}
	}
	if len(r.Shapes) > 0 {
		fmt.Fprintln(tw, "\nshape: cities × subscribers\tdeliveries/s\tp50\tp99\tp99.9\tnode µs/delivery\t×floor\tload generator µs/delivery\tfirst→last p99\tbound\tp99/bound\tshared bound\tp99/shared")
		for _, sh := range r.Shapes {
			fan, bound, pb, shared, ps := "-", "-", "-", "-", "-"
			if sh.FanP99 > 0 {
				fan = result.Ms(sh.FanP99)
			}
			if sh.BoundMs > 0 {
				bound, pb = result.Ms(sh.BoundMs), ratio(sh.P99Bound)
			}
			if sh.SharedMs > 0 {
				shared, ps = result.Ms(sh.SharedMs), ratio(sh.P99Shared)
			}
			label := fmt.Sprintf("%d × %d", sh.Cities, sh.Conns/max(sh.Cities, 1))
			if sh.Apart {
				label += ", apart"
			}
			fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%s\t%.2f\t%s\t%.2f\t%s\t%s\t%s\t%s\t%s\n", label,
				sh.Delivered, result.Ms(sh.Latency.P50), result.Ms(sh.Latency.P99), result.Ms(sh.Latency.P999), sh.NodeCPU, ratio(sh.FloorRatio),
				sh.LoadgenCPU, fan, bound, pb, shared, ps)
		}
		fmt.Fprintln(tw, "(bound: subscribers ÷ loops × the floor's write at this pace, the wait of a frame's last subscriber at the floor's cost;")
		fmt.Fprintln(tw, " shared bound: subscribers × (node + load generator CPU per delivery) ÷ CPUs, the same wait when the load generator shares the cores)")
	}
	if p := r.Pings; p != nil {
		fmt.Fprintf(tw, "\npings pair\twith pings p50 %s p99 %s p99.9 %s max %s; without p50 %s p99 %s p99.9 %s max %s; p99.9 %.2f×\n",
			result.Ms(p.On.P50), result.Ms(p.On.P99), result.Ms(p.On.P999), result.Ms(p.On.Max), result.Ms(p.Off.P50), result.Ms(p.Off.P99), result.Ms(p.Off.P999), result.Ms(p.Off.Max), p.Ratio)
	}
	f := r.Figures
	fmt.Fprintln(tw, "\nfigures to beat")
	if f.AtMax != nil {
		fmt.Fprintf(tw, "highest deliveries/s with p99 < 50ms (%d connections, %d cities)\t%.0f/s (%g frames/s per city): p50 %s p99 %s p99.9 %s; node CPU %.2f µs per delivery (%s the floor)\n",
			f.SweepConns, sweepCities, f.MaxDeliveries, f.MaxRatePerCity, result.Ms(f.AtMax.P50), result.Ms(f.AtMax.P99), result.Ms(f.AtMax.P999), f.CPUAtMax, ratio(f.FloorRatioAtMax))
	}
	if f.NodeBound > 0 {
		fmt.Fprintf(tw, "deliveries/s the node's CPU per delivery allows on %d cores (estimate)\t%.0f/s\n", r.Machine.CPUs, f.NodeBound)
	}
	if f.Nominal != nil {
		fmt.Fprintf(tw, "node CPU per delivery at %.0f/s\t%.2f µs (%s the floor, %s the floor at this pace); the load generator's %.2f µs\n",
			f.NominalDelivered, f.CPUAtNominal, ratio(f.FloorRatioAtNominal), ratio(f.PacedRatioAtNominal), f.LoadgenAtNominal)
	}
	if f.CeilingConns > 0 {
		fmt.Fprintf(tw, "RSS per connection at %d connections\t%.0f B (node RSS %.1f MiB)\n", f.CeilingConns, f.RSSPerConn, float64(f.CeilingRSS)/(1<<20))
	}
	if f.ConnectRate > 0 {
		fmt.Fprintf(tw, "connect p99 at %.0f new connections/s\t%s\n", f.ConnectRate, result.Ms(f.ConnectP99))
	}
	for _, m := range r.Micro {
		fmt.Fprintf(tw, "micro %s\t%.1f ns/op, %.0f B/op, %.0f allocs/op%s\n", m.Name, m.NsPerOp, m.BytesPerOp, m.AllocsPerOp, extra(m.Extra))
	}
	_ = tw.Flush()
}

// printFloor says what this machine's floor is and how it compares with
// the reference machine's, so that a reader can tell a slower or busier
// machine from a regression.
func (r *suiteResult) printFloor(w io.Writer) {
	fl := r.Floor
	if fl == nil {
		return
	}
	fmt.Fprintf(w, "floor: one write of a %d-byte frame to %s loopback sockets costs %.2f µs of sender CPU here, a writev of %d frames %.2f µs (%.2f µs a frame)",
		fl.FrameBytes, thousands(float64(fl.Sockets)), fl.WriteNs/1e3, floorBatch, fl.WritevNs/1e3, fl.perFrame()/1e3)
	if fl.EndWriteNs > 0 {
		fmt.Fprintf(w, "; %.2f µs at the start, %.2f at the end", fl.StartWriteNs/1e3, fl.EndWriteNs/1e3)
	}
	fmt.Fprintln(w)
	for _, p := range r.Paced {
		fmt.Fprintf(w, "floor at a load's pace: %s sockets, %d × %g frames/s (a burst of %d writes every %s): %.2f µs a write (passes %s), %s the floor\n",
			thousands(float64(p.Sockets)), p.Cities, p.Rate, p.Sockets/p.Cities, p.every().Round(time.Microsecond), p.WriteNs/1e3, passesUs(p.Passes), ratio(p.WriteNs/fl.WriteNs))
	}
	if v := r.Machine.VsReference; v > 0 {
		how := "as fast as"
		switch {
		case v > 1.1:
			how = fmt.Sprintf("%.2f× slower than", v)
		case v < 0.9:
			how = fmt.Sprintf("%.2f× faster than", 1/v)
		}
		fmt.Fprintf(w, "this machine is %s the reference (%.2f µs a write; %s): expect absolute figures about %.2f× the README's; the ratios to the floor compare as they are\n",
			how, reference.WriteNs/1e3, reference.Run, v)
	}
}

// ratio formats a multiple of the floor, "-" when there is none.
func ratio(v float64) string {
	if v <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f×", v)
}

func extra(e map[string]float64) string {
	var s string
	for _, unit := range []string{"ns/delivery", "cpu-ns/delivery", "cpu-ns/write", "cpu-ns/frame", "MB/s"} {
		if v, ok := e[unit]; ok {
			s += fmt.Sprintf(", %.1f %s", v, unit)
		}
	}
	return s
}
