package producer

import (
	"bufio"
	"encoding/json"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// fakeGateway is a test peer that speaks the ingest protocol on a real TCP
// listener: it parses each line with encoding/json, acks lines that have an
// "id" with a gateway-wide seq, and answers {"error":…,"line":N} for lines
// that are not JSON objects or miss "city". The fields below bend that
// behaviour for one test; set them before start.
type fakeGateway struct {
	// stall accepts connections and never reads from them.
	stall bool
	// batch holds answers until this many lines have been read (0: answer
	// each line when read). A client that waits for each answer before
	// writing the next line stalls against it.
	batch int
	// dropAfter makes the first connection close right after reading its
	// dropAfter-th line, having answered only its first answerFirst lines.
	dropAfter, answerFirst int
	// wrongAck makes the first connection ack with an id nobody sent.
	wrongAck bool
	// refuse answers every new connection with a connection-level error
	// (line 0) and closes it, as the gateway does when it is full.
	refuse bool
	// retry answers lines with an id as the gateway does when its cluster
	// bus fails, {"error":…,"line":N,"retry":retry}: the first retryLines
	// of them, or all with retryLines 0.
	retry      string
	retryLines int
	// outage answers every line with an id {"retry":"not_stored"}, as a
	// gateway cut off from its cluster bus does, until it has so refused
	// outage resends (lines whose id it read before); then it acks.
	outage int

	ln       net.Listener
	quit     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	seq      atomic.Uint64
	accepted atomic.Int32
	retried  atomic.Int32

	mu       sync.Mutex
	lines    []string // every line read, in order
	stored   []string // the ids acked, in order
	seen     map[string]bool
	resentNo int // resends refused during the outage
	conns    []net.Conn
}

// start listens on 127.0.0.1:0 and serves until the test ends.
func (g *fakeGateway) start(t testing.TB) *fakeGateway {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cannot listen: %s", err)
	}
	return g.serveOn(t, ln)
}

// serveOn serves on ln until stop or the end of the test.
func (g *fakeGateway) serveOn(t testing.TB, ln net.Listener) *fakeGateway {
	g.ln, g.quit = ln, make(chan struct{})
	g.wg.Add(1)
	go g.accept()
	t.Cleanup(g.stop)
	return g
}

func (g *fakeGateway) addr() string { return g.ln.Addr().String() }

// stop closes the listener and every connection. Idempotent.
func (g *fakeGateway) stop() {
	g.stopOnce.Do(g.stopNow)
}

func (g *fakeGateway) stopNow() {
	close(g.quit)
	_ = g.ln.Close()
	g.mu.Lock()
	for _, c := range g.conns {
		_ = c.Close()
	}
	g.mu.Unlock()
	g.wg.Wait()
}

// received returns a copy of the lines read so far.
func (g *fakeGateway) received() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.lines...)
}

func (g *fakeGateway) accept() {
	defer g.wg.Done()
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		no := int(g.accepted.Add(1))
		g.mu.Lock()
		select {
		case <-g.quit: // stop has already closed the others
			g.mu.Unlock()
			_ = c.Close()
			return
		default:
		}
		g.conns = append(g.conns, c)
		g.mu.Unlock()
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			defer c.Close()
			g.serve(c, no)
		}()
	}
}

type fakeAck struct {
	Ack string `json:"ack"`
	Seq uint64 `json:"seq"`
}

type fakeError struct {
	Error string `json:"error"`
	Line  int    `json:"line"`
	Retry string `json:"retry,omitempty"`
}

func appendJSONLine(dst []byte, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return append(append(dst, b...), '\n')
}

// serve runs one connection; no is its 1-based accept order.
func (g *fakeGateway) serve(c net.Conn, no int) {
	switch {
	case g.stall:
		<-g.quit
		return
	case g.refuse:
		_, _ = c.Write(appendJSONLine(nil, fakeError{Error: "too many producer connections"}))
		return
	}
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 0, 64<<10), 2<<20)
	var held []byte // answers not written yet
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		g.mu.Lock()
		g.lines = append(g.lines, string(line))
		g.mu.Unlock()

		dropping := no == 1 && g.dropAfter > 0
		var m struct {
			City string `json:"city"`
			ID   string `json:"id"`
		}
		var answer []byte
		switch err := json.Unmarshal(line, &m); {
		case err != nil:
			answer = appendJSONLine(nil, fakeError{Error: "cannot parse JSON object", Line: n})
		case m.City == "":
			answer = appendJSONLine(nil, fakeError{Error: `missing "city"`, Line: n})
		case m.ID != "" && g.retry != "" && (g.retryLines == 0 || g.retried.Add(1) <= int32(g.retryLines)):
			answer = appendJSONLine(nil, fakeError{Error: "cluster bus (NATS) unavailable", Line: n, Retry: g.retry})
		case m.ID != "" && g.down(m.ID):
			answer = appendJSONLine(nil, fakeError{Error: "cluster bus (NATS) unavailable", Line: n, Retry: retryNotStored})
		case m.ID != "":
			id := m.ID
			if no == 1 && g.wrongAck {
				id = "nobody-sent-this"
			}
			g.mu.Lock()
			g.stored = append(g.stored, m.ID)
			g.mu.Unlock()
			answer = appendJSONLine(nil, fakeAck{Ack: id, Seq: g.seq.Add(1)})
		default:
			g.seq.Add(1)
		}
		if !dropping || n <= g.answerFirst {
			held = append(held, answer...)
		}
		if g.batch == 0 || n%g.batch == 0 || dropping && n == g.dropAfter {
			if _, err := c.Write(held); err != nil {
				return
			}
			held = held[:0]
		}
		if dropping && n == g.dropAfter {
			return
		}
	}
}

// down reports whether the outage refuses the line with id, and counts it.
func (g *fakeGateway) down(id string) bool {
	if g.outage == 0 {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.seen == nil {
		g.seen = make(map[string]bool)
	}
	resend := g.seen[id]
	g.seen[id] = true
	if g.resentNo == g.outage {
		return false
	}
	if resend {
		g.resentNo++
	}
	return true
}

// storedIDs returns a copy of the ids acked so far, in order.
func (g *fakeGateway) storedIDs() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.stored...)
}
