package producer

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testTimeout bounds every wait in these tests; reaching it is a failure
// (a hang), never the expected path.
const testTimeout = 10 * time.Second

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func dial(t *testing.T, g *fakeGateway, opts Options) *Producer {
	t.Helper()
	if opts.ReconnectMin == 0 {
		opts.ReconnectMin, opts.ReconnectMax = time.Millisecond, 5*time.Millisecond
	}
	p, err := Dial(testContext(t), g.addr(), opts)
	if err != nil {
		t.Fatalf("Dial: %s", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// result is one SendAsync outcome.
type result struct {
	seq uint64
	err error
}

// collector gathers SendAsync callbacks in the order they run.
type collector struct {
	mu      sync.Mutex
	results []result
	order   []int // index given to cb, in callback order
	done    chan struct{}
	want    int
}

func newCollector(want int) *collector {
	return &collector{results: make([]result, want), done: make(chan struct{}), want: want}
}

func (c *collector) cb(i int) func(uint64, error) {
	return func(seq uint64, err error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.results[i] = result{seq, err}
		c.order = append(c.order, i)
		if len(c.order) == c.want {
			close(c.done)
		}
	}
}

func (c *collector) wait(t *testing.T) []result {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(testTimeout):
		c.mu.Lock()
		defer c.mu.Unlock()
		t.Fatalf("only %d of %d callbacks ran", len(c.order), c.want)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]result(nil), c.results...)
}

func dataLine(i int) []byte {
	return fmt.Appendf(nil, `{"city":"nairobi","type":"data_update","data":{"n":%d}}`, i)
}

func TestSendAcksInOrder(t *testing.T) {
	g := (&fakeGateway{}).start(t)
	p := dial(t, g, Options{})
	ctx := testContext(t)

	var last uint64
	for i := range 50 {
		line := dataLine(i)
		if i%2 == 1 {
			line = fmt.Appendf(nil, `{"id":"own-%d","city":"lagos","type":"snapshot","data":{}}`, i)
		}
		seq, err := p.Send(ctx, line)
		if err != nil {
			t.Fatalf("Send %d: %s", i, err)
		}
		if seq != last+1 {
			t.Fatalf("Send %d: seq %d after %d", i, seq, last)
		}
		last = seq
	}
	got := g.received()
	if len(got) != 50 {
		t.Fatalf("gateway read %d lines, want 50", len(got))
	}
	ids := map[string]bool{}
	for i, line := range got {
		var m struct{ ID, City string }
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %d is not JSON: %s: %q", i+1, err, line)
		}
		if i%2 == 1 && m.ID != fmt.Sprintf("own-%d", i) {
			t.Fatalf("line %d: id %q, want the caller's own-%d", i+1, m.ID, i)
		}
		if m.ID == "" || ids[m.ID] {
			t.Fatalf("line %d: id %q empty or repeated", i+1, m.ID)
		}
		ids[m.ID] = true
	}
}

// TestSendAsyncPipelines runs against a gateway that answers only once it
// has read ten lines: a client that waited for each answer before writing
// the next line would hang here.
func TestSendAsyncPipelines(t *testing.T) {
	g := (&fakeGateway{batch: 10}).start(t)
	p := dial(t, g, Options{MaxInFlight: 16})
	ctx := testContext(t)

	const n = 200
	col := newCollector(n)
	for i := range n {
		if err := p.SendAsync(ctx, dataLine(i), col.cb(i)); err != nil {
			t.Fatalf("SendAsync %d: %s", i, err)
		}
	}
	res := col.wait(t)
	for i, r := range res {
		if r.err != nil || r.seq != uint64(i+1) {
			t.Fatalf("message %d: seq %d, err %v; want seq %d", i, r.seq, r.err, i+1)
		}
		if col.order[i] != i {
			t.Fatalf("callback %d was for message %d: callbacks out of order", i, col.order[i])
		}
	}
}

