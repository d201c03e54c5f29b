package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/metrocast/metrocast/gateway/auth"
)

// admin is the admin HTTP port (net/http; not on the event loops): metrics,
// health, pprof, stats, HTTP ingest and the demo dashboard.
//
// Who may use it: /healthz, /readyz and /metrics answer anyone (probes
// and scrapers hold no credential; they reveal counters, not data). Every
// other route goes through guard (the operators' routes) or viewer (the
// dashboard's data), which let a request through without a credential only
// on an open port: bound to loopback with no admin token set. Otherwise
// the request must carry the admin token (Config.AdminTokenFile) as
// Authorization: Bearer, or, for the dashboard's data, the client token the
// dashboard connects with. A port beyond loopback without an admin token is
// refused at start (Config.Validate).
type admin struct {
	s   *Server
	ln  net.Listener
	srv *http.Server
	// open: loopback and no admin token; every route answers anyone.
	open bool
	// pprof: /debug/pprof/ is served (on loopback, or AdminPprof).
	pprof bool
	// token is the SHA-256 of the admin token (hashed so that comparing
	// it takes the same time whatever the length offered); nil without
	// one. ReloadAdminToken replaces it.
	token atomic.Pointer[[sha256.Size]byte]
	// refused counts requests refused for their credential.
	refused atomic.Uint64
	// conns counts the port's open connections (maxAdminConns).
	conns atomic.Int64
}

// maxAdminConns bounds the admin port's open connections: past it a new
// one is closed at once. The port is net/http, a goroutine and a
// descriptor per connection, and its public routes (/healthz, /metrics)
// answer anyone: without a bound, idle keep-alive connections could take
// every descriptor the process has (20,000 here) and starve the
// WebSocket port. Probes, scrapers and HTTP producers need far fewer.
const maxAdminConns = 1024

// minAdminToken is the shortest admin token taken: 32 bytes, as for an
// HMAC secret (head -c 32 /dev/urandom | base64 gives 44).
const minAdminToken = 32

// readAdminToken reads the admin token file.
func readAdminToken(file string) ([]byte, error) {
	b, err := auth.ReadFile(file, auth.MaxSecretFileBytes)
	if err != nil {
		return nil, fmt.Errorf("admin_token_file %s: %w", file, err)
	}
	tok := bytes.TrimSpace(b)
	if len(tok) < minAdminToken {
		return nil, fmt.Errorf("admin_token_file %s: a token of %d bytes, want at least %d", file, len(tok), minAdminToken)
	}
	return tok, nil
}

func (s *Server) listenAdmin() (*admin, error) {
	a := &admin{s: s}
	if f := s.cfg.AdminTokenFile; f != "" {
		tok, err := readAdminToken(f)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(tok)
		a.token.Store(&sum)
	}
	ln, err := net.Listen("tcp", s.cfg.AdminAddr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen for admin on %s: %w", s.cfg.AdminAddr, err)
	}
	// The address bound decides, not the one configured: a name that
	// resolved beyond loopback without a token leaves nothing open.
	loopback := auth.Loopback(ln.Addr())
	a.ln, a.open, a.pprof = ln, loopback && a.token.Load() == nil, loopback || s.cfg.AdminPprof
	a.srv = &http.Server{
		Handler:           s.adminHandler(a),
		ReadHeaderTimeout: 10 * time.Second,
		// A keep-alive connection waits for its next request as long
		// as a WebSocket client may stay silent, not for ever.
		IdleTimeout: s.cfg.IdleTimeout,
		ConnState:   a.connState,
		ErrorLog:    slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn),
	}
	return a, nil
}

// connState counts the port's connections and closes a new one past
// maxAdminConns. Runs on the connections' goroutines (net/http).
func (a *admin) connState(c net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		if a.conns.Add(1) > maxAdminConns {
			_ = c.Close() // the server sees it closed: StateClosed
		}
	case http.StateHijacked, http.StateClosed:
		a.conns.Add(-1)
	}
}

func (a *admin) serve() { _ = a.srv.Serve(a.ln) }

// close stops the admin port, letting requests in progress finish until
// ctx is done.
func (a *admin) close(ctx context.Context) {
	if a.srv.Shutdown(ctx) != nil {
		_ = a.srv.Close()
	}
}

// AdminAddr is the admin HTTP listen address.
func (s *Server) AdminAddr() net.Addr { return s.admin.ln.Addr() }

