package codec

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestParseClientMessage(t *testing.T) {
	f := func(in string, want ClientMessage) {
		t.Helper()
		m, err := ParseClientMessage([]byte(in))
		if err != nil {
			t.Fatalf("ParseClientMessage(%s): %v", in, err)
		}
		if m.Type != want.Type || m.Token != want.Token || !slices.Equal(m.Cities, want.Cities) ||
			!maps.Equal(m.Since, want.Since) || m.Epoch != want.Epoch ||
			m.HasFilter != want.HasFilter || m.Filter != want.Filter {
			t.Fatalf("ParseClientMessage(%s) =\n%+v, want\n%+v", in, m, want)
		}
	}
	f(`{"type":"ping"}`, ClientMessage{Type: TypePing})
	f(` {"type" : "ping" , "ignored": [1, {"x": null}]} `, ClientMessage{Type: TypePing})
	f(`{"type":"ping","cities":["NOT A CITY"]}`, ClientMessage{Type: TypePing}) // ping looks at nothing else

	f(`{"type":"auth","token":"t0k","cityId":"paris"}`, ClientMessage{Type: TypeAuth, Token: "t0k", Cities: []string{"paris"}})
	f(`{"type":"auth","token":"t0k"}`, ClientMessage{Type: TypeAuth, Token: "t0k"})
	f(`{"type":"auth","token":"\u00e9\n"}`, ClientMessage{Type: TypeAuth, Token: "é\n"})

	f(`{"type":"subscribe","cities":["paris","new-york"]}`, ClientMessage{Type: TypeSubscribe, Cities: []string{"paris", "new-york"}})
	f(`{"type":"subscribe","cities":[]}`, ClientMessage{Type: TypeSubscribe, Cities: []string{}})
	f(`{"type":"subscribe","cities":null}`, ClientMessage{Type: TypeSubscribe})
	f(`{"type":"subscribe","cities":["paris"],"since":{"paris":41},"epoch":1700000000}`,
		ClientMessage{Type: TypeSubscribe, Cities: []string{"paris"}, Since: map[string]uint64{"paris": 41}, Epoch: 1700000000})
	f(`{"type":"subscribe","cities":["a"],"since":{"a":18446744073709551615}}`,
		ClientMessage{Type: TypeSubscribe, Cities: []string{"a"}, Since: map[string]uint64{"a": 1<<64 - 1}})
	f(`{"type":"subscribe","cities":["a"],"filters":{"types":["alerts"],"minSeverity":"warning"}}`,
		ClientMessage{Type: TypeSubscribe, Cities: []string{"a"}, HasFilter: true, Filter: Filter{Kinds: KindAlerts, MinSeverity: SeverityWarning}})
	f(`{"type":"subscribe","cities":["a"],"filters":{"types":["data_update","snapshot"]}}`,
		ClientMessage{Type: TypeSubscribe, Cities: []string{"a"}, HasFilter: true, Filter: Filter{Kinds: KindDataUpdate | KindSnapshot}})
	f(`{"type":"subscribe","cities":["a"],"filters":{"types":["initial_data","alerts","data_update"],"minSeverity":"critical"}}`,
		ClientMessage{Type: TypeSubscribe, Cities: []string{"a"}, HasFilter: true, Filter: Filter{Kinds: KindAll, MinSeverity: SeverityCritical}})
	f(`{"type":"subscribe","cities":["a"],"filters":{}}`,
		ClientMessage{Type: TypeSubscribe, Cities: []string{"a"}, HasFilter: true})
	f(`{"type":"subscribe","cities":["a"],"filters":{"types":[],"minSeverity":""}}`,
		ClientMessage{Type: TypeSubscribe, Cities: []string{"a"}, HasFilter: true})
	f(`{"type":"subscribe","cities":["a"],"filters":null}`, ClientMessage{Type: TypeSubscribe, Cities: []string{"a"}})
	f(`{"type":"subscribe","cities":[`+strings.Repeat(`"c",`, MaxCitiesPerMessage-1)+`"c"]}`,
		ClientMessage{Type: TypeSubscribe, Cities: slices.Repeat([]string{"c"}, MaxCitiesPerMessage)})

	f(`{"type":"unsubscribe","cities":["paris"]}`, ClientMessage{Type: TypeUnsubscribe, Cities: []string{"paris"}})
	f(`{"type":"refresh","token":"t1"}`, ClientMessage{Type: TypeRefresh, Token: "t1"})
	f(`{"type":"refresh","token":"t1","cities":["ignored"]}`, ClientMessage{Type: TypeRefresh, Token: "t1"})
	// Keys match case-insensitively, as with encoding/json.
	f(`{"Type":"unsubscribe","CITIES":["paris"]}`, ClientMessage{Type: TypeUnsubscribe, Cities: []string{"paris"}})

	bad := func(in string, wantErr error, wantText string) {
		t.Helper()
		_, err := ParseClientMessage([]byte(in))
		if !errors.Is(err, wantErr) {
			t.Fatalf("ParseClientMessage(%q) = %v, want %v", in, err, wantErr)
		}
		if !strings.Contains(err.Error(), wantText) {
			t.Fatalf("ParseClientMessage(%q) = %q, want it to mention %q", in, err, wantText)
		}
		if n := len(err.Error()); n > 200 && wantErr != ErrBadRequest {
			t.Fatalf("error of %d bytes for the client", n)
		}
	}
	// Not JSON, or not this shape.
	bad(``, ErrBadJSON, "JSON")
	bad(` `, ErrBadJSON, "JSON")
	bad(`{`, ErrBadJSON, "JSON")
	bad(`{"type":"ping"`, ErrBadJSON, "JSON")
	bad(`{"type":"ping"} x`, ErrBadJSON, "JSON")
	bad(`{"type":"ping"}{}`, ErrBadJSON, "JSON")
	bad(`{'type':'ping'}`, ErrBadJSON, "JSON")
	bad(`{"type":ping}`, ErrBadJSON, "JSON")
	bad(`{"type":"subscribe","x":"\q"}`, ErrBadJSON, "JSON")
	bad(`{"type":"subscribe","x":[1,]}`, ErrBadJSON, "JSON")
	bad("{\"type\":\"ping\",\"x\":\"\x01\"}", ErrBadJSON, "JSON")
	// JSON, but not a message: bad_request, naming the member.
	bad(`["ping"]`, ErrBadRequest, "a message is a JSON object")
	bad(`"ping"`, ErrBadRequest, "a message is a JSON object")
	bad(`42`, ErrBadRequest, "a message is a JSON object")
	bad(`{"type":1}`, ErrBadRequest, `"type" must be a string`)
	bad(`{"type":["subscribe"]}`, ErrBadRequest, `"type" must be a string`)
	bad(`{"type":"subscribe","cities":"paris"}`, ErrBadRequest, `"cities" must be an array of city names`)
	bad(`{"type":"subscribe","CITIES":"paris"}`, ErrBadRequest, `"cities" must be an array`)
	bad(`{"type":"subscribe","cities":[1]}`, ErrBadRequest, `"cities" must be an array`)
	bad(`{"type":"subscribe","cities":{"paris":true}}`, ErrBadRequest, `"cities" must be an array`)
	bad(`{"type":"subscribe","cities":["a"],"since":"5"}`, ErrBadRequest, `"since" must be an object of city: seq`)
	bad(`{"type":"subscribe","cities":["a"],"since":5}`, ErrBadRequest, `"since" must be an object`)
	bad(`{"type":"subscribe","since":{"a":-1}}`, ErrBadRequest, `"since" must be`)
	bad(`{"type":"subscribe","since":{"a":1.5}}`, ErrBadRequest, `"since" must be`)
	bad(`{"type":"subscribe","since":{"a":"1"}}`, ErrBadRequest, `"since" must be`)
	bad(`{"type":"subscribe","since":{"a":18446744073709551616}}`, ErrBadRequest, `"since" must be`)
	bad(`{"type":"subscribe","since":[1]}`, ErrBadRequest, `"since" must be`)
	bad(`{"type":"subscribe","epoch":"1"}`, ErrBadRequest, `"epoch" must be an integer`)
	bad(`{"type":"subscribe","epoch":-1}`, ErrBadRequest, `"epoch" must be an integer`)
	bad(`{"type":"subscribe","presence":"yes"}`, ErrBadRequest, `"presence" must be true or false`)
	bad(`{"type":"auth","token":"t","cityId":["a"]}`, ErrBadRequest, `"cityId" must be a string`)
	bad(`{"type":"subscribe","filters":{"types":"alerts"}}`, ErrBadRequest, `"filters" must be an object`)
	bad(`{"type":"subscribe","filters":[]}`, ErrBadRequest, `"filters" must be an object`)
	// Type.
	bad(`{}`, ErrBadRequest, `missing "type"`)
	bad(`null`, ErrBadRequest, `missing "type"`)
	bad(`{"type":""}`, ErrBadRequest, `missing "type"`)
	bad(`{"cities":["paris"]}`, ErrBadRequest, `missing "type"`)
	bad(`{"type":"publish"}`, ErrUnknownType, `"publish"`)
	bad(`{"type":"PING"}`, ErrUnknownType, `"PING"`)
	bad(`{"type":"subscribe "}`, ErrUnknownType, `"subscribe "`)
	bad(`{"type":"\u0000"}`, ErrUnknownType, `"\x00"`)
	bad(`{"type":"refresh"}`, ErrBadRequest, "refresh needs a token")
	bad(`{"type":"refresh","token":""}`, ErrBadRequest, "refresh needs a token")
	bad(`{"type":"refresh","token":1}`, ErrBadRequest, `"token" must be a string`)
	// Cities.
	bad(`{"type":"subscribe","cities":["Paris"]}`, ErrBadRequest, `"Paris"`)
	bad(`{"type":"subscribe","cities":["paris",""]}`, ErrBadRequest, `invalid city ""`)
	bad(`{"type":"subscribe","cities":["a b"]}`, ErrBadRequest, "invalid city")
	bad(`{"type":"unsubscribe","cities":["`+strings.Repeat("x", MaxCityLen+1)+`"]}`, ErrBadRequest, "invalid city")
	bad(`{"type":"auth","cityId":"a\"b"}`, ErrBadRequest, "invalid city")
	bad(`{"type":"subscribe","cities":[`+strings.Repeat(`"c",`, MaxCitiesPerMessage)+`"c"]}`, ErrBadRequest, "more than 256 cities")
	bad(`{"type":"subscribe","cities":["a"],"since":{"B":1}}`, ErrBadRequest, `invalid city "B" in since`)
	bad(`{"type":"subscribe","cities":["a"],"since":{"":1}}`, ErrBadRequest, `in since`)
	// Filters.
	bad(`{"type":"subscribe","cities":["a"],"filters":{"types":["weather"]}}`, ErrBadRequest, `"weather"`)
	bad(`{"type":"subscribe","cities":["a"],"filters":{"types":["alerts",""]}}`, ErrBadRequest, "filter type")
	bad(`{"type":"subscribe","cities":["a"],"filters":{"minSeverity":"high"}}`, ErrBadRequest, `"high"`)
	bad(`{"type":"subscribe","cities":["a"],"filters":{"minSeverity":"Info"}}`, ErrBadRequest, "minSeverity")
	bad(`{"type":"subscribe","cities":["a"],"filters":{"minSeverity":1}}`, ErrBadRequest, `"filters" must be`)
}

