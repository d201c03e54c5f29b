package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/metrocast/metrocast/gateway"
	"github.com/metrocast/metrocast/gateway/internal/nodetest"
)

// TestClusterCityDrop drops a city idle on a cluster node and brings it
// back with the stream's next frame: a client resuming from before the
// drop is served the frames it missed from the stream, one that had read
// it all continues from the ring (the city came back complete after its
// last seq, kept through the drop), and a new one gets the whole state,
// kept too.
func TestClusterCityDrop(t *testing.T) {
	n := startNATS(t)
	s := startClusterNode(t, n.url(), gateway.Config{CityIdleTTL: time.Second})
	c, _ := subscribeCluster(t, s, "cities=cd", 1)
	p := s.producer(t)
	var seqs []uint64
	for i := range 3 {
		seqs = append(seqs, p.Publish(t, nodetest.DataLine("cd", "data_update", fmt.Sprintf(`{"old%d":%d}`, i, i))))
	}
	readFrames(t, c, 3)
	c.Close()
	nodetest.WaitFor(t, clusterTimeout, func() bool { return s.Stats().CitiesDropped == 1 })
	if st := s.Stats(); st.Cities != 0 || st.IdleStateMemory == 0 {
		t.Fatalf("after the drop: %d cities, %d bytes of kept states; want none, and the city's kept", st.Cities, st.IdleStateMemory)
	}
	seqs = append(seqs, p.Publish(t, nodetest.DataLine("cd", "data_update", `{"new":1}`)))
	nodetest.WaitFor(t, clusterTimeout, func() bool { return s.Stats().Cities == 1 })
	replays := s.bus.replays.Load()

	f := func(since uint64, want ...uint64) {
		t.Helper()
		c, sub := subscribeCluster(t, s, fmt.Sprintf("cities=cd&since=%d", since), 0)
		if !sub.Cities[0].Resumed {
			t.Fatalf("since %d: not resumed", since)
		}
		for i, fr := range readFrames(t, c, len(want)) {
			if fr.seq != want[i] {
				t.Fatalf("since %d: frame %d has seq %d, want %d", since, i, fr.seq, want[i])
			}
		}
	}
	f(seqs[0], seqs[1:]...) // from the stream, then the ring
	f(seqs[2], seqs[3])     // from the ring
	if got := s.bus.replays.Load() - replays; got != 1 {
		t.Fatalf("%d resumes served from the stream, want 1: the city came back complete after seq %d only", got, seqs[2])
	}
	c, sub := subscribeCluster(t, s, "cities=cd", 0)
	if sub.Cities[0].Resumed {
		t.Fatal("a new subscriber resumed")
	}
	if m := nodetest.ReadType(t, c, "initial_data"); m.Seq != seqs[3] || string(m.Data) != `{"new":1,"old0":0,"old1":1,"old2":2}` {
		t.Fatalf("a new subscriber got %s, want the whole state at seq %d", m.Raw, seqs[3])
	}
}

// initialOf subscribes to city on s and returns the initial_data it is
// sent.
func initialOf(t testing.TB, s *node, city string) nodetest.Msg {
	t.Helper()
	c := nodetest.DialGobwas(t, s.ws("cities="+city))
	defer c.Close()
	nodetest.ReadType(t, c, "subscribed")
	return nodetest.ReadType(t, c, "initial_data")
}

// appliedOn waits until every node has applied the stream up to seq.
func appliedOn(t testing.TB, seq uint64, nodes ...*node) {
	t.Helper()
	nodetest.WaitFor(t, clusterTimeout, func() bool {
		for _, s := range nodes {
			if s.bus.applied.Load() < seq {
				return false
			}
		}
		return true
	})
}

