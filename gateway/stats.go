package gateway

import "sync/atomic"

// CloseReason says why a connection ended. Each reason has a counter and,
// where a close frame is sent, a close code.
type CloseReason uint8

// Close reasons.
const (
	ClosePeer             CloseReason = iota // the client closed (close frame or EOF)
	CloseProtocol                            // 1002: framing violation
	CloseTooBig                              // 1009: message over the limit
	CloseInvalidUTF8                         // 1007: text that is not UTF-8
	CloseUnsupportedData                     // 1003: binary message
	CloseAbuse                               // 1008: too many bad messages
	CloseSlowConsumer                        // 1008: stuck over the backlog limit
	CloseIdle                                // 1001: nothing heard within the idle time-out
	CloseHandshakeTimeout                    // upgrade not completed in time
	CloseHandshakeFailed                     // upgrade rejected with an HTTP error
	CloseShutdown                            // 1001: the node is stopping
	CloseAuthFailed                          // 4001: a token refused (auth_error sent)
	CloseAuthTimeout                         // 4001: no token within the auth time-out
	CloseTokenExpired                        // 4001: the token expired and was not refreshed in time
	CloseRateLimited                         // 1008: kept sending over the message rate
	CloseUnauthorized                        // HTTP 401: a token in the upgrade request refused
	CloseOriginForbidden                     // HTTP 403: Origin not allowed
	CloseNodeFull                            // HTTP 503: the node is at MaxConns
	CloseIPLimit                             // HTTP 429: the source address is at MaxConnsPerIP
	closeReasons
)

var closeReasonNames = [closeReasons]string{
	"peer", "protocol_error", "too_big", "invalid_utf8", "unsupported_data", "abuse",
	"slow_consumer", "idle", "handshake_timeout", "handshake_failed", "shutdown",
	"auth_failed", "auth_timeout", "token_expired", "rate_limited",
	"unauthorized", "origin_forbidden", "node_full", "ip_limit",
}

func (r CloseReason) String() string { return closeReasonNames[r] }

// loopStats are counted by one event loop; other goroutines only read them.
type loopStats struct {
	deliveries   atomic.Uint64
	bytesWritten atomic.Uint64
	conflations  atomic.Uint64
	stalls       atomic.Uint64
	authFailures atomic.Uint64 // tokens refused, at the upgrade or later
	rateLimited  atomic.Uint64
	forbidden    atomic.Uint64
	closes       [closeReasons]atomic.Uint64
	_            [64]byte
}

// Stats is a snapshot of the server's counters.
type Stats struct {
	Connections    int64  // open WebSocket connections
	Accepted       uint64 // connections accepted since start
	Upgraded       uint64 // connections upgraded since start
	Deliveries     uint64 // city frames written to clients
	BytesWritten   uint64 // bytes of city frames written
	Conflations    uint64 // subscribers lapped and resent initial_data
	Stalls         uint64 // times a subscriber went over the backlog limit
	AuthFailures   uint64 // tokens refused (401 at the upgrade, or auth_error)
	RateLimited    uint64 // client messages refused as over the message rate
	Forbidden      uint64 // subscriptions refused: city not in the token
	Closes         map[string]uint64
	Cities         int64
	IngestConns    int64
	IngestFrames   uint64
	IngestBytes    uint64
	IngestErrors   uint64
	IngestRejected uint64 // producer connections refused over the limit
	// IngestAuthFailures counts producers refused for their token.
	IngestAuthFailures uint64
	// IngestDropped counts producers disconnected for too many bad lines.
	IngestDropped uint64
	// Producers lists the connected producers.
	Producers []ProducerStats
}

// ProducerStats is one producer connection's accounting.
type ProducerStats struct {
	Addr      string // remote address
	Sub       string // the token's subject; empty without a token
	Lines     uint64 // lines read
	Bytes     uint64 // bytes of lines read
	Errors    uint64 // lines refused
	Throttled uint64 // lines delayed by IngestMaxRate
}
