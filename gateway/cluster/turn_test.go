package cluster

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/metrocast/metrocast/gateway"
	"github.com/metrocast/metrocast/gateway/ingest"
	"github.com/metrocast/metrocast/gateway/internal/nodetest"
)

// TestClusterAcksAwaitedOutsideTurn holds JetStream's acks back (a proxy
// between the node and NATS passes what the node sends and holds the
// answers) while 17 producers pipeline 250 lines each: the node publishes
// until maxPendingAcks lines await an ack, and the other lines wait for a
// slot, none refused. They wait outside the ingest turn: another
// producer's lines are read and answered meanwhile, before any line
// awaiting an ack (bad lines here, which need none). Once NATS answers, every line is acked in line
// order, each producer's seqs increasing, and the other producer's next
// line is stored.
func TestClusterAcksAwaitedOutsideTurn(t *testing.T) {
	const producers, lines = 17, 250
	if producers*lines <= maxPendingAcks || lines >= ingest.MaxInFlight {
		t.Fatalf("%d producers × %d lines do not fill maxPendingAcks (%d) with fewer than ingest.MaxInFlight (%d) each",
			producers, lines, maxPendingAcks, ingest.MaxInFlight)
	}
	n := startNATS(t)
	proxy := startGatedProxy(t, strings.TrimPrefix(n.url(), "nats://"))
	a := startClusterNode(t, proxy.url(), gateway.Config{})
	proxy.setMute(true)
	ps := make([]*nodetest.Producer, producers)
	for i := range ps {
		ps[i] = a.producer(t)
		batch := make([]string, lines)
		for j := range batch {
			batch[j] = fmt.Sprintf(`{"id":"await-%d-%d","city":"await-%d","type":"data_update","data":{"j":%d}}`, i, j, i, j)
		}
		ps[i].Write(t, batch...)
	}
	nodetest.WaitFor(t, clusterTimeout, func() bool { return a.bus.js.PublishAsyncPending() == maxPendingAcks })

	other := a.producer(t)
	other.Write(t, "not json", `{"city":"await-x","type":"nope","data":{}}`)
	for i := range 2 {
		ans, raw := answerWithin(t, other, clusterTimeout)
		if ans.Error == "" || ans.Line != i+1 || strings.Contains(raw, `"retry"`) {
			t.Fatalf("nodetest.Answer %d: %s, want the error of line %d", i, raw, i+1)
		}
	}
	// Before the acks could time out, and no line refused: lines that wait
	// for a slot wait (with their producer), they do not fail.
	if got := a.bus.js.PublishAsyncPending(); got != maxPendingAcks {
		t.Fatalf("%d lines await an ack after the other producer's answers, want %d: those came after acks or time-outs", got, maxPendingAcks)
	}
	if got := a.bus.publishErrors.Load(); got != 0 {
		t.Fatalf("%d lines failed to publish while the acks were held", got)
	}
	for i, p := range ps {
		_ = p.C.SetReadDeadline(time.Now())
		if b, err := p.BR.Peek(1); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("producer %d was answered (%q, %v) while its lines await acks", i, b, err)
		}
	}

	proxy.setMute(false)
	for i, p := range ps {
		var last uint64
		for j := range lines {
			ans, raw := answerWithin(t, p, clusterTimeout)
			if ans.Ack != fmt.Sprintf("await-%d-%d", i, j) || ans.Seq <= last {
				t.Fatalf("producer %d, nodetest.Answer %d: %s after seq %d", i, j, raw, last)
			}
			last = ans.Seq
		}
	}
	other.Publish(t, nodetest.DataLine("await-x", "data_update", `{"v":1}`))
}
