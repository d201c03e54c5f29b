package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The flood scenario: while the publisher feeds the clients' cities as in
// steady, -flood-producers producers send valid lines to cities nobody
// follows, as fast as TCP lets them. The node may slow them down (TCP
// backpressure, each paced fairly), but the subscribers' latency must stay
// within the targets. The flooders run in a worker process of their own, so
// that neither the publisher nor the clients share a Go scheduler with
// them.

// floodCities is how many cities each flooder cycles through.
const floodCities = 12

// floodDrain bounds how long a flooder waits for the node's last answers
// once it stopped sending.
const floodDrain = 10 * time.Second

// floodReport is what a worker's flooders did.
type floodReport struct {
	Acked      []uint64 `json:"acked"` // per producer: lines the node acked
	Errors     uint64   `json:"errors"`
	FirstError string   `json:"first_error,omitempty"`
	Seconds    float64  `json:"seconds"` // from the first line to the last answer
}

// flood is a worker's running flood.
type flood struct {
	acked []atomic.Uint64
	errs  atomic.Uint64
	start time.Time
	wg    sync.WaitGroup

	mu       sync.Mutex
	firstErr string
	end      time.Time
}

// startFlood connects o.FloodProducers producers to the ingest port and has
// each send lines as fast as it can until until, then read the answers to
// the last one.
func (w *worker) startFlood(until time.Time) error {
	if w.flood != nil {
		return errors.New("flood: already flooding")
	}
	o := w.o
	f := &flood{acked: make([]atomic.Uint64, o.FloodProducers), start: time.Now()}
	conns := make([]*net.TCPConn, 0, o.FloodProducers)
	var d net.Dialer
	for range o.FloodProducers {
		c, err := d.DialContext(w.ctx, "tcp", o.Ingest)
		if err != nil {
			for _, c := range conns {
				_ = c.Close()
			}
			return fmt.Errorf("flood: cannot connect to ingest at %s: %w", o.Ingest, err)
		}
		conns = append(conns, c.(*net.TCPConn))
	}
	for p, c := range conns {
		f.wg.Go(func() { f.send(w.ctx, c, o, p, until) })
		f.wg.Go(func() { f.read(c, p, until.Add(floodDrain)) })
	}
	w.flood = f
	return nil
}

// send writes producer p's lines in batches until until, then closes its
// side: the node answers what it read and closes.
func (f *flood) send(ctx context.Context, c *net.TCPConn, o *options, p int, until time.Time) {
	defer func() { _ = c.CloseWrite() }()
	// A node that stops reading altogether fails the write (and the run's
	// flood checks) rather than hold the run.
	_ = c.SetWriteDeadline(until.Add(floodDrain))
	buf := make([]byte, 0, 40<<10)
	for n := 0; ctx.Err() == nil && time.Now().Before(until); {
		buf = buf[:0]
		for len(buf) < 32<<10 {
			buf = floodLine(buf, o.CityPrefix, p, n)
			n++
		}
		if _, err := c.Write(buf); err != nil {
			f.fail(err)
			return
		}
	}
}

// floodLine appends producer p's line n: a data_update with an id, for one
// of its cities (nobody subscribes to them).
func floodLine(b []byte, prefix string, p, n int) []byte {
	b = append(b, `{"city":"`...)
	b = append(b, prefix...)
	b = append(b, "flood-"...)
	b = strconv.AppendInt(b, int64(p), 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(n%floodCities), 10)
	b = append(b, `","type":"data_update","id":"f`...)
	b = strconv.AppendInt(b, int64(p), 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, `","data":{"v":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, `,"pad":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}}`+"\n"...)
	return b
}

// read counts producer p's answers until the node closes the connection
// (or deadline).
func (f *flood) read(c *net.TCPConn, p int, deadline time.Time) {
	defer func() { _ = c.Close() }()
	_ = c.SetReadDeadline(deadline)
	r := bufio.NewReaderSize(c, 64<<10)
	for {
		line, err := r.ReadSlice('\n')
		switch {
		case len(line) == 0:
		case bytes.HasPrefix(line, []byte(`{"ack"`)):
			f.acked[p].Add(1)
		default:
			f.fail(errors.New(string(bytes.TrimSpace(line))))
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				f.fail(fmt.Errorf("flooder %d: no end of answers within %s", p, floodDrain))
			}
			break
		}
	}
	f.mu.Lock()
	f.end = time.Now()
	f.mu.Unlock()
}

func (f *flood) fail(err error) {
	if f.errs.Add(1) == 1 {
		f.mu.Lock()
		f.firstErr = err.Error()
		f.mu.Unlock()
	}
}

// report waits for the flooders to end and reports them.
func (f *flood) report() *floodReport {
	f.wg.Wait()
	r := &floodReport{Errors: f.errs.Load(), Seconds: f.end.Sub(f.start).Seconds()}
	for i := range f.acked {
		r.Acked = append(r.Acked, f.acked[i].Load())
	}
	r.FirstError = f.firstErr
	return r
}

// floodFigures sum up the flood, for the result.
type floodFigures struct {
	Producers  int     `json:"producers"`
	Acked      uint64  `json:"acked"`
	PerSecond  float64 `json:"acked_per_s"`
	MinAcked   uint64  `json:"min_acked_per_producer"`
	MaxAcked   uint64  `json:"max_acked_per_producer"`
	Errors     uint64  `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
}

func newFloodFigures(r *floodReport) *floodFigures {
	f := &floodFigures{Producers: len(r.Acked), Errors: r.Errors, FirstError: r.FirstError}
	for i, n := range r.Acked {
		f.Acked += n
		if i == 0 || n < f.MinAcked {
			f.MinAcked = n
		}
		f.MaxAcked = max(f.MaxAcked, n)
	}
	if r.Seconds > 0 {
		f.PerSecond = float64(f.Acked) / r.Seconds
	}
	return f
}

// startFlooder starts the worker process that runs the flood (with no
// clients of its own).
func startFlooder(o *options) (*fleet, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("cannot find my own executable to start the flooder: %w", err)
	}
	p, err := startWorker(exe, o.Procs)
	if err != nil {
		return nil, err
	}
	f := &fleet{procs: []*workerProc{p}}
	s := spec{Opts: *o, Token: o.Token, Proc: o.Procs, Limit: int64(o.limit())}
	if _, err := f.callOne(p, command{Op: "start", Spec: &s}); err != nil {
		f.close()
		return nil, err
	}
	return f, nil
}

// flood runs the flood scenario: a baseline at the rate, then the same
// rate while the flooders send.
func (r *runner) flood(ctx context.Context) error {
	o := r.o
	rate := o.Rates[0]
	if err := r.startPublishing(ctx, rate); err != nil {
		return err
	}
	if err := r.phase(ctx, "baseline", rate, o.Duration); err != nil {
		return err
	}
	fl, err := startFlooder(o)
	if err != nil {
		return err
	}
	defer fl.close()
	r.flooder = fl
	if _, err := fl.call(command{Op: "flood", Until: time.Now().Add(o.Duration).UnixNano()}); err != nil {
		return err
	}
	if err := r.phase(ctx, "flood", rate, o.Duration); err != nil {
		return err
	}
	reps, err := fl.call(command{Op: "flood-end"})
	if err != nil {
		return err
	}
	if reps[0].Flood == nil {
		return errors.New("flood-end: empty answer")
	}
	r.res.Flood = newFloodFigures(reps[0].Flood)
	return r.drain(ctx)
}
