// Command bench is the end-to-end benchmark suite (make bench): it runs the
// micro-benchmarks, builds the real binary, starts it as its own process for
// each scenario and drives it with the load harness (loadtest) over
// loopback, then prints a PASS/FAIL table against the targets and the
// figures to beat, and writes bench/results/<date>-<host>.json and an SVG
// chart of latency percentiles against delivered messages per second.
//
//	go run ./bench                 # the whole suite, < 12 minutes on 2 cores
//	go run ./bench -micro=false    # the end-to-end part only
//
// Every run first measures this machine's loopback floor (floor.go): the
// sender's CPU for one write of a 130-byte frame, and for a writev of 8, to
// 5,000 loopback sockets that another thread drains — the least a delivery
// can cost here. It measures it again at the end, reports the node's CPU
// per delivery as a multiple of it beside the absolute figure, and says how
// this machine's floor compares with the reference machine's (reference.go),
// so that a slower or busier machine is not read as a regression. It also
// measures the floor at the pace of the loads the targets judge (paced.go:
// each socket written a few times a second, in bursts, to a reader in
// another process), against which issue 13.2 and the hot city's bound are
// judged.
//
// Targets (issue 5): connect p99 < 100 ms at 1,000 new connections/s;
// ingest→client p99 < 50 ms and p99.9 < 100 ms at the nominal load (10,000
// connections over 12 cities, 5 frames/s per city: 50,000 deliveries/s);
// zero loss in every scenario. Figures to beat: the highest deliveries/s
// at which p99 stays under 50 ms with 10,000 connections over 12 cities,
// and p50/p99/p99.9 there; RSS per connection at the machine's connection
// ceiling (19,000 here, the loader in two processes); node CPU per million
// deliveries.
//
// The shapes (issue 13): the same 50,000 deliveries/s to 1 city × 5,000
// subscribers, 12 cities and 500 cities × 10, each with p50/p99/p99.9 and
// CPU per delivery against the floor; the hot city also against its bound,
// subscribers ÷ loops × the floor's write. And the pings pair: the 12-city
// shape for 30 s with the default ping_interval and with pings off. Their
// targets are issue 13's, reported as open (not failing the run) until met.
//
// Micro-benchmarks live beside the code they measure, in *_timing_test.go
// files, because they need the packages' internals: gateway/ring_timing_test.go
// (ring append and read, fanout to 1/100/10,000 real subscribers, burst
// fanout) and codec/*_timing_test.go (frame encode, header parse, ingest and
// client message parse, upgrade); bench/floor_test.go has the floor as a
// benchmark (BenchmarkLoopbackWriteFloor), to read beside BenchmarkFanout.
//
// Latency is measured to the kernel's receive timestamp of the frame at the
// client socket, so that the load generator's own scheduling on a shared
// 2-core machine does not count against the node; the time to the read is
// reported beside it. Run it on a quiet machine: the results record the
// load average before and after each step.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/metrocast/metrocast/loadtest/result"
)

func main() {
	if spec, ok := os.LookupEnv(readerEnv); ok {
		os.Exit(floorReader(spec))
	}
	var (
		out      = flag.String("out", "bench/results", "directory for <date>-<host>.json and .svg")
		micro    = flag.Bool("micro", true, "run the micro-benchmarks too")
		quick    = flag.Bool("quick", false, "a small, short version of every step (for tests); figures not comparable")
		quiet    = flag.Float64("quiet-load", 0.8, "1-minute load average under which the machine counts as quiet")
		waitFor  = flag.Duration("wait-quiet", 0, "before starting, wait up to this long for the load to fall under -quiet-load")
		only     = flag.String("only", "", "run only these steps (comma-separated: "+strings.Join(stepNames(), ",")+")")
		tries    = flag.Int("tries", 3, "runs of a step at most, while other processes disturb it (see -max-others)")
		others   = flag.Float64("max-others", 0.1, "share of the machine's CPU other processes may use during a phase before the step is run again")
		loadtest = flag.String("loadtest", "", "use this loadtest binary instead of building ./loadtest")
		node     = flag.String("node", "", "use this metrocast binary instead of building ./cmd/metrocast")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A hard bound: the suite stops by itself whatever a step does.
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()

	cfg := config{out: *out, micro: *micro, quick: *quick, quietLoad: *quiet, tries: max(*tries, 1), maxOthers: *others,
		loadtest: *loadtest, node: *node}
	if *only != "" {
		cfg.only = strings.Split(*only, ",")
	}
	if *waitFor > 0 {
		waitQuiet(ctx, *quiet, *waitFor)
	}
	res, err := runSuite(ctx, cfg, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if !res.passed() {
		os.Exit(1)
	}
}

// waitQuiet waits until the 1-minute load average is under limit, at most
// for d.
func waitQuiet(ctx context.Context, limit float64, d time.Duration) {
	deadline := time.Now().Add(d)
	for l := result.Load1(); l >= limit && time.Now().Before(deadline); l = result.Load1() {
		fmt.Printf("bench: load %.2f ≥ %.2f, waiting for a quiet machine (until %s)\n", l, limit, deadline.Format("15:04:05"))
		select {
		case <-ctx.Done():
			return
		case <-time.After(15 * time.Second):
		}
	}
}

// resultPaths names the result files of a run on date (YYYY-MM-DD) on host.
func resultPaths(dir, date, host string) (jsonPath, svgPath string) {
	base := filepath.Join(dir, date+"-"+host)
	return base + ".json", base + ".svg"
}
