package main

import (
	"testing"
	"time"

	"github.com/metrocast/metrocast/loadtest/result"
)

// The smoke versions of the scenarios run against the real node binary,
// spawned for each run: a few hundred connections for about a second per
// phase. They check what must hold anywhere (accounting, protocol); the
// latency targets are for the bench on a quiet machine.

var accountingChecks = []string{"every connection up", "no connection dropped", "ingest accepted every frame",
	"zero loss", "no duplicates", "in order", "protocol as documented"}

func TestSmokeConnectStorm(t *testing.T) {
	o := smoke(t, "connect-storm")
	o.Spawn = nodeBinary(t)
	o.Conns, o.ConnRate, o.Procs = 400, 1000, 2
	o.Duration = 200 * time.Millisecond
	res := runScenario(t, o)
	mustPass(t, res, "every connection up", "no connection dropped")
	c := res.Connect
	if c.Latency.Count != 400 || c.Latency.P50 <= 0 {
		t.Errorf("connect latency %+v: want 400 samples", c.Latency)
	}
	// 400 connections at 1,000/s take at least 0.4 s: the ramp is paced.
	if c.Seconds < 0.35 {
		t.Errorf("400 connections at 1000/s took %.2fs: not rate-limited", c.Seconds)
	}
	if res.Node == nil || res.Node.RSSConnected == 0 {
		t.Errorf("node figures missing: %+v", res.Node)
	}
}

func TestSmokeSteady(t *testing.T) {
	o := smoke(t, "steady")
	o.Spawn = nodeBinary(t)
	o.Rates = []float64{10, 20}
	o.Subscribe = "auth"
	o.Progress = 100 * time.Millisecond // the progress line, to io.Discard
	res := runScenario(t, o)
	mustPass(t, res, accountingChecks...)
	if len(res.Phases) != 3 {
		t.Fatalf("%d phases, want warmup + 2 rates", len(res.Phases))
	}
	for _, p := range res.Phases[1:] {
		// Every frame is owed to 50 clients (300 over 6 cities).
		if p.Deliveries != p.Frames*50 || p.Latency.Count != p.Deliveries {
			t.Errorf("phase %s: %d frames, %d deliveries, %d latency samples; want 50 deliveries per frame, one sample each",
				p.Name, p.Frames, p.Deliveries, p.Latency.Count)
		}
	}
}

func TestSmokeChurn(t *testing.T) {
	o := smoke(t, "churn")
	o.Spawn = nodeBinary(t)
	o.Rates = []float64{20}
	o.ChurnRate = 300
	o.Procs = 2
	res := runScenario(t, o)
	mustPass(t, res, append(accountingChecks, "clients reconnected", "every resume served from the ring")...)
	a := res.Accounting["readers"]
	if a.Dials < uint64(o.Conns)+200 || a.Resumes+uint64(o.Conns) != a.Dials {
		t.Errorf("%d dials, %d resumes: want ~300 reconnects, each resumed", a.Dials, a.Resumes)
	}
	if res.Reconnect == nil || res.Reconnect.Count != a.Resumes {
		t.Errorf("reconnect latency %+v: want one sample per resume", res.Reconnect)
	}
}

// TestSmokeChurnCluster: the same against two nodes on one NATS JetStream
// server (-nodes 2): clients spread over both, each reconnect moves to the
// other node and resumes there; the cities' seqs are the stream's, which
// skip, and the accounting still comes out exact.
func TestSmokeChurnCluster(t *testing.T) {
	o := smoke(t, "churn")
	o.Spawn = nodeBinary(t)
	o.Nodes = 2
	o.Rates = []float64{20}
	o.ChurnRate = 300
	res := runScenario(t, o)
	mustPass(t, res, append(accountingChecks, "clients reconnected", "every resume served from the ring")...)
	a := res.Accounting["readers"]
	if a.Resumes < 200 || a.Resumes+uint64(o.Conns) != a.Dials {
		t.Errorf("%d dials, %d resumes: want ~300 reconnects, each resumed on the other node", a.Dials, a.Resumes)
	}
	if res.Node == nil || len(res.Node.Pids) != 2 {
		t.Errorf("node figures %+v: want both nodes'", res.Node)
	}
}

