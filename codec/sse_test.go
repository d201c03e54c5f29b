package codec

import (
	"bytes"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

func TestAppendCityEvent(t *testing.T) {
	f := func(epoch uint64, city string, seq uint64, msg, want string) {
		t.Helper()
		for _, dst := range [][]byte{nil, []byte("before|")} {
			got := AppendCityEvent(dst, epoch, city, seq, []byte(msg))
			if string(got) != string(dst)+want {
				t.Fatalf("AppendCityEvent(%d, %q, %d, %q)\n = %q\nwant %q", epoch, city, seq, msg, got[len(dst):], want)
			}
		}
	}
	f(1795780000000, "nairobi", 12, `{"type":"data_update","city":"nairobi","seq":12,"data":{"a":1}}`,
		"id: 1795780000000/nairobi:12\nevent: data_update\ndata: {\"type\":\"data_update\",\"city\":\"nairobi\",\"seq\":12,\"data\":{\"a\":1}}\n\n")
	// CR and LF are JSON white space: they become spaces, on one line.
	f(7, "a", 0, "{\"type\":\"alerts\",\r\n\"alerts\":\r[]}\n",
		"id: 7/a:0\nevent: alerts\ndata: {\"type\":\"alerts\",  \"alerts\": []} \n\n")
}

func TestAppendEvent(t *testing.T) {
	f := func(msg, want string) {
		t.Helper()
		if got := AppendEvent(nil, []byte(msg)); string(got) != want {
			t.Fatalf("AppendEvent(%q) = %q, want %q", msg, got, want)
		}
	}
	f(`{"type":"subscribed","epoch":1}`, "event: subscribed\ndata: {\"type\":\"subscribed\",\"epoch\":1}\n\n")
	f(`{"type":"auth_error","code":"token_expired"}`, "event: auth_error\ndata: {\"type\":\"auth_error\",\"code\":\"token_expired\"}\n\n")
	// Without a type first, an unnamed event.
	f(`{"a":"b","type":"x"}`, "data: {\"a\":\"b\",\"type\":\"x\"}\n\n")
	f(`{"type":"","a":1}`, "data: {\"type\":\"\",\"a\":1}\n\n")
	f(`{"type":"x\ny"}`, "data: {\"type\":\"x\\ny\"}\n\n")
	f(``, "data: \n\n")
	if got := AppendRetry(nil, 1500); string(got) != "retry: 1500\n" {
		t.Fatalf("AppendRetry = %q", got)
	}
	if got := AppendJSONLine([]byte("x"), []byte("{\"a\":\r\n1}")); string(got) != "x{\"a\":  1}\n" {
		t.Fatalf("AppendJSONLine = %q", got)
	}
}

// FuzzAppendEvent checks that any message becomes exactly one event: the
// fields an EventSource reads give back the message (with CR and LF as
// spaces) and the type it starts with.
func FuzzAppendEvent(f *testing.F) {
	for _, s := range []string{`{"type":"data_update","a":1}`, "{\"type\":\"a\r\nb\"}", "\r\r\n\n", `{"type":"x"`, ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		ev := AppendCityEvent(nil, 1, "c", 2, msg)
		if !bytes.HasSuffix(ev, []byte("\n\n")) || bytes.IndexByte(ev, '\r') >= 0 {
			t.Fatalf("event %q: not one event", ev)
		}
		lines := strings.Split(string(ev[:len(ev)-2]), "\n")
		if lines[0] != "id: 1/c:2" {
			t.Fatalf("event %q: id line %q", ev, lines[0])
		}
		var typ, data string
		for _, l := range lines[1:] {
			k, v, _ := strings.Cut(l, ": ")
			switch k {
			case "event":
				typ = v
			case "data":
				data = v
			default:
				t.Fatalf("event %q: line %q", ev, l)
			}
		}
		if want := strings.NewReplacer("\r", " ", "\n", " ").Replace(string(msg)); data != want {
			t.Fatalf("event %q: data %q, want %q", ev, data, want)
		}
		if typ != "" && !bytes.HasPrefix(msg, []byte(`{"type":"`+typ+`"`)) {
			t.Fatalf("event %q: type %q is not the message's", ev, typ)
		}
	})
}

func TestParseEventID(t *testing.T) {
	f := func(id string, epoch uint64, since map[string]uint64) {
		t.Helper()
		e, s, err := ParseEventID(id)
		if err != nil || e != epoch || !maps.Equal(s, since) {
			t.Fatalf("ParseEventID(%q) = %d, %v, %v; want %d, %v", id, e, s, err, epoch, since)
		}
	}
	f("1795780000000/nairobi:12", 1795780000000, map[string]uint64{"nairobi": 12})
	f("0/a:0,b:18446744073709551615,c-d_1:3", 0, map[string]uint64{"a": 0, "b": 18446744073709551615, "c-d_1": 3})
	f("5/a:1,a:2", 5, map[string]uint64{"a": 2})
	bad := func(id string) {
		t.Helper()
		if _, _, err := ParseEventID(id); err == nil {
			t.Fatalf("ParseEventID(%q) accepted", id)
		}
	}
	bad("")
	bad("12")
	bad("/a:1")
	bad("x/a:1")
	bad("1/")
	bad("1/a")
	bad("1/a:")
	bad("1/a:1,")
	bad("1/A:1")
	bad("1/a:-1")
	bad("1/a:1:2")
	bad("18446744073709551616/a:1")
	bad("1/a:1" + strings.Repeat(",a:1", MaxEventIDBytes/4))
}

