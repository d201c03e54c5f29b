package cluster

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/metrocast/metrocast/gateway"
	"github.com/metrocast/metrocast/gateway/internal/nodetest"
)

// BenchmarkClusterIngest pipelines lines with ids from 1 and 8 producers
// to a node on an embedded NATS server, each reading its acks as they
// come: the cost per line of the cluster's ingest path (parse, publish,
// ack, answer), with the node, NATS and the producers on one machine.
func BenchmarkClusterIngest(b *testing.B) {
	for _, producers := range []int{1, 8} {
		b.Run(fmt.Sprintf("producers=%d", producers), func(b *testing.B) {
			n := startNATS(b)
			s := startClusterNode(b, n.url(), gateway.Config{})
			ps := make([]*nodetest.Producer, producers)
			for i := range ps {
				ps[i] = s.producer(b)
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
						_ = p.C.SetWriteDeadline(time.Now().Add(time.Minute))
						_, _ = p.C.Write(buf.Bytes())
					}()
					for range share {
						_ = p.C.SetReadDeadline(time.Now().Add(clusterTimeout))
						line, err := p.BR.ReadBytes('\n')
						if err != nil || !bytes.Contains(line, []byte(`"ack"`)) {
							b.Errorf("producer %d: nodetest.Answer %q, %v", i, line, err)
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