func TestSmokeSlowConsumers(t *testing.T) {
	o := smoke(t, "slow-consumers")
	o.Spawn = nodeBinary(t)
	// A small send buffer, backlog and ring make the node stall and then
	// conflate the slow clients within the second they stop reading.
	o.ServerArgs = "-socket-send-buffer 8192 -max-backlog-bytes 16384 -ring-size 32"
	o.Rates = []float64{60}
	o.Payload = 2048
	o.SlowShare = 0.2
	res := runScenario(t, o)
	mustPass(t, res, append(accountingChecks, "slow clients: every frame delivered or conflated")...)
	s := res.Accounting["slow"]
	if s == nil || s.Clients != 60 || s.Resyncs == 0 || s.Skipped == 0 {
		t.Errorf("slow clients %+v: want 60, conflated", s)
	}
	if r := res.Accounting["readers"]; r.Resyncs != 0 {
		t.Errorf("%d readers conflated: only slow clients should be", r.Resyncs)
	}
}

func TestSmokeSpike(t *testing.T) {
	o := smoke(t, "spike")
	o.Spawn = nodeBinary(t)
	o.Duration, o.SpikeDuration = 500*time.Millisecond, 500*time.Millisecond
	res := runScenario(t, o)
	mustPass(t, res, accountingChecks...)
	var spike *result.Phase
	for _, p := range res.Phases {
		if p.Name == "spike" {
			spike = p
		}
	}
	if spike == nil || spike.RatePerCity != 10*o.Rates[0] || spike.Deliveries != spike.Frames*50 {
		t.Errorf("spike phase %+v: want 10× the rate, every frame delivered", spike)
	}
}

// TestSmokeFlood: four producers flood the node while 300 clients are
// fed; every check but the latency targets must hold, and the flood must
// have been served (acked) by every producer.
func TestSmokeFlood(t *testing.T) {
	o := smoke(t, "flood")
	o.Spawn = nodeBinary(t)
	o.FloodProducers = 4
	res := runScenario(t, o)
	mustPass(t, res, append(accountingChecks, "flood: no line refused", "flood: every producer served")...)
	if len(res.Phases) != 3 || res.Phases[2].Name != "flood" {
		t.Fatalf("phases %v: want warmup, baseline, flood", res.Phases)
	}
	if f := res.Flood; f == nil || f.Producers != 4 || f.Acked == 0 {
		t.Errorf("flood figures %+v: want 4 producers' acked lines", f)
	}
}

func TestSmokeIdle(t *testing.T) {
	o := smoke(t, "idle")
	o.Spawn = nodeBinary(t)
	o.Duration = 200 * time.Millisecond
	res := runScenario(t, o)
	mustPass(t, res, "every connection up", "no connection dropped")
	if n := res.Node; n == nil || n.RSSPerConn <= 0 {
		t.Errorf("node figures %+v: want RSS per connection", n)
	}
}

func TestSmokePublish(t *testing.T) {
	o := smoke(t, "publish")
	o.Spawn = nodeBinary(t)
	o.Rates = []float64{20}
	o.Duration = 300 * time.Millisecond
	o.Progress = 100 * time.Millisecond
	res := runScenario(t, o)
	mustPass(t, res, "ingest accepted every frame")
	// 20 frames/s for each of 6 cities for 0.3 s.
	if f := res.Publisher.Frames; f < 30 || f > 40 {
		t.Errorf("%d frames published, want 36", f)
	}
}

// TestSweepStops checks that a steady sweep skips the rates after the first
// one over -sweep-stop (here every rate is: any latency is over 1ns).
func TestSweepStops(t *testing.T) {
	f := startFakeNode(t, "", nil, nil)
	o := smoke(t, "steady")
	o.Addr, o.Ingest = f.ws.Addr().String(), f.ingest.Addr().String()
	o.Conns, o.Cities, o.Warmup = 20, 2, 0
	o.Rates = []float64{10, 20, 40}
	o.Duration = 300 * time.Millisecond
	o.SweepStop = time.Nanosecond
	res := runScenario(t, o)
	if len(res.Phases) != 1 || res.Phases[0].Name != "rate=10" {
		t.Fatalf("phases %v: want rate=10 alone", res.Phases)
	}
	mustPass(t, res, "zero loss", "no duplicates")
}
