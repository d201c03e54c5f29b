package ingest

import (
	"bytes"
	"testing"
	"time"
)

// BenchmarkLineReader reads pipelined ingest lines from a buffer, with and
// without the line time-out: the bound costs a second scan of each line
// and no deadline while whole lines are buffered.
func BenchmarkLineReader(b *testing.B) {
	line := []byte(`{"id":"l1","city":"bench","type":"data_update","data":{"pm25":12,"no2":31,"o3":48,"note":"a typical frame of a few hundred bytes, padded to look like one"}}` + "\n")
	input := bytes.Repeat(line, 4096)
	for _, tc := range []struct {
		name    string
		timeout time.Duration
	}{{"no-timeout", 0}, {"timeout", time.Second}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(line)))
			r := bytes.NewReader(input)
			lr := newLineReader(r, 1<<20, tc.timeout, func(time.Time) error { return nil })
			for b.Loop() {
				if _, err := lr.next(); err != nil {
					r.Reset(input)
					lr.r.Reset(r)
				}
			}
		})
	}
}
