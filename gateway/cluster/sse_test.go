package cluster

import (
	"fmt"
	"testing"

	"github.com/metrocast/metrocast/gateway"
	"github.com/metrocast/metrocast/gateway/internal/nodetest"
)

// TestSSEClusterResume follows two cities over SSE on one node, which
// drains; the stream resumes by its Last-Event-ID alone on the other
// nodes: one whose ring holds the missed frames, and one started late
// whose ring does not (served from the stream). Every city continues
// after its last seq with no gap and no duplicate.
func TestSSEClusterResume(t *testing.T) {
	n := startNATS(t)
	a := startClusterNode(t, n.url(), gateway.Config{})
	b := startClusterNode(t, n.url(), gateway.Config{})
	sc := a.sse(t, "/sse?cities=ca,cb")
	sc.NextType(t, "subscribed")
	sc.NextType(t, "initial_data")
	sc.NextType(t, "initial_data")
	p := b.producer(t)
	acked := map[string][]uint64{}
	publish := func(k int) {
		for i := range k {
			city := []string{"ca", "cb"}[i%2]
			acked[city] = append(acked[city], p.Publish(t, nodetest.DataLine(city, "data_update", fmt.Sprintf(`{"n":%d}`, len(acked[city])))))
		}
	}
	publish(10)
	seen := map[string]int{}
	for range 6 {
		ev := sc.NextType(t, "data_update")
		if want := acked[ev.Msg.City][seen[ev.Msg.City]]; ev.Msg.Seq != want {
			t.Fatalf("%s, want seq %d", ev.Data, want)
		}
		seen[ev.Msg.City]++
	}
	// The client resumes from here (the frames after it are lost).
	last := sc.LastID
	go func() { _ = a.Drain(t.Context(), 0) }()
	for {
		if ev := sc.Next(t); ev.Type == "reconnect" {
			if ev.Retry < 0 {
				t.Fatalf("reconnect without retry: %s", ev.Data)
			}
			break
		}
	}
	sc.ExpectEnd(t)
	publish(10)
	late := startClusterNode(t, n.url(), gateway.Config{RingSize: 4})
	publish(10)

	for _, s := range []*node{b, late} {
		rc := s.sse(t, "/sse?cities=ca,cb", "Last-Event-ID: "+last+"\r\n")
		sub := rc.NextType(t, "subscribed")
		if !sub.Msg.Cities[0].Resumed || !sub.Msg.Cities[1].Resumed {
			t.Fatalf("subscribed %s, want both resumed", sub.Data)
		}
		next := map[string]int{"ca": seen["ca"], "cb": seen["cb"]}
		for range 30 - 6 {
			ev := rc.Next(t)
			i := next[ev.Msg.City]
			if ev.Type != "data_update" || i >= len(acked[ev.Msg.City]) || ev.Msg.Seq != acked[ev.Msg.City][i] ||
				string(ev.Msg.Data) != fmt.Sprintf(`{"n":%d}`, i) {
				t.Fatalf("%s: %s, want %s's frame %d", s.Addr(), ev.Data, ev.Msg.City, i)
			}
			next[ev.Msg.City]++
		}
		rc.Close()
	}
	if late.bus.replays.Load() == 0 {
		t.Fatal("the late node did not serve the resume from the stream")
	}
}
