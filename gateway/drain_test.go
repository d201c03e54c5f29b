package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// drainedClient is what one client saw of a drain.
type drainedClient struct {
	hints    int     // reconnect messages
	afterMs  float64 // the hint's after_ms
	code     ws.StatusCode
	closedAt time.Duration // close frame read, from the drain's start
	err      error
}

// TestDrainPaced drains a node holding 200 clients while a producer keeps
// sending: /readyz turns 503 at once, every client gets one reconnect hint
// and 1001, the closes are spread over the window, the producer is served
// until the clients are gone, and every line it sent is either acked and
// stored or unanswered and not stored.
func TestDrainPaced(t *testing.T) {
	t.Parallel()
	const (
		clients = 200
		window  = 1500 * time.Millisecond
		span    = time.Duration(float64(window) * drainShare)
	)
	s := startServer(t, Config{})
	var start atomic.Int64 // the drain's start, Unix nanoseconds
	results := make(chan drainedClient, clients)
	for range clients {
		c := dialGobwas(t, wsURL(s, "cities=drc"))
		go func() { results <- readUntilClose(c, &start) }()
	}
	waitFor(t, readTimeout, func() bool { return s.Stats().Subscriptions == clients })

	prod := startLineStream(t, s, "drp")
	waitFor(t, readTimeout, func() bool { return prod.acked.Load() >= 10 })

	sentBefore := prod.sent.Load()
	start.Store(time.Now().UnixNano())
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), window+readTimeout)
		defer cancel()
		drained <- s.Drain(ctx, window)
	}()

	// Not ready at once: while nearly every client is still connected.
	waitFor(t, readTimeout, func() bool {
		code, _ := adminGet(t, s, "/readyz")
		return code == http.StatusServiceUnavailable
	})
	if open := s.Stats().Connections; open < clients/2 {
		t.Errorf("/readyz turned 503 only when %d of %d clients were left", open, clients)
	}

	var early, late int
	var last time.Duration
	for range clients {
		r := <-results
		if r.err != nil || r.hints != 1 || r.code != ws.StatusGoingAway {
			t.Fatalf("client: %d hints, close %d, err %v; want 1 hint then 1001", r.hints, r.code, r.err)
		}
		if r.afterMs < 0 || r.afterMs >= float64(reconnectJitter.Milliseconds()) {
			t.Errorf("after_ms %v, want in [0, %d)", r.afterMs, reconnectJitter.Milliseconds())
		}
		if r.closedAt < window/10 {
			early++
		}
		if r.closedAt > span/2 {
			late++
		}
		last = max(last, r.closedAt)
	}
	// Paced evenly, ~11% close in the first tenth of the window and half
	// after the middle of the span. A loaded machine can only delay closes.
	if early > clients/3 {
		t.Errorf("%d of %d clients closed in the first 10%% of the window: not paced", early, clients)
	}
	if late < clients/5 || last < span/2 {
		t.Errorf("%d of %d clients closed after half the span, the last at %s: not spread over %s", late, clients, last, span)
	}

	if err := <-drained; err != nil {
		t.Fatalf("Drain: %s", err)
	}
	elapsed := time.Since(time.Unix(0, start.Load()))
	if elapsed > window+2*time.Second {
		t.Errorf("Drain took %s with a %s window", elapsed, window)
	}
	t.Logf("%d of %d closed early, %d late, last at %s; drain took %s", early, clients, late, last, elapsed)

	acked := prod.wait(t)
	if acked <= sentBefore {
		t.Errorf("%d lines acked, %d sent before the drain: ingest stopped before the clients were closed", acked, sentBefore)
	}
	if prod.openAtEOF != 0 {
		t.Errorf("the producer was closed while %d clients were open: producers go last", prod.openAtEOF)
	}
	if cs := s.Cities([]string{"drp"}, 0); len(cs) != 1 || cs[0].Head != acked {
		t.Errorf("city drp = %+v; %d lines acked: a line was stored without an ack", cs, acked)
	}
	if st := s.Stats(); st.Closes[CloseShutdown.String()] != clients || st.Connections != 0 {
		t.Errorf("closes %v, connections %d", st.Closes, st.Connections)
	}
}

// readUntilClose reads a drained client's messages until the server's
// close frame.
func readUntilClose(c client, start *atomic.Int64) drainedClient {
	var r drainedClient
	for {
		b, err := c.Next(readTimeout + 2*time.Second)
		var ce *closedError
		if errors.As(err, &ce) {
			r.code = ce.Code
			r.closedAt = time.Since(time.Unix(0, start.Load()))
			return r
		}
		if err != nil {
			r.err = err
			return r
		}
		m, err := parseMsg(b)
		if err != nil {
			r.err = err
			return r
		}
		if m.Type == "reconnect" {
			var h struct {
				AfterMs *float64 `json:"after_ms"`
			}
			if err := json.Unmarshal(b, &h); err != nil || h.AfterMs == nil {
				r.err = fmt.Errorf("bad reconnect hint %s", b)
				return r
			}
			r.hints++
			r.afterMs = *h.AfterMs
		}
	}
}

// lineStream is a producer that sends a line every 2 ms, each with an id,
// and reads the answers until the gateway closes it.
type lineStream struct {
	sent, acked atomic.Uint64
	stop        chan struct{}
	done        chan error
	openAtEOF   int64
}

func startLineStream(t *testing.T, s *Server, city string) *lineStream {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.IngestAddr().String(), readTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ls := &lineStream{stop: make(chan struct{}), done: make(chan error, 1)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		// The writer paces the load; it stops once the reader is done.
		defer wg.Done()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			line := fmt.Sprintf(`{"id":"p%d","city":%q,"type":"data_update","data":{"n":%d}}`+"\n", i, city, i)
			_ = c.SetWriteDeadline(time.Now().Add(readTimeout))
			if _, err := c.Write([]byte(line)); err != nil {
				return
			}
			ls.sent.Add(1)
			select {
			case <-ls.stop:
				return
			case <-tick.C:
			}
		}
	}()
	go func() {
		defer wg.Wait()
		defer close(ls.stop)
		br := bufio.NewReader(c)
		for n := uint64(0); ; n++ {
			_ = c.SetReadDeadline(time.Now().Add(readTimeout + 2*time.Second))
			line, err := br.ReadBytes('\n')
			if errors.Is(err, io.EOF) && len(line) == 0 {
				ls.openAtEOF = s.Stats().Connections
				_ = c.Close() // as a producer would on EOF
				ls.done <- nil
				return
			}
			if err != nil {
				ls.done <- fmt.Errorf("after %d answers: %w", n, err)
				return
			}
			var a answer
			if err := json.Unmarshal(line, &a); err != nil || a.Ack != fmt.Sprintf("p%d", n) || a.Seq != n+1 {
				ls.done <- fmt.Errorf("answer %d: %q, want the ack of p%d, seq %d", n, line, n, n+1)
				return
			}
			ls.acked.Add(1)
		}
	}()
	return ls
}

// wait returns how many lines were acked once the gateway has closed the
// producer; the acks must have come in order, one per line.
func (ls *lineStream) wait(t *testing.T) uint64 {
	t.Helper()
	if err := <-ls.done; err != nil {
		t.Fatalf("producer: %s", err)
	}
	return ls.acked.Load()
}