// FuzzParseEventID checks that what parses names valid cities, and that an
// id written by the encoder parses back to its positions.
func FuzzParseEventID(f *testing.F) {
	f.Add("1795780000000/nairobi:12,lagos:3", uint64(4), "a", uint64(9))
	f.Add("1/a:1,", uint64(0), "b-c", uint64(0))
	f.Fuzz(func(t *testing.T, id string, epoch uint64, city string, seq uint64) {
		if _, since, err := ParseEventID(id); err == nil {
			for c := range since {
				if !ValidCity(c) {
					t.Fatalf("ParseEventID(%q) accepted city %q", id, c)
				}
			}
		}
		if !ValidCity(city) {
			return
		}
		ev := AppendCityEvent(nil, epoch, city, seq, []byte(`{}`))
		line, _, _ := bytes.Cut(ev, []byte("\n"))
		full := string(line[len("id: "):]) + ",z:" + strconv.FormatUint(seq/2, 10)
		e, since, err := ParseEventID(full)
		want := map[string]uint64{city: seq, "z": seq / 2}
		if city == "z" {
			want["z"] = seq / 2
		}
		if err != nil || e != epoch || !maps.Equal(since, want) {
			t.Fatalf("ParseEventID(%q) = %d, %v, %v; want %d, %v", full, e, since, err, epoch, want)
		}
	})
}

func TestEventIDSize(t *testing.T) {
	cities := []string{"nairobi", strings.Repeat("x", MaxCityLen)}
	b := []byte("18446744073709551615/")
	for i, c := range cities {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendEventIDEntry(b, c, 18446744073709551615)
	}
	if n := EventIDSize(cities); n < len(b) || n > len(b)+1 {
		t.Fatalf("EventIDSize = %d for an id of at most %d bytes", n, len(b))
	}
}

func TestServerPayload(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 65535, 65536, 70000} {
		p := bytes.Repeat([]byte("p"), n)
		op, got := ServerPayload(AppendFrame(nil, ws.OpText, p))
		if op != ws.OpText || !bytes.Equal(got, p) {
			t.Fatalf("%d bytes: opcode %v, payload of %d", n, op, len(got))
		}
	}
	if op, got := ServerPayload(AppendClose(nil, ws.StatusGoingAway, "bye")); op != ws.OpClose || len(got) != 5 {
		t.Fatalf("close: %v %q", op, got)
	}
	for _, b := range [][]byte{nil, {0x81}, {0x81, 126, 0}, {0x81, 127, 0, 0}} {
		if _, got := ServerPayload(b); got != nil {
			t.Fatalf("ServerPayload(%q) = %q, want nil", b, got)
		}
	}
}

// TestResponses parses every response head with net/http's reader.
func TestResponses(t *testing.T) {
	cors := CORSHeaders("https://a.example")
	if CORSHeaders("") != "" {
		t.Fatal("CORS headers without an origin")
	}
	f := func(name string, resp []byte, status int, header map[string]string, body string) {
		t.Helper()
		r := readResponse(t, resp)
		if r.StatusCode != status || !r.Close {
			t.Fatalf("%s: status %d (close %v), want %d and Connection: close", name, r.StatusCode, r.Close, status)
		}
		for k, v := range header {
			if got := r.Header.Get(k); got != v {
				t.Fatalf("%s: %s %q, want %q", name, k, got, v)
			}
		}
		var b bytes.Buffer
		_, _ = b.ReadFrom(r.Body)
		if !strings.HasPrefix(b.String(), body) {
			t.Fatalf("%s: body %q, want %q…", name, b.String(), body)
		}
	}
	f("stream", AppendStreamHead(nil, cors, 1500), http.StatusOK, map[string]string{
		"Content-Type": "text/event-stream; charset=utf-8", "Access-Control-Allow-Origin": "https://a.example",
		"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}, "retry: 1500\n\n")
	f("history", append(AppendHistoryHead(nil, cors, 9, 40, 3), "{}\n"...), http.StatusOK, map[string]string{
		"Content-Type": "application/x-ndjson", "Content-Length": "3", "Metrocast-Epoch": "9", "Metrocast-Head": "40",
		"Access-Control-Expose-Headers": "Metrocast-Epoch, Metrocast-Head"}, "{}\n")
	f("gone", AppendHistoryGone(nil, "", "a", 9, 12, 40), http.StatusGone, map[string]string{
		"Content-Type": "application/json", "Metrocast-Head": "40", "Access-Control-Allow-Origin": ""},
		`{"code":"gone","city":"a","epoch":9,"oldest":12,"head":40,`)
	f("preflight", AppendPreflight(nil, cors), http.StatusNoContent, map[string]string{
		"Access-Control-Allow-Origin": "https://a.example", "Access-Control-Allow-Methods": "GET"}, "")
	he := &HTTPError{Status: http.StatusMethodNotAllowed, Header: "Allow: GET\r\n", Message: "no"}
	f("error", he.AppendResponse(nil, cors), http.StatusMethodNotAllowed, map[string]string{
		"Allow": "GET", "Access-Control-Allow-Origin": "https://a.example"}, "no\n")
}
