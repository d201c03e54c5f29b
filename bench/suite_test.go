package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestQuickSuite runs the whole suite small (-quick, no micro-benchmarks):
// it builds both binaries, runs every step against a node of its own and
// must write a result with every target evaluated and a chart. It checks
// that the pieces fit (loadtest's JSON as the bench reads it, among them),
// not the figures.
func TestQuickSuite(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries and runs every scenario")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out := t.TempDir()
	res, err := runSuite(ctx, config{out: out, quick: true, quietLoad: 0.8, tries: 1}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range res.Steps {
		if s.parsed == nil {
			t.Errorf("step %s: no result: %s", s.Name, s.Err)
		}
	}
	// The hot city apart needs two CPUs.
	steps, shapeCount := len(stepNames()), len(shapes)
	if res.Machine.CPUs < 2 {
		steps, shapeCount = steps-1, shapeCount-1
	}
	if len(res.Steps) != steps || len(res.Sweep) == 0 || len(res.Shapes) != shapeCount || res.Pings == nil {
		t.Fatalf("%d steps, %d sweep points, %d shapes, pings %v", len(res.Steps), len(res.Sweep), len(res.Shapes), res.Pings)
	}
	if f := res.Floor; f == nil || f.WriteNs <= 0 || len(f.WritePasses) != 6 || res.Machine.VsReference <= 0 {
		t.Errorf("floor %+v: want 3 passes at the start and 3 at the end", f)
	}
	if len(res.Paced) != 2 || len(res.Paced[0].Passes) != 6 || res.Paced[1].WriteNs <= 0 {
		t.Errorf("floors at the loads' pace %+v: want the nominal load's and the hot city's, 3 passes at the start and 3 at the end", res.Paced)
	}
	// CPU times come from /proc in 10 ms ticks: too coarse to require
	// here, over half a second.
	for _, sh := range res.Shapes {
		if sh.Delivered <= 0 || sh.Latency.Count == 0 || sh.Conns != 200 {
			t.Errorf("shape %+v: want 200 connections and their deliveries", sh)
		}
	}
	if hot := res.Shapes[0]; hot.BoundMs <= 0 || hot.FanP99 <= 0 {
		t.Errorf("hot city %+v: want its bound and first→last spread", hot)
	}
	// Accounting must hold anywhere; latency targets are not judged here
	// (a quick run shares the machine with the other packages' tests):
	// churn's other checks are, every resume exact among them.
	for _, tg := range res.Targets {
		if !tg.Pass && tg.Name == "zero loss, no duplicates (every scenario)" {
			t.Errorf("target %q failed: %s", tg.Name, tg.Got)
		}
	}
	churn := res.step("churn")
	if churn == nil || churn.parsed == nil || len(churn.parsed.Checks) == 0 {
		t.Fatalf("churn step %+v: want its checks", churn)
	}
	for _, c := range churn.parsed.Checks {
		latency := strings.HasSuffix(c.Name, ": p99") || strings.HasSuffix(c.Name, ": p99.9")
		if !c.Pass && !latency {
			t.Errorf("churn check %q failed: %s, want %s", c.Name, c.Got, c.Want)
		}
	}
	jsonPath, svgPath := resultPaths(out, res.Date, res.Host)
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var back suiteResult
	if err := json.Unmarshal(b, &back); err != nil || len(back.Targets) != len(res.Targets) {
		t.Errorf("result file: %v, %d targets", err, len(back.Targets))
	}
	if _, err := os.Stat(svgPath); err != nil {
		t.Error(err)
	}
	if m, _ := filepath.Glob(filepath.Join(out, "*")); len(m) != 2 {
		t.Errorf("files written: %v, want the json and the svg", m)
	}
}
