package cluster

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/metrocast/metrocast/gateway"
	"github.com/metrocast/metrocast/gateway/internal/nodetest"
)

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
	ns, a, bn := presenceCluster(b, 10*time.Minute, func(c *gateway.Config) { c.AuthTimeout = 400 * time.Millisecond })
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
		tokens[i] = token(b, fmt.Sprintf("stormer-%03d", i))
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
		conns := make([]nodetest.Client, storm)
		for i, tok := range tokens {
			conns[i] = nodetest.MustDialAuth(b, bn.ws(""), nodetest.Bearer(tok))
			nodetest.Send(b, conns[i], `{"type":"subscribe","cities":["storm"],"presence":true}`)
		}
		for _, c := range conns {
			nodetest.ReadType(b, c, "subscribed")
			c.Close()
		}
		nodetest.WaitFor(b, clusterTimeout, func() bool { return bn.Stats().Connections == int64(markers) })
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
