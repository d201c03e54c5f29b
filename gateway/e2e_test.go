package gateway

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

// published is what a producer sent for one seq of one city.
type published struct {
	typ     string // the client message type it becomes
	payload string // the raw data object or alerts array
	ts      int64
}

// collect reads city frames from c until it has seen seq to[city] for every
// city in to, and checks that each city's seqs go up by exactly one from
// from[city]. It may run on its own goroutine.
func collect(c client, from, to map[string]uint64) ([]msg, error) {
	last := make(map[string]uint64, len(from))
	for city, seq := range from {
		last[city] = seq
	}
	done := func() bool {
		for city, seq := range to {
			if last[city] < seq {
				return false
			}
		}
		return true
	}
	var got []msg
	for !done() {
		b, err := c.Next(readTimeout)
		if err != nil {
			return got, fmt.Errorf("after %d messages (positions %v, want %v): %w", len(got), last, to, err)
		}
		m, err := parseMsg(b)
		if err != nil {
			return got, err
		}
		switch m.Type {
		case "data_update", "alerts", "initial_data":
		default:
			return got, fmt.Errorf("unexpected message %s", b)
		}
		prev, ok := last[m.City]
		if !ok {
			return got, fmt.Errorf("got a message for city %q, not subscribed: %s", m.City, b)
		}
		if m.Seq != prev+1 {
			return got, fmt.Errorf("city %s: seq %d after %d: %s", m.City, m.Seq, prev, b)
		}
		last[m.City] = m.Seq
		got = append(got, m)
	}
	return got, nil
}

// checkPublished checks that m carries exactly what was published for its
// seq.
func checkPublished(t testing.TB, who string, m msg, want published) {
	t.Helper()
	if m.Type != want.typ {
		t.Errorf("%s: %s seq %d: type %s, want %s", who, m.City, m.Seq, m.Type, want.typ)
		return
	}
	got := m.Data
	if want.typ == "alerts" {
		got = m.Alerts
	}
	if !bytes.Equal(got, []byte(want.payload)) {
		t.Errorf("%s: %s seq %d: payload %s, want %s", who, m.City, m.Seq, got, want.payload)
	}
	if want.ts != 0 && m.Timestamp != want.ts {
		t.Errorf("%s: %s seq %d: timestamp %d, want %d", who, m.City, m.Seq, m.Timestamp, want.ts)
	}
}

// expectPong checks that nothing but a pong is pending on c.
func expectPong(t testing.TB, c client) {
	t.Helper()
	send(t, c, `{"type":"ping"}`)
	readType(t, c, "pong")
}

