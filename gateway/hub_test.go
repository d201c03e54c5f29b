package gateway

import (
	"testing"
	"unsafe"
)

// TestShardSizes holds the lock shards to shardSize, so that two shards'
// locks never share a cache line (they were documented as padded to one
// and measured 72 and 56 bytes, which put neighbours' locks on one line).
func TestShardSizes(t *testing.T) {
	f := func(name string, size uintptr) {
		t.Helper()
		if size != shardSize {
			t.Errorf("%s is %d bytes, want %d: fix its padding", name, size, shardSize)
		}
	}
	f("hubShard", unsafe.Sizeof(hubShard{}))
	f("ipShard", unsafe.Sizeof(ipShard{}))
	var h hub
	f("hub.shards stride", uintptr(unsafe.Pointer(&h.shards[1]))-uintptr(unsafe.Pointer(&h.shards[0])))
	var l ipLimiter
	f("ipLimiter.shards stride", uintptr(unsafe.Pointer(&l.shards[1]))-uintptr(unsafe.Pointer(&l.shards[0])))
}
