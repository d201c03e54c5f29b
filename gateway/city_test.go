package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/metrocast/metrocast/codec"
)

// FuzzIngestToClients follows ingest lines the whole way a client sees
// them, against encoding/json: each line is refused or stored; a stored
// line's envelope must be what encoding/json reads; its frame (data_update, alerts, or a snapshot's initial_data) must
// decode with encoding/json and carry the line's payload; and after every
// line the city's initial_data must decode and hold the state a reference
// merge computes with encoding/json ({...prev, ...update}, a snapshot
// replacing it) and the latest alerts messages.
//
// The input is a script of lines separated by '\n'. A line starting with
// 'D', 'S' or 'A' is the payload of a data_update, snapshot or alerts line
// for city "f" (the rest of the line is spliced in as "data" or "alerts"),
// so that the fuzzer reaches payloads without first finding the envelope;
// any other line is sent as it is.
func FuzzIngestToClients(f *testing.F) {
	long := strings.Repeat("b", 41)
	for _, script := range []string{
		"D{\"a\":1,\"b\":{\"c\":[1,2]}}\nD{\"b\":2,\"é\":\"\\u00e9\"}\nS{\"z\":0}\nD{\"a\":null}",
		"A[{\"severity\":\"info\",\"message\":\"fog\"}]\nD{\"x\":1}\nA[{\"severity\":\"critical\"},{\"severity\":\"warning\",\"v\":[{}]}]",
		// The lines: a bad escape with 32 bytes or more after it,
		// a number past a float64.
		`{"city":"f","type":"data_update","id":"c","data":{"a\0":1,"` + long + `":2}}` + "\nD{\"ok\":1}",
		"D{\"v\":1e400}\nD{\"v\":1.7976931348623157e308,\"w\":-0.0e-999}",
		// A CR is JSON white space, and a line end to an EventSource.
		"D{\"a\":\r1,\r\"b\" :\t{}}\r\nA[\r]",
		"D{\"a\":1,\"a\":2,\"\\u0061\":3}\nD{\"\\ud83d\\ude00\":\"\\ud800\"}\nD{\"\\ud83d\\ude00\":\"\\udbff\\udfff\"}",
		"D{\"s\":\"" + long + "\\x\"}\nD{\"k\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}",
		"D " + strings.Repeat("[", 130) + "\nD{\"d\":" + strings.Repeat("[", 126) + strings.Repeat("]", 126) + "}",
		"S{}\nS[]\nSnull\nA[]\nA{}\nD{\"a\":1}\n{\"city\":\"g\",\"type\":\"snapshot\",\"data\":{\"g\":1}}",
		"{\"city\":\"f\",\"type\":\"data_update\",\"data\":{\"a\":1},\"data\":{\"b\":2}}\nD{\"x\":1} \nD {}",
		// Names matched without case, the last one winning, as
		// encoding/json does.
		`{"city":"f","CITY":"g","type":"data_update","Data":{"a":1},"data":{"b":2},"id":"x","ID":"y"}`,
		`{"City":"f","TYPE":"snapshot","DATA":{"x":1},"timestamp":12,"TimeStamp":13,"timeſtamp":14}`,
	} {
		f.Add([]byte(script))
	}
	f.Fuzz(func(t *testing.T, script []byte) {
		cfg := Config{RingSize: 8, RecentAlerts: 3}.WithDefaults()
		type recent struct {
			seq    uint64
			alerts any
		}
		type reference struct {
			c      *city
			state  map[string]any
			recent []recent
			seq    uint64
		}
		cities := map[string]*reference{}
		lines := bytes.Split(script, []byte("\n"))
		if len(lines) > 32 {
			lines = lines[:32]
		}
		for _, l := range lines {
			line := l
			if len(l) > 0 {
				switch l[0] {
				case 'D', 'S':
					typ := map[byte]string{'D': "data_update", 'S': "snapshot"}[l[0]]
					line = append([]byte(`{"city":"f","type":"`+typ+`","data":`), append(l[1:], '}')...)
				case 'A':
					line = append([]byte(`{"city":"f","type":"alerts","alerts":`), append(l[1:], '}')...)
				}
			}
			in, err := codec.ParseIngest(line)
			if err != nil {
				continue // refused: nothing changes
			}
			// encoding/json reads the envelope as sonic did (the producer
			// package counts on it to find the id). Only ASCII names fold
			// alike: encoding/json also takes ſ and K (U+017F, U+212A) for
			// s and k, sonic does not; "id" has neither.
			var env struct {
				City, Type, ID string
				Timestamp      int64
				Data, Alerts   json.RawMessage
			}
			if err := json.Unmarshal(line, &env); err != nil {
				t.Fatalf("line %q accepted, but encoding/json reads no envelope: %v", line, err)
			}
			if bytes.ContainsRune(line, 'ſ') || bytes.ContainsRune(line, '\u212a') {
				env.Timestamp, env.Alerts = in.Timestamp, in.Alerts // "timestamp", "alerts"
			}
			if env.City != in.City || env.ID != in.ID || env.Timestamp != in.Timestamp ||
				in.Kind == codec.KindAlerts && !reflect.DeepEqual(decodeJSON(t, env.Alerts), decodeJSON(t, in.Alerts)) ||
				in.Kind != codec.KindAlerts && !reflect.DeepEqual(decodeJSON(t, env.Data), decodeJSON(t, in.Data)) {
				t.Fatalf("line %q: ParseIngest reads %+v (data %q, alerts %q), encoding/json %+v", line, in, in.Data, in.Alerts, env)
			}
			ref := cities[in.City]
			if ref == nil {
				ref = &reference{c: newCity(in.City, &cfg, 1, 0, false), state: map[string]any{}}
				cities[in.City] = ref
			}
			fr, err := ref.c.append(&in, time.UnixMilli(1))
			if err != nil {
				t.Fatalf("line %q: publish: %v", line, err)
			}
			ref.seq++
			var got struct {
				Type    string
				City    string
				Seq     uint64
				Resumed bool
				Data    any
				Alerts  any
			}
			decodeFrame(t, fr.b, &got)
			sameEvent(t, fr, 7, in.City)
			wantType := map[codec.Kind]string{codec.KindDataUpdate: "data_update", codec.KindSnapshot: "initial_data", codec.KindAlerts: "alerts"}[in.Kind]
			if got.Type != wantType || got.City != in.City || got.Seq != ref.seq || got.Resumed != (in.Kind == codec.KindSnapshot) {
				t.Fatalf("line %q gives frame %q, want a %s of %s at seq %d", line, fr.b, wantType, in.City, ref.seq)
			}
			switch in.Kind {
			case codec.KindAlerts:
				alerts := decodeJSON(t, in.Alerts)
				if !reflect.DeepEqual(got.Alerts, alerts) {
					t.Fatalf("line %q gives frame %q: alerts %v, encoding/json reads %v", line, fr.b, got.Alerts, alerts)
				}
				ref.recent = append(ref.recent, recent{ref.seq, alerts})
				if len(ref.recent) > cfg.RecentAlerts {
					ref.recent = ref.recent[1:]
				}
			default:
				data := decodeJSON(t, in.Data)
				if !reflect.DeepEqual(got.Data, data) {
					t.Fatalf("line %q gives frame %q: data %v, encoding/json reads %v", line, fr.b, got.Data, data)
				}
				if in.Kind == codec.KindSnapshot {
					clear(ref.state)
				}
				for k, v := range data.(map[string]any) {
					ref.state[k] = v
				}
			}

			var initial struct {
				Type    string
				City    string
				Seq     uint64
				Resumed bool
				Data    map[string]any
				Recent  []struct {
					Seq    uint64
					Alerts any
				} `json:"recent_alerts"`
			}
			inf := ref.c.initialFrame(7)
			ib := inf.b
			decodeFrame(t, ib, &initial)
			sameEvent(t, inf, 7, in.City)
			if initial.Type != "initial_data" || initial.City != in.City || initial.Seq != ref.seq || initial.Resumed {
				t.Fatalf("after %q: initial_data %q, want %s at seq %d", line, ib, in.City, ref.seq)
			}
			if initial.Data == nil {
				initial.Data = map[string]any{}
			}
			if !reflect.DeepEqual(initial.Data, ref.state) {
				t.Fatalf("after %q: initial_data %q holds %v, the reference merge %v", line, ib, initial.Data, ref.state)
			}
			if len(initial.Recent) != len(ref.recent) {
				t.Fatalf("after %q: initial_data %q has %d recent alerts, want %d", line, ib, len(initial.Recent), len(ref.recent))
			}
			for i, r := range ref.recent {
				if initial.Recent[i].Seq != r.seq || !reflect.DeepEqual(initial.Recent[i].Alerts, r.alerts) {
					t.Fatalf("after %q: initial_data %q: recent alert %d is %v, want seq %d %v", line, ib, i, initial.Recent[i], r.seq, r.alerts)
				}
			}
		}
		if n := mergeFailures.Load(); n != 0 {
			t.Fatalf("%d payloads could not be merged", n)
		}
	})
}

