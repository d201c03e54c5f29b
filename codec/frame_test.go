package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

var testMask = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// clientFrame returns a masked client frame carrying payload.
func clientFrame(fin bool, op ws.OpCode, payload []byte) []byte {
	var b bytes.Buffer
	h := ws.Header{Fin: fin, OpCode: op, Masked: true, Mask: testMask, Length: int64(len(payload))}
	if err := ws.WriteHeader(&b, h); err != nil {
		panic(err)
	}
	p := bytes.Clone(payload)
	ws.Cipher(p, testMask, 0)
	b.Write(p)
	return b.Bytes()
}

// readFrame parses the unmasked server frame at the start of b and returns
// its header, its payload and the bytes after it.
func readFrame(t *testing.T, b []byte) (ws.Header, []byte, []byte) {
	t.Helper()
	var p FrameParser
	h, n, err := p.Header(b)
	if err != nil || n == 0 {
		t.Fatalf("cannot parse frame header of %x: n=%d err=%v", b[:min(len(b), 14)], n, err)
	}
	if h.Masked {
		t.Fatalf("server frame is masked")
	}
	if h.Rsv != 0 {
		t.Fatalf("server frame has rsv bits %b", h.Rsv)
	}
	if int64(len(b)-n) < h.Length {
		t.Fatalf("frame declares %d payload bytes, has %d", h.Length, len(b)-n)
	}
	// A server frame must use the shortest length encoding (RFC 6455 §5.2).
	if want := headerSize(int(h.Length)); n != want {
		t.Fatalf("header of a %d-byte payload is %d bytes, want %d", h.Length, n, want)
	}
	end := n + int(h.Length)
	return h, b[n:end], b[end:]
}

func TestFrameParserHeader(t *testing.T) {
	f := func(in []byte, wantN int, want ws.Header, wantErr error) {
		t.Helper()
		var p FrameParser
		h, n, err := p.Header(in)
		if !errors.Is(err, wantErr) || (err == nil) != (wantErr == nil) {
			t.Fatalf("Header(%x): err = %v, want %v", in, err, wantErr)
		}
		if err != nil {
			if n != 0 {
				t.Fatalf("Header(%x): n = %d with error, want 0", in, n)
			}
			return
		}
		if n != wantN {
			t.Fatalf("Header(%x): n = %d, want %d", in, n, wantN)
		}
		if n > 0 && h != want {
			t.Fatalf("Header(%x) = %+v, want %+v", in, h, want)
		}
		if n == 0 && h != (ws.Header{}) {
			t.Fatalf("Header(%x) = %+v with n == 0, want the zero header", in, h)
		}
	}
	none := ws.Header{}

	// Short buffers: need more bytes.
	f(nil, 0, none, nil)
	f([]byte{0x81}, 0, none, nil)
	f([]byte{0x81, 0x85}, 0, none, nil)                      // mask missing
	f([]byte{0x81, 0x85, 1, 2, 3}, 0, none, nil)             // mask cut
	f([]byte{0x81, 0x7e}, 0, none, nil)                      // 16-bit length missing
	f([]byte{0x81, 0x7e, 0x01}, 0, none, nil)                // 16-bit length cut
	f([]byte{0x81, 0xfe, 0x01, 0x00, 1, 2, 3}, 0, none, nil) // 16-bit length, mask cut
	f([]byte{0x81, 0x7f, 0, 0, 0, 0, 0, 1}, 0, none, nil)    // 64-bit length cut
	f([]byte{0x81, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3}, 0, none, nil)

	// 7-bit lengths.
	f([]byte{0x81, 0x00}, 2, ws.Header{Fin: true, OpCode: ws.OpText}, nil)
	f([]byte{0x01, 0x7d, 'x'}, 2, ws.Header{OpCode: ws.OpText, Length: 125}, nil)
	f([]byte{0x82, 0x85, 1, 2, 3, 4, 'p', 'a', 'y'}, 6,
		ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: [4]byte{1, 2, 3, 4}, Length: 5}, nil)
	f([]byte{0x89, 0x80, 9, 8, 7, 6}, 6,
		ws.Header{Fin: true, OpCode: ws.OpPing, Masked: true, Mask: [4]byte{9, 8, 7, 6}}, nil)
	f([]byte{0xf0, 0x00}, 2, ws.Header{Fin: true, Rsv: 7, OpCode: ws.OpContinuation}, nil)

	// 16-bit lengths, including a non-minimal encoding (the parser decodes;
	// policing is CheckClientHeader's job).
	f([]byte{0x81, 0x7e, 0x00, 0x7e}, 4, ws.Header{Fin: true, OpCode: ws.OpText, Length: 126}, nil)
	f([]byte{0x81, 0x7e, 0xff, 0xff}, 4, ws.Header{Fin: true, OpCode: ws.OpText, Length: 65535}, nil)
	f([]byte{0x81, 0x7e, 0x00, 0x05}, 4, ws.Header{Fin: true, OpCode: ws.OpText, Length: 5}, nil)
	f([]byte{0x81, 0xfe, 0x01, 0x00, 1, 2, 3, 4}, 8,
		ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: [4]byte{1, 2, 3, 4}, Length: 256}, nil)

	// 64-bit lengths.
	f([]byte{0x81, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0}, 10, ws.Header{Fin: true, OpCode: ws.OpText, Length: 65536}, nil)
	f([]byte{0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}, 14,
		ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: [4]byte{1, 2, 3, 4}, Length: math.MaxInt64}, nil)

	// MSB of the 64-bit length set: a protocol error, not "need more".
	f([]byte{0x81, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 1}, 0, none, ErrProtocol)
	f([]byte{0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}, 0, none, ErrProtocol)
	// gobwas/ws reads length and mask in one go, so a masked header with the
	// MSB set asks for more bytes until the mask is there, then fails.
	f([]byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0}, 0, none, nil)
	f([]byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, 0, none, ErrProtocol)

	// Trailing bytes (the payload, the next frame) are not consumed.
	f(append(clientFrame(true, ws.OpText, []byte("hello")), clientFrame(true, ws.OpPing, nil)...), 6,
		ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: testMask, Length: 5}, nil)
}

