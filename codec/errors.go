package codec

import (
	"errors"

	"github.com/gobwas/ws"
)

// Protocol errors. Each maps to the RFC 6455 close code the gateway sends
// before it closes the connection (see CloseCode).
var (
	// ErrProtocol is a WebSocket framing violation (close 1002).
	ErrProtocol = errors.New("websocket protocol error")
	// ErrTooBig is a frame or message over the configured limit (close 1009).
	ErrTooBig = errors.New("message too big")
	// ErrInvalidUTF8 is a text message that is not valid UTF-8 (close 1007).
	ErrInvalidUTF8 = errors.New("invalid UTF-8 in text message")
	// ErrUnsupportedData is a binary message; the protocol is JSON text (close 1003).
	ErrUnsupportedData = errors.New("binary messages are not supported")
)

// CloseCode returns the close status code for an error returned by the frame
// parser, and 1011 (internal error) for anything else.
func CloseCode(err error) ws.StatusCode {
	var pe ws.ProtocolError
	switch {
	case errors.Is(err, ErrTooBig):
		return ws.StatusMessageTooBig
	case errors.Is(err, ErrInvalidUTF8):
		return ws.StatusInvalidFramePayloadData
	case errors.Is(err, ErrUnsupportedData):
		return ws.StatusUnsupportedData
	case errors.Is(err, ErrProtocol), errors.As(err, &pe):
		return ws.StatusProtocolError
	}
	return ws.StatusInternalServerError
}
