package codec

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/gobwas/ws"
)

func TestCloseCode(t *testing.T) {
	f := func(err error, want ws.StatusCode) {
		t.Helper()
		if got := CloseCode(err); got != want {
			t.Fatalf("CloseCode(%v) = %d, want %d", err, got, want)
		}
	}
	f(ErrProtocol, ws.StatusProtocolError)
	f(ErrTooBig, ws.StatusMessageTooBig)
	f(ErrInvalidUTF8, ws.StatusInvalidFramePayloadData)
	f(ErrUnsupportedData, ws.StatusUnsupportedData)
	// Wrapped, as the parsers return them.
	f(fmt.Errorf("%w: %w", ErrProtocol, ws.ErrProtocolMaskRequired), ws.StatusProtocolError)
	f(fmt.Errorf("%w: 10 bytes over", ErrTooBig), ws.StatusMessageTooBig)
	f(fmt.Errorf("cannot read: %w", fmt.Errorf("%w: close reason", ErrInvalidUTF8)), ws.StatusInvalidFramePayloadData)
	// A bare gobwas/ws protocol error is a protocol error too.
	f(ws.ErrProtocolNonZeroRsv, ws.StatusProtocolError)
	f(fmt.Errorf("x: %w", ws.ErrProtocolControlNotFinal), ws.StatusProtocolError)
	// Anything else is our fault.
	f(nil, ws.StatusInternalServerError)
	f(io.EOF, ws.StatusInternalServerError)
	f(errors.New("websocket protocol error"), ws.StatusInternalServerError) // same text, not the sentinel
	f(ErrBadJSON, ws.StatusInternalServerError)

	// What the parsers return maps as documented.
	var p FrameParser
	_, _, err := p.Header([]byte{0x81, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0})
	f(err, ws.StatusProtocolError)
	f(CheckClientHeader(ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Length: 11}, false, 0, 10), ws.StatusMessageTooBig)
	_, _, err = ParseClose([]byte{0x03, 0xe8, 0xff})
	f(err, ws.StatusInvalidFramePayloadData)
	_, _, err = ParseClose([]byte{0x03, 0xe7})
	f(err, ws.StatusProtocolError)
}
