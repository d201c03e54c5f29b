package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is what a run reports, printed as a table and written as JSON
// (-json). Latencies are in milliseconds, CPU times in seconds, sizes in
// bytes.
type Result struct {
	Scenario   string                 `json:"scenario"`
	Started    time.Time              `json:"started"`
	Seconds    float64                `json:"seconds"`
	Machine    machineInfo            `json:"machine"`
	Options    *options               `json:"options"`
	Node       *nodeFigures           `json:"node,omitempty"`
	Connect    *connectFigures        `json:"connect,omitempty"`
	Reconnect  *latency               `json:"reconnect,omitempty"`
	Replay     *latency               `json:"replay,omitempty"`
	Phases     []*phaseResult         `json:"phases,omitempty"`
	Accounting map[string]*accounting `json:"accounting,omitempty"`
	Publisher  *publisherFigures      `json:"publisher,omitempty"`
	Flood      *floodFigures          `json:"flood,omitempty"`
	Spread     *spreadFigures         `json:"spread,omitempty"`
	Errors     map[string]errorCount  `json:"errors,omitempty"`
	Checks     []check                `json:"checks"`
}

type machineInfo struct {
	Host        string  `json:"host"`
	CPUs        int     `json:"cpus"`
	Kernel      string  `json:"kernel"`
	Go          string  `json:"go"`
	Load1Before float64 `json:"load1_before"`
	Load1After  float64 `json:"load1_after"`
}

// nodeFigures are read from /proc/<pid> of the node (of every node, summed,
// for a cluster), when it is local.
type nodeFigures struct {
	Pids         []int   `json:"pids"`
	RSSBefore    int64   `json:"rss_before"`
	RSSConnected int64   `json:"rss_connected"` // after connecting (idle: after -settle)
	RSSEnd       int64   `json:"rss_end"`       // before closing the connections
	RSSPerConn   float64 `json:"rss_per_conn"`  // (RSSConnected − RSSBefore) / connections up
	CPUSeconds   float64 `json:"cpu_seconds"`   // over the whole run
}

type connectFigures struct {
	Conns    int     `json:"conns"`
	Up       int64   `json:"up"`
	Failed   int64   `json:"failed"`
	Retries  int64   `json:"retries"`
	Seconds  float64 `json:"seconds"`
	RatePerS float64 `json:"rate_per_s"` // achieved
	Latency  latency `json:"latency"`    // dial → first initial_data (TCP + upgrade + subscribe)
}

// latency is a histogram's summary, in milliseconds.
type latency struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

func summarize(h *histogram) latency {
	s := h.snapshot()
	ms := func(ns int64) float64 { return float64(ns) / 1e6 }
	return latency{Count: s.total, P50: ms(s.quantile(0.5)), P90: ms(s.quantile(0.9)),
		P99: ms(s.quantile(0.99)), P999: ms(s.quantile(0.999)), Max: ms(s.max)}
}

func (l latency) String() string {
	if l.Count == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s p90 %s p99 %s p99.9 %s max %s (%d)", fms(l.P50), fms(l.P90), fms(l.P99), fms(l.P999), fms(l.Max), l.Count)
}

func fms(ms float64) string {
	if ms < 10 {
		return fmt.Sprintf("%.2fms", ms)
	}
	return fmt.Sprintf("%.0fms", ms)
}

type phaseResult struct {
	Name        string  `json:"name"`
	RatePerCity float64 `json:"rate_per_city"`
	Seconds     float64 `json:"seconds"` // publishing
	Frames      uint64  `json:"frames"`  // published
	Deliveries  uint64  `json:"deliveries"`
	PerSecond   float64 `json:"deliveries_per_s"`
	// Latency is ingest → the frame's bytes at the client's socket (kernel
	// receive timestamp): what the node and the network took. Read adds
	// the time the load generator took to get to it.
	Latency latency `json:"latency"`
	Read    latency `json:"read_latency"`
	NoTS    uint64  `json:"no_timestamp"`
	// CPU over the phase: the node, the load generator (coordinator and
	// workers) and everything else on the machine.
	NodeCPU        float64 `json:"node_cpu_s"`
	NodeCPUPerMDel float64 `json:"node_cpu_s_per_million_deliveries"`
	LoadgenCPU     float64 `json:"loadgen_cpu_s"`
	// LoadgenPerMDel is the load generator's CPU per million deliveries
	// (µs per delivery): below the node's, it measures the node rather
	// than itself.
	LoadgenPerMDel float64 `json:"loadgen_cpu_s_per_million_deliveries"`
	OthersCPU      float64 `json:"others_cpu_s"`
}

