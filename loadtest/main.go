// Command loadtest drives a metrocast node with tens of thousands of
// WebSocket clients and a publisher on the ingest port, and reports exactly
// what it delivered: per client, the frames owed against the frames received
// (loss and duplicates are counted, never hidden), ingest→client latency,
// connect latency, deliveries/s and, when the node runs on this machine, its
// RSS and CPU time from /proc.
//
//	loadtest connect-storm  -conns 5000 -conn-rate 1000
//	loadtest steady         -conns 10000 -cities 12 -rate 5,10,20 -duration 10s
//	loadtest churn          -conns 2000 -rate 5 -churn-rate 200
//	loadtest slow-consumers -conns 2000 -rate 10 -slow-share 0.1
//	loadtest spike          -conns 2000 -rate 5 -spike-factor 10
//	loadtest flood          -conns 1000 -rate 10 -flood-producers 20
//	loadtest idle           -conns 19000 -procs 2
//	loadtest publish        -rate 10 -duration 1m   (a publisher alone, e.g. for the k6 scripts)
//
// -spawn bin/metrocast starts a node of its own (on loopback ports, stopped
// at the end) instead of using -addr/-ingest/-pid. -json FILE writes the
// result. The exit code is 0 when every check passed, 1 when one failed, 2
// when the run could not be made.
//
// Every run is bounded: -conns connections, each phase its -duration, every
// wait its time-out, and the whole run a limit derived from them; it stops by
// itself. The connections are spread over -procs worker processes (by
// default one per 16,000 connections: a process may open 20,000 files here)
// and, on loopback, over source addresses from 127.0.0.2 (-srcs), so that no
// source address runs short of ephemeral ports.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// maxConnsPerProc keeps one worker below the 20,000 open-files limit with
// room for stdio and the runtime.
const maxConnsPerProc = 18_500

// connsPerProc is how many connections a worker holds when -procs is not
// given.
const connsPerProc = 16_000

// maxDuration bounds every duration flag: a load run that forgets to stop
// holds the machine.
const maxDuration = 30 * time.Minute

// options are a run's settings. They travel to the workers as JSON.
type options struct {
	Scenario       string        `json:"scenario"`
	Addr           string        `json:"addr"`
	Path           string        `json:"path"`
	Ingest         string        `json:"ingest"`
	Conns          int           `json:"conns"`
	Cities         int           `json:"cities"`
	CityPrefix     string        `json:"city_prefix"`
	Subscribe      string        `json:"subscribe"`
	Token          string        `json:"-"` // client token
	IngestToken    string        `json:"-"` // producer token
	TokenFile      string        `json:"-"`
	SecretFile     string        `json:"-"` // -auth-hmac-secret-file
	ConnRate       float64       `json:"conn_rate"`
	Parallel       int           `json:"parallel"`
	Procs          int           `json:"procs"`
	Srcs           int           `json:"srcs"`
	Rates          []float64     `json:"rates"`
	SweepStop      time.Duration `json:"sweep_stop_ns"`
	Duration       time.Duration `json:"duration_ns"`
	Warmup         time.Duration `json:"warmup_ns"`
	Drain          time.Duration `json:"drain_ns"`
	Settle         time.Duration `json:"settle_ns"`
	ConnectTimeout time.Duration `json:"connect_timeout_ns"`
	Payload        int           `json:"payload"`
	ChurnRate      float64       `json:"churn_rate"`
	SlowShare      float64       `json:"slow_share"`
	SlowRcvBuf     int           `json:"slow_rcvbuf"`
	SpikeFactor    float64       `json:"spike_factor"`
	SpikeDuration  time.Duration `json:"spike_duration_ns"`
	FloodProducers int           `json:"flood_producers"`
	TargetConnect  time.Duration `json:"target_connect_p99_ns"`
	TargetP99      time.Duration `json:"target_p99_ns"`
	TargetP999     time.Duration `json:"target_p999_ns"`
	Pids           []int         `json:"pids"`
	Spawn          string        `json:"spawn"`
	Nodes          int           `json:"nodes"`
	ServerArgs     string        `json:"server_args"`
	CPUs           string        `json:"cpus,omitempty"`
	SpawnCPUs      string        `json:"spawn_cpus,omitempty"`
	JSON           string        `json:"-"`
	Progress       time.Duration `json:"-"`
	Spread         bool          `json:"spread"`
}

