package gateway

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/metrocast/metrocast/gateway/ingest"
)

// TestShardSizes holds the lock shards to shardSize, so that two shards'
// locks never share a cache line (they were documented as padded to one
// and measured 72 and 56 bytes, which put neighbours' locks on one line).
func TestShardSizes(t *testing.T) {
	f := func(name string, size uintptr) {
		t.Helper()
		if size != shardSize {
			t.Errorf("%s is %d bytes, want %d: fix its padding", name, size, shardSize)
		}
	}
	f("hubShard", unsafe.Sizeof(hubShard{}))
	f("ipShard", unsafe.Sizeof(ipShard{}))
	var h hub
	f("hub.shards stride", uintptr(unsafe.Pointer(&h.shards[1]))-uintptr(unsafe.Pointer(&h.shards[0])))
	var l ipLimiter
	f("ipLimiter.shards stride", uintptr(unsafe.Pointer(&l.shards[1]))-uintptr(unsafe.Pointer(&l.shards[0])))
}

// heapInUse is the live heap after a collection.
func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// TestCitiesWithinMeans fills a node with 100,000 city names over the
// ingest port, a frame each: the rings never hold more than ring_memory
// (the coldest cities' frames are trimmed), the city past max_cities is
// refused, counted and logged once, and once the cities have been idle for
// city_idle_ttl (reloaded down from its default hour) they are dropped,
// their memory with them but for what they keep within idle_state_memory
// (an eighth of ring_memory), and a new city is served.
func TestCitiesWithinMeans(t *testing.T) {
	names, budget := 100_000, int64(4<<20)
	if raceEnabled {
		// The same, 40 times slower: a tenth of it.
		names, budget = 10_000, 1<<20
	}
	// What the rings may hold for a moment over the budget: the frame just
	// stored, before its publisher trims.
	const slack = 64 << 10
	var logs logBuffer
	s := startServer(t, Config{MaxCities: names, RingMemory: budget, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	base := heapInUse()

	var peak atomic.Int64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if m := s.hub.mem.Load(); m > peak.Load() {
				peak.Store(m)
			}
			time.Sleep(50 * time.Microsecond)
		}
	})

	c, err := net.DialTimeout("tcp", s.IngestAddr().String(), readTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var writer sync.WaitGroup
	writer.Go(func() {
		w := bufio.NewWriterSize(c, 64<<10)
		for i := range names {
			fmt.Fprintf(w, `{"id":"w%d","city":"w-%d","type":"data_update","data":{"v":%d,"pad":"0123456789abcdef0123456789abcdef"}}`+"\n", i, i, i)
		}
		_ = w.Flush()
	})
	r := bufio.NewReader(c)
	for i := range names {
		_ = c.SetReadDeadline(time.Now().Add(longTimeout))
		line, err := r.ReadBytes('\n')
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		var a answer
		if err := json.Unmarshal(line, &a); err != nil || a.Ack != fmt.Sprintf("w%d", i) || a.Seq != 1 {
			t.Fatalf("answer %d: %s, want the ack of w%d at seq 1", i, line, i)
		}
	}
	writer.Wait()
	close(stop)
	sampler.Wait()
	full := heapInUse()

	if n := s.hub.count.Load(); n != int64(names) {
		t.Fatalf("%d cities held, want %d", n, names)
	}
	if p := peak.Load(); p > budget+slack {
		t.Errorf("the rings held up to %d bytes, over ring_memory %d", p, budget)
	}
	if m := s.hub.mem.Load(); m > budget {
		t.Errorf("the rings hold %d bytes, over ring_memory %d", m, budget)
	}
	if s.hub.trimmed.Load() == 0 {
		t.Error("no frame was trimmed: the budget was never reached")
	}
	t.Logf("%d cities, a frame each: rings %d bytes (peak %d, budget %d), %d frames trimmed, heap +%d bytes (%d per city)",
		names, s.hub.mem.Load(), peak.Load(), budget, s.hub.trimmed.Load(), full-base, (full-base)/int64(names))

	// One more is refused, counted and logged, the log line at most once
	// per period.
	p := dialProducer(t, s)
	for i := range 3 {
		p.Write(t, dataLine(fmt.Sprintf("w-extra-%d", i), "data_update", `{"x":1}`))
		if a := p.Answer(t); !strings.Contains(a.Error, ingest.ErrTooManyCities.Error()) {
			t.Fatalf("a city past max_cities: %+v, want %q", a, ingest.ErrTooManyCities)
		}
	}
	if st := s.Stats(); st.CitiesRefused != 3 {
		t.Errorf("CitiesRefused %d, want 3", st.CitiesRefused)
	}
	if n := strings.Count(logs.String(), "refused a new city"); n != 1 {
		t.Errorf("%d log lines of refused cities, want 1:\n%s", n, logs.String())
	}

	// Idle past city_idle_ttl, every city goes, and its memory.
	cfg := *s.live.Load()
	cfg.CityIdleTTL = time.Second
	if err := s.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, longTimeout, func() bool { return s.hub.count.Load() == 0 && s.hub.keptMem.Load() <= s.cfg.IdleStateMemory })
	if st := s.Stats(); st.CitiesDropped != uint64(names) || st.RingMemory != 0 {
		t.Errorf("CitiesDropped %d, RingMemory %d: want %d and 0", st.CitiesDropped, st.RingMemory, names)
	}
	// What they keep to come back as they were stays within
	// idle_state_memory: the states first, then the marks they leave, go.
	if st := s.Stats(); st.IdleStatesEvicted == 0 || st.IdleStatesForgotten == 0 || st.IdleStatesRestored != 0 {
		t.Errorf("idle states evicted %d, forgotten %d, restored %d: want some evicted and forgotten, none restored",
			st.IdleStatesEvicted, st.IdleStatesForgotten, st.IdleStatesRestored)
	}
	if left := heapInUse() - base; left > 16<<20 {
		t.Errorf("the heap holds %d bytes more than before the cities: they were not freed", left)
	}

	cl := dialGobwas(t, wsURL(s, "cities=w-new"))
	readType(t, cl, "subscribed")
	readType(t, cl, "initial_data")
	p.Publish(t, dataLine("w-new", "data_update", `{"fresh":true}`))
	if m := readType(t, cl, "data_update"); m.City != "w-new" || string(m.Data) != `{"fresh":true}` {
		t.Fatalf("got %s, want the new city's frame", m.Raw)
	}
}

