package gateway

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// TestInitialDataMergedState checks that a client joining with auth gets
// subscribed and an initial_data with the current merged state: data_update
// merges its top-level keys ({...prev, ...update}), snapshot replaces.
func TestInitialDataMergedState(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	p := dialProducer(t, s)
	f := func(typ, data, wantState string) {
		t.Helper()
		seq := p.Publish(t, dataLine("merge", typ, data))
		for _, d := range dialers {
			c := d.dial(t, wsURL(s, ""))
			sub, m := subscribeAuth(t, c, "merge")
			if sub.Epoch != s.Epoch() || sub.Cities[0].Seq != seq || sub.Cities[0].Resumed {
				t.Fatalf("%s: %s, want merge at seq %d, epoch %d, not resumed", d.name, sub.Raw, seq, s.Epoch())
			}
			if m.Seq != seq || m.Epoch != s.Epoch() || !jsonEqual(t, m.Data, []byte(wantState)) {
				t.Fatalf("%s: after %s %s: %s, want seq %d and data %s", d.name, typ, data, m.Raw, seq, wantState)
			}
			c.Close()
		}
	}
	f("data_update", `{"a":1,"b":1}`, `{"a":1,"b":1}`)
	f("data_update", `{"b":2,"c":{"x":1}}`, `{"a":1,"b":2,"c":{"x":1}}`)
	f("data_update", `{"c":{"y":2}}`, `{"a":1,"b":2,"c":{"y":2}}`) // shallow: c is replaced
	f("snapshot", `{"z":9}`, `{"z":9}`)
	f("data_update", `{"a":"five"}`, `{"a":"five","z":9}`)
	f("data_update", `{"z":null,"é":"ü"}`, `{"a":"five","z":null,"é":"ü"}`)
	f("snapshot", `{}`, `{}`)
}

// TestSubscribeUnsubscribe walks a connection through subscribing to
// several cities, re-subscribing, and unsubscribing.
func TestSubscribeUnsubscribe(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	p := dialProducer(t, s)
	for _, d := range dialers {
		t.Run(d.name, func(t *testing.T) {
			a, b := "sa-"+d.name, "sb-"+d.name
			c := d.dial(t, wsURL(s, ""))
			send(t, c, fmt.Sprintf(`{"type":"subscribe","cities":[%q,%q]}`, a, b))
			sub := readType(t, c, "subscribed")
			if len(sub.Cities) != 2 || sub.Cities[0].City != a || sub.Cities[1].City != b {
				t.Fatalf("got %s, want %s and %s", sub.Raw, a, b)
			}
			for _, city := range []string{a, b} {
				if m := readType(t, c, "initial_data"); m.City != city {
					t.Fatalf("got %s, want the initial_data of %s", m.Raw, city)
				}
			}
			p.Publish(t, dataLine(a, "data_update", `{"v":"a1"}`))
			p.Publish(t, dataLine(b, "data_update", `{"v":"b1"}`))
			// Order holds per city, not across cities: the catch-up at the
			// end of subscribe may send b's frame before the fanout of a's.
			if _, err := collect(c, map[string]uint64{a: 0, b: 0}, map[string]uint64{a: 1, b: 1}); err != nil {
				t.Fatal(err)
			}

			// Subscribing again keeps the position and sends no initial_data.
			send(t, c, fmt.Sprintf(`{"type":"subscribe","cities":[%q]}`, a))
			sub = readType(t, c, "subscribed")
			if len(sub.Cities) != 1 || sub.Cities[0].City != a || sub.Cities[0].Seq != 1 || !sub.Cities[0].Resumed {
				t.Fatalf("got %s, want %s at seq 1, resumed", sub.Raw, a)
			}

			send(t, c, fmt.Sprintf(`{"type":"unsubscribe","cities":[%q,"never-subscribed"]}`, a))
			un := readType(t, c, "unsubscribed")
			if len(un.Cities) != 1 || un.Cities[0].City != a || un.Cities[0].Seq != 1 {
				t.Fatalf("got %s, want %s at seq 1", un.Raw, a)
			}
			// a's frame, published first, would arrive before b's: the
			// loop fans out woken cities in order.
			p.Publish(t, dataLine(a, "data_update", `{"v":"a2"}`))
			p.Publish(t, dataLine(b, "data_update", `{"v":"b2"}`))
			if m := readType(t, c, "data_update"); m.City != b || m.Seq != 2 {
				t.Fatalf("got %s, want %s seq 2 only", m.Raw, b)
			}

			// Back again: a fresh start with the merged state.
			send(t, c, fmt.Sprintf(`{"type":"subscribe","cities":[%q]}`, a))
			sub = readType(t, c, "subscribed")
			if sub.Cities[0].Seq != 2 || sub.Cities[0].Resumed {
				t.Fatalf("got %s, want %s at seq 2, not resumed", sub.Raw, a)
			}
			if m := readType(t, c, "initial_data"); m.City != a || m.Seq != 2 || string(m.Data) != `{"v":"a2"}` {
				t.Fatalf("got %s, want the initial_data of %s at seq 2", m.Raw, a)
			}
			expectPong(t, c)
		})
	}
}

