// Command loadtest drives a running metrocast node over loopback and reports
// what the issues' targets are stated in: server memory per idle connection,
// server CPU per delivery and ingest-to-client latency.
//
//	loadtest idle   -addr 127.0.0.1:18080 -conns 10000 -cities 12 -duration 20s -pid <server pid>
//	loadtest steady -addr 127.0.0.1:18080 -ingest 127.0.0.1:17070 -conns 5000 -cities 12 -rate 10 -duration 20s -pid <server pid>
//
// Every run is bounded: at most -conns connections (below the open-files
// limit, see maxConns), for -duration, and each phase has a time-out. Clients
// come from 127.0.0.2 upwards (-srcs addresses) so that no source address
// runs short of ephemeral ports.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// maxConns keeps one process below the 20,000 open-files limit with room for
// the publisher, stdio and the runtime.
const maxConns = 18_500

// maxDuration bounds -duration: a load run that forgets to stop holds the
// machine.
const maxDuration = 30 * time.Minute

type options struct {
	addr        string
	path        string
	token       string
	ingest      string
	conns       int
	cities      int
	cityPrefix  string
	duration    time.Duration
	rate        float64
	srcs        int
	pid         int
	parallel    int
	connectWait time.Duration
	settle      time.Duration
	drain       time.Duration
	warmup      time.Duration
	spread      bool
}

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "idle" && os.Args[1] != "steady") {
		fmt.Fprintln(os.Stderr, "usage: loadtest idle|steady [flags]  (loadtest idle -h for the flags)")
		os.Exit(2)
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	var o options
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8080", "WebSocket address of the node")
	fs.StringVar(&o.path, "path", "/ws", "WebSocket path")
	fs.StringVar(&o.token, "token", "", "client token for a node with keys, e.g. $(metrocast token -sub load -cities '*')")
	fs.StringVar(&o.ingest, "ingest", "127.0.0.1:7070", "TCP ingest address (steady)")
	fs.IntVar(&o.conns, "conns", 1000, fmt.Sprintf("WebSocket connections (at most %d per process)", maxConns))
	fs.IntVar(&o.cities, "cities", 12, "cities; connection i follows city i%cities")
	fs.StringVar(&o.cityPrefix, "city-prefix", "lt-", "prefix of the city names (lt-00, lt-01, …)")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "idle: how long to hold the connections; steady: how long to publish")
	fs.Float64Var(&o.rate, "rate", 10, "frames per second per city (steady)")
	fs.IntVar(&o.srcs, "srcs", 253, "source addresses to spread over, from 127.0.0.2 (1-253)")
	fs.IntVar(&o.pid, "pid", 0, "server process id: read its RSS (idle) or CPU time (steady) from /proc")
	fs.IntVar(&o.parallel, "parallel", 64, "concurrent connection attempts")
	fs.DurationVar(&o.connectWait, "connect-timeout", 2*time.Minute, "give up when the connections are not all up and subscribed by then")
	fs.DurationVar(&o.settle, "settle", 5*time.Second, "idle: wait this long after connecting before reading RSS")
	fs.DurationVar(&o.drain, "drain", 3*time.Second, "steady: after publishing, wait at most this long for the last frames")
	fs.DurationVar(&o.warmup, "warmup", 3*time.Second, "steady: publish this long before measuring")
	fs.BoolVar(&o.spread, "spread", false, "steady: also split each frame's latency into wake-up (to the first subscriber) and fanout (first to last)")
	_ = fs.Parse(os.Args[2:])
	if err := o.validate(mode); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A hard bound on the whole run, whatever happens to the phases.
	ctx, cancel := context.WithTimeout(ctx, o.connectWait+o.warmup+o.duration+o.settle+2*o.drain+time.Minute)
	defer cancel()

	var err error
	switch mode {
	case "idle":
		err = runIdle(ctx, &o)
	case "steady":
		err = runSteady(ctx, &o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

func (o *options) validate(mode string) error {
	switch {
	case o.conns < 1 || o.conns > maxConns:
		return fmt.Errorf("-conns (%d) must be in [1, %d]; run several processes for more", o.conns, maxConns)
	case o.cities < 1 || o.cities > 10_000:
		return fmt.Errorf("-cities (%d) must be in [1, 10000]", o.cities)
	case o.duration <= 0 || o.duration > maxDuration:
		return fmt.Errorf("-duration (%s) must be in (0, %s]", o.duration, maxDuration)
	case o.srcs < 1 || o.srcs > 253:
		return fmt.Errorf("-srcs (%d) must be in [1, 253]", o.srcs)
	case o.parallel < 1 || o.parallel > 1024:
		return fmt.Errorf("-parallel (%d) must be in [1, 1024]", o.parallel)
	case o.connectWait <= 0 || o.connectWait > maxDuration:
		return fmt.Errorf("-connect-timeout (%s) must be in (0, %s]", o.connectWait, maxDuration)
	case o.settle < 0 || o.settle > maxDuration:
		return fmt.Errorf("-settle (%s) must be in [0, %s]", o.settle, maxDuration)
	case o.drain < 0 || o.drain > time.Minute:
		return fmt.Errorf("-drain (%s) must be in [0, 1m]", o.drain)
	case o.warmup < 0 || o.warmup > maxDuration:
		return fmt.Errorf("-warmup (%s) must be in [0, %s]", o.warmup, maxDuration)
	case mode == "steady" && (o.rate <= 0 || o.rate*float64(o.cities) > 100_000):
		return fmt.Errorf("-rate (%g) must be > 0 and rate×cities at most 100000 frames/s", o.rate)
	}
	return nil
}

func (o *options) city(i int) string {
	return fmt.Sprintf("%s%02d", o.cityPrefix, i%o.cities)
}
