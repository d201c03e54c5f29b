// Package result holds the figures of a loadtest run that outlive it: the
// JSON loadtest writes (-json) and the bench reads back, defined once for
// both programs. Latencies are in milliseconds, CPU times in seconds,
// sizes in bytes.
package result

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Node is read from /proc/<pid> of the node (of every node, summed, for a
// cluster), when it is local.
type Node struct {
	Pids         []int   `json:"pids"`
	RSSBefore    int64   `json:"rss_before"`
	RSSConnected int64   `json:"rss_connected"` // after connecting (idle: after -settle)
	RSSEnd       int64   `json:"rss_end"`       // before closing the connections
	RSSPerConn   float64 `json:"rss_per_conn"`  // (RSSConnected − RSSBefore) / connections up
	CPUSeconds   float64 `json:"cpu_seconds"`   // over the whole run
}

// Connect is the connect phase: how many came up, how fast.
type Connect struct {
	Conns    int     `json:"conns"`
	Up       int64   `json:"up"`
	Failed   int64   `json:"failed"`
	Retries  int64   `json:"retries"`
	Seconds  float64 `json:"seconds"`
	RatePerS float64 `json:"rate_per_s"` // achieved
	Latency  Latency `json:"latency"`    // dial → first initial_data (TCP + upgrade + subscribe)
}

// Latency is a histogram's summary, in milliseconds.
type Latency struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

func (l Latency) String() string {
	if l.Count == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s p90 %s p99 %s p99.9 %s max %s (%d)", Ms(l.P50), Ms(l.P90), Ms(l.P99), Ms(l.P999), Ms(l.Max), l.Count)
}

// Ms formats a number of milliseconds for a table: two decimals below 10.
func Ms(ms float64) string {
	if ms < 10 {
		return fmt.Sprintf("%.2fms", ms)
	}
	return fmt.Sprintf("%.0fms", ms)
}

// Phase is one publishing phase of a run.
type Phase struct {
	Name        string  `json:"name"`
	RatePerCity float64 `json:"rate_per_city"`
	Seconds     float64 `json:"seconds"` // publishing
	Frames      uint64  `json:"frames"`  // published
	Deliveries  uint64  `json:"deliveries"`
	PerSecond   float64 `json:"deliveries_per_s"`
	// Latency is ingest → the frame's bytes at the client's socket (kernel
	// receive timestamp): what the node and the network took. Read adds
	// the time the load generator took to get to it.
	Latency Latency `json:"latency"`
	Read    Latency `json:"read_latency"`
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

// Accounting sums the clients' tallies of one class (readers, slow).
type Accounting struct {
	Clients  int    `json:"clients"`
	Failed   int    `json:"failed"`  // never connected
	Dropped  int    `json:"dropped"` // ended by the server or the network
	Owed     uint64 `json:"owed"`
	Received uint64 `json:"received"`
	Lost     uint64 `json:"lost"`
	Dups     uint64 `json:"dups"`
	Late     uint64 `json:"late"`
	Skipped  uint64 `json:"skipped"` // replaced by a resync initial_data
	Resyncs  uint64 `json:"resyncs"` // initial_data resumed:false after the first
	Resumes  uint64 `json:"resumes"` // reconnects that resumed at the right seq
	Dials    uint64 `json:"dials"`
	Bad      uint64 `json:"bad"`      // protocol surprises
	BadTime  uint64 `json:"bad_time"` // frames without the publisher's send time
}

// Add adds b's tallies to a's.
func (a *Accounting) Add(b *Accounting) {
	a.Clients += b.Clients
	a.Failed += b.Failed
	a.Dropped += b.Dropped
	a.Owed += b.Owed
	a.Received += b.Received
	a.Lost += b.Lost
	a.Dups += b.Dups
	a.Late += b.Late
	a.Skipped += b.Skipped
	a.Resyncs += b.Resyncs
	a.Resumes += b.Resumes
	a.Dials += b.Dials
	a.Bad += b.Bad
	a.BadTime += b.BadTime
}

// Spread splits each frame's latency into the wake-up (ingest → first
// subscriber) and the fanout (first → last subscriber).
type Spread struct {
	Frames   uint64  `json:"frames"`
	FirstP50 float64 `json:"first_p50_ms"` // ingest → first subscriber
	FirstP99 float64 `json:"first_p99_ms"`
	FanP50   float64 `json:"fan_p50_ms"` // first → last subscriber
	FanP99   float64 `json:"fan_p99_ms"`
	FirstMax float64 `json:"first_max_ms"`
	FanMax   float64 `json:"fan_max_ms"`
}

// Check is one pass/fail judgement of a run.
type Check struct {
	Name string `json:"name"`
	Pass bool   `json:"pass"`
	Got  string `json:"got"`
	Want string `json:"want"`
}

// Load1 is the machine's 1-minute load average, or 0.
func Load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var l float64
	_, _ = fmt.Sscanf(string(b), "%f", &l)
	return l
}

// CPUs reads a CPU list as taskset -c takes it ("1", "0,2", "0-3": the
// options -cpus and -spawn-cpus) and returns its CPUs in order.
func CPUs(list string) ([]int, error) {
	var cpus []int
	for part := range strings.SplitSeq(list, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b < a || b >= 1024 {
			return nil, fmt.Errorf("cannot parse CPU list %q: want CPU numbers and ranges, as in 0,2-3", list)
		}
		for cpu := a; cpu <= b; cpu++ {
			cpus = append(cpus, cpu)
		}
	}
	return cpus, nil
}
