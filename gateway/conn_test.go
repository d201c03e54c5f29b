package gateway

import (
	"testing"
	"unsafe"
)

// TestConnSize keeps conn within the 128-byte allocation class: tens of
// thousands of idle connections hold one each, so a field that pushes it
// over costs 16 bytes or more per connection.
func TestConnSize(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 128 {
		t.Fatalf("conn is %d bytes, over the 128-byte size class", n)
	}
}
