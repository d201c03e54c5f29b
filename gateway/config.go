package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/metrocast/metrocast/codec"
	"github.com/metrocast/metrocast/gateway/auth"
)

// Config is everything a Server needs. Zero fields take the default named
// in their comment (see WithDefaults); Validate names the offending key.
type Config struct {
	// Addr is the WebSocket listen address. Default ":8080".
	Addr string
	// Path is the WebSocket endpoint. Default "/ws".
	Path string
	// IngestAddr is the TCP ingest listen address. Default "127.0.0.1:7070".
	IngestAddr string
	// AdminAddr is the admin HTTP listen address: metrics, health, stats,
	// pprof and HTTP ingest. Default "127.0.0.1:9090". Beyond loopback it
	// needs AdminTokenFile.
	AdminAddr string
	// AdminTokenFile holds the admin token (surrounding white space
	// trimmed, at least 32 bytes): when set, every admin route but
	// /healthz, /readyz and /metrics wants it as Authorization: Bearer
	// (see admin.go). Required when AdminAddr is beyond loopback. Empty:
	// none, and the admin port must be on loopback.
	AdminTokenFile string
	// AdminPprof serves /debug/pprof/ on an admin port beyond loopback too
	// (behind the admin token). A loopback admin port always serves it.
	AdminPprof bool
	// Loops is the number of event loops. Default: the number of CPUs.
	Loops int

	// MaxHeaderBytes bounds the HTTP upgrade request head. Default 8 KiB.
	MaxHeaderBytes int
	// MaxMessageBytes bounds a client message, fragments included (close
	// 1009 past it). Default 64 KiB.
	MaxMessageBytes int
	// MaxSubscriptions bounds the cities one connection follows. Default 128.
	MaxSubscriptions int
	// MaxCities bounds the cities one node knows. Default 10,000.
	MaxCities int
	// MaxClientErrors is how many bad client messages a connection may send
	// before it is closed with 1008. Default 10.
	MaxClientErrors int

	// RingSize is how many frames each city keeps for replay. Default 1024.
	RingSize int
	// RingBytes bounds the bytes each city's ring holds. Default 4 MiB.
	RingBytes int
	// RecentAlerts is how many alerts messages each city keeps for late
	// joiners and conflated clients (sent in initial_data). Default 64.
	RecentAlerts int
	// RingMemory bounds the memory all cities' rings hold together, their
	// frames and slots: over it, the oldest frames of the cities that have
	// gone longest without activity are dropped (see hub.fit). Default: a
	// quarter of the memory the node may use (the machine's, or its
	// cgroup's limit if lower; 1 GiB when neither can be read).
	RingMemory int64
	// CityIdleTTL is how long a city may go without a subscriber and
	// without a frame before it is dropped, its ring and its place among
	// MaxCities with it; its merged state is kept, compact, within
	// IdleStateMemory (see hub.sweep). Default 1h. Live.
	CityIdleTTL time.Duration
	// IdleStateMemory bounds the memory the kept states of dropped cities
	// hold together: over it, the states dropped first are let go of,
	// leaving a mark each, so that their cities come back partial (see
	// hub.fitKept). Default (0): an eighth of RingMemory.
	IdleStateMemory int64

	// MaxBacklogBytes is the outbound backlog past which a subscriber is not
	// written to until half of it drains; lapped meanwhile, it is conflated to a
	// fresh initial_data. Default 256 KiB.
	MaxBacklogBytes int
	// SlowTimeout is how long a subscriber may stay over MaxBacklogBytes
	// while its peer takes less than half of it before it is closed
	// (1008): a client that reads is slow, not stuck. Default 30s, at most
	// 1h.
	SlowTimeout time.Duration
	// SocketSendBuffer sets SO_SNDBUF on client sockets; 0 keeps the
	// kernel's default. Smaller values find slow consumers sooner.
	SocketSendBuffer int

	// PingInterval is how often a quiet connection is pinged, each at its
	// own instant of the interval (loop.pingDue). Default 25s.
	PingInterval time.Duration
	// IdleTimeout closes a connection that sent nothing (not even a pong)
	// for this long. Default 60s.
	IdleTimeout time.Duration
	// HandshakeTimeout closes a connection that has not completed its
	// upgrade. Default 10s.
	HandshakeTimeout time.Duration
	// FrameTimeout closes (1008) a connection whose frame, or fragmented
	// message, is not whole this long after its first byte: bytes of an
	// unfinished frame keep the idle clock at zero, so without it a client
	// trickling one frame holds its connection forever. Default 5s.
	FrameTimeout time.Duration

	// IngestMaxLineBytes bounds one ingest line. Default 1 MiB.
	IngestMaxLineBytes int
	// IngestMaxConns bounds concurrent producer connections. Default 256.
	IngestMaxConns int
	// IngestWriteTimeout closes a producer that does not read its acks.
	// Default 30s.
	IngestWriteTimeout time.Duration
	// IngestLineTimeout disconnects a producer (TCP) or ends a request (HTTP
	// publish) whose line is not whole this long after its first byte. A
	// producer may pause as long as it likes between lines. Default 10s.
	IngestLineTimeout time.Duration

	// DrainWindow is how long Shutdown takes: the clients are closed
	// evenly over its first 90%, each told when to reconnect, and the
	// producers after them; stopping the loops may take up to a second
	// more on a loaded machine (see Server.Drain). Default 10s.
	DrainWindow time.Duration
	// Insecure admits WebSocket clients without a token, as anonymous with
	// every city, and producers without a token on any ingest address.
	// Without it New needs at least one key, and it excludes keys.
	Insecure bool
	// AuthHMACSecret is an HMAC secret (HS256/384/512 tokens without a
	// kid), at least 32 bytes. Prefer AuthHMACSecretFile or the
	// environment: a command-line flag shows in ps. Empty: none.
	AuthHMACSecret string
	// AuthHMACSecretFile holds an HMAC secret (surrounding white space
	// trimmed); ReloadKeys reads it again. Empty: none.
	AuthHMACSecretFile string
	// AuthKeys lists PEM public keys (RSA, EC P-256/384/521 or Ed25519, one
	// per file, whose name without extension is the kid), JWKS files
	// (*.json; keys need a kid) and directories holding *.pem and *.json
	// files. ReloadKeys reads them again, so keys rotate by adding and
	// removing files. Empty: none.
	AuthKeys []string
	// AuthJWKSURL lists JWK set URLs of identity providers (Auth0,
	// Keycloak, Cognito, any OIDC issuer's jwks_uri): https, or http to a
	// loopback host. Fetched at start, then every AuthJWKSRefresh (see
	// gateway/auth/jwks.go); their keys join those of AuthKeys. Empty: none.
	AuthJWKSURL []string
	// AuthJWKSRefresh is the longest a JWKS URL's keys are kept before it
	// is fetched again; a shorter Cache-Control max-age fetches sooner,
	// down to a tenth of it, and so does a token naming an unknown kid.
	// Default 5m.
	AuthJWKSRefresh time.Duration
	// AuthAudience, when set, must be among a token's aud.
	AuthAudience string
	// AuthIssuer, when set, must be a token's iss.
	AuthIssuer string
	// AuthLeeway is the clock skew allowed when checking exp, nbf and iat.
	// Default 10s.
	AuthLeeway time.Duration
	// AuthTimeout closes (4001) a connection that upgraded without a token
	// and has not sent {"type":"auth",…} by then. Default 10s.
	AuthTimeout time.Duration
	// TokenExpiryWarning is how long before its token expires a connection
	// is sent token_expiring. Default 1m.
	TokenExpiryWarning time.Duration
	// TokenGrace is how long after its token expires a connection that has
	// not refreshed it is closed (4001). Default 30s.
	TokenGrace time.Duration
	// AuthRevokedFile lists revoked subjects and token ids ("sub alice",
	// "jti 3f2b", one per line; see gateway/auth/revoke.go), re-read with
	// the keys on SIGHUP. Empty: none.
	AuthRevokedFile string
	// AuthReloadInterval, when set, has the node look at the auth files
	// (secret file, key files, revocation file) this often and reload them
	// when one changed, as SIGHUP does. Zero: on SIGHUP only.
	AuthReloadInterval time.Duration
	// AllowedOrigins lists the Origin values a browser may connect from:
	// "https://dash.example.com", "https://*.example.com" (any subdomain)
	// or "*". Requests without an Origin (not from a browser) always pass.
	// Empty: any origin.
	AllowedOrigins []string

	// MaxConns bounds the node's WebSocket connections; past it a new one is
	// answered 503. Default 100,000.
	MaxConns int
	// MaxConnsPerIP bounds the connections from one source address (IPv6:
	// one /64); past it a new one is answered 429. Default 1,000.
	MaxConnsPerIP int
	// TrustedProxies lists the load balancers (addresses or CIDR prefixes)
	// whose X-Forwarded-For header names the client: a connection from
	// one counts against MaxConnsPerIP by the client's address it gives
	// (see codec.ClientAddr), from its upgrade request on. Empty: none.
	TrustedProxies []string
	// ClientMessageRate is how many messages per minute a connection may
	// send on average (a token bucket; pings count); past it a message is
	// answered rate_limited, and MaxClientErrors of those close it (1008).
	// Default 100, like the original dashboards.
	ClientMessageRate int
	// ClientMessageBurst is the token bucket's size: how many messages may
	// come at once. Default ClientMessageRate.
	ClientMessageBurst int

	// IngestMaxErrors is how many bad lines per minute a producer may send
	// (a token bucket of that size); past it the producer is disconnected.
	// Default 100.
	IngestMaxErrors int
	// IngestMaxRate bounds each producer's lines per second by pacing its
	// reads (TCP backpressure slows it; nothing is dropped). Zero: no bound.
	IngestMaxRate int

	// Bus carries the ingest lines to the rings (see bus.go). Nil: the
	// node's own, alone. Cluster mode's is gateway/cluster's, which
	// cmd/metrocast makes from the nats_* keys. One Bus serves one node.
	Bus Bus

	// Logger receives the server's logs. Default slog.Default().
	Logger *slog.Logger
	// Version is the binary's version, the version label of
	// metrocast_build_info (set by the program, not a config key).
	// Default "dev".
	Version string
}

// WithDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if c.Addr == "" {
		c.Addr = ":8080"
	}
	if c.Path == "" {
		c.Path = "/ws"
	}
	if c.IngestAddr == "" {
		c.IngestAddr = "127.0.0.1:7070"
	}
	if c.AdminAddr == "" {
		c.AdminAddr = "127.0.0.1:9090"
	}
	def(&c.Loops, runtime.NumCPU())
	def(&c.MaxHeaderBytes, 8<<10)
	def(&c.MaxMessageBytes, 64<<10)
	def(&c.MaxSubscriptions, 128)
	def(&c.MaxCities, 10_000)
	def(&c.MaxClientErrors, 10)
	def(&c.RingSize, 1024)
	def(&c.RingBytes, 4<<20)
	def(&c.RecentAlerts, 64)
	if c.RingMemory == 0 {
		c.RingMemory = defaultRingMemory()
	}
	defDur(&c.CityIdleTTL, time.Hour)
	if c.IdleStateMemory == 0 {
		c.IdleStateMemory = c.RingMemory / 8
	}
	def(&c.MaxBacklogBytes, 256<<10)
	defDur(&c.SlowTimeout, 30*time.Second)
	defDur(&c.PingInterval, 25*time.Second)
	defDur(&c.IdleTimeout, 60*time.Second)
	defDur(&c.HandshakeTimeout, 10*time.Second)
	defDur(&c.FrameTimeout, 5*time.Second)
	def(&c.IngestMaxLineBytes, 1<<20)
	def(&c.IngestMaxConns, 256)
	defDur(&c.IngestWriteTimeout, 30*time.Second)
	defDur(&c.IngestLineTimeout, 10*time.Second)
	defDur(&c.DrainWindow, 10*time.Second)
	defDur(&c.AuthJWKSRefresh, 5*time.Minute)
	defDur(&c.AuthLeeway, 10*time.Second)
	defDur(&c.AuthTimeout, 10*time.Second)
	defDur(&c.TokenExpiryWarning, time.Minute)
	defDur(&c.TokenGrace, 30*time.Second)
	def(&c.MaxConns, 100_000)
	def(&c.MaxConnsPerIP, 1000)
	def(&c.ClientMessageRate, 100)
	def(&c.ClientMessageBurst, c.ClientMessageRate)
	def(&c.IngestMaxErrors, 100)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	return c
}

