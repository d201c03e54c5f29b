package codec

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseIngest(t *testing.T) {
	f := func(line string, want Ingest) {
		t.Helper()
		in, err := ParseIngest([]byte(line))
		if err != nil {
			t.Fatalf("ParseIngest(%s): %v", line, err)
		}
		if in.City != want.City || in.Kind != want.Kind || in.ID != want.ID || in.Severity != want.Severity ||
			in.Timestamp != want.Timestamp || string(in.Data) != string(want.Data) || string(in.Alerts) != string(want.Alerts) {
			t.Fatalf("ParseIngest(%s) =\n%+v, want\n%+v\n(data %s, alerts %s)", line, in, want, in.Data, in.Alerts)
		}
	}
	f(`{"city":"paris","type":"data_update","data":{"temp":21.5}}`,
		Ingest{City: "paris", Kind: KindDataUpdate, Data: []byte(`{"temp":21.5}`)})
	f(`{"city":"paris","type":"data_update","id":"m-1","timestamp":1700000000123,"data":{"temp":21.5,"aqi":[1,2],"s":"\"}"}}`,
		Ingest{City: "paris", Kind: KindDataUpdate, ID: "m-1", Timestamp: 1700000000123, Data: []byte(`{"temp":21.5,"aqi":[1,2],"s":"\"}"}`)})
	f(` { "data" : { } , "type" : "data_update" , "city" : "a" } `,
		Ingest{City: "a", Kind: KindDataUpdate, Data: []byte(`{ }`)})
	f(`{"city":"a","type":"data_update","timestamp":-1,"data":{}}`,
		Ingest{City: "a", Kind: KindDataUpdate, Timestamp: -1, Data: []byte(`{}`)})
	f(`{"city":"a","type":"data_update","data":{"é":"✓"},"extra":[null,true]}`,
		Ingest{City: "a", Kind: KindDataUpdate, Data: []byte(`{"é":"✓"}`)})
	f(`{"city":"a","type":"snapshot","data":{"x":1}}`,
		Ingest{City: "a", Kind: KindSnapshot, Data: []byte(`{"x":1}`)})
	f(`{"city":"a","type":"snapshot","data":{"x":1},"alerts":[{"severity":"bogus"}]}`, // alerts ignored
		Ingest{City: "a", Kind: KindSnapshot, Data: []byte(`{"x":1}`)})
	f(`{"city":"a","type":"alerts","alerts":[{"severity":"info","message":"fog"}]}`,
		Ingest{City: "a", Kind: KindAlerts, Severity: SeverityInfo, Alerts: []byte(`[{"severity":"info","message":"fog"}]`)})
	f(`{"city":"a","type":"alerts","id":"x","alerts":[{"severity":"info"},{"severity":"critical","message":"flood"},{"severity":"warning","extra":1}]}`,
		Ingest{City: "a", Kind: KindAlerts, ID: "x", Severity: SeverityCritical,
			Alerts: []byte(`[{"severity":"info"},{"severity":"critical","message":"flood"},{"severity":"warning","extra":1}]`)})
	f(`{"city":"a","type":"alerts","alerts":[`+strings.Repeat(`{"severity":"warning"},`, MaxAlertsPerMessage-1)+`{"severity":"info"}]}`,
		Ingest{City: "a", Kind: KindAlerts, Severity: SeverityWarning,
			Alerts: []byte(`[` + strings.Repeat(`{"severity":"warning"},`, MaxAlertsPerMessage-1) + `{"severity":"info"}]`)})
	f(`{"city":"a","type":"data_update","data":{"v":1.7976931348623157e308,"w":-1e-400,"x":0e999,"\ud83d\ude00":"\u00e9\n"}}`,
		Ingest{City: "a", Kind: KindDataUpdate, Data: []byte(`{"v":1.7976931348623157e308,"w":-1e-400,"x":0e999,"\ud83d\ude00":"\u00e9\n"}`)})
	f(`{"city":"a","type":"data_update","data":`+strings.Repeat(`{"a":`, MaxJSONDepth-1)+`1`+strings.Repeat("}", MaxJSONDepth-1)+`}`,
		Ingest{City: "a", Kind: KindDataUpdate, Data: []byte(strings.Repeat(`{"a":`, MaxJSONDepth-1) + `1` + strings.Repeat("}", MaxJSONDepth-1))})
	f(`{"city":"a","type":"data_update","id":"`+strings.Repeat("i", MaxIDLen)+`","data":{}}`,
		Ingest{City: "a", Kind: KindDataUpdate, ID: strings.Repeat("i", MaxIDLen), Data: []byte(`{}`)})

	bad := func(line, wantText string) {
		t.Helper()
		in, err := ParseIngest([]byte(line))
		if !errors.Is(err, ErrIngest) {
			t.Fatalf("ParseIngest(%q) = %+v, %v; want %v", line, in, err, ErrIngest)
		}
		if !strings.Contains(err.Error(), wantText) {
			t.Fatalf("ParseIngest(%q) = %q, want it to mention %q", line, err, wantText)
		}
	}
	// Not a JSON object.
	bad(``, "JSON")
	bad(`{`, "JSON")
	bad(`[]`, "a line is a JSON object")
	bad(`"x"`, "a line is a JSON object")
	bad(`7`, "a line is a JSON object")
	bad(`{"city":"a","type":"data_update","data":{}} {}`, "JSON")
	bad(`{"city":"a","type":"data_update","data":{}},`, "JSON")
	bad(`{"city":"a","type":"data_update","data":{"x":[1,}}`, "JSON")
	bad(`{"city":"a","type":"data_update","data":{"x":01}}`, "JSON")
	bad(`{"city":"a","type":"data_update","data":{"x":"\q"}}`, "JSON")
	bad("{\"city\":\"a\",\"type\":\"data_update\",\"data\":{\"x\":\"\x01\"}}", "JSON")
	bad(`{"city":"a","type":"data_update","data":{"x":NaN}}`, "JSON")
	// What sonic's fast paths let through and the merge or the clients
	// cannot take: the line (a bad escape followed by 32 bytes or
	// more), a bad escape in a long value, numbers past a float64, lone
	// surrogates.
	bad(`{"city":"c","type":"data_update","id":"c","data":{"a\0":1,"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb":2}}`, "invalid escape at byte 52")
	bad(`{"city":"c","type":"data_update","data":{"a":"\x`+strings.Repeat("y", 100)+`"}}`, "invalid escape")
	bad(`{"city":"c","type":"data_update","data":{"v":1e400}}`, "number out of the range of a float64 at byte 45")
	bad(`{"city":"c","type":"data_update","data":{"v":[-1E309]}}`, "float64")
	bad(`{"city":"c","type":"data_update","data":{"v":`+strings.Repeat("9", 309)+`}}`, "float64")
	bad(`{"city":"c","type":"alerts","alerts":[{"severity":"info","v":1e999}]}`, "float64")
	bad(`{"city":"c","type":"data_update","data":{"v":"\ud800"}}`, "unpaired UTF-16 surrogate")
	bad(`{"city":"c","type":"data_update","data":{"\udc00":1}}`, "unpaired UTF-16 surrogate")
	bad(`{"city":"c","type":"data_update","data":{"v":"\ud800\u0041"}}`, "unpaired UTF-16 surrogate")
	bad(`{"city":"c","type":"data_update","data":`+strings.Repeat("[", MaxJSONDepth)+strings.Repeat("]", MaxJSONDepth)+`}`, "nested deeper than 128")
	// A member of the wrong type is named.
	bad(`{"city":"a","type":"data_update","data":{},"timestamp":1.5}`, `"timestamp" must be an integer of Unix milliseconds`)
	bad(`{"city":"a","type":"data_update","data":{},"timestamp":1e30}`, `"timestamp" must be an integer`)
	bad(`{"city":"a","type":"data_update","data":{},"timestamp":"1"}`, `"timestamp" must be an integer`)
	bad(`{"city":1,"type":"data_update","data":{}}`, `"city" must be a string`)
	bad(`{"city":"a","type":["data_update"],"data":{}}`, `"type" must be a string`)
	bad(`{"city":"a","type":"data_update","data":{},"id":7}`, `"id" must be a string`)
	bad(`{"city":"a","type":"data_update","data":{},"ID":{}}`, `"id" must be a string`)
	// Invalid UTF-8, inside or outside a string.
	bad("{\"city\":\"a\",\"type\":\"data_update\",\"data\":{\"x\":\"\xff\"}}", "UTF-8")
	bad("{\"city\":\"a\",\"type\":\"data_update\",\"data\":{\"x\":1}}\xc3", "UTF-8")
	bad("{\"city\":\"a\",\"type\":\"data_update\",\"data\":{\"\xed\xa0\x80\":1}}", "UTF-8")
	// City.
	bad(`{"type":"data_update","data":{}}`, "city")
	bad(`{"city":"","type":"data_update","data":{}}`, "city")
	bad(`{"city":"Paris","type":"data_update","data":{}}`, `"Paris"`)
	bad(`{"city":"a b","type":"data_update","data":{}}`, "city")
	bad(`{"city":"`+strings.Repeat("x", MaxCityLen+1)+`","type":"data_update","data":{}}`, "city")
	// ID.
	bad(`{"city":"a","type":"data_update","id":"`+strings.Repeat("i", MaxIDLen+1)+`","data":{}}`, "id longer")
	// Type.
	bad(`{"city":"a","data":{}}`, `missing "type"`)
	bad(`{"city":"a","type":"","data":{}}`, `missing "type"`)
	bad(`{"city":"a","type":"weather","data":{}}`, `unknown type "weather"`)
	bad(`{"city":"a","type":"initial_data","data":{}}`, "unknown type")
	bad(`{"city":"a","type":"Data_Update","data":{}}`, "unknown type")
	// Data not an object.
	bad(`{"city":"a","type":"data_update"}`, `"data" as a JSON object`)
	bad(`{"city":"a","type":"data_update","data":null}`, `"data" as a JSON object`)
	bad(`{"city":"a","type":"data_update","data":[1]}`, `"data" as a JSON object`)
	bad(`{"city":"a","type":"data_update","data":"{}"}`, `"data" as a JSON object`)
	bad(`{"city":"a","type":"data_update","data":1}`, `"data" as a JSON object`)
	bad(`{"city":"a","type":"snapshot","data":true}`, `snapshot needs "data"`)
	bad(`{"city":"a","type":"data_update","data":{},"data":[]}`, `"data" as a JSON object`) // last wins
	// Alerts.
	bad(`{"city":"a","type":"alerts"}`, `"alerts" as an array`)
	bad(`{"city":"a","type":"alerts","alerts":null}`, `"alerts" as an array`)
	bad(`{"city":"a","type":"alerts","alerts":{}}`, `"alerts" as an array`)
	bad(`{"city":"a","type":"alerts","alerts":[1]}`, `"alerts" as an array`)
	bad(`{"city":"a","type":"alerts","alerts":[{"severity":1}]}`, `"alerts" as an array`)
	bad(`{"city":"a","type":"alerts","alerts":[{"severity":"info","message":{}}]}`, `"alerts" as an array`)
	bad(`{"city":"a","type":"alerts","alerts":[]}`, "1 to 64 alerts")
	bad(`{"city":"a","type":"alerts","alerts":[`+strings.Repeat(`{"severity":"info"},`, MaxAlertsPerMessage)+`{"severity":"info"}]}`, "1 to 64 alerts")
	bad(`{"city":"a","type":"alerts","alerts":[{"severity":"high"}]}`, `severity "high"`)
	bad(`{"city":"a","type":"alerts","alerts":[{"severity":"info"},{}]}`, `severity ""`)
	bad(`{"city":"a","type":"alerts","alerts":[{"severity":"Critical"}]}`, `severity "Critical"`)
}