func TestSendAsyncConcurrentSenders(t *testing.T) {
	g := (&fakeGateway{}).start(t)
	p := dial(t, g, Options{MaxInFlight: 8})
	ctx := testContext(t)

	const senders, each = 4, 250
	col := newCollector(senders * each)
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for i := range each {
				if err := p.SendAsync(ctx, dataLine(i), col.cb(s*each+i)); err != nil {
					t.Errorf("SendAsync: %s", err)
					return
				}
			}
		})
	}
	wg.Wait()
	res := col.wait(t)
	// Callbacks run in line order, so seqs rise in callback order.
	var last uint64
	for _, i := range col.order {
		r := res[i]
		if r.err != nil || r.seq <= last {
			t.Fatalf("message %d: seq %d (previous callback %d), err %v", i, r.seq, last, r.err)
		}
		last = r.seq
	}
}

func TestRejectMappedToLine(t *testing.T) {
	g := (&fakeGateway{}).start(t)
	p := dial(t, g, Options{})
	ctx := testContext(t)

	lines := []string{
		`{"city":"nairobi","type":"data_update","data":{}}`,
		`{"type":"data_update","data":{}}`, // no city, no id
		`{"id":"x3","city":"nairobi","type":"data_update","data":{}}`,
		`{"id":"x4","type":"data_update","data":{}}`, // no city, has an id
		`{"city":"nairobi","type":"data_update","data":{}}`,
	}
	col := newCollector(len(lines))
	for i, l := range lines {
		if err := p.SendAsync(ctx, []byte(l), col.cb(i)); err != nil {
			t.Fatalf("SendAsync %d: %s", i, err)
		}
	}
	res := col.wait(t)
	for i, r := range res {
		var rej *RejectError
		switch i {
		case 1, 3:
			if !errors.As(r.err, &rej) || rej.Line != i+1 || rej.Message != `missing "city"` {
				t.Fatalf("message %d: err %v, want a rejection of line %d", i, r.err, i+1)
			}
		default:
			if r.err != nil || r.seq == 0 {
				t.Fatalf("message %d: seq %d, err %v, want an ack", i, r.seq, r.err)
			}
		}
	}

	// Send reports the rejection too, with the next line number.
	_, err := p.Send(ctx, []byte(`{"type":"alerts","alerts":[]}`))
	var rej *RejectError
	if !errors.As(err, &rej) || rej.Line != 6 {
		t.Fatalf("Send: err %v, want a rejection of line 6", err)
	}
}

func TestInvalidLineNotSent(t *testing.T) {
	g := (&fakeGateway{}).start(t)
	p := dial(t, g, Options{MaxLineBytes: 300})
	ctx := testContext(t)

	f := func(line string, want error) {
		t.Helper()
		if _, err := p.Send(ctx, []byte(line)); !errors.Is(err, want) {
			t.Fatalf("Send(%.40q): err %v, want %v", line, err, want)
		}
		if err := p.SendAsync(ctx, []byte(line), func(uint64, error) { t.Errorf("callback for an unsent line") }); !errors.Is(err, want) {
			t.Fatalf("SendAsync(%.40q): err %v, want %v", line, err, want)
		}
	}
	f(``, ErrInvalidLine)
	f("{\"a\":1}\n{\"b\":2}", ErrInvalidLine)
	f(`{"id":""}`, ErrInvalidLine)
	f(`{"city":`, ErrInvalidLine)
	f(`{"city":"`+strings.Repeat("x", 300)+`"}`, ErrLineTooLong)
	if got := g.received(); len(got) != 0 {
		t.Fatalf("gateway read %q", got)
	}
}

