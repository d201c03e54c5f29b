package nodetest

import (
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Scrape fetches /metrics from the admin port at addr, parses it with
// Prometheus' own text parser and flattens it to series → value. A series
// is written as exposed, labels sorted:
// metrocast_connections_closed_total{reason="peer"}; a histogram gives
// name_bucket{le="…"}, name_count and name_sum.
func Scrape(t testing.TB, addr string) map[string]float64 {
	t.Helper()
	code, body := AdminGet(t, addr, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: status %d", code)
	}
	return ParseMetrics(t, body)
}

// ParseMetrics flattens a /metrics body as Scrape does.
func ParseMetrics(t testing.TB, body []byte) map[string]float64 {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("cannot parse /metrics: %s\n%s", err, body)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := func(name string, extra ...string) string {
				ls := append(slices.Clone(labels), extra...)
				if len(ls) == 0 {
					return name
				}
				sort.Strings(ls)
				return name + "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key(name)] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key(name)] = m.Gauge.GetValue()
			case m.Untyped != nil:
				out[key(name)] = m.Untyped.GetValue()
			case m.Histogram != nil:
				h := m.Histogram
				out[key(name+"_count")] = float64(h.GetSampleCount())
				out[key(name+"_sum")] = h.GetSampleSum()
				for _, b := range h.GetBucket() {
					out[key(name+"_bucket", fmt.Sprintf("le=%q", fmt.Sprint(b.GetUpperBound())))] = float64(b.GetCumulativeCount())
				}
			}
		}
	}
	return out
}

// Series returns the value of one series, failing the test if it is
// absent.
func Series(t testing.TB, m map[string]float64, name string) float64 {
	t.Helper()
	v, ok := m[name]
	if !ok {
		t.Fatalf("no series %s in /metrics", name)
	}
	return v
}
