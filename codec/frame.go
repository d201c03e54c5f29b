package codec

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// MaxServerHeaderSize is the largest header of an unmasked (server) frame.
const MaxServerHeaderSize = ws.MaxHeaderSize - 4

// FrameParser reads WebSocket frame headers from a byte slice through
// gobwas/ws without allocating. The zero value is ready to use. It is not
// safe for concurrent use: keep one per event loop.
type FrameParser struct {
	r   bytes.Reader
	buf [ws.MaxHeaderSize - 2]byte
}

// Header parses the frame header at the start of b. It returns the header and
// its size in bytes, or n == 0 with a nil error when b does not yet hold a
// whole header. It checks nothing but the encoding; see CheckClientHeader.
func (p *FrameParser) Header(b []byte) (h ws.Header, n int, err error) {
	if len(b) < 2 {
		return h, 0, nil
	}
	p.r.Reset(b)
	h, err = ws.ReadHeaderBuffer(&p.r, p.buf[:])
	switch err {
	case nil:
		return h, len(b) - p.r.Len(), nil
	case io.EOF, io.ErrUnexpectedEOF:
		return ws.Header{}, 0, nil
	}
	return h, 0, fmt.Errorf("%w: %w", ErrProtocol, err)
}

// CheckClientHeader validates a header received by a server. fragmented says
// whether a fragmented message is being reassembled; have is the size of
// that message so far; max is the largest message accepted.
func CheckClientHeader(h ws.Header, fragmented bool, have, max int64) error {
	s := ws.StateServerSide
	if fragmented {
		s |= ws.StateFragmented
	}
	if err := ws.CheckHeader(h, s); err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	// Compare against max-have: h.Length+have overflows to a negative sum
	// that passes when a continuation declares a length near 2^63.
	if !h.OpCode.IsControl() && h.Length > max-have {
		return fmt.Errorf("%w: %d bytes so far and a frame of %d, over the limit of %d", ErrTooBig, have, h.Length, max)
	}
	return nil
}

// Unmask unmasks a client payload in place. Call it once, on a whole payload:
// unmasking a partial payload and again later corrupts it.
func Unmask(h ws.Header, payload []byte) {
	if h.Masked {
		ws.Cipher(payload, h.Mask, 0)
	}
}

// BeginFrame appends room for a server frame header to dst and returns the
// new slice and the offset at which the payload starts. Append the payload,
// then call FinishFrame with the same offset.
func BeginFrame(dst []byte) ([]byte, int) {
	dst = append(dst, make([]byte, MaxServerHeaderSize)...)
	return dst, len(dst)
}

// FinishFrame writes the header of a final, unmasked frame of type op in
// front of the payload that starts at off, and returns the whole frame. The
// returned slice aliases buf.
func FinishFrame(buf []byte, off int, op ws.OpCode) []byte {
	n := len(buf) - off
	b := buf[off-headerSize(n):]
	putHeader(b, op, n)
	return b
}

// AppendFrame appends a whole server frame with the given payload to dst.
func AppendFrame(dst []byte, op ws.OpCode, payload []byte) []byte {
	var hdr [MaxServerHeaderSize]byte
	n := len(payload)
	putHeader(hdr[:], op, n)
	dst = append(dst, hdr[:headerSize(n)]...)
	return append(dst, payload...)
}

// ServerPayload returns the opcode and the payload of a whole frame built by
// this package's encoders (final, unmasked): what another transport sends
// of it. The payload aliases frame. A frame shorter than its header says
// returns a nil payload.
func ServerPayload(frame []byte) (ws.OpCode, []byte) {
	if len(frame) < 2 {
		return 0, nil
	}
	n, hs := int(frame[1]&0x7f), 2
	switch n {
	case 126:
		hs = 4
	case 127:
		hs = 10
	}
	if len(frame) < hs {
		return 0, nil
	}
	return ws.OpCode(frame[0] & 0x0f), frame[hs:]
}

// putHeader writes the header of a final, unmasked frame of type op with an
// n-byte payload at the start of b, which holds at least headerSize(n) bytes.
func putHeader(b []byte, op ws.OpCode, n int) {
	b[0] = 0x80 | byte(op)
	switch {
	case n < 126:
		b[1] = byte(n)
	case n <= 0xffff:
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
	default:
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
	}
}

func headerSize(n int) int {
	switch {
	case n < 126:
		return 2
	case n <= 0xffff:
		return 4
	}
	return 10
}

// AppendClose appends a close frame with code and reason. The reason is cut
// to fit the 125-byte control frame limit.
func AppendClose(dst []byte, code ws.StatusCode, reason string) []byte {
	if n := ws.MaxControlFramePayloadSize - 2; len(reason) > n {
		// Cut on a rune boundary: browsers fail the connection on an invalid
		// UTF-8 reason and report 1006 instead of our code.
		for n > 0 && !utf8.RuneStart(reason[n]) {
			n--
		}
		reason = reason[:n]
	}
	var p [ws.MaxControlFramePayloadSize]byte
	binary.BigEndian.PutUint16(p[:], uint16(code))
	n := 2 + copy(p[2:], reason)
	return AppendFrame(dst, ws.OpClose, p[:n])
}

// ParseClose returns the code and reason of a close frame payload, and an
// error when the payload breaks RFC 6455 §5.5.1 / §7.4.
func ParseClose(payload []byte) (ws.StatusCode, string, error) {
	if len(payload) == 0 {
		return ws.StatusNoStatusRcvd, "", nil
	}
	if len(payload) == 1 {
		return 0, "", fmt.Errorf("%w: close payload of 1 byte", ErrProtocol)
	}
	code, reason := ws.ParseCloseFrameData(payload)
	err := ws.CheckCloseFrameData(code, reason)
	switch {
	case err == ws.ErrProtocolStatusCodeUnknown && code >= 1012 && code <= 1014:
		// Service Restart, Try Again Later and Bad Gateway are registered
		// with IANA after RFC 6455; browsers and proxies send them. The
		// reason must still be UTF-8, which gobwas/ws checks after the code.
		err = ws.CheckCloseFrameData(ws.StatusNormalClosure, reason)
	case err == nil && code > 4999:
		// gobwas/ws lets codes above the private range through; RFC 6455
		// §7.4.2 defines none and browsers fail the connection on them.
		err = ws.ErrProtocolStatusCodeNotInUse
	}
	switch {
	case err == nil:
		return code, reason, nil
	case err == ws.ErrProtocolInvalidUTF8:
		return code, reason, fmt.Errorf("%w: close reason", ErrInvalidUTF8)
	}
	return code, reason, fmt.Errorf("%w: %w", ErrProtocol, err)
}