// TestFrameParserHeaderPrefixes checks that every strict prefix of a header
// asks for more bytes and that a reused parser forgets the previous input.
func TestFrameParserHeaderPrefixes(t *testing.T) {
	var p FrameParser
	for _, length := range []int{0, 1, 125, 126, 127, 65535, 65536, 1 << 40} {
		for _, masked := range []bool{false, true} {
			var b bytes.Buffer
			want := ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: masked, Length: int64(length)}
			if masked {
				want.Mask = testMask
			}
			if err := ws.WriteHeader(&b, want); err != nil {
				t.Fatal(err)
			}
			in := b.Bytes()
			for i := range len(in) {
				if h, n, err := p.Header(in[:i]); n != 0 || err != nil {
					t.Fatalf("Header(%x) of %x: n=%d h=%+v err=%v, want need-more", in[:i], in, n, h, err)
				}
			}
			h, n, err := p.Header(in)
			if err != nil || n != len(in) || h != want {
				t.Fatalf("Header(%x) = %+v, %d, %v; want %+v, %d", in, h, n, err, want, len(in))
			}
		}
	}
}

func TestCheckClientHeader(t *testing.T) {
	const max = 1 << 20
	f := func(h ws.Header, fragmented bool, have int64, wantErr ...error) {
		t.Helper()
		err := CheckClientHeader(h, fragmented, have, max)
		if len(wantErr) == 0 {
			if err != nil {
				t.Fatalf("CheckClientHeader(%+v, %v, %d) = %v, want nil", h, fragmented, have, err)
			}
			return
		}
		for _, w := range wantErr {
			if !errors.Is(err, w) {
				t.Fatalf("CheckClientHeader(%+v, %v, %d) = %v, want %v", h, fragmented, have, err, w)
			}
		}
	}
	m := func(fin bool, op ws.OpCode, n int64) ws.Header {
		return ws.Header{Fin: fin, OpCode: op, Masked: true, Mask: testMask, Length: n}
	}

	// Good frames.
	f(m(true, ws.OpText, 0), false, 0)
	f(m(true, ws.OpText, max), false, 0)
	f(m(true, ws.OpBinary, 10), false, 0) // binary is refused later, by opcode, not here
	f(m(false, ws.OpText, 10), false, 0)
	f(m(false, ws.OpContinuation, 10), true, 10)
	f(m(true, ws.OpContinuation, max-10), true, 10)
	f(m(true, ws.OpPing, 125), false, 0)
	f(m(true, ws.OpPong, 0), true, 10)          // control frames interleave with fragments
	f(m(true, ws.OpClose, 125), true, max)      // and do not count against the limit
	f(m(true, ws.OpClose, 2), false, max+1<<30) // whatever have says

	// Unmasked client frame.
	f(ws.Header{Fin: true, OpCode: ws.OpText, Length: 1}, false, 0, ErrProtocol, ws.ErrProtocolMaskRequired)
	f(ws.Header{Fin: true, OpCode: ws.OpPing}, false, 0, ErrProtocol, ws.ErrProtocolMaskRequired)
	// Reserved opcodes, data and control.
	for _, op := range []ws.OpCode{3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf} {
		f(m(true, op, 0), false, 0, ErrProtocol, ws.ErrProtocolOpCodeReserved)
	}
	// Rsv bits without a negotiated extension (we never negotiate one).
	h := m(true, ws.OpText, 1)
	h.Rsv = 4 // RSV1: a permessage-deflate frame
	f(h, false, 0, ErrProtocol, ws.ErrProtocolNonZeroRsv)
	// Fragmented control frame.
	f(m(false, ws.OpPing, 1), false, 0, ErrProtocol, ws.ErrProtocolControlNotFinal)
	f(m(false, ws.OpClose, 2), true, 5, ErrProtocol, ws.ErrProtocolControlNotFinal)
	// Control payload over 125 bytes.
	f(m(true, ws.OpPing, 126), false, 0, ErrProtocol, ws.ErrProtocolControlPayloadOverflow)
	f(m(true, ws.OpClose, 65536), false, 0, ErrProtocol, ws.ErrProtocolControlPayloadOverflow)
	// Continuation without a start.
	f(m(true, ws.OpContinuation, 1), false, 0, ErrProtocol, ws.ErrProtocolContinuationUnexpected)
	// New data frame while a fragmented message is open.
	f(m(true, ws.OpText, 1), true, 10, ErrProtocol, ws.ErrProtocolContinuationExpected)
	f(m(false, ws.OpBinary, 1), true, 10, ErrProtocol, ws.ErrProtocolContinuationExpected)
	// Over the limit.
	f(m(true, ws.OpText, max+1), false, 0, ErrTooBig)
	f(m(true, ws.OpContinuation, max-9), true, 10, ErrTooBig)
	f(m(true, ws.OpText, math.MaxInt64), false, 0, ErrTooBig)
	// A huge continuation must not overflow have+length into a negative sum
	// that passes the check.
	f(m(true, ws.OpContinuation, math.MaxInt64), true, 1, ErrTooBig)
	f(m(false, ws.OpContinuation, math.MaxInt64-5), true, max, ErrTooBig)
}

