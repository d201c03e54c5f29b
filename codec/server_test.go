package codec

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

// decodeTextFrame checks that frame is exactly one final, unmasked text
// frame holding a JSON object and returns the object.
func decodeTextFrame(t *testing.T, frame []byte) map[string]any {
	t.Helper()
	h, payload, rest := readFrame(t, frame)
	if !h.Fin || h.OpCode != ws.OpText || len(rest) != 0 {
		t.Fatalf("frame header %+v with %d trailing bytes", h, len(rest))
	}
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(payload))
	d.UseNumber()
	if err := d.Decode(&m); err != nil || d.More() {
		t.Fatalf("payload %q is not one JSON object: %v", payload, err)
	}
	return m
}

// wantJSON compares a decoded object with the JSON text want.
func wantJSON(t *testing.T, got map[string]any, want string) {
	t.Helper()
	var w map[string]any
	d := json.NewDecoder(strings.NewReader(want))
	d.UseNumber()
	if err := d.Decode(&w); err != nil {
		t.Fatalf("bad want %s: %v", want, err)
	}
	if !reflect.DeepEqual(got, w) {
		g, _ := json.Marshal(got)
		t.Fatalf("got  %s\nwant %s", g, want)
	}
}

func TestAppendDataUpdate(t *testing.T) {
	f := func(city string, seq uint64, ts int64, data, want string) {
		t.Helper()
		frame := AppendDataUpdate(nil, city, seq, ts, []byte(data))
		wantJSON(t, decodeTextFrame(t, frame), want)
	}
	f("paris", 1, 1700000000123, `{"temp":21.5}`,
		`{"type":"data_update","city":"paris","seq":1,"timestamp":1700000000123,"data":{"temp":21.5}}`)
	f("a", 0, 0, `{}`, `{"type":"data_update","city":"a","seq":0,"timestamp":0,"data":{}}`)
	f("a", 1<<64-1, -1, `{"s":"\"}\u00e9"}`,
		`{"type":"data_update","city":"a","seq":18446744073709551615,"timestamp":-1,"data":{"s":"\"}é"}}`)

	// Every header size.
	for _, n := range []int{0, 125 - 80, 126 - 80, 65535 - 80, 65536 - 80, 100000} {
		data := `{"pad":"` + strings.Repeat("p", n) + `"}`
		frame := AppendDataUpdate(nil, "paris", 7, 1, []byte(data))
		m := decodeTextFrame(t, frame)
		if m["data"].(map[string]any)["pad"] != strings.Repeat("p", n) {
			t.Fatalf("pad of %d lost", n)
		}
	}
}

// TestAppendDstKept checks that the encoders leave the bytes already in dst
// alone and that a reused buffer gives the same frame. Note that they return
// the frame alone, not dst with the frame appended.
func TestAppendDstKept(t *testing.T) {
	data := []byte(`{"temp":21.5}`)
	want := AppendDataUpdate(nil, "paris", 3, 4, data)
	// Room to spare, so the frame lands in the same array as dst.
	buf := append(make([]byte, 0, 4096), "earlier bytes"...)
	got := AppendDataUpdate(buf, "paris", 3, 4, data)
	if &got[0] != &buf[:cap(buf)][len(buf)+MaxServerHeaderSize-2] {
		t.Fatalf("frame not written behind dst in its array")
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("with a non-empty dst: %q, want %q", got, want)
	}
	if string(buf) != "earlier bytes" {
		t.Fatalf("dst overwritten: %q", buf)
	}
	reused := make([]byte, 0, 4096)
	for range 3 {
		reused = AppendDataUpdate(reused[:0], "paris", 3, 4, data)
		if !bytes.Equal(reused, want) {
			t.Fatalf("reused buffer: %q, want %q", reused, want)
		}
	}
}

func TestAppendAlerts(t *testing.T) {
	alerts := `[{"severity":"critical","message":"flood"},{"severity":"info","message":"fog"}]`
	frame := AppendAlerts(nil, "new-york", 12, 1700000000000, []byte(alerts))
	wantJSON(t, decodeTextFrame(t, frame),
		`{"type":"alerts","city":"new-york","seq":12,"timestamp":1700000000000,"alerts":`+alerts+`}`)
}

