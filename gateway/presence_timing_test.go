package gateway

import (
	"fmt"
	"testing"
	"time"

	"github.com/metrocast/metrocast/codec"
)

// BenchmarkPresenceShare: what a node spends on another node's share of
// 1,000 users as it arrives from the bucket, when it only refreshes the
// share (hashed, renewed) and when one user in it changed (parsed,
// applied, flushed).
func BenchmarkPresenceShare(b *testing.B) {
	users := make([]string, codec.MaxShareUsers)
	for i := range users {
		users[i] = fmt.Sprintf("user-%04d", i)
	}
	same := codec.AppendPresenceShare(nil, users, 0)
	users[0] = "user-new"
	changed := codec.AppendPresenceShare(nil, users, 0)
	for _, bc := range []struct {
		name  string
		share func(i int) []byte
	}{
		{"refresh", func(int) []byte { return same }},
		{"one-changed", func(i int) []byte {
			if i%2 == 0 {
				return same
			}
			return changed
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := New(Config{Insecure: true})
			if err != nil {
				b.Fatal(err)
			}
			n := &Node{s: s}
			b.ReportAllocs()
			b.SetBytes(int64(len(same)))
			for i := 0; b.Loop(); i++ {
				if err := n.SharePresence("c", "n1", bc.share(i), time.Time{}); err != nil {
					b.Fatal(err)
				}
				s.hub.lookup("c").presence.flush("c")
			}
		})
	}
}