// TestConnectionLostMidStream: the gateway answers two of five pipelined
// lines and drops the connection. The three unanswered messages fail as
// "maybe stored" with their ids; the next send dials again.
func TestConnectionLostMidStream(t *testing.T) {
	g := (&fakeGateway{dropAfter: 5, answerFirst: 2}).start(t)
	p := dial(t, g, Options{})
	ctx := testContext(t)

	col := newCollector(5)
	for i := range 5 {
		line := fmt.Appendf(nil, `{"id":"m%d","city":"nairobi","type":"data_update","data":{}}`, i)
		if err := p.SendAsync(ctx, line, col.cb(i)); err != nil {
			t.Fatalf("SendAsync %d: %s", i, err)
		}
	}
	res := col.wait(t)
	for i, r := range res {
		if i < 2 {
			if r.err != nil {
				t.Fatalf("message %d: %s, want an ack", i, r.err)
			}
			continue
		}
		var ms *MaybeStoredError
		if !errors.As(r.err, &ms) || ms.ID != fmt.Sprintf("m%d", i) {
			t.Fatalf("message %d: err %v, want *MaybeStoredError for id m%d", i, r.err, i)
		}
		if !strings.Contains(r.err.Error(), "may or may not have been stored") {
			t.Fatalf("message %d: error %q does not say the outcome is unknown", i, r.err)
		}
	}

	if _, err := p.Send(ctx, dataLine(5)); err != nil {
		t.Fatalf("Send after the drop: %s", err)
	}
	if n := g.accepted.Load(); n != 2 {
		t.Fatalf("gateway accepted %d connections, want 2", n)
	}
}

// TestInFlightBoundBlocks: against a gateway that stops reading, sends
// block once MaxInFlight messages are unanswered; the ack timeout then fails
// those messages, and Close releases a sender still waiting for a slot.
func TestInFlightBoundBlocks(t *testing.T) {
	g := (&fakeGateway{stall: true}).start(t)
	const ackTimeout = time.Second
	p := dial(t, g, Options{MaxInFlight: 4, AckTimeout: ackTimeout})
	ctx := testContext(t)

	col := newCollector(4)
	start := time.Now()
	for i := range 4 {
		if err := p.SendAsync(ctx, dataLine(i), col.cb(i)); err != nil {
			t.Fatalf("SendAsync %d: %s", i, err)
		}
	}

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := p.SendAsync(short, dataLine(4), nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SendAsync past the bound: err %v, want context.DeadlineExceeded", err)
	}
	if _, err := p.Send(short, dataLine(4)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send past the bound: err %v, want context.DeadlineExceeded", err)
	}
	blocked := make(chan error, 1)
	go func() { blocked <- p.SendAsync(ctx, dataLine(5), nil) }()
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %s", err)
	}
	if err := <-blocked; !errors.Is(err, ErrClosed) {
		t.Fatalf("sender waiting for a slot: err %v, want ErrClosed", err)
	}
	// Close waited for the four answers, which never came: they failed at
	// the ack timeout.
	res := col.wait(t)
	if el := time.Since(start); el < ackTimeout {
		t.Fatalf("Close returned after %s, before the ack timeout", el)
	}
	for i, r := range res {
		var ms *MaybeStoredError
		if !errors.As(r.err, &ms) || !errors.Is(r.err, ErrAckTimeout) {
			t.Fatalf("message %d: err %v, want *MaybeStoredError wrapping ErrAckTimeout", i, r.err)
		}
	}
}

