package gateway

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

func TestAdminEndpoints(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	f := func(path string, wantCode int, wantBody string) {
		t.Helper()
		code, body := adminGet(t, s, path)
		if code != wantCode || !strings.Contains(string(body), wantBody) {
			t.Errorf("GET %s: %d %.200q, want %d with %q", path, code, body, wantCode, wantBody)
		}
	}
	f("/healthz", http.StatusOK, "ok")
	f("/readyz", http.StatusOK, "ready")
	f("/debug/pprof/", http.StatusOK, "goroutine")
	f("/debug/pprof/cmdline", http.StatusOK, "")
	f("/api/stats?limit=x", http.StatusBadRequest, "limit")
	f("/nothing", http.StatusNotFound, "")
}

// TestAdminStats checks /api/stats: counters, and per city its
// subscribers, ring seqs and state size.
func TestAdminStats(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{RingSize: 4})
	c := dialGobwas(t, wsURL(s, "cities=st1"))
	readType(t, c, "subscribed")
	p := dialProducer(t, s)
	p.publish(t, dataLine("st1", "snapshot", `{"a":1,"bb":22}`))
	for range 5 {
		p.publish(t, dataLine("st1", "data_update", `{"c":3}`))
	}
	p.publish(t, dataLine("st2", "data_update", `{"z":0}`))

	get := func(query string) statsResponse {
		t.Helper()
		code, body := adminGet(t, s, "/api/stats"+query)
		if code != http.StatusOK {
			t.Fatalf("/api/stats%s: status %d %s", query, code, body)
		}
		var r statsResponse
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatalf("/api/stats%s: %s\n%s", query, err, body)
		}
		return r
	}
	r := get("")
	if r.Epoch != s.Epoch() || r.Draining || r.Connections != 1 || r.IngestFrames != 7 || r.Stats.Cities != 2 {
		t.Errorf("stats = %+v", r)
	}
	if len(r.Cities) != 2 || r.Cities[0].City != "st1" || r.Cities[1].City != "st2" {
		t.Fatalf("cities = %+v, want st1 (1 subscriber) then st2", r.Cities)
	}
	// Ring of 4: seqs 3..6 held, 2 evicted.
	want := CityStats{City: "st1", Subscribers: 1, Head: 6, Tail: 3, RingFrames: 4,
		StateKeys: 3, StateBytes: len(`a1bb22c3`), RecentAlerts: 0}
	got := r.Cities[0]
	got.RingBytes = 0
	if got != want {
		t.Errorf("st1 = %+v\nwant %+v", got, want)
	}
	if r.RingEvictions != 2 {
		t.Errorf("ring evictions = %d, want 2", r.RingEvictions)
	}
	if r := get("?city=st2,nowhere"); len(r.Cities) != 1 || r.Cities[0].City != "st2" || r.Cities[0].Head != 1 {
		t.Errorf("?city=st2,nowhere: %+v", r.Cities)
	}
	if r := get("?limit=1"); len(r.Cities) != 1 || r.Cities[0].City != "st1" {
		t.Errorf("?limit=1: %+v", r.Cities)
	}
}
