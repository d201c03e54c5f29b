package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestMetricsMove scrapes /metrics as traffic flows and checks that the
// series follow it: connections, subscriptions, ingest, deliveries,
// latency, closes.
func TestMetricsMove(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	m := scrape(t, s)
	for name, want := range map[string]float64{
		"metrocast_connections":                             0,
		"metrocast_subscriptions":                           0,
		"metrocast_deliveries_total":                        0,
		"metrocast_delivery_latency_seconds_count":          0,
		`metrocast_connections_closed_total{reason="peer"}`: 0,
		"metrocast_draining":                                0,
	} {
		if got := series(t, m, name); got != want {
			t.Errorf("before traffic: %s = %v, want %v", name, got, want)
		}
	}
	if _, ok := m["go_goroutines"]; !ok {
		t.Errorf("no Go runtime metrics (go_goroutines)")
	}
	if _, ok := m["process_cpu_seconds_total"]; !ok {
		t.Errorf("no process metrics (process_cpu_seconds_total)")
	}

	c := dialGorilla(t, wsURL(s, "cities=mx1,mx2"))
	readType(t, c, "subscribed")
	readType(t, c, "initial_data")
	readType(t, c, "initial_data")
	p := dialProducer(t, s)
	const frames = 5
	for range frames {
		p.Publish(t, dataLine("mx1", "data_update", `{"n":1}`))
	}
	for range frames {
		readType(t, c, "data_update")
	}
	p.Write(t, `{"city":"mx1"}`)
	if a := p.Answer(t); a.Error == "" {
		t.Fatalf("bad line answered %+v", a)
	}
	waitFor(t, readTimeout, func() bool { return s.Stats().Deliveries == frames })

	m = scrape(t, s)
	for name, want := range map[string]float64{
		"metrocast_connections":                      1,
		"metrocast_connections_upgraded_total":       1,
		"metrocast_subscriptions":                    2,
		`metrocast_city_subscribers{city="mx1"}`:     1,
		`metrocast_city_subscribers{city="mx2"}`:     1,
		"metrocast_cities":                           2,
		"metrocast_ingest_connections":               1,
		"metrocast_ingest_frames_total":              frames,
		"metrocast_ingest_errors_total":              1,
		"metrocast_deliveries_total":                 frames,
		"metrocast_handshake_duration_seconds_count": 1,
	} {
		if got := series(t, m, name); got != want {
			t.Errorf("after traffic: %s = %v, want %v", name, got, want)
		}
	}
	if n := series(t, m, "metrocast_delivery_latency_seconds_count"); n < 1 || n > frames {
		t.Errorf("delivery latency samples = %v, want 1..%d (one per write batch)", n, frames)
	}
	if n := series(t, m, "metrocast_loop_task_lag_seconds_count"); n < 1 {
		t.Errorf("loop task lag samples = %v, want ≥ 1", n)
	}
	if n := series(t, m, "metrocast_delivered_bytes_total"); n < frames*20 {
		t.Errorf("delivered bytes = %v, want ≥ %d", n, frames*20)
	}
	if n := series(t, m, "metrocast_ingest_bytes_total"); n < frames*20 {
		t.Errorf("ingest bytes = %v, want ≥ %d", n, frames*20)
	}

	c.Close()
	waitFor(t, readTimeout, func() bool { return s.Stats().Connections == 0 })
	m = scrape(t, s)
	if got := series(t, m, `metrocast_connections_closed_total{reason="peer"}`); got != 1 {
		t.Errorf("closed{peer} = %v, want 1", got)
	}
	if got := series(t, m, "metrocast_subscriptions"); got != 0 {
		t.Errorf("subscriptions after the close = %v, want 0", got)
	}
	if _, ok := m[`metrocast_city_subscribers{city="mx1"}`]; ok {
		t.Errorf("a city without subscribers still has a series")
	}
}

// TestMetricsCityLabelsBounded checks that only the busiest cities get a
// labelled series, however many cities have subscribers.
func TestMetricsCityLabelsBounded(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	var cities []string
	for i := range topCities + 5 {
		cities = append(cities, fmt.Sprintf("bound%d", i))
	}
	// bound0 gets a second subscriber: it must be listed.
	c := dialGobwas(t, wsURL(s, "cities="+strings.Join(cities, ",")))
	readType(t, c, "subscribed")
	c2 := dialGobwas(t, wsURL(s, "cities=bound0"))
	readType(t, c2, "subscribed")
	waitFor(t, readTimeout, func() bool { return s.Stats().Subscriptions == int64(len(cities)+1) })
	m := scrape(t, s)
	n := 0
	for k := range m {
		if strings.HasPrefix(k, "metrocast_city_subscribers{") {
			n++
		}
	}
	if n != topCities {
		t.Errorf("%d city series, want %d", n, topCities)
	}
	if got := series(t, m, `metrocast_city_subscribers{city="bound0"}`); got != 2 {
		t.Errorf("bound0 subscribers = %v, want 2", got)
	}
}