// TestFanoutEndToEnd publishes through a real ingest connection to clients of
// both libraries, joined in the three ways the protocol allows, and checks
// that each sees exactly its cities, in order, once, with the producer's
// bytes intact; and that the acks carry the seqs the clients see.
func TestFanoutEndToEnd(t *testing.T) {
	s := startServer(t, Config{})
	cities := []string{"nairobi", "lagos", "accra", "cairo"}

	type spec struct {
		d      dialer
		join   string // auth, subscribe or url
		cities []string
	}
	specs := []spec{
		{dialers[0], "auth", []string{"nairobi"}},
		{dialers[1], "auth", []string{"lagos"}},
		{dialers[0], "subscribe", []string{"nairobi", "lagos", "accra"}},
		{dialers[1], "subscribe", []string{"accra", "cairo"}},
		{dialers[0], "url", []string{"cairo", "lagos"}},
		{dialers[1], "url", []string{"nairobi", "accra", "cairo"}},
	}
	clients := make([]client, len(specs))
	for i, sp := range specs {
		query := ""
		if sp.join == "url" {
			query = "cities=" + strings.Join(sp.cities, ",")
		}
		c := sp.d.dial(t, wsURL(s, query))
		clients[i] = c
		switch sp.join {
		case "auth":
			subscribeAuth(t, c, sp.cities[0])
			continue
		case "subscribe":
			send(t, c, fmt.Sprintf(`{"type":"subscribe","cities":["%s"]}`, strings.Join(sp.cities, `","`)))
		}
		sub := readType(t, c, "subscribed")
		if len(sub.Cities) != len(sp.cities) {
			t.Fatalf("client %d: %s, want cities %v", i, sub.Raw, sp.cities)
		}
		for j, city := range sp.cities {
			if sub.Cities[j].City != city || sub.Cities[j].Seq != 0 || sub.Cities[j].Resumed {
				t.Fatalf("client %d: %s, want %s at seq 0 not resumed", i, sub.Raw, city)
			}
			m := readType(t, c, "initial_data")
			if m.City != city || m.Seq != 0 || m.Resumed || m.Epoch != s.Epoch() || string(m.Data) != "{}" {
				t.Fatalf("client %d: %s, want the empty initial_data of %s", i, m.Raw, city)
			}
		}
	}

	// Each city gets perCity messages: data updates with awkward JSON,
	// alerts and snapshots; some with the producer's timestamp.
	const perCity = 120
	type line struct {
		city string
		pub  published
		text string
	}
	var lines []line
	for n := range perCity {
		for _, city := range cities {
			id := fmt.Sprintf("%s-%d", city, n)
			var l line
			switch {
			case n%25 == 24:
				data := fmt.Sprintf(`{"snap":%d,"city":"%s"}`, n, city)
				l = line{city, published{typ: "initial_data", payload: data}, fmt.Sprintf(`{"id":%q,"city":%q,"type":"snapshot","data":%s}`, id, city, data)}
			case n%10 == 9:
				alerts := fmt.Sprintf(`[{"severity":"warning","message":"pm25 %d \u00b5g/m\u00b3 \"high\""}]`, n)
				l = line{city, published{typ: "alerts", payload: alerts}, fmt.Sprintf(`{"id":%q,"city":%q,"type":"alerts","alerts":%s}`, id, city, alerts)}
			default:
				data := fmt.Sprintf(`{"n":%d,"name":"Caf\u00e9 \"%s\"","é":"ü","nested":{"a":[1,2.5,{"b":null}],"t":true}}`, n, city)
				ts := int64(0)
				tsField := ""
				if n%3 == 0 {
					ts = 1_700_000_000_000 + int64(n)
					tsField = fmt.Sprintf(`,"timestamp":%d`, ts)
				}
				l = line{city, published{typ: "data_update", payload: data, ts: ts}, fmt.Sprintf(`{"id":%q,"city":%q,"type":"data_update","data":%s%s}`, id, city, data, tsField)}
			}
			lines = append(lines, l)
		}
	}

	from := make([]map[string]uint64, len(specs))
	to := make([]map[string]uint64, len(specs))
	for i, sp := range specs {
		from[i], to[i] = map[string]uint64{}, map[string]uint64{}
		for _, city := range sp.cities {
			from[i][city], to[i][city] = 0, perCity
		}
	}
	got := make([][]msg, len(specs))
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() { got[i], errs[i] = collect(c, from[i], to[i]) })
	}

	p := dialProducer(t, s)
	writeErr := make(chan error, 1)
	go func() {
		var b strings.Builder
		for _, l := range lines {
			b.WriteString(l.text)
			b.WriteByte('\n')
		}
		_, err := p.C.Write([]byte(b.String()))
		writeErr <- err
	}()
	want := make(map[string][]published) // city → by seq-1
	for i, l := range lines {
		a := p.Answer(t)
		if wantID := fmt.Sprintf("%s-%d", l.city, i/len(cities)); a.Ack != wantID || a.Error != "" {
			t.Fatalf("answer %d: %+v, want an ack of %s", i, a, wantID)
		}
		if want := uint64(len(want[l.city]) + 1); a.Seq != want {
			t.Fatalf("ack %s: seq %d, want %d", a.Ack, a.Seq, want)
		}
		want[l.city] = append(want[l.city], l.pub)
	}
	if err := <-writeErr; err != nil {
		t.Fatalf("cannot write ingest lines: %s", err)
	}
	wg.Wait()

	for i, sp := range specs {
		who := fmt.Sprintf("client %d (%s, %s %v)", i, sp.d.name, sp.join, sp.cities)
		if errs[i] != nil {
			t.Errorf("%s: %s", who, errs[i])
			continue
		}
		if n := len(sp.cities) * perCity; len(got[i]) != n {
			t.Errorf("%s: got %d messages, want %d", who, len(got[i]), n)
		}
		for _, m := range got[i] {
			checkPublished(t, who, m, want[m.City][m.Seq-1])
		}
		expectPong(t, clients[i])
	}
	st := s.Stats()
	if st.IngestFrames != uint64(len(lines)) || st.IngestErrors != 0 {
		t.Errorf("IngestFrames %d, IngestErrors %d; want %d, 0", st.IngestFrames, st.IngestErrors, len(lines))
	}
	var subs int
	for _, sp := range specs {
		subs += len(sp.cities)
	}
	if want := uint64(subs * perCity); st.Deliveries != want {
		t.Errorf("Deliveries %d, want %d", st.Deliveries, want)
	}
}

