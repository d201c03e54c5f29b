package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// admin is the admin HTTP port (net/http; not on the event loops): metrics,
// health, pprof, stats, HTTP ingest and the demo dashboard. It is meant for a private network
// or loopback, like the ingest port.
type admin struct {
	ln  net.Listener
	srv *http.Server
}

func (s *Server) listenAdmin() (*admin, error) {
	ln, err := net.Listen("tcp", s.cfg.AdminAddr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen for admin on %s: %w", s.cfg.AdminAddr, err)
	}
	return &admin{ln: ln, srv: &http.Server{
		Handler:           s.adminHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn),
	}}, nil
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

func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", s.serveMetrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", s.serveReady)
	mux.HandleFunc("GET /api/stats", s.serveStats)
	mux.HandleFunc("POST /api/publish", s.servePublish)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.routeDashboard(mux)
	return mux
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
// answers 503 ("degraded") while the node is cut off from NATS: its
// clients keep their connections and rings, but it can neither store nor
// receive new frames, so new clients are better served by another node.
func (s *Server) serveReady(w http.ResponseWriter, _ *http.Request) {
	if s.isDraining() {
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	}
	if s.cluster != nil && !s.cluster.connected() {
		http.Error(w, "degraded: cluster bus (NATS) unavailable", http.StatusServiceUnavailable)
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