// TestREADMEMetrics keeps the README's metric list and the real series in
// step: every metrocast_ family exposed is documented and every documented
// one is exposed.
func TestREADMEMetrics(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(metrocast_[a-z_]+)(?:\\{[^`]*\\})?` \\|").FindAllStringSubmatch(string(readme), -1) {
		documented[m[1]] = true
	}
	for name := range exposedFamilies(t) {
		if !strings.HasPrefix(name, "metrocast_") {
			continue
		}
		if !documented[name] {
			t.Errorf("%s is exposed but not in the README's metrics table", name)
		}
		delete(documented, name)
	}
	for name := range documented {
		t.Errorf("the README documents %s, which /metrics does not expose", name)
	}
}

// exposedFamilies returns the metric families of a server with one
// subscriber (so that the per-city family appears).
func exposedFamilies(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	s := startServer(t, Config{})
	c := dialGobwas(t, wsURL(s, "cities=doc"))
	readType(t, c, "subscribed")
	waitFor(t, readTimeout, func() bool { return s.Stats().Subscriptions == 1 })
	code, body := adminGet(t, s, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: status %d", code)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// TestGrafanaDashboard checks that deploy/grafana/metrocast.json is valid
// JSON and queries only metrics that the node exposes.
func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../deploy/grafana/metrocast.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %s", err)
	}
	fams := exposedFamilies(t)
	name := regexp.MustCompile(`\b(?:metrocast|process|go)_[a-z_]+`)
	queried := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, n := range name.FindAllString(tg.Expr, -1) {
				queried++
				if fams[n] == nil && fams[strings.TrimSuffix(n, "_bucket")].GetType() != dto.MetricType_HISTOGRAM {
					t.Errorf("panel %q queries %s, which /metrics does not expose", p.Title, n)
				}
			}
		}
	}
	if queried < 20 {
		t.Errorf("the dashboard queries %d series, want the node's metrics charted", queried)
	}
}

// TestMetricsHelp checks that every family /metrics exposes, ours and the
// runtime's, has a HELP text, and that metricHelp names no metrocast_
// family that is not exposed. A new metric without its line in
// metrichelp.go fails here.
func TestMetricsHelp(t *testing.T) {
	t.Parallel()
	fams := exposedFamilies(t)
	if len(fams) < 90 {
		t.Fatalf("%d families exposed, want the node's, the Go runtime's and the process's", len(fams))
	}
	for name, f := range fams {
		if f.GetHelp() == "" {
			t.Errorf("%s has no HELP text: give it one in metricHelp (gateway/metrichelp.go)", name)
		}
	}
	for name, help := range metricHelp {
		if strings.ContainsAny(help, "\\\n") {
			t.Errorf("the HELP text of %s holds a backslash or a newline", name)
		}
		if strings.HasPrefix(name, "metrocast_") && fams[name] == nil {
			t.Errorf("metricHelp describes %s, which /metrics does not expose", name)
		}
	}
	bi := fams["metrocast_build_info"]
	if bi.GetType() != dto.MetricType_GAUGE || len(bi.GetMetric()) != 1 || bi.GetMetric()[0].GetGauge().GetValue() != 1 {
		t.Fatalf("metrocast_build_info = %v, want one gauge at 1", bi)
	}
	labels := map[string]string{}
	for _, l := range bi.GetMetric()[0].GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	if labels["version"] != "dev" || labels["go_version"] != runtime.Version() || len(labels) != 2 {
		t.Errorf("metrocast_build_info labels = %v, want version=dev (Config.Version unset) and go_version=%s", labels, runtime.Version())
	}
}

func TestAppendHelp(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		if got := string(appendHelp(nil, []byte(in))); got != want {
			t.Errorf("appendHelp(%q)\n got %q\nwant %q", in, got, want)
		}
	}
	f("", "")
	f("# HELP metrocast_draining\n# TYPE metrocast_draining gauge\nmetrocast_draining 0\n",
		"# HELP metrocast_draining "+metricHelp["metrocast_draining"]+"\n# TYPE metrocast_draining gauge\nmetrocast_draining 0\n")
	// A text already there stays; an unknown family keeps an empty HELP.
	f("# HELP metrocast_draining own text\n", "# HELP metrocast_draining own text\n")
	f("# HELP unknown_family\nunknown_family 1\n", "# HELP unknown_family\nunknown_family 1\n")
	// The last line may lack its newline.
	f("# HELP go_goroutines", "# HELP go_goroutines "+metricHelp["go_goroutines"]+"\n")
	f("metrocast_draining 0", "metrocast_draining 0")
}

// TestMetricsHandshakeDuration checks the value of
// metrocast_handshake_duration_seconds, not only its count: a client that
// holds back the end of its request for a while has a handshake at least
// that long, and no longer than the test saw it take.
func TestMetricsHandshakeDuration(t *testing.T) {
	t.Parallel()
	const hold = 50 * time.Millisecond
	s := startServer(t, Config{})
	start := time.Now()
	r := dialRaw(t, s)
	req := []byte(upgradeRequest("/ws"))
	r.write(t, req[:20])
	waitFor(t, readTimeout, func() bool { return s.Stats().Connections == 1 }) // accepted
	time.Sleep(hold)                                                           // the slow client, not a synchronisation
	r.write(t, req[20:])
	if resp := r.response(t); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	took := time.Since(start)
	// The sample is taken just after the response is written.
	var m map[string]float64
	waitFor(t, readTimeout, func() bool {
		m = scrape(t, s)
		return series(t, m, "metrocast_handshake_duration_seconds_count") == 1
	})
	if got := series(t, m, "metrocast_handshake_duration_seconds_sum"); got < hold.Seconds() || got > took.Seconds() {
		t.Fatalf("handshake duration %vs, want between %v and %v", got, hold, took)
	}
}
