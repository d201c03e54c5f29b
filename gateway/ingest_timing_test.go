package gateway

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"
)

// BenchmarkLineReader reads pipelined ingest lines from a buffer, with and
// without the line time-out: the bound costs a second scan of each line
// and no deadline while whole lines are buffered.
func BenchmarkLineReader(b *testing.B) {
	line := []byte(dataLine("bench", "data_update", `{"pm25":12,"no2":31,"o3":48,"note":"a typical frame of a few hundred bytes, padded to look like one"}`) + "\n")
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

// BenchmarkClusterIngest pipelines lines with ids from 1 and 8 producers
// to a node on an embedded NATS server, each reading its acks as they
// come: the cost per line of the cluster's ingest path (parse, publish,
// ack, answer), with the node, NATS and the producers on one machine.
func BenchmarkClusterIngest(b *testing.B) {
	for _, producers := range []int{1, 8} {
		b.Run(fmt.Sprintf("producers=%d", producers), func(b *testing.B) {
			n := startNATS(b)
			s := startClusterNode(b, n.url(), Config{})
			ps := make([]*producer, producers)
			for i := range ps {
				ps[i] = dialProducer(b, s)
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for i, p := range ps {
				share := b.N / producers
				if i < b.N%producers {
					share++
				}
				wg.Go(func() {
					var buf bytes.Buffer
					for j := range share {
						fmt.Fprintf(&buf, `{"id":"b%d-%d","city":"bench-%d","type":"data_update","data":{"pm25":12,"j":%d}}`+"\n", i, j, i, j)
					}
					go func() {
						_ = p.c.SetWriteDeadline(time.Now().Add(time.Minute))
						_, _ = p.c.Write(buf.Bytes())
					}()
					for range share {
						_ = p.c.SetReadDeadline(time.Now().Add(clusterTimeout))
						line, err := p.br.ReadBytes('\n')
						if err != nil || !bytes.Contains(line, []byte(`"ack"`)) {
							b.Errorf("producer %d: answer %q, %v", i, line, err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "lines/s")
		})
	}
}