// TestPingPong checks the application-level ping.
func TestPingPong(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	for _, d := range dialers {
		c := d.dial(t, wsURL(s, ""))
		for range 3 {
			send(t, c, `{"type":"ping"}`)
			if m := read(t, c); string(m.Raw) != `{"type":"pong"}` {
				t.Fatalf("%s: got %s, want {\"type\":\"pong\"}", d.name, m.Raw)
			}
		}
	}
}

// TestFilters checks subscription filters on replay and live, including the
// original dashboard's subscribe with filters and no cities, which applies
// to the city given in auth.
func TestFilters(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	p := dialProducer(t, s)
	publishAll := func(city string) {
		t.Helper()
		p.Publish(t, dataLine(city, "data_update", `{"n":1}`)) // 1
		p.Publish(t, alertLine(city, "info"))                  // 2
		p.Publish(t, alertLine(city, "warning"))               // 3
		p.Publish(t, alertLine(city, "info", "critical"))      // 4
		p.Publish(t, dataLine(city, "data_update", `{"n":5}`)) // 5
		p.Publish(t, alertLine(city, "critical"))              // 6
		p.Publish(t, alertLine(city, "info"))                  // 7
	}
	expectSeqs := func(c client, want []uint64) {
		t.Helper()
		for _, seq := range want {
			m := read(t, c)
			if (m.Type != "alerts" && m.Type != "data_update") || m.Seq != seq {
				t.Fatalf("got %s, want seq %d (all: %v)", m.Raw, seq, want)
			}
		}
		expectPong(t, c)
	}

	// Replay through the filter: since 0 replays the whole ring.
	publishAll("flt")
	f := func(filter string, want ...uint64) {
		t.Helper()
		for _, d := range dialers {
			c := d.dial(t, wsURL(s, ""))
			send(t, c, `{"type":"subscribe","cities":["flt"],"since":{"flt":0},"filters":`+filter+`}`)
			if sub := readType(t, c, "subscribed"); !sub.Cities[0].Resumed {
				t.Fatalf("got %s, want a resumed subscription", sub.Raw)
			}
			expectSeqs(c, want)
			c.Close()
		}
	}
	f(`{"types":["alerts"],"minSeverity":"warning"}`, 3, 4, 6)
	f(`{"types":["alerts"]}`, 2, 3, 4, 6, 7)
	f(`{"minSeverity":"critical"}`, 1, 4, 5, 6)
	f(`{"types":["data_update"]}`, 1, 5)
	f(`{"types":["data_update","alerts"],"minSeverity":"info"}`, 1, 2, 3, 4, 5, 6, 7)
	f(`{}`, 1, 2, 3, 4, 5, 6, 7)

	// Live, the original way: auth names the city, a later subscribe
	// carries only filters.
	for _, d := range dialers {
		city := "flt-live-" + d.name
		c := d.dial(t, wsURL(s, ""))
		subscribeAuth(t, c, city)
		send(t, c, `{"type":"subscribe","filters":{"types":["alerts"],"minSeverity":"warning"}}`)
		readType(t, c, "subscribed")
		publishAll(city)
		expectSeqs(c, []uint64{3, 4, 6})

		// A new filter on the same city replaces the old one.
		send(t, c, fmt.Sprintf(`{"type":"subscribe","cities":[%q],"filters":{"types":["data_update"]}}`, city))
		readType(t, c, "subscribed")
		publishAll(city)
		expectSeqs(c, []uint64{8, 12})

		// A bad filter is an error and changes nothing.
		send(t, c, `{"type":"subscribe","filters":{"types":["weather"]}}`)
		if m := readType(t, c, "error"); m.Code != "bad_request" {
			t.Fatalf("got %s, want a bad_request error", m.Raw)
		}
		publishAll(city)
		expectSeqs(c, []uint64{15, 19})
	}
}

