package gateway

import (
	"cmp"
	"fmt"
	"io"
	"runtime"
	"slices"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// The server's metrics, in Prometheus text format (the admin port's
// /metrics; README lists them). Counters that the loops and ingest keep
// anyway (loopStats, ingest) are read when scraped, so counting costs the hot
// path nothing new; only the three histograms are updated as things happen.
//
// Each Server has its own metrics.Set rather than package-level series, so
// that several servers in one process (the tests) do not add into each
// other; WriteMetrics writes it.

// Histogram buckets, in seconds.
var (
	// latencyBuckets: a loopback fanout takes tens of microseconds; a
	// loaded node, milliseconds; a stalled one, seconds.
	latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	// handshakeBuckets: from accept to the 101, client round trips included.
	handshakeBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	// lagBuckets: an idle loop wakes in microseconds; a busy one after the
	// task in front of it.
	lagBuckets = []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}
)

// topCities bounds the per-city series: only the busiest cities by
// subscribers get one, so the label set stays small however many cities
// the node holds.
const topCities = 10

// serverMetrics holds a server's metric set and the histograms updated on
// the way. The histograms are safe for concurrent use.
type serverMetrics struct {
	set *metrics.Set
	// latency is ingest accepted → written to a subscriber's socket, one
	// sample per write batch (the batch's oldest frame).
	latency *metrics.PrometheusHistogram
	// handshake is accept → upgrade answered.
	handshake *metrics.PrometheusHistogram
	// taskLag is a loop's wake-up (the first new frame) → its fanout task
	// running.
	taskLag *metrics.PrometheusHistogram
}

func newServerMetrics(s *Server) *serverMetrics {
	// HELP and TYPE lines let Prometheus and Grafana describe the series
	// and treat histograms and counters as such. The switch is the
	// library's, process-wide; this process has one kind of /metrics.
	metrics.ExposeMetadata(true)
	set := metrics.NewSet()
	m := &serverMetrics{
		set:       set,
		latency:   set.NewPrometheusHistogramExt("metrocast_delivery_latency_seconds", latencyBuckets),
		handshake: set.NewPrometheusHistogramExt("metrocast_handshake_duration_seconds", handshakeBuckets),
		taskLag:   set.NewPrometheusHistogramExt("metrocast_loop_task_lag_seconds", lagBuckets),
	}
	set.RegisterMetricsWriter(s.writeCounters)
	return m
}

// WriteMetrics writes the server's metrics in Prometheus text format, with
// their HELP and TYPE lines (no process or Go runtime metrics: the admin
// port adds those). Safe for concurrent use.
func (s *Server) WriteMetrics(w io.Writer) {
	writeHelped(w, s.metrics.set.WritePrometheus)
}

