package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// runSteady subscribes o.conns clients over o.cities cities, publishes
// o.rate frames per second per city to the ingest port for o.duration and
// reports deliveries/s, ingest→client latency, loss and duplicates and, with
// -pid, the server's CPU time per delivery.
func runSteady(ctx context.Context, o *options) error {
	st := &runStats{latency: new(histogram), arrival: new(histogram)}
	if o.spread {
		st.spread = make([]frameSpread, o.cities)
	}
	start := time.Now()
	clients, readers, err := dialAll(ctx, o, st)
	defer closeAll(clients, readers, st)
	if err != nil {
		return fmt.Errorf("after %d connections: %w", count(clients), err)
	}
	if err := waitReady(ctx, st, o); err != nil {
		return err
	}
	fmt.Printf("steady: %d connections over %d cities up and subscribed in %s\n",
		o.conns, o.cities, time.Since(start).Round(time.Millisecond))

	pub, err := newPublisher(o)
	if err != nil {
		return err
	}
	defer pub.close()

	if o.warmup > 0 {
		// sonic compiles its decoders on first use and the runtime sizes
		// its heap: keep that out of the figures.
		st.from.Store(math.MaxInt64)
		if err := pub.run(ctx, o.warmup); err != nil {
			return err
		}
		time.Sleep(o.drain / 2)
	}
	var cpu0 time.Duration
	if o.pid > 0 {
		if cpu0, err = cpuTime(o.pid); err != nil {
			return err
		}
	}
	busy0, _ := machineBusy()
	self0, _ := cpuTime(os.Getpid())
	t0 := time.Now()
	st.from.Store(t0.UnixNano())
	sent0 := slices.Clone(pub.sent)
	if err := pub.run(ctx, o.duration); err != nil {
		return err
	}
	pubTime := time.Since(t0)

	// Expected deliveries: each client gets every frame of its city.
	var want uint64
	perCity := make([]int, o.cities)
	for i := range o.conns {
		perCity[i%o.cities]++
	}
	for city, n := range perCity {
		want += uint64(n) * (pub.sent[city] - sent0[city])
	}
	drainEnd := time.Now().Add(o.drain)
	for st.measured.Load() < want && time.Now().Before(drainEnd) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(t0)
	var cpu1 time.Duration
	if o.pid > 0 {
		if cpu1, err = cpuTime(o.pid); err != nil {
			return err
		}
	}
	busy1, _ := machineBusy()
	self1, _ := cpuTime(os.Getpid())
	got := st.measured.Load()
	dropped := st.dropped.Load()
	closeAll(clients, readers, st) // the clients' counters are read below

	var dups, gaps, resyncs, badTime, noTS, missing uint64
	for _, c := range clients {
		noTS += c.noTS
		dups += c.dups
		gaps += c.gaps
		resyncs += c.resyncs
		badTime += c.badTime
		if sent := pub.sent[c.city]; c.received < sent {
			missing += sent - c.received
		}
	}
	lat, arr := st.latency.snapshot(), st.arrival.snapshot()
	var frames uint64
	for city, n := range pub.sent {
		frames += n - sent0[city]
	}

	fmt.Printf("steady: published %d frames in %s (%.1f/s over %d cities; %d ingest errors)\n",
		frames, pubTime.Round(time.Millisecond), float64(frames)/pubTime.Seconds(), o.cities, pub.errors.Load())
	fmt.Printf("steady: deliveries %d of %d expected, %.0f/s\n", got, want, float64(got)/pubTime.Seconds())
	fmt.Printf("steady: latency ingest→client socket (kernel rx timestamp) p50 %s p99 %s p999 %s max %s (%d samples, %d without timestamp)\n",
		us(arr.quantile(0.50)), us(arr.quantile(0.99)), us(arr.quantile(0.999)), us(arr.max), arr.total, noTS)
	if o.spread {
		start, fan := spreadHistograms(st.spread)
		s, f := start.snapshot(), fan.snapshot()
		fmt.Printf("steady: per frame, ingest→first subscriber p50 %s p99 %s max %s; first→last subscriber p50 %s p99 %s max %s (%d frames)\n",
			us(s.quantile(0.5)), us(s.quantile(0.99)), us(s.max), us(f.quantile(0.5)), us(f.quantile(0.99)), us(f.max), s.total)
	}
	fmt.Printf("steady: latency ingest→client read (incl. load generator) p50 %s p99 %s p999 %s max %s (%d samples)\n",
		us(lat.quantile(0.50)), us(lat.quantile(0.99)), us(lat.quantile(0.999)), us(lat.max), lat.total)
	fmt.Printf("steady: loss (warm-up included): %d frames missing, %d seq gaps, %d duplicates, %d conflations, %d connections dropped, %d frames without t\n",
		missing, gaps, dups, resyncs, dropped, badTime)
	if o.pid > 0 && got > 0 {
		cpu := cpu1 - cpu0
		fmt.Printf("steady: server CPU %s over %s (%.0f%% of a core): %.2f µs per delivery\n",
			cpu, elapsed.Round(time.Millisecond), 100*cpu.Seconds()/elapsed.Seconds(),
			float64(cpu.Microseconds())/float64(got))
	}
	// On a small shared machine the latency is only as good as the cores
	// left to the server: say who else ran.
	busy, self, server := busy1-busy0, self1-self0, cpu1-cpu0
	fmt.Printf("steady: machine CPU over the window %s (%d cores × %s): server %s, load generator %s, others %s\n",
		busy, runtime.NumCPU(), elapsed.Round(time.Millisecond), server, self, busy-server-self)
	return nil
}

