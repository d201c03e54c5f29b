package codec

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Server-Sent Events (the HTML Living Standard's text/event-stream) and the
// NDJSON of history responses. Each city message is the JSON a WebSocket
// client gets, on one data line: JSON allows CR and LF only as white space
// outside strings, and SSE ends a line at either, so both become spaces.
// Control messages keep their WebSocket JSON too; the event name is the
// message's type.

// Heartbeat is an SSE comment: bytes that keep proxies from closing a quiet
// stream and that clients ignore.
var Heartbeat = []byte(":\n\n")

// AppendCityEvent appends msg, a city message (data_update, alerts or
// initial_data, as a WebSocket client gets it), as one event whose id is
// where the stream stands after it:
//
//	id: <epoch>/<city>:<seq>
//	event: <type>
//	data: <msg>
//
// The id comes first so that the stream of several cities can carry the
// others' positions on the same line without copying the event: send the
// bytes before its first '\n', then ",city:seq" (AppendEventIDEntry) for
// each other city, then the rest.
func AppendCityEvent(dst []byte, epoch uint64, city string, seq uint64, msg []byte) []byte {
	dst = append(dst, "id: "...)
	dst = strconv.AppendUint(dst, epoch, 10)
	dst = append(dst, '/')
	dst = AppendEventIDEntry(dst, city, seq)
	dst = append(dst, '\n')
	return AppendEvent(dst, msg)
}

// AppendEventIDEntry appends one city's position, city:seq, as the event id
// lists them.
func AppendEventIDEntry(dst []byte, city string, seq uint64) []byte {
	dst = append(dst, city...)
	dst = append(dst, ':')
	return strconv.AppendUint(dst, seq, 10)
}

// AppendEvent appends msg, a server message as sent over WebSocket, as one
// event named by its type (a message without one is an unnamed event).
func AppendEvent(dst []byte, msg []byte) []byte {
	if typ := messageType(msg); typ != nil {
		dst = append(dst, "event: "...)
		dst = append(dst, typ...)
		dst = append(dst, '\n')
	}
	dst = append(dst, "data: "...)
	dst = appendLine(dst, msg)
	return append(dst, "\n\n"...)
}

// AppendRetry appends the retry field: how long (ms) a browser waits before
// it reconnects a stream that ended. It applies to the event that follows,
// or alone before a blank line.
func AppendRetry(dst []byte, ms int64) []byte {
	dst = append(dst, "retry: "...)
	dst = strconv.AppendInt(dst, ms, 10)
	return append(dst, '\n')
}

// AppendJSONLine appends msg, a server message as sent over WebSocket, as
// one line of NDJSON.
func AppendJSONLine(dst []byte, msg []byte) []byte {
	return append(appendLine(dst, msg), '\n')
}

// appendLine appends msg with every CR and LF (JSON white space) turned
// into a space.
func appendLine(dst []byte, msg []byte) []byte {
	for {
		i := bytes.IndexAny(msg, "\r\n")
		if i < 0 {
			return append(dst, msg...)
		}
		dst = append(append(dst, msg[:i]...), ' ')
		msg = msg[i+1:]
	}
}

// messageType returns the type of a server message: the value that the
// encoders of server.go put first, {"type":"…". Nil when msg has none.
func messageType(msg []byte) []byte {
	const prefix = `{"type":"`
	if !bytes.HasPrefix(msg, []byte(prefix)) {
		return nil
	}
	typ, _, ok := bytes.Cut(msg[len(prefix):], []byte(`"`))
	if !ok || len(typ) == 0 || bytes.ContainsAny(typ, "\r\n\\") {
		return nil
	}
	return typ
}

// MaxEventIDBytes bounds the event id of a stream: its URL may name no
// more cities than fit (see EventIDSize), so that a browser's
// Last-Event-ID always fits in a request head.
const MaxEventIDBytes = 4096

// EventIDSize returns the largest event id a stream of cities can have
// (every seq at its widest).
func EventIDSize(cities []string) int {
	n := len("18446744073709551615/") // the epoch
	for _, c := range cities {
		n += len(c) + len(":18446744073709551615,")
	}
	return n
}

// errEventID explains the id format.
var errEventID = errors.New("want <epoch>/<city>:<seq>[,<city>:<seq>…] as this server's events carry")

// ParseEventID parses an event id of this server's streams:
// <epoch>/<city>:<seq>[,<city>:<seq>…], each the last seq of a city the
// client has.
func ParseEventID(id string) (epoch uint64, since map[string]uint64, err error) {
	if len(id) > MaxEventIDBytes {
		return 0, nil, fmt.Errorf("over %d bytes", MaxEventIDBytes)
	}
	e, list, ok := strings.Cut(id, "/")
	if !ok {
		return 0, nil, fmt.Errorf("cannot parse %q: %w", clip([]byte(id)), errEventID)
	}
	if epoch, err = strconv.ParseUint(e, 10, 64); err != nil {
		return 0, nil, fmt.Errorf("cannot parse %q: %w", clip([]byte(id)), errEventID)
	}
	since = make(map[string]uint64)
	for part := range strings.SplitSeq(list, ",") {
		city, num, ok := strings.Cut(part, ":")
		n, err := strconv.ParseUint(num, 10, 64)
		if !ok || err != nil || !ValidCity(city) {
			return 0, nil, fmt.Errorf("cannot parse %q: %w", clip([]byte(id)), errEventID)
		}
		since[city] = n
	}
	return epoch, since, nil
}

// CORSHeaders returns the response header lines that let a page from
// origin read the response (none for an empty origin: not a browser's
// cross-origin request).
func CORSHeaders(origin string) string {
	if origin == "" {
		return ""
	}
	return "Access-Control-Allow-Origin: " + origin + "\r\nVary: Origin\r\n"
}

// AppendStreamHead appends the response that starts an SSE stream, and its
// retry field. The body ends with the connection (no length, no chunks):
// every HTTP/1.1 client and proxy reads such a body (RFC 9112 §6.3), each
// write goes out as it is, and a stream has no other end. cors is
// CORSHeaders' lines.
func AppendStreamHead(dst []byte, cors string, retryMs int64) []byte {
	dst = append(dst, "HTTP/1.1 200 OK\r\n"+
		"Content-Type: text/event-stream; charset=utf-8\r\n"+
		// no-transform: a compressing proxy would hold events back.
		"Cache-Control: no-cache, no-transform\r\n"+
		// nginx buffers responses unless told otherwise.
		"X-Accel-Buffering: no\r\n"+
		"Connection: close\r\n"...)
	dst = append(dst, cors...)
	dst = append(dst, "\r\n"...)
	return append(AppendRetry(dst, retryMs), '\n')
}

// historyExposed names the headers of a history response that a page may
// read across origins.
const historyExposed = "Access-Control-Expose-Headers: Metrocast-Epoch, Metrocast-Head\r\n"

// AppendHistoryHead appends the head of a history response whose body is
// length bytes of NDJSON: the node's epoch and the seq of the newest
// frame it holds for the city (head) go in Metrocast-Epoch and
// Metrocast-Head. cors is CORSHeaders' lines.
func AppendHistoryHead(dst []byte, cors string, epoch, head uint64, length int) []byte {
	dst = append(dst, "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nCache-Control: no-store\r\nConnection: close\r\n"...)
	dst = appendHistoryFields(dst, cors, epoch, head)
	dst = append(dst, "Content-Length: "...)
	dst = strconv.AppendInt(dst, int64(length), 10)
	return append(dst, "\r\n\r\n"...)
}

// AppendHistoryGone appends the 410 of a history request whose frames the
// node no longer (or never) held: the body, a JSON object, gives the
// oldest and newest seq it holds for the city (0 when it holds none).
func AppendHistoryGone(dst []byte, cors, city string, epoch, oldest, head uint64) []byte {
	var body []byte
	body = append(body, `{"code":"gone","city":"`...)
	body = append(body, city...)
	body = append(body, `","epoch":`...)
	body = strconv.AppendUint(body, epoch, 10)
	body = append(body, `,"oldest":`...)
	body = strconv.AppendUint(body, oldest, 10)
	body = append(body, `,"head":`...)
	body = strconv.AppendUint(body, head, 10)
	body = append(body, `,"message":"the frames after since are not held here: start from the city's state (initial_data over /sse or /ws)"}`+"\n"...)
	dst = append(dst, "HTTP/1.1 410 Gone\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nConnection: close\r\n"...)
	dst = appendHistoryFields(dst, cors, epoch, head)
	dst = append(dst, "Content-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(body)), 10)
	dst = append(dst, "\r\n\r\n"...)
	return append(dst, body...)
}

func appendHistoryFields(dst []byte, cors string, epoch, head uint64) []byte {
	dst = append(dst, "Metrocast-Epoch: "...)
	dst = strconv.AppendUint(dst, epoch, 10)
	dst = append(dst, "\r\nMetrocast-Head: "...)
	dst = strconv.AppendUint(dst, head, 10)
	dst = append(dst, "\r\n"...)
	if cors != "" {
		dst = append(dst, cors...)
		dst = append(dst, historyExposed...)
	}
	return dst
}

// AppendPreflight appends the answer to a CORS preflight (OPTIONS) of a
// stream or history request: a page may GET them with the headers a
// client sends (a token, a resume position). cors is CORSHeaders' lines.
func AppendPreflight(dst []byte, cors string) []byte {
	dst = append(dst, "HTTP/1.1 204 No Content\r\n"...)
	dst = append(dst, cors...)
	return append(dst, "Access-Control-Allow-Methods: GET\r\n"+
		"Access-Control-Allow-Headers: Authorization, Last-Event-ID, Cache-Control\r\n"+
		"Access-Control-Max-Age: 600\r\n"+
		"Content-Length: 0\r\nConnection: close\r\n\r\n"...)
}