type publisherFigures struct {
	Frames     uint64 `json:"frames"`
	Errors     uint64 `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
}

type spreadFigures struct {
	Frames   uint64  `json:"frames"`
	FirstP50 float64 `json:"first_p50_ms"` // ingest → first subscriber
	FirstP99 float64 `json:"first_p99_ms"`
	FanP50   float64 `json:"fan_p50_ms"` // first → last subscriber
	FanP99   float64 `json:"fan_p99_ms"`
	FirstMax float64 `json:"first_max_ms"`
	FanMax   float64 `json:"fan_max_ms"`
}

type check struct {
	Name string `json:"name"`
	Pass bool   `json:"pass"`
	Got  string `json:"got"`
	Want string `json:"want"`
}

func (r *Result) check(name string, pass bool, got, want string) {
	r.Checks = append(r.Checks, check{Name: name, Pass: pass, Got: got, Want: want})
}

func (r *Result) passed() bool {
	for _, c := range r.Checks {
		if !c.Pass {
			return false
		}
	}
	return true
}

func (r *Result) write(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("cannot write the result: %w", err)
	}
	return nil
}

func newResult(o *options) *Result {
	host, _ := os.Hostname()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return &Result{
		Scenario: o.Scenario,
		Started:  time.Now().UTC().Truncate(time.Second),
		Options:  o,
		Machine: machineInfo{Host: host, CPUs: runtime.NumCPU(), Kernel: strings.TrimSpace(string(kernel)),
			Go: runtime.Version(), Load1Before: load1()},
	}
}

// printResult writes the final table.
func printResult(w io.Writer, r *Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "\n%s on %s (%d CPUs, load %.2f before, %.2f after), %.1fs\n",
		r.Scenario, r.Machine.Host, r.Machine.CPUs, r.Machine.Load1Before, r.Machine.Load1After, r.Seconds)
	if c := r.Connect; c != nil {
		fmt.Fprintf(tw, "connect\t%d/%d up, %d failed, %d retries, %.0f/s\t%s\n", c.Up, c.Conns, c.Failed, c.Retries, c.RatePerS, c.Latency)
	}
	if r.Reconnect != nil && r.Reconnect.Count > 0 {
		fmt.Fprintf(tw, "reconnect\t(dial → resumed)\t%s\n", r.Reconnect)
	}
	if r.Replay != nil && r.Replay.Count > 0 {
		fmt.Fprintf(tw, "replayed\t(sent while away)\t%s\n", r.Replay)
	}
	if len(r.Phases) > 0 {
		fmt.Fprintln(tw, "\nphase\trate/city\tframes\tdeliveries/s\tp50\tp99\tp99.9\tmax\tread p99\tnode µs/delivery\tload generator µs/delivery")
		for _, p := range r.Phases {
			cpu, lg := "-", "-"
			if p.Deliveries > 0 && r.Node != nil {
				cpu = fmt.Sprintf("%.2f", p.NodeCPUPerMDel)
			}
			if p.Deliveries > 0 {
				lg = fmt.Sprintf("%.2f", p.LoadgenPerMDel)
			}
			l := p.Latency
			fmt.Fprintf(tw, "%s\t%g\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.RatePerCity, p.Frames, p.PerSecond,
				fms(l.P50), fms(l.P99), fms(l.P999), fms(l.Max), fms(p.Read.P99), cpu, lg)
		}
		fmt.Fprintln(tw, "(latency: ingest → the frame at the client's socket, kernel timestamp; read: → read by the load generator)")
	}
	if len(r.Accounting) > 0 {
		fmt.Fprintln(tw, "\nclients\tcount\tfailed\tdropped\towed\treceived\tlost\tdups\tlate\tskipped (resync)\tresumes\tbad")
		for _, class := range []string{"readers", "slow"} {
			a := r.Accounting[class]
			if a == nil {
				continue
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d (%d)\t%d\t%d\n", class, a.Clients, a.Failed, a.Dropped,
				a.Owed, a.Received, a.Lost, a.Dups, a.Late, a.Skipped, a.Resyncs, a.Resumes, a.Bad+a.BadTime)
		}
	}
	if p := r.Publisher; p != nil {
		fmt.Fprintf(tw, "\npublisher\t%d frames, %d errors %s\n", p.Frames, p.Errors, p.FirstError)
	}
	if f := r.Flood; f != nil {
		fmt.Fprintf(tw, "flood\t%d producers: %d lines acked (%.0f/s), %d to %d per producer, %d errors %s\n",
			f.Producers, f.Acked, f.PerSecond, f.MinAcked, f.MaxAcked, f.Errors, f.FirstError)
	}
	if s := r.Spread; s != nil {
		fmt.Fprintf(tw, "per frame\tingest→first subscriber p50 %s p99 %s max %s; first→last p50 %s p99 %s max %s (%d frames)\n",
			fms(s.FirstP50), fms(s.FirstP99), fms(s.FirstMax), fms(s.FanP50), fms(s.FanP99), fms(s.FanMax), s.Frames)
	}
	if n := r.Node; n != nil {
		fmt.Fprintf(tw, "node\tpid %v: RSS %.1f MiB before, %.1f MiB connected (%.0f B per connection), %.1f MiB at the end; CPU %.1fs\n",
			n.Pids, mib(n.RSSBefore), mib(n.RSSConnected), n.RSSPerConn, mib(n.RSSEnd), n.CPUSeconds)
	}
	for kind, e := range r.Errors {
		fmt.Fprintf(tw, "errors\t%s: %d, e.g. %s\n", kind, e.Count, e.Example)
	}
	fmt.Fprintln(tw, "\ncheck\tresult\tgot\twant")
	for _, c := range r.Checks {
		v := "PASS"
		if !c.Pass {
			v = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Name, v, c.Got, c.Want)
	}
	_ = tw.Flush()
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// load1 is the machine's 1-minute load average, or 0.
func load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var l float64
	_, _ = fmt.Sscanf(string(b), "%f", &l)
	return l
}
