package codec

import (
	"strconv"

	"github.com/gobwas/ws"
)

// Encoders of server → client messages. The city frames (data_update,
// alerts, initial_data) are encoded once per message with their WebSocket
// header in front and the producer's raw JSON spliced in, so every
// subscriber is sent the same bytes. City ids are not escaped: ValidCity
// admits no character that needs it.

func beginCity(dst []byte, typ, city string, seq uint64) ([]byte, int) {
	dst, off := BeginFrame(dst)
	dst = append(dst, `{"type":"`...)
	dst = append(dst, typ...)
	dst = append(dst, `","city":"`...)
	dst = append(dst, city...)
	dst = append(dst, `","seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	return dst, off
}

// AppendDataUpdate appends a data_update frame.
func AppendDataUpdate(dst []byte, city string, seq uint64, ts int64, data []byte) []byte {
	dst, off := beginCity(dst, "data_update", city, seq)
	dst = append(dst, `,"timestamp":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	dst = append(dst, `,"data":`...)
	dst = append(dst, data...)
	dst = append(dst, '}')
	return FinishFrame(dst, off, ws.OpText)
}

// AppendAlerts appends an alerts frame.
func AppendAlerts(dst []byte, city string, seq uint64, ts int64, alerts []byte) []byte {
	dst, off := beginCity(dst, "alerts", city, seq)
	dst = append(dst, `,"timestamp":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	dst = append(dst, `,"alerts":`...)
	dst = append(dst, alerts...)
	dst = append(dst, '}')
	return FinishFrame(dst, off, ws.OpText)
}

// RecentAlert is one alerts message kept for late joiners.
type RecentAlert struct {
	Seq    uint64
	TS     int64
	Alerts []byte
}

// InitialData is the content of an initial_data message.
type InitialData struct {
	City    string
	Seq     uint64
	Epoch   uint64
	TS      int64
	Resumed bool
	// Partial: the node let go of the state the city had before it was
	// dropped for idleness, and holds only what came since; a snapshot
	// ends it. Sent only when set.
	Partial bool
	// Data is the city state as a JSON object.
	Data []byte
	// Recent lists recent alerts messages, oldest first, so a client that
	// joins late or was conflated does not lose them.
	Recent []RecentAlert
}

// AppendInitialData appends an initial_data frame.
func AppendInitialData(dst []byte, d *InitialData) []byte {
	dst, off := beginCity(dst, "initial_data", d.City, d.Seq)
	dst = append(dst, `,"epoch":`...)
	dst = strconv.AppendUint(dst, d.Epoch, 10)
	dst = append(dst, `,"resumed":`...)
	dst = strconv.AppendBool(dst, d.Resumed)
	if d.Partial {
		dst = append(dst, `,"partial":true`...)
	}
	if d.TS != 0 {
		dst = append(dst, `,"timestamp":`...)
		dst = strconv.AppendInt(dst, d.TS, 10)
	}
	dst = append(dst, `,"data":`...)
	if len(d.Data) == 0 {
		dst = append(dst, "{}"...)
	} else {
		dst = append(dst, d.Data...)
	}
	if len(d.Recent) > 0 {
		dst = append(dst, `,"recent_alerts":[`...)
		for i, r := range d.Recent {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"seq":`...)
			dst = strconv.AppendUint(dst, r.Seq, 10)
			dst = append(dst, `,"timestamp":`...)
			dst = strconv.AppendInt(dst, r.TS, 10)
			dst = append(dst, `,"alerts":`...)
			dst = append(dst, r.Alerts...)
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	dst = append(dst, '}')
	return FinishFrame(dst, off, ws.OpText)
}

// AppendObject appends a JSON object of the given members, in keys order.
func AppendObject(dst []byte, keys []string, vals map[string][]byte) []byte {
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendString(dst, k)
		dst = append(dst, ':')
		dst = append(dst, vals[k]...)
	}
	return append(dst, '}')
}

// AppendError appends an error frame. city may be empty.
func AppendError(dst []byte, code, city, message string) []byte {
	dst, off := BeginFrame(dst)
	dst = append(dst, `{"type":"error","code":`...)
	dst = AppendString(dst, code)
	if city != "" {
		dst = append(dst, `,"city":`...)
		dst = AppendString(dst, city)
	}
	dst = append(dst, `,"message":`...)
	dst = AppendString(dst, message)
	dst = append(dst, '}')
	return FinishFrame(dst, off, ws.OpText)
}

// AppendAuthError appends an auth_error frame: the token was refused, and
// the connection closes next.
func AppendAuthError(dst []byte, code, message string) []byte {
	dst, off := BeginFrame(dst)
	dst = append(dst, `{"type":"auth_error","code":`...)
	dst = AppendString(dst, code)
	dst = append(dst, `,"message":`...)
	dst = AppendString(dst, message)
	dst = append(dst, '}')
	return FinishFrame(dst, off, ws.OpText)
}

// AppendTokenEvent appends a token_expiring or refreshed frame (by typ) for
// a token that expires at exp (Unix seconds); closeAt (Unix seconds) is when
// the connection closes unless the client refreshes its token.
func AppendTokenEvent(dst []byte, typ string, exp, closeAt int64) []byte {
	dst, off := BeginFrame(dst)
	dst = append(dst, `{"type":"`...)
	dst = append(dst, typ...)
	dst = append(dst, `","exp":`...)
	dst = strconv.AppendInt(dst, exp, 10)
	dst = append(dst, `,"closeAt":`...)
	dst = strconv.AppendInt(dst, closeAt, 10)
	dst = append(dst, '}')
	return FinishFrame(dst, off, ws.OpText)
}

// SubscribedCity is one city in a subscribed message.
type SubscribedCity struct {
	City string
	// Seq is where the stream continues from: the last seq the client
	// has (resumed) or the seq of the initial_data that follows.
	Seq     uint64
	Resumed bool
}

// AppendSubscribed appends a subscribed frame (or unsubscribed, by typ).
func AppendSubscribed(dst []byte, typ string, epoch uint64, cities []SubscribedCity) []byte {
	dst, off := BeginFrame(dst)
	dst = append(dst, `{"type":"`...)
	dst = append(dst, typ...)
	dst = append(dst, `","epoch":`...)
	dst = strconv.AppendUint(dst, epoch, 10)
	dst = append(dst, `,"cities":[`...)
	for i, c := range cities {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"city":"`...)
		dst = append(dst, c.City...)
		dst = append(dst, `","seq":`...)
		dst = strconv.AppendUint(dst, c.Seq, 10)
		dst = append(dst, `,"resumed":`...)
		dst = strconv.AppendBool(dst, c.Resumed)
		dst = append(dst, '}')
	}
	dst = append(dst, "]}"...)
	return FinishFrame(dst, off, ws.OpText)
}

// AppendReconnect appends a reconnect frame, sent before a close 1001 when
// the node drains: connect again (to any node) after afterMs milliseconds.
func AppendReconnect(dst []byte, afterMs int64) []byte {
	dst, off := BeginFrame(dst)
	dst = append(dst, `{"type":"reconnect","after_ms":`...)
	dst = strconv.AppendInt(dst, afterMs, 10)
	dst = append(dst, '}')
	return FinishFrame(dst, off, ws.OpText)
}

// PongFrame is the reply to a client's {"type":"ping"}.
var PongFrame = AppendFrame(nil, ws.OpText, []byte(`{"type":"pong"}`))

// AppendAck appends an ingest acknowledgement line.
func AppendAck(dst []byte, id string, seq uint64) []byte {
	dst = append(dst, `{"ack":`...)
	dst = AppendString(dst, id)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	return append(dst, "}\n"...)
}

// AppendIngestError appends an ingest error line for line number n.
func AppendIngestError(dst []byte, msg string, n int) []byte {
	dst = append(dst, `{"error":`...)
	dst = AppendString(dst, msg)
	dst = append(dst, `,"line":`...)
	dst = strconv.AppendInt(dst, int64(n), 10)
	return append(dst, "}\n"...)
}

// What an ingest error answer with "retry" knows of the line: it was
// fine, the node's cluster bus failed, and the producer should resend it.
const (
	// RetryNotStored: the line is known not to be stored.
	RetryNotStored = "not_stored"
	// RetryMaybeStored: the bus did not confirm the line in time; it may
	// be stored. A resend with the same id is stored once.
	RetryMaybeStored = "maybe_stored"
)

// AppendIngestRetry appends an ingest error line for line number n that the
// producer should resend: the error line with "retry" (RetryNotStored or
// RetryMaybeStored) added, which producers that do not know it ignore.
func AppendIngestRetry(dst []byte, msg string, n int, retry string) []byte {
	dst = AppendIngestError(dst, msg, n)
	dst = append(dst[:len(dst)-2], `,"retry":`...)
	dst = AppendString(dst, retry)
	return append(dst, "}\n"...)
}