func TestUnmask(t *testing.T) {
	payload := []byte("a text payload of some length, longer than eight bytes ✓")
	frame := clientFrame(true, ws.OpText, payload)
	var p FrameParser
	h, n, err := p.Header(frame)
	if err != nil || n == 0 {
		t.Fatalf("Header: n=%d err=%v", n, err)
	}
	got := frame[n:]
	if bytes.Equal(got, payload) {
		t.Fatalf("payload is not masked on the wire")
	}
	Unmask(h, got)
	if !bytes.Equal(got, payload) {
		t.Fatalf("Unmask = %q, want %q", got, payload)
	}

	// An unmasked header leaves the payload alone.
	b := []byte("plain")
	Unmask(ws.Header{Length: 5}, b)
	if string(b) != "plain" {
		t.Fatalf("Unmask of an unmasked frame changed the payload to %q", b)
	}
}

func TestFinishFrame(t *testing.T) {
	f := func(prefix string, n int, op ws.OpCode) {
		t.Helper()
		payload := bytes.Repeat([]byte{'x'}, n)
		buf, off := BeginFrame([]byte(prefix))
		if off != len(prefix)+MaxServerHeaderSize {
			t.Fatalf("BeginFrame offset = %d, want %d", off, len(prefix)+MaxServerHeaderSize)
		}
		buf = append(buf, payload...)
		frame := FinishFrame(buf, off, op)
		if string(buf[:len(prefix)]) != prefix {
			t.Fatalf("FinishFrame overwrote the bytes before the frame: %q", buf[:len(prefix)])
		}
		h, got, rest := readFrame(t, frame)
		if !h.Fin || h.OpCode != op || h.Length != int64(n) {
			t.Fatalf("payload of %d: header %+v", n, h)
		}
		if !bytes.Equal(got, payload) || len(rest) != 0 {
			t.Fatalf("payload of %d: got %d bytes and %d trailing", n, len(got), len(rest))
		}
		// AppendFrame writes the same bytes.
		if a := AppendFrame([]byte(prefix), op, payload); string(a[:len(prefix)]) != prefix || !bytes.Equal(a[len(prefix):], frame) {
			t.Fatalf("payload of %d: AppendFrame differs from BeginFrame+FinishFrame", n)
		}
	}
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 70000} {
		f("", n, ws.OpText)
		f("previous frame", n, ws.OpBinary)
	}
	f("", 0, ws.OpPong)
	f("", 125, ws.OpClose)
}

