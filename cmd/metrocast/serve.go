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
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", d.ShutdownTimeout, "bound on a graceful stop")

	fs.BoolVar(&c.Insecure, "insecure", false, "admit clients and producers without a token (anonymous, every city); needed when no key is configured")
	fs.StringVar(&c.AuthHMACSecret, "auth-hmac-secret", "", "HMAC secret for HS256/384/512 tokens, ≥ 32 bytes (prefer METROCAST_AUTH_HMAC_SECRET or -auth-hmac-secret-file: flags show in ps)")
	fs.StringVar(&c.AuthHMACSecretFile, "auth-hmac-secret-file", "", "file holding the HMAC secret (re-read on SIGHUP)")
	fs.Var((*listFlag)(&c.AuthKeys), "auth-keys", "comma-separated PEM public keys (kid: file name), JWKS *.json files and directories of them (re-read on SIGHUP)")
	fs.StringVar(&c.AuthAudience, "auth-audience", "", "when set, tokens must list it in aud")
	fs.StringVar(&c.AuthIssuer, "auth-issuer", "", "when set, tokens must have it as iss")
	fs.DurationVar(&c.AuthLeeway, "auth-leeway", d.AuthLeeway, "clock skew allowed on exp, nbf and iat")
	fs.DurationVar(&c.AuthTimeout, "auth-timeout", d.AuthTimeout, "close (4001) a connection without a token that sends no auth message by then")
	fs.DurationVar(&c.TokenExpiryWarning, "token-expiry-warning", d.TokenExpiryWarning, "send token_expiring this long before the token expires")
	fs.DurationVar(&c.TokenGrace, "token-grace", d.TokenGrace, "close (4001) a connection this long after its token expired unless it refreshed")
	fs.Var((*listFlag)(&c.AllowedOrigins), "allowed-origins", "comma-separated Origins browsers may connect from (https://a.example, https://*.example, *); empty: any")
	fs.IntVar(&c.MaxConns, "max-conns", d.MaxConns, "WebSocket connections per node (503 past it)")
	fs.IntVar(&c.MaxConnsPerIP, "max-conns-per-ip", d.MaxConnsPerIP, "WebSocket connections per source address, IPv6 per /64 (429 past it)")
	fs.IntVar(&c.ClientMessageRate, "client-message-rate", d.ClientMessageRate, "messages per minute per connection (token bucket); past it rate_limited")
	fs.IntVar(&c.ClientMessageBurst, "client-message-burst", 0, "messages a connection may send at once (0: -client-message-rate)")
	fs.IntVar(&c.IngestMaxErrors, "ingest-max-errors", d.IngestMaxErrors, "bad lines per minute before a producer is disconnected")
	fs.IntVar(&c.IngestMaxRate, "ingest-max-rate", d.IngestMaxRate, "lines per second per producer, paced by TCP backpressure (0: no bound)")
	logFormat := new(string)
	fs.StringVar(logFormat, "log-format", "text", "log format: text or json")
	return logFormat
}

// listFlag is a comma-separated list flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	*l = nil
	for e := range strings.SplitSeq(v, ",") {
		if e = strings.TrimSpace(e); e != "" {
			*l = append(*l, e)
		}
	}
	return nil
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
	if cfg.Insecure {
		cfg.Logger.Warn("running insecure: every client is anonymous with every city, producers need no token")
	} else {
		defer reloadKeysOnHUP(s, cfg.Logger)()
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
