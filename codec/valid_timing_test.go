package codec

import "testing"

// BenchmarkCheckJSON checks the ingest line of BenchmarkParseIngest, which
// ParseIngest does before sonic picks its fields.
func BenchmarkCheckJSON(b *testing.B) {
	line := []byte(`{"city":"paris","type":"data_update","id":"m-000001","timestamp":1714564800123,` +
		`"data":{"temp":21.5,"humidity":63,"wind":{"speed":4.2,"dir":"NW"},"aqi":42,"updated":"2024-05-01T12:00:00Z"}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		if err := CheckJSON(line); err != nil {
			b.Fatal(err)
		}
	}
}