// TestCloseFlushes: Close waits for every message in flight to be answered.
func TestCloseFlushes(t *testing.T) {
	g := (&fakeGateway{batch: 10}).start(t)
	p := dial(t, g, Options{})
	ctx := testContext(t)

	const n = 30
	col := newCollector(n)
	for i := range n {
		if err := p.SendAsync(ctx, dataLine(i), col.cb(i)); err != nil {
			t.Fatalf("SendAsync %d: %s", i, err)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %s", err)
	}
	select {
	case <-col.done:
	default:
		t.Fatalf("Close returned before every callback ran")
	}
	for i, r := range col.wait(t) {
		if r.err != nil {
			t.Fatalf("message %d: %s", i, r.err)
		}
	}
	if len(g.received()) != n {
		t.Fatalf("gateway read %d lines, want %d", len(g.received()), n)
	}

	if _, err := p.Send(ctx, dataLine(0)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: err %v, want ErrClosed", err)
	}
	if err := p.SendAsync(ctx, dataLine(0), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("SendAsync after Close: err %v, want ErrClosed", err)
	}
	if _, err := p.Publish(ctx, "nairobi", "data_update", map[string]int{"a": 1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Close: err %v, want ErrClosed", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %s", err)
	}
}

func TestPublish(t *testing.T) {
	g := (&fakeGateway{}).start(t)
	p := dial(t, g, Options{})
	ctx := testContext(t)

	f := func(typ string, data any, wantKey, wantValue string) {
		t.Helper()
		if _, err := p.Publish(ctx, "nairobi", typ, data); err != nil {
			t.Fatalf("Publish %s: %s", typ, err)
		}
		got := g.received()
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(got[len(got)-1]), &m); err != nil {
			t.Fatalf("Publish %s wrote %q: %s", typ, got[len(got)-1], err)
		}
		if len(m) != 4 || string(m["city"]) != `"nairobi"` || string(m["type"]) != `"`+typ+`"` || len(m["id"]) < 3 {
			t.Fatalf("Publish %s wrote %q", typ, got[len(got)-1])
		}
		if string(m[wantKey]) != wantValue {
			t.Fatalf("Publish %s: %s is %s, want %s", typ, wantKey, m[wantKey], wantValue)
		}
	}
	f("data_update", map[string]float64{"temp": 21.5}, "data", `{"temp":21.5}`)
	f("snapshot", json.RawMessage("{\"a\" :\n 1}"), "data", `{"a":1}`)
	f("alerts", []map[string]string{{"severity": "critical", "message": "flood"}}, "alerts",
		`[{"message":"flood","severity":"critical"}]`)
}

// TestWrongAckFailsConnection: an ack that does not match the message due
// means the answer stream cannot be trusted: the connection is dropped, its
// messages fail as "maybe stored", and the next send dials again.
func TestWrongAckFailsConnection(t *testing.T) {
	g := (&fakeGateway{wrongAck: true}).start(t)
	p := dial(t, g, Options{})
	ctx := testContext(t)

	_, err := p.Send(ctx, dataLine(0))
	var ms *MaybeStoredError
	if !errors.As(err, &ms) || !strings.Contains(err.Error(), "nobody-sent-this") {
		t.Fatalf("Send: err %v, want *MaybeStoredError naming the bad ack", err)
	}
	if _, err := p.Send(ctx, dataLine(1)); err != nil {
		t.Fatalf("Send on the new connection: %s", err)
	}
}

// TestGatewayRefusesConnection: an answer about the connection (line 0)
// fails the messages in flight as not stored, with the gateway's reason.
func TestGatewayRefusesConnection(t *testing.T) {
	g := (&fakeGateway{refuse: true}).start(t)
	p := dial(t, g, Options{})
	_, err := p.Send(testContext(t), dataLine(0))
	var re *RefusedError
	var ms *MaybeStoredError
	if !errors.As(err, &re) || errors.As(err, &ms) || re.Message != "too many producer connections" {
		t.Fatalf("Send: err %v, want *RefusedError with the gateway's reason", err)
	}
}

func TestDialErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	if _, err := Dial(testContext(t), addr, Options{}); err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Dial to a closed port: err %v, want one naming %s", err, addr)
	}

	f := func(opts Options, wantField string) {
		t.Helper()
		_, err := Dial(testContext(t), addr, opts)
		if err == nil || !strings.Contains(err.Error(), wantField) {
			t.Fatalf("Dial(%+v): err %v, want one naming %s", opts, err, wantField)
		}
	}
	f(Options{MaxInFlight: -1}, "Options.MaxInFlight")
	f(Options{MaxLineBytes: 10}, "Options.MaxLineBytes")
	f(Options{AckTimeout: -time.Second}, "Options.AckTimeout")
	f(Options{ReconnectMin: time.Second, ReconnectMax: time.Millisecond}, "Options.ReconnectMax")
}

