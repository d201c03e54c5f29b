package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metrocast/metrocast/loadtest/result"
)

// A load run is one coordinator (the loadtest command) and one or more
// worker processes, each holding a share of the connections: one process
// cannot hold more than ~18,000 (the open-files limit), and the coordinator
// stays free to publish and to report. The coordinator starts each worker as
// this same executable with workerEnv set, and drives it over stdin/stdout
// with one JSON command per line, each answered by one JSON reply line.
const workerEnv = "METROCAST_LOADTEST_WORKER"

// spec is what a worker is started with: the run's options and its share of
// the connections, clients [Lo, Hi).
type spec struct {
	Opts  options `json:"opts"`
	Token string  `json:"token"` // Opts leaves it out of results
	Lo    int     `json:"lo"`
	Hi    int     `json:"hi"`
	Proc  int     `json:"proc"`
	Limit int64   `json:"limit_ns"` // the worker stops by itself after this long
}

// command is one coordinator → worker request.
type command struct {
	Op    string            `json:"op"`
	Spec  *spec             `json:"spec,omitempty"`
	Rate  float64           `json:"rate,omitempty"`  // dial: connections/s; churn: reconnects/s
	Name  string            `json:"name,omitempty"`  // phase
	From  int64             `json:"from,omitempty"`  // phase: send times (Unix ns) from here on belong to it
	Until int64             `json:"until,omitempty"` // churn, flood: stop at (Unix ns)
	Acked map[string]seqSet `json:"acked,omitempty"` // final: the seqs acked for each city
}

// reply is one worker → coordinator answer.
type reply struct {
	Err    string        `json:"err,omitempty"`
	Stats  *workerStats  `json:"stats,omitempty"`
	Report *workerReport `json:"report,omitempty"`
	Flood  *floodReport  `json:"flood,omitempty"`
}

// workerStats is a worker's progress, for the live line.
type workerStats struct {
	Dialing    bool   `json:"dialing"`
	Ready      int64  `json:"ready"`
	Failed     int64  `json:"failed"`
	Dropped    int64  `json:"dropped"`
	Deliveries uint64 `json:"deliveries"`
	Behind     uint64 `json:"behind"`  // frames owed but not yet received, once final is known
	Latency    sparse `json:"latency"` // the latest phase so far
	Reconnects uint64 `json:"reconnects"`
	// Refused counts the upgrades the node refused, by status and code.
	Refused map[string]errorCount `json:"refused,omitempty"`
}

// workerReport is a worker's share of the results, sent when it closes.
type workerReport struct {
	Connect   sparse                        `json:"connect"`
	Reconnect sparse                        `json:"reconnect"`
	Replay    sparse                        `json:"replay"`
	Phases    []phaseReport                 `json:"phases"`
	Classes   map[string]*result.Accounting `json:"classes"`
	Retries   int64                         `json:"retries"`
	Spread    []spreadFrame                 `json:"spread,omitempty"`
	Errors    map[string]errorCount         `json:"errors,omitempty"`
}

type phaseReport struct {
	Name       string `json:"name"`
	Latency    sparse `json:"latency"`
	Read       sparse `json:"read"`
	Deliveries uint64 `json:"deliveries"`
	NoTS       uint64 `json:"no_ts"`
}

type errorCount struct {
	Count   uint64 `json:"count"`
	Example string `json:"example"`
}

// phase collects the latency of the frames sent from its start until the
// next phase's start: frames are attributed by their send time, so a frame
// still in flight when the next phase starts counts where it belongs.
type phase struct {
	name       string
	from       int64
	lat, read  histogram
	deliveries atomic.Uint64
	noTS       atomic.Uint64
}

