package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metrocast/metrocast/gateway"
	"github.com/metrocast/metrocast/gateway/internal/nodetest"
	gwproducer "github.com/metrocast/metrocast/gateway/producer"
)

// startProcNode starts a metrocast node on the NATS cluster procs with a
// stream on every server, the first URL being procs[first]'s. Right after
// the cluster forms (and on a loaded machine, for a while) the stream's
// creation may answer "temporarily unavailable": the node retries
// (Bus.startRetry), as a user's does, so one start must do.
func startProcNode(t testing.TB, procs []*natsProc, first int) *node {
	t.Helper()
	return startProcNodeAt(t, natsURLs(procs, first), len(procs))
}

// startProcNodeAt is startProcNode with the node given the NATS URLs url
// only (it learns the cluster's other servers from them).
func startProcNodeAt(t testing.TB, url string, replicas int) *node {
	t.Helper()
	n, err := newNode(t, Config{URL: url, Replicas: replicas}, gateway.Config{})
	if err != nil {
		t.Fatalf("cannot start a node on the NATS cluster: %v", err)
	}
	// Ready, as a user waits for /readyz: a stream just made over the
	// servers elects its leader a moment later, and a line pushed before
	// that is answered not_stored (resend it), which failed the tests'
	// first push now and then.
	nodetest.WaitFor(t, clusterTimeout, func() bool { return n.bus.Ready() == "" })
	return n
}

// jszDetail is the part of /jsz?consumers=true the tests read: where each
// stream and consumer has its leader.
type jszDetail struct {
	Accounts []struct {
		Streams []struct {
			Name    string `json:"name"`
			Cluster struct {
				Leader string `json:"leader"`
			} `json:"cluster"`
			Consumers []struct {
				Name    string `json:"name"`
				Cluster struct {
					Leader string `json:"leader"`
				} `json:"cluster"`
			} `json:"consumer_detail"`
		} `json:"stream_detail"`
	} `json:"account_details"`
}

// streamConsumers returns, per NATS server name, how many consumers of
// stream it leads, as the servers' /jsz say (each lists its own).
func streamConsumers(t testing.TB, procs []*natsProc, stream string) map[string]int {
	t.Helper()
	on := map[string]int{}
	for _, p := range procs {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/jsz?accounts=true&consumers=true", p.monPort))
		if err != nil {
			t.Fatal(err)
		}
		var d jszDetail
		err = json.NewDecoder(resp.Body).Decode(&d)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range d.Accounts {
			for _, st := range a.Streams {
				if st.Name != stream {
					continue
				}
				for _, c := range st.Consumers {
					if c.Cluster.Leader == p.name {
						on[p.name]++
					}
				}
			}
		}
	}
	return on
}

// maxStall is the longest a line stored after the loss of one NATS server
// of three may take to reach every node's clients (issue 16, item 4).
const maxStall = 2 * time.Second