func us(ns int64) string { return fmt.Sprintf("%.0fµs", float64(ns)/1e3) }

// publisher sends data_update lines over one ingest connection at a fixed
// rate, cities in turn, each carrying its send time in "data":{"t":…}.
type publisher struct {
	o      *options
	conn   net.Conn
	sent   []uint64 // per city; written by run, read after it returns
	errors atomic.Uint64
	done   sync.WaitGroup
}

func newPublisher(o *options) (*publisher, error) {
	c, err := net.DialTimeout("tcp", o.ingest, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to ingest: %w", err)
	}
	p := &publisher{o: o, conn: c, sent: make([]uint64, o.cities)}
	p.done.Add(1)
	go func() {
		// Without an id no line is acked: whatever comes back is an error.
		defer p.done.Done()
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			if bytes.Contains(sc.Bytes(), []byte(`"error"`)) {
				if p.errors.Add(1) == 1 {
					fmt.Printf("steady: ingest error: %s\n", sc.Bytes())
				}
			}
		}
	}()
	return p, nil
}

// run publishes for d. Lines are evenly spaced (one city after
// another) rather than sent in per-tick bursts, so the latency measures the
// fanout, not a queue of our own making; a late sender catches up.
func (p *publisher) run(ctx context.Context, d time.Duration) error {
	o := p.o
	interval := time.Duration(float64(time.Second) / (o.rate * float64(o.cities)))
	start := time.Now()
	end := start.Add(d)
	line := make([]byte, 0, 256)
	for i := 0; ctx.Err() == nil; i++ {
		at := start.Add(time.Duration(i) * interval)
		if !at.Before(end) {
			break
		}
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		city := i % o.cities
		line = append(line[:0], `{"city":"`...)
		line = append(line, o.city(city)...)
		line = append(line, `","type":"data_update","data":{"t":`...)
		line = strconv.AppendInt(line, time.Now().UnixNano(), 10)
		line = append(line, `,"v":`...)
		line = strconv.AppendInt(line, int64(i), 10)
		line = append(line, "}}\n"...)
		if _, err := p.conn.Write(line); err != nil {
			return fmt.Errorf("cannot publish: %w", err)
		}
		p.sent[city]++
	}
	return ctx.Err()
}

func (p *publisher) close() {
	_ = p.conn.Close()
	p.done.Wait()
}