// worker holds a share of the connections.
type worker struct {
	o      *options
	spec   spec
	ctx    context.Context
	cancel context.CancelFunc
	d      *dialer

	clients []*client
	wg      sync.WaitGroup // client goroutines
	dialing atomic.Bool
	poller  *poller   // reads the connections
	stopped sync.Once // the poller

	ready, failed, dropped, retries atomic.Int64
	deliveries, resyncs, reconnects atomic.Uint64
	connect, reconnectLat, replay   histogram

	phases  atomic.Pointer[[]*phase]
	acked   atomic.Pointer[map[string]seqSet]
	paused  atomic.Bool // slow clients stop reading
	closing atomic.Bool
	spread  []frameSpread // per city, with -spread
	flood   *flood        // the flood scenario's flooders, once started

	errMu  sync.Mutex
	errors map[string]errorCount
}

// workerMain serves commands from in until it is closed or the worker's
// time limit passes, and returns the process exit code.
func workerMain(in io.Reader, out io.Writer) int {
	dec := json.NewDecoder(in)
	enc := json.NewEncoder(out)
	var w *worker
	defer func() {
		if w != nil {
			w.closeAll()
		}
	}()
	for {
		var cmd command
		if err := dec.Decode(&cmd); err != nil {
			// EOF: the coordinator is gone (or done): stop.
			return 0
		}
		var r reply
		var err error
		switch {
		case cmd.Op == "start":
			if w != nil || cmd.Spec == nil {
				err = errors.New("start: once, with a spec")
				break
			}
			w, err = newWorker(*cmd.Spec)
			if err == nil && cmd.Spec.Hi > cmd.Spec.Lo {
				// A reading worker is one poller (and dials now and then):
				// one P, so that the runtime does not spin a second thread
				// looking for work each time the poller parks. Measured:
				// a fifth less CPU per frame. (The flooder keeps its Ps.)
				runtime.GOMAXPROCS(1)
			}
		case w == nil:
			err = fmt.Errorf("%s before start", cmd.Op)
		default:
			r, err = w.handle(cmd)
		}
		if err != nil {
			r.Err = err.Error()
		}
		if err := enc.Encode(&r); err != nil {
			return 1
		}
		if cmd.Op == "close" {
			return 0
		}
	}
}

func newWorker(s spec) (*worker, error) {
	if err := s.Opts.validate(); err != nil {
		return nil, err
	}
	if s.Lo < 0 || s.Hi > s.Opts.Conns || s.Lo > s.Hi || s.Hi-s.Lo > maxConnsPerProc {
		return nil, fmt.Errorf("bad client range [%d, %d)", s.Lo, s.Hi)
	}
	s.Opts.Token = s.Token
	w := &worker{o: &s.Opts, spec: s, d: newDialer(s.Opts.Addr, s.Opts.Srcs), errors: map[string]errorCount{}}
	w.ctx, w.cancel = context.WithTimeout(context.Background(), time.Duration(s.Limit))
	w.phases.Store(new([]*phase))
	if s.Opts.Spread {
		w.spread = make([]frameSpread, s.Opts.Cities)
	}
	// One poller: a worker reads on one core at most, and leaves the
	// other to the node (more workers, -procs, read on more).
	p, err := newPoller(w)
	if err != nil {
		w.cancel()
		return nil, err
	}
	w.poller = p
	for i := s.Lo; i < s.Hi; i++ {
		w.clients = append(w.clients, &client{w: w, idx: i, city: s.Opts.city(i), slow: s.Opts.isSlow(i),
			fd: -1, done: make(chan error, 1)})
	}
	// The time limit closes everything even if the coordinator hangs.
	go func() {
		<-w.ctx.Done()
		w.closeAll()
	}()
	return w, nil
}