// TestIngestAnswers checks the producer's answers line by line: an ack with
// the seq for each line with an id, an error naming the line for each bad
// one, and nothing lost around a bad line.
func TestIngestAnswers(t *testing.T) {
	s := startServer(t, Config{})
	c := dialers[0].dial(t, wsURL(s, "cities=ans"))
	readType(t, c, "subscribed")
	readType(t, c, "initial_data")
	p := dialProducer(t, s)

	var (
		lines   []string
		answers []answer
		data    []string // delivered data, by seq-1
	)
	ok := func(id, d string) {
		t.Helper()
		if id == "" {
			lines = append(lines, fmt.Sprintf(`{"city":"ans","type":"data_update","data":%s}`, d))
		} else {
			lines = append(lines, fmt.Sprintf(`{"id":%q,"city":"ans","type":"data_update","data":%s}`, id, d))
			answers = append(answers, answer{Ack: id, Seq: uint64(len(data) + 1)})
		}
		data = append(data, d)
	}
	bad := func(line, errPart string) {
		t.Helper()
		lines = append(lines, line)
		answers = append(answers, answer{Error: errPart, Line: len(lines)})
	}
	ok("a1", `{"v":1}`)
	ok("a2", `{"v":2}`)
	bad(`{"id":"x","city":"ans","type":"data_update","data":[1]}`, "needs \"data\" as a JSON object")
	bad(`not json at all`, "cannot parse JSON")
	ok("a5", `{"v":5}`)
	ok("", `{"v":6}`) // no id: delivered, not acked
	bad(`{"id":"x","city":"Bad City","type":"data_update","data":{}}`, "city")
	bad(`{"id":"x","city":"ans","type":"weather","data":{}}`, "unknown type")
	bad(`{"id":"x","city":"ans","type":"alerts","alerts":[{"severity":"meh","message":"m"}]}`, "severity")
	bad(`{"id":"x","city":"ans","type":"alerts","alerts":[]}`, "1 to 64 alerts")
	bad(`{"id":"x","city":"ans","type":"data_update","data":{"v":1}`, "cannot parse JSON")
	bad("{\"id\":\"x\",\"city\":\"ans\",\"type\":\"data_update\",\"data\":{\"v\":\"\xff\"}}", "UTF-8")
	bad(`{"id":7,"city":"ans","type":"data_update","data":{}}`, `"id" must be a string`)
	bad(`{"id":"x","city":"ans","type":"data_update","data":{},"timestamp":1.5}`, `"timestamp" must be an integer`)
	ok("a13", `{"v":13}`)
	lines = append(lines, "") // empty line: skipped silently
	ok("a15", `{"v":15}`)

	p.Write(t, lines...)
	for i, want := range answers {
		got := p.Answer(t)
		switch {
		case want.Error == "":
			if got != want {
				t.Errorf("answer %d: %+v, want %+v", i, got, want)
			}
		case got.Line != want.Line || !strings.Contains(got.Error, want.Error) || got.Ack != "":
			t.Errorf("answer %d: %+v, want an error on line %d containing %q", i, got, want.Line, want.Error)
		}
	}
	for i, d := range data {
		m := readType(t, c, "data_update")
		if m.Seq != uint64(i+1) || string(m.Data) != d {
			t.Errorf("got %s, want seq %d with data %s", m.Raw, i+1, d)
		}
	}
	expectPong(t, c)
	// The connection survived every bad line.
	if seq := p.Publish(t, dataLine("ans", "data_update", `{"v":"end"}`)); seq != uint64(len(data)+1) {
		t.Errorf("last ack seq %d, want %d", seq, len(data)+1)
	}
	if st := s.Stats(); st.IngestErrors != 10 {
		t.Errorf("IngestErrors = %d, want 10", st.IngestErrors)
	}
}