// TestParseClientMessageNoAlias checks that nothing in a parsed message
// points into the frame buffer, which the gateway reuses for the next read.
func TestParseClientMessageNoAlias(t *testing.T) {
	in := []byte(`{"type":"subscribe","token":"tok","cities":["paris","lyon"],"since":{"paris":3}}`)
	m, err := ParseClientMessage(in)
	if err != nil {
		t.Fatal(err)
	}
	for i := range in {
		in[i] = 'X'
	}
	if m.Token != "tok" || !slices.Equal(m.Cities, []string{"paris", "lyon"}) || m.Since["paris"] != 3 {
		t.Fatalf("message aliases its input: %+v", m)
	}
}

func TestFilterPass(t *testing.T) {
	f := func(flt Filter, k Kind, sev Severity, want bool) {
		t.Helper()
		if got := flt.Pass(k, sev); got != want {
			t.Fatalf("%+v.Pass(%d, %d) = %v, want %v", flt, k, sev, got, want)
		}
	}
	all := Filter{}
	f(all, KindDataUpdate, SeverityNone, true)
	f(all, KindAlerts, SeverityInfo, true)
	f(all, KindAlerts, SeverityNone, true)
	f(all, KindSnapshot, SeverityNone, true)

	alerts := Filter{Kinds: KindAlerts}
	f(alerts, KindDataUpdate, SeverityNone, false)
	f(alerts, KindAlerts, SeverityInfo, true)
	f(alerts, KindSnapshot, SeverityNone, true) // snapshots always pass

	warn := Filter{Kinds: KindAlerts | KindDataUpdate, MinSeverity: SeverityWarning}
	f(warn, KindAlerts, SeverityInfo, false)
	f(warn, KindAlerts, SeverityWarning, true)
	f(warn, KindAlerts, SeverityCritical, true)
	f(warn, KindDataUpdate, SeverityNone, true) // severity is about alerts only

	crit := Filter{MinSeverity: SeverityCritical}
	f(crit, KindAlerts, SeverityWarning, false)
	f(crit, KindAlerts, SeverityCritical, true)
	f(crit, KindDataUpdate, SeverityNone, true)
	f(crit, KindSnapshot, SeverityNone, true)

	snap := Filter{Kinds: KindSnapshot}
	f(snap, KindDataUpdate, SeverityNone, false)
	f(snap, KindAlerts, SeverityCritical, false)
	f(snap, KindSnapshot, SeverityNone, true)
}