func (w *worker) handle(cmd command) (reply, error) {
	switch cmd.Op {
	case "dial":
		if !w.dialing.CompareAndSwap(false, true) {
			return reply{}, errors.New("dial: already dialled")
		}
		go w.dialAll(cmd.Rate)
	case "stats":
		return reply{Stats: w.stats()}, nil
	case "phase":
		old := *w.phases.Load()
		if n := len(old); n > 0 && old[n-1].from > cmd.From {
			return reply{}, errors.New("phase: starts before the previous one")
		}
		ph := append(slices.Clip(old), &phase{name: cmd.Name, from: cmd.From})
		w.phases.Store(&ph)
	case "pause":
		w.paused.Store(true)
	case "resume":
		w.paused.Store(false)
		w.poller.poke() // it takes the paused clients back
	case "churn":
		go w.churn(cmd.Rate, time.Unix(0, cmd.Until))
	case "flood":
		return reply{}, w.startFlood(time.Unix(0, cmd.Until))
	case "flood-end":
		if w.flood == nil {
			return reply{}, errors.New("flood-end: no flood")
		}
		return reply{Flood: w.flood.report()}, nil
	case "final":
		w.acked.Store(&cmd.Acked)
	case "close":
		w.closeAll()
		return reply{Report: w.report()}, nil
	default:
		return reply{}, fmt.Errorf("unknown command %q", cmd.Op)
	}
	return reply{}, nil
}

// dialAll starts the clients at rate connections per second (0: as fast as
// Parallel dials in flight allow) and returns when each is ready or failed.
func (w *worker) dialAll(rate float64) {
	defer w.dialing.Store(false)
	sem := make(chan struct{}, w.o.Parallel)
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(float64(time.Second) / rate)
	}
	start := time.Now()
	var starting sync.WaitGroup
	for i, c := range w.clients {
		if interval > 0 {
			if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
				select {
				case <-time.After(d):
				case <-w.ctx.Done():
				}
			}
		}
		select {
		case sem <- struct{}{}:
		case <-w.ctx.Done():
		}
		if w.ctx.Err() != nil || w.closing.Load() {
			break
		}
		starting.Add(1)
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			var once sync.Once
			c.run(func(ok bool) {
				once.Do(func() {
					if ok {
						w.ready.Add(1)
					}
					<-sem
					starting.Done()
				})
			})
		}()
	}
	starting.Wait()
}

// dial opens the TCP connection of c.
func (w *worker) dial(c *client, addr string) (net.Conn, error) {
	rcvbuf := 0
	if c.slow {
		rcvbuf = w.o.SlowRcvBuf
	}
	return w.d.dial(w.ctx, addr, c.idx, rcvbuf)
}

// sample records the latency of a frame sent at sent (Unix ns), whose bytes
// arrived at the client's socket at at and were read at read.
func (w *worker) sample(c *client, seq uint64, sent, at, read int64) {
	if c.slow {
		// It stops reading on purpose: its latency is its own doing.
		return
	}
	if sent < c.since {
		// Sent before this connection existed: replayed on resume. Its
		// latency is the client's absence, not the node's.
		w.replay.record(at - sent)
		return
	}
	phases := *w.phases.Load()
	for i := len(phases) - 1; i >= 0; i-- {
		ph := phases[i]
		if sent < ph.from {
			continue
		}
		ph.lat.record(at - sent)
		ph.read.record(read - sent)
		ph.deliveries.Add(1)
		if c.noTS {
			ph.noTS.Add(1)
		}
		break
	}
	if w.spread != nil {
		w.spread[c.idx%w.o.Cities].note(seq, sent, at)
	}
}

