package cluster

import (
	"fmt"
	"strings"
	"testing"

	"github.com/metrocast/metrocast/gateway"
	"github.com/metrocast/metrocast/gateway/internal/nodetest"
)

// TestStateBounded checks that a city's state stays within what one
// snapshot may carry (IngestMaxLineBytes): a data_update that would grow
// it past is refused before its ack, saying what to do, while updates of
// the members it holds go on, and a snapshot makes room again; on a single
// node and on a cluster's.
func TestStateBounded(t *testing.T) {
	t.Parallel()
	const max = 4096
	nats := startNATS(t)
	for name, s := range map[string]*node{
		"single":  startNode(t, Config{}, gateway.Config{IngestMaxLineBytes: max}),
		"cluster": startClusterNode(t, nats.url(), gateway.Config{IngestMaxLineBytes: max}),
	} {
		t.Run(name, func(t *testing.T) {
			c := nodetest.DialGorilla(t, s.ws("cities=sb"))
			nodetest.ReadType(t, c, "subscribed")
			nodetest.ReadType(t, c, "initial_data")
			p := s.producer(t)
			member := func(i int) string { return fmt.Sprintf(`{"m%03d":"%s"}`, i, strings.Repeat("v", 90)) }
			stored := func(data string) {
				t.Helper()
				seq := p.Publish(t, nodetest.DataLine("sb", "data_update", data))
				// The state grows when the frame is applied (in cluster
				// mode, back from the stream).
				if m := nodetest.ReadType(t, c, "data_update"); m.Seq != seq {
					t.Fatalf("%s, want seq %d", m.Raw, seq)
				}
			}
			i := 0
			for ; ; i++ {
				p.Write(t, nodetest.DataLine("sb", "data_update", member(i)))
				a := p.Answer(t)
				if a.Error != "" {
					if !strings.Contains(a.Error, "send a snapshot") {
						t.Fatalf("line %d: %+v, want the state bound", i, a)
					}
					break
				}
				if m := nodetest.ReadType(t, c, "data_update"); m.Seq != a.Seq {
					t.Fatalf("%s, want seq %d", m.Raw, a.Seq)
				}
				if i > max/90 {
					t.Fatalf("%d members of 90 bytes taken in a state of at most %d", i+1, max)
				}
			}
			if i < max/100-1 {
				t.Fatalf("refused after %d members of ~100 bytes, want about %d", i, max/100)
			}
			stored(member(0)) // a member it holds: the state does not grow
			c2 := nodetest.DialGorilla(t, s.ws("cities=sb"))
			nodetest.ReadType(t, c2, "subscribed")
			if m := nodetest.ReadType(t, c2, "initial_data"); len(m.Data) > max {
				t.Fatalf("initial_data carries %d bytes of state, over %d", len(m.Data), max)
			}
			seq := p.Publish(t, nodetest.DataLine("sb", "snapshot", `{"fresh":1}`))
			if m := nodetest.ReadType(t, c, "initial_data"); m.Seq != seq {
				t.Fatalf("%s, want the snapshot at seq %d", m.Raw, seq)
			}
			stored(member(i))
		})
	}
}