// scenarios and the defaults each one changes.
var scenarios = map[string]func(*options){
	"connect-storm": func(o *options) {
		o.Conns, o.ConnRate, o.Duration = 5000, 1000, 2*time.Second
	},
	"steady": func(o *options) {},
	"churn": func(o *options) {
		o.Rates, o.ChurnRate = []float64{5}, 100
	},
	"slow-consumers": func(o *options) {
		o.SlowShare, o.Payload = 0.1, 1024
	},
	"spike": func(o *options) {
		o.Rates, o.Duration = []float64{5}, 5*time.Second
	},
	"flood": func(o *options) {
		o.FloodProducers = 20
	},
	"idle": func(o *options) {
		o.Duration = 10 * time.Second
	},
	"publish": func(o *options) {
		o.Conns = 0
	},
}

func defaultOptions(scenario string) options {
	o := options{
		Scenario:       scenario,
		Addr:           "127.0.0.1:8080",
		Path:           "/ws",
		Ingest:         "127.0.0.1:7070",
		Conns:          1000,
		Cities:         12,
		CityPrefix:     "lt-",
		Subscribe:      "url",
		ConnRate:       2000,
		Parallel:       256,
		Srcs:           253,
		Nodes:          1,
		Rates:          []float64{10},
		Duration:       10 * time.Second,
		Warmup:         2 * time.Second,
		Drain:          5 * time.Second,
		Settle:         5 * time.Second,
		ConnectTimeout: 10 * time.Second,
		SlowRcvBuf:     4096,
		SpikeFactor:    10,
		SpikeDuration:  3 * time.Second,
		TargetConnect:  100 * time.Millisecond,
		TargetP99:      50 * time.Millisecond,
		TargetP999:     100 * time.Millisecond,
		Progress:       time.Second,
	}
	scenarios[scenario](&o)
	return o
}