func TestParseSeverity(t *testing.T) {
	f := func(s string, want Severity, wantOK bool) {
		t.Helper()
		if got, ok := ParseSeverity(s); got != want || ok != wantOK {
			t.Fatalf("ParseSeverity(%q) = %d, %v; want %d, %v", s, got, ok, want, wantOK)
		}
	}
	f("info", SeverityInfo, true)
	f("warning", SeverityWarning, true)
	f("critical", SeverityCritical, true)
	f("", SeverityNone, false)
	f("none", SeverityNone, false)
	f("Critical", SeverityNone, false)
	f("warn", SeverityNone, false)
}

// FuzzParseClientMessage parses a message that arrived split at a fuzzed
// offset (the first part alone, then the whole), checks the invariants of
// what is accepted and that every error is one of the three client errors.
func FuzzParseClientMessage(f *testing.F) {
	for i, s := range []string{
		`{"type":"ping"}`,
		`{"type":"auth","token":"t","cityId":"paris"}`,
		`{"type":"subscribe","cities":["paris","lyon"],"since":{"paris":4},"epoch":9}`,
		`{"type":"subscribe","cities":["a"],"filters":{"types":["alerts","snapshot"],"minSeverity":"warning"}}`,
		`{"type":"unsubscribe","cities":["a"]}`,
		`{"type":"subscribe","cities":["A"]}`,
		`{"type":"subscribe","filters":{"types":["x"]}}`,
		`{"type":"subscribe","filters":{"minSeverity":"x"}}`,
		`{"type":"nope"}`,
		`{"cities":[]}`,
		`{"type":"subscribe","since":{"a":-1}}`,
		`{"type":"subscribe","cities":"nairobi"}`,
		`{"type":"subscribe","cities":["a"],"since":"5"}`,
		`{"Type":"subscribe","EPOCH":{}}`,
		"{\"type\":\"ping\",\"x\":\"\xff\"}",
		`{"type":"ping"`,
		`[]`,
		`null`,
		``,
	} {
		f.Add([]byte(s), uint16(i*3))
	}
	check := func(t *testing.T, in []byte) {
		saved := string(in)
		m, err := ParseClientMessage(in)
		if string(in) != saved {
			t.Fatalf("ParseClientMessage modified its input")
		}
		if err != nil {
			if !errors.Is(err, ErrBadJSON) && !errors.Is(err, ErrUnknownType) && !errors.Is(err, ErrBadRequest) {
				t.Fatalf("ParseClientMessage(%q): unexpected error %v", in, err)
			}
			// bad_json only for what is not JSON: valid JSON of the
			// wrong shape is a bad_request that says why.
			if errors.Is(err, ErrBadJSON) && CheckJSON(in) == nil {
				t.Fatalf("ParseClientMessage(%q) = %v, yet it is JSON", in, err)
			}
			return
		}
		if !json.Valid(in) {
			t.Fatalf("ParseClientMessage accepted %q, which encoding/json rejects", in)
		}
		switch m.Type {
		case TypePing:
			return
		case TypeAuth, TypeSubscribe, TypeUnsubscribe:
		default:
			t.Fatalf("ParseClientMessage(%q) accepted type %q", in, m.Type)
		}
		if len(m.Cities) > MaxCitiesPerMessage {
			t.Fatalf("ParseClientMessage(%q): %d cities", in, len(m.Cities))
		}
		for _, c := range m.Cities {
			if !ValidCity(c) {
				t.Fatalf("ParseClientMessage(%q) accepted city %q", in, c)
			}
		}
		for c := range m.Since {
			if !ValidCity(c) {
				t.Fatalf("ParseClientMessage(%q) accepted since city %q", in, c)
			}
		}
		if m.Filter.Kinds&^KindAll != 0 || m.Filter.MinSeverity > SeverityCritical {
			t.Fatalf("ParseClientMessage(%q) accepted filter %+v", in, m.Filter)
		}
		if !m.HasFilter && m.Filter != (Filter{}) {
			t.Fatalf("ParseClientMessage(%q): filter %+v without HasFilter", in, m.Filter)
		}
		// Nothing aliases the input.
		want := fmt.Sprintf("%+v", m)
		for i := range in {
			in[i] = 0
		}
		if got := fmt.Sprintf("%+v", m); got != want {
			t.Fatalf("message aliases its input: %s, was %s", got, want)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		k := int(split) % (len(data) + 1)
		check(t, append([]byte(nil), data[:k]...))
		check(t, data)
	})
}

// TestClientFieldsCoverMessage keeps explain's table in step with
// clientJSON: every member the decoder reads is there, with the same Go
// type's check.
func TestClientFieldsCoverMessage(t *testing.T) {
	rt := reflect.TypeFor[clientJSON]()
	if rt.NumField() != len(clientFields) {
		t.Fatalf("clientJSON has %d members, clientFields %d", rt.NumField(), len(clientFields))
	}
	for i := range rt.NumField() {
		sf := rt.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if clientFields[i].name != name {
			t.Fatalf("clientFields[%d] is %q, clientJSON's member %q", i, clientFields[i].name, name)
		}
		// A value of the member's own type passes its check.
		b, err := json.Marshal(reflect.New(sf.Type).Elem().Interface())
		if err != nil {
			t.Fatal(err)
		}
		if err := clientFields[i].check(b); err != nil {
			t.Errorf("%s: the check refuses %s: %v", name, b, err)
		}
	}
}