func TestAppendInitialData(t *testing.T) {
	f := func(d InitialData, want string) {
		t.Helper()
		wantJSON(t, decodeTextFrame(t, AppendInitialData(nil, &d)), want)
	}
	f(InitialData{City: "paris", Seq: 5, Epoch: 9},
		`{"type":"initial_data","city":"paris","seq":5,"epoch":9,"resumed":false,"data":{}}`)
	f(InitialData{City: "paris", Seq: 5, Epoch: 9, TS: 77, Resumed: true, Data: []byte(`{"temp":1}`)},
		`{"type":"initial_data","city":"paris","seq":5,"epoch":9,"resumed":true,"timestamp":77,"data":{"temp":1}}`)
	f(InitialData{City: "a", Seq: 3, Epoch: 1, Data: []byte(`{}`), Recent: []RecentAlert{
		{Seq: 1, TS: 10, Alerts: []byte(`[{"severity":"info"}]`)},
		{Seq: 2, TS: 20, Alerts: []byte(`[{"severity":"critical","message":"x"}]`)},
	}}, `{"type":"initial_data","city":"a","seq":3,"epoch":1,"resumed":false,"data":{},"recent_alerts":[`+
		`{"seq":1,"timestamp":10,"alerts":[{"severity":"info"}]},`+
		`{"seq":2,"timestamp":20,"alerts":[{"severity":"critical","message":"x"}]}]}`)
	f(InitialData{City: "a", Seq: 7, Epoch: 1, Partial: true, TS: 5, Data: []byte(`{"v":2}`)},
		`{"type":"initial_data","city":"a","seq":7,"epoch":1,"resumed":false,"partial":true,"timestamp":5,"data":{"v":2}}`)
	f(InitialData{City: "a", Recent: []RecentAlert{{Seq: 1, TS: 10, Alerts: []byte(`[]`)}}},
		`{"type":"initial_data","city":"a","seq":0,"epoch":0,"resumed":false,"data":{},"recent_alerts":[{"seq":1,"timestamp":10,"alerts":[]}]}`)
}

