package gateway

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

const framesMaxMessage = 1024

// TestFramesSplit sends frames cut at every offset, one byte per write, and
// several in one write: each is read whole, once.
func TestFramesSplit(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{MaxMessageBytes: framesMaxMessage})
	r := dialUpgraded(t, s)

	ping := text(`{"type":"ping"}`)
	// 7-bit length; and 16-bit length (a 300-byte message).
	long := text(`{"type":"ping","pad":"` + strings.Repeat("p", 270) + `"}`)
	for _, f := range [][]byte{ping, long} {
		for i := 1; i < len(f); i++ {
			r.write(t, f[:i])
			r.write(t, f[i:])
			r.msgType(t, "pong")
		}
		for i := range f {
			r.write(t, f[i:i+1])
		}
		r.msgType(t, "pong")
	}
	// Three in one write, then two and a half, then the rest.
	three := bytes.Repeat(ping, 3)
	r.write(t, three)
	for range 3 {
		r.msgType(t, "pong")
	}
	r.write(t, append(append(bytes.Clone(long), ping...), long[:5]...))
	r.msgType(t, "pong")
	r.msgType(t, "pong")
	r.write(t, long[5:])
	r.msgType(t, "pong")
	// An auth split in two reaches the subscription.
	auth := text(`{"type":"auth","token":"t","cityId":"split"}`)
	r.write(t, auth[:4])
	r.write(t, auth[4:])
	r.msgType(t, "subscribed")
	r.msgType(t, "initial_data")
}

// TestFramesFragmented checks reassembly of fragmented text messages, with
// control frames between the fragments.
func TestFramesFragmented(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{MaxMessageBytes: framesMaxMessage})
	r := dialUpgraded(t, s)
	frag := func(parts ...string) []byte {
		var b []byte
		for i, p := range parts {
			op := ws.OpContinuation
			if i == 0 {
				op = ws.OpText
			}
			b = append(b, clientFrame(i == len(parts)-1, op, []byte(p))...)
		}
		return b
	}

	r.write(t, frag(`{"type"`, `:"pi`, `ng"}`))
	r.msgType(t, "pong")

	// A ping between the fragments is answered at once, the message after.
	b := clientFrame(false, ws.OpText, []byte(`{"type":`))
	b = append(b, clientFrame(true, ws.OpPing, []byte("hb"))...)
	b = append(b, clientFrame(false, ws.OpContinuation, []byte(`"pi`))...)
	b = append(b, clientFrame(true, ws.OpPong, []byte("unsolicited"))...)
	b = append(b, clientFrame(true, ws.OpContinuation, []byte(`ng"}`))...)
	r.write(t, b)
	if f := r.frame(t); f.Header.OpCode != ws.OpPong || string(f.Payload) != "hb" {
		t.Fatalf("got opcode %d %q, want a pong \"hb\"", f.Header.OpCode, f.Payload)
	}
	r.msgType(t, "pong")

	// Fragments, each in its own write.
	for _, p := range [][]byte{
		clientFrame(false, ws.OpText, []byte(`{"type":"auth",`)),
		clientFrame(false, ws.OpContinuation, []byte(`"cityId":`)),
		clientFrame(true, ws.OpContinuation, []byte(`"frag"}`)),
	} {
		r.write(t, p)
	}
	r.msgType(t, "subscribed")
	r.msgType(t, "initial_data")

	// A rune cut between fragments is valid UTF-8 once reassembled; empty
	// fragments are fine.
	msg := []byte(`{"type":"ping","x":"é"}`)
	cut := bytes.IndexByte(msg, 0xc3) + 1
	r.write(t, frag("", string(msg[:cut]), "", string(msg[cut:])))
	r.msgType(t, "pong")

	// Right at MaxMessageBytes, over several fragments.
	pad := `{"type":"ping","pad":"` + strings.Repeat("x", framesMaxMessage-len(`{"type":"ping","pad":""}`)) + `"}`
	r.write(t, frag(pad[:400], pad[400:800], pad[800:]))
	r.msgType(t, "pong")
	r.write(t, text(pad))
	r.msgType(t, "pong")
}

// TestFramesControl checks ping frames (the pong echoes the payload) and the
// close handshake started by the client.
func TestFramesControl(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	r := dialUpgraded(t, s)
	for _, p := range []string{"", "hello", strings.Repeat("z", 125)} {
		r.write(t, clientFrame(true, ws.OpPing, []byte(p)))
		f := r.frame(t)
		if f.Header.OpCode != ws.OpPong || string(f.Payload) != p {
			t.Fatalf("ping %q: got opcode %d %q, want a pong with the same payload", p, f.Header.OpCode, f.Payload)
		}
	}

	var peer uint64
	f := func(payload []byte, want []byte) {
		t.Helper()
		r := dialUpgraded(t, s)
		r.write(t, clientFrame(true, ws.OpClose, payload))
		got := r.frame(t)
		if got.Header.OpCode != ws.OpClose || !bytes.Equal(got.Payload, want) {
			t.Fatalf("close %q: got opcode %d %q, want a close %q", payload, got.Header.OpCode, got.Payload, want)
		}
		r.expectEOF(t)
		peer++
		waitCloses(t, s, ClosePeer, peer)
	}
	code := func(c ws.StatusCode) []byte { return binary.BigEndian.AppendUint16(nil, uint16(c)) }
	f(closePayload(ws.StatusNormalClosure, "bye"), code(ws.StatusNormalClosure))
	f(closePayload(ws.StatusGoingAway, ""), code(ws.StatusGoingAway))
	f(closePayload(3000, "app"), code(3000))
	f(closePayload(4999, "private"), code(4999))
	f(closePayload(1012, "service restart"), code(1012))
	f(nil, nil) // no status: echoed empty
}

