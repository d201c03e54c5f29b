package main

import (
	"strings"
	"testing"
)

func TestParseMicro(t *testing.T) {
	out := `goos: linux
pkg: github.com/metrocast/metrocast/gateway
BenchmarkRingGet-2       	469591534	         2.463 ns/op	       0 B/op	       0 allocs/op
BenchmarkFanout/subs=10000-2       	      19	  59115242 ns/op	      6208 cpu-ns/delivery	      5912 ns/delivery	     465 B/op	       6 allocs/op
BenchmarkParseIngest-2          	 1734009	       732.0 ns/op	 256.85 MB/s	     374 B/op	       6 allocs/op
BenchmarkBroken-2  notanumber  1 ns/op
PASS
ok  	github.com/metrocast/metrocast/gateway	16.530s
`
	got := parseMicro(strings.NewReader(out))
	if len(got) != 3 {
		t.Fatalf("%d results, want 3: %+v", len(got), got)
	}
	f := func(i int, name string, ns, b, allocs float64, extra map[string]float64) {
		t.Helper()
		m := got[i]
		if m.Name != name || m.NsPerOp != ns || m.BytesPerOp != b || m.AllocsPerOp != allocs || len(m.Extra) != len(extra) {
			t.Errorf("result %d: %+v", i, m)
		}
		for k, v := range extra {
			if m.Extra[k] != v {
				t.Errorf("result %d: %s = %g, want %g", i, k, m.Extra[k], v)
			}
		}
	}
	f(0, "BenchmarkRingGet", 2.463, 0, 0, nil)
	f(1, "BenchmarkFanout/subs=10000", 59115242, 465, 6, map[string]float64{"cpu-ns/delivery": 6208, "ns/delivery": 5912})
	f(2, "BenchmarkParseIngest", 732, 374, 6, map[string]float64{"MB/s": 256.85})
}
