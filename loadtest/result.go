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

	"github.com/metrocast/metrocast/loadtest/result"
)

// Result is what a run reports, printed as a table and written as JSON
// (-json). Latencies are in milliseconds, CPU times in seconds, sizes in
// bytes.
type Result struct {
	Scenario   string                        `json:"scenario"`
	Started    time.Time                     `json:"started"`
	Seconds    float64                       `json:"seconds"`
	Machine    machineInfo                   `json:"machine"`
	Options    *options                      `json:"options"`
	Node       *result.Node                  `json:"node,omitempty"`
	Connect    *result.Connect               `json:"connect,omitempty"`
	Reconnect  *result.Latency               `json:"reconnect,omitempty"`
	Replay     *result.Latency               `json:"replay,omitempty"`
	Phases     []*result.Phase               `json:"phases,omitempty"`
	Accounting map[string]*result.Accounting `json:"accounting,omitempty"`
	Publisher  *publisherFigures             `json:"publisher,omitempty"`
	Flood      *floodFigures                 `json:"flood,omitempty"`
	Spread     *result.Spread                `json:"spread,omitempty"`
	Errors     map[string]errorCount         `json:"errors,omitempty"`
	Checks     []result.Check                `json:"checks"`
}

type machineInfo struct {
	Host        string  `json:"host"`
	CPUs        int     `json:"cpus"`
	Kernel      string  `json:"kernel"`
	Go          string  `json:"go"`
	Load1Before float64 `json:"load1_before"`
	Load1After  float64 `json:"load1_after"`
}

// summarize sums a histogram up.
func summarize(h *histogram) result.Latency {
	s := h.snapshot()
	ms := func(ns int64) float64 { return float64(ns) / 1e6 }
	return result.Latency{Count: s.total, P50: ms(s.quantile(0.5)), P90: ms(s.quantile(0.9)),
		P99: ms(s.quantile(0.99)), P999: ms(s.quantile(0.999)), Max: ms(s.max)}
}

type publisherFigures struct {
	Frames     uint64 `json:"frames"`
	Errors     uint64 `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
}

func (r *Result) check(name string, pass bool, got, want string) {
	r.Checks = append(r.Checks, result.Check{Name: name, Pass: pass, Got: got, Want: want})
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
			Go: runtime.Version(), Load1Before: result.Load1()},
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
				result.Ms(l.P50), result.Ms(l.P99), result.Ms(l.P999), result.Ms(l.Max), result.Ms(p.Read.P99), cpu, lg)
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
			result.Ms(s.FirstP50), result.Ms(s.FirstP99), result.Ms(s.FirstMax), result.Ms(s.FanP50), result.Ms(s.FanP99), result.Ms(s.FanMax), s.Frames)
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
