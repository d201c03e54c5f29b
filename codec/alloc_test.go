package codec

import (
	"bytes"
	"testing"

	"github.com/gobwas/ws"
)

// TestHotPathAllocs guards the zero-allocation paths that run per frame or
// per message: reading a client frame header and encoding a city frame into
// a buffer with room. See BenchmarkFrameHeaderUnmask and
// BenchmarkAppendDataUpdate.
func TestHotPathAllocs(t *testing.T) {
	f := func(name string, fn func()) {
		t.Helper()
		if n := testing.AllocsPerRun(100, fn); n != 0 {
			t.Fatalf("%s: %v allocs per run, want 0", name, n)
		}
	}
	frame := clientFrame(true, ws.OpText, bytes.Repeat([]byte("x"), 100))
	var p FrameParser
	f("FrameParser.Header+Unmask", func() {
		h, n, err := p.Header(frame)
		if err != nil || n == 0 {
			panic("BUG: cannot parse the frame header")
		}
		if err := CheckClientHeader(h, false, 0, 1<<16); err != nil {
			panic(err)
		}
		Unmask(h, frame[n:])
	})

	buf := make([]byte, 0, 1024)
	f("AppendDataUpdate", func() { benchSink = AppendDataUpdate(buf[:0], "paris", 1, 2, benchData) })
	f("AppendAlerts", func() { benchSink = AppendAlerts(buf[:0], "paris", 1, 2, benchAlerts) })
	f("AppendError", func() { benchSink = AppendError(buf[:0], "bad_json", "paris", "cannot parse") })
	f("AppendSubscribed", func() {
		benchSink = AppendSubscribed(buf[:0], "subscribed", 1, []SubscribedCity{{City: "paris", Seq: 4}})
	})
	f("AppendClose", func() { benchSink = AppendClose(buf[:0], ws.StatusGoingAway, "shutting down") })
}