func TestAppendClose(t *testing.T) {
	f := func(code ws.StatusCode, reason, wantReason string) {
		t.Helper()
		b := AppendClose([]byte("x"), code, reason)
		if b[0] != 'x' {
			t.Fatalf("AppendClose overwrote dst")
		}
		h, payload, rest := readFrame(t, b[1:])
		if h.OpCode != ws.OpClose || !h.Fin || len(rest) != 0 {
			t.Fatalf("AppendClose: header %+v, %d trailing bytes", h, len(rest))
		}
		if len(payload) > ws.MaxControlFramePayloadSize {
			t.Fatalf("close payload of %d bytes", len(payload))
		}
		gotCode, gotReason, err := ParseClose(payload)
		if err != nil {
			t.Fatalf("ParseClose(AppendClose(%d, %q)): %v", code, reason, err)
		}
		if gotCode != code || gotReason != wantReason {
			t.Fatalf("AppendClose(%d, %q) carries %d, %q; want %q", code, reason, gotCode, gotReason, wantReason)
		}
	}
	f(ws.StatusNormalClosure, "", "")
	f(ws.StatusGoingAway, "server shutting down", "server shutting down")
	f(ws.StatusPolicyViolation, strings.Repeat("r", 123), strings.Repeat("r", 123))
	f(ws.StatusPolicyViolation, strings.Repeat("r", 200), strings.Repeat("r", 123))
	f(4000, "slow consumer", "slow consumer")
	// A cut through a multi-byte rune must not leave half of it: browsers
	// fail the connection on an invalid UTF-8 reason and report 1006
	// instead of our code.
	f(ws.StatusGoingAway, strings.Repeat("r", 122)+"é", strings.Repeat("r", 122))
	f(ws.StatusGoingAway, strings.Repeat("r", 121)+"€", strings.Repeat("r", 121))
	f(ws.StatusGoingAway, strings.Repeat("r", 120)+"𝄞", strings.Repeat("r", 120))
	f(ws.StatusGoingAway, strings.Repeat("é", 100), strings.Repeat("é", 61))
	f(ws.StatusGoingAway, strings.Repeat("r", 119)+"𝄞x", strings.Repeat("r", 119)+"𝄞")
}

func TestParseClose(t *testing.T) {
	pl := func(code uint16) []byte {
		return binary.BigEndian.AppendUint16(nil, code)
	}
	f := func(payload []byte, wantCode ws.StatusCode, wantReason string, wantErr error) {
		t.Helper()
		code, reason, err := ParseClose(payload)
		if !errors.Is(err, wantErr) || (err == nil) != (wantErr == nil) {
			t.Fatalf("ParseClose(%x): err = %v, want %v", payload, err, wantErr)
		}
		if err == nil && (code != wantCode || reason != wantReason) {
			t.Fatalf("ParseClose(%x) = %d, %q; want %d, %q", payload, code, reason, wantCode, wantReason)
		}
	}
	with := func(code uint16, reason string) []byte {
		return append(pl(code), reason...)
	}

	// Empty: no status code (1005 is what the application sees).
	f(nil, ws.StatusNoStatusRcvd, "", nil)
	f([]byte{}, ws.StatusNoStatusRcvd, "", nil)
	// One byte cannot hold a code.
	f([]byte{0x03}, 0, "", ErrProtocol)

	// Defined codes.
	for _, c := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011} {
		f(pl(c), ws.StatusCode(c), "", nil)
	}
	// Registered after RFC 6455 and sent in the wild.
	f(pl(1012), 1012, "", nil)
	f(with(1013, "try again later"), 1013, "try again later", nil)
	f(pl(1014), 1014, "", nil)
	// Application and private ranges.
	f(pl(3000), 3000, "", nil)
	f(with(4999, "custom"), 4999, "custom", nil)
	f(with(1000, "bye"), 1000, "bye", nil)
	f(with(1000, "au revoir, à bientôt ✓"), 1000, "au revoir, à bientôt ✓", nil)

	// Codes that must not be sent.
	for _, c := range []uint16{0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999} {
		f(pl(c), 0, "", ErrProtocol)
	}
	// Nothing is defined above the private range (RFC 6455 §7.4.2);
	// browsers fail the connection on such codes.
	f(pl(5000), 0, "", ErrProtocol)
	f(pl(65535), 0, "", ErrProtocol)

	// Invalid UTF-8 in the reason.
	f(with(1000, "\xff"), 0, "", ErrInvalidUTF8)
	f(with(1001, "ok\xc3"), 0, "", ErrInvalidUTF8)       // cut rune
	f(with(1000, "\xed\xa0\x80"), 0, "", ErrInvalidUTF8) // UTF-16 surrogate
	f(with(4000, "\xc0\xaf"), 0, "", ErrInvalidUTF8)     // overlong
	// The 1012-1014 exception must not skip the UTF-8 check.
	f(with(1012, "\xff"), 0, "", ErrInvalidUTF8)
	f(with(1014, "bad \xc3"), 0, "", ErrInvalidUTF8)
}

