package codec

import (
	"testing"
)

// BenchmarkParseClientMessage parses a subscribe message with resume
// positions and a filter.
func BenchmarkParseClientMessage(b *testing.B) {
	msg := []byte(`{"type":"subscribe","cities":["paris","berlin","new-york"],"since":{"paris":1200,"berlin":877},` +
		`"epoch":1714564800,"filters":{"types":["data_update","alerts"],"minSeverity":"warning"}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := ParseClientMessage(msg); err != nil {
			b.Fatal(err)
		}
	}
}
