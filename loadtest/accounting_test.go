package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// fakeNode speaks just enough of the metrocast protocol for the harness:
// ?cities= subscriptions, subscribed + initial_data, ingest lines acked with
// their seq, and data_update frames to every subscriber, except that it
// tampers with the stream of the first subscriber of tamperCity as told:
// drop skips seqs, dup sends seqs twice. Everything runs under one lock, so
// the stream is otherwise exact.
type fakeNode struct {
	ws, ingest net.Listener
	tamperCity string
	drop, dup  map[uint64]bool

	mu   sync.Mutex
	seq  map[string]uint64
	subs map[string][]net.Conn
	wg   sync.WaitGroup
}

func startFakeNode(t *testing.T, tamperCity string, drop, dup []uint64) *fakeNode {
	t.Helper()
	f := &fakeNode{tamperCity: tamperCity, drop: map[uint64]bool{}, dup: map[uint64]bool{},
		seq: map[string]uint64{}, subs: map[string][]net.Conn{}}
	for _, s := range drop {
		f.drop[s] = true
	}
	for _, s := range dup {
		f.dup[s] = true
	}
	var err error
	if f.ws, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if f.ingest, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	f.wg.Go(func() { f.accept(f.ws, f.serveWS) })
	f.wg.Go(func() { f.accept(f.ingest, f.serveIngest) })
	t.Cleanup(func() {
		_ = f.ws.Close()
		_ = f.ingest.Close()
		f.mu.Lock()
		for _, subs := range f.subs {
			for _, c := range subs {
				_ = c.Close()
			}
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *fakeNode) accept(ln net.Listener, serve func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		f.wg.Go(func() { serve(c) })
	}
}

func (f *fakeNode) serveWS(c net.Conn) {
	var city string
	u := ws.Upgrader{OnRequest: func(uri []byte) error {
		q, err := url.Parse(string(uri))
		if err == nil {
			city = q.Query().Get("cities")
		}
		return err
	}}
	if _, err := u.Upgrade(c); err != nil || city == "" {
		_ = c.Close()
		return
	}
	f.mu.Lock()
	seq := f.seq[city]
	f.send(c, fmt.Sprintf(`{"type":"subscribed","epoch":1,"cities":[{"city":%q,"seq":%d,"resumed":false}]}`, city, seq))
	f.send(c, fmt.Sprintf(`{"type":"initial_data","city":%q,"seq":%d,"epoch":1,"resumed":false,"timestamp":0,"data":{}}`, city, seq))
	f.subs[city] = append(f.subs[city], c)
	f.mu.Unlock()
	// Read until the client leaves; its frames (pongs, closes) are ignored.
	buf := make([]byte, 512)
	for {
		if _, err := c.Read(buf); err != nil {
			_ = c.Close()
			return
		}
	}
}

func (f *fakeNode) send(c net.Conn, msg string) {
	_ = ws.WriteFrame(c, ws.NewTextFrame([]byte(msg)))
}

func (f *fakeNode) serveIngest(c net.Conn) {
	defer c.Close()
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		var in struct {
			ID   string          `json:"id"`
			City string          `json:"city"`
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(sc.Bytes(), &in); err != nil {
			fmt.Fprintf(c, "{\"error\":%q}\n", err.Error())
			continue
		}
		f.mu.Lock()
		f.seq[in.City]++
		seq := f.seq[in.City]
		msg := fmt.Sprintf(`{"type":"data_update","city":%q,"seq":%d,"timestamp":0,"data":%s}`, in.City, seq, in.Data)
		for i, sub := range f.subs[in.City] {
			tamper := i == 0 && in.City == f.tamperCity
			if tamper && f.drop[seq] {
				continue
			}
			f.send(sub, msg)
			if tamper && f.dup[seq] {
				f.send(sub, msg)
			}
		}
		f.mu.Unlock()
		fmt.Fprintf(c, "{\"ack\":%q,\"seq\":%d}\n", in.ID, seq)
	}
}

// TestAccountingReportsInjectedLossAndDuplicates runs the steady scenario
// against a node that drops two frames and duplicates one for one client:
// the harness must report exactly that, and fail the checks.
func TestAccountingReportsInjectedLossAndDuplicates(t *testing.T) {
	f := startFakeNode(t, "lt-01", []uint64{3, 9}, []uint64{5})
	o := smoke(t, "steady")
	o.Addr, o.Ingest = f.ws.Addr().String(), f.ingest.Addr().String()
	o.Conns, o.Cities, o.Procs = 40, 4, 2 // two worker processes
	o.Rates = []float64{20}
	o.Duration, o.Warmup = 800*time.Millisecond, 0
	res := runScenario(t, o)

	a := res.Accounting["readers"]
	if a == nil || a.Clients != 40 {
		t.Fatalf("accounting: %+v", a)
	}
	if a.Lost != 2 || a.Dups != 1 || a.Late != 0 {
		t.Errorf("lost %d dups %d late %d; want 2, 1, 0", a.Lost, a.Dups, a.Late)
	}
	if a.Owed == 0 || a.Received != a.Owed-2 {
		t.Errorf("received %d of %d owed; want all but the 2 dropped", a.Received, a.Owed)
	}
	v := verdicts(res)
	if v["zero loss"] || v["no duplicates"] {
		t.Errorf("checks passed despite the injected loss and duplicate: %+v", res.Checks)
	}
	if res.passed() {
		t.Error("the run passed")
	}
}

// TestAccountingExact is the control: the same fake node without tampering
// gives a clean bill, with every owed frame received.
func TestAccountingExact(t *testing.T) {
	f := startFakeNode(t, "", nil, nil)
	o := smoke(t, "steady")
	o.Addr, o.Ingest = f.ws.Addr().String(), f.ingest.Addr().String()
	o.Conns, o.Cities = 40, 4
	o.Rates = []float64{20}
	o.Duration, o.Warmup = 500*time.Millisecond, 0
	res := runScenario(t, o)
	a := res.Accounting["readers"]
	if a.Lost != 0 || a.Dups != 0 || a.Owed == 0 || a.Received != a.Owed {
		t.Errorf("accounting %+v; want every owed frame received once", a)
	}
	// 40 clients over 4 cities: each frame is owed to 10 clients.
	if want := res.Publisher.Frames * 10; a.Owed != want {
		t.Errorf("owed %d, want %d (frames × subscribers per city)", a.Owed, want)
	}
	mustPass(t, res, "zero loss", "no duplicates", "in order", "protocol as documented")
	if res.Phases[0].Latency.Count != a.Received {
		t.Errorf("latency samples %d, want one per frame received (%d)", res.Phases[0].Latency.Count, a.Received)
	}
}
