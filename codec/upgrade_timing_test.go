package codec

import (
	"testing"
)

// BenchmarkUpgrade answers a typical browser upgrade request, response
// written into a reused buffer.
func BenchmarkUpgrade(b *testing.B) {
	head := []byte(chromeRequest)
	u := Upgrader{Path: "/ws", MaxHeaderBytes: 4096}
	out := make([]byte, 0, 512)
	b.ReportAllocs()
	b.SetBytes(int64(len(head)))
	for b.Loop() {
		if RequestEnd(head, 0) != len(head) {
			b.Fatal("RequestEnd")
		}
		_, resp, err := u.Upgrade(head, out[:0], nil)
		if err != nil {
			b.Fatal(err)
		}
		out = resp
	}
}