func (s *Server) adminHandler(a *admin) http.Handler {
	mux := http.NewServeMux()
	// Public: probes and scrapers.
	mux.HandleFunc("GET /metrics", s.serveMetrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", s.serveReady)
	// Operators only.
	mux.HandleFunc("GET /api/stats", a.guard(s.serveStats))
	mux.HandleFunc("POST /api/revoke", a.guard(s.serveRevoke))
	// HTTP ingest checks its own credential (a producer token, or the
	// admin token): see ingest.Server.Publish.
	mux.HandleFunc("POST /api/publish", func(w http.ResponseWriter, r *http.Request) {
		s.ingest.Publish(w, r, a.open || a.isAdmin(r), a.refuse)
	})
	if a.pprof {
		mux.HandleFunc("/debug/pprof/", a.guard(pprof.Index))
		mux.HandleFunc("/debug/pprof/cmdline", a.guard(pprof.Cmdline))
		mux.HandleFunc("/debug/pprof/profile", a.guard(pprof.Profile))
		mux.HandleFunc("/debug/pprof/symbol", a.guard(pprof.Symbol))
		mux.HandleFunc("/debug/pprof/trace", a.guard(pprof.Trace))
	}
	s.routeDashboard(mux, a)
	return mux
}

// isAdmin reports whether r carries the admin token. The comparison takes
// the same time wherever the token offered differs.
func (a *admin) isAdmin(r *http.Request) bool {
	tok, ok := auth.BearerToken(r)
	want := a.token.Load()
	if !ok || want == nil {
		return false
	}
	sum := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(sum[:], want[:]) == 1
}

// ReloadAdminToken reads Config.AdminTokenFile again, so that the admin
// token rotates without a restart (SIGHUP). A file that cannot be read,
// or holds too short a token, changes nothing: the old token stays and
// the error says why. Without an admin token file it does nothing.
// Safe for concurrent use.
func (s *Server) ReloadAdminToken() error {
	f := s.cfg.AdminTokenFile
	if f == "" || s.admin == nil {
		return nil
	}
	tok, err := readAdminToken(f)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(tok)
	s.admin.token.Store(&sum)
	return nil
}

// guard wraps an operators' route: on a port that is not open the request
// must carry the admin token, or it is answered 401. Every admin route
// but /healthz, /readyz, /metrics, the dashboard's (viewer) and HTTP
// ingest (its own check) goes through it.
func (a *admin) guard(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !a.open && !a.isAdmin(r) {
			a.refuse(w, r, "the admin token is required: Authorization: Bearer <the token of admin_token_file>")
			return
		}
		h(w, r)
	}
}

// refuse answers 401 to a request without a valid credential, counts
// it and logs it (throttled).
func (a *admin) refuse(w http.ResponseWriter, r *http.Request, msg string) {
	a.refused.Add(1)
	a.s.warn(&a.s.warnAdmin, "refused an admin request", "client", r.RemoteAddr, "path", r.URL.Path)
	w.Header().Set("WWW-Authenticate", `Bearer realm="metrocast"`)
	http.Error(w, msg, http.StatusUnauthorized)
}

// serveMetrics writes the server's metrics, then the process and Go runtime
// metrics, open files included (one per connection).
func (s *Server) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	writeHelped(w, func(w io.Writer) {
		s.metrics.set.WritePrometheus(w)
		metrics.WriteGoMetrics(w)
		metrics.WriteProcMetrics(w)
		metrics.WriteFDMetrics(w)
	})
}

// serveReady answers 200 while the node accepts clients, 503 once it
// drains: load balancers stop sending it new ones. In cluster mode it also
// answers 503 ("degraded: <why>") until the node can serve: while it is cut
// off from NATS, while the stream cannot store a line, and while the node
// has not applied the stream up to its end (see Bus.Ready). Its
// clients keep their connections and rings meanwhile, but new clients are
// better served by another node.
func (s *Server) serveReady(w http.ResponseWriter, _ *http.Request) {
	if s.isDraining() {
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	}
	if why := s.bus.Ready(); why != "" {
		http.Error(w, "degraded: "+why, http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// statsResponse is the body of /api/stats.
type statsResponse struct {
	Epoch    uint64 `json:"epoch"`
	Draining bool   `json:"draining"`
	Stats
	Cities []CityStats `json:"cities"`
}

// defaultStatsCities is how many cities /api/stats lists without ?limit=.
const defaultStatsCities = 100

// serveStats answers the counters and the busiest cities as JSON.
// ?city=a,b lists those cities instead; ?limit=N lists the N busiest.
func (s *Server) serveStats(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := defaultStatsCities
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			http.Error(w, "limit must be a number ≥ 0", http.StatusBadRequest)
			return
		}
		limit = n
	}
	var names []string
	if v := q.Get("city"); v != "" {
		names = strings.Split(v, ",")
	}
	resp := statsResponse{
		Epoch:    s.epoch,
		Draining: s.isDraining(),
		Stats:    s.Stats(),
		Cities:   s.Cities(names, limit),
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(&resp)
}

// Cities describes the named cities (those the node holds), or, with no
// names, up to limit cities, most subscribers first. Safe for
// concurrent use.
func (s *Server) Cities(names []string, limit int) []CityStats {
	out := []CityStats{}
	if len(names) > 0 {
		for _, name := range names {
			if c := s.hub.lookup(name); c != nil {
				out = append(out, c.stats())
			}
		}
		return out
	}
	for _, cc := range s.busiest(limit) {
		out = append(out, cc.c.stats())
	}
	return out
}