// TestClusterCityDropSameState drops a city on one of two nodes (its
// city_idle_ttl is a second, the other's an hour): the two then serve the
// same initial_data for it, byte for byte, when a subscription brings it
// back and after its next frame, as any node must serve the same stream.
func TestClusterCityDropSameState(t *testing.T) {
	n := startNATS(t)
	a := startClusterNode(t, n.url(), gateway.Config{CityIdleTTL: time.Second})
	b := startClusterNode(t, n.url(), gateway.Config{})
	p := b.producer(t)
	p.Publish(t, nodetest.DataLine("same", "snapshot", `{"a":1,"b":1}`))
	p.Publish(t, nodetest.DataLine("same", "data_update", `{"b":2,"c":3}`))
	p.Publish(t, nodetest.AlertLine("same", "warning"))
	last := p.Publish(t, nodetest.DataLine("same", "data_update", `{"d":4}`))
	appliedOn(t, last, a, b)
	nodetest.WaitFor(t, clusterTimeout, func() bool { return a.Stats().CitiesDropped == 1 })

	same := func(seq uint64, data string) {
		t.Helper()
		ma, mb := initialOf(t, a, "same"), initialOf(t, b, "same")
		if string(ma.Raw) != string(mb.Raw) {
			t.Fatalf("the nodes serve different initial_data:\n%s (dropped the city)\n%s", ma.Raw, mb.Raw)
		}
		if ma.Seq != seq || string(ma.Data) != data || len(ma.Recent) != 1 {
			t.Fatalf("initial_data %s, want seq %d, data %s and the alert", ma.Raw, seq, data)
		}
	}
	same(last, `{"a":1,"b":2,"c":3,"d":4}`)
	if got := a.Stats().IdleStatesRestored; got != 1 {
		t.Fatalf("%d cities restored, want 1", got)
	}
	next := p.Publish(t, nodetest.DataLine("same", "data_update", `{"e":5}`))
	appliedOn(t, next, a, b)
	same(next, `{"a":1,"b":2,"c":3,"d":4,"e":5}`)
}

// TestClusterCityDropPartial drops a city on a node whose
// idle_state_memory cannot hold its state: the state is let go of, a mark
// left, and the city comes back at the seq the other node serves, with
// what came since and "partial":true, until a snapshot makes the two
// nodes serve the same again.
func TestClusterCityDropPartial(t *testing.T) {
	n := startNATS(t)
	a := startClusterNode(t, n.url(), gateway.Config{CityIdleTTL: time.Second, IdleStateMemory: 1024})
	b := startClusterNode(t, n.url(), gateway.Config{})
	p := b.producer(t)
	pad := strings.Repeat("x", 2048)
	p.Publish(t, nodetest.DataLine("part", "data_update", `{"pad":"`+pad+`"}`))
	last := p.Publish(t, nodetest.DataLine("part", "data_update", `{"v":1}`))
	appliedOn(t, last, a, b)
	nodetest.WaitFor(t, clusterTimeout, func() bool { return a.Stats().IdleStatesEvicted == 1 })
	if st := a.Stats(); st.IdleStatesForgotten != 0 || st.IdleStateMemory > 1024 {
		t.Fatalf("forgotten %d, holding %d bytes: want the mark kept within 1024", st.IdleStatesForgotten, st.IdleStateMemory)
	}

	f := func(seq uint64, data string) {
		t.Helper()
		ma, mb := initialOf(t, a, "part"), initialOf(t, b, "part")
		if ma.Seq != seq || mb.Seq != seq || string(ma.Data) != data || !strings.Contains(string(ma.Raw), `"partial":true`) {
			t.Fatalf("initial_data %s, want seq %d (as the other node's), data %s, partial", ma.Raw, seq, data)
		}
		if strings.Contains(string(mb.Raw), "partial") || !strings.Contains(string(mb.Data), pad) {
			t.Fatalf("the node that kept the city serves %s", mb.Raw)
		}
	}
	f(last, `{}`)
	next := p.Publish(t, nodetest.DataLine("part", "data_update", `{"w":2}`))
	appliedOn(t, next, a, b)
	f(next, `{"w":2}`)

	snap := p.Publish(t, nodetest.DataLine("part", "snapshot", `{"s":1}`))
	appliedOn(t, snap, a, b)
	ma, mb := initialOf(t, a, "part"), initialOf(t, b, "part")
	if string(ma.Raw) != string(mb.Raw) || ma.Seq != snap || string(ma.Data) != `{"s":1}` || strings.Contains(string(ma.Raw), "partial") {
		t.Fatalf("after a snapshot the nodes serve\n%s\n%s\nwant both the snapshot at seq %d, whole", ma.Raw, mb.Raw, snap)
	}
}
