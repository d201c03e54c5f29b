package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/metrocast/metrocast/loadtest/result"
)

// runner is the coordinator of one run.
type runner struct {
	o   *options
	res *Result
	f   *fleet
	pub *publisher
	// flooder runs the flood scenario's producers (nil in the others).
	flooder *fleet
	// pubSeen is pub for the progress goroutine.
	pubSeen atomic.Pointer[publisher]
	start   time.Time
	node    result.Node // valid with o.Pids

	progressMu sync.Mutex
	label      string // what the run is doing, for the progress line
	stopWatch  func()
}

// run makes one run of o.Scenario and returns its result, partial when err
// is not nil.
func run(ctx context.Context, o *options, stdout, stderr io.Writer) (*Result, error) {
	ctx, cancel := context.WithTimeout(ctx, o.limit())
	defer cancel()
	r := &runner{o: o, res: newResult(o), start: time.Now()}
	defer func() {
		r.res.Seconds = time.Since(r.start).Seconds()
		r.res.Machine.Load1After = result.Load1()
	}()
	// Checked here, not in validate: the worker processes, pinned to
	// -cpus, validate the same options.
	var cpus, spawnCPUs *unix.CPUSet
	for _, f := range [...]struct {
		flag, list string
		set        **unix.CPUSet
	}{{"-cpus", o.CPUs, &cpus}, {"-spawn-cpus", o.SpawnCPUs, &spawnCPUs}} {
		if f.list == "" {
			continue
		}
		set, err := usableCPUs(f.list)
		if err != nil {
			return r.res, fmt.Errorf("%s %s: %w", f.flag, f.list, err)
		}
		*f.set = &set
	}
	if cpus != nil {
		if err := pin(os.Getpid(), *cpus); err != nil {
			return r.res, fmt.Errorf("-cpus %s: %w", o.CPUs, err)
		}
	}
	if o.Spawn != "" {
		nodes, stop, err := spawnNodes(o.Spawn, o.ServerArgs, o.SecretFile, o.Nodes, spawnCPUs)
		defer stop()
		if err != nil {
			return r.res, err
		}
		addrs := make([]string, len(nodes))
		for i, n := range nodes {
			addrs[i] = n.ws
			o.Pids = append(o.Pids, n.pid())
		}
		o.Addr, o.Path, o.Ingest = strings.Join(addrs, ","), nodes[0].path, nodes[0].ingest
		fmt.Fprintf(stdout, "spawned %s (pid %v): ws://%s%s, ingest %s\n", o.Spawn, o.Pids, o.Addr, o.Path, o.Ingest)
	}
	if len(o.Pids) > 0 {
		r.node.Pids = o.Pids
		r.node.RSSBefore, _ = rss(o.Pids...)
		r.res.Node = &r.node
		cpu0, err := cpuTime(o.Pids...)
		if err != nil {
			return r.res, err
		}
		defer func() {
			if cpu1, err := cpuTime(o.Pids...); err == nil {
				r.node.CPUSeconds = (cpu1 - cpu0).Seconds()
			}
		}()
	}
	r.stopWatch = func() {}
	if o.Scenario == "publish" {
		r.stopWatch = r.watch(ctx, stderr)
		defer r.stopWatch()
		return r.res, r.publishOnly(ctx)
	}
	var err error
	if r.f, err = startFleet(o); err != nil {
		return r.res, err
	}
	defer r.f.close()
	// From here on r.f stays as it is: the progress goroutine reads it.
	r.stopWatch = r.watch(ctx, stderr)
	defer r.stopWatch()
	if err := r.connect(ctx); err != nil {
		return r.res, err
	}
	switch o.Scenario {
	case "idle":
		err = r.idle(ctx)
	case "connect-storm":
		err = r.hold(ctx, o.Duration)
	case "steady":
		err = r.steady(ctx)
	case "churn":
		err = r.churn(ctx)
	case "slow-consumers":
		err = r.slowConsumers(ctx)
	case "spike":
		err = r.spike(ctx)
	case "flood":
		err = r.flood(ctx)
	}
	if err != nil {
		r.finish() // what was measured so far
		return r.res, err
	}
	return r.res, r.finish()
}

