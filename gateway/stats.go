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
	closeReasons
)

var closeReasonNames = [closeReasons]string{
	"peer", "protocol_error", "too_big", "invalid_utf8", "unsupported_data", "abuse",
	"slow_consumer", "idle", "handshake_timeout", "handshake_failed", "shutdown",
}

func (r CloseReason) String() string { return closeReasonNames[r] }

// loopStats are counted by one event loop; other goroutines only read them.
type loopStats struct {
	deliveries   atomic.Uint64
	bytesWritten atomic.Uint64
	conflations  atomic.Uint64
	stalls       atomic.Uint64
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
	Closes         map[string]uint64
	Cities         int64
	IngestConns    int64
	IngestFrames   uint64
	IngestBytes    uint64
	IngestErrors   uint64
	IngestRejected uint64 // producer connections refused over the limit
}
