package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/metrocast/metrocast/gateway"
	"github.com/metrocast/metrocast/gateway/cluster"
)

// settings is everything `metrocast serve` reads: the gateway's Config,
// cluster mode's (the nats_* keys) and the process's own logging settings.
type settings struct {
	gw        gateway.Config
	cluster   cluster.Config
	logFormat string
	logLevel  slog.Level
}

// Every setting has one name in three places: the config file key
// (ring_size), the flag (-ring-size) and the environment variable
// (METROCAST_RING_SIZE). The keys are those gateway.Config.Validate and
// cluster.Config.Validate name.

// natsAlias is the flag -nats, short for -nats-url.
const natsAlias = "nats"

// secretFlags are the settings whose value is a secret, by flag name, and
// the flag to use instead. They are taken from the config file or the
// environment, never from the command line: every local user reads a
// process's arguments (ps, /proc/PID/cmdline, the admin port's pprof).
var secretFlags = map[string]string{"auth-hmac-secret": "auth-hmac-secret-file"}

func flagName(key string) string { return strings.ReplaceAll(key, "_", "-") }
func keyName(flag string) string { return strings.ReplaceAll(flag, "-", "_") }
func envName(key string) string  { return "METROCAST_" + strings.ToUpper(key) }

// bindConfig registers one flag per setting on fs, bound to st, with the
// built-in defaults, and returns the flag names in the order the README
// and deploy/metrocast.yaml list them.
func bindConfig(fs *flag.FlagSet, st *settings) []string {
	d := gateway.Config{}.WithDefaults()
	c := &st.gw
	var names []string
	str := func(p *string, name, def, usage string) {
		fs.StringVar(p, name, def, usage)
		names = append(names, name)
	}
	num := func(p *int, name string, def int, usage string) {
		fs.IntVar(p, name, def, usage)
		names = append(names, name)
	}
	dur := func(p *time.Duration, name string, def time.Duration, usage string) {
		fs.DurationVar(p, name, def, usage)
		names = append(names, name)
	}
	list := func(p *[]string, name, usage string) {
		fs.Var((*listFlag)(p), name, usage)
		names = append(names, name)
	}
	num64 := func(p *int64, name string, def int64, usage string) {
		fs.Int64Var(p, name, def, usage)
		names = append(names, name)
	}

	str(&c.Addr, "addr", d.Addr, "WebSocket listen address")
	str(&c.Path, "path", d.Path, "WebSocket endpoint path")
	str(&c.IngestAddr, "ingest-addr", d.IngestAddr, "TCP ingest listen address (newline-delimited JSON)")
	str(&c.AdminAddr, "admin-addr", d.AdminAddr, "admin HTTP listen address (metrics, health, stats, pprof, HTTP ingest); beyond loopback it needs -admin-token-file")
	str(&c.AdminTokenFile, "admin-token-file", "", "file holding the admin token (≥ 32 bytes): Authorization: Bearer for the admin port's routes but /healthz, /readyz and /metrics")
	fs.BoolVar(&c.AdminPprof, "admin-pprof", false, "serve /debug/pprof/ on an admin port beyond loopback too (behind the admin token; loopback always serves it)")
	names = append(names, "admin-pprof")
	num(&c.Loops, "loops", 0, "event loops (0: one per CPU)")
	num(&c.MaxHeaderBytes, "max-header-bytes", d.MaxHeaderBytes, "largest upgrade request head")
	num(&c.MaxMessageBytes, "max-message-bytes", d.MaxMessageBytes, "largest client message (close 1009 past it)")
	num(&c.MaxSubscriptions, "max-subscriptions", d.MaxSubscriptions, "cities one connection may follow")
	num(&c.MaxCities, "max-cities", d.MaxCities, "cities one node may hold")
	num(&c.MaxClientErrors, "max-client-errors", d.MaxClientErrors, "bad client messages before close 1008")
	num(&c.RingSize, "ring-size", d.RingSize, "frames kept per city for replay")
	num(&c.RingBytes, "ring-bytes", d.RingBytes, "bytes kept per city for replay")
	num(&c.RecentAlerts, "recent-alerts", d.RecentAlerts, "alerts messages per city sent to late joiners in initial_data")
	num64(&c.RingMemory, "ring-memory", 0, "bytes all cities' rings may hold together; over it the coldest cities' oldest frames go (0: a quarter of the machine's memory, or of the cgroup's limit)")
	dur(&c.CityIdleTTL, "city-idle-ttl", d.CityIdleTTL, "drop a city that has had no subscriber and no frame for this long, keeping its state compact (within idle-state-memory)")
	num64(&c.IdleStateMemory, "idle-state-memory", 0, "bytes the kept states of dropped cities may hold together; over it the oldest go, their cities coming back partial (0: an eighth of ring-memory)")
	num(&c.MaxBacklogBytes, "max-backlog-bytes", d.MaxBacklogBytes, "outbound backlog past which a subscriber is paused (then conflated)")
	dur(&c.SlowTimeout, "slow-timeout", d.SlowTimeout, "how long a subscriber may stay over the backlog while taking less than half of it before close 1008")
	num(&c.SocketSendBuffer, "socket-send-buffer", d.SocketSendBuffer, "SO_SNDBUF for client sockets (0: kernel default)")
	dur(&c.PingInterval, "ping-interval", d.PingInterval, "ping a quiet connection this often, each at its own instant")
	dur(&c.IdleTimeout, "idle-timeout", d.IdleTimeout, "close a connection silent for this long (1001)")
	dur(&c.HandshakeTimeout, "handshake-timeout", d.HandshakeTimeout, "close a connection that has not upgraded by then")
	dur(&c.FrameTimeout, "frame-timeout", d.FrameTimeout, "close (1008) a connection whose frame or fragmented message is not whole this long after its first byte")
	num(&c.IngestMaxLineBytes, "ingest-max-line-bytes", d.IngestMaxLineBytes, "largest ingest line, and largest city state")
	num(&c.IngestMaxConns, "ingest-max-conns", d.IngestMaxConns, "concurrent producer connections")
	dur(&c.IngestWriteTimeout, "ingest-write-timeout", d.IngestWriteTimeout, "close a producer that does not read its acks")
	dur(&c.IngestLineTimeout, "ingest-line-timeout", d.IngestLineTimeout, "disconnect a producer whose line is not whole this long after its first byte")
	dur(&c.DrainWindow, "drain-window", d.DrainWindow, "on SIGTERM, close clients evenly over this window, then producers, then exit")

	fs.BoolVar(&c.Insecure, "insecure", false, "admit clients and producers without a token (anonymous, every city); needed when no key is configured")
	names = append(names, "insecure")
	str(&c.AuthHMACSecret, "auth-hmac-secret", "", "HMAC secret for HS256/384/512 tokens, ≥ 32 bytes: config file or METROCAST_AUTH_HMAC_SECRET only, refused as a flag (ps shows it); see -auth-hmac-secret-file")
	str(&c.AuthHMACSecretFile, "auth-hmac-secret-file", "", "file holding the HMAC secret (re-read on SIGHUP)")
	list(&c.AuthKeys, "auth-keys", "comma-separated PEM public keys (kid: file name), JWKS *.json files and directories of them (re-read on SIGHUP)")
	list(&c.AuthJWKSURL, "auth-jwks-url", "comma-separated JWK set URLs of identity providers (https; http only to loopback), fetched at start and every auth-jwks-refresh")
	dur(&c.AuthJWKSRefresh, "auth-jwks-refresh", d.AuthJWKSRefresh, "fetch the JWKS URLs again this often at most (sooner for a shorter Cache-Control max-age or an unknown kid)")
	str(&c.AuthRevokedFile, "auth-revoked-file", "", "file of revoked tokens, \"sub <subject>\" or \"jti <token id>\" per line (re-read on SIGHUP)")
	dur(&c.AuthReloadInterval, "auth-reload-interval", 0, "also reload the auth files when they change, looking this often (0: on SIGHUP only)")
	str(&c.AuthAudience, "auth-audience", "", "when set, tokens must list it in aud")
	str(&c.AuthIssuer, "auth-issuer", "", "when set, tokens must have it as iss")
	dur(&c.AuthLeeway, "auth-leeway", d.AuthLeeway, "clock skew allowed on exp, nbf and iat")
	dur(&c.AuthTimeout, "auth-timeout", d.AuthTimeout, "close (4001) a connection without a token that sends no auth message by then")
	dur(&c.TokenExpiryWarning, "token-expiry-warning", d.TokenExpiryWarning, "send token_expiring this long before the token expires")
	dur(&c.TokenGrace, "token-grace", d.TokenGrace, "close (4001) a connection this long after its token expired unless it refreshed")
	list(&c.AllowedOrigins, "allowed-origins", "comma-separated Origins browsers may connect from (https://a.example, https://*.example, *); empty: any")
	num(&c.MaxConns, "max-conns", d.MaxConns, "WebSocket connections per node (503 past it)")
	num(&c.MaxConnsPerIP, "max-conns-per-ip", d.MaxConnsPerIP, "WebSocket connections per source address, IPv6 per /64 (429 past it)")
	list(&c.TrustedProxies, "trusted-proxies", "comma-separated load balancers (addresses, CIDR prefixes) whose X-Forwarded-For names the client for max-conns-per-ip")
	num(&c.ClientMessageRate, "client-message-rate", d.ClientMessageRate, "messages per minute per connection (token bucket); past it rate_limited")
	num(&c.ClientMessageBurst, "client-message-burst", 0, "messages a connection may send at once (0: client_message_rate)")
	num(&c.IngestMaxErrors, "ingest-max-errors", d.IngestMaxErrors, "bad lines per minute before a producer is disconnected")
	num(&c.IngestMaxRate, "ingest-max-rate", d.IngestMaxRate, "lines per second per producer, paced by TCP backpressure (0: no bound)")
	cl, dc := &st.cluster, cluster.Config{}.WithDefaults()
	str(&cl.URL, "nats-url", "", "cluster mode: NATS server URLs, comma-separated (empty: a single node)")
	// -nats is the short form of -nats-url (not a key of its own).
	fs.StringVar(&cl.URL, natsAlias, "", "short for -nats-url")
	str(&cl.Stream, "nats-stream", dc.Stream, "JetStream stream of the cluster's frames")
	num(&cl.Replicas, "nats-replicas", dc.Replicas, "stream replicas (NATS servers that hold each frame)")
	dur(&cl.MaxAge, "nats-max-age", dc.MaxAge, "how long the stream keeps frames (the longest resumable absence)")
	num64(&cl.MaxBytes, "nats-max-bytes", dc.MaxBytes, "largest stream size; the oldest frames go first")
	dur(&cl.Replay, "nats-replay", dc.Replay, "on start, read the stream this far back to rebuild city state (0: new frames only)")
	num(&cl.ResumeMax, "nats-resume-max", dc.ResumeMax, "most frames one resume is served from the stream")
	dur(&cl.PresenceTTL, "nats-presence-ttl", dc.PresenceTTL, "how long a node's presence watchers count elsewhere without a refresh")
	str(&cl.Creds, "nats-creds", "", "NATS credentials file")
	str(&cl.TLSCA, "nats-tls-ca", "", "CA file for the NATS servers' certificates")
	str(&st.logFormat, "log-format", "text", "log format: text or json")
	fs.TextVar(&st.logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn or error")
	names = append(names, "log-level")
	return names
}

// liveKeys are the keys a SIGHUP applies to a running node: the gateway's
// (gateway.LiveKeys) and the log level.
func liveKeys() []string { return append(gateway.LiveKeys(), "log_level") }

// config is a configuration being loaded, and where each setting came
// from.
type config struct {
	*settings
	fs    *flag.FlagSet     // one flag per setting, bound to settings
	names []string          // flag names, in order
	from  map[string]string // key → "FILE:LINE", "METROCAST_…" or "-flag"
}

// newConfig returns the built-in defaults, with a flag set named name to
// parse the command line into.
func newConfig(name string) *config {
	c := &config{settings: new(settings), fs: flag.NewFlagSet(name, flag.ContinueOnError), from: map[string]string{}}
	c.names = bindConfig(c.fs, c.settings)
	return c
}

// load completes the configuration from, lowest first: the built-in
// defaults, the config file (file, or METROCAST_CONFIG when file is
// empty), the METROCAST_<KEY> variables and the flags already parsed into
// c.fs. It checks the result: errors name the offending key, the allowed
// range and where the value was set.
func (c *config) load(file string) error {
	given := map[string]bool{}
	c.fs.Visit(func(f *flag.Flag) {
		name := f.Name
		if name == natsAlias {
			name = "nats-url"
		}
		given[name] = true
		c.from[keyName(name)] = "-" + f.Name
	})
	for name, instead := range secretFlags {
		if given[name] {
			return fmt.Errorf("-%s: a secret on the command line is visible to every local user (ps): use -%s FILE, or %s",
				name, instead, envName(keyName(name)))
		}
	}
	if file == "" {
		file = os.Getenv("METROCAST_CONFIG")
	}
	if file != "" {
		if err := c.applyFile(file, given); err != nil {
			return err
		}
	}
	if err := c.applyEnv(given); err != nil {
		return err
	}
	return c.check()
}

// applyFile sets every key of the YAML file that the command line did not
// give.
func (c *config) applyFile(path string, given map[string]bool) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("cannot read config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("cannot parse config %s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil // empty, or only comments
	}
	m := doc.Content[0]
	if m.Kind != yaml.MappingNode {
		return fmt.Errorf("%s:%d: want a mapping of key: value", path, m.Line)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		key := k.Value
		f := c.fs.Lookup(flagName(key))
		if f == nil || key != keyName(f.Name) || !slices.Contains(c.names, f.Name) {
			return fmt.Errorf("%s:%d: unknown key %q (see deploy/metrocast.yaml for the keys)", path, k.Line, key)
		}
		if seen[key] {
			return fmt.Errorf("%s:%d: %s is set twice", path, k.Line, key)
		}
		seen[key] = true
		val, ok := scalar(v, f)
		if !ok {
			return fmt.Errorf("%s:%d: %s needs one value (%s)", path, v.Line, key, kindOf(f))
		}
		if given[f.Name] {
			continue
		}
		if err := f.Value.Set(val); err != nil {
			return fmt.Errorf("%s:%d: %s: invalid value %q: want %s", path, v.Line, key, v.Value, kindOf(f))
		}
		c.from[key] = fmt.Sprintf("%s:%d", path, v.Line)
	}
	return nil
}

