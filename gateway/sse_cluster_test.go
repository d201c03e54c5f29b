package gateway

import (
	"fmt"
	"testing"
)

// TestSSEClusterResume follows two cities over SSE on one node, which
// drains; the stream resumes by its Last-Event-ID alone on the other
// nodes: one whose ring holds the missed frames, and one started late
// whose ring does not (served from the stream). Every city continues
// after its last seq with no gap and no duplicate.
func TestSSEClusterResume(t *testing.T) {
	n := startNATS(t)
	a := startClusterNode(t, n.url(), Config{})
	b := startClusterNode(t, n.url(), Config{})
	sc := dialSSE(t, a, "/sse?cities=ca,cb")
	sc.nextType(t, "subscribed")
	sc.nextType(t, "initial_data")
	sc.nextType(t, "initial_data")
	p := dialProducer(t, b)
	acked := map[string][]uint64{}
	publish := func(k int) {
		for i := range k {
			city := []string{"ca", "cb"}[i%2]
			acked[city] = append(acked[city], p.publish(t, dataLine(city, "data_update", fmt.Sprintf(`{"n":%d}`, len(acked[city])))))
		}
	}
	publish(10)
	seen := map[string]int{}
	for range 6 {
		ev := sc.nextType(t, "data_update")
		if want := acked[ev.msg.City][seen[ev.msg.City]]; ev.msg.Seq != want {
			t.Fatalf("%s, want seq %d", ev.data, want)
		}
		seen[ev.msg.City]++
	}
	// The client resumes from here (the frames after it are lost).
	last := sc.lastID
	go func() { _ = a.Drain(t.Context(), 0) }()
	for {
		if ev := sc.next(t); ev.typ == "reconnect" {
			if ev.retry < 0 {
				t.Fatalf("reconnect without retry: %s", ev.data)
			}
			break
		}
	}
	sc.expectEnd(t)
	publish(10)
	late := startClusterNode(t, n.url(), Config{RingSize: 4})
	publish(10)

	for _, s := range []*Server{b, late} {
		rc := dialSSE(t, s, "/sse?cities=ca,cb", "Last-Event-ID: "+last+"\r\n")
		sub := rc.nextType(t, "subscribed")
		if !sub.msg.Cities[0].Resumed || !sub.msg.Cities[1].Resumed {
			t.Fatalf("subscribed %s, want both resumed", sub.data)
		}
		next := map[string]int{"ca": seen["ca"], "cb": seen["cb"]}
		for range 30 - 6 {
			ev := rc.next(t)
			i := next[ev.msg.City]
			if ev.typ != "data_update" || i >= len(acked[ev.msg.City]) || ev.msg.Seq != acked[ev.msg.City][i] ||
				string(ev.msg.Data) != fmt.Sprintf(`{"n":%d}`, i) {
				t.Fatalf("%s: %s, want %s's frame %d", s.Addr(), ev.data, ev.msg.City, i)
			}
			next[ev.msg.City]++
		}
		rc.close()
	}
	if clusterOf(late).replays.Load() == 0 {
		t.Fatal("the late node did not serve the resume from the stream")
	}
}
