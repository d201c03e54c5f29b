package gateway

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"

	"github.com/metrocast/metrocast/gateway/auth/authtest"
	"github.com/metrocast/metrocast/gateway/internal/nodetest"
)

// idp is an identity provider's JWKS endpoint on 127.0.0.1: it serves the
// key set it holds now, and the test rotates it.
type idp struct {
	srv          *httptest.Server
	doc          atomic.Pointer[[]byte]
	status       atomic.Int32 // 0: 200
	cacheControl atomic.Pointer[string]
	hits         atomic.Int64
}

func startIDP(t testing.TB) *idp {
	t.Helper()
	p := &idp{}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		p.hits.Add(1)
		if code := p.status.Load(); code != 0 {
			http.Error(w, "down", int(code))
			return
		}
		if cc := p.cacheControl.Load(); cc != nil {
			w.Header().Set("Cache-Control", *cc)
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(*p.doc.Load())
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// publish makes the endpoint serve keys, each a jose.JSONWebKey.
func (p *idp) publish(t testing.TB, keys ...jose.JSONWebKey) {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	p.doc.Store(&b)
}

// dialStatus tries to upgrade with tok and returns the HTTP status (101 on
// success; the connection is then closed).
func dialStatus(t testing.TB, s *Server, tok string) int {
	t.Helper()
	return nodetest.DialStatus(t, wsURL(s, "cities=idp"), bearer(tok))
}

// TestJWKSURLRotation: a node takes its keys from an identity provider
// that rotates them mid-test. A token signed with the new key is refused
// at first (an unknown kid), which has the node fetch the keys again at
// once; the retry gets in. The old key goes with the rotation, and a
// connection it authenticated keeps going.
func TestJWKSURLRotation(t *testing.T) {
	t.Parallel()
	sg := getSigners(t)
	p := startIDP(t)
	k1, k2 := authtest.IDPKeys(t)
	p.publish(t, k1)
	// Refreshes every 10 s, unknown kids at most every second: within
	// readTimeout only the unknown kid makes the node fetch.
	const refresh, minInterval = 10 * time.Second, time.Second
	s := startServer(t, Config{AuthJWKSURL: []string{p.srv.URL + "/.well-known/jwks.json"}, AuthJWKSRefresh: refresh})
	if n := p.hits.Load(); n != 1 {
		t.Fatalf("%d fetches at start, want 1", n)
	}
	old := mustDialAuth(t, wsURL(s, "cities=idp"), bearer(mint(t, jwt.SigningMethodRS256, sg.RSA, "k1", claims("ann", time.Hour, "idp"))))
	readType(t, old, "subscribed")
	readType(t, old, "initial_data")

	p.publish(t, k2)
	newTok := mint(t, jwt.SigningMethodES256, sg.EC, "k2", claims("bob", time.Hour, "idp"))
	// The first try is refused (the kid is unknown) and has the keys
	// fetched, a second after the last fetch at the soonest; a later try
	// gets in.
	tries := 0
	waitFor(t, readTimeout, func() bool { tries++; return dialStatus(t, s, newTok) == http.StatusSwitchingProtocols })
	if tries < 2 {
		t.Fatalf("the new key was accepted at the first try, before any fetch")
	}
	if n := p.hits.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2: one at start, one for the unknown kid", n)
	}
	if code := dialStatus(t, s, mint(t, jwt.SigningMethodRS256, sg.RSA, "k1", claims("ann", time.Hour, "idp"))); code != http.StatusUnauthorized {
		t.Fatalf("a token of the removed key: %d, want 401", code)
	}
	// A flood of unknown kids fetches at most once per minInterval.
	before, start := p.hits.Load(), time.Now()
	for i := range 50 {
		tok := mint(t, jwt.SigningMethodES256, sg.EC, fmt.Sprintf("nope%d", i), claims("eve", time.Hour, "idp"))
		if code := dialStatus(t, s, tok); code != http.StatusUnauthorized {
			t.Fatalf("unknown kid: %d, want 401", code)
		}
	}
	if n, most := p.hits.Load()-before, 1+int64(time.Since(start)/minInterval); n > most {
		t.Fatalf("%d fetches for 50 unknown kids in %s, want at most %d", n, time.Since(start), most)
	}
	// The connection of the removed key still gets its frames.
	pr := dialProducer(t, s)
	pr.Publish(t, dataLine("idp", "data_update", `{"n":1}`))
	readType(t, old, "data_update")
	if st := s.Stats(); st.JWKSFetches != uint64(p.hits.Load()) || st.JWKSFetchErrors != 0 {
		t.Fatalf("JWKSFetches %d JWKSFetchErrors %d, want %d and 0", st.JWKSFetches, st.JWKSFetchErrors, p.hits.Load())
	}
}

// TestJWKSURLRefresh: the node fetches the keys again every
// AuthJWKSRefresh, sooner when the response's max-age is shorter; while
// the provider fails it keeps the last good keys (counted, /readyz
// unaffected), and takes the new ones once it is back.
func TestJWKSURLRefresh(t *testing.T) {
	t.Parallel()
	sg := getSigners(t)
	p := startIDP(t)
	k1, k2 := authtest.IDPKeys(t)
	p.publish(t, k1)
	maxAge := "public, max-age=1"
	p.cacheControl.Store(&maxAge)
	// Refresh 10 s, so a tenth of it (1 s) is the max-age floor.
	s := startServer(t, Config{AuthJWKSURL: []string{p.srv.URL}, AuthJWKSRefresh: 10 * time.Second})
	waitFor(t, 3*readTimeout, func() bool { return p.hits.Load() >= 3 }) // every second, not every 10

	p.status.Store(http.StatusServiceUnavailable)
	waitFor(t, 3*readTimeout, func() bool { return s.Stats().JWKSFetchErrors >= 2 })
	tok1 := mint(t, jwt.SigningMethodRS256, sg.RSA, "k1", claims("ann", time.Hour, "idp"))
	if code := dialStatus(t, s, tok1); code != http.StatusSwitchingProtocols {
		t.Fatalf("the last good key while the provider fails: %d, want 101", code)
	}
	if code, body := adminGet(t, s, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz while the provider fails: %d %s", code, body)
	}
	if m := scrape(t, s); m["metrocast_auth_jwks_fetch_errors_total"] < 2 {
		t.Fatalf("metrocast_auth_jwks_fetch_errors_total %v", m["metrocast_auth_jwks_fetch_errors_total"])
	}

	p.publish(t, k2)
	p.status.Store(0)
	tok2 := mint(t, jwt.SigningMethodES256, sg.EC, "k2", claims("bob", time.Hour, "idp"))
	waitFor(t, 3*readTimeout, func() bool { return s.auth.Keys().Kids()[0] == "k2" })
	if code := dialStatus(t, s, tok2); code != http.StatusSwitchingProtocols {
		t.Fatalf("the new key once the provider is back: %d, want 101", code)
	}
}

// TestJWKSURLAtStart: a node whose only key source is a JWKS URL that
// cannot be fetched refuses to start; with another key it starts, and
// takes the URL's keys once it answers.
func TestJWKSURLAtStart(t *testing.T) {
	t.Parallel()
	sg := getSigners(t)
	p := startIDP(t)
	p.status.Store(http.StatusInternalServerError)
	cfg := Config{AuthJWKSURL: []string{p.srv.URL}, AuthJWKSRefresh: time.Second, Logger: slog.New(slog.DiscardHandler)}
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "no key configured") ||
		!strings.Contains(err.Error(), "auth_jwks_url "+p.srv.URL) || !strings.Contains(err.Error(), "500") {
		t.Fatalf("New with an unreachable JWKS URL and no other key: %v", err)
	}

	withFile, _ := authConfig(t)
	cfg.AuthHMACSecretFile = withFile.AuthHMACSecretFile
	s := startServer(t, cfg)
	if code := dialStatus(t, s, hs256(t, claims("ann", time.Hour, "idp"))); code != http.StatusSwitchingProtocols {
		t.Fatalf("the file's key: %d", code)
	}
	k1, _ := authtest.IDPKeys(t)
	p.publish(t, k1)
	p.status.Store(0)
	tok := mint(t, jwt.SigningMethodRS256, sg.RSA, "k1", claims("bob", time.Hour, "idp"))
	waitFor(t, 3*readTimeout, func() bool { return dialStatus(t, s, tok) == http.StatusSwitchingProtocols })
}