// TestClientErrors checks that bad client messages earn an error message
// and keep the connection.
func TestClientErrors(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{MaxClientErrors: 100})
	for _, d := range dialers {
		c := d.dial(t, wsURL(s, ""))
		f := func(in, code string, mention ...string) {
			t.Helper()
			send(t, c, in)
			m := readType(t, c, "error")
			if m.Code != code || m.Message == "" {
				t.Fatalf("%s: %s: got %s, want an error %s with a message", d.name, in, m.Raw, code)
			}
			for _, want := range mention {
				if !strings.Contains(m.Message, want) {
					t.Fatalf("%s: %s: got %s, want a message about %s", d.name, in, m.Raw, want)
				}
			}
			expectPong(t, c)
		}
		f(`not json`, "bad_json")
		f(`{"type":"subscribe","cities":["a"]`, "bad_json")
		// Valid JSON of the wrong shape: the message names the member.
		f(`[1,2]`, "bad_request", "JSON object")
		f(`{"type":"subscribe","cities":"nairobi"}`, "bad_request", `"cities"`)
		f(`{"type":"subscribe","cities":["nairobi"],"since":"5"}`, "bad_request", `"since"`)
		f(`{"type":"subscribe","cities":["nairobi"],"since":{"nairobi":"5"}}`, "bad_request", `"since"`)
		f(`{"type":"subscribe","cities":["nairobi"],"epoch":"1"}`, "bad_request", `"epoch"`)
		f(`{"type":"dance"}`, "unknown_type")
		f(`{"cities":["a"]}`, "bad_request")
		f(`{"type":"subscribe","cities":["Bad City"]}`, "bad_request")
		f(`{"type":"subscribe"}`, "bad_request")
		f(`{"type":"subscribe","cities":["a"],"filters":{"minSeverity":"loud"}}`, "bad_request")
		f(`{"type":"subscribe","cities":["a"],"since":{"Bad":1}}`, "bad_request")
	}
	if n := closes(s, CloseAbuse); n != 0 {
		t.Fatalf("Closes[abuse] = %d, want 0", n)
	}
}

// TestTooManyClientErrors checks that the MaxClientErrors-th bad message
// closes the connection with 1008.
func TestTooManyClientErrors(t *testing.T) {
	t.Parallel()
	const max = 3
	s := startServer(t, Config{MaxClientErrors: max})
	for i, d := range dialers {
		c := d.dial(t, wsURL(s, ""))
		for range max {
			send(t, c, `{"type":"dance"}`)
			readType(t, c, "error")
		}
		expectClose(t, c, ws.StatusPolicyViolation)
		waitCloses(t, s, CloseAbuse, uint64(i+1))
	}
}

// TestTooManySubscriptions checks MaxSubscriptions per connection and
// MaxCities per node.
func TestTooManySubscriptions(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{MaxSubscriptions: 2, MaxCities: 4})
	for _, d := range dialers {
		c := d.dial(t, wsURL(s, ""))
		send(t, c, `{"type":"subscribe","cities":["m1","m2","m3"]}`)
		if m := readType(t, c, "error"); m.Code != "too_many_subscriptions" || m.City != "m3" {
			t.Fatalf("%s: got %s, want too_many_subscriptions for m3", d.name, m.Raw)
		}
		sub := readType(t, c, "subscribed")
		if len(sub.Cities) != 2 || sub.Cities[0].City != "m1" || sub.Cities[1].City != "m2" {
			t.Fatalf("%s: got %s, want m1 and m2", d.name, sub.Raw)
		}
		readType(t, c, "initial_data")
		readType(t, c, "initial_data")
		// After an unsubscribe there is room again.
		send(t, c, `{"type":"unsubscribe","cities":["m1"]}`)
		readType(t, c, "unsubscribed")
		send(t, c, `{"type":"subscribe","cities":["m3"]}`)
		if sub := readType(t, c, "subscribed"); sub.Cities[0].City != "m3" {
			t.Fatalf("%s: got %s, want m3", d.name, sub.Raw)
		}
		readType(t, c, "initial_data")
		expectPong(t, c)
	}
	// m1, m2, m3 exist; the node holds at most 4 cities.
	c := dialers[0].dial(t, wsURL(s, ""))
	send(t, c, `{"type":"subscribe","cities":["m4"]}`)
	readType(t, c, "subscribed")
	readType(t, c, "initial_data")
	send(t, c, `{"type":"subscribe","cities":["m5"]}`)
	if m := readType(t, c, "error"); m.Code != "too_many_cities" || m.City != "m5" {
		t.Fatalf("got %s, want too_many_cities for m5", m.Raw)
	}
	if sub := readType(t, c, "subscribed"); len(sub.Cities) != 0 {
		t.Fatalf("got %s, want no cities", sub.Raw)
	}
	// Ingest for a sixth city is refused as well.
	p := dialProducer(t, s)
	p.Write(t, dataLine("m6", "data_update", `{}`))
	if a := p.Answer(t); !strings.Contains(a.Error, "too many cities") || a.Line != 1 {
		t.Fatalf("got %+v, want a too many cities error on line 1", a)
	}
}