// TestParseIngestNoAlias checks that City and ID do not alias the line: the
// gateway keeps them (map keys, acks) after the line buffer is reused. Data
// and Alerts may alias it, as documented; today they do not, because
// sonic's Unmarshal copies the whole input first.
func TestParseIngestNoAlias(t *testing.T) {
	line := []byte(`{"city":"paris","type":"data_update","id":"m-1","data":{"x":1}}`)
	in, err := ParseIngest(line)
	if err != nil {
		t.Fatal(err)
	}
	for i := range line {
		line[i] = 'X'
	}
	if in.City != "paris" || in.ID != "m-1" {
		t.Fatalf("City or ID aliases the line: %q %q", in.City, in.ID)
	}
}

func TestParseIngestAuth(t *testing.T) {
	f := func(line, want string) {
		t.Helper()
		got, err := ParseIngestAuth([]byte(line))
		if err != nil || got != want {
			t.Fatalf("ParseIngestAuth(%s) = %q, %v; want %q", line, got, err, want)
		}
	}
	f(`{"auth":"eyJ.x.y"}`, "eyJ.x.y")
	f(` {"auth" : "t", "other": 1} `, "t")
	bad := func(line string) {
		t.Helper()
		if got, err := ParseIngestAuth([]byte(line)); !errors.Is(err, ErrIngestAuth) {
			t.Fatalf("ParseIngestAuth(%s) = %q, %v; want ErrIngestAuth", line, got, err)
		}
	}
	bad(``)
	bad(`{}`)
	bad(`{"auth":""}`)
	bad(`{"auth":1}`)
	bad(`{"auth":"t"`)
	bad(`{"city":"a","type":"data_update","data":{}}`)
	bad("{\"auth\":\"\xff\"}")
}

