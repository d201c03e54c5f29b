package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/metrocast/metrocast/gateway/auth"
	"github.com/metrocast/metrocast/gateway/auth/authtest"
	gwproducer "github.com/metrocast/metrocast/gateway/producer"
)

// publishClaims returns producer claims for sub that may publish to cities.
func publishClaims(sub string, ttl time.Duration, cities ...string) authtest.Claims {
	c := claims(sub, ttl)
	c.Publish = cities
	return c
}

// dialIngestLoopback dials the ingest port of s through 127.0.0.1, whatever
// address it is bound to.
func dialIngestLoopback(t testing.TB, s *Server) *producer {
	t.Helper()
	_, port, _ := net.SplitHostPort(s.IngestAddr().String())
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, readTimeout)
	if err != nil {
		t.Fatalf("cannot dial ingest: %s", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &producer{C: c, BR: bufio.NewReader(c)}
}

// expectDropped reads p's answers up to a connection-level error (line 0)
// that mentions want, then EOF.
func expectDropped(t testing.TB, p *producer, want string) {
	t.Helper()
	for {
		a := p.Answer(t)
		if a.Line != 0 {
			continue
		}
		if !strings.Contains(a.Error, want) {
			t.Fatalf("connection error %q, want it to mention %q", a.Error, want)
		}
		break
	}
	if a, err := p.Next(readTimeout); err == nil {
		t.Fatalf("answer %+v after the connection error, want EOF", a)
	}
}

// TestIngestAuthLineOptional: on a loopback port, which wants no token, a
// producer configured with one (its first line {"auth":…}) works as on a
// port that wants it: on a node with keys the token is checked (a bad one
// is refused, a good one's publish claim holds), and on an insecure node
// the line is passed over. Either way the line has no answer, and only a
// first line is an auth line.
func TestIngestAuthLineOptional(t *testing.T) {
	t.Parallel()
	cfg, _ := authConfig(t)
	s := startServer(t, cfg) // IngestAddr 127.0.0.1:0
	p := dialProducer(t, s)
	p.Write(t, `{"auth":"`+hs256(t, publishClaims("sensor-1", time.Hour, "al-a"))+`"}`)
	seq := p.Publish(t, dataLine("al-a", "data_update", `{"x":1}`))
	p.Write(t, dataLine("al-b", "data_update", `{"x":1}`))
	if a := p.Answer(t); a.Line != 3 || !strings.Contains(a.Error, "forbidden") {
		t.Fatalf("%+v, want forbidden for line 3: the token's publish claim holds", a)
	}
	p.Write(t, `{"auth":"`+hs256(t, publishClaims("sensor-1", time.Hour, "*"))+`"}`)
	if a := p.Answer(t); a.Line != 4 || a.Error == "" {
		t.Fatalf("%+v, want an error for line 4: only a first line authenticates", a)
	}
	if got := p.Publish(t, dataLine("al-a", "data_update", `{"x":2}`)); got != seq+1 {
		t.Fatalf("seq %d, want %d", got, seq+1)
	}
	if st := s.Stats(); len(st.Producers) != 1 || st.Producers[0].Sub != "sensor-1" {
		t.Fatalf("Producers = %+v, want sensor-1's", st.Producers)
	}
	for _, tok := range []string{"not.a.token", hs256(t, publishClaims("p", -time.Hour, "*")), hs256(t, claims("viewer", time.Hour, "*"))} {
		bad := dialProducer(t, s)
		bad.Write(t, `{"auth":"`+tok+`"}`, dataLine("al-a", "data_update", `{"x":3}`))
		expectDropped(t, bad, "authentication failed")
	}
	if st := s.Stats(); st.IngestAuthFailures != 3 || st.IngestFrames != 2 {
		t.Fatalf("IngestAuthFailures %d IngestFrames %d, want 3 and 2", st.IngestAuthFailures, st.IngestFrames)
	}
	// Without an auth line the port wants nothing, as ever.
	dialProducer(t, s).Publish(t, dataLine("al-c", "data_update", `{"x":1}`))

	insecure := startServer(t, Config{})
	p = dialProducer(t, insecure)
	p.Write(t, `{"auth":"whatever.a.laptop.has"}`)
	if seq := p.Publish(t, dataLine("al-a", "data_update", `{"x":1}`)); seq != 1 {
		t.Fatalf("seq %d, want 1: the auth line is passed over, unanswered", seq)
	}
	if st := insecure.Stats(); st.IngestErrors != 0 || st.IngestAuthFailures != 0 {
		t.Fatalf("IngestErrors %d IngestAuthFailures %d, want 0 and 0", st.IngestErrors, st.IngestAuthFailures)
	}
}

// TestIngestToken checks an ingest port bound beyond loopback on a node
// with keys: producers must authenticate with their first line, and may
// publish only to the cities of their token's publish claim.
func TestIngestToken(t *testing.T) {
	t.Parallel()
	cfg, _ := authConfig(t)
	cfg.IngestAddr = "0.0.0.0:0" // not loopback: tokens required (tests dial 127.0.0.1)
	cfg.TokenGrace = 200 * time.Millisecond
	s := startServer(t, cfg)

	refused := func(first, want string) {
		t.Helper()
		p := dialIngestLoopback(t, s)
		p.Write(t, first, dataLine("it-a", "data_update", `{"x":1}`))
		expectDropped(t, p, want)
	}
	refused(dataLine("it-a", "data_update", `{"x":1}`), "authentication failed")
	refused(`{"auth":"not.a.token"}`, "authentication failed")
	refused(`{"auth":"`+hs256(t, publishClaims("p", -time.Hour, "*"))+`"}`, "expired")
	refused(`{"auth":"`+hs256(t, claims("viewer", time.Hour, "*"))+`"}`, "grants no publishing")
	if st := s.Stats(); st.IngestAuthFailures != 4 || st.IngestFrames != 0 {
		t.Fatalf("IngestAuthFailures %d IngestFrames %d, want 4 and 0", st.IngestAuthFailures, st.IngestFrames)
	}

	p := dialIngestLoopback(t, s)
	p.Write(t, `{"auth":"`+hs256(t, publishClaims("sensor-1", time.Hour, "it-a"))+`"}`)
	seq := p.Publish(t, dataLine("it-a", "data_update", `{"x":1}`))
	p.Write(t, dataLine("it-b", "data_update", `{"x":1}`))
	if a := p.Answer(t); a.Line != 3 || !strings.Contains(a.Error, "forbidden") {
		t.Fatalf("%+v, want forbidden for line 3", a)
	}
	if got := p.Publish(t, dataLine("it-a", "data_update", `{"x":2}`)); got != seq+1 {
		t.Fatalf("seq %d, want %d", got, seq+1)
	}
	// The refused producers saw EOF; the node may still be forgetting
	// them.
	waitFor(t, readTimeout, func() bool { return len(s.Stats().Producers) == 1 })
	st := s.Stats()
	if len(st.Producers) != 1 || st.Producers[0].Sub != "sensor-1" || st.Producers[0].Lines != 4 || st.Producers[0].Errors != 1 {
		t.Fatalf("Producers = %+v", st.Producers)
	}

	// The Go producer sends its token on each connection.
	pr, err := gwproducer.Dial(context.Background(), "127.0.0.1:"+portOf(s.IngestAddr()), gwproducer.Options{
		Token: func() (string, error) { return hs256(t, publishClaims("sensor-2", time.Hour, "*")), nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	if _, err := pr.Send(context.Background(), []byte(dataLine("it-c", "data_update", `{"y":1}`))); err != nil {
		t.Fatal(err)
	}

	// With no token, or a bad one, every line in flight fails as refused
	// (certainly not stored), with the gateway's reason.
	for _, tok := range []func() (string, error){nil, func() (string, error) { return "not.a.token", nil }} {
		frames := s.Stats().IngestFrames
		bad, err := gwproducer.Dial(context.Background(), "127.0.0.1:"+portOf(s.IngestAddr()), gwproducer.Options{Token: tok})
		if err != nil {
			t.Fatal(err)
		}
		errs := make(chan error, 3)
		for i := range cap(errs) {
			if err := bad.SendAsync(context.Background(), []byte(dataLine("it-c", "data_update", fmt.Sprintf(`{"z":%d}`, i))),
				func(_ uint64, err error) { errs <- err }); err != nil {
				t.Fatal(err)
			}
		}
		for range cap(errs) {
			var re *gwproducer.RefusedError
			if err := <-errs; !errors.As(err, &re) || !strings.HasPrefix(re.Message, "authentication failed") {
				t.Errorf("token %v: %v, want *RefusedError: authentication failed", tok != nil, err)
			}
		}
		_ = bad.Close()
		if got := s.Stats().IngestFrames; got != frames {
			t.Errorf("IngestFrames %d after refused lines, want %d", got, frames)
		}
	}

	// A token that expires during the connection ends it.
	short := publishClaims("sensor-3", time.Second, "*")
	p = dialIngestLoopback(t, s)
	p.Write(t, `{"auth":"`+hs256(t, short)+`"}`)
	p.Publish(t, dataLine("it-a", "data_update", `{"x":3}`))
	waitFor(t, readTimeout, func() bool { return time.Now().After(short.ExpiresAt.Add(cfg.TokenGrace)) })
	p.Write(t, dataLine("it-a", "data_update", `{"x":4}`))
	expectDropped(t, p, "expired")
}

// TestIngestTokenAttacks checks the token attack table against the ingest
// port's first line: nothing authenticates, a time claim that is not a
// number is called invalid.
func TestIngestTokenAttacks(t *testing.T) {
	t.Parallel()
	cfg, _ := authConfig(t)
	cfg.IngestAddr = "0.0.0.0:0" // not loopback: tokens required (tests dial 127.0.0.1)
	s := startServer(t, cfg)
	bad := badTokens(t)
	for name, bt := range bad {
		p := dialIngestLoopback(t, s)
		p.Write(t, `{"auth":"`+bt.Tok+`"}`, dataLine("ita", "data_update", `{"x":1}`))
		want := "authentication failed"
		if strings.HasPrefix(name, "exp ") || strings.HasPrefix(name, "nbf ") || strings.HasPrefix(name, "iat ") {
			want = map[string]string{
				auth.CodeInvalidClaims: "invalid time claim",
				auth.CodeExpired:       "token is expired",
				auth.CodeNotYetValid:   "token is not valid yet",
			}[bt.Code]
			if bt.Code == auth.CodeNotYetValid && strings.HasPrefix(name, "iat ") {
				want = "token used before issued"
			}
		}
		t.Run(name, func(t *testing.T) { expectDropped(t, p, want) })
	}
	if st := s.Stats(); st.IngestAuthFailures != uint64(len(bad)) || st.IngestFrames != 0 {
		t.Fatalf("IngestAuthFailures %d IngestFrames %d, want %d and 0", st.IngestAuthFailures, st.IngestFrames, len(bad))
	}
}

// TestIngestAuthTimeout checks that on a port that wants a token, a
// connection that sends no auth line does not hold one of IngestMaxConns
// for ever: it is dropped after AuthTimeout, saying why, and its place
// goes to a producer with a token. A producer that authenticated may be
// silent as long as it likes.
func TestIngestAuthTimeout(t *testing.T) {
	t.Parallel()
	cfg, _ := authConfig(t)
	cfg.IngestAddr = "0.0.0.0:0" // not loopback: tokens required (tests dial 127.0.0.1)
	cfg.IngestMaxConns = 2
	cfg.AuthTimeout = 300 * time.Millisecond
	s := startServer(t, cfg)
	auth := `{"auth":"` + hs256(t, publishClaims("feeder", time.Hour, "iat-a")) + `"}`
	p := dialIngestLoopback(t, s)
	p.Write(t, auth)
	p.Publish(t, dataLine("iat-a", "data_update", `{"x":1}`))
	silent := dialIngestLoopback(t, s)
	waitFor(t, readTimeout, func() bool { return s.Stats().IngestConns == 2 })
	expectDropped(t, dialIngestLoopback(t, s), "too many producer connections")
	expectDropped(t, silent, "no {\"auth\":…} line within 300ms")
	// p has been silent longer than AuthTimeout since its auth line.
	p.Publish(t, dataLine("iat-a", "data_update", `{"x":2}`))
	next := dialIngestLoopback(t, s)
	next.Write(t, auth)
	next.Publish(t, dataLine("iat-a", "data_update", `{"x":3}`))
	if st := s.Stats(); st.IngestAuthFailures != 1 {
		t.Fatalf("IngestAuthFailures %d, want 1", st.IngestAuthFailures)
	}
}

func portOf(a net.Addr) string {
	_, port, _ := net.SplitHostPort(a.String())
	return port
}

// TestIngestLoopbackNeedsNoToken checks that a node with keys takes
// producers on a loopback port without a token.
func TestIngestLoopbackNeedsNoToken(t *testing.T) {
	t.Parallel()
	cfg, _ := authConfig(t)
	s := startServer(t, cfg)
	p := dialProducer(t, s)
	p.Publish(t, dataLine("il-a", "data_update", `{"x":1}`))
}

// TestIngestGarbage checks that a producer sending bad lines past
// IngestMaxErrors is disconnected while another producer goes on.
func TestIngestGarbage(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{IngestMaxErrors: 5})
	c := dialGorilla(t, wsURL(s, "cities=ig-a"))
	readType(t, c, "subscribed")
	readType(t, c, "initial_data")
	good, bad := dialProducer(t, s), dialProducer(t, s)
	var garbage []string
	for i := range 20 {
		garbage = append(garbage, fmt.Sprintf("garbage %d", i))
	}
	bad.Write(t, garbage...)
	for i := range 5 {
		seq := good.Publish(t, dataLine("ig-a", "data_update", fmt.Sprintf(`{"n":%d}`, i)))
		if m := readType(t, c, "data_update"); m.Seq != seq {
			t.Fatalf("%s, want seq %d", m.Raw, seq)
		}
	}
	for n := 1; n <= 6; n++ {
		if a := bad.Answer(t); a.Line != n || a.Error == "" {
			t.Fatalf("answer %+v, want an error for line %d", a, n)
		}
	}
	expectDropped(t, bad, "bad lines per minute")
	good.Publish(t, dataLine("ig-a", "data_update", `{"n":"after"}`))
	waitFor(t, readTimeout, func() bool { return s.Stats().IngestConns == 1 })
	if st := s.Stats(); st.IngestDropped != 1 || st.IngestErrors != 6 {
		t.Fatalf("IngestDropped %d IngestErrors %d, want 1 and 6", st.IngestDropped, st.IngestErrors)
	}
}

// TestIngestFullNodeIsNotGarbage checks that lines refused because the
// node holds max_cities do not count as the producer's bad lines: past
// IngestMaxErrors of them it keeps its connection, and its lines for the
// cities the node holds go on.
func TestIngestFullNodeIsNotGarbage(t *testing.T) {
	t.Parallel()
	const maxErrors = 2
	s := startServer(t, Config{MaxCities: 1, IngestMaxErrors: maxErrors})
	p := dialProducer(t, s)
	p.Publish(t, dataLine("full-a", "data_update", `{"n":0}`))
	for i := range 3 * maxErrors {
		p.Write(t, dataLine(fmt.Sprintf("full-x%d", i), "data_update", `{}`))
		if a := p.Answer(t); a.Line != 2+2*i || !strings.Contains(a.Error, "too many cities") {
			t.Fatalf("answer %+v, want too many cities on line %d", a, 2+2*i)
		}
		p.Publish(t, dataLine("full-a", "data_update", fmt.Sprintf(`{"n":%d}`, i+1)))
	}
	if st := s.Stats(); st.IngestDropped != 0 || st.IngestErrors != 3*maxErrors || st.CitiesRefused != 3*maxErrors {
		t.Fatalf("IngestDropped %d IngestErrors %d CitiesRefused %d, want 0, %d, %d", st.IngestDropped, st.IngestErrors, st.CitiesRefused, 3*maxErrors, 3*maxErrors)
	}
}

// TestIngestRate checks that IngestMaxRate paces a producer without
// refusing anything.
func TestIngestRate(t *testing.T) {
	t.Parallel()
	const rate, lines = 100, 150
	s := startServer(t, Config{IngestMaxRate: rate})
	p := dialProducer(t, s)
	batch := make([]string, lines)
	for i := range batch {
		batch[i] = dataLine("ir-a", "data_update", `{"x":1}`)
	}
	start := time.Now()
	p.Write(t, batch...)
	for range lines {
		if a := p.Answer(t); a.Ack == "" {
			t.Fatalf("%+v, want an ack", a)
		}
	}
	// The first second's worth goes at once, the rest at the rate.
	if d, want := time.Since(start), time.Duration(lines-rate)*time.Second/rate; d < want*8/10 {
		t.Fatalf("%d lines in %s at %d per second, want at least %s", lines, d, rate, want)
	}
	if st := s.Stats(); len(st.Producers) != 1 || st.Producers[0].Throttled == 0 || st.IngestErrors != 0 {
		t.Fatalf("Producers %+v, IngestErrors %d", st.Producers, st.IngestErrors)
	}
}

// TestIngestOneDefinitionOfValid sends, over the ingest port, lines that
// sonic's fast paths accepted and the merge or the clients could not take
// (issue 16.1): each is refused with its line number, the lines around it
// are stored, and clients that join afterwards get an initial_data that
// encoding/json decodes, holding the merge of the stored lines only.
func TestIngestOneDefinitionOfValid(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	live := dialGorilla(t, wsURL(s, "cities=valid"))
	readType(t, live, "subscribed")
	readType(t, live, "initial_data")
	p := dialProducer(t, s)
	long := strings.Repeat("b", 41)
	bad := []struct{ line, err string }{
		// The line: a bad escape in a name, 32 bytes or more before the end.
		{`{"city":"valid","type":"data_update","id":"x1","data":{"a\0":1,"` + long + `":2}}`, "invalid escape"},
		{`{"city":"valid","type":"data_update","id":"x2","data":{"a":"\0` + long + `"}}`, "invalid escape"},
		{`{"city":"valid","type":"data_update","id":"x3","data":{"v":1e400}}`, "out of the range of a float64"},
		{`{"city":"valid","type":"snapshot","id":"x4","data":{"v":[-1e999]}}`, "out of the range of a float64"},
		{`{"city":"valid","type":"alerts","id":"x5","alerts":[{"severity":"info","v":1e400}]}`, "out of the range of a float64"},
		{`{"city":"valid","type":"data_update","id":"x6","data":{"\ud800` + long + `":1}}`, "unpaired UTF-16 surrogate"},
		{`{"city":"valid","type":"data_update","id":"x7","data":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`, "nested deeper"},
	}
	lines := []string{`{"city":"valid","type":"data_update","id":"ok1","data":{"a":1,"` + long + `":"\u00e9\ud83d\ude00"}}`}
	for _, b := range bad {
		lines = append(lines, b.line)
	}
	lines = append(lines, `{"city":"valid","type":"data_update","id":"ok2","data":{"a":2,"v":1.7976931348623157e308}}`)
	p.Write(t, lines...)
	if a := p.Answer(t); a.Ack != "ok1" || a.Seq != 1 {
		t.Fatalf("line 1: %+v, want an ack at seq 1", a)
	}
	for i, b := range bad {
		if a := p.Answer(t); a.Ack != "" || a.Line != i+2 || !strings.Contains(a.Error, b.err) {
			t.Fatalf("line %d: %+v, want an error on line %d mentioning %q", i+2, a, i+2, b.err)
		}
	}
	if a := p.Answer(t); a.Ack != "ok2" || a.Seq != 2 {
		t.Fatalf("last line: %+v, want an ack at seq 2", a)
	}

	decode := func(what string, b []byte) any {
		t.Helper()
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s %s: encoding/json cannot decode it: %v", what, b, err)
		}
		return v
	}
	for seq := uint64(1); seq <= 2; seq++ {
		m := readType(t, live, "data_update")
		if m.Seq != seq {
			t.Fatalf("got %s, want seq %d", m.Raw, seq)
		}
		decode("data_update", m.Raw)
	}
	want := decode("state", []byte(`{"a":2,"`+long+`":"é😀","v":1.7976931348623157e308}`))
	for _, d := range dialers {
		c := d.dial(t, wsURL(s, ""))
		_, m := subscribeAuth(t, c, "valid")
		if m.Seq != 2 || !reflect.DeepEqual(decode("initial_data", m.Raw).(map[string]any)["data"], want) {
			t.Fatalf("%s: %s, want seq 2 and state %v", d.name, m.Raw, want)
		}
		c.Close()
	}
	if st := s.Stats(); st.IngestErrors != uint64(len(bad)) || st.IngestFrames != 2 {
		t.Fatalf("IngestErrors %d IngestFrames %d, want %d and 2", st.IngestErrors, st.IngestFrames, len(bad))
	}
}
