package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
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
	if len(res.Steps) != len(stepNames()) || len(res.Sweep) == 0 {
		t.Fatalf("%d steps, %d sweep points", len(res.Steps), len(res.Sweep))
	}
	// Accounting must hold anywhere; latency targets are not judged here.
	for _, tg := range res.Targets {
		if !tg.Pass && (tg.Name == "zero loss, no duplicates (every scenario)" || tg.Name == "churn: every check") {
			t.Errorf("target %q failed: %s", tg.Name, tg.Got)
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