// TestIngestLongLine checks IngestMaxLineBytes: a line at the limit passes,
// a longer one (within and beyond the reader's buffer) earns an error and
// the connection goes on.
func TestIngestLongLine(t *testing.T) {
	const max = 2048
	s := startServer(t, Config{IngestMaxLineBytes: max})
	p := dialProducer(t, s)

	// lineOf returns a valid line of exactly n bytes.
	lineOf := func(id string, n int) string {
		l := fmt.Sprintf(`{"id":%q,"city":"long","type":"data_update","data":{"pad":""}}`, id)
		return strings.Replace(l, `"pad":""`, `"pad":"`+strings.Repeat("x", n-len(l))+`"`, 1)
	}
	f := func(line string, want answer) {
		t.Helper()
		p.Write(t, line)
		got := p.Answer(t)
		if want.Error != "" {
			if got.Line != want.Line || !strings.Contains(got.Error, want.Error) {
				t.Fatalf("line of %d bytes: %+v, want an error on line %d containing %q", len(line), got, want.Line, want.Error)
			}
			return
		}
		if got != want {
			t.Fatalf("line of %d bytes: %+v, want %+v", len(line), got, want)
		}
	}
	f(lineOf("a", 100), answer{Ack: "a", Seq: 1})
	f(lineOf("b", max), answer{Ack: "b", Seq: 2})
	f(lineOf("c", max+1), answer{Error: "line longer than 2048 bytes", Line: 3})
	f(lineOf("d", 10_000), answer{Error: "line longer than 2048 bytes", Line: 4})
	f(lineOf("e", 100), answer{Ack: "e", Seq: 3})
	f(lineOf("f", 300_000), answer{Error: "line longer than 2048 bytes", Line: 6}) // past the 64 KiB read buffer
	f(lineOf("g", max)+"\r", answer{Ack: "g", Seq: 4})                             // CRLF ending
	f(lineOf("h", 100), answer{Ack: "h", Seq: 5})
}