// TestRedialAfterGatewayRestart: after the gateway goes away, a send dials again and
// fails; once it is back, a send reconnects.
func TestRedialAfterGatewayRestart(t *testing.T) {
	g := (&fakeGateway{}).start(t)
	p := dial(t, g, Options{})
	ctx := testContext(t)
	if _, err := p.Send(ctx, dataLine(0)); err != nil {
		t.Fatalf("Send: %s", err)
	}
	addr := g.addr()
	g.stop()

	// The connection may not have noticed the close yet: the send then
	// fails as "maybe stored"; the one after that must dial and fail.
	var err error
	for range 3 {
		if _, err = p.Send(ctx, dataLine(1)); err != nil && strings.Contains(err.Error(), "cannot connect") {
			break
		}
	}
	if err == nil || !strings.Contains(err.Error(), "cannot connect") {
		t.Fatalf("Send with the gateway down: err %v, want a dial error", err)
	}

	ln, lerr := net.Listen("tcp", addr)
	if lerr != nil {
		t.Skipf("cannot listen again on %s: %s", addr, lerr)
	}
	(&fakeGateway{}).serveOn(t, ln)
	if _, err := p.Send(ctx, dataLine(2)); err != nil {
		t.Fatalf("Send after the gateway is back: %s", err)
	}
}

// TestResendOnRetry: a line the gateway answers with "retry" (its cluster
// bus failed) is resent, with the same id, on the same connection, after a
// pause, until it is acked; the caller sees only the ack.
func TestResendOnRetry(t *testing.T) {
	g := (&fakeGateway{retry: retryNotStored, retryLines: 3}).start(t)
	p := dial(t, g, Options{})
	seq, err := p.Send(testContext(t), []byte(`{"id":"r1","city":"c","type":"data_update","data":{}}`))
	if err != nil || seq == 0 {
		t.Fatalf("Send = %d, %v; want an ack after the resends", seq, err)
	}
	got := g.received()
	if len(got) != 4 {
		t.Fatalf("gateway read %d lines, want the line and 3 resends: %q", len(got), got)
	}
	for _, l := range got {
		if l != got[0] {
			t.Fatalf("resent %q, first sent %q", l, got[0])
		}
	}
	if n := g.accepted.Load(); n != 1 {
		t.Fatalf("%d connections, want the one", n)
	}
}

// TestResendGivesUp: past Options.RetryTimeout a message answered with
// "retry" fails with what its last answer says: not stored (*RejectError,
// Retryable) or maybe stored (*MaybeStoredError). With a negative
// RetryTimeout it fails at the first answer, sent once.
func TestResendGivesUp(t *testing.T) {
	f := func(retry string, timeout time.Duration, check func(error) bool) {
		t.Helper()
		g := (&fakeGateway{retry: retry}).start(t)
		p := dial(t, g, Options{RetryTimeout: timeout})
		_, err := p.Send(testContext(t), []byte(`{"id":"g1","city":"c","type":"data_update","data":{}}`))
		if !check(err) {
			t.Fatalf("retry %s, RetryTimeout %s: Send error %v (%T)", retry, timeout, err, err)
		}
		if n := len(g.received()); timeout < 0 && n != 1 || timeout > 0 && n < 2 {
			t.Fatalf("retry %s, RetryTimeout %s: the gateway read %d lines", retry, timeout, n)
		}
	}
	rejected := func(err error) bool {
		var re *RejectError
		return errors.As(err, &re) && re.Retryable
	}
	maybe := func(err error) bool {
		var me *MaybeStoredError
		return errors.As(err, &me) && me.ID == "g1" && strings.Contains(err.Error(), "cluster bus")
	}
	f(retryNotStored, 30*time.Millisecond, rejected)
	f(retryMaybeStored, 30*time.Millisecond, maybe)
	f(retryNotStored, -1, rejected)
}