// TestErrorsCloseMidSubscribe checks that a subscription whose refused
// cities reach MaxClientErrors closes the connection there: the cities
// after it are not subscribed, nothing follows the close frame, and the
// connection goes, on the URL (where it used to stay open, subscribed,
// for ever) as in a message.
func TestErrorsCloseMidSubscribe(t *testing.T) {
	t.Parallel()
	const maxErrors = 2
	s := startServer(t, Config{MaxSubscriptions: 1, MaxClientErrors: maxErrors})
	// The first city is subscribed, the next two refused, the rest never
	// looked at.
	cities := []string{"mid1", "mid2", "mid3", "mid4", "mid5"}
	check := func(name string, r *rawConn) {
		t.Helper()
		for i := range maxErrors {
			if m := r.msgType(t, "error"); m.Code != "too_many_subscriptions" || m.City != cities[1+i] {
				t.Fatalf("%s: got %s, want too_many_subscriptions for %s", name, m.Raw, cities[1+i])
			}
		}
		f := r.frame(t)
		if f.Header.OpCode != ws.OpClose {
			t.Fatalf("%s: got a frame of opcode %d (%q), want the close", name, f.Header.OpCode, f.Payload)
		}
		if code, _ := ws.ParseCloseFrameData(f.Payload); code != ws.StatusPolicyViolation {
			t.Fatalf("%s: closed with %d, want %d", name, code, ws.StatusPolicyViolation)
		}
		// Nothing after the close frame, and the connection ends without
		// the client's close.
		_ = r.c.SetReadDeadline(time.Now().Add(readTimeout))
		rest, err := io.ReadAll(r.br)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("%s: the server did not close the connection within %s", name, readTimeout)
		}
		if len(rest) > 0 {
			t.Fatalf("%s: %q after the close frame", name, rest)
		}
	}

	r := dialRaw(t, s)
	r.write(t, []byte(upgradeRequest("/ws?cities="+strings.Join(cities, ","))))
	if resp := r.response(t); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: status %d, want 101", resp.StatusCode)
	}
	check("URL", r)
	waitCloses(t, s, CloseAbuse, 1)

	r = dialUpgraded(t, s)
	r.write(t, text(`{"type":"subscribe","cities":["`+strings.Join(cities, `","`)+`"]}`))
	check("message", r)
	waitCloses(t, s, CloseAbuse, 2)

	waitFor(t, readTimeout, func() bool { return s.Stats().Subscriptions == 0 })
	for _, name := range cities[1+maxErrors:] {
		if s.hub.lookup(name) != nil {
			t.Fatalf("city %s was made for a connection that had closed", name)
		}
	}
}

// TestAuthWithoutCity checks that auth without a cityId is accepted (the
// dashboard authenticates before it picks a city) and that the city can be
// added later.
func TestAuthWithoutCity(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	for _, d := range dialers {
		c := d.dial(t, wsURL(s, ""))
		send(t, c, `{"type":"auth","token":"t"}`)
		if sub := readType(t, c, "subscribed"); len(sub.Cities) != 0 || sub.Epoch != s.Epoch() {
			t.Fatalf("%s: got %s, want subscribed to nothing", d.name, sub.Raw)
		}
		send(t, c, `{"type":"subscribe","cities":["later"]}`)
		readType(t, c, "subscribed")
		readType(t, c, "initial_data")
		expectPong(t, c)
	}
}
