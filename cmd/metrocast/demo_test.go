package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/metrocast/metrocast/gateway"
)

// startDemoNode starts a node on loopback ports with the demo feed.
func startDemoNode(t *testing.T, cfg gateway.Config) *gateway.Server {
	t.Helper()
	cfg.Addr, cfg.AdminAddr, cfg.IngestAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Loops = 2
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	seeded := make(chan struct{})
	go func() { done <- runDemo(ctx, s, cfg.WithDefaults(), cfg.Logger, func() { close(seeded) }) }()
	select {
	case <-seeded:
	case err := <-done:
		t.Fatalf("runDemo: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runDemo: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s
}

// TestDemoFeed: every demo city gets a snapshot with the four groups, an
// info alert, and then updates, through the ingest port.
func TestDemoFeed(t *testing.T) {
	s := startDemoNode(t, gateway.Config{Insecure: true})
	ws := dialWS(t, "ws://"+s.Addr().String()+"/ws?cities="+strings.Join(demoCities, ","))
	expectType(t, ws, "subscribed")
	initial := map[string]bool{}
	updates := map[string]int{}
	for len(updates) < len(demoCities) {
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("after updates from %d cities: %v", len(updates), err)
		}
		var m struct {
			Type         string                    `json:"type"`
			City         string                    `json:"city"`
			Data         map[string]map[string]any `json:"data"`
			RecentAlerts []json.RawMessage         `json:"recent_alerts"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		switch m.Type {
		case "initial_data":
			// A city is seeded before the client subscribes, or the
			// snapshot arrives in-stream (resumed:true) after it.
			if len(m.Data) > 0 {
				for _, g := range []string{"air_quality", "traffic", "water", "energy"} {
					if len(m.Data[g]) == 0 {
						t.Errorf("%s: no %s in %s", m.City, g, b)
					}
				}
			}
			initial[m.City] = true
		case "data_update":
			if !initial[m.City] {
				t.Fatalf("%s: data_update before initial_data", m.City)
			}
			if len(m.Data) == 0 || len(m.Data) > 2 {
				t.Errorf("%s: an update of %d groups: %s", m.City, len(m.Data), b)
			}
			updates[m.City]++
		}
	}
	st := s.Cities(nil, 100)
	if len(st) != len(demoCities) {
		t.Errorf("the node holds %d cities, want %d", len(st), len(demoCities))
	}
}

// TestDemoAlerts: the demo's alerts are valid ingest lines of each
// severity (the gateway refuses anything else).
func TestDemoAlerts(t *testing.T) {
	c := newDemoCity("nairobi")
	seen := map[string]bool{}
	for i := 0; i < 100000 && len(seen) < 3; i++ {
		for _, a := range c.alert() {
			if a.Message == "" {
				t.Fatal("an alert without a message")
			}
			seen[a.Severity] = true
		}
	}
	for _, sev := range []string{"info", "warning", "critical"} {
		if !seen[sev] {
			t.Errorf("no %s alert", sev)
		}
	}
}

// TestDashboardURL: with an HMAC secret the demo prints a dashboard URL
// whose fragment carries a token the node accepts, and the admin port
// serves the page, its scripts and where the WebSocket port is.
func TestDashboardURL(t *testing.T) {
	cfg := gateway.Config{AuthHMACSecret: strings.Repeat("demo-secret-", 4)}
	s := startDemoNode(t, cfg)
	u, err := dashboardURL(s, cfg)
	if err != nil {
		t.Fatal(err)
	}
	page, frag, ok := strings.Cut(u, "#token=")
	if !ok || page != "http://"+s.AdminAddr().String()+"/" {
		t.Fatalf("dashboard URL %q", u)
	}
	ws := dialWS(t, "ws://"+s.Addr().String()+"/ws?cities=lagos&token="+url.QueryEscape(frag))
	expectType(t, ws, "subscribed")

	get := func(path, wantType, wantBody string) {
		t.Helper()
		resp, err := http.Get(page + strings.TrimPrefix(path, "/"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), wantType) || !strings.Contains(string(b), wantBody) {
			t.Errorf("GET %s: %d %s\n%.200s", path, resp.StatusCode, resp.Header.Get("Content-Type"), b)
		}
	}
	get("/", "text/html", `<script type="module" src="/web/dashboard.js">`)
	get("/web/dashboard.js", "text/javascript", `from "./metrocast.js"`)
	get("/web/metrocast.js", "text/javascript", "export class Metrocast")
	get("/web/use-city-stream.js", "text/javascript", "export function makeUseCityStream")
	get("/web/metrocast.d.ts", "text/plain", "export declare class Metrocast")
	get("/api/client", "application/json", `"ws_path":"/ws"`)
}
