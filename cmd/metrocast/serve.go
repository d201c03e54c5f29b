package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"syscall"

	"github.com/metrocast/metrocast/gateway"
	"github.com/metrocast/metrocast/gateway/cluster"
)

// serveFlags are the flags of `metrocast serve` that are not config keys.
type serveFlags struct {
	file string // -config
	demo bool   // -demo
}

// serveConfig returns the configuration of `metrocast serve` with its
// command line parsed, and the flags that are not config keys.
func serveConfig(args []string) (*config, serveFlags, error) {
	c := newConfig("serve")
	var sf serveFlags
	c.fs.StringVar(&sf.file, "config", "", "YAML config `file` (keys as in deploy/metrocast.yaml; env METROCAST_CONFIG)")
	c.fs.BoolVar(&sf.demo, "demo", false, "feed synthetic data for 12 cities through the ingest port and print the dashboard's URL")
	c.fs.Usage = func() { serveUsage(c.fs.Output(), c) }
	if err := parseFlags(c.fs, args); err != nil {
		return nil, sf, err
	}
	if c.fs.NArg() > 0 {
		return nil, sf, &usageError{fmt.Sprintf("serve: unexpected argument %q (flags only; metrocast serve -h lists them)", c.fs.Arg(0))}
	}
	return c, sf, nil
}

// serveTopics groups the flags of `metrocast serve -h` as
// deploy/metrocast.yaml groups its keys: a topic runs from its first flag
// to the next topic's, in bindConfig's order (TestServeHelp holds the two
// in step).
var serveTopics = []struct{ title, first string }{
	{"listeners", "addr"},
	{"clients", "max-header-bytes"},
	{"rings", "ring-size"},
	{"slow consumers", "max-backlog-bytes"},
	{"time-outs", "ping-interval"},
	{"ingest", "ingest-max-line-bytes"},
	{"stopping", "drain-window"},
	{"security", "insecure"},
	{"cluster", "nats-url"},
	{"logging", "log-format"},
}

// serveUsage writes the help of `metrocast serve`, its settings grouped by
// topic.
func serveUsage(w io.Writer, c *config) {
	fmt.Fprint(w, `usage: metrocast serve [-config FILE] [-demo] [flags]

Runs a node. Every flag below -demo is also a config file key (-ring-size is
ring_size) and an environment variable (METROCAST_RING_SIZE); flags win over
the environment, which wins over the file. 0 means the default.

`)
	printFlag(w, c.fs.Lookup("config"))
	printFlag(w, c.fs.Lookup("demo"))
	t := -1
	for _, name := range c.names {
		if t+1 < len(serveTopics) && serveTopics[t+1].first == name {
			t++
			fmt.Fprintf(w, "\n%s:\n", serveTopics[t].title)
		}
		printFlag(w, c.fs.Lookup(name))
		if name == "nats-url" {
			printFlag(w, c.fs.Lookup(natsAlias))
		}
	}
}

// newLogger returns the process's logger, its level adjustable.
func newLogger(w io.Writer, format string, level *slog.LevelVar) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func runServe(args []string) error {
	c, sf, err := serveConfig(args)
	if err != nil {
		return err
	}
	if err := c.load(sf.file); err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	level := new(slog.LevelVar)
	level.Set(c.logLevel)
	log := newLogger(os.Stderr, c.logFormat, level)

	cfg := c.gw
	cfg.Logger = log
	cfg.Version = buildVersion()
	cfg = cfg.WithDefaults()
	// gnet's loops sit in epoll_wait holding a P each. With Loops equal to
	// GOMAXPROCS the ingest goroutines wait for sysmon to retake a P, up to
	// 10 ms. Two spare Ps took ingest→first-subscriber p99 from ~10 ms to
	// under 0.5 ms (loadtest steady, 5,000 subscribers, 50k deliveries/s).
	if n := cfg.Loops + 2; runtime.GOMAXPROCS(0) < n {
		runtime.GOMAXPROCS(n)
	}
	// With NATS servers the node's bus is cluster mode's; without, the
	// node runs alone on its own.
	if c.cluster.URL != "" {
		b, err := cluster.New(c.cluster)
		if err != nil {
			return fmt.Errorf("invalid configuration: %w", err)
		}
		cfg.Bus = b
	}
	s, err := gateway.New(cfg)
	if err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	if err := s.Start(); err != nil {
		return err
	}
	if cfg.Insecure {
		log.Warn("running insecure: every client is anonymous with every city, producers need no token")
	}
	stopDemo := func() {}
	if sf.demo {
		stopDemo = startDemo(s, cfg, log)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	for got := range sig {
		if got == syscall.SIGHUP {
			reload(s, c, args, level, log)
			if err := s.ReloadAdminToken(); err != nil {
				log.Error("cannot reload the admin token; keeping the old one", "err", err)
			}
			if !cfg.Insecure {
				if err := s.ReloadKeys(); err != nil {
					log.Error("cannot reload auth keys; keeping the old ones", "err", err)
				}
			}
			continue
		}
		log.Info("stopping", "signal", got.String())
		break
	}
	signal.Stop(sig) // a second signal kills at once
	stopDemo()
	if err := s.Shutdown(context.Background()); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}

// reload re-reads the configuration as at start-up (file, environment and
// flags) and applies the keys that can change on a running node
// (liveKeys). Keys that differ from start but take a restart are logged;
// an invalid configuration is logged and changes nothing.
func reload(s *gateway.Server, start *config, args []string, level *slog.LevelVar, log *slog.Logger) {
	c, sf, err := serveConfig(args)
	if err == nil {
		err = c.load(sf.file)
	}
	if err == nil {
		err = s.Reload(c.gw)
	}
	if err != nil {
		log.Error("reload failed; the running configuration is unchanged", "err", err)
		return
	}
	level.Set(c.logLevel)
	live := liveKeys()
	var changed, restart []string
	for _, name := range c.names {
		if c.fs.Lookup(name).Value.String() == start.fs.Lookup(name).Value.String() {
			continue
		}
		if key := keyName(name); slices.Contains(live, key) {
			changed = append(changed, key)
		} else {
			restart = append(restart, key)
		}
	}
	log.Info("reloaded the configuration", "changed_since_start", changed)
	if len(restart) > 0 {
		log.Warn("settings changed that take a restart; they keep their start-up values", "keys", restart)
	}
}