// TestIngestManyProducers runs producers concurrently on their own cities
// and on one shared city: every seq is assigned once, each producer's acks
// go up in line order, and every client sees each city gap-free.
func TestIngestManyProducers(t *testing.T) {
	s := startServer(t, Config{})
	const (
		producers = 4
		perLine   = 150 // lines per producer, alternating own city and shared
	)
	cities := []string{"shared"}
	for i := range producers {
		cities = append(cities, fmt.Sprintf("p%d", i))
	}
	from, to := map[string]uint64{}, map[string]uint64{}
	for _, c := range cities {
		from[c], to[c] = 0, perLine/2
	}
	to["shared"] = producers * perLine / 2

	var clients []client
	for i := range 4 {
		c := dialers[i%2].dial(t, wsURL(s, "cities="+strings.Join(cities, ",")))
		readType(t, c, "subscribed")
		for range cities {
			readType(t, c, "initial_data")
		}
		clients = append(clients, c)
	}
	got := make([][]msg, len(clients))
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() { got[i], errs[i] = collect(c, from, to) })
	}

	type ack struct {
		city string
		seq  uint64
		data string
	}
	acks := make([][]ack, producers)
	perr := make([]error, producers)
	var pwg sync.WaitGroup
	for i := range producers {
		p := dialProducer(t, s)
		pwg.Go(func() {
			var lines []string
			var sent []ack
			for n := range perLine {
				city := fmt.Sprintf("p%d", i)
				if n%2 == 1 {
					city = "shared"
				}
				data := fmt.Sprintf(`{"p":%d,"n":%d}`, i, n)
				lines = append(lines, fmt.Sprintf(`{"id":"%d-%d","city":%q,"type":"data_update","data":%s}`, i, n, city, data))
				sent = append(sent, ack{city: city, data: data})
			}
			go func() { _, _ = p.C.Write([]byte(strings.Join(lines, "\n") + "\n")) }()
			for n := range perLine {
				a, err := p.Next(readTimeout)
				if err == nil && (a.Ack != fmt.Sprintf("%d-%d", i, n) || a.Error != "") {
					err = fmt.Errorf("answer %d: %+v, want an ack of %d-%d", n, a, i, n)
				}
				if err != nil {
					perr[i] = err
					return
				}
				sent[n].seq = a.Seq
			}
			acks[i] = sent
		})
	}
	pwg.Wait()
	for i, err := range perr {
		if err != nil {
			t.Fatalf("producer %d: %s", i, err)
		}
	}
	// seq → data per city, from the acks.
	want := map[string]map[uint64]string{}
	for i, list := range acks {
		last := map[string]uint64{}
		for _, a := range list {
			if a.seq <= last[a.city] {
				t.Errorf("producer %d: %s seq %d acked after %d", i, a.city, a.seq, last[a.city])
			}
			last[a.city] = a.seq
			if want[a.city] == nil {
				want[a.city] = map[uint64]string{}
			}
			if _, dup := want[a.city][a.seq]; dup {
				t.Errorf("%s seq %d acked twice", a.city, a.seq)
			}
			want[a.city][a.seq] = a.data
		}
	}
	for city, n := range to {
		seqs := make([]uint64, 0, len(want[city]))
		for seq := range want[city] {
			seqs = append(seqs, seq)
		}
		slices.Sort(seqs)
		if uint64(len(seqs)) != n || seqs[0] != 1 || seqs[len(seqs)-1] != n {
			t.Errorf("%s: acked seqs %v, want 1..%d", city, seqs, n)
		}
	}

	wg.Wait()
	for i := range clients {
		if errs[i] != nil {
			t.Errorf("client %d: %s", i, errs[i])
			continue
		}
		for _, m := range got[i] {
			if string(m.Data) != want[m.City][m.Seq] {
				t.Errorf("client %d: %s seq %d: data %s, want %s", i, m.City, m.Seq, m.Data, want[m.City][m.Seq])
			}
		}
		expectPong(t, clients[i])
	}
}

// TestIngestMaxConns checks that a producer over IngestMaxConns is told why
// and closed, and that the slot frees when a producer leaves.
func TestIngestMaxConns(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{IngestMaxConns: 1})
	p1 := dialProducer(t, s)
	p1.Publish(t, dataLine("mc", "data_update", `{}`))

	p2 := dialProducer(t, s)
	if a := p2.Answer(t); !strings.Contains(a.Error, "too many producer connections") {
		t.Fatalf("got %+v, want a too many producer connections error", a)
	}
	if _, err := p2.Next(readTimeout); err == nil {
		t.Fatal("the refused producer is still open")
	}
	if st := s.Stats(); st.IngestRejected != 1 || st.IngestConns != 1 {
		t.Fatalf("IngestRejected %d, IngestConns %d; want 1, 1", st.IngestRejected, st.IngestConns)
	}

	p1.C.Close()
	waitFor(t, readTimeout, func() bool { return s.Stats().IngestConns == 0 })
	p3 := dialProducer(t, s)
	if seq := p3.Publish(t, dataLine("mc", "data_update", `{}`)); seq != 2 {
		t.Fatalf("ack seq %d, want 2", seq)
	}
}
