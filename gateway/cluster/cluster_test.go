package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/metrocast/metrocast/gateway"
	"github.com/metrocast/metrocast/gateway/internal/nodetest"
)

// natsNode is an embedded NATS server with JetStream, restartable on the
// same port and store directory.
type natsNode struct {
	t    testing.TB
	dir  string
	port int
	ns   *natsserver.Server
}

// startNATS starts a NATS server with JetStream on a free loopback port,
// its store in a fresh directory, and stops it when the test ends.
func startNATS(t testing.TB) *natsNode {
	t.Helper()
	n := &natsNode{t: t, dir: t.TempDir(), port: -1}
	n.start()
	t.Cleanup(n.stop)
	return n
}

func (n *natsNode) start() {
	n.t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{
		Host:      "127.0.0.1",
		Port:      n.port,
		JetStream: true,
		StoreDir:  n.dir,
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		n.t.Fatalf("cannot create NATS server: %s", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(clusterTimeout) {
		n.t.Fatalf("NATS server not ready within %s", clusterTimeout)
	}
	n.ns = ns
	n.port = ns.Addr().(*net.TCPAddr).Port
}

// stop shuts the server down (a crash, as far as clients can tell).
func (n *natsNode) stop() {
	if n.ns != nil {
		n.ns.Shutdown()
		n.ns.WaitForShutdown()
		n.ns = nil
	}
}

func (n *natsNode) url() string { return "nats://127.0.0.1:" + strconv.Itoa(n.port) }

// bucket opens the key-value bucket name on a connection of its own to n,
// closed when the test ends.
func (n *natsNode) bucket(t testing.TB, name string) jetstream.KeyValue {
	t.Helper()
	nc, err := nats.Connect(n.url())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// delivered is one city frame as a client saw it.
type delivered struct {
	city string
	seq  uint64
	typ  string
	data string
}

// readFrames reads n city frames (data_update, alerts, in-stream
// initial_data) from c.
func readFrames(t testing.TB, c nodetest.Client, n int) []delivered {
	t.Helper()
	out := make([]delivered, 0, n)
	for len(out) < n {
		// Frames may wait for a consumer to reconnect to NATS: a longer
		// bound than read's.
		b, err := c.Next(clusterTimeout)
		if err != nil {
			t.Fatalf("cannot read frame %d of %d: %s", len(out)+1, n, err)
		}
		m, err := nodetest.ParseMsg(b)
		if err != nil {
			t.Fatal(err)
		}
		switch m.Type {
		case "data_update", "alerts":
		case "initial_data":
			if !m.Resumed {
				t.Fatalf("unexpected initial_data (resumed false) after %d frames: %s", len(out), m.Raw)
			}
		default:
			t.Fatalf("got %s, want a city frame", m.Raw)
		}
		d := delivered{city: m.City, seq: m.Seq, typ: m.Type, data: string(m.Data)}
		if m.Type == "alerts" {
			d.data = string(m.Alerts)
		}
		out = append(out, d)
	}
	return out
}

// subscribeCluster connects to s, subscribed to cities (with query
// appended), and reads the subscribed answer and one initial_data per
// city; it returns the client and the epoch.
func subscribeCluster(t testing.TB, s *node, query string, cities int) (nodetest.Client, nodetest.Msg) {
	t.Helper()
	c := nodetest.DialGobwas(t, s.ws(query))
	sub := nodetest.ReadType(t, c, "subscribed")
	for range cities {
		nodetest.ReadType(t, c, "initial_data")
	}
	return c, sub
}

// waitReady waits for the node's /readyz to answer code.
func waitReady(t testing.TB, s *node, code int) {
	t.Helper()
	nodetest.WaitFor(t, clusterTimeout, func() bool {
		resp, err := http.Get("http://" + s.AdminAddr().String() + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == code
	})
}

// TestClusterSameFrames publishes on two of three nodes and checks that
// the subscribers of every node receive identical (city, seq, payload)
// sequences, with the seqs the producers were acked.
func TestClusterSameFrames(t *testing.T) {
	n := startNATS(t)
	nodes := []*node{
		startClusterNode(t, n.url(), gateway.Config{}),
		startClusterNode(t, n.url(), gateway.Config{}),
		startClusterNode(t, n.url(), gateway.Config{}),
	}
	epoch := nodes[0].Epoch()
	var clients []nodetest.Client
	for _, s := range nodes {
		if s.Epoch() != epoch {
			t.Fatalf("epochs %d and %d: every node must take the stream's", s.Epoch(), epoch)
		}
		c, _ := subscribeCluster(t, s, "cities=same-a,same-b", 2)
		clients = append(clients, c)
	}
	producers := []*nodetest.Producer{nodes[0].producer(t), nodes[1].producer(t)}
	const frames = 60
	var acked []uint64
	for i := range frames {
		city := []string{"same-a", "same-b"}[i%2]
		line := nodetest.DataLine(city, "data_update", fmt.Sprintf(`{"i":%d}`, i))
		if i%10 == 9 {
			line = nodetest.AlertLine(city, "critical")
		}
		acked = append(acked, producers[i%3%2].Publish(t, line))
	}
	// Over HTTP too: the same line handling.
	resp, err := http.Post("http://"+nodes[2].AdminAddr().String()+"/api/publish", "application/x-ndjson",
		bytes.NewBufferString(nodetest.DataLine("same-a", "snapshot", `{"i":"http"}`)+"\n"))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP publish: %v %v", resp, err)
	}
	resp.Body.Close()

	// Order holds per city; frames of different cities may interleave
	// differently on each node.
	perCity := func(fs []delivered) map[string][]delivered {
		m := map[string][]delivered{}
		for _, f := range fs {
			m[f.city] = append(m[f.city], f)
		}
		return m
	}
	want := perCity(readFrames(t, clients[0], frames+1))
	for i, seq := range acked {
		city := []string{"same-a", "same-b"}[i%2]
		if got := want[city][i/2].seq; got != seq {
			t.Fatalf("%s frame %d: seq %d, producer was acked %d", city, i/2, got, seq)
		}
	}
	if last := want["same-a"][frames/2]; last.typ != "initial_data" || last.data != `{"i":"http"}` {
		t.Fatalf("last frame %+v, want the HTTP snapshot", last)
	}
	for k, c := range clients[1:] {
		got := perCity(readFrames(t, c, frames+1))
		for city, fs := range got {
			for i := range fs {
				if fs[i] != want[city][i] {
					t.Fatalf("node %d %s frame %d: %+v, node 0 sent %+v", k+1, city, i, fs[i], want[city][i])
				}
			}
		}
	}
	// State is rebuilt the same way on every node.
	var states []string
	for _, s := range nodes {
		c := nodetest.DialGobwas(t, s.ws("cities=same-b"))
		nodetest.ReadType(t, c, "subscribed")
		m := nodetest.ReadType(t, c, "initial_data")
		states = append(states, fmt.Sprintf("%d %s %d", m.Seq, m.Data, len(m.Recent)))
	}
	if states[0] != states[1] || states[0] != states[2] {
		t.Fatalf("initial_data differs between nodes: %q", states)
	}
}

// TestClusterResume kills the node a client reads from; the client
// resumes on the other nodes with since: from a node whose ring still holds
// the frames, and from one that started after them (served from the
// stream). Both continue exactly after since.
func TestClusterResume(t *testing.T) {
	n := startNATS(t)
	a := startClusterNode(t, n.url(), gateway.Config{})
	b := startClusterNode(t, n.url(), gateway.Config{})
	c, sub := subscribeCluster(t, a, "cities=resume", 1)
	p := b.producer(t)
	var acked []uint64
	publish := func(k int) {
		for range k {
			acked = append(acked, p.Publish(t, nodetest.DataLine("resume", "data_update", fmt.Sprintf(`{"n":%d}`, len(acked)))))
		}
	}
	publish(10)
	got := readFrames(t, c, 10)
	x := got[4].seq // the client read to here, then its node goes

	if err := a.Drain(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	nodetest.ExpectClose(t, c, 1001)
	publish(10)
	// A node that starts now has none of the frames in its ring.
	late := startClusterNode(t, n.url(), gateway.Config{RingSize: 4})
	publish(10)
	// The late node has applied them all: a resume while it still applies
	// them may find its 4-frame ring moved past what it fetched, and start
	// the client afresh (finishReplay), which is not what this tests.
	last := acked[len(acked)-1]
	nodetest.WaitFor(t, clusterTimeout, func() bool { return late.bus.applied.Load() >= last })

	for _, s := range []*node{b, late} {
		q := fmt.Sprintf("cities=resume&since=%d&epoch=%d", x, sub.Epoch)
		rc := nodetest.DialGobwas(t, s.ws(q))
		m := nodetest.ReadType(t, rc, "subscribed")
		if len(m.Cities) != 1 || !m.Cities[0].Resumed || m.Cities[0].Seq != x {
			t.Fatalf("subscribed %s, want resumed at %d", m.Raw, x)
		}
		frames := readFrames(t, rc, len(acked)-5)
		for i, f := range frames {
			if f.seq != acked[5+i] || f.data != fmt.Sprintf(`{"n":%d}`, 5+i) {
				t.Fatalf("resumed frame %d: %+v, want seq %d data {\"n\":%d}", i, f, acked[5+i], 5+i)
			}
		}
	}
	if late.bus.replays.Load() == 0 {
		t.Fatal("the late node did not serve the resume from the stream")
	}
}

func TestRedactURLs(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		if got := redactURLs(in); got != want {
			t.Fatalf("redactURLs(%q) = %q, want %q", in, got, want)
		}
	}
	f("nats://a:4222", "nats://a:4222")
	f("nats://u:secret@a:4222,nats://b:4222", "nats://u:xxxxx@a:4222,nats://b:4222")
	f("tls://token@a:4222", "tls://token@a:4222")
}

// TestClusterResumeAhead moves a client to a node that has not read the
// stream as far as the client has: it continues after its since as the
// node catches up, without the frames it had seen.
func TestClusterResumeAhead(t *testing.T) {
	n := startNATS(t)
	a := startClusterNode(t, n.url(), gateway.Config{})
	b := startClusterNode(t, n.url(), gateway.Config{})
	c, sub := subscribeCluster(t, a, "cities=ahead", 1)
	p := a.producer(t)
	p.Publish(t, nodetest.DataLine("ahead", "data_update", `{"n":0}`))
	nodetest.WaitFor(t, clusterTimeout, func() bool { return b.bus.applied.Load() > 0 })
	// B stops reading the stream: it falls behind A.
	b.bus.stopAllFeeds()
	behind := b.bus.applied.Load()
	var acked []uint64
	for i := range 6 {
		acked = append(acked, p.Publish(t, nodetest.DataLine("ahead", "data_update", fmt.Sprintf(`{"n":%d}`, i+1))))
	}
	got := readFrames(t, c, 7)
	x := got[4].seq // seen on A, not yet read by B
	if x <= behind {
		t.Fatalf("since %d is not ahead of B (%d)", x, behind)
	}
	rc := nodetest.DialGobwas(t, b.ws(fmt.Sprintf("cities=ahead&since=%d&epoch=%d", x, sub.Epoch)))
	if m := nodetest.ReadType(t, rc, "subscribed"); !m.Cities[0].Resumed || m.Cities[0].Seq != x {
		t.Fatalf("subscribed %s, want resumed at %d", m.Raw, x)
	}
	// B catches up from where it stopped.
	if err := b.bus.startFeeds(); err != nil {
		t.Fatal(err)
	}
	for i, f := range readFrames(t, rc, 2) {
		if f.seq != acked[4+i] {
			t.Fatalf("frame %d after since %d: %+v, want seq %d", i, x, f, acked[4+i])
		}
	}
}

// TestClusterResumeCap checks that a resume needing more frames from the
// stream than Config.ResumeMax gets initial_data instead.
func TestClusterResumeCap(t *testing.T) {
	n := startNATS(t)
	a := startClusterNode(t, n.url(), gateway.Config{})
	p := a.producer(t)
	first := p.Publish(t, nodetest.DataLine("cap", "data_update", `{"n":0}`))
	for i := range 10 {
		p.Publish(t, nodetest.DataLine("cap", "data_update", fmt.Sprintf(`{"n":%d}`, i+1)))
	}
	late := startNode(t, Config{URL: n.url(), ResumeMax: 3}, gateway.Config{})
	rc := nodetest.DialGobwas(t, late.ws(fmt.Sprintf("cities=cap&since=%d", first)))
	nodetest.ReadType(t, rc, "subscribed")
	if m := nodetest.ReadType(t, rc, "initial_data"); m.Resumed {
		t.Fatalf("got %s, want initial_data resumed false", m.Raw)
	}
	nodetest.WaitFor(t, clusterTimeout, func() bool { return late.bus.replayFails.Load() == 1 })

	// A since the stream never reached (a corrupt or foreign cursor) is
	// not taken as is: it would hold back every frame below it.
	bogus := nodetest.DialGobwas(t, a.ws("cities=cap&since=1000000000"))
	nodetest.ReadType(t, bogus, "subscribed")
	if m := nodetest.ReadType(t, bogus, "initial_data"); m.Resumed {
		t.Fatalf("got %s, want initial_data resumed false", m.Raw)
	}
	next := p.Publish(t, nodetest.DataLine("cap", "data_update", `{"n":"next"}`))
	if f := readFrames(t, bogus, 1); f[0].seq != next {
		t.Fatalf("got %+v, want seq %d", f[0], next)
	}
}

// TestClusterNATSRestart stops the NATS server in the middle of a stream
// and starts it again on the same store: producers are refused while it is
// away and resend, /readyz reports the node degraded, and the clients of
// both nodes receive every acked frame exactly once, in order.
func TestClusterNATSRestart(t *testing.T) {
	n := startNATS(t)
	a := startClusterNode(t, n.url(), gateway.Config{})
	b := startClusterNode(t, n.url(), gateway.Config{})
	ca, _ := subscribeCluster(t, a, "cities=restart", 1)
	cb, _ := subscribeCluster(t, b, "cities=restart", 1)
	p := a.producer(t)

	const total = 40
	acked := map[uint64]string{}
	refused := 0
	send := func(i int) bool {
		data := fmt.Sprintf(`{"n":%d}`, i)
		p.Write(t, fmt.Sprintf(`{"id":"restart-%d","city":"restart","type":"data_update","data":%s}`, i, data))
		ans := p.Answer(t)
		if ans.Error != "" {
			refused++
			return false
		}
		if prev, dup := acked[ans.Seq]; dup && prev != data {
			t.Fatalf("seq %d acked for %s and %s", ans.Seq, prev, data)
		}
		acked[ans.Seq] = data
		return true
	}
	for i := range total / 2 {
		if !send(i) {
			t.Fatalf("line %d refused with NATS up", i)
		}
	}
	n.stop()
	waitReady(t, a, http.StatusServiceUnavailable)
	// Refused while NATS is away: no silent acceptance.
	if send(total / 2) {
		t.Fatal("a line was acked while NATS was down")
	}
	resp, err := http.Post("http://"+b.AdminAddr().String()+"/api/publish", "application/x-ndjson",
		bytes.NewBufferString(nodetest.DataLine("restart", "data_update", `{"http":1}`)+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("HTTP publish with NATS down: status %d, want 503 (not stored, resend)", resp.StatusCode)
	}
	n.start()
	waitReady(t, a, http.StatusOK)
	waitReady(t, b, http.StatusOK)
	for i := total / 2; i < total; i++ {
		// Resend until stored: a refused line is resent with its id.
		nodetest.WaitFor(t, clusterTimeout, func() bool { return send(i) })
	}
	if refused == 0 {
		t.Fatal("no line was refused while NATS was down")
	}
	for k, c := range []nodetest.Client{ca, cb} {
		frames := readFrames(t, c, len(acked))
		var last uint64
		for _, f := range frames {
			if f.seq <= last {
				t.Fatalf("nodetest.Client %d: seq %d after %d (duplicate or out of order)", k, f.seq, last)
			}
			last = f.seq
			if acked[f.seq] != f.data {
				t.Fatalf("nodetest.Client %d: seq %d carries %s, acked %q", k, f.seq, f.data, acked[f.seq])
			}
		}
	}
}

// TestClusterDedupAndReplay checks that a line resent with its id is
// stored and delivered once, and that a node started with a look-back
// (Config.Replay) rebuilds the same city state as a node that saw every
// frame live.
func TestClusterDedupAndReplay(t *testing.T) {
	n := startNATS(t)
	a := startClusterNode(t, n.url(), gateway.Config{})
	c, _ := subscribeCluster(t, a, "cities=dedup", 1)
	p := a.producer(t)
	line := `{"id":"dedup-1","city":"dedup","type":"data_update","data":{"x":1}}`
	first := p.Publish(t, line)
	if again := p.Publish(t, line); again != first {
		t.Fatalf("resent line acked with seq %d, first copy %d", again, first)
	}
	if st := a.Stats(); st.IngestFrames != 1 || st.IngestDuplicates != 1 {
		t.Fatalf("IngestFrames %d IngestDuplicates %d, want 1 and 1", st.IngestFrames, st.IngestDuplicates)
	}
	p.Publish(t, nodetest.DataLine("dedup", "snapshot", `{"s":1,"x":0}`))
	p.Publish(t, nodetest.DataLine("dedup", "data_update", `{"y":2}`))
	last := p.Publish(t, nodetest.AlertLine("dedup", "warning"))
	frames := readFrames(t, c, 4)
	for i, f := range frames[1:] {
		if f.seq <= frames[i].seq {
			t.Fatalf("frames %+v: the resent line was delivered twice", frames)
		}
	}
	if frames[0].seq != first || frames[3].seq != last {
		t.Fatalf("frames %+v, want seqs %d … %d", frames, first, last)
	}

	b := startNode(t, Config{URL: n.url(), Replay: time.Hour}, gateway.Config{})
	nodetest.WaitFor(t, clusterTimeout, func() bool { return b.bus.applied.Load() >= last })
	var states []nodetest.Msg
	for _, s := range []*node{a, b} {
		rc := nodetest.DialGobwas(t, s.ws("cities=dedup"))
		nodetest.ReadType(t, rc, "subscribed")
		states = append(states, nodetest.ReadType(t, rc, "initial_data"))
	}
	if states[0].Seq != last || states[1].Seq != last || !nodetest.JSONEqual(t, states[0].Data, states[1].Data) ||
		len(states[1].Recent) != 1 || !nodetest.JSONEqual(t, states[0].Data, []byte(`{"s":1,"x":0,"y":2}`)) {
		t.Fatalf("initial_data live %s, replayed %s", states[0].Raw, states[1].Raw)
	}
}

// freePort returns a loopback port free at the time of the call.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startNATSCluster starts three NATS servers routed into one JetStream
// cluster and waits until it has a meta leader that knows all three.
func startNATSCluster(t testing.TB) []*natsserver.Server {
	t.Helper()
	routePorts := []int{freePort(t), freePort(t), freePort(t)}
	var servers []*natsserver.Server
	for i := range 3 {
		var routes []*url.URL
		for j, p := range routePorts {
			if j != i {
				routes = append(routes, &url.URL{Scheme: "nats", Host: "127.0.0.1:" + strconv.Itoa(p)})
			}
		}
		ns, err := natsserver.NewServer(&natsserver.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			Cluster:    natsserver.ClusterOpts{Name: "metrocast-test", Host: "127.0.0.1", Port: routePorts[i]},
			Routes:     routes,
			NoLog:      true,
			NoSigs:     true,
		})
		if err != nil {
			t.Fatalf("cannot create NATS server: %s", err)
		}
		go ns.Start()
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		servers = append(servers, ns)
	}
	for _, ns := range servers {
		if !ns.ReadyForConnections(clusterTimeout) {
			t.Fatalf("NATS server not ready within %s", clusterTimeout)
		}
	}
	nodetest.WaitFor(t, clusterTimeout, func() bool {
		for _, ns := range servers {
			if ns.JetStreamIsLeader() && len(ns.JetStreamClusterPeers()) == 3 {
				return true
			}
		}
		return false
	})
	return servers
}

// r3Timeout bounds a publish across the loss of a NATS server: the
// client's reconnect, the in-flight publish's time-out (natsPublishTimeout)
// and the election of a new stream leader, twice over for a loaded machine.
const r3Timeout = 60 * time.Second

// TestClusterR3 runs two nodes on a three-server NATS cluster with an R3
// stream, each connected to a different server first, and stops one NATS
// server mid-stream: the stream keeps its quorum, and both nodes' clients
// receive every acked frame once, in order, with the same seqs.
func TestClusterR3(t *testing.T) {
	servers := startNATSCluster(t)
	urls := func(first int) string {
		var u []string
		for i := range servers {
			u = append(u, servers[(first+i)%len(servers)].ClientURL())
		}
		return strings.Join(u, ",")
	}
	// Stream creation and the first consumer wait for the cluster to place
	// three replicas; right after the election (and on a loaded machine,
	// for a while) it may answer "temporarily unavailable" or time out.
	start := func(first int) *node {
		var n *node
		nodetest.WaitFor(t, clusterTimeout, func() bool {
			var err error
			n, err = newNode(t, Config{URL: urls(first), Replicas: 3}, gateway.Config{})
			return err == nil
		})
		return n
	}
	a, b := start(0), start(1)
	ca, _ := subscribeCluster(t, a, "cities=r3", 1)
	cb, _ := subscribeCluster(t, b, "cities=r3", 1)
	p := a.producer(t)
	acked := map[uint64]string{}
	send := func(i int) bool {
		data := fmt.Sprintf(`{"n":%d}`, i)
		p.Write(t, fmt.Sprintf(`{"id":"r3-%d","city":"r3","type":"data_update","data":%s}`, i, data))
		// The answer may wait for a reconnect and a new stream leader,
		// up to the publish time-out: longer than answer's bound.
		_ = p.C.SetReadDeadline(time.Now().Add(r3Timeout))
		line, err := p.BR.ReadBytes('\n')
		if err != nil {
			t.Fatalf("cannot read ingest answer: %s", err)
		}
		var ans nodetest.Answer
		if err := json.Unmarshal(line, &ans); err != nil {
			t.Fatalf("ingest nodetest.Answer %q: %s", line, err)
		}
		if ans.Error != "" {
			return false
		}
		acked[ans.Seq] = data
		return true
	}
	const total = 30
	for i := range total {
		if i == total/2 {
			servers[0].Shutdown() // the server node A is connected to
		}
		nodetest.WaitFor(t, r3Timeout, func() bool { return send(i) })
	}
	for k, c := range []nodetest.Client{ca, cb} {
		var last uint64
		for _, f := range readFrames(t, c, total) {
			if f.seq <= last || acked[f.seq] != f.data {
				t.Fatalf("nodetest.Client %d: seq %d (%s) after %d; acked %q", k, f.seq, f.data, last, acked[f.seq])
			}
			last = f.seq
		}
	}
}

// TestClusterPipelined sends many lines at once, with a bad one among
// them: they are published without waiting for each ack, and answered in
// line order, every ack with a higher seq than the one before.
func TestClusterPipelined(t *testing.T) {
	const lines = 2000
	n := startNATS(t)
	// The client reads its frames after the answers: a ring that holds
	// them all, so that it cannot be lapped (and conflated) meanwhile by
	// a stream read faster than a loaded machine's loop writes it out.
	a := startClusterNode(t, n.url(), gateway.Config{RingSize: 2 * lines})
	c, _ := subscribeCluster(t, a, "cities=pipe", 1)
	p := a.producer(t)
	batch := make([]string, 0, lines)
	for i := range lines {
		if i == lines/2 {
			batch = append(batch, `{"city":"pipe","type":"data_update"}`)
			continue
		}
		batch = append(batch, fmt.Sprintf(`{"id":"p%d","city":"pipe","type":"data_update","data":{"i":%d}}`, i, i))
	}
	// More than the socket buffers hold: write while reading the answers.
	wrote := make(chan error, 1)
	go func() {
		_, err := p.C.Write([]byte(strings.Join(batch, "\n") + "\n"))
		wrote <- err
	}()
	var last uint64
	for i := range lines {
		_ = p.C.SetReadDeadline(time.Now().Add(clusterTimeout))
		line, err := p.BR.ReadBytes('\n')
		if err != nil {
			t.Fatalf("nodetest.Answer %d: %s", i, err)
		}
		var ans nodetest.Answer
		if err := json.Unmarshal(line, &ans); err != nil {
			t.Fatal(err)
		}
		switch {
		case i == lines/2:
			if ans.Error == "" || ans.Line != i+1 {
				t.Fatalf("nodetest.Answer %d: %s, want the error of line %d", i, line, i+1)
			}
		case ans.Ack != fmt.Sprintf("p%d", i) || ans.Seq <= last:
			t.Fatalf("nodetest.Answer %d: %s after seq %d", i, line, last)
		default:
			last = ans.Seq
		}
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if f := readFrames(t, c, lines-1); f[len(f)-1].seq != last {
		t.Fatalf("last frame %+v, want seq %d", f[len(f)-1], last)
	}
}

// TestClusterPoison writes to the stream, beside the nodes, messages no
// node can apply (as an older or a buggy node could have): the consumer
// skips them, counts them (metrocast_cluster_poison_total), logs the first
// with its stream seq, and goes on; clients get the valid frames and a
// state that encoding/json decodes; and a node that starts with a replay
// over them starts.
func TestClusterPoison(t *testing.T) {
	n := startNATS(t)
	var logs nodetest.LogBuffer
	a := startClusterNode(t, n.url(), gateway.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	c, _ := subscribeCluster(t, a, "cities=poison", 1)
	p := a.producer(t)
	first := p.Publish(t, nodetest.DataLine("poison", "data_update", `{"a":1}`))

	nc, err := nats.Connect(n.url())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("b", 41)
	var poison []uint64
	for _, line := range []string{
		`{"city":"poison","type":"data_update","id":"c","data":{"a\0":1,"` + long + `":2}}`,
		`{"city":"poison","type":"data_update","data":{"v":1e400}}`,
		`{"city":"poison","type":"snapshot","data":{"v":"\0` + long + `"}}`,
		`not json`,
		``,
	} {
		ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
		ack, err := js.Publish(ctx, subject("poison"), []byte(line))
		cancel()
		if err != nil {
			t.Fatalf("cannot publish to the stream: %s", err)
		}
		poison = append(poison, ack.Sequence)
	}
	last := p.Publish(t, nodetest.DataLine("poison", "data_update", `{"b":2}`))
	if frames := readFrames(t, c, 2); frames[0].seq != first || frames[1].seq != last {
		t.Fatalf("frames %+v, want seqs %d and %d", frames, first, last)
	}
	nodetest.WaitFor(t, clusterTimeout, func() bool { return a.bus.applied.Load() >= last })
	if got := nodetest.Series(t, a.metrics(t), "metrocast_cluster_poison_total"); got != float64(len(poison)) {
		t.Fatalf("metrocast_cluster_poison_total %v, want %d", got, len(poison))
	}
	if want := fmt.Sprintf("seq=%d", poison[0]); !strings.Contains(logs.String(), want) {
		t.Fatalf("log %q does not name the first poison message (%s)", logs.String(), want)
	}

	b := startNode(t, Config{URL: n.url(), Replay: time.Hour}, gateway.Config{})
	nodetest.WaitFor(t, clusterTimeout, func() bool { return b.bus.applied.Load() >= last })
	for _, s := range []*node{a, b} {
		rc := nodetest.DialGorilla(t, s.ws("cities=poison"))
		nodetest.ReadType(t, rc, "subscribed")
		m := nodetest.ReadType(t, rc, "initial_data")
		var v any
		if err := json.Unmarshal(m.Raw, &v); err != nil || m.Seq != last || !nodetest.JSONEqual(t, m.Data, []byte(`{"a":1,"b":2}`)) {
			t.Fatalf("initial_data %s (%v), want seq %d and the valid frames merged", m.Raw, err, last)
		}
	}
	if got := nodetest.Series(t, b.metrics(t), "metrocast_cluster_poison_total"); got != float64(len(poison)) {
		t.Fatalf("replaying node skipped %v poison messages, want %d", got, len(poison))
	}
}

// gatedProxy forwards TCP connections to target. While shut, it holds what
// either side sends: a NATS server that stopped answering, for the node
// that connects through it. While mute, it holds only what target sends:
// a NATS server that takes the node's messages and does not answer yet.
type gatedProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cond   *sync.Cond
	shut   bool
	mute   bool
	conns  []net.Conn
}

func startGatedProxy(t testing.TB, target string) *gatedProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &gatedProxy{ln: ln, target: target}
	p.cond = sync.NewCond(&p.mu)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close()
		p.setShut(false)
		p.setMute(false)
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			wg.Go(func() { p.pipe(up, c, false) })
			wg.Go(func() { p.pipe(c, up, true) })
		}
	})
	return p
}