// scalar returns the value of a config file entry as its flag takes it: a
// list setting may be a YAML sequence of strings (or one comma-separated
// string); every other setting is one scalar.
func scalar(v *yaml.Node, f *flag.Flag) (string, bool) {
	if _, isList := f.Value.(*listFlag); isList && v.Kind == yaml.SequenceNode {
		items := make([]string, 0, len(v.Content))
		for _, e := range v.Content {
			if e.Kind != yaml.ScalarNode || strings.Contains(e.Value, ",") {
				return "", false
			}
			items = append(items, e.Value)
		}
		return strings.Join(items, ","), true
	}
	return v.Value, v.Kind == yaml.ScalarNode && v.Tag != "!!null"
}

// listFlag is a comma-separated list setting.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

// Get makes listFlag a flag.Getter.
func (l *listFlag) Get() any { return []string(*l) }

func (l *listFlag) Set(v string) error {
	*l = nil
	for e := range strings.SplitSeq(v, ",") {
		if e = strings.TrimSpace(e); e != "" {
			*l = append(*l, e)
		}
	}
	return nil
}

// applyEnv sets every setting the command line did not give from its
// METROCAST_<KEY> variable, when set.
func (c *config) applyEnv(given map[string]bool) error {
	for _, name := range c.names {
		key := keyName(name)
		v, ok := os.LookupEnv(envName(key))
		if !ok || given[name] {
			continue
		}
		f := c.fs.Lookup(name)
		if err := f.Value.Set(v); err != nil {
			return fmt.Errorf("%s=%q: invalid value: want %s", envName(key), v, kindOf(f))
		}
		c.from[key] = envName(key)
	}
	return nil
}

