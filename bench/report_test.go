package main

import (
	"encoding/xml"
	"io"
	"strings"
	"testing"
)

// sweepResult is a loadtest steady result with one phase per (rate, p99)
// and the given loss.
func sweepResult(lost uint64, phases ...[2]float64) *ltResult {
	l := &ltResult{Accounting: map[string]ltAccounting{"readers": {Owed: 1000, Lost: lost}}}
	l.Phases = append(l.Phases, ltPhase{Name: "warmup", RatePerCity: 1, PerSecond: 1e9, Latency: latency{Count: 1, P99: 1}})
	for _, p := range phases {
		l.Phases = append(l.Phases, ltPhase{Name: "rate", RatePerCity: p[0], PerSecond: p[0] * 10_000,
			Latency: latency{Count: 100, P50: p[1] / 4, P99: p[1], P999: 2 * p[1], Max: 3 * p[1]}, NodeCPUPerMDel: 6})
	}
	return l
}

func TestEvaluateSweep(t *testing.T) {
	r := &suiteResult{Steps: []*stepRun{{Name: "sweep", parsed: sweepResult(0, [2]float64{1, 2}, [2]float64{5, 4}, [2]float64{10, 30}, [2]float64{20, 80})}}}
	r.evaluate()
	f := r.Figures
	// 10/s per city is the highest rate under 50 ms; the warm-up never counts.
	if f.MaxDeliveries != 100_000 || f.MaxRatePerCity != 10 || f.AtMax == nil || f.AtMax.P99 != 30 {
		t.Errorf("figures %+v: want the 10/s point", f)
	}
	if f.Nominal == nil || f.Nominal.P99 != 4 || f.NominalDelivered != 50_000 {
		t.Errorf("nominal %+v at %g", f.Nominal, f.NominalDelivered)
	}
	if len(r.Sweep) != 4 {
		t.Errorf("%d sweep points, want 4", len(r.Sweep))
	}
	if !r.passed() {
		t.Errorf("targets %+v: want all passed", r.Targets)
	}
}

func TestEvaluateFails(t *testing.T) {
	f := func(name string, steps []*stepRun, failing string) {
		t.Helper()
		r := &suiteResult{Steps: steps}
		r.evaluate()
		for _, tg := range r.Targets {
			if strings.Contains(tg.Name, failing) {
				if tg.Pass {
					t.Errorf("%s: target %q passed", name, tg.Name)
				}
				return
			}
		}
		t.Errorf("%s: no target %q in %+v", name, failing, r.Targets)
	}
	// The nominal rate over its target.
	f("slow nominal", []*stepRun{{Name: "sweep", parsed: sweepResult(0, [2]float64{5, 60})}}, "p99 at")
	// Its p99.9 over 100 ms while p99 passes.
	f("slow tail", []*stepRun{{Name: "sweep", parsed: sweepResult(0, [2]float64{5, 55})}}, "p99.9")
	// A loss anywhere.
	f("loss", []*stepRun{{Name: "sweep", parsed: sweepResult(3, [2]float64{5, 1})}}, "zero loss")
	// A step that produced no result.
	f("no result", []*stepRun{{Name: "churn", What: "churn", Err: "exit status 2"}}, "churn")
	// The sweep stopped before the nominal rate.
	f("stopped early", []*stepRun{{Name: "sweep", parsed: sweepResult(0, [2]float64{1, 70})}}, "nominal")
	// A failed scenario check.
	spike := &ltResult{Checks: []ltCheck{{Name: "spike: p99", Pass: false, Got: "80ms", Want: "< 50ms"}}}
	f("spike check", []*stepRun{{Name: "spike", What: "spike ×10", parsed: spike}}, "spike ×10")
}

func TestChart(t *testing.T) {
	r := &suiteResult{Host: "h", Date: "2026-01-02", Steps: []*stepRun{{Name: "sweep",
		parsed: sweepResult(0, [2]float64{1, 0.5}, [2]float64{5, 2}, [2]float64{10, 300})}}}
	r.evaluate()
	svg := chart(r)
	// Well-formed XML, three series of three points.
	d := xml.NewDecoder(strings.NewReader(svg))
	counts := map[string]int{}
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed: %v\n%s", err, svg)
		}
		if se, ok := tok.(xml.StartElement); ok {
			counts[se.Name.Local]++
		}
	}
	if counts["svg"] != 1 || counts["polyline"] != 3 || counts["circle"] != 9 {
		t.Errorf("elements %v: want 1 svg, 3 polylines, 9 circles", counts)
	}
	for _, want := range []string{"p99 target 50 ms", "100k", "1 s"} {
		if !strings.Contains(svg, want) {
			t.Errorf("chart lacks %q", want)
		}
	}
}

func TestNiceCeil(t *testing.T) {
	f := func(v, want float64) {
		t.Helper()
		if got := niceCeil(v); got != want {
			t.Errorf("niceCeil(%g) = %g, want %g", v, got, want)
		}
	}
	f(0, 1)
	f(1, 1)
	f(3, 5)
	f(10, 10)
	f(11, 20)
	f(180_000, 200_000)
	f(510_000, 1_000_000)
}

func TestOthersShare(t *testing.T) {
	l := &ltResult{Phases: []ltPhase{{Seconds: 10, OthersCPU: 2}, {Seconds: 5, OthersCPU: 4}, {Seconds: 0, OthersCPU: 9}}}
	// 4 s of CPU in 5 s on 2 CPUs: 40%; a phase without duration is skipped.
	if got := othersShare(l, 2); got != 0.4 {
		t.Errorf("othersShare = %g, want 0.4", got)
	}
}

func TestThousands(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 10_000: "10,000", 1_234_567: "1,234,567"} {
		if got := thousands(v); got != want {
			t.Errorf("thousands(%g) = %q, want %q", v, got, want)
		}
	}
}