// churn reconnects clients at rate per second until until: each one is
// closed and dials again with its last seq, to resume.
func (w *worker) churn(rate float64, until time.Time) {
	if rate <= 0 || len(w.clients) == 0 {
		return
	}
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	// A stride coprime with the count walks every client, cities mixed.
	n := len(w.clients)
	stride := 7919 % n
	for stride == 0 || gcd(stride, n) != 1 {
		stride++
	}
	next := 0
	for i := 0; ; i++ {
		at := start.Add(time.Duration(i) * interval)
		if !at.Before(until) {
			return
		}
		select {
		case <-time.After(time.Until(at)):
		case <-w.ctx.Done():
			return
		}
		c := w.clients[next]
		next = (next + stride) % n
		if c.reconnect.CompareAndSwap(false, true) {
			if c.interrupt() {
				w.reconnects.Add(1)
			} else {
				c.reconnect.Store(false)
			}
		}
	}
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func (w *worker) stats() *workerStats {
	st := &workerStats{
		Dialing:    w.dialing.Load(),
		Ready:      w.ready.Load(),
		Failed:     w.failed.Load(),
		Dropped:    w.dropped.Load(),
		Deliveries: w.deliveries.Load(),
		Reconnects: w.reconnects.Load(),
	}
	w.errMu.Lock()
	for kind, e := range w.errors {
		if k, ok := strings.CutPrefix(kind, "refused "); ok {
			if st.Refused == nil {
				st.Refused = map[string]errorCount{}
			}
			st.Refused[k] = e
		}
	}
	w.errMu.Unlock()
	if phases := *w.phases.Load(); len(phases) > 0 {
		st.Latency = phases[len(phases)-1].lat.sparse()
	}
	if a := w.acked.Load(); a != nil {
		paused := w.paused.Load()
		for _, c := range w.clients {
			if c.ended.Load() || c.slow && paused {
				continue
			}
			acked := (*a)[c.city]
			st.Behind += acked.countIn(c.lastSeq.Load(), acked.last())
		}
	}
	return st
}

// closeAll closes every connection, waits for the client goroutines and
// stops the poller. Safe to call more than once, and concurrently.
func (w *worker) closeAll() {
	w.closing.Store(true)
	for _, c := range w.clients {
		c.interrupt()
	}
	w.cancel()      // also releases pending dials
	w.poller.poke() // it ends the paused clients
	w.wg.Wait()
	w.stopPoller()
}

func (w *worker) stopPoller() {
	w.stopped.Do(w.poller.stop)
}

// report sums the clients' accounting by class. Call it after closeAll.
func (w *worker) report() *workerReport {
	r := &workerReport{
		Connect:   w.connect.sparse(),
		Reconnect: w.reconnectLat.sparse(),
		Replay:    w.replay.sparse(),
		Classes:   map[string]*result.Accounting{},
		Retries:   w.retries.Load(),
	}
	for _, ph := range *w.phases.Load() {
		r.Phases = append(r.Phases, phaseReport{
			Name: ph.name, Latency: ph.lat.sparse(), Read: ph.read.sparse(),
			Deliveries: ph.deliveries.Load(), NoTS: ph.noTS.Load(),
		})
	}
	var acked map[string]seqSet
	if a := w.acked.Load(); a != nil {
		acked = *a
	}
	for _, c := range w.clients {
		class := "readers"
		if c.slow {
			class = "slow"
		}
		a := r.Classes[class]
		if a == nil {
			a = &result.Accounting{}
			r.Classes[class] = a
		}
		a.Clients++
		if c.failed {
			a.Failed++
		}
		if c.dropped {
			a.Dropped++
		}
		t := &c.tally
		s := acked[c.city]
		a.Owed += t.owed(s)
		a.Received += t.received
		a.Lost += t.lost(s)
		a.Dups += t.dups
		a.Late += t.late
		a.Skipped += t.skipped(s)
		a.Resyncs += t.resyncs
		a.Resumes += c.resumes
		a.Dials += uint64(c.dials)
		a.Bad += c.bad
		a.BadTime += c.badTime
	}
	for i := range w.spread {
		for seq, a := range w.spread[i].frames {
			r.Spread = append(r.Spread, spreadFrame{City: i, Seq: seq, Sent: a.sent, First: a.first, Last: a.last})
		}
	}
	w.errMu.Lock()
	r.Errors = w.errors
	w.errMu.Unlock()
	return r
}

// noteErr counts an error by kind and keeps the first example.
func (w *worker) noteErr(kind string, err error) {
	if err == nil || errors.Is(err, errClosing) || w.closing.Load() {
		return
	}
	w.errMu.Lock()
	e := w.errors[kind]
	e.Count++
	if e.Example == "" {
		e.Example = err.Error()
	}
	w.errors[kind] = e
	w.errMu.Unlock()
}