// TestFramesViolations checks that every framing violation is answered with
// the right close code and counted under the right reason.
func TestFramesViolations(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{MaxMessageBytes: framesMaxMessage})
	counts := map[CloseReason]uint64{}
	f := func(name string, b []byte, code ws.StatusCode, reason CloseReason) {
		t.Helper()
		r := dialUpgraded(t, s)
		r.write(t, b)
		r.expectClose(t, code)
		counts[reason]++
		waitCloses(t, s, reason, counts[reason])
	}
	long := func(n int) []byte { return bytes.Repeat([]byte("a"), n) }
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	// hdr is a masked header with a declared length and no payload.
	hdr := func(op ws.OpCode, length int64) []byte {
		var b bytes.Buffer
		_ = ws.WriteHeader(&b, ws.Header{Fin: true, OpCode: op, Masked: true, Length: length})
		return b.Bytes()
	}

	f("unmasked text", unmaskedText(`{"type":"ping"}`), ws.StatusProtocolError, CloseProtocol)
	f("reserved data opcode", clientFrame(true, 0x3, []byte("x")), ws.StatusProtocolError, CloseProtocol)
	f("reserved control opcode", clientFrame(true, 0xb, nil), ws.StatusProtocolError, CloseProtocol)
	f("rsv1 without extension", clientFrameRsv(true, 4, ws.OpText, []byte(`{"type":"ping"}`)), ws.StatusProtocolError, CloseProtocol)
	f("fragmented ping", clientFrame(false, ws.OpPing, []byte("x")), ws.StatusProtocolError, CloseProtocol)
	f("ping over 125", clientFrame(true, ws.OpPing, long(126)), ws.StatusProtocolError, CloseProtocol)
	f("close over 125", clientFrame(true, ws.OpClose, cat(closePayload(1000, ""), long(124))), ws.StatusProtocolError, CloseProtocol)
	f("continuation first", clientFrame(true, ws.OpContinuation, []byte(`{}`)), ws.StatusProtocolError, CloseProtocol)
	f("text inside a fragmented message", cat(clientFrame(false, ws.OpText, []byte(`{"type"`)), text(`{"type":"ping"}`)), ws.StatusProtocolError, CloseProtocol)
	f("close of one byte", clientFrame(true, ws.OpClose, []byte{3}), ws.StatusProtocolError, CloseProtocol)
	f("close 1005 on the wire", clientFrame(true, ws.OpClose, closePayload(1005, "")), ws.StatusProtocolError, CloseProtocol)
	f("close 999", clientFrame(true, ws.OpClose, closePayload(999, "")), ws.StatusProtocolError, CloseProtocol)
	f("64-bit length with MSB", []byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, ws.StatusProtocolError, CloseProtocol)

	f("invalid UTF-8 text", text("{\"type\":\"ping\",\"x\":\"\xff\"}"), ws.StatusInvalidFramePayloadData, CloseInvalidUTF8)
	f("invalid UTF-8 over fragments", cat(clientFrame(false, ws.OpText, []byte("{\"x\":\"\xc3")), clientFrame(true, ws.OpContinuation, []byte("(\"}"))), ws.StatusInvalidFramePayloadData, CloseInvalidUTF8)
	f("invalid UTF-8 close reason", clientFrame(true, ws.OpClose, cat(closePayload(1000, ""), []byte{0xff})), ws.StatusInvalidFramePayloadData, CloseInvalidUTF8)

	f("one frame over the limit", text(`{"type":"ping","pad":"`+string(long(framesMaxMessage))+`"}`), ws.StatusMessageTooBig, CloseTooBig)
	f("fragments over the limit", cat(
		clientFrame(false, ws.OpText, long(400)),
		clientFrame(false, ws.OpContinuation, long(400)),
		clientFrame(true, ws.OpContinuation, long(400))), ws.StatusMessageTooBig, CloseTooBig)
	f("declared 1 TiB, no payload", hdr(ws.OpText, 1<<40), ws.StatusMessageTooBig, CloseTooBig)
	f("continuation declaring 2^63-1", cat(clientFrame(false, ws.OpText, long(10)), hdr(ws.OpContinuation, 1<<63-1)), ws.StatusMessageTooBig, CloseTooBig)

	f("binary", clientFrame(true, ws.OpBinary, []byte{1, 2, 3}), ws.StatusUnsupportedData, CloseUnsupportedData)
	f("fragmented binary", clientFrame(false, ws.OpBinary, []byte{1}), ws.StatusUnsupportedData, CloseUnsupportedData)

	// Messages before the violation were answered.
	r := dialUpgraded(t, s)
	r.write(t, cat(text(`{"type":"ping"}`), clientFrame(true, ws.OpBinary, nil)))
	r.msgType(t, "pong")
	r.expectClose(t, ws.StatusUnsupportedData)
	counts[CloseUnsupportedData]++
	waitCloses(t, s, CloseUnsupportedData, counts[CloseUnsupportedData])
	if n := closes(s, ClosePeer); n != 0 {
		t.Fatalf("Closes[peer] = %d, want 0: each close had a reason", n)
	}
}