// TestCloseWaitsForResends: Close returns once a message being resent is
// answered, its callback run.
func TestCloseWaitsForResends(t *testing.T) {
	g := (&fakeGateway{retry: retryNotStored, retryLines: 2}).start(t)
	p := dial(t, g, Options{})
	c := newCollector(1)
	if err := p.SendAsync(testContext(t), []byte(`{"id":"w1","city":"c","type":"data_update","data":{}}`), c.cb(0)); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.done:
	default:
		t.Fatal("Close returned before the resent message was answered")
	}
	if r := c.results[0]; r.err != nil || r.seq == 0 {
		t.Fatalf("resent message: %+v, want an ack", r)
	}
}

// holding waits until p's connection is on hold (a line answered "retry"
// is waiting to be resent).
func holding(t *testing.T, p *Producer) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		p.mu.Lock()
		c := p.cur
		p.mu.Unlock()
		if c != nil {
			c.mu.Lock()
			h := c.onHold()
			c.mu.Unlock()
			if h {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the connection never went on hold")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestResendKeepsOrder: lines answered "retry" during an outage are stored
// in the order they were sent, with those sent during it: after a backoff
// the oldest is resent alone until the gateway stores it, then the rest
// follow in order. The gateway refuses every line until it has refused two
// resends; half the lines are sent once the connection is on hold.
func TestResendKeepsOrder(t *testing.T) {
	g := (&fakeGateway{outage: 2}).start(t)
	p := dial(t, g, Options{ReconnectMin: 20 * time.Millisecond, ReconnectMax: 40 * time.Millisecond})
	const n = 30
	c := newCollector(n)
	ctx := testContext(t)
	var ids []string
	for i := range n {
		if i == n/2 {
			holding(t, p)
		}
		ids = append(ids, fmt.Sprintf("o%d", i))
		line := fmt.Appendf(nil, `{"id":%q,"city":"c","type":"data_update","data":{"v":%d}}`, ids[i], i)
		if err := p.SendAsync(ctx, line, c.cb(i)); err != nil {
			t.Fatal(err)
		}
	}
	res := c.wait(t)
	for i, r := range res {
		if r.err != nil || i > 0 && r.seq <= res[i-1].seq {
			t.Fatalf("message %d: %+v after %+v: want acks in send order; stored %q, read %q", i, r, res[max(i-1, 0)], g.storedIDs(), g.received())
		}
	}
	if got := g.storedIDs(); !slices.Equal(got, ids) {
		t.Fatalf("stored %q, want %q", got, ids)
	}
	// What the gateway read from the first resend on: the oldest line alone
	// (refused twice, then stored), then every other, in order.
	var read []string
	for _, l := range g.received() {
		var m struct{ ID string }
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		read = append(read, m.ID)
	}
	first := slices.Index(read[1:], "o0") + 1
	want := append([]string{"o0", "o0", "o0"}, ids[1:]...)
	if first == 0 || !slices.Equal(read[first:], want) {
		t.Fatalf("read %q: want, from the first resend, %q", read, want)
	}
}

// TestHoldEndsWithConnection: when the connection fails during a hold, the
// lines answered "retry" fail with that answer and the lines sent during
// the hold, never written, as in-flight ones do (maybe stored: resend them
// with their ids).
func TestHoldEndsWithConnection(t *testing.T) {
	g := (&fakeGateway{outage: 1 << 30}).start(t)
	p := dial(t, g, Options{ReconnectMin: time.Hour, ReconnectMax: time.Hour})
	c := newCollector(4)
	ctx := testContext(t)
	for i := range 4 {
		if i == 2 {
			holding(t, p)
		}
		if err := p.SendAsync(ctx, fmt.Appendf(nil, `{"id":"h%d","city":"c","type":"data_update","data":{}}`, i), c.cb(i)); err != nil {
			t.Fatal(err)
		}
	}
	g.stop()
	res := c.wait(t)
	for i := range 2 {
		var re *RejectError
		if !errors.As(res[i].err, &re) || !re.Retryable {
			t.Errorf("line %d answered retry: %v (%T), want its answer, a retryable *RejectError", i, res[i].err, res[i].err)
		}
	}
	for i := 2; i < 4; i++ {
		var me *MaybeStoredError
		if !errors.As(res[i].err, &me) || me.ID != fmt.Sprintf("h%d", i) {
			t.Errorf("line %d sent during the hold: %v (%T), want a *MaybeStoredError", i, res[i].err, res[i].err)
		}
	}
	if got := g.storedIDs(); len(got) != 0 {
		t.Errorf("stored %q during the outage", got)
	}
}

// TestHoldWaitsForLoneLine: a line already in flight when another was
// answered "retry", acked meanwhile, does not end the hold: the refused line
// is still resent alone after its backoff, and the lines sent during the
// hold follow it once it is stored. The gateway refuses "a" twice and holds
// its answer to "b" until c, d and e are sent.
func TestHoldWaitsForLoneLine(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	release := make(chan struct{})
	var (
		mu           sync.Mutex
		read, stored []string
	)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		sc := bufio.NewScanner(c)
		refused := 0
		for n := 1; sc.Scan(); n++ {
			var m struct{ ID string }
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				return
			}
			mu.Lock()
			read = append(read, m.ID)
			mu.Unlock()
			var ans []byte
			switch {
			case m.ID == "a" && refused < 2:
				refused++
				ans = appendJSONLine(nil, fakeError{Error: "cluster bus (NATS) unavailable", Line: n, Retry: retryNotStored})
			default:
				if m.ID == "b" {
					<-release
				}
				mu.Lock()
				stored = append(stored, m.ID)
				mu.Unlock()
				ans = appendJSONLine(nil, fakeAck{Ack: m.ID, Seq: uint64(n)})
			}
			if _, err := c.Write(ans); err != nil {
				return
			}
		}
	}()
	p, err := Dial(testContext(t), ln.Addr().String(), Options{ReconnectMin: 5 * time.Millisecond, ReconnectMax: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	ids := []string{"a", "b", "c", "d", "e"}
	col := newCollector(len(ids))
	for i, id := range ids {
		if i == 2 {
			holding(t, p)
		}
		if err := p.SendAsync(testContext(t), fmt.Appendf(nil, `{"id":%q,"city":"c","type":"data_update","data":{}}`, id), col.cb(i)); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	for i, r := range col.wait(t) {
		if r.err != nil {
			t.Fatalf("%s: %v", ids[i], r.err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	// b was in flight: stored when the gateway took it. The rest in order.
	if want := []string{"b", "a", "c", "d", "e"}; !slices.Equal(stored, want) {
		t.Fatalf("stored %q, want %q (read %q)", stored, want, read)
	}
	if want := []string{"a", "b", "a", "a", "c", "d", "e"}; !slices.Equal(read, want) {
		t.Fatalf("read %q, want %q: a alone until stored, then the held lines", read, want)
	}
}

// TestHeldLinesTimeOutTogether: in an outage that outlasts RetryTimeout,
// the lines held behind a refused one fail with it (they were held as long
// as it was resent), not each after a RetryTimeout of its own: the gateway
// reads at most two of them, and every callback runs.
func TestHeldLinesTimeOutTogether(t *testing.T) {
	g := (&fakeGateway{outage: 1 << 30}).start(t)
	p := dial(t, g, Options{RetryTimeout: 100 * time.Millisecond, ReconnectMin: 10 * time.Millisecond, ReconnectMax: 20 * time.Millisecond})
	const n = 10
	c := newCollector(n)
	for i := range n {
		if i == 1 {
			holding(t, p)
		}
		if err := p.SendAsync(testContext(t), fmt.Appendf(nil, `{"id":"t%d","city":"c","type":"data_update","data":{}}`, i), c.cb(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range c.wait(t) {
		var re *RejectError
		if !errors.As(r.err, &re) || !re.Retryable {
			t.Errorf("line %d: %v (%T), want a retryable *RejectError: not stored", i, r.err, r.err)
		}
	}
	sent := map[string]bool{}
	for _, l := range g.received() {
		var m struct{ ID string }
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		if m.ID != "t0" {
			sent[m.ID] = true
		}
	}
	if len(sent) > 2 {
		t.Errorf("the gateway read %d of the held lines (%v): want them failed with the line before them", len(sent), sent)
	}
}

// TestRandomFaults: against a gateway that answers each line at random
// with an ack, "retry" (not_stored or maybe_stored) or by dropping the
// connection, with four senders and a Close at a random moment, every send
// that was accepted gets exactly one callback, every in-flight slot is
// given back and Close returns: holds, resends, redials and Close
// interleaved lose or double nothing.
func TestRandomFaults(t *testing.T) {
	for round := range 10 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var (
			seq   atomic.Uint64
			wg    sync.WaitGroup
			mu    sync.Mutex
			conns []net.Conn
		)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer c.Close()
					sc := bufio.NewScanner(c)
					for n := 1; sc.Scan(); n++ {
						var m struct{ ID string }
						_ = json.Unmarshal(sc.Bytes(), &m)
						var ans []byte
						switch r := rand.IntN(100); {
						case r < 2:
							return
						case r < 35:
							ans = appendJSONLine(nil, fakeError{Error: "cluster bus (NATS) unavailable", Line: n, Retry: retryNotStored})
						case r < 45:
							ans = appendJSONLine(nil, fakeError{Error: "no confirmation", Line: n, Retry: retryMaybeStored})
						default:
							ans = appendJSONLine(nil, fakeAck{Ack: m.ID, Seq: seq.Add(1)})
						}
						if _, err := c.Write(ans); err != nil {
							return
						}
					}
				}()
			}
		}()
		p, err := Dial(testContext(t), ln.Addr().String(), Options{MaxInFlight: 8, RetryTimeout: 30 * time.Millisecond,
			ReconnectMin: time.Millisecond, ReconnectMax: 3 * time.Millisecond, AckTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		const senders, per = 4, 200
		var (
			calls    [senders * per]atomic.Int32
			accepted atomic.Int32
			sent     atomic.Int32
			swg      sync.WaitGroup
			once     sync.Once
		)
		closed := make(chan struct{})
		closeNow := func() { once.Do(func() { go func() { _ = p.Close(); close(closed) }() }) }
		closeAt := int32(rand.IntN(senders * per))
		for s := range senders {
			swg.Add(1)
			go func() {
				defer swg.Done()
				for i := range per {
					k := s*per + i
					if sent.Add(1) == closeAt {
						closeNow()
					}
					line := fmt.Appendf(nil, `{"id":"k%d","city":"c","type":"data_update","data":{}}`, k)
					if p.SendAsync(testContext(t), line, func(uint64, error) { calls[k].Add(1) }) == nil {
						accepted.Add(1)
					}
				}
			}()
		}
		swg.Wait()
		closeNow()
		select {
		case <-closed:
		case <-time.After(testTimeout):
			t.Fatalf("round %d: Close did not return", round)
		}
		var total int32
		for k := range calls {
			if v := calls[k].Load(); v > 1 {
				t.Fatalf("round %d: k%d called back %d times", round, k, v)
			}
			total += calls[k].Load()
		}
		if total != accepted.Load() || len(p.slots) != 0 {
			t.Fatalf("round %d: %d callbacks for %d sends accepted, %d slots still taken", round, total, accepted.Load(), len(p.slots))
		}
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}
}
