package gateway

import (
	"fmt"
	"testing"
)

// BenchmarkClusterFetch reads a resume of frames from a stream on an
// embedded NATS server (cluster.fetch), for a city with 1, 100 and 1,000
// frames after since among as many of another city: the cost of a resume
// served from the stream, per resume.
func BenchmarkClusterFetch(b *testing.B) {
	for _, frames := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("frames=%d", frames), func(b *testing.B) {
			n := startNATS(b)
			a := startClusterNode(b, n.url(), Config{})
			p := dialProducer(b, a)
			var lines []string
			for i := range frames + 1 {
				lines = append(lines, dataLine("fetch", "data_update", fmt.Sprintf(`{"i":%d}`, i)),
					dataLine("other", "data_update", fmt.Sprintf(`{"i":%d}`, i)))
			}
			p.Write(b, lines...)
			first := p.Answer(b).Seq
			for range len(lines) - 1 {
				p.Answer(b)
			}
			// Its rings hold none of those frames: they come from the stream.
			late := startClusterNode(b, n.url(), Config{})
			c, err := late.hub.city("fetch")
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				f := &Fetch{City: "fetch", Since: first, sb: &sub{city: c}}
				if ok := clusterOf(late).fetch(f); !ok || len(f.frames) != frames {
					b.Fatalf("fetch: %d frames, ok %v; want %d", len(f.frames), ok, frames)
				}
			}
		})
	}
}