func (r *runner) setLabel(s string) {
	r.progressMu.Lock()
	r.label = s
	r.progressMu.Unlock()
}

// connect opens every connection at -conn-rate and waits until each is
// subscribed or has failed.
func (r *runner) connect(ctx context.Context) error {
	o := r.o
	r.setLabel("connecting")
	t0 := time.Now()
	if _, err := r.f.call(command{Op: "dial", Rate: o.ConnRate / float64(o.Procs)}); err != nil {
		return err
	}
	var st []*workerStats
	for {
		var err error
		if st, err = r.stats(); err != nil {
			return err
		}
		dialing := false
		for _, s := range st {
			dialing = dialing || s.Dialing
		}
		if !dialing {
			break
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	secs := time.Since(t0).Seconds()
	c := &result.Connect{Conns: o.Conns, Seconds: secs}
	refused := map[string]errorCount{}
	for _, s := range st {
		c.Up += s.Ready
		c.Failed += s.Failed
		for kind, e := range s.Refused {
			old := refused[kind]
			old.Count += e.Count
			old.Example = cmp.Or(old.Example, e.Example)
			refused[kind] = old
		}
	}
	c.RatePerS = float64(c.Up) / secs
	r.res.Connect = c
	if len(o.Pids) > 0 {
		if o.Scenario == "idle" && o.Settle > 0 {
			// The node's heap settles (GC, scavenger) a few seconds after
			// the burst of upgrades.
			r.setLabel("settling")
			if err := sleep(ctx, o.Settle); err != nil {
				return err
			}
		}
		r.node.RSSConnected, _ = rss(o.Pids...)
		if c.Up > 0 {
			r.node.RSSPerConn = float64(r.node.RSSConnected-r.node.RSSBefore) / float64(c.Up)
		}
	}
	if c.Up < int64(o.Conns) && o.Scenario != "connect-storm" {
		return fmt.Errorf("only %d of %d connections came up (%d failed%s)", c.Up, o.Conns, c.Failed, refusals(refused))
	}
	return nil
}

// refusals describes the upgrades the node refused, by status and code,
// with the node's message: "; the node refused 200 with 401 auth_required:
// cities on the URL need a token …".
func refusals(refused map[string]errorCount) string {
	kinds := slices.Sorted(maps.Keys(refused))
	var b strings.Builder
	for i, kind := range kinds {
		sep := "; the node refused "
		if i > 0 {
			sep = ", "
		}
		e := refused[kind]
		fmt.Fprintf(&b, "%s%d with %s", sep, e.Count, strings.TrimPrefix(e.Example, "upgrade refused: "))
	}
	if len(kinds) > 0 && strings.HasPrefix(kinds[0], "401") {
		b.WriteString("; a token: -token-file, METROCAST_TOKEN, or -auth-hmac-secret-file to mint one")
	}
	return b.String()
}

func (r *runner) stats() ([]*workerStats, error) {
	reps, err := r.f.call(command{Op: "stats"})
	if err != nil {
		return nil, err
	}
	st := make([]*workerStats, len(reps))
	for i, rep := range reps {
		if rep.Stats == nil {
			return nil, errors.New("stats: empty answer")
		}
		st[i] = rep.Stats
	}
	return st, nil
}

// hold keeps the connections open for d.
func (r *runner) hold(ctx context.Context, d time.Duration) error {
	r.setLabel("holding")
	return sleep(ctx, d)
}

func (r *runner) idle(ctx context.Context) error {
	if err := r.hold(ctx, r.o.Duration); err != nil {
		return err
	}
	if len(r.o.Pids) > 0 {
		r.node.RSSEnd, _ = rss(r.o.Pids...)
	}
	return nil
}

// startPublishing connects the publisher and publishes the warm-up (not
// measured: sonic compiles its decoders on first use, the runtime sizes its
// heap).
func (r *runner) startPublishing(ctx context.Context, rate float64) error {
	var err error
	if r.pub, err = newPublisher(ctx, r.o); err != nil {
		return err
	}
	r.pubSeen.Store(r.pub)
	if r.o.Warmup > 0 {
		return r.phase(ctx, "warmup", rate, r.o.Warmup)
	}
	return nil
}

// phase publishes rate frames/s per city for d as one measured phase.
func (r *runner) phase(ctx context.Context, name string, rate float64, d time.Duration) error {
	r.setLabel(fmt.Sprintf("%s (%g/s per city)", name, rate))
	from := time.Now()
	if _, err := r.f.call(command{Op: "phase", Name: name, From: from.UnixNano()}); err != nil {
		return err
	}
	cpu0 := r.cpuSnapshot()
	frames0 := r.pub.frames()
	err := r.pub.run(ctx, rate, d)
	secs := time.Since(from).Seconds()
	cpu1 := r.cpuSnapshot()
	p := &result.Phase{Name: name, RatePerCity: rate, Seconds: secs, Frames: r.pub.frames() - frames0}
	p.NodeCPU = (cpu1.node - cpu0.node).Seconds()
	p.LoadgenCPU = (cpu1.loadgen - cpu0.loadgen).Seconds()
	// Per-process and whole-machine CPU times are counted apart (and in
	// ticks): the difference can come out slightly negative when nobody
	// else ran.
	p.OthersCPU = max(0, (cpu1.busy-cpu0.busy).Seconds()-p.NodeCPU-p.LoadgenCPU)
	r.res.Phases = append(r.res.Phases, p)
	return err
}

type cpuSnap struct{ node, loadgen, busy time.Duration }

func (r *runner) cpuSnapshot() cpuSnap {
	var s cpuSnap
	if len(r.o.Pids) > 0 {
		s.node, _ = cpuTime(r.o.Pids...)
	}
	s.loadgen, _ = cpuTime(os.Getpid())
	for _, f := range []*fleet{r.f, r.flooder} {
		if f == nil {
			continue
		}
		for _, pid := range f.pids() {
			t, _ := cpuTime(pid)
			s.loadgen += t
		}
	}
	s.busy, _ = machineBusy()
	return s
}

// drain waits for every ack, tells the workers each city's acked seqs, and
// waits (at most -drain) until every reading client has received it.
func (r *runner) drain(ctx context.Context) error {
	r.setLabel("draining")
	acked := r.pub.close()
	n, msg := r.pub.firstError()
	r.res.Publisher = &publisherFigures{Frames: r.pub.frames(), Errors: n, FirstError: msg}
	if _, err := r.f.call(command{Op: "final", Acked: acked}); err != nil {
		return err
	}
	deadline := time.Now().Add(r.o.Drain)
	for time.Now().Before(deadline) {
		st, err := r.stats()
		if err != nil {
			return err
		}
		var behind uint64
		for _, s := range st {
			behind += s.Behind
		}
		if behind == 0 {
			break
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) steady(ctx context.Context) error {
	o := r.o
	if err := r.startPublishing(ctx, o.Rates[0]); err != nil {
		return err
	}
	for _, rate := range o.Rates {
		if err := r.phase(ctx, fmt.Sprintf("rate=%g", rate), rate, o.Duration); err != nil {
			return err
		}
		if o.SweepStop > 0 {
			// Past the rate the node sustains, the next rates only pile
			// up a backlog: stop after the first one over the bound.
			st, err := r.stats()
			if err != nil {
				return err
			}
			var lat histogram
			for _, s := range st {
				lat.add(s.Latency)
			}
			if p99 := lat.snapshot().quantile(0.99); p99 > int64(o.SweepStop) {
				break
			}
		}
	}
	return r.drain(ctx)
}

func (r *runner) churn(ctx context.Context) error {
	o := r.o
	rate := o.Rates[0]
	if err := r.startPublishing(ctx, rate); err != nil {
		return err
	}
	until := time.Now().Add(o.Duration).UnixNano()
	if _, err := r.f.call(command{Op: "churn", Rate: o.ChurnRate / float64(o.Procs), Until: until}); err != nil {
		return err
	}
	if err := r.phase(ctx, "churn", rate, o.Duration); err != nil {
		return err
	}
	return r.drain(ctx)
}

func (r *runner) slowConsumers(ctx context.Context) error {
	o := r.o
	rate := o.Rates[0]
	if err := r.startPublishing(ctx, rate); err != nil {
		return err
	}
	if err := r.phase(ctx, "baseline", rate, o.Duration); err != nil {
		return err
	}
	if _, err := r.f.call(command{Op: "pause"}); err != nil {
		return err
	}
	if err := r.phase(ctx, "slow", rate, o.Duration); err != nil {
		return err
	}
	if _, err := r.f.call(command{Op: "resume"}); err != nil {
		return err
	}
	return r.drain(ctx)
}

func (r *runner) spike(ctx context.Context) error {
	o := r.o
	rate := o.Rates[0]
	if err := r.startPublishing(ctx, rate); err != nil {
		return err
	}
	if err := r.phase(ctx, "baseline", rate, o.Duration); err != nil {
		return err
	}
	if err := r.phase(ctx, "spike", rate*o.SpikeFactor, o.SpikeDuration); err != nil {
		return err
	}
	if err := r.phase(ctx, "recovery", rate, o.Duration); err != nil {
		return err
	}
	return r.drain(ctx)
}

// publishOnly publishes for -duration at the first rate, with no clients of
// its own (for clients run elsewhere, such as the k6 scripts).
func (r *runner) publishOnly(ctx context.Context) error {
	var err error
	if r.pub, err = newPublisher(ctx, r.o); err != nil {
		return err
	}
	r.pubSeen.Store(r.pub)
	r.setLabel("publishing")
	t0 := time.Now()
	err = r.pub.run(ctx, r.o.Rates[0], r.o.Duration)
	r.pub.close()
	n, msg := r.pub.firstError()
	r.res.Publisher = &publisherFigures{Frames: r.pub.frames(), Errors: n, FirstError: msg}
	r.res.Phases = append(r.res.Phases, &result.Phase{Name: "publish", RatePerCity: r.o.Rates[0],
		Seconds: time.Since(t0).Seconds(), Frames: r.pub.frames()})
	r.res.check("ingest accepted every frame", n == 0, fmt.Sprint(n, " errors"), "0")
	return err
}

// finish closes the connections, gathers the workers' reports and checks
// the targets.
func (r *runner) finish() error {
	r.stopWatch()
	if len(r.o.Pids) > 0 && r.node.RSSEnd == 0 {
		r.node.RSSEnd, _ = rss(r.o.Pids...)
	}
	reps, err := r.f.call(command{Op: "close"})
	if err != nil {
		return err
	}
	res := r.res
	var connect, reconnect, replay histogram
	phases := make([]struct{ lat, read histogram }, len(res.Phases))
	var spread []spreadFrame
	res.Accounting = map[string]*result.Accounting{}
	res.Errors = map[string]errorCount{}
	for _, rep := range reps {
		wr := rep.Report
		if wr == nil {
			return errors.New("close: empty report")
		}
		connect.add(wr.Connect)
		reconnect.add(wr.Reconnect)
		replay.add(wr.Replay)
		if res.Connect != nil {
			res.Connect.Retries += wr.Retries
		}
		for i, ph := range wr.Phases {
			if i >= len(res.Phases) {
				return fmt.Errorf("close: %d phases reported, %d run", len(wr.Phases), len(res.Phases))
			}
			phases[i].lat.add(ph.Latency)
			phases[i].read.add(ph.Read)
			res.Phases[i].Deliveries += ph.Deliveries
			res.Phases[i].NoTS += ph.NoTS
		}
		for class, a := range wr.Classes {
			if res.Accounting[class] == nil {
				res.Accounting[class] = &result.Accounting{}
			}
			res.Accounting[class].Add(a)
		}
		for kind, e := range wr.Errors {
			old := res.Errors[kind]
			old.Count += e.Count
			if old.Example == "" {
				old.Example = e.Example
			}
			res.Errors[kind] = old
		}
		spread = append(spread, wr.Spread...)
	}
	if res.Connect != nil {
		res.Connect.Latency = summarize(&connect)
	}
	if l := summarize(&reconnect); l.Count > 0 {
		res.Reconnect = &l
	}
	if l := summarize(&replay); l.Count > 0 {
		res.Replay = &l
	}
	for i, p := range res.Phases {
		p.Latency, p.Read = summarize(&phases[i].lat), summarize(&phases[i].read)
		p.PerSecond = float64(p.Deliveries) / p.Seconds
		if p.Deliveries > 0 {
			p.NodeCPUPerMDel = p.NodeCPU / float64(p.Deliveries) * 1e6
			p.LoadgenPerMDel = p.LoadgenCPU / float64(p.Deliveries) * 1e6
		}
	}
	if r.o.Spread {
		s := mergeSpread(spread)
		res.Spread = &s
	}
	r.checks()
	return nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// watch prints a progress line every -progress until the returned stop is
// called: a line rewritten in place on a terminal, a line per interval
// elsewhere.
func (r *runner) watch(ctx context.Context, w io.Writer) func() {
	if r.o.Progress <= 0 {
		return func() {}
	}
	_, err := unix.IoctlGetTermios(int(os.Stderr.Fd()), unix.TCGETS)
	tty := err == nil && w == os.Stderr
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(r.o.Progress)
		defer t.Stop()
		var last struct {
			at         time.Time
			deliveries uint64
			cpu        time.Duration
		}
		last.at = time.Now()
		for {
			select {
			case <-t.C:
			case <-done:
				if tty {
					fmt.Fprintln(w)
				}
				return
			case <-ctx.Done():
				return
			}
			r.progressMu.Lock()
			label := r.label
			r.progressMu.Unlock()
			line := fmt.Sprintf("[%6.1fs] %s", time.Since(r.start).Seconds(), label)
			now := time.Now()
			dt := now.Sub(last.at).Seconds()
			if r.f != nil {
				if st, err := r.stats(); err == nil {
					var up, failed int64
					var del, behind uint64
					var lat histogram
					for _, s := range st {
						up += s.Ready
						failed += s.Failed
						del += s.Deliveries
						behind += s.Behind
						lat.add(s.Latency)
					}
					line += fmt.Sprintf(": %d/%d up", up, r.o.Conns)
					if failed > 0 {
						line += fmt.Sprintf(" (%d failed)", failed)
					}
					line += fmt.Sprintf(", %.0f deliveries/s", float64(del-last.deliveries)/dt)
					if l := summarize(&lat); l.Count > 0 {
						line += ", p99 " + result.Ms(l.P99)
					}
					if behind > 0 {
						line += fmt.Sprintf(", %d owed", behind)
					}
					last.deliveries = del
				}
			} else if pub := r.pubSeen.Load(); pub != nil {
				line += fmt.Sprintf(": %d frames", pub.frames())
			}
			if len(r.o.Pids) > 0 {
				rs, _ := rss(r.o.Pids...)
				cpu, _ := cpuTime(r.o.Pids...)
				if last.cpu > 0 {
					line += fmt.Sprintf(", node %.0f MiB %.0f%% CPU", mib(rs), 100*(cpu-last.cpu).Seconds()/dt)
				}
				last.cpu = cpu
			}
			last.at = now
			if tty {
				fmt.Fprintf(w, "\r\033[K%s", line)
			} else {
				fmt.Fprintln(w, line)
			}
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() { close(done); wg.Wait() })
	}
}