func TestAppendObject(t *testing.T) {
	f := func(keys []string, vals map[string][]byte, want string) {
		t.Helper()
		got := AppendObject([]byte("x"), keys, vals)
		if got[0] != 'x' {
			t.Fatalf("dst overwritten")
		}
		if string(got[1:]) != want {
			t.Fatalf("AppendObject = %s, want %s", got[1:], want)
		}
		if !json.Valid(got[1:]) {
			t.Fatalf("AppendObject = %s: not JSON", got[1:])
		}
	}
	f(nil, nil, `{}`)
	f([]string{"b", "a"}, map[string][]byte{"a": []byte(`1`), "b": []byte(`[2]`)}, `{"b":[2],"a":1}`)
	f([]string{`k"\`, "\x01"}, map[string][]byte{`k"\`: []byte(`null`), "\x01": []byte(`"v"`)}, `{"k\"\\":null,"\u0001":"v"}`)
	// Round trip with EachMember.
	obj := []byte(`{"temp":21.5,"aqi":[1,2],"name":"x\"y"}`)
	var keys []string
	vals := map[string][]byte{}
	if err := EachMember(obj, func(k string, v []byte) { keys = append(keys, k); vals[k] = v }); err != nil {
		t.Fatal(err)
	}
	f(keys, vals, string(obj))
}

func TestAppendError(t *testing.T) {
	f := func(code, city, msg, want string) {
		t.Helper()
		wantJSON(t, decodeTextFrame(t, AppendError(nil, code, city, msg)), want)
	}
	f("bad_json", "", "cannot parse message as JSON object",
		`{"type":"error","code":"bad_json","message":"cannot parse message as JSON object"}`)
	f("unknown_city", "paris", "no such city", `{"type":"error","code":"unknown_city","city":"paris","message":"no such city"}`)
	// Messages echo client input: anything must come out as valid JSON.
	f("bad_request", "", "invalid city \"a\\\"b\x01\"", `{"type":"error","code":"bad_request","message":"invalid city \"a\\\"b\u0001\""}`)
	f("bad_request", "", "bad \xff byte", `{"type":"error","code":"bad_request","message":"bad \ufffd byte"}`)
	_, err := ParseClientMessage([]byte(`{"type":"subscribe","cities":["` + strings.Repeat(`\"`, 200) + `"]}`))
	decodeTextFrame(t, AppendError(nil, "bad_request", "", err.Error()))
}

func TestAppendAuthError(t *testing.T) {
	f := func(code, msg, want string) {
		t.Helper()
		wantJSON(t, decodeTextFrame(t, AppendAuthError(nil, code, msg)), want)
	}
	f("token_expired", "token has invalid claims: token is expired",
		`{"type":"auth_error","code":"token_expired","message":"token has invalid claims: token is expired"}`)
	f("invalid_token", "bad \"kid\" \xff", `{"type":"auth_error","code":"invalid_token","message":"bad \"kid\" \ufffd"}`)
}

func TestAppendTokenEvent(t *testing.T) {
	f := func(typ string, exp, closeAt int64, want string) {
		t.Helper()
		wantJSON(t, decodeTextFrame(t, AppendTokenEvent(nil, typ, exp, closeAt)), want)
	}
	f("token_expiring", 1700000060, 1700000090, `{"type":"token_expiring","exp":1700000060,"closeAt":1700000090}`)
	f("refreshed", 1700003600, 1700003630, `{"type":"refreshed","exp":1700003600,"closeAt":1700003630}`)
}

func TestAppendSubscribed(t *testing.T) {
	f := func(typ string, epoch uint64, cities []SubscribedCity, want string) {
		t.Helper()
		wantJSON(t, decodeTextFrame(t, AppendSubscribed(nil, typ, epoch, cities)), want)
	}
	f("subscribed", 4, nil, `{"type":"subscribed","epoch":4,"cities":[]}`)
	f("subscribed", 4, []SubscribedCity{{City: "paris", Seq: 10, Resumed: true}, {City: "lyon", Seq: 0}},
		`{"type":"subscribed","epoch":4,"cities":[{"city":"paris","seq":10,"resumed":true},{"city":"lyon","seq":0,"resumed":false}]}`)
	f("unsubscribed", 0, []SubscribedCity{{City: "paris"}},
		`{"type":"unsubscribed","epoch":0,"cities":[{"city":"paris","seq":0,"resumed":false}]}`)
}

func TestAppendReconnect(t *testing.T) {
	f := func(ms int64, want string) {
		t.Helper()
		wantJSON(t, decodeTextFrame(t, AppendReconnect(nil, ms)), want)
	}
	f(0, `{"type":"reconnect","after_ms":0}`)
	f(1234, `{"type":"reconnect","after_ms":1234}`)
}

func TestPongFrame(t *testing.T) {
	wantJSON(t, decodeTextFrame(t, PongFrame), `{"type":"pong"}`)
}

func TestAppendAck(t *testing.T) {
	f := func(id string, seq uint64, want string) {
		t.Helper()
		got := AppendAck([]byte("prev\n"), id, seq)
		if string(got) != "prev\n"+want {
			t.Fatalf("AppendAck(%q, %d) = %q, want %q", id, seq, got, "prev\n"+want)
		}
		var m map[string]any
		if err := json.Unmarshal(got[5:len(got)-1], &m); err != nil {
			t.Fatalf("ack %q is not JSON: %v", got[5:], err)
		}
	}
	f("m-1", 42, "{\"ack\":\"m-1\",\"seq\":42}\n")
	f("", 0, "{\"ack\":\"\",\"seq\":0}\n")
	f("a\"\n", 1, "{\"ack\":\"a\\\"\\n\",\"seq\":1}\n")
}

func TestAppendIngestError(t *testing.T) {
	f := func(msg string, n int, want string) {
		t.Helper()
		got := AppendIngestError(nil, msg, n)
		if string(got) != want {
			t.Fatalf("AppendIngestError(%q, %d) = %q, want %q", msg, n, got, want)
		}
		if !json.Valid(got[:len(got)-1]) {
			t.Fatalf("ingest error %q is not JSON", got)
		}
	}
	f("bad", 3, "{\"error\":\"bad\",\"line\":3}\n")
	got := AppendIngestRetry([]byte("prev\n"), "bus down", 2, RetryNotStored)
	if want := "prev\n{\"error\":\"bus down\",\"line\":2,\"retry\":\"not_stored\"}\n"; string(got) != want {
		t.Fatalf("AppendIngestRetry = %q, want %q", got, want)
	}
	_, err := ParseIngest([]byte(`{"city":"` + "\\u0000" + `","type":"x"}`))
	f(err.Error(), 1, `{"error":"invalid ingest line: city \"\\x00\" must be 1-64 of a-z 0-9 - _","line":1}`+"\n")
}