// Validate reports every out-of-range setting, by its config key.
func (c *Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(strings.HasPrefix(c.Path, "/"), "path (%q) must start with /", c.Path)
	check(c.Path != codec.SSEPath && c.Path != codec.HistoryPath, "path (%q) is taken by Server-Sent Events (%s) and history (%s)", c.Path, codec.SSEPath, codec.HistoryPath)
	check(c.Loops >= 1 && c.Loops <= 256, "loops (%d) must be in [1, 256]", c.Loops)
	check(c.MaxHeaderBytes >= 1024 && c.MaxHeaderBytes <= 1<<20, "max_header_bytes (%d) must be in [1024, 1048576]", c.MaxHeaderBytes)
	check(c.MaxMessageBytes >= 128 && c.MaxMessageBytes <= 16<<20, "max_message_bytes (%d) must be in [128, 16777216]", c.MaxMessageBytes)
	check(c.MaxSubscriptions >= 1, "max_subscriptions (%d) must be ≥ 1", c.MaxSubscriptions)
	check(c.MaxCities >= 1, "max_cities (%d) must be ≥ 1", c.MaxCities)
	check(c.MaxClientErrors >= 1 && c.MaxClientErrors <= 255, "max_client_errors (%d) must be in [1, 255]", c.MaxClientErrors)
	check(c.RingSize >= 2 && c.RingSize <= 1<<20, "ring_size (%d) must be in [2, 1048576]", c.RingSize)
	check(c.RingBytes >= 1024, "ring_bytes (%d) must be ≥ 1024", c.RingBytes)
	check(c.RecentAlerts >= 0 && c.RecentAlerts <= 4096, "recent_alerts (%d) must be in [0, 4096]", c.RecentAlerts)
	check(c.RingMemory >= 1<<20, "ring_memory (%d) must be ≥ 1048576", c.RingMemory)
	check(c.CityIdleTTL >= time.Second, "city_idle_ttl (%s) must be ≥ 1s", c.CityIdleTTL)
	check(c.IdleStateMemory >= 0, "idle_state_memory (%d) must be ≥ 0", c.IdleStateMemory)
	check(c.MaxBacklogBytes >= 1024, "max_backlog_bytes (%d) must be ≥ 1024", c.MaxBacklogBytes)
	check(c.SocketSendBuffer >= 0, "socket_send_buffer (%d) must be ≥ 0", c.SocketSendBuffer)
	check(c.SlowTimeout > 0 && c.SlowTimeout <= time.Hour, "slow_timeout (%s) must be in (0s, 1h]", c.SlowTimeout)
	check(c.PingInterval > 0, "ping_interval (%s) must be > 0", c.PingInterval)
	check(c.IdleTimeout > c.PingInterval, "idle_timeout (%s) must be > ping_interval (%s)", c.IdleTimeout, c.PingInterval)
	// At most a day: conn keeps its last read on a 32-bit millisecond
	// clock (see conn.lastRead).
	check(c.IdleTimeout <= 24*time.Hour, "idle_timeout (%s) must be ≤ 24h", c.IdleTimeout)
	check(c.HandshakeTimeout > 0, "handshake_timeout (%s) must be > 0", c.HandshakeTimeout)
	// At most an hour: conn keeps the start of a partial frame on a 32-bit
	// millisecond clock (see conn.partialAt).
	check(c.FrameTimeout > 0 && c.FrameTimeout <= time.Hour, "frame_timeout (%s) must be in (0s, 1h]", c.FrameTimeout)
	check(c.IngestMaxLineBytes >= 1024, "ingest_max_line_bytes (%d) must be ≥ 1024", c.IngestMaxLineBytes)
	check(c.IngestMaxConns >= 1, "ingest_max_conns (%d) must be ≥ 1", c.IngestMaxConns)
	check(c.IngestWriteTimeout > 0, "ingest_write_timeout (%s) must be > 0", c.IngestWriteTimeout)
	check(c.IngestLineTimeout > 0, "ingest_line_timeout (%s) must be > 0", c.IngestLineTimeout)
	check(c.DrainWindow > 0 && c.DrainWindow <= time.Hour, "drain_window (%s) must be in (0s, 1h]", c.DrainWindow)
	check(c.AdminTokenFile != "" || loopbackAddr(c.AdminAddr),
		"admin_addr (%q) is beyond loopback: set admin_token_file, or bind it to 127.0.0.1 (its stats, pprof and HTTP ingest are not for everyone)", c.AdminAddr)
	check(!c.Insecure || !c.hasKeys(), "insecure and auth keys (auth_hmac_secret, auth_hmac_secret_file, auth_keys, auth_jwks_url) are exclusive")
	check(c.Insecure || c.hasKeys(), "no auth key configured (auth_hmac_secret, auth_hmac_secret_file, auth_keys or auth_jwks_url); set insecure to admit anonymous clients")
	for _, u := range c.AuthJWKSURL {
		err := auth.CheckJWKSURL(u)
		check(err == nil, "auth_jwks_url: %q: %v", u, err)
	}
	check(c.AuthJWKSRefresh >= time.Second && c.AuthJWKSRefresh <= 24*time.Hour, "auth_jwks_refresh (%s) must be in [1s, 24h]", c.AuthJWKSRefresh)
	check(c.AuthRevokedFile == "" || c.hasKeys(), "auth_revoked_file needs auth keys: an insecure node checks no token")
	check(c.AuthReloadInterval == 0 || c.AuthReloadInterval >= time.Second && c.AuthReloadInterval <= time.Hour,
		"auth_reload_interval (%s) must be 0 or in [1s, 1h]", c.AuthReloadInterval)
	check(c.AuthLeeway >= 0 && c.AuthLeeway <= 10*time.Minute, "auth_leeway (%s) must be in [0, 10m]", c.AuthLeeway)
	check(c.AuthTimeout > 0, "auth_timeout (%s) must be > 0", c.AuthTimeout)
	check(c.TokenExpiryWarning > 0, "token_expiry_warning (%s) must be > 0", c.TokenExpiryWarning)
	check(c.TokenGrace > 0, "token_grace (%s) must be > 0", c.TokenGrace)
	for _, o := range c.AllowedOrigins {
		check(validOriginPattern(o), "allowed_origins: %q must be *, scheme://host[:port] or scheme://*.domain[:port]", o)
	}
	check(c.MaxConns >= 1, "max_conns (%d) must be ≥ 1", c.MaxConns)
	check(c.MaxConnsPerIP >= 1, "max_conns_per_ip (%d) must be ≥ 1", c.MaxConnsPerIP)
	for _, p := range c.TrustedProxies {
		_, err := parseProxy(p)
		check(err == nil, "trusted_proxies: %q must be an IP address or a CIDR prefix (10.0.0.0/8, 2001:db8::/32)", p)
	}
	check(c.ClientMessageRate >= 1 && c.ClientMessageRate <= 600_000, "client_message_rate (%d) must be in [1, 600000] per minute", c.ClientMessageRate)
	check(c.ClientMessageBurst >= 1, "client_message_burst (%d) must be ≥ 1", c.ClientMessageBurst)
	check(c.IngestMaxErrors >= 1 && c.IngestMaxErrors <= 600_000, "ingest_max_errors (%d) must be in [1, 600000] per minute", c.IngestMaxErrors)
	check(c.IngestMaxRate >= 0 && c.IngestMaxRate <= 1_000_000, "ingest_max_rate (%d) must be in [0, 1000000] per second", c.IngestMaxRate)
	return errors.Join(errs...)
}