// TestSubscribeWithoutRing: a subscription to a city without data holds
// no ring memory, and little of any, however many such cities a client
// with a wildcard token asks for.
func TestSubscribeWithoutRing(t *testing.T) {
	const cities = 2000
	s := startServer(t, Config{MaxSubscriptions: cities})
	c := dialGobwas(t, wsURL(s, ""))
	base := heapInUse()
	const batch = 200 // cities per subscribe message
	for i := 0; i < cities; i += batch {
		var names []string
		for k := i; k < i+batch; k++ {
			names = append(names, fmt.Sprintf(`"e-%d"`, k))
		}
		send(t, c, `{"type":"subscribe","cities":[`+strings.Join(names, ",")+`]}`)
		readType(t, c, "subscribed")
		for range batch {
			readType(t, c, "initial_data")
		}
	}
	if m := s.hub.mem.Load(); m != 0 {
		t.Errorf("%d cities without data hold %d bytes of rings, want 0", cities, m)
	}
	// A city, its subscriber and its initial_data: about a KiB. The slots
	// of a full ring (ring_size 1024) would be 8 KiB each.
	per := (heapInUse() - base) / cities
	t.Logf("%d bytes of heap per city subscribed to", per)
	if per > 2048 {
		t.Errorf("%d bytes of heap per city subscribed to, want at most 2048", per)
	}
}

// TestCityDropResume drops a city idle for city_idle_ttl on a single node
// and brings it back: its seqs go on after the last it had, a client that
// had read it all resumes, and one that had not gets initial_data
// (resumed false) with the whole state, kept through the drop.
func TestCityDropResume(t *testing.T) {
	s := startServer(t, Config{CityIdleTTL: time.Second})
	p := dialProducer(t, s)
	for i := 1; i <= 3; i++ {
		if seq := p.Publish(t, dataLine("dr", "data_update", fmt.Sprintf(`{"old%d":%d}`, i, i))); seq != uint64(i) {
			t.Fatalf("seq %d, want %d", seq, i)
		}
	}
	c := dialGobwas(t, wsURL(s, "cities=dr"))
	readType(t, c, "subscribed")
	if m := readType(t, c, "initial_data"); m.Seq != 3 {
		t.Fatalf("initial_data at seq %d, want 3", m.Seq)
	}
	c.Close()
	waitFor(t, longTimeout, func() bool { return s.Stats().CitiesDropped == 1 })
	if s.hub.lookup("dr") != nil || s.hub.mem.Load() != 0 || s.hub.keptMem.Load() == 0 {
		t.Fatal("the dropped city is still held, or nothing of it kept")
	}

	if seq := p.Publish(t, dataLine("dr", "data_update", `{"new":1}`)); seq != 4 {
		t.Fatalf("the city came back at seq %d, want 4: after every seq it had", seq)
	}
	f := func(since uint64, resumed bool) {
		t.Helper()
		c := dialGobwas(t, wsURL(s, fmt.Sprintf("cities=dr&since=%d", since)))
		sub := readType(t, c, "subscribed")
		if got := sub.Cities[0].Resumed; got != resumed {
			t.Fatalf("since %d: resumed %v, want %v", since, got, resumed)
		}
		if resumed {
			if m := readType(t, c, "data_update"); m.Seq != 4 {
				t.Fatalf("since %d: frame %d, want 4", since, m.Seq)
			}
			return
		}
		if m := readType(t, c, "initial_data"); m.Seq != 4 || string(m.Data) != `{"new":1,"old1":1,"old2":2,"old3":3}` ||
			strings.Contains(string(m.Raw), "partial") {
			t.Fatalf("since %d: %s, want the whole state at seq 4", since, m.Raw)
		}
	}
	f(3, true)  // it had read everything before the drop
	f(2, false) // frame 3 is gone with the ring
	f(0, false)
	if st := s.Stats(); st.IdleStatesRestored != 1 || st.IdleStateMemory != 0 {
		t.Fatalf("idle states restored %d, holding %d bytes: want 1 and 0", st.IdleStatesRestored, st.IdleStateMemory)
	}
}