// FuzzFrameHeader feeds a frame header split at a fuzzed offset: the first
// part must ask for more bytes or give exactly what the whole gives.
func FuzzFrameHeader(f *testing.F) {
	add := func(b []byte, split uint16) { f.Add(b, split) }
	add(clientFrame(true, ws.OpText, []byte(`{"type":"ping"}`)), 3)
	add(clientFrame(false, ws.OpText, bytes.Repeat([]byte("a"), 200)), 4)
	add(clientFrame(true, ws.OpContinuation, bytes.Repeat([]byte("a"), 70000))[:20], 9)
	add(clientFrame(true, ws.OpClose, []byte{3, 232}), 1)
	add(clientFrame(false, ws.OpPing, nil), 2)
	add([]byte{0x81, 0x05, 'h', 'e', 'l', 'l', 'o'}, 2)               // unmasked
	add([]byte{0x83, 0x80, 1, 2, 3, 4}, 0)                            // reserved opcode
	add([]byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, 5) // MSB set
	add([]byte{0x89, 0xfe, 0x00, 0x7e, 1, 2, 3, 4}, 7)                // control too big
	add([]byte{0xc1, 0x80, 1, 2, 3, 4}, 6)                            // rsv1
	add([]byte{0x81}, 0)
	add(nil, 0)
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		var p FrameParser
		whole, wn, werr := p.Header(data)
		if werr != nil {
			if wn != 0 || !errors.Is(werr, ErrProtocol) {
				t.Fatalf("Header(%x) = n %d, err %v", data, wn, werr)
			}
		}
		if wn < 0 || wn > len(data) || (wn != 0 && wn != 2 && wn != 4 && wn != 6 && wn != 8 && wn != 10 && wn != 14) {
			t.Fatalf("Header(%x): n = %d", data, wn)
		}
		k := 0
		if len(data) > 0 {
			k = int(split) % (len(data) + 1)
		}
		part, pn, perr := p.Header(data[:k])
		switch {
		case pn == 0 && perr == nil:
			// Needs more: the header did not fit in the first part.
			if werr == nil && wn != 0 && wn <= k {
				t.Fatalf("Header(%x) needs more, but %x holds a %d-byte header", data[:k], data, wn)
			}
		case perr != nil:
			if werr == nil || werr.Error() != perr.Error() {
				t.Fatalf("Header of part %x: %v; of whole %x: %v", data[:k], perr, data, werr)
			}
		default:
			if pn != wn || part != whole || werr != nil {
				t.Fatalf("Header of part %x = %+v, %d; of whole %x = %+v, %d, %v", data[:k], part, pn, data, whole, wn, werr)
			}
		}
		if wn == 0 {
			return
		}

		// The header round-trips through gobwas/ws's writer.
		var b bytes.Buffer
		if err := ws.WriteHeader(&b, whole); err != nil {
			t.Fatal(err)
		}
		if again, n, err := p.Header(b.Bytes()); err != nil || n != b.Len() || again != whole {
			t.Fatalf("re-encoded header %x parses to %+v, %d, %v; want %+v", b.Bytes(), again, n, err, whole)
		}

		// The checker only ever answers nil, ErrProtocol or ErrTooBig, and
		// what it lets through is sane.
		const max = 1 << 16
		for _, frag := range []bool{false, true} {
			have := int64(0)
			if frag {
				have = int64(split)
			}
			err := CheckClientHeader(whole, frag, have, max)
			switch {
			case err == nil:
				if !whole.Masked || whole.Rsv != 0 || whole.OpCode.IsReserved() {
					t.Fatalf("accepted %+v", whole)
				}
				if whole.OpCode.IsControl() && (!whole.Fin || whole.Length > 125) {
					t.Fatalf("accepted control frame %+v", whole)
				}
				if !whole.OpCode.IsControl() && whole.Length+have > max {
					t.Fatalf("accepted %+v over the limit with %d bytes so far", whole, have)
				}
				if !whole.OpCode.IsControl() && frag != (whole.OpCode == ws.OpContinuation) {
					t.Fatalf("accepted %+v with fragmented=%v", whole, frag)
				}
			case errors.Is(err, ErrProtocol):
				if CloseCode(err) != ws.StatusProtocolError {
					t.Fatalf("CloseCode(%v) = %d", err, CloseCode(err))
				}
			case errors.Is(err, ErrTooBig):
				if CloseCode(err) != ws.StatusMessageTooBig {
					t.Fatalf("CloseCode(%v) = %d", err, CloseCode(err))
				}
			default:
				t.Fatalf("CheckClientHeader(%+v) = %v", whole, err)
			}
		}

		// Unmasking never panics and is its own inverse.
		payload := data[wn:]
		if int64(len(payload)) > whole.Length {
			payload = payload[:whole.Length]
		}
		orig := bytes.Clone(payload)
		Unmask(whole, payload)
		Unmask(whole, payload)
		if !bytes.Equal(orig, payload) {
			t.Fatalf("unmasking twice changed the payload")
		}
	})
}