// loopbackAddr reports whether the listen address addr binds only a
// loopback interface: localhost or a loopback IP. An empty host (":9090")
// binds every interface; a name other than localhost is not taken on trust.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// sweep is how often housekeeping visits each connection: fine enough for
// the shortest time-out.
func (c *Config) sweep() time.Duration {
	d := min(c.PingInterval, c.IdleTimeout, c.HandshakeTimeout, c.FrameTimeout, c.SlowTimeout, c.AuthTimeout, c.TokenGrace) / 4
	return max(10*time.Millisecond, min(d, time.Second))
}

// ticksPerSweep is how many times a sweep the ticker wakes the loops, each
// tick visiting the slots due (wheelSlots/ticksPerSweep of them). Every
// wake costs the process far more than the loops' own work: threads woken
// through futexes and the runtime's sysmon back at its shortest sleep.
// At 32 ticks a second a node holding 10,000 idle connections used 52–60
// ms of CPU a second, at 4 ticks 8–10 ms (and 2–4 ms at one tick a
// second, when every connection was visited at once).
const ticksPerSweep = 4

// minTick bounds how often the ticker wakes the loops when the sweep is
// short.
const minTick = 10 * time.Millisecond

// tick is the housekeeping period.
func (c *Config) tick() time.Duration { return max(c.sweep()/ticksPerSweep, minTick) }

