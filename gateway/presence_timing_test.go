package gateway

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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

// BenchmarkClusterPresenceStorm: a reconnect storm on one node, seen from
// the other. Each op, 300 users connect to node b with presence and all
// leave again; then one more user (the op's marker) joins b and stays, so
// that the 20 watchers on node a know the storm has gone by. Reported per
// op: the presence messages each watcher received (the marker's join
// included) and the writes to the presence bucket — bounded by ticks, not
// by users. The nodes tick every 100 ms (a quarter of a 400 ms auth
// time-out, which these clients, with a token at the upgrade, never meet)
// instead of every second, so that an op, which waits a tick on each
// node, takes 0.2 s instead of 2 s; a storm spans more ticks so.
func BenchmarkClusterPresenceStorm(b *testing.B) {
	const watchers, storm = 20, 300
	ns, a, bn := presenceCluster(b, 10*time.Minute, func(c *Config) { c.AuthTimeout = 400 * time.Millisecond })
	views := make([]*view, watchers)
	names := make([]string, watchers)
	for i := range views {
		names[i] = fmt.Sprintf("watcher-%02d", i)
		views[i] = watch(b, a, names[i], "storm")
	}
	for _, v := range views {
		v.until(watchers, names...)
		v.msgs = 0
	}
	tokens := make([]string, storm)
	for i := range tokens {
		tokens[i] = hs256(b, claims(fmt.Sprintf("stormer-%03d", i), time.Hour, "*"))
	}
	kv := presenceKV(b, ns, a)
	writes := func() uint64 {
		st, err := kv.Status(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		return st.(*jetstream.KeyValueBucketStatus).StreamInfo().State.LastSeq
	}
	first := writes()
	markers := 0
	want := slices.Clone(names)
	for b.Loop() {
		conns := make([]client, storm)
		for i, tok := range tokens {
			conns[i] = mustDialAuth(b, wsURL(bn, ""), bearer(tok))
			send(b, conns[i], `{"type":"subscribe","cities":["storm"],"presence":true}`)
		}
		for _, c := range conns {
			readType(b, c, "subscribed")
			c.Close()
		}
		waitFor(b, clusterTimeout, func() bool { return bn.open.Load() == int64(markers) })
		marker := fmt.Sprintf("marker-%03d", markers)
		watch(b, bn, marker, "storm")
		markers++
		want = append(want, marker)
		slices.Sort(want)
		for _, v := range views {
			v.until(len(want), want...)
		}
	}
	msgs := 0
	for _, v := range views {
		msgs += v.msgs
	}
	b.ReportMetric(float64(msgs)/watchers/float64(b.N), "msgs/watcher/op")
	b.ReportMetric(float64(writes()-first)/float64(b.N), "bucket-writes/op")
}