// FuzzParseClose parses a close payload that arrived in two parts: the
// first part alone and the whole must both obey RFC 6455, and whatever is
// accepted survives AppendClose.
func FuzzParseClose(f *testing.F) {
	for _, s := range []string{"", "\x03", "\x03\xe8", "\x03\xe8bye", "\x03\xe9\xff", "\x03\xe7", "\x03\xed",
		"\x03\xee", "\x03\xf4", "\x03\xf4\xff", "\x03\xf6", "\x0b\xb8", "\x13\x87", "\x13\x88", "\xff\xff",
		"\x03\xe8\xed\xa0\x80", "\x03\xe8au revoir ✓"} {
		f.Add([]byte(s), uint16(len(s)/2))
	}
	check := func(t *testing.T, payload []byte) {
		code, reason, err := ParseClose(payload)
		switch {
		case err == nil:
			if !utf8.ValidString(reason) {
				t.Fatalf("ParseClose(%x) accepted reason %q", payload, reason)
			}
			if len(payload) == 0 {
				if code != ws.StatusNoStatusRcvd {
					t.Fatalf("ParseClose(empty) = %d", code)
				}
				return
			}
			ok := (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999)
			if !ok {
				t.Fatalf("ParseClose(%x) accepted code %d", payload, code)
			}
			if len(reason) <= 123 {
				c2, r2, err := ParseClose(AppendClose(nil, code, reason)[2:])
				if err != nil || c2 != code || r2 != reason {
					t.Fatalf("AppendClose(%d, %q) parses as %d, %q, %v", code, reason, c2, r2, err)
				}
			}
		case errors.Is(err, ErrInvalidUTF8):
			if utf8.ValidString(reason) {
				t.Fatalf("ParseClose(%x): %v for a valid reason", payload, err)
			}
		case errors.Is(err, ErrProtocol):
		default:
			t.Fatalf("ParseClose(%x): unexpected error %v", payload, err)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		k := 0
		if len(data) > 0 {
			k = int(split) % (len(data) + 1)
		}
		check(t, data[:k])
		check(t, data)
		// AppendClose never writes an invalid close frame, whatever the
		// reason (as long as the reason itself is UTF-8).
		if len(data) >= 2 && utf8.Valid(data[2:]) {
			code := ws.StatusCode(binary.BigEndian.Uint16(data))
			if code >= 3000 && code <= 4999 {
				b := AppendClose(nil, code, string(data[2:]))
				h, payload, _ := readFrame(t, b)
				if h.Length > 125 {
					t.Fatalf("close frame of %d bytes", h.Length)
				}
				if _, _, err := ParseClose(payload); err != nil {
					t.Fatalf("AppendClose(%d, %q) wrote an invalid frame: %v", code, data[2:], err)
				}
			}
		}
	})
}