// pingQuiet is how long a connection must have read nothing for its ping
// instant to ping it: half an interval, so that a client that answers
// every ping is pinged at every instant (its pong came an interval, less
// its round trip, before), but never so long that a silent client would
// reach IdleTimeout before its first ping (which comes within pingQuiet
// plus an interval of its last read).
func (c *Config) pingQuiet() int64 {
	return int64(min(c.PingInterval/2, (c.IdleTimeout-c.PingInterval)/2))
}

// defaultRingMemory is RingMemory's default: a quarter of nodeMemory, at
// least 16 MiB, or 1 GiB when nodeMemory cannot tell.
func defaultRingMemory() int64 {
	m := nodeMemory()
	if m <= 0 {
		return 1 << 30
	}
	return max(m/4, 16<<20)
}

// nodeMemory is the memory this process may use: the machine's (MemTotal
// in /proc/meminfo), or the limit of its cgroup or of one above it, if
// lower (cgroup v2 memory.max, v1 memory.limit_in_bytes, which reads as a
// huge number when unlimited); 0 if none can be read.
func nodeMemory() int64 {
	var total int64
	lower := func(n int64) {
		if n > 0 && (total == 0 || n < total) {
			total = n
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				if err == nil {
					lower(kb << 10)
				}
				break
			}
		}
	}
	readLimit := func(path string) {
		if b, err := os.ReadFile(path); err == nil {
			// "max" (v2) fails to parse: no limit.
			if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
				lower(n)
			}
		}
	}
	// Lines of /proc/self/cgroup: "0::/path" (v2), "4:memory:/path" (v1).
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			parts := strings.SplitN(line, ":", 3)
			if len(parts) != 3 {
				continue
			}
			base, file := "/sys/fs/cgroup", "memory.max"
			switch {
			case parts[0] == "0" && parts[1] == "":
			case slices.Contains(strings.Split(parts[1], ","), "memory"):
				base, file = "/sys/fs/cgroup/memory", "memory.limit_in_bytes"
			default:
				continue
			}
			for dir := path.Clean("/" + parts[2]); ; dir = path.Dir(dir) {
				readLimit(path.Join(base, dir, file))
				if dir == "/" {
					break
				}
			}
		}
	}
	return total
}