// writeCounters writes the series read from the server's counters at
// scrape time.
func (s *Server) writeCounters(w io.Writer) {
	st := s.Stats()
	gauge := func(name string, v int64) { metrics.WriteGaugeUint64(w, name, uint64(max(v, 0))) }
	counter := func(name string, v uint64) { metrics.WriteCounterUint64(w, name, v) }

	metrics.WriteMetadataIfNeeded(w, "metrocast_build_info", "gauge")
	fmt.Fprintf(w, "metrocast_build_info{version=%q,go_version=%q} 1\n", s.cfg.Version, runtime.Version())

	gauge("metrocast_connections", st.Connections)
	counter("metrocast_connections_opened_total", st.Accepted)
	counter("metrocast_connections_upgraded_total", st.Upgraded)
	metrics.WriteMetadataIfNeeded(w, "metrocast_connections_closed_total", "counter")
	for _, reason := range closeReasonNames {
		fmt.Fprintf(w, "metrocast_connections_closed_total{reason=%q} %d\n", reason, st.Closes[reason])
	}
	gauge("metrocast_subscriptions", st.Subscriptions)
	gauge("metrocast_cities", st.Cities)
	top := s.busiest(topCities)
	for i, cc := range top {
		if cc.subs == 0 {
			break
		}
		if i == 0 {
			metrics.WriteMetadataIfNeeded(w, "metrocast_city_subscribers", "gauge")
		}
		// City names need no escaping (codec.ValidCity).
		fmt.Fprintf(w, "metrocast_city_subscribers{city=%q} %d\n", cc.c.name, cc.subs)
	}
	counter("metrocast_deliveries_total", st.Deliveries)
	counter("metrocast_delivered_bytes_total", st.BytesWritten)
	counter("metrocast_delivery_writes_total", st.DeliveryWrites)
	counter("metrocast_conflations_total", st.Conflations)
	counter("metrocast_slow_consumer_stalls_total", st.Stalls)
	counter("metrocast_ring_evictions_total", st.RingEvictions)
	gauge("metrocast_ring_memory_bytes", st.RingMemory)
	gauge("metrocast_ring_memory_limit_bytes", s.cfg.RingMemory)
	counter("metrocast_ring_trimmed_total", st.RingTrimmed)
	counter("metrocast_cities_dropped_total", st.CitiesDropped)
	gauge("metrocast_idle_state_memory_bytes", st.IdleStateMemory)
	gauge("metrocast_idle_state_memory_limit_bytes", s.cfg.IdleStateMemory)
	counter("metrocast_idle_states_restored_total", st.IdleStatesRestored)
	counter("metrocast_idle_states_evicted_total", st.IdleStatesEvicted)
	counter("metrocast_idle_states_forgotten_total", st.IdleStatesForgotten)
	counter("metrocast_cities_refused_total", st.CitiesRefused)
	counter("metrocast_merge_failures_total", mergeFailures.Load())
	gauge("metrocast_ingest_connections", st.IngestConns)
	counter("metrocast_ingest_frames_total", st.IngestFrames)
	counter("metrocast_ingest_bytes_total", st.IngestBytes)
	counter("metrocast_ingest_errors_total", st.IngestErrors)
	counter("metrocast_ingest_duplicates_total", st.IngestDuplicates)
	counter("metrocast_ingest_rejected_total", st.IngestRejected)
	counter("metrocast_admin_refused_total", st.AdminRefused)
	counter("metrocast_auth_jwks_fetches_total", st.JWKSFetches)
	counter("metrocast_auth_jwks_fetch_errors_total", st.JWKSFetchErrors)
	gauge("metrocast_auth_revocations", st.Revocations)
	counter("metrocast_ingest_line_timeouts_total", st.IngestTimeouts)
	for _, m := range []struct {
		name, typ string
		ws, sse   uint64
	}{
		{"metrocast_transport_connections", "gauge", uint64(st.Transports.WebSocket.Connections), uint64(st.Transports.SSE.Connections)},
		{"metrocast_transport_opened_total", "counter", st.Transports.WebSocket.Opened, st.Transports.SSE.Opened},
		{"metrocast_transport_subscriptions", "gauge", uint64(st.Transports.WebSocket.Subscriptions), uint64(st.Transports.SSE.Subscriptions)},
		{"metrocast_transport_deliveries_total", "counter", st.Transports.WebSocket.Deliveries, st.Transports.SSE.Deliveries},
		{"metrocast_transport_delivered_bytes_total", "counter", st.Transports.WebSocket.BytesWritten, st.Transports.SSE.BytesWritten},
		{"metrocast_transport_conflations_total", "counter", st.Transports.WebSocket.Conflations, st.Transports.SSE.Conflations},
	} {
		metrics.WriteMetadataIfNeeded(w, m.name, m.typ)
		fmt.Fprintf(w, "%s{transport=\"websocket\"} %d\n%s{transport=\"sse\"} %d\n", m.name, m.ws, m.name, m.sse)
	}
	counter("metrocast_history_requests_total", st.HistoryRequests)
	draining := int64(0)
	if s.isDraining() {
		draining = 1
	}
	gauge("metrocast_draining", draining)
	// Cluster series exist on a single node too (at 0), so that
	// dashboards and alerts need no second shape.
	bs := s.bus.Stats()
	var connected int64
	if bs.Connected {
		connected = 1
	}
	gauge("metrocast_cluster_connected", connected)
	metrics.WriteGaugeUint64(w, "metrocast_cluster_applied_seq", bs.Applied)
	counter("metrocast_cluster_publish_errors_total", bs.PublishErrors)
	counter("metrocast_cluster_poison_total", s.poison.Load())
	counter("metrocast_cluster_replays_total", bs.Replays)
	counter("metrocast_cluster_replay_failures_total", bs.ReplayFailures)
	counter("metrocast_cluster_presence_errors_total", bs.PresenceErrors)
	counter("metrocast_cluster_revocation_errors_total", bs.RevocationErrors)
}

// cityCount is a city and its subscribers at one moment.
type cityCount struct {
	c    *city
	subs int64
}

// busiest returns up to n cities, most subscribers first (then by name).
// Safe for concurrent use.
func (s *Server) busiest(n int) []cityCount {
	var all []cityCount
	s.hub.each(func(c *city) {
		all = append(all, cityCount{c, c.subs.Load()})
	})
	slices.SortFunc(all, func(a, b cityCount) int {
		if d := cmp.Compare(b.subs, a.subs); d != 0 {
			return d
		}
		return cmp.Compare(a.c.name, b.c.name)
	})
	return all[:min(n, len(all))]
}

// monoBase anchors mono: time.Since reads the monotonic clock, so the
// latencies measured with it do not jump with the wall clock.
var monoBase = time.Now()

// mono returns monotonic nanoseconds since the process started.
func mono() int64 { return int64(time.Since(monoBase)) }

// monoOf converts t (taken with time.Now) to mono's scale.
func monoOf(t time.Time) int64 { return int64(t.Sub(monoBase)) }

// seconds converts mono nanoseconds to the histograms' unit.
func seconds(ns int64) float64 { return float64(ns) / float64(time.Second) }