// decodeFrame decodes the JSON text message in the server frame b into v
// with encoding/json.
func decodeFrame(t *testing.T, b []byte, v any) {
	t.Helper()
	fr, err := ws.ReadFrame(bytes.NewReader(b))
	if err != nil || fr.Header.OpCode != ws.OpText || !fr.Header.Fin {
		t.Fatalf("frame %q: %v, header %+v", b, err, fr.Header)
	}
	if err := json.Unmarshal(fr.Payload, v); err != nil {
		t.Fatalf("a client cannot decode %q: %v", fr.Payload, err)
	}
}

// decodeJSON decodes b with encoding/json.
func decodeJSON(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("encoding/json cannot decode %q: %v", b, err)
	}
	return v
}

// TestStatePinsNoFrames checks that a city's state does not keep the
// frames its members came in from being freed: each line brings one small
// member of its own and replaces a big one, so the state stays small
// while the lines add up to much more than the ring holds. Not parallel:
// it reads the heap.
func TestStatePinsNoFrames(t *testing.T) {
	const (
		lines = 400
		big   = 100 << 10
	)
	s := startServer(t, Config{RingBytes: 1 << 20})
	p := dialProducer(t, s)
	before := heapInUse()
	filler := strings.Repeat("x", big)
	for i := range lines {
		p.Publish(t, dataLine("pin", "data_update", fmt.Sprintf(`{"k%d":%d,"big":"%s%d"}`, i, i, filler, i)))
	}
	c := dialGorilla(t, wsURL(s, "cities=pin"))
	readType(t, c, "subscribed")
	m := readType(t, c, "initial_data")
	var state map[string]any
	if err := json.Unmarshal(m.Data, &state); err != nil {
		t.Fatal(err)
	}
	if len(state) != lines+1 || state["big"] != filler+strconv.Itoa(lines-1) || state["k0"] != 0.0 {
		t.Fatalf("initial_data holds %d members, want %d and the last big one", len(state), lines+1)
	}
	// The lines came to 40 MB; the ring holds 1 MiB of them, the state
	// 100 KB (twice that at most, until it is compacted), and the
	// initial_data frame the same again.
	if grew := heapInUse() - before; grew > 12<<20 {
		t.Fatalf("the heap grew by %d MB for a state of %d KB", grew>>20, len(m.Data)>>10)
	}
	ct := s.hub.lookup("pin")
	ct.mu.Lock()
	defer ct.mu.Unlock()
	if ct.pinned > 2*ct.size+compactSlack {
		t.Fatalf("the state of %d bytes pins %d", ct.size, ct.pinned)
	}
}
