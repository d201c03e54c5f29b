package gateway

import (
	"github.com/gobwas/ws"

	"github.com/metrocast/metrocast/codec"
)

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
	CloseFrameTimeout                        // 1008: a frame or fragmented message not whole within the frame time-out
	CloseUnauthorized                        // HTTP 401: a token in the upgrade request refused
	CloseOriginForbidden                     // HTTP 403: Origin not allowed
	CloseNodeFull                            // HTTP 503: the node is at MaxConns
	CloseIPLimit                             // HTTP 429: the source address is at MaxConnsPerIP
	CloseResponded                           // an HTTP response (history, CORS preflight) was sent whole
	CloseForbidden                           // HTTP 403: a stream or history request for a city outside its token
	closeReasons
)

var closeReasonNames = [closeReasons]string{
	"peer", "protocol_error", "too_big", "invalid_utf8", "unsupported_data", "abuse",
	"slow_consumer", "idle", "handshake_timeout", "handshake_failed", "shutdown",
	"auth_failed", "auth_timeout", "token_expired", "rate_limited", "frame_timeout",
	"unauthorized", "origin_forbidden", "node_full", "ip_limit",
	"responded", "forbidden",
}

func (r CloseReason) String() string { return closeReasonNames[r] }

// closeCodes maps a close reason to its close frame; reasons without one
// (the peer left, HTTP-stage failures) map to 0.
var closeCodes = [closeReasons]ws.StatusCode{
	CloseProtocol:        ws.StatusProtocolError,
	CloseTooBig:          ws.StatusMessageTooBig,
	CloseInvalidUTF8:     ws.StatusInvalidFramePayloadData,
	CloseUnsupportedData: ws.StatusUnsupportedData,
	CloseAbuse:           ws.StatusPolicyViolation,
	CloseSlowConsumer:    ws.StatusPolicyViolation,
	CloseIdle:            ws.StatusGoingAway,
	CloseShutdown:        ws.StatusGoingAway,
	CloseAuthFailed:      StatusAuthFailed,
	CloseAuthTimeout:     StatusAuthFailed,
	CloseTokenExpired:    StatusAuthFailed,
	CloseRateLimited:     ws.StatusPolicyViolation,
	CloseFrameTimeout:    ws.StatusPolicyViolation,
}

// StatusAuthFailed is the close code after an auth_error: the token was
// refused, missing, or expired (4000-4999 are for applications, RFC 6455
// §7.4.2).
const StatusAuthFailed = 4001

func reasonOf(err error) CloseReason {
	switch codec.CloseCode(err) {
	case ws.StatusMessageTooBig:
		return CloseTooBig
	case ws.StatusInvalidFramePayloadData:
		return CloseInvalidUTF8
	}
	return CloseProtocol
}
