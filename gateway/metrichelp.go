package gateway

import (
	"bytes"
	"io"
)

// metricHelp is the HELP text of every metric family the admin port's
// /metrics exposes: ours, and the Go runtime and process families that
// VictoriaMetrics/metrics writes. The library (v1.45) writes
// "# HELP <family>" with no text (when metrics.ExposeMetadata is on) and
// has no way to give one, so the texts are filled in as /metrics renders
// (appendHelp). A new metric gets its line here: TestMetricsHelp fails
// when an exposed family has no text.
//
// The texts must not hold a backslash or a newline (the text format would
// need them escaped).
var metricHelp = map[string]string{
	// The node.
	"metrocast_build_info":                      "Always 1; the labels tell the metrocast version and the Go version it was built with.",
	"metrocast_connections":                     "Open WebSocket connections, handshakes included.",
	"metrocast_connections_opened_total":        "WebSocket connections accepted.",
	"metrocast_connections_upgraded_total":      "Connections that completed the WebSocket upgrade.",
	"metrocast_connections_closed_total":        "Closed WebSocket connections, by close reason.",
	"metrocast_handshake_duration_seconds":      "Time from accept to the upgrade answered, client round trips included.",
	"metrocast_subscriptions":                   "Current city subscriptions, all cities.",
	"metrocast_city_subscribers":                "Subscribers of each of the ten busiest cities.",
	"metrocast_cities":                          "Cities the node holds.",
	"metrocast_ingest_connections":              "Open producer connections on the ingest port.",
	"metrocast_ingest_frames_total":             "Ingest lines stored (TCP and HTTP).",
	"metrocast_ingest_bytes_total":              "Bytes of the ingest lines stored.",
	"metrocast_ingest_errors_total":             "Ingest lines answered with an error.",
	"metrocast_ingest_duplicates_total":         "Ingest lines acked as copies of an id stored in the last two minutes, not stored again.",
	"metrocast_ingest_rejected_total":           "Producer connections refused over ingest_max_conns.",
	"metrocast_admin_refused_total":             "Admin port requests refused for their credential (401).",
	"metrocast_ingest_line_timeouts_total":      "Producers and HTTP publishes cut off for a line not whole within ingest_line_timeout.",
	"metrocast_deliveries_total":                "City frames written to subscribers.",
	"metrocast_delivery_writes_total":           "Writes that carried city frames to subscribers, a system call each but those that leave with the answer to a client's own message: deliveries per write is the batching.",
	"metrocast_delivered_bytes_total":           "Bytes of the city frames written to subscribers.",
	"metrocast_delivery_latency_seconds":        "Sampled write batches: ingest accepted (the batch's oldest frame) to written to a subscriber's socket.",
	"metrocast_loop_task_lag_seconds":           "Time from an event loop woken for new frames to its fanout running.",
	"metrocast_conflations_total":               "Subscribers lapped by their city's ring and sent initial_data again.",
	"metrocast_slow_consumer_stalls_total":      "Times a subscriber went over max_backlog_bytes and was paused.",
	"metrocast_ring_evictions_total":            "Frames the rings dropped to make room for new ones.",
	"metrocast_ring_memory_bytes":               "Memory the cities' rings hold, frames and slots.",
	"metrocast_ring_memory_limit_bytes":         "ring_memory: the most the rings may hold before the coldest cities' oldest frames are trimmed.",
	"metrocast_ring_trimmed_total":              "Frames trimmed from the coldest cities' rings to keep them within ring_memory.",
	"metrocast_cities_dropped_total":            "Cities dropped after city_idle_ttl without a subscriber or a frame.",
	"metrocast_idle_state_memory_bytes":         "Memory the dropped cities' kept states hold, so that they come back as they were.",
	"metrocast_idle_state_memory_limit_bytes":   "idle_state_memory: the most the kept states may hold before the oldest are let go of.",
	"metrocast_idle_states_restored_total":      "Dropped cities that came back with their kept state.",
	"metrocast_idle_states_evicted_total":       "Kept states let go of to stay within idle_state_memory: their cities come back partial.",
	"metrocast_idle_states_forgotten_total":     "Marks of let-go states let go of too: their cities come back empty and unmarked.",
	"metrocast_cities_refused_total":            "New cities refused because the node held max_cities.",
	"metrocast_merge_failures_total":            "data_update payloads left out of a city state because they could not be split (0 unless a bug).",
	"metrocast_draining":                        "1 while the node drains its clients before it stops.",
	"metrocast_transport_connections":           "Open client connections by transport: websocket (handshakes included) or sse (Server-Sent Events streams).",
	"metrocast_transport_opened_total":          "Client connections by transport: upgraded (websocket) or streams started (sse).",
	"metrocast_transport_subscriptions":         "Current city subscriptions by transport.",
	"metrocast_transport_deliveries_total":      "City frames written to subscribers, by transport.",
	"metrocast_transport_delivered_bytes_total": "Bytes of the city frames written to subscribers, by transport.",
	"metrocast_transport_conflations_total":     "Subscribers lapped by their city's ring and sent initial_data again, by transport.",
	"metrocast_history_requests_total":          "GET /history requests answered (200 or 410).",
	"metrocast_cluster_connected":               "1 while the node is connected to NATS (cluster mode; 0 on a single node).",
	"metrocast_cluster_applied_seq":             "Stream seq of the last frame the node fed to its rings.",
	"metrocast_cluster_publish_errors_total":    "Ingest lines the stream did not store (answered with an error).",
	"metrocast_cluster_poison_total":            "Stream messages skipped because they are not valid ingest lines.",
	"metrocast_cluster_replays_total":           "Resumes served from the stream (since older than the ring).",
	"metrocast_cluster_replay_failures_total":   "Resumes the stream could not serve, answered with initial_data.",
	"metrocast_cluster_presence_errors_total":   "Presence shares the node could not put, delete or read.",

	// Auth.
	"metrocast_auth_jwks_fetches_total":         "Fetches of the auth_jwks_url key sets.",
	"metrocast_auth_jwks_fetch_errors_total":    "Fetches of the auth_jwks_url key sets that failed; the last good keys stayed in force.",
	"metrocast_auth_revocations":                "Revocations in force: auth_revoked_file entries and unexpired ones of POST /api/revoke.",
	"metrocast_cluster_revocation_errors_total": "Revocations the node could not put in the revocation bucket, or bucket entries it could not read.",

	// The Go runtime (runtime/metrics and runtime.MemStats).
	"go_sched_latencies_seconds":          "Time goroutines spent ready to run before running.",
	"go_mutex_wait_seconds_total":         "Time goroutines spent blocked on a sync.Mutex or sync.RWMutex.",
	"go_gc_mark_assist_cpu_seconds_total": "CPU time goroutines spent assisting the garbage collector's mark phase.",
	"go_gc_cpu_seconds_total":             "CPU time spent in the garbage collector.",
	"go_gc_pauses_seconds":                "Stop-the-world pauses of the garbage collector.",
	"go_scavenge_cpu_seconds_total":       "CPU time spent returning memory to the operating system.",
	"go_memlimit_bytes":                   "The Go memory limit (GOMEMLIMIT).",
	"go_memstats_alloc_bytes":             "Bytes of allocated heap objects.",
	"go_memstats_alloc_bytes_total":       "Bytes allocated for heap objects since the start.",
	"go_memstats_buck_hash_sys_bytes":     "Bytes in profiling bucket hash tables.",
	"go_memstats_frees_total":             "Heap objects freed since the start.",
	"go_memstats_gc_cpu_fraction":         "Fraction of the CPU time available spent in the garbage collector since the start.",
	"go_memstats_gc_sys_bytes":            "Bytes of garbage collector metadata.",
	"go_memstats_heap_alloc_bytes":        "Bytes of allocated heap objects (as go_memstats_alloc_bytes).",
	"go_memstats_heap_idle_bytes":         "Bytes in idle (unused) heap spans.",
	"go_memstats_heap_inuse_bytes":        "Bytes in in-use heap spans.",
	"go_memstats_heap_objects":            "Allocated heap objects.",
	"go_memstats_heap_released_bytes":     "Bytes of physical memory returned to the operating system.",
	"go_memstats_heap_sys_bytes":          "Bytes of heap memory obtained from the operating system.",
	"go_memstats_last_gc_time_seconds":    "Unix time the last garbage collection finished.",
	"go_memstats_lookups_total":           "Pointer lookups performed by the runtime.",
	"go_memstats_mallocs_total":           "Heap objects allocated since the start.",
	"go_memstats_mcache_inuse_bytes":      "Bytes of allocated mcache structures.",
	"go_memstats_mcache_sys_bytes":        "Bytes of memory obtained from the operating system for mcache structures.",
	"go_memstats_mspan_inuse_bytes":       "Bytes of allocated mspan structures.",
	"go_memstats_mspan_sys_bytes":         "Bytes of memory obtained from the operating system for mspan structures.",
	"go_memstats_next_gc_bytes":           "Heap size at which the next garbage collection starts.",
	"go_memstats_other_sys_bytes":         "Bytes of memory in miscellaneous off-heap runtime allocations.",
	"go_memstats_stack_inuse_bytes":       "Bytes in goroutine stacks.",
	"go_memstats_stack_sys_bytes":         "Bytes of stack memory obtained from the operating system.",
	"go_memstats_sys_bytes":               "Bytes of memory the Go runtime obtained from the operating system.",
	"go_cgo_calls_count":                  "Calls to C since the start.",
	"go_cpu_count":                        "CPUs the process can use.",
	"go_gc_duration_seconds":              "Quantiles of the last 256 garbage collection pauses.",
	"go_gc_forced_count":                  "Garbage collections forced by runtime.GC.",
	"go_gomaxprocs":                       "GOMAXPROCS: the CPUs that run Go code at once.",
	"go_goroutines":                       "Goroutines that exist.",
	"go_threads":                          "Operating system threads created.",
	"go_info":                             "Always 1; the label tells the Go version.",
	"go_info_ext":                         "Always 1; the labels tell the compiler, GOARCH, GOOS and GOROOT.",

	// The process (/proc; some only where the kernel has them).
	"process_cpu_seconds_system_total":              "CPU time spent in the kernel for the process.",
	"process_cpu_seconds_total":                     "CPU time spent by the process, user and kernel.",
	"process_cpu_seconds_user_total":                "CPU time spent in user space.",
	"process_major_pagefaults_total":                "Page faults that needed disk I/O.",
	"process_minor_pagefaults_total":                "Page faults resolved without disk I/O.",
	"process_num_threads":                           "Operating system threads of the process.",
	"process_resident_memory_bytes":                 "Resident memory (RSS).",
	"process_start_time_seconds":                    "Unix time the process started.",
	"process_virtual_memory_bytes":                  "Virtual memory size.",
	"process_virtual_memory_peak_bytes":             "Largest virtual memory size.",
	"process_resident_memory_peak_bytes":            "Largest resident memory (RSS).",
	"process_resident_memory_anon_bytes":            "Resident memory the process allocated (anonymous).",
	"process_resident_memory_file_bytes":            "Resident memory of mapped files.",
	"process_resident_memory_shared_bytes":          "Resident shared memory.",
	"process_io_read_bytes_total":                   "Bytes read through system calls.",
	"process_io_written_bytes_total":                "Bytes written through system calls.",
	"process_io_read_syscalls_total":                "Read system calls.",
	"process_io_write_syscalls_total":               "Write system calls.",
	"process_io_storage_read_bytes_total":           "Bytes read from storage.",
	"process_io_storage_written_bytes_total":        "Bytes written to storage.",
	"process_pressure_cpu_waiting_seconds_total":    "Time some processes of the cgroup waited for a CPU (cgroup v2 PSI).",
	"process_pressure_cpu_stalled_seconds_total":    "Time all processes of the cgroup waited for a CPU (cgroup v2 PSI).",
	"process_pressure_io_waiting_seconds_total":     "Time some processes of the cgroup waited for I/O (cgroup v2 PSI).",
	"process_pressure_io_stalled_seconds_total":     "Time all processes of the cgroup waited for I/O (cgroup v2 PSI).",
	"process_pressure_memory_waiting_seconds_total": "Time some processes of the cgroup waited for memory (cgroup v2 PSI).",
	"process_pressure_memory_stalled_seconds_total": "Time all processes of the cgroup waited for memory (cgroup v2 PSI).",
	"process_cgroup_cpu_throttled_seconds_total":    "Time the cgroup was throttled by its CPU limit.",
	"process_max_fds":                               "Open files limit (one per connection).",
	"process_open_fds":                              "Open files (one per connection).",
}

// helpPrefix starts a HELP line.
var helpPrefix = []byte("# HELP ")

// appendHelp appends src, a Prometheus text exposition, to dst with the
// text of metricHelp given to every HELP line that has none.
func appendHelp(dst, src []byte) []byte {
	for len(src) > 0 {
		line := src
		if i := bytes.IndexByte(src, '\n'); i >= 0 {
			line = src[:i+1]
		}
		src = src[len(line):]
		name, ok := bytes.CutPrefix(bytes.TrimSuffix(line, []byte("\n")), helpPrefix)
		if text := metricHelp[string(name)]; ok && text != "" {
			dst = append(dst, helpPrefix...)
			dst = append(dst, name...)
			dst = append(dst, ' ')
			dst = append(dst, text...)
			dst = append(dst, '\n')
			continue
		}
		dst = append(dst, line...)
	}
	return dst
}

// writeHelped renders write's exposition and writes it to w with the HELP
// texts filled in.
func writeHelped(w io.Writer, write func(io.Writer)) {
	var b bytes.Buffer
	write(&b)
	_, _ = w.Write(appendHelp(make([]byte, 0, b.Len()+b.Len()/2), b.Bytes()))
}
