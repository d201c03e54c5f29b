package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"github.com/metrocast/metrocast/gateway"
)

// bindConfig registers one flag per Config field; each flag's default comes
// from METROCAST_<FLAG> (dashes as underscores) when set, else the built-in
// default. Flags given on the command line win over the environment.
func bindConfig(fs *flag.FlagSet, c *gateway.Config) *string {
	d := gateway.Config{}.WithDefaults()

	fs.StringVar(&c.Addr, "addr", d.Addr, "WebSocket listen address")
	fs.StringVar(&c.Path, "path", d.Path, "WebSocket endpoint path")
	fs.StringVar(&c.IngestAddr, "ingest-addr", d.IngestAddr, "TCP ingest listen address (newline-delimited JSON)")
	fs.StringVar(&c.AdminAddr, "admin-addr", d.AdminAddr, "admin HTTP listen address (metrics, health, stats, pprof, HTTP ingest)")
	fs.IntVar(&c.Loops, "loops", d.Loops, "event loops (default: number of CPUs)")
	fs.IntVar(&c.MaxHeaderBytes, "max-header-bytes", d.MaxHeaderBytes, "largest upgrade request head")
	fs.IntVar(&c.MaxMessageBytes, "max-message-bytes", d.MaxMessageBytes, "largest client message (close 1009 past it)")
	fs.IntVar(&c.MaxSubscriptions, "max-subscriptions", d.MaxSubscriptions, "cities one connection may follow")
	fs.IntVar(&c.MaxCities, "max-cities", d.MaxCities, "cities one node may hold")
	fs.IntVar(&c.MaxClientErrors, "max-client-errors", d.MaxClientErrors, "bad client messages before close 1008")
	fs.IntVar(&c.RingSize, "ring-size", d.RingSize, "frames kept per city for replay")
	fs.IntVar(&c.RingBytes, "ring-bytes", d.RingBytes, "bytes kept per city for replay")
	fs.IntVar(&c.RecentAlerts, "recent-alerts", d.RecentAlerts, "alerts messages per city sent to late joiners in initial_data")
	fs.IntVar(&c.MaxBacklogBytes, "max-backlog-bytes", d.MaxBacklogBytes, "outbound backlog past which a subscriber is paused (then conflated)")
	fs.DurationVar(&c.SlowTimeout, "slow-timeout", d.SlowTimeout, "how long a subscriber may stay over the backlog before close 1008")
	fs.IntVar(&c.SocketSendBuffer, "socket-send-buffer", d.SocketSendBuffer, "SO_SNDBUF for client sockets (0: kernel default)")
	fs.DurationVar(&c.PingInterval, "ping-interval", d.PingInterval, "ping an idle connection this often")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", d.IdleTimeout, "close a connection silent for this long (1001)")
	fs.DurationVar(&c.HandshakeTimeout, "handshake-timeout", d.HandshakeTimeout, "close a connection that has not upgraded by then")
	fs.IntVar(&c.IngestMaxLineBytes, "ingest-max-line-bytes", d.IngestMaxLineBytes, "largest ingest line")
	fs.IntVar(&c.IngestMaxConns, "ingest-max-conns", d.IngestMaxConns, "concurrent producer connections")
	fs.DurationVar(&c.IngestWriteTimeout, "ingest-write-timeout", d.IngestWriteTimeout, "close a producer that does not read its acks")
	fs.DurationVar(&c.DrainWindow, "drain-window", d.DrainWindow, "on SIGTERM, close clients evenly over this window, then producers, then exit")
	logFormat := new(string)
	fs.StringVar(logFormat, "log-format", "text", "log format: text or json")
	return logFormat
}

// applyEnv sets every flag not given on the command line from
// METROCAST_<FLAG> when that variable is set.
func applyEnv(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		env := "METROCAST_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v, ok := os.LookupEnv(env)
		if !ok || given[f.Name] || err != nil {
			return
		}
		if e := f.Value.Set(v); e != nil {
			err = fmt.Errorf("%s=%q: %w", env, v, e)
		}
	})
	return err
}

func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var cfg gateway.Config
	logFormat := bindConfig(fs, &cfg)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := applyEnv(fs); err != nil {
		return err
	}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, nil)
	switch *logFormat {
	case "text":
	case "json":
		h = slog.NewJSONHandler(os.Stderr, nil)
	default:
		return fmt.Errorf("log-format (%q) must be text or json", *logFormat)
	}
	cfg.Logger = slog.New(h)

	cfg = cfg.WithDefaults()
	// gnet's loops sit in epoll_wait holding a P each. With Loops equal to
	// GOMAXPROCS the ingest goroutines wait for sysmon to retake a P, up to
	// 10 ms. Two spare Ps took ingest→first-subscriber p99 from ~10 ms to
	// under 0.5 ms (loadtest steady, 5,000 subscribers, 50k deliveries/s).
	if n := cfg.Loops + 2; runtime.GOMAXPROCS(0) < n {
		runtime.GOMAXPROCS(n)
	}
	s, err := gateway.New(cfg)
	if err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	if err := s.Start(); err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	got := <-sig
	cfg.Logger.Info("stopping", "signal", got.String())
	signal.Stop(sig) // a second signal kills at once
	if err := s.Shutdown(context.Background()); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	cfg.Logger.Info("stopped")
	return nil
}
