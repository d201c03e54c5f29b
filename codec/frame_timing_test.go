package codec

import (
	"bytes"
	"testing"

	"github.com/gobwas/ws"
)

// BenchmarkFrameHeaderUnmask is the per-frame read cost on the event loop:
// parse the header of a masked 100-byte text frame and unmask the payload.
// It must not allocate.
func BenchmarkFrameHeaderUnmask(b *testing.B) {
	frame := clientFrame(true, ws.OpText, bytes.Repeat([]byte("x"), 100))
	buf := make([]byte, len(frame))
	var p FrameParser
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		copy(buf, frame)
		h, n, err := p.Header(buf)
		if err != nil || n == 0 {
			b.Fatalf("Header: n=%d err=%v", n, err)
		}
		if err := CheckClientHeader(h, false, 0, 1<<16); err != nil {
			b.Fatal(err)
		}
		Unmask(h, buf[n:n+int(h.Length)])
	}
}