// kindOf describes the values a flag takes, for error messages.
func kindOf(f *flag.Flag) string {
	switch f.Value.(flag.Getter).Get().(type) {
	case int, int64:
		return "an integer"
	case time.Duration:
		return "a duration such as 500ms, 30s or 2m"
	case bool:
		return "true or false"
	case []string:
		return "a list of strings (a YAML sequence, or comma-separated)"
	}
	switch f.Name {
	case "log-level":
		return "debug, info, warn or error"
	case "log-format":
		return "text or json"
	}
	return "a string"
}

// check validates the settings; each error names its key and, when it was
// not the default, where it was set.
func (c *config) check() error {
	var errs []error
	if c.logFormat != "text" && c.logFormat != "json" {
		errs = append(errs, fmt.Errorf("log_format (%q) must be text or json", c.logFormat))
	}
	gw, cl := c.gw.WithDefaults(), c.cluster.WithDefaults()
	for _, err := range []error{gw.Validate(), cl.Validate()} {
		var joined interface{ Unwrap() []error }
		if errors.As(err, &joined) {
			errs = append(errs, joined.Unwrap()...)
		} else if err != nil {
			errs = append(errs, err)
		}
	}
	for i, err := range errs {
		key, _, _ := strings.Cut(err.Error(), " ")
		if from, ok := c.from[key]; ok {
			errs[i] = fmt.Errorf("%w (set by %s)", err, from)
		}
	}
	return errors.Join(errs...)
}

