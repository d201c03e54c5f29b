package gateway

import (
	"sync/atomic"

	"github.com/metrocast/metrocast/gateway/ingest"
)

// loopStats are counted by one event loop; other goroutines only read them.
type loopStats struct {
	deliveries    atomic.Uint64
	bytesWritten  atomic.Uint64
	writes        atomic.Uint64 // system calls that carried city frames
	conflations   atomic.Uint64
	stalls        atomic.Uint64
	subscriptions atomic.Int64
	authFailures  atomic.Uint64 // tokens refused, at the upgrade or later
	rateLimited   atomic.Uint64
	forbidden     atomic.Uint64
	closes        [closeReasons]atomic.Uint64
	sse           transportStats // the SSE streams' share (sse.go)
	history       atomic.Uint64  // history requests answered (200 or 410)
	_             [64]byte
}

// Stats is a snapshot of the server's counters.
type Stats struct {
	Connections   int64  `json:"connections"`   // open WebSocket connections
	Accepted      uint64 `json:"accepted"`      // connections accepted since start
	Upgraded      uint64 `json:"upgraded"`      // connections upgraded since start
	Subscriptions int64  `json:"subscriptions"` // current subscriptions, all cities
	Deliveries    uint64 `json:"deliveries"`    // city frames written to clients
	BytesWritten  uint64 `json:"bytes_written"` // bytes of city frames written
	// DeliveryWrites counts the writes that carried them, a system call
	// each (but those made while answering a client's message, which
	// leave with the answer): Deliveries ÷ DeliveryWrites is the frames a
	// write carries, the batching of a busy node.
	DeliveryWrites uint64            `json:"delivery_writes"`
	Conflations    uint64            `json:"conflations"`   // subscribers lapped and resent initial_data
	Stalls         uint64            `json:"stalls"`        // times a subscriber went over the backlog limit
	AuthFailures   uint64            `json:"auth_failures"` // tokens refused (401 at the upgrade, or auth_error)
	RateLimited    uint64            `json:"rate_limited"`  // client messages refused as over the message rate
	Forbidden      uint64            `json:"forbidden"`     // subscriptions refused: city not in the token
	Closes         map[string]uint64 `json:"closes"`        // closed connections by close reason
	Cities         int64             `json:"city_count"`
	RingEvictions  uint64            `json:"ring_evictions"` // frames the rings dropped to make room
	RingMemory     int64             `json:"ring_memory"`    // bytes the rings hold, frames and slots
	RingTrimmed    uint64            `json:"ring_trimmed"`   // frames dropped to keep within ring_memory
	CitiesDropped  uint64            `json:"cities_dropped"` // idle cities dropped (city_idle_ttl)
	// IdleStateMemory is what the dropped cities keep to come back as they
	// were (idle_state_memory bounds it); IdleStatesRestored counts the
	// cities that came back so, IdleStatesEvicted the states let go of
	// (their cities come back partial), IdleStatesForgotten the marks of
	// those let go of too (their cities come back empty, unmarked).
	IdleStateMemory     int64  `json:"idle_state_memory"`
	IdleStatesRestored  uint64 `json:"idle_states_restored"`
	IdleStatesEvicted   uint64 `json:"idle_states_evicted"`
	IdleStatesForgotten uint64 `json:"idle_states_forgotten"`
	CitiesRefused       uint64 `json:"cities_refused"` // new cities refused at max_cities
	IngestConns         int64  `json:"ingest_conns"`
	IngestFrames        uint64 `json:"ingest_frames"`
	IngestBytes         uint64 `json:"ingest_bytes"`
	IngestErrors        uint64 `json:"ingest_errors"`
	IngestRejected      uint64 `json:"ingest_rejected"` // producer connections refused over the limit
	// IngestAuthFailures counts producers refused for their token.
	IngestAuthFailures uint64 `json:"ingest_auth_failures"`
	// IngestDropped counts producers disconnected for too many bad lines.
	IngestDropped uint64 `json:"ingest_dropped"`
	// AdminRefused counts admin port requests refused for their
	// credential (401).
	AdminRefused uint64 `json:"admin_refused"`
	// JWKSFetches counts fetches of the JWKS URLs; JWKSFetchErrors those
	// that failed (the URL's last good keys stayed in force).
	JWKSFetches     uint64 `json:"jwks_fetches"`
	JWKSFetchErrors uint64 `json:"jwks_fetch_errors"`
	// Revocations counts the revocations in force: auth_revoked_file's
	// entries and the timed ones (Server.Revoke), expired ones aside.
	Revocations int64 `json:"revocations"`
	// IngestTimeouts counts producers (and HTTP publishes) cut off for a
	// line not whole within IngestLineTimeout.
	IngestTimeouts uint64 `json:"ingest_timeouts"`
	// IngestDuplicates counts lines acked as copies of an id stored in the
	// last two minutes, not stored again.
	IngestDuplicates uint64 `json:"ingest_duplicates"`
	// Producers lists the connected producers.
	Producers []ProducerStats `json:"producers"`
	// Transports splits the client counters by the way out.
	Transports Transports `json:"transports"`
	// HistoryRequests counts GET /history requests answered (200 or 410).
	HistoryRequests uint64 `json:"history_requests"`
}

// Transports splits the client counters: WebSocket and SSE add up to
// Stats' Connections, Subscriptions, Deliveries, BytesWritten and
// Conflations.
type Transports struct {
	// WebSocket counts, among its Connections, those still in their
	// handshake, and HTTP responses (history) being written.
	WebSocket TransportStats `json:"websocket"`
	// SSE is the Server-Sent Events streams (GET /sse).
	SSE TransportStats `json:"sse"`
}

// TransportStats is one transport's share of the client counters.
type TransportStats struct {
	Connections   int64  `json:"connections"`   // open
	Opened        uint64 `json:"opened"`        // upgraded (WebSocket) or started (SSE) since start
	Subscriptions int64  `json:"subscriptions"` // current
	Deliveries    uint64 `json:"deliveries"`    // city frames written
	BytesWritten  uint64 `json:"bytes_written"` // bytes of city frames written
	Conflations   uint64 `json:"conflations"`   // subscribers lapped and resent initial_data
}

// transportStats are one loop's counters of a transport (loopStats.sse).
type transportStats struct {
	streams       atomic.Int64
	opened        atomic.Uint64
	subscriptions atomic.Int64
	deliveries    atomic.Uint64
	bytesWritten  atomic.Uint64
	conflations   atomic.Uint64
}

// ProducerStats is one producer connection's accounting (ingest's).
type ProducerStats = ingest.ProducerStats

// CityStats describes one city (Server.Cities, /api/stats).
type CityStats struct {
	City        string `json:"city"`
	Subscribers int64  `json:"subscribers"`
	// Head is the seq of the newest frame (0: none yet); Tail the seq of
	// the oldest frame the ring still holds for replay.
	Head       uint64 `json:"head_seq"`
	Tail       uint64 `json:"tail_seq"`
	RingFrames int    `json:"ring_frames"`
	RingBytes  int    `json:"ring_bytes"`
	// StateKeys and StateBytes measure the merged state sent as
	// initial_data (member names plus raw values).
	StateKeys    int `json:"state_keys"`
	StateBytes   int `json:"state_bytes"`
	RecentAlerts int `json:"recent_alerts"`
}
