package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/metrocast/metrocast/codec"
	"github.com/metrocast/metrocast/gateway"
	"github.com/metrocast/metrocast/gateway/internal/nodetest"
)

// BenchmarkClusterFetch reads a resume of frames from a stream on an
// embedded NATS server (Bus.fetch, each frame parsed and encoded as the
// core's gateway.Fetch.Add does), for a city with 1, 100 and 1,000
// frames after since among as many of another city: the cost of a resume
// served from the stream, per resume.
func BenchmarkClusterFetch(b *testing.B) {
	for _, frames := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("frames=%d", frames), func(b *testing.B) {
			n := startNATS(b)
			a := startClusterNode(b, n.url(), gateway.Config{})
			p := a.producer(b)
			var lines []string
			for i := range frames + 1 {
				lines = append(lines, nodetest.DataLine("fetch", "data_update", fmt.Sprintf(`{"i":%d}`, i)),
					nodetest.DataLine("other", "data_update", fmt.Sprintf(`{"i":%d}`, i)))
			}
			p.Write(b, lines...)
			first := p.Answer(b).Seq
			for range len(lines) - 1 {
				p.Answer(b)
			}
			// Its rings hold none of those frames: they come from the stream.
			late := startClusterNode(b, n.url(), gateway.Config{})
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				// As the core's gateway.Fetch.Add does: parse each
				// message and encode its frame.
				var got [][]byte
				add := func(seq uint64, ts time.Time, data []byte) (int, bool) {
					in, err := codec.ParseIngest(data)
					if err != nil {
						b.Fatal(err)
					}
					got = append(got, codec.AppendDataUpdate(make([]byte, 0, 96+len(in.City)+len(in.Data)), in.City, seq, ts.UnixMilli(), in.Data))
					return len(got), false
				}
				if ok := late.bus.fetch("fetch", first, add); !ok || len(got) != frames {
					b.Fatalf("fetch: %d frames, ok %v; want %d", len(got), ok, frames)
				}
			}
		})
	}
}