// marshal returns the effective settings as a config file, keys in order.
func (c *config) marshal() ([]byte, error) {
	m := &yaml.Node{Kind: yaml.MappingNode}
	for _, name := range c.names {
		f := c.fs.Lookup(name)
		v := &yaml.Node{Kind: yaml.ScalarNode, Value: f.Value.String()}
		if l, ok := f.Value.(*listFlag); ok {
			v = &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
			for _, e := range *l {
				v.Content = append(v.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: e})
			}
		} else if v.Value == "" {
			v.Style = yaml.DoubleQuotedStyle // not null
		}
		switch name {
		case "auth-hmac-secret":
			if v.Value != "" {
				v.Value = "<redacted>" // never print a secret
			}
		case "log-level":
			v.Value = strings.ToLower(v.Value)
		case "loops":
			if c.gw.Loops == 0 {
				v.LineComment = fmt.Sprintf("one per CPU: %d here", c.gw.WithDefaults().Loops)
			}
		}
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: keyName(name)}, v)
	}
	return yaml.Marshal(m)
}

// configUsage is the help of `metrocast config`.
const configUsage = `usage: metrocast config check FILE

Loads FILE as 'metrocast serve -config FILE' would, with the METROCAST_*
variables of the environment, and prints the effective configuration, or
every invalid key with where it was set. Exits non-zero when invalid.
`

// runConfig implements `metrocast config check FILE`.
func runConfig(args []string) error {
	if slices.ContainsFunc(args, isHelp) {
		fmt.Print(configUsage)
		return errHelp
	}
	if len(args) != 2 || args[0] != "check" {
		return &usageError{"config: want 'metrocast config check FILE' (metrocast config -h tells more)"}
	}
	return configCheck(os.Stdout, args[1])
}

// configCheck loads file as serve would (with the METROCAST_* variables),
// opens every file it names, and writes the effective configuration to w,
// or returns why it is invalid.
func configCheck(w io.Writer, file string) error {
	c := newConfig("config")
	if err := c.load(file); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if err := c.checkFiles(); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	out, err := c.marshal()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "# %s is valid. The effective configuration (the file, then METROCAST_* variables):\n%s", file, out)
	return err
}
