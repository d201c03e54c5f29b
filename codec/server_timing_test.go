package codec

import (
	"testing"
)

var (
	benchData   = []byte(`{"temp":21.5,"humidity":63,"wind":{"speed":4.2,"dir":"NW"},"aqi":42,"updated":"2024-05-01T12:00:00Z"}`)
	benchAlerts = []byte(`[{"severity":"warning","message":"Strong winds expected after 18:00"},{"severity":"info","message":"Pollen count high"}]`)

	benchSink []byte
)

// BenchmarkAppendDataUpdate encodes a data_update frame into a reused
// buffer, once per message for all subscribers. It must not allocate.
//
// The encoders return the frame alone, which starts up to 8 bytes into
// the buffer: keep the buffer, not the frame, for the next message, or
// every reuse loses capacity.
func BenchmarkAppendDataUpdate(b *testing.B) {
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	b.SetBytes(int64(len(AppendDataUpdate(nil, "paris", 1, 1, benchData))))
	for i := uint64(0); b.Loop(); i++ {
		benchSink = AppendDataUpdate(buf[:0], "paris", i, 1700000000123, benchData)
	}
}

// BenchmarkAppendAlerts encodes an alerts frame into a reused buffer.
func BenchmarkAppendAlerts(b *testing.B) {
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	b.SetBytes(int64(len(AppendAlerts(nil, "paris", 1, 1, benchAlerts))))
	for i := uint64(0); b.Loop(); i++ {
		benchSink = AppendAlerts(buf[:0], "paris", i, 1700000000123, benchAlerts)
	}
}