func (p *gatedProxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *gatedProxy) setShut(shut bool) {
	p.mu.Lock()
	p.shut = shut
	p.mu.Unlock()
	p.cond.Broadcast()
}

func (p *gatedProxy) setMute(mute bool) {
	p.mu.Lock()
	p.mute = mute
	p.mu.Unlock()
	p.cond.Broadcast()
}

// pipe copies src to dst, holding each read while the gate is shut, or
// mute for what target sends (reply).
func (p *gatedProxy) pipe(dst, src net.Conn, reply bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		p.mu.Lock()
		for p.shut || reply && p.mute {
			p.cond.Wait()
		}
		p.mu.Unlock()
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			_ = dst.Close()
			_ = src.Close()
			return
		}
	}
}

// TestClusterResumeStorm resumes 1,100 subscriptions from the stream on a
// node whose NATS server stops answering: the fetches run on at most
// maxConcurrentFetches goroutines (not one per resume), at most
// maxQueuedFetches wait, the rest get initial_data at once; once NATS
// answers again, every subscription is served, and the goroutines are
// gone.
func TestClusterResumeStorm(t *testing.T) {
	const clients, cities = 11, 100
	n := startNATS(t)
	a := startClusterNode(t, n.url(), gateway.Config{})
	p := a.producer(t)
	var names, lines []string
	for i := range cities {
		names = append(names, fmt.Sprintf("storm-%d", i))
		lines = append(lines, nodetest.DataLine(names[i], "data_update", `{"n":1}`))
	}
	p.Write(t, lines...)
	for range cities {
		if an := p.Answer(t); an.Ack == "" {
			t.Fatalf("nodetest.Answer %+v, want an ack", an)
		}
	}
	proxy := startGatedProxy(t, strings.TrimPrefix(n.url(), "nats://"))
	late := startClusterNode(t, proxy.url(), gateway.Config{}) // its rings hold none of those frames
	cl := late.bus
	before := runtime.NumGoroutine()

	proxy.setShut(true)
	query := "cities=" + strings.Join(names, ",") + "&since=1"
	var cs []nodetest.Client
	for range clients {
		c := nodetest.DialGobwas(t, late.ws(query))
		nodetest.ReadType(t, c, "subscribed")
		cs = append(cs, c)
	}
	const total = clients * cities
	nodetest.WaitFor(t, clusterTimeout, func() bool {
		return len(cl.fetches) == maxConcurrentFetches &&
			cl.replayFails.Load()+uint64(len(cl.queued))+maxConcurrentFetches == total
	})
	if refused := cl.replayFails.Load(); refused < total-maxConcurrentFetches-maxQueuedFetches {
		t.Fatalf("%d resumes refused at once, want at least %d", refused, total-maxConcurrentFetches-maxQueuedFetches)
	}
	if grown := runtime.NumGoroutine() - before; grown > maxConcurrentFetches+50 {
		t.Fatalf("%d more goroutines during the storm, want about %d", grown, maxConcurrentFetches)
	}

	proxy.setShut(false)
	for i, c := range cs {
		served := map[string]bool{}
		for len(served) < cities {
			b, err := c.Next(clusterTimeout)
			if err != nil {
				t.Fatalf("nodetest.Client %d: %d cities served: %s", i, len(served), err)
			}
			m, err := nodetest.ParseMsg(b)
			if err != nil {
				t.Fatal(err)
			}
			switch m.Type {
			case "data_update", "initial_data":
				served[m.City] = true
			default:
				t.Fatalf("nodetest.Client %d: got %s", i, m.Raw)
			}
		}
	}
	nodetest.WaitFor(t, clusterTimeout, func() bool {
		return cl.replays.Load()+cl.replayFails.Load() == total && len(cl.fetches) == 0
	})
}