func main() {
	if os.Getenv(workerEnv) == "1" {
		os.Exit(workerMain(os.Stdin, os.Stdout))
	}
	os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = "usage: loadtest connect-storm|steady|churn|slow-consumers|spike|flood|idle|publish [flags]  (loadtest steady -h for the flags)"

// cli runs one scenario from the command line and returns the exit code.
func cli(args []string, stdout, stderr io.Writer) int {
	if len(args) < 1 || scenarios[args[0]] == nil {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	o, err := parseFlags(args[0], args[1:], stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "loadtest:", err)
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := run(ctx, o, stdout, stderr)
	if res != nil {
		printResult(stdout, res)
		if o.JSON != "" {
			if werr := res.write(o.JSON); werr != nil {
				fmt.Fprintln(stderr, "loadtest:", werr)
				return 2
			}
		}
	}
	switch {
	case err != nil:
		fmt.Fprintln(stderr, "loadtest:", err)
		return 2
	case res != nil && !res.passed():
		return 1
	}
	return 0
}

func parseFlags(scenario string, args []string, stderr io.Writer) (*options, error) {
	o := defaultOptions(scenario)
	fs := flag.NewFlagSet(scenario, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Addr, "addr", o.Addr, "WebSocket address of the node (host:port); several, comma-separated, for a cluster: clients spread over them and move to the next on each reconnect")
	fs.StringVar(&o.Path, "path", o.Path, "WebSocket path")
	fs.StringVar(&o.Ingest, "ingest", o.Ingest, "TCP ingest address of the node")
	fs.IntVar(&o.Conns, "conns", o.Conns, "WebSocket connections")
	fs.IntVar(&o.Cities, "cities", o.Cities, "cities; client i follows city i%cities")
	fs.StringVar(&o.CityPrefix, "city-prefix", o.CityPrefix, "prefix of the city names (lt-00, lt-01, …)")
	fs.StringVar(&o.Subscribe, "subscribe", o.Subscribe, "how clients subscribe: url (?cities=), auth (the dashboards' auth message) or subscribe (a subscribe message)")
	fs.StringVar(&o.TokenFile, "token-file", "", "`file` holding the client token, sent on the URL and in -subscribe auth (else METROCAST_TOKEN; the publisher's: METROCAST_INGEST_TOKEN)")
	fs.StringVar(&o.SecretFile, "auth-hmac-secret-file", "", "mint the clients' and the publisher's token with the HMAC secret in this `file` (default: "+demoSecret+" of make run when it exists, else METROCAST_AUTH_HMAC_SECRET); with -spawn, the node checks tokens with it")
	fs.Func("token", "refused: a token on the command line shows in ps; use -token-file or METROCAST_TOKEN", func(string) error {
		return errors.New("a token on the command line shows in ps: use -token-file or METROCAST_TOKEN")
	})
	fs.Float64Var(&o.ConnRate, "conn-rate", o.ConnRate, "new connections per second, all processes together (0: as fast as -parallel allows)")
	fs.IntVar(&o.Parallel, "parallel", o.Parallel, "connection attempts in flight per process")
	fs.IntVar(&o.Procs, "procs", o.Procs, fmt.Sprintf("load processes (0: one per %d connections)", connsPerProc))
	fs.IntVar(&o.Srcs, "srcs", o.Srcs, "source addresses to spread over on loopback, from 127.0.0.2 (1-253)")
	rates := fs.String("rate", formatRates(o.Rates), "frames per second per city; steady takes a list (5,10,20): one measured phase per rate, connections kept")
	fs.DurationVar(&o.SweepStop, "sweep-stop", o.SweepStop, "steady: skip the remaining rates once one has a p99 over this (0: run them all)")
	fs.DurationVar(&o.Duration, "duration", o.Duration, "each measured phase (idle: how long to hold the connections; connect-storm: after the ramp)")
	fs.DurationVar(&o.Warmup, "warmup", o.Warmup, "publish this long before measuring (steady, churn, slow-consumers, spike)")
	fs.DurationVar(&o.Drain, "drain", o.Drain, "after publishing, wait at most this long for the frames still owed")
	fs.DurationVar(&o.Settle, "settle", o.Settle, "idle: wait this long after connecting before reading the node's RSS")
	fs.DurationVar(&o.ConnectTimeout, "connect-timeout", o.ConnectTimeout, "bound on one connection's dial + upgrade + first message")
	fs.IntVar(&o.Payload, "payload", o.Payload, "bytes of padding in each frame's data")
	fs.Float64Var(&o.ChurnRate, "churn-rate", o.ChurnRate, "churn: reconnects per second, all processes together")
	fs.Float64Var(&o.SlowShare, "slow-share", o.SlowShare, "slow-consumers: share of the clients that stop reading")
	fs.IntVar(&o.SlowRcvBuf, "slow-rcvbuf", o.SlowRcvBuf, "slow-consumers: SO_RCVBUF of the slow clients, so that they fill up soon")
	fs.Float64Var(&o.SpikeFactor, "spike-factor", o.SpikeFactor, "spike: rate multiplier during the burst")
	fs.DurationVar(&o.SpikeDuration, "spike-duration", o.SpikeDuration, "spike: length of the burst")
	fs.IntVar(&o.FloodProducers, "flood-producers", o.FloodProducers, "flood: producers sending as fast as TCP allows, to cities nobody follows")
	fs.DurationVar(&o.TargetConnect, "target-connect-p99", o.TargetConnect, "check: connect latency p99 below this")
	fs.DurationVar(&o.TargetP99, "target-p99", o.TargetP99, "check: ingest→client latency p99 below this")
	fs.DurationVar(&o.TargetP999, "target-p999", o.TargetP999, "check: ingest→client latency p99.9 below this")
	pids := fs.String("pid", "", "the node's process id, to read its RSS and CPU time from /proc; several, comma-separated, are summed")
	fs.StringVar(&o.Spawn, "spawn", o.Spawn, "start this metrocast binary on loopback ports for the run (instead of -addr, -ingest, -pid)")
	fs.IntVar(&o.Nodes, "nodes", o.Nodes, "with -spawn: start this many nodes as a cluster on a NATS JetStream server run inside loadtest (clients spread over them, frames published to the first)")
	fs.StringVar(&o.ServerArgs, "server-args", o.ServerArgs, "extra flags for the spawned node, space-separated")
	fs.StringVar(&o.CPUs, "cpus", o.CPUs, "pin the load generator (and its worker processes) to these `CPUs` (as taskset -c: 1, 0-1,3)")
	fs.StringVar(&o.SpawnCPUs, "spawn-cpus", o.SpawnCPUs, "with -spawn: pin the spawned nodes to these `CPUs` (keep them apart from -cpus to measure the node alone)")
	fs.StringVar(&o.JSON, "json", o.JSON, "write the result to this file")
	fs.DurationVar(&o.Progress, "progress", o.Progress, "live progress line interval (0: none)")
	fs.BoolVar(&o.Spread, "spread", o.Spread, "steady: also split each frame's latency into wake-up (to the first subscriber) and fanout (first to last)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var err error
	if o.Rates, err = parseRates(*rates); err != nil {
		return nil, err
	}
	if o.Pids, err = parsePids(*pids); err != nil {
		return nil, err
	}
	if o.Procs == 0 {
		o.Procs = max(1, (o.Conns+connsPerProc-1)/connsPerProc)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	secretGiven := false
	fs.Visit(func(f *flag.Flag) { secretGiven = secretGiven || f.Name == "auth-hmac-secret-file" })
	return &o, o.resolveTokens(secretGiven)
}

func parseRates(s string) ([]float64, error) {
	var rates []float64
	for f := range strings.SplitSeq(s, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil {
			return nil, fmt.Errorf("-rate %q: want numbers separated by commas", s)
		}
		rates = append(rates, r)
	}
	return rates, nil
}

func parsePids(s string) ([]int, error) {
	var pids []int
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		pid, err := strconv.Atoi(f)
		if err != nil || pid < 1 {
			return nil, fmt.Errorf("-pid %q: want process ids separated by commas", s)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

func formatRates(rates []float64) string {
	s := make([]string, len(rates))
	for i, r := range rates {
		s[i] = strconv.FormatFloat(r, 'g', -1, 64)
	}
	return strings.Join(s, ",")
}

func (o *options) validate() error {
	inDur := func(d time.Duration, min time.Duration) bool { return d >= min && d <= maxDuration }
	maxConns := maxConnsPerProc * max(o.Procs, 1)
	switch {
	case scenarios[o.Scenario] == nil:
		return fmt.Errorf("unknown scenario %q", o.Scenario)
	case o.Scenario != "publish" && (o.Conns < 1 || o.Conns > maxConns):
		return fmt.Errorf("-conns (%d) must be in [1, %d]; more need more -procs", o.Conns, maxConns)
	case o.Procs < 1 || o.Procs > 64 || o.Procs > max(o.Conns, 1):
		return fmt.Errorf("-procs (%d) must be in [1, 64] and at most -conns", o.Procs)
	case o.Cities < 1 || o.Cities > 10_000:
		return fmt.Errorf("-cities (%d) must be in [1, 10000]", o.Cities)
	case !slices.Contains([]string{"url", "auth", "subscribe"}, o.Subscribe):
		return fmt.Errorf("-subscribe (%q) must be url, auth or subscribe", o.Subscribe)
	case o.ConnRate < 0 || o.ConnRate > 100_000:
		return fmt.Errorf("-conn-rate (%g) must be in [0, 100000]", o.ConnRate)
	case o.Parallel < 1 || o.Parallel > 4096:
		return fmt.Errorf("-parallel (%d) must be in [1, 4096]", o.Parallel)
	case o.Srcs < 1 || o.Srcs > 253:
		return fmt.Errorf("-srcs (%d) must be in [1, 253]", o.Srcs)
	case len(o.Rates) == 0 || len(o.Rates) > 32:
		return fmt.Errorf("-rate: 1 to 32 rates")
	case !inDur(o.Duration, time.Millisecond):
		return fmt.Errorf("-duration (%s) must be in [1ms, %s]", o.Duration, maxDuration)
	case !inDur(o.Warmup, 0), !inDur(o.Drain, 0), !inDur(o.Settle, 0), !inDur(o.SpikeDuration, 0):
		return fmt.Errorf("-warmup, -drain, -settle and -spike-duration must be in [0, %s]", maxDuration)
	case !inDur(o.ConnectTimeout, time.Millisecond):
		return fmt.Errorf("-connect-timeout (%s) must be in [1ms, %s]", o.ConnectTimeout, maxDuration)
	case o.Payload < 0 || o.Payload > 512<<10:
		return fmt.Errorf("-payload (%d) must be in [0, 524288]", o.Payload)
	case o.ChurnRate < 0 || o.ChurnRate > 100_000:
		return fmt.Errorf("-churn-rate (%g) must be in [0, 100000]", o.ChurnRate)
	case o.SlowShare < 0 || o.SlowShare >= 1:
		return fmt.Errorf("-slow-share (%g) must be in [0, 1)", o.SlowShare)
	case o.SlowRcvBuf < 0:
		return fmt.Errorf("-slow-rcvbuf (%d) must be ≥ 0", o.SlowRcvBuf)
	case o.SpikeFactor < 1 || o.SpikeFactor > 1000:
		return fmt.Errorf("-spike-factor (%g) must be in [1, 1000]", o.SpikeFactor)
	case o.Scenario == "flood" && (o.FloodProducers < 1 || o.FloodProducers > 200):
		return fmt.Errorf("-flood-producers (%d) must be in [1, 200]", o.FloodProducers)
	case o.Progress < 0 || o.SweepStop < 0:
		return fmt.Errorf("-progress (%s) and -sweep-stop (%s) must be ≥ 0", o.Progress, o.SweepStop)
	case o.Nodes < 1 || o.Nodes > 8 || o.Nodes > 1 && o.Spawn == "":
		return fmt.Errorf("-nodes (%d) must be in [1, 8], and more than 1 needs -spawn", o.Nodes)
	case o.SpawnCPUs != "" && o.Spawn == "":
		return fmt.Errorf("-spawn-cpus needs -spawn")
	}
	for _, f := range [...]struct{ flag, list string }{{"-cpus", o.CPUs}, {"-spawn-cpus", o.SpawnCPUs}} {
		if _, err := parseCPUs(f.list); f.list != "" && err != nil {
			return fmt.Errorf("%s %s: %w", f.flag, f.list, err)
		}
	}
	for _, r := range o.Rates {
		if r <= 0 || r*o.SpikeFactor*float64(o.Cities) > 100_000 {
			return fmt.Errorf("-rate (%g) must be > 0 and rate×cities (×spike-factor) at most 100000 frames/s", r)
		}
	}
	if o.Scenario != "steady" && len(o.Rates) > 1 {
		return fmt.Errorf("-rate: only steady takes a list")
	}
	return nil
}

// city is the name of city i%cities.
func (o *options) city(i int) string {
	return fmt.Sprintf("%s%02d", o.CityPrefix, i%o.Cities)
}

// isSlow reports whether client i is one of the SlowShare that stop
// reading: spread evenly over the clients, and so over the cities.
func (o *options) isSlow(i int) bool {
	return o.SlowShare > 0 && int(float64(i+1)*o.SlowShare) > int(float64(i)*o.SlowShare)
}

// limit is how long a whole run may take, whatever happens: every phase,
// every bounded wait, and a minute of slack.
func (o *options) limit() time.Duration {
	phases := time.Duration(len(o.Rates)+2)*o.Duration + o.Warmup + o.SpikeDuration
	connect := 2 * o.ConnectTimeout
	if o.ConnRate > 0 {
		connect += time.Duration(float64(o.Conns) / o.ConnRate * float64(time.Second))
	} else {
		connect += time.Duration(o.Conns) * o.ConnectTimeout / time.Duration(o.Parallel*o.Procs)
	}
	return phases + connect + 2*o.Drain + o.Settle + time.Minute
}