// TestClusterLoseOneNATSServer runs three nodes on three nats-server
// processes (R3 stream), each with a client and a producer that resends
// every line the node answers with "retry" until it is acked, and kills
// (SIGKILL) the server that holds the most stream consumers, the meta
// leader among equals. Every acked line reaches every client once, in
// order, and every line acked after the kill reaches every client within
// maxStall of its ack. (While JetStream elects a new stream leader, if the
// dead server led the stream, no line is stored, and none is acked.)
func TestClusterLoseOneNATSServer(t *testing.T) {
	procs := startNATSProcs(t, 3)
	nodes := []*node{startProcNode(t, procs, 0), startProcNode(t, procs, 1), startProcNode(t, procs, 2)}
	type line struct {
		data string
		at   time.Time // acked
	}
	var (
		mu     sync.Mutex
		acked  = map[uint64]line{}
		killed time.Time
		after  = make([]int, len(nodes)) // acks since the kill, per producer
	)
	clients := make([]nodetest.Client, len(nodes))
	for k, s := range nodes {
		clients[k], _ = subscribeCluster(t, s, "cities=lose", 1)
	}
	stop := make(chan struct{})
	var producers sync.WaitGroup
	for k, s := range nodes {
		p := s.producer(t)
		producers.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				data := fmt.Sprintf(`{"p":%d,"i":%d}`, k, i)
				l := fmt.Sprintf(`{"id":"lose-%d-%d","city":"lose","type":"data_update","data":%s}`, k, i, data)
				for {
					// Written and read on this goroutine: no t.Fatal here.
					_ = p.C.SetDeadline(time.Now().Add(r3Timeout))
					if _, err := fmt.Fprintln(p.C, l); err != nil {
						t.Errorf("producer %d: %s", k, err)
						return
					}
					b, err := p.BR.ReadBytes('\n')
					if err != nil {
						t.Errorf("producer %d: %s", k, err)
						return
					}
					var a nodetest.Answer
					if err := json.Unmarshal(b, &a); err != nil || a.Error != "" && !strings.Contains(string(b), `"retry"`) {
						t.Errorf("producer %d: nodetest.Answer %s", k, b)
						return
					}
					if a.Error == "" {
						mu.Lock()
						acked[a.Seq] = line{data, time.Now()}
						if !killed.IsZero() {
							after[k]++
						}
						mu.Unlock()
						break
					}
				}
			}
		})
	}
	type recv struct {
		seq  uint64
		data string
		at   time.Time
	}
	var gotMu sync.Mutex
	got := make([][]recv, len(nodes))
	var readers sync.WaitGroup
	read := make(chan struct{}) // closed once every client has every line
	for k, c := range clients {
		readers.Go(func() {
			for {
				b, err := c.Next(time.Second)
				select {
				case <-read:
					return
				default:
				}
				if err != nil {
					continue
				}
				if m, err := nodetest.ParseMsg(b); err == nil && m.Type == "data_update" {
					gotMu.Lock()
					got[k] = append(got[k], recv{m.Seq, string(m.Data), time.Now()})
					gotMu.Unlock()
				}
			}
		})
	}
	nodetest.WaitFor(t, clusterTimeout, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 100
	})

	on := streamConsumers(t, procs, nodes[0].bus.cfg.Stream)
	meta, err := procs[0].jsz()
	if err != nil {
		t.Fatal(err)
	}
	victim := procs[0]
	for _, p := range procs {
		if on[p.name] > on[victim.name] || on[p.name] == on[victim.name] && p.name == meta.Meta.Leader {
			victim = p
		}
	}
	mu.Lock()
	killed = time.Now()
	mu.Unlock()
	victim.kill()
	t.Logf("killed %s (stream consumers per server %v, meta leader %s)", victim.name, on, meta.Meta.Leader)
	nodetest.WaitFor(t, r3Timeout, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return time.Since(killed) > 3*time.Second && slices.Min(after) >= 30
	})
	close(stop)
	producers.Wait()

	// Every client gets every acked line, once, in order.
	complete := func() bool {
		gotMu.Lock()
		defer gotMu.Unlock()
		for k := range got {
			if len(got[k]) < len(acked) {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(clusterTimeout); !complete(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			gotMu.Lock()
			for k, rs := range got {
				seen := map[uint64]bool{}
				for _, r := range rs {
					seen[r.seq] = true
				}
				var missing []uint64
				for seq := range acked {
					if !seen[seq] {
						missing = append(missing, seq)
					}
				}
				slices.Sort(missing)
				t.Errorf("node %d: %d of %d acked lines, applied seq %d; missing %v", k, len(rs), len(acked), nodes[k].bus.applied.Load(), missing)
			}
			gotMu.Unlock()
			t.FailNow()
		}
	}
	close(read)
	readers.Wait()
	for k, rs := range got {
		var last uint64
		var stall time.Duration
		for _, r := range rs {
			l, ok := acked[r.seq]
			if !ok || r.seq <= last || l.data != r.data {
				t.Fatalf("node %d: seq %d %s after seq %d; acked %q", k, r.seq, r.data, last, l.data)
			}
			last = r.seq
			if l.at.After(killed) {
				stall = max(stall, r.at.Sub(l.at))
			}
		}
		t.Logf("node %d: %d lines, longest from an ack after the kill to the client: %s", k, len(rs), stall)
		if stall > maxStall {
			t.Errorf("node %d: a line acked after the kill took %s to reach its nodetest.Client, over %s", k, stall, maxStall)
		}
	}
}

// answerWithin reads one ingest answer of p, waiting up to timeout, and
// returns it as parsed and as it came.
func answerWithin(t testing.TB, p *nodetest.Producer, timeout time.Duration) (nodetest.Answer, string) {
	t.Helper()
	_ = p.C.SetReadDeadline(time.Now().Add(timeout))
	line, err := p.BR.ReadBytes('\n')
	if err != nil {
		t.Fatalf("cannot read ingest answer: %s", err)
	}
	var a nodetest.Answer
	if err := json.Unmarshal(line, &a); err != nil {
		t.Fatalf("ingest nodetest.Answer %q: %s", line, err)
	}
	return a, string(line)
}

// TestClusterBusDownNotProducersFault cuts the node off from NATS and
// sends more lines than IngestMaxErrors allows bad ones: each is answered
// as not stored, with "retry", and the producer keeps its connection, on
// which the same lines are stored once NATS is back. Over HTTP the same
// lines get 503 and Retry-After.
func TestClusterBusDownNotProducersFault(t *testing.T) {
	n := startNATS(t)
	a := startClusterNode(t, n.url(), gateway.Config{IngestMaxErrors: 3})
	c, _ := subscribeCluster(t, a, "cities=busdown", 1)
	p := a.producer(t)
	line := func(i int) string {
		return fmt.Sprintf(`{"id":"bd-%d","city":"busdown","type":"data_update","data":{"i":%d}}`, i, i)
	}
	n.stop()
	waitReady(t, a, http.StatusServiceUnavailable)
	const lines = 20
	for i := range lines {
		p.Write(t, line(i))
	}
	for i := range lines {
		ans, raw := answerWithin(t, p, clusterTimeout)
		if ans.Error == "" || ans.Line != i+1 || !strings.Contains(raw, `"retry":"not_stored"`) ||
			!strings.Contains(ans.Error, "not stored") {
			t.Fatalf("nodetest.Answer %d with NATS down: %s, want a not_stored retry for line %d", i, raw, i+1)
		}
	}
	resp, err := http.Post("http://"+a.AdminAddr().String()+"/api/publish", "application/x-ndjson",
		strings.NewReader(line(lines)+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		!strings.Contains(string(body), `"retry":"not_stored"`) {
		t.Fatalf("HTTP publish with NATS down: %d %q %s, want 503, Retry-After and a retry answer",
			resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if got := a.Stats().IngestDropped; got != 0 {
		t.Fatalf("%d producers dropped for the bus's faults", got)
	}

	n.start()
	waitReady(t, a, http.StatusOK)
	// The same connection, the same ids: each stored, and delivered, once.
	var acked []uint64
	for i := range lines {
		nodetest.WaitFor(t, clusterTimeout, func() bool {
			p.Write(t, line(i))
			ans, raw := answerWithin(t, p, clusterTimeout)
			if ans.Error != "" {
				if !strings.Contains(raw, `"retry"`) {
					t.Fatalf("line %d after NATS came back: %s", i, raw)
				}
				return false
			}
			acked = append(acked, ans.Seq)
			return true
		})
	}
	for i, f := range readFrames(t, c, lines) {
		if f.seq != acked[i] || f.data != fmt.Sprintf(`{"i":%d}`, i) {
			t.Fatalf("frame %d: %+v, want seq %d", i, f, acked[i])
		}
	}
}

// TestClusterAckTimeoutMaybeStored freezes the NATS server (SIGSTOP) while
// a line is on its way to the stream: the node cannot know whether it was
// stored, and says so ("maybe_stored"), never "not stored". Thawed, the
// server stores the line it had read; the producer's resend with the same
// id is acked with that seq, and clients get the line once.
func TestClusterAckTimeoutMaybeStored(t *testing.T) {
	procs := startNATSProcs(t, 1)
	a := startProcNode(t, procs, 0)
	c, _ := subscribeCluster(t, a, "cities=maybe", 1)
	p := a.producer(t)
	line := `{"id":"maybe-1","city":"maybe","type":"data_update","data":{"v":1}}`

	procs[0].freeze(t)
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			procs[0].thaw(t)
		}
	}
	t.Cleanup(thaw)
	p.Write(t, line)
	ans, raw := answerWithin(t, p, 3*natsPublishTimeout)
	if ans.Error == "" || !strings.Contains(raw, `"retry":"maybe_stored"`) ||
		strings.Contains(ans.Error, "not stored") || strings.Contains(ans.Error, "did not store") {
		t.Fatalf("nodetest.Answer with NATS frozen: %s, want a maybe_stored retry that does not say \"not stored\"", raw)
	}
	thaw()
	var seq uint64
	nodetest.WaitFor(t, clusterTimeout, func() bool {
		p.Write(t, line)
		ans, raw := answerWithin(t, p, clusterTimeout)
		if ans.Error != "" && !strings.Contains(raw, `"retry"`) {
			t.Fatalf("resend: %s", raw)
		}
		seq = ans.Seq
		return ans.Error == ""
	})
	next := p.Publish(t, nodetest.DataLine("maybe", "data_update", `{"v":2}`))
	got := readFrames(t, c, 2)
	if got[0].seq != seq || got[0].data != `{"v":1}` || got[1].seq != next {
		t.Fatalf("frames %+v, want the line once (seq %d), then seq %d", got, seq, next)
	}
}

// readyBody returns the node's /readyz status and body.
func readyBody(t testing.TB, s *node) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + s.AdminAddr().String() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestClusterReadyMeansAbleToServe checks that /readyz answers 200 only
// while the node can store a line and has applied the stream to its end: a
// node whose consumer stopped while others published is not ready until it
// has caught up, and a node whose NATS server is frozen (connected, but
// nothing answers) is not ready until the server answers again.
func TestClusterReadyMeansAbleToServe(t *testing.T) {
	procs := startNATSProcs(t, 1)
	a, b := startProcNode(t, procs, 0), startProcNode(t, procs, 0)
	waitReady(t, b, http.StatusOK)
	p := a.producer(t)
	b.bus.stopAllFeeds()
	var last uint64
	for i := range 5 {
		last = p.Publish(t, nodetest.DataLine("ready", "data_update", fmt.Sprintf(`{"i":%d}`, i)))
	}
	// Stream time moves on past readyMaxLag while B stands still.
	var code int
	var body string
	nodetest.WaitFor(t, clusterTimeout, func() bool {
		p.Publish(t, nodetest.DataLine("ready", "data_update", `{"tick":1}`))
		code, body = readyBody(t, b)
		return code == http.StatusServiceUnavailable
	})
	if !strings.Contains(body, "catching up") {
		t.Fatalf("/readyz of a node behind the stream: %d %q, want 503 catching up", code, body)
	}
	if err := b.bus.startFeeds(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, b, http.StatusOK)
	if got := b.bus.applied.Load(); got < last {
		t.Fatalf("B ready having applied seq %d, before %d", got, last)
	}

	procs[0].freeze(t)
	defer procs[0].thaw(t)
	waitReady(t, a, http.StatusServiceUnavailable)
	if code, body := readyBody(t, a); code != http.StatusServiceUnavailable || !strings.Contains(body, "degraded") {
		t.Fatalf("/readyz with NATS frozen: %d %q", code, body)
	}
	procs[0].thaw(t)
	waitReady(t, a, http.StatusOK)
	p.Publish(t, nodetest.DataLine("ready", "data_update", `{"after":1}`))
}

// TestClusterProducerResends: the producer package resends, with the same
// id, a line the node could not store while NATS was away, and returns
// once it is stored: the client gets it once.
func TestClusterProducerResends(t *testing.T) {
	n := startNATS(t)
	a := startClusterNode(t, n.url(), gateway.Config{IngestMaxErrors: 1})
	c, _ := subscribeCluster(t, a, "cities=resend", 1)
	p := resendingProducer(t, a)
	n.stop()
	waitReady(t, a, http.StatusServiceUnavailable)
	type result struct {
		seq uint64
		err error
	}
	done := make(chan result, 1)
	go func() {
		seq, err := p.Send(context.Background(), []byte(`{"id":"resend-1","city":"resend","type":"data_update","data":{"v":1}}`))
		done <- result{seq, err}
	}()
	// Answered "retry" a few times: more than IngestMaxErrors allows bad
	// lines, and the producer is not dropped for them.
	nodetest.WaitFor(t, clusterTimeout, func() bool { return a.Stats().IngestErrors >= 3 })
	n.start()
	var r result
	select {
	case r = <-done:
	case <-time.After(r3Timeout):
		t.Fatal("Send did not return after NATS came back")
	}
	if r.err != nil {
		t.Fatalf("Send: %v", r.err)
	}
	next, err := p.Send(t.Context(), []byte(`{"id":"resend-2","city":"resend","type":"data_update","data":{"v":2}}`))
	if err != nil {
		t.Fatal(err)
	}
	got := readFrames(t, c, 2)
	if got[0].seq != r.seq || got[0].data != `{"v":1}` || got[1].seq != next {
		t.Fatalf("frames %+v, want the resent line once (seq %d), then seq %d", got, r.seq, next)
	}
	if st := a.Stats(); st.IngestDropped != 0 {
		t.Fatalf("%d producers dropped", st.IngestDropped)
	}
}

// TestClusterProducerKeepsOrder: lines a producer sends while NATS is away,
// all answered "retry", are stored in the order they were sent once it is
// back, those sent while the first were being resent among them: a
// subscriber gets them in that order and the city's state ends on the last.
func TestClusterProducerKeepsOrder(t *testing.T) {
	n := startNATS(t)
	a := startClusterNode(t, n.url(), gateway.Config{})
	c, _ := subscribeCluster(t, a, "cities=order", 1)
	p := resendingProducer(t, a)
	n.stop()
	waitReady(t, a, http.StatusServiceUnavailable)
	const lines = 12
	errs := make(chan error, lines)
	send := func(i int) {
		line := fmt.Appendf(nil, `{"id":"order-%d","city":"order","type":"data_update","data":{"v":%d}}`, i, i)
		if err := p.SendAsync(t.Context(), line, func(_ uint64, err error) { errs <- err }); err != nil {
			t.Fatal(err)
		}
	}
	for i := range lines / 2 {
		send(i)
	}
	// The first half refused (resent meanwhile), then the second half sent.
	nodetest.WaitFor(t, clusterTimeout, func() bool { return a.Stats().IngestErrors >= lines/2+2 })
	for i := lines / 2; i < lines; i++ {
		send(i)
	}
	n.start()
	for range lines {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatalf("a line failed: %v", err)
			}
		case <-time.After(r3Timeout):
			t.Fatal("the lines were not all stored after NATS came back")
		}
	}
	for i, f := range readFrames(t, c, lines) {
		if want := fmt.Sprintf(`{"v":%d}`, i); f.data != want {
			t.Fatalf("frame %d carries %s, want %s: stored out of the order sent", i, f.data, want)
		}
	}
}

// resendingProducer dials a's ingest port with the producer package,
// backing off 10 to 100 ms between resends.
func resendingProducer(t *testing.T, a *node) *gwproducer.Producer {
	t.Helper()
	p, err := gwproducer.Dial(t.Context(), a.IngestAddr().String(),
		gwproducer.Options{ReconnectMin: 10 * time.Millisecond, ReconnectMax: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// TestClusterFill: a node whose feeds lost deliveries reads them from the
// stream (direct gets), in order, and applies each once.
func TestClusterFill(t *testing.T) {
	n := startNATS(t)
	a, b := startClusterNode(t, n.url(), gateway.Config{}), startClusterNode(t, n.url(), gateway.Config{})
	c, _ := subscribeCluster(t, b, "cities=fill", 1)
	b.bus.stopAllFeeds()
	p := a.producer(t)
	var acked []uint64
	for i := range 5 {
		acked = append(acked, p.Publish(t, nodetest.DataLine("fill", "data_update", fmt.Sprintf(`{"i":%d}`, i))))
	}
	if err := b.bus.fill(acked[2]); err != nil {
		t.Fatal(err)
	}
	if err := b.bus.fill(acked[4]); err != nil {
		t.Fatal(err)
	}
	for i, f := range readFrames(t, c, 5) {
		if f.seq != acked[i] || f.data != fmt.Sprintf(`{"i":%d}`, i) {
			t.Fatalf("frame %d: %+v, want seq %d", i, f, acked[i])
		}
	}
	if got := b.bus.applied.Load(); got != acked[4] {
		t.Fatalf("applied %d, want %d", got, acked[4])
	}
}

// TestClusterResumeLoseOneNATSServer: a client resuming from the stream
// right after the loss of the NATS server that led the JetStream cluster
// (SIGKILL) gets the frames it missed, not a fresh start: the resume reads
// with direct gets, which the live replicas answer at once, where a
// consumer's creation waited for a new meta leader past the fetch's time
// limit (10 s), and the client was started afresh. The node serving the
// resume is connected to a live server, or to the one killed: then the
// resume waits while it reconnects (to a server it learned from the
// cluster) instead of being started afresh at once, which a node that
// happened to be connected there did (nats.go shuffles the URLs), and a
// direct get sent just before the kill is asked again after
// fetchRequestTimeout, not waited for until the fetch's 10 s are up. Each
// node is given one URL, so that it is connected where the subtest says.
func TestClusterResumeLoseOneNATSServer(t *testing.T) {
	for _, onVictim := range []bool{false, true} {
		t.Run(fmt.Sprintf("connected-to-killed=%t", onVictim), func(t *testing.T) {
			testResumeLoseOneNATSServer(t, onVictim)
		})
	}
}

func testResumeLoseOneNATSServer(t *testing.T, onVictim bool) {
	procs := startNATSProcs(t, 3)
	meta, err := procs[0].jsz()
	if err != nil {
		t.Fatal(err)
	}
	victim, other := -1, -1
	for i, p := range procs {
		if p.name == meta.Meta.Leader {
			victim = i
		} else {
			other = i
		}
	}
	if victim < 0 {
		t.Fatalf("no meta leader among %+v", meta)
	}
	a := startProcNode(t, procs, other)
	p := a.producer(t)
	acked := make([]uint64, 50)
	for i := range acked {
		acked[i] = publishResending(t, p, nodetest.DataLine("rl", "data_update", fmt.Sprintf(`{"i":%d}`, i)))
	}
	// Started after the lines, on a live server: its ring holds none of
	// them, so a resume from the tenth reads the stream.
	var b *node
	if onVictim {
		b = startProcNodeAt(t, procs[victim].url(), len(procs))
	} else {
		b = startProcNodeAt(t, procs[other].url(), len(procs))
	}
	procs[victim].kill()
	killed := time.Now()
	c := nodetest.DialGobwas(t, b.ws(fmt.Sprintf("cities=rl&since=%d&epoch=%d", acked[9], b.Epoch())))
	if m := nodetest.ReadType(t, c, "subscribed"); !bytes.Contains(m.Raw, []byte(`"resumed":true`)) {
		t.Fatalf("subscribed %s, want resumed", m.Raw)
	}
	for i, f := range readFrames(t, c, 40) {
		if want := fmt.Sprintf(`{"i":%d}`, i+10); f.seq != acked[i+10] || f.data != want {
			t.Fatalf("frame %d: seq %d %s, want seq %d %s", i, f.seq, f.data, acked[i+10], want)
		}
	}
	t.Logf("resumed 40 frames %s after the loss of the meta leader %s", time.Since(killed), procs[victim].name)
}

// publishResending publishes line (with an id) and returns the seq of its
// ack, sending it again while the node answers "not stored; resend it", as
// package producer does: a stream just formed may change leaders once more
// after the node is ready, and its first lines are refused meanwhile (a
// fresh-clone CI run failed its first line so).
func publishResending(t testing.TB, p *nodetest.Producer, line string) uint64 {
	t.Helper()
	var a nodetest.Answer
	nodetest.WaitFor(t, clusterTimeout, func() bool {
		p.Write(t, line)
		a = p.Answer(t)
		return a.Ack != "" || !strings.Contains(a.Error, "resend it")
	})
	if a.Ack == "" {
		t.Fatalf("line %s: got answer %+v, want an ack", line, a)
	}
	return a.Seq
}
