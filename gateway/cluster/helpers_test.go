package cluster

import (
	"cmp"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/metrocast/metrocast/gateway"
	"github.com/metrocast/metrocast/gateway/auth/authtest"
	"github.com/metrocast/metrocast/gateway/internal/nodetest"
)

// clusterTimeout bounds waits that involve NATS round trips and
// reconnects.
const clusterTimeout = nodetest.LongTimeout

// node is a metrocast node under test: its server and, in cluster mode,
// its bus.
type node struct {
	*gateway.Server
	bus *Bus // nil on a node alone
}

// startClusterNode starts a node in cluster mode on the NATS servers of
// url, with cfg (see startNode).
func startClusterNode(t testing.TB, url string, cfg gateway.Config) *node {
	t.Helper()
	return startNode(t, Config{URL: url}, cfg)
}

// startNode starts a node on loopback ports with cfg, in cluster mode with
// cc when cc.URL is set and alone otherwise, and drains it when the test
// ends. Loops and Logger are filled in when zero; without a key in cfg
// the node runs insecure; and clients may send messages as fast as tests
// do (the rate limit has tests of its own).
func startNode(t testing.TB, cc Config, cfg gateway.Config) *node {
	t.Helper()
	n, err := newNode(t, cc, cfg)
	if err != nil {
		t.Fatalf("cannot start the node: %s", err)
	}
	return n
}

// newNode starts a node as startNode does, or returns why it did not
// start: right after a NATS cluster forms (and on a loaded machine, for a
// while) the stream's creation may answer "temporarily unavailable".
func newNode(t testing.TB, cc Config, cfg gateway.Config) (*node, error) {
	t.Helper()
	cfg.Addr, cfg.IngestAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Loops = cmp.Or(cfg.Loops, 2)
	cfg.ClientMessageRate = cmp.Or(cfg.ClientMessageRate, 600_000)
	cfg.Insecure = cfg.AuthHMACSecretFile == "" && len(cfg.AuthKeys) == 0
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	n := &node{}
	if cc.URL != "" {
		b, err := New(cc)
		if err != nil {
			t.Fatalf("cannot create the bus: %s", err)
		}
		n.bus, cfg.Bus = b, b
	}
	s, err := gateway.New(cfg)
	if err != nil {
		t.Fatalf("cannot create the node: %s", err)
	}
	if err := s.Start(); err != nil {
		return nil, err
	}
	n.Server = s
	t.Cleanup(func() {
		shutdowns.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = s.Drain(ctx, 0) // the test may have drained it already
		})
	})
	return n, nil
}

// shutdowns tracks the nodes stopping in the background, so that no test
// waits for another's to stop. TestMain waits for them all.
var shutdowns sync.WaitGroup

func TestMain(m *testing.M) {
	// As the binary does: TYPE lines let the tests' Prometheus parser
	// check counters as such.
	metrics.ExposeMetadata(true)
	code := m.Run()
	shutdowns.Wait()
	if natsBinary.path != "" {
		_ = os.RemoveAll(filepath.Dir(natsBinary.path))
	}
	os.Exit(code)
}

// ws is the WebSocket URL of n with query.
func (n *node) ws(query string) string { return nodetest.WSURL(n.Addr().String(), query) }

// producer connects to n's ingest port.
func (n *node) producer(t testing.TB) *nodetest.Producer {
	t.Helper()
	return nodetest.DialProducer(t, n.IngestAddr().String())
}

// sse opens a stream of n at target (/sse?…), which must start.
func (n *node) sse(t testing.TB, target string, header ...string) *nodetest.SSEClient {
	t.Helper()
	return nodetest.DialSSE(t, n.Addr().String(), target, header...)
}

// metrics scrapes n's /metrics.
func (n *node) metrics(t testing.TB) map[string]float64 {
	t.Helper()
	return nodetest.Scrape(t, n.AdminAddr().String())
}

// tokenStatus upgrades a connection to n with tok and returns the HTTP
// status: 101 (the connection is then closed) or the refusal's.
func (n *node) tokenStatus(t testing.TB, tok string) int {
	t.Helper()
	return nodetest.DialStatus(t, n.ws("cities=cr"), nodetest.Bearer(tok))
}

// secureConfig is a node configuration that checks tokens signed with
// the test keys (authtest.KeyFiles).
func secureConfig(t testing.TB) gateway.Config {
	t.Helper()
	secret, keys := authtest.KeyFiles(t)
	return gateway.Config{AuthHMACSecretFile: secret, AuthKeys: []string{keys}}
}

// token is an HS256 token of sub for every city, valid for an hour.
func token(t testing.TB, sub string) string {
	t.Helper()
	return authtest.HS256(t, authtest.NewClaims(sub, time.Hour, "*"))
}