// FuzzParseIngest parses a line split at a fuzzed offset (the first part
// alone, then the whole). Whatever is accepted must be safe to splice into
// a text frame: the line one CheckJSON accepts and encoding/json decodes,
// Data and Alerts of the right kind, the city valid, and the frame built
// from it valid JSON. (FuzzIngestToClients in gateway follows accepted
// lines on to the merged state.)
func FuzzParseIngest(f *testing.F) {
	for i, s := range []string{
		`{"city":"paris","type":"data_update","id":"m-1","timestamp":1700000000123,"data":{"temp":21.5,"aqi":[1,2]}}`,
		`{"city":"a","type":"snapshot","data":{"x":{"y":[true,null,"s\u00e9"]}}}`,
		`{"city":"a","type":"alerts","alerts":[{"severity":"info","message":"fog"},{"severity":"critical"}]}`,
		`{"city":"a","type":"alerts","alerts":[]}`,
		`{"city":"a","type":"alerts","alerts":[{"severity":"high"}]}`,
		`{"city":"a","type":"alerts","alerts":{}}`,
		`{"city":"a","type":"data_update","data":[1]}`,
		`{"city":"a","type":"data_update","data":null}`,
		`{"city":"A","type":"data_update","data":{}}`,
		`{"city":"a","type":"weather","data":{}}`,
		`{"city":"a","data":{}}`,
		"{\"city\":\"a\",\"type\":\"data_update\",\"data\":{\"x\":\"\xff\"}}",
		`{"city":"a","type":"data_update","data":{"x":"\ud800"}}`,
		`{"city":"a","type":"data_update","data":{"x":[1,}}`,
		`{"city":"c","type":"data_update","id":"c","data":{"a\0":1,"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb":2}}`,
		`{"city":"c","type":"data_update","data":{"v":1e400}}`,
		``,
	} {
		f.Add([]byte(s), uint16(i*11))
	}
	check := func(t *testing.T, line []byte) {
		in, err := ParseIngest(line)
		if err != nil {
			if !errors.Is(err, ErrIngest) {
				t.Fatalf("ParseIngest(%q): unexpected error %v", line, err)
			}
			return
		}
		if err := CheckJSON(line); err != nil || !utf8.Valid(line) {
			t.Fatalf("ParseIngest accepted %q, which CheckJSON refuses: %v", line, err)
		}
		var v any
		if err := json.Unmarshal(line, &v); err != nil {
			t.Fatalf("ParseIngest accepted %q, which encoding/json cannot decode: %v", line, err)
		}
		if !ValidCity(in.City) || len(in.ID) > MaxIDLen {
			t.Fatalf("ParseIngest(%q) accepted city %q, id %q", line, in.City, in.ID)
		}
		var frame []byte
		switch in.Kind {
		case KindDataUpdate, KindSnapshot:
			if len(in.Data) == 0 || in.Data[0] != '{' || !json.Valid(in.Data) || in.Alerts != nil || in.Severity != SeverityNone {
				t.Fatalf("ParseIngest(%q) = %+v, data %q", line, in, in.Data)
			}
			frame = AppendDataUpdate(nil, in.City, 1, in.Timestamp, in.Data)
		case KindAlerts:
			var alerts []any
			if len(in.Alerts) == 0 || in.Alerts[0] != '[' || json.Unmarshal(in.Alerts, &alerts) != nil || in.Data != nil {
				t.Fatalf("ParseIngest(%q) = %+v, alerts %q", line, in, in.Alerts)
			}
			if len(alerts) == 0 || len(alerts) > MaxAlertsPerMessage || in.Severity < SeverityInfo || in.Severity > SeverityCritical {
				t.Fatalf("ParseIngest(%q): %d alerts, severity %d", line, len(alerts), in.Severity)
			}
			frame = AppendAlerts(nil, in.City, 1, in.Timestamp, in.Alerts)
		default:
			t.Fatalf("ParseIngest(%q): kind %d", line, in.Kind)
		}
		_, payload, _ := readFrame(t, frame)
		if !json.Valid(payload) || !utf8.Valid(payload) {
			t.Fatalf("ParseIngest(%q) gives an invalid frame %q", line, payload)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		k := int(split) % (len(data) + 1)
		check(t, append([]byte(nil), data[:k]...))
		check(t, data)
	})
}

// FuzzParseIngestAuth checks that only a JSON object with a non-empty
// "auth" string is taken for a token, whatever the split.
func FuzzParseIngestAuth(f *testing.F) {
	for i, s := range []string{`{"auth":"a.b.c"}`, `{"auth":""}`, `{"auth":null}`, `{"city":"a"}`, `[]`, ``} {
		f.Add([]byte(s), uint16(i*5))
	}
	check := func(t *testing.T, line []byte) {
		tok, err := ParseIngestAuth(line)
		if err != nil {
			if !errors.Is(err, ErrIngestAuth) || tok != "" {
				t.Fatalf("ParseIngestAuth(%q) = %q, %v", line, tok, err)
			}
			return
		}
		if tok == "" || !utf8.Valid(line) || !json.Valid(line) {
			t.Fatalf("ParseIngestAuth accepted %q as %q", line, tok)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		k := int(split) % (len(data) + 1)
		check(t, append([]byte(nil), data[:k]...))
		check(t, data)
	})
}
