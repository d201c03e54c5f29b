package gateway

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metrocast/metrocast/gateway/ingest"
)

// TestIngestIDOnce resends lines with the same id to one node, over TCP
// and HTTP, from one producer and from two at once: each id is stored
// once, and every copy is acked with the first one's seq, as JetStream's
// duplicate window does in cluster mode (TestClusterDedupAndReplay).
func TestIngestIDOnce(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	c := dialGorilla(t, wsURL(s, "cities=once"))
	readType(t, c, "subscribed")
	readType(t, c, "initial_data")
	p := dialProducer(t, s)

	line := `{"id":"once-1","city":"once","type":"data_update","data":{"n":1}}`
	first := p.Publish(t, line)
	if again := p.Publish(t, line); again != first {
		t.Fatalf("resent line acked with seq %d, first copy %d", again, first)
	}
	// A copy is a copy whatever it carries, as in JetStream.
	if again := p.Publish(t, `{"id":"once-1","city":"once","type":"data_update","data":{"n":"other"}}`); again != first {
		t.Fatalf("resent id acked with seq %d, first copy %d", again, first)
	}
	code, body := adminPost(t, s, "/api/publish", strings.NewReader(line))
	if want := fmt.Sprintf(`{"ack":"once-1","seq":%d}`+"\n", first); code != http.StatusOK || string(body) != want {
		t.Fatalf("HTTP resend: %d %q, want 200 %q", code, body, want)
	}
	second := p.Publish(t, dataLine("once", "data_update", `{"n":2}`))

	// Two producers send the same 50 new ids at once.
	const ids = 50
	var (
		wg   sync.WaitGroup
		seqs [2][ids]uint64
	)
	var lines []string
	for k := range ids {
		lines = append(lines, fmt.Sprintf(`{"id":"race-%d","city":"once","type":"data_update","data":{"k":%d}}`, k, k))
	}
	qs := []*producer{dialProducer(t, s), dialProducer(t, s)}
	for _, q := range qs {
		q.Write(t, lines...)
	}
	for i, q := range qs {
		wg.Go(func() {
			for k := range ids {
				a, err := q.Next(readTimeout)
				if err != nil || a.Ack != fmt.Sprintf("race-%d", k) {
					t.Errorf("producer %d, line %d: %+v, %v", i, k+1, a, err)
					return
				}
				seqs[i][k] = a.Seq
			}
		})
	}
	wg.Wait()
	if seqs[0] != seqs[1] {
		t.Fatalf("the producers were acked different seqs for the same ids:\n%v\n%v", seqs[0], seqs[1])
	}

	// The client sees each id once: first, second, then the 50.
	want := []uint64{first, second}
	for k := range ids {
		want = append(want, seqs[0][k])
	}
	seen := map[uint64]bool{}
	for range want {
		m := readType(t, c, "data_update")
		if seen[m.Seq] {
			t.Fatalf("seq %d delivered twice", m.Seq)
		}
		seen[m.Seq] = true
	}
	for _, seq := range want {
		if !seen[seq] {
			t.Fatalf("seq %d not delivered", seq)
		}
	}
	expectPong(t, c)
	if st := s.Stats(); st.IngestFrames != 2+ids || st.IngestDuplicates != 3+ids {
		t.Fatalf("IngestFrames %d IngestDuplicates %d, want %d and %d", st.IngestFrames, st.IngestDuplicates, 2+ids, 3+ids)
	}
}

// TestRecentIDs checks the window's bounds on its own clock: an id is
// remembered for idWindow, and at most maxRecentIDs are, the oldest
// forgotten first.
func TestRecentIDs(t *testing.T) {
	r := newRecentIDs()
	var next uint64
	store := func() (uint64, error) { next++; return next, nil }
	f := func(id string, now time.Duration, wantSeq uint64, wantDup bool) {
		t.Helper()
		seq, dup, err := r.once(id, int64(now), store)
		if err != nil || seq != wantSeq || dup != wantDup {
			t.Fatalf("once(%q) at %s = %d, %v, %v; want %d, %v", id, now, seq, dup, err, wantSeq, wantDup)
		}
	}
	f("a", 0, 1, false)
	f("a", idWindow-1, 1, true)
	f("b", idWindow-1, 2, false)
	f("a", idWindow, 3, false) // forgotten, stored again
	f("a", idWindow+1, 3, true)
	f("b", 2*idWindow-2, 2, true)
	f("b", 2*idWindow-1, 4, false)

	// A store that fails remembers nothing.
	if _, _, err := r.once("c", 0, func() (uint64, error) { return 0, ingest.ErrTooManyCities }); err != ingest.ErrTooManyCities {
		t.Fatalf("once with a failing store: %v", err)
	}
	f("c", 0, 5, false)

	// Far more ids than the bound, within the window.
	r = newRecentIDs()
	const n = 4 * maxRecentIDs
	now := 3 * idWindow
	for i := range n {
		f(fmt.Sprintf("id-%d", i), now, next+1, false)
	}
	held := 0
	for i := range r.shards {
		sh := &r.shards[i]
		if len(sh.seqs) != len(sh.order)-sh.head || len(sh.seqs) > maxRecentIDs/idShards {
			t.Fatalf("shard %d holds %d ids, %d in order, bound %d", i, len(sh.seqs), len(sh.order)-sh.head, maxRecentIDs/idShards)
		}
		held += len(sh.seqs)
	}
	if held < maxRecentIDs*9/10 {
		t.Fatalf("%d ids held of %d, want about %d", held, n, maxRecentIDs)
	}
	// The newest are still known, the oldest forgotten.
	last := next
	f(fmt.Sprintf("id-%d", n-1), now, last, true)
	f("id-0", now, last+1, false)
}
