package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/metrocast/metrocast/gateway/auth"
)

// TestAuthTokenSources connects with a good token in each place a client
// may put it, signed with each kind of key.
func TestAuthTokenSources(t *testing.T) {
	t.Parallel()
	cfg, _ := authConfig(t)
	s := startServer(t, cfg)
	sg := getSigners(t)
	c := claims("alice", time.Hour, "nairobi")
	tokens := map[string]string{
		"HS256":       mint(t, jwt.SigningMethodHS256, sg.HMAC, "", c),
		"HS512":       mint(t, jwt.SigningMethodHS512, sg.HMAC, "", c),
		"RS256":       mint(t, jwt.SigningMethodRS256, sg.RSA, "rsa", c),
		"RS256 nokid": mint(t, jwt.SigningMethodRS256, sg.RSA, "", c),
		"ES256":       mint(t, jwt.SigningMethodES256, sg.EC, "ec", c),
		"EdDSA":       mint(t, jwt.SigningMethodEdDSA, sg.Ed, "ed", c),
	}
	for name, tok := range tokens {
		// ?token= with the subscription on the URL.
		cl := mustDialAuth(t, wsURL(s, "cities=nairobi&token="+url.QueryEscape(tok)), nil)
		readType(t, cl, "subscribed")
		readType(t, cl, "initial_data")
		// Authorization: Bearer.
		cl = mustDialAuth(t, wsURL(s, "cities=nairobi"), bearer(tok))
		readType(t, cl, "subscribed")
		// The browser's subprotocol trick: only "metrocast" is echoed.
		cl = mustDialAuth(t, wsURL(s, "cities=nairobi"), nil, "metrocast", "bearer."+tok)
		if p := cl.C.Subprotocol(); p != "metrocast" {
			t.Fatalf("%s: subprotocol %q, want metrocast", name, p)
		}
		readType(t, cl, "subscribed")
		// The original dashboards' first message.
		cl = mustDialAuth(t, wsURL(s, ""), nil)
		send(t, cl, `{"type":"auth","token":"`+tok+`","cityId":"nairobi"}`)
		if m := readType(t, cl, "subscribed"); len(m.Cities) != 1 || m.Cities[0].City != "nairobi" {
			t.Fatalf("%s: %s", name, m.Raw)
		}
		readType(t, cl, "initial_data")
	}
	if st := s.Stats(); st.AuthFailures != 0 {
		t.Fatalf("AuthFailures = %d", st.AuthFailures)
	}
}

// TestAuthRejectsAtUpgrade checks that a bad token in the upgrade request is
// answered 401 with its code, and never upgrades.
func TestAuthRejectsAtUpgrade(t *testing.T) {
	t.Parallel()
	cfg, _ := authConfig(t)
	cfg.MaxHeaderBytes = 4 * auth.MaxTokenBytes // room for the token that is too long
	s := startServer(t, cfg)
	n := uint64(0)
	for name, bt := range badTokens(t) {
		for _, way := range []string{"query", "header", "protocol"} {
			var (
				u     = wsURL(s, "cities=nairobi")
				h     http.Header
				proto []string
			)
			switch way {
			case "query":
				u += "&token=" + url.QueryEscape(bt.Tok)
			case "header":
				h = bearer(bt.Tok)
			case "protocol":
				proto = []string{"metrocast", "bearer." + bt.Tok}
			}
			c, resp, err := dialAuth(t, u, h, proto...)
			if c != nil {
				t.Fatalf("%s via %s: upgraded", name, way)
			}
			if resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("%s via %s: %v, want 401", name, way, err)
			}
			if !strings.HasPrefix(err.Error(), bt.Code+":") || resp.Header.Get("WWW-Authenticate") == "" {
				t.Fatalf("%s via %s: body %q, headers %v; want code %s", name, way, err, resp.Header, bt.Code)
			}
			n++
		}
	}
	// Cities on the URL need a token in the request.
	_, resp, _ := dialAuth(t, wsURL(s, "cities=nairobi"), nil)
	if resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("cities on the URL without a token: %v, want 401", resp)
	}
	waitCloses(t, s, CloseUnauthorized, n+1)
	if st := s.Stats(); st.Upgraded != 0 || st.AuthFailures != n {
		t.Fatalf("Upgraded %d AuthFailures %d, want 0 and %d", st.Upgraded, st.AuthFailures, n)
	}
}

// TestAuthFirstMessage checks the auth message path: a good token
// authenticates, anything else gets auth_error and close 4001.
func TestAuthFirstMessage(t *testing.T) {
	t.Parallel()
	cfg, _ := authConfig(t)
	s := startServer(t, cfg)
	refuse := func(t *testing.T, first, code string) {
		t.Helper()
		c := mustDialAuth(t, wsURL(s, ""), nil)
		send(t, c, first)
		if m := readType(t, c, "auth_error"); m.Code != code {
			t.Fatalf("%s: %s, want code %s", first, m.Raw, code)
		}
		expectClose(t, c, StatusAuthFailed)
	}
	for name, bt := range badTokens(t) {
		t.Run(name, func(t *testing.T) {
			refuse(t, `{"type":"auth","token":"`+bt.Tok+`","cityId":"nairobi"}`, bt.Code)
		})
	}
	refuse(t, `{"type":"subscribe","cities":["nairobi"]}`, auth.CodeRequired)
	refuse(t, `{"type":"ping"}`, auth.CodeRequired)
	refuse(t, `{"type":"auth","cityId":"nairobi"}`, auth.CodeRequired)
	refuse(t, `{"type":"refresh","token":"x"}`, auth.CodeRequired)

	// A bad message before auth is only an error.
	c := mustDialAuth(t, wsURL(s, ""), nil)
	send(t, c, `{`)
	readType(t, c, "error")
	send(t, c, `{"type":"auth","token":"`+hs256(t, claims("bob", time.Hour, "*"))+`"}`)
	if m := readType(t, c, "subscribed"); len(m.Cities) != 0 {
		t.Fatalf("auth without cityId: %s", m.Raw)
	}
	send(t, c, `{"type":"ping"}`)
	readType(t, c, "pong")
}

// TestAuthTimeout checks that a connection that never authenticates is
// closed with auth_timeout.
func TestAuthTimeout(t *testing.T) {
	t.Parallel()
	cfg, _ := authConfig(t)
	cfg.AuthTimeout = 150 * time.Millisecond
	s := startServer(t, cfg)
	c := mustDialAuth(t, wsURL(s, ""), nil)
	if m := readType(t, c, "auth_error"); m.Code != auth.CodeTimeout {
		t.Fatalf("%s, want auth_timeout", m.Raw)
	}
	expectClose(t, c, StatusAuthFailed)
	waitCloses(t, s, CloseAuthTimeout, 1)
	// An authenticated connection is not affected: it outlives a
	// connection opened after it that times out.
	c = mustDialAuth(t, wsURL(s, "cities=lagos"), bearer(hs256(t, claims("ann", time.Hour, "lagos"))))
	readType(t, c, "subscribed")
	readType(t, c, "initial_data")
	late := mustDialAuth(t, wsURL(s, ""), nil)
	readType(t, late, "auth_error")
	expectClose(t, late, StatusAuthFailed)
	send(t, c, `{"type":"ping"}`)
	readType(t, c, "pong")
}

// TestForbiddenCity checks that cities outside the token are refused one by
// one and the rest of the connection is untouched.
func TestForbiddenCity(t *testing.T) {
	t.Parallel()
	cfg, _ := authConfig(t)
	s := startServer(t, cfg)
	tok := hs256(t, claims("carol", time.Hour, "fa-nairobi", "fa-accra"))
	p := dialProducer(t, s)

	// On the URL: the allowed city is subscribed, the other refused.
	c := mustDialAuth(t, wsURL(s, "cities=fa-nairobi,fa-lagos"), bearer(tok))
	if m := readType(t, c, "error"); m.Code != "forbidden" || m.City != "fa-lagos" {
		t.Fatalf("%s, want forbidden fa-lagos", m.Raw)
	}
	if m := readType(t, c, "subscribed"); len(m.Cities) != 1 || m.Cities[0].City != "fa-nairobi" {
		t.Fatalf("%s, want fa-nairobi only", m.Raw)
	}
	readType(t, c, "initial_data")
	// By message, again and again: the connection stays.
	for range 2 * 10 {
		send(t, c, `{"type":"subscribe","cities":["fa-lagos"]}`)
		if m := readType(t, c, "error"); m.Code != "forbidden" || m.City != "fa-lagos" {
			t.Fatalf("%s, want forbidden fa-lagos", m.Raw)
		}
		readType(t, c, "subscribed")
	}
	send(t, c, `{"type":"auth","token":"`+tok+`","cityId":"fa-lagos"}`)
	readType(t, c, "error")
	readType(t, c, "subscribed")
	send(t, c, `{"type":"subscribe","cities":["fa-accra"]}`)
	readType(t, c, "subscribed")
	readType(t, c, "initial_data")
	// Only allowed cities' data flows.
	p.Publish(t, dataLine("fa-lagos", "data_update", `{"x":1}`))
	seq := p.Publish(t, dataLine("fa-nairobi", "data_update", `{"x":2}`))
	if m := readType(t, c, "data_update"); m.City != "fa-nairobi" || m.Seq != seq {
		t.Fatalf("%s, want fa-nairobi seq %d", m.Raw, seq)
	}
	if st := s.Stats(); st.Forbidden != 22 || st.Closes[CloseAbuse.String()] != 0 {
		t.Fatalf("Forbidden %d, abuse closes %d; want 22, 0", st.Forbidden, st.Closes[CloseAbuse.String()])
	}
}

// TestKeyRotation adds and removes keys and reloads them, as SIGHUP does.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	cfg, keys := authConfig(t)
	s := startServer(t, cfg)
	sg := getSigners(t)
	c := claims("dave", time.Hour, "*")
	old := mint(t, jwt.SigningMethodRS256, sg.RSA, "rsa", c)
	next := mint(t, jwt.SigningMethodRS256, sg.RSA2, "rsa-2", c)
	ok := func(tok string, want bool) {
		t.Helper()
		cl, resp, err := dialAuth(t, wsURL(s, "cities=rot"), bearer(tok))
		if got := cl != nil; got != want {
			t.Fatalf("upgraded %v, want %v (%v %v)", got, want, resp, err)
		}
	}
	ok(old, true)
	ok(next, false)
	writePublicPEM(t, filepath.Join(keys, "rsa-2.pem"), sg.RSA2.Public())
	ok(next, false) // not before the reload
	if err := s.ReloadKeys(); err != nil {
		t.Fatal(err)
	}
	ok(next, true)
	ok(old, true)
	open := mustDialAuth(t, wsURL(s, "cities=rot"), bearer(old))
	readType(t, open, "subscribed")
	readType(t, open, "initial_data")
	if err := os.Remove(filepath.Join(keys, "rsa.pem")); err != nil {
		t.Fatal(err)
	}
	if err := s.ReloadKeys(); err != nil {
		t.Fatal(err)
	}
	ok(old, false)
	ok(next, true)
	// A connection authenticated by the removed key stays until its token
	// expires.
	send(t, open, `{"type":"ping"}`)
	readType(t, open, "pong")
	// A broken key file fails the reload and keeps the keys in force.
	if err := os.WriteFile(filepath.Join(keys, "bad.pem"), []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.ReloadKeys(); err == nil || !strings.Contains(err.Error(), "bad.pem") {
		t.Fatalf("reload with a broken key: %v, want an error naming bad.pem", err)
	}
	ok(next, true)
}

// TestReloadOddFiles checks that no file the operator names can hang a
// reload, which the signal handler waits for (a named pipe in the key
// directory left the node deaf to SIGTERM), or fill the memory: a pipe
// without a writer, a device, a file over its bound are refused at once,
// naming the file, and the keys in force stay. A secret from a pipe whose
// writer is done (<(vault read …)) still loads.
func TestReloadOddFiles(t *testing.T) {
	t.Parallel()
	cfg, keys := authConfig(t)
	cfg.AuthRevokedFile = filepath.Join(t.TempDir(), "revoked")
	write := func(f string, b []byte) {
		t.Helper()
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(cfg.AuthRevokedFile, []byte("sub nobody\n"))
	s := startServer(t, cfg)
	tok := hs256(t, claims("erin", time.Hour, "*"))
	reload := func(wantErr string) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- s.ReloadKeys() }()
		select {
		case err := <-done:
			if wantErr == "" && err != nil || wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)) {
				t.Fatalf("reload: %v, want an error mentioning %q", err, wantErr)
			}
		case <-time.After(readTimeout):
			t.Fatalf("the reload hangs (want an error mentioning %q)", wantErr)
		}
		if cl, resp, err := dialAuth(t, wsURL(s, "cities=odd"), bearer(tok)); cl == nil {
			t.Fatalf("the key in force was lost: %v %v", resp, err)
		}
	}
	// A named pipe without a writer in the key directory.
	fifo := filepath.Join(keys, "fifo.pem")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A reload still waiting in open gets a writer, and ends.
		if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			_ = f.Close()
		}
	})
	reload("fifo.pem")
	if err := os.Remove(fifo); err != nil {
		t.Fatal(err)
	}
	// The secret file a link to a device that never ends.
	secret := cfg.AuthHMACSecretFile
	saved, err := os.ReadFile(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(secret); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", secret); err != nil {
		t.Fatal(err)
	}
	reload("a device, not a regular file")
	if err := os.Remove(secret); err != nil {
		t.Fatal(err)
	}
	write(secret, saved)
	// A revocation list over its bound, refused before it is read.
	if err := os.Truncate(cfg.AuthRevokedFile, auth.MaxRevokedBytes+1); err != nil {
		t.Fatal(err)
	}
	reload("more than")
	write(cfg.AuthRevokedFile, []byte("sub nobody\n"))
	// The secret from a pipe whose writer is done, as bash's <(…) gives.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := w.Write(saved); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	if err := os.Remove(secret); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(fmt.Sprintf("/proc/self/fd/%d", r.Fd()), secret); err != nil {
		t.Fatal(err)
	}
	reload("")
}

// TestTokenExpiry checks the life of a connection whose token expires:
// token_expiring first, a refresh before or after exp keeps it, and without
// one it is closed at exp + grace.
func TestTokenExpiry(t *testing.T) {
	t.Parallel()
	cfg, _ := authConfig(t)
	cfg.TokenExpiryWarning = 2 * time.Hour // every token below is about to expire
	cfg.TokenGrace = 2 * time.Second
	s := startServer(t, cfg)
	p := dialProducer(t, s)
	join := func(tok string, cities string) *gorillaClient {
		t.Helper()
		c := mustDialAuth(t, wsURL(s, "cities="+cities), bearer(tok))
		m := readType(t, c, "subscribed")
		for range m.Cities {
			readType(t, c, "initial_data")
		}
		return c
	}
	expiring := func(c client, exp *jwt.NumericDate) {
		t.Helper()
		m := readType(t, c, "token_expiring")
		var v struct{ Exp, CloseAt int64 }
		if err := json.Unmarshal(m.Raw, &v); err != nil || v.Exp != exp.Unix() || v.CloseAt != v.Exp+2 {
			t.Fatalf("%s, want exp %d and closeAt 2 s later", m.Raw, exp.Unix())
		}
	}
	refresh := func(c client, tok string) {
		t.Helper()
		send(t, c, `{"type":"refresh","token":"`+tok+`"}`)
		readType(t, c, "refreshed")
	}

	// Refresh before expiry, with fewer cities: the dropped city ends.
	long := claims("erin", time.Hour, "te-a", "te-b")
	before := join(hs256(t, long), "te-a,te-b")
	expiring(before, long.ExpiresAt)
	narrower := claims("erin", 3*time.Hour, "te-a")
	send(t, before, `{"type":"refresh","token":"`+hs256(t, narrower)+`"}`)
	if m := readType(t, before, "error"); m.Code != "forbidden" || m.City != "te-b" {
		t.Fatalf("%s, want forbidden te-b", m.Raw)
	}
	readType(t, before, "refreshed")

	// Tokens that expire within a second.
	short := claims("erin", time.Second, "te-a")
	after := join(hs256(t, short), "te-a")
	never := join(hs256(t, short), "te-a")
	other := join(hs256(t, short), "te-a")
	stale := join(hs256(t, short), "te-a")
	for _, c := range []client{after, never, other, stale} {
		expiring(c, short.ExpiresAt)
	}
	// Past exp, inside the grace.
	waitFor(t, readTimeout, func() bool { return time.Now().After(short.ExpiresAt.Time) })
	refresh(after, hs256(t, claims("erin", 3*time.Hour, "te-a")))
	send(t, other, `{"type":"refresh","token":"`+hs256(t, claims("frank", time.Hour, "te-a"))+`"}`)
	if m := readType(t, other, "auth_error"); m.Code != auth.CodeSubMismatch {
		t.Fatalf("%s, want sub_mismatch", m.Raw)
	}
	expectClose(t, other, StatusAuthFailed)
	send(t, stale, `{"type":"refresh","token":"`+hs256(t, claims("erin", -time.Hour, "te-a"))+`"}`)
	if m := readType(t, stale, "auth_error"); m.Code != auth.CodeExpired {
		t.Fatalf("%s, want token_expired", m.Raw)
	}
	expectClose(t, stale, StatusAuthFailed)

	// Without a refresh: closed at exp + grace.
	if m := readType(t, never, "auth_error"); m.Code != auth.CodeExpired {
		t.Fatalf("%s, want token_expired", m.Raw)
	}
	expectClose(t, never, StatusAuthFailed)
	if time.Now().Before(short.ExpiresAt.Add(cfg.TokenGrace)) {
		t.Fatalf("closed before exp + grace")
	}
	waitCloses(t, s, CloseTokenExpired, 2) // never, and stale's expired refresh

	// The refreshed connections live on and get their cities only.
	p.Publish(t, dataLine("te-b", "data_update", `{"b":1}`))
	seqA := p.Publish(t, dataLine("te-a", "data_update", `{"a":1}`))
	for _, c := range []client{before, after} {
		if m := readType(t, c, "data_update"); m.City != "te-a" || m.Seq != seqA {
			t.Fatalf("%s, want te-a seq %d", m.Raw, seqA)
		}
	}
}

// TestFarFutureToken checks tokens that expire after 2262 (where Unix
// nanoseconds end), such as the usual "never expires" service token with
// exp 9999999999: at every carrier they authenticate and stay, get no
// token_expiring, report their exp in refreshed, and a producer holding
// one publishes.
func TestFarFutureToken(t *testing.T) {
	t.Parallel()
	cfg, _ := authConfig(t)
	cfg.Loops = 1 // one housekeeping pass sees every connection
	cfg.TokenExpiryWarning = 2 * time.Hour
	cfg.TokenGrace = 100 * time.Millisecond
	cfg.IngestAddr = "0.0.0.0:0" // producers need tokens (tests dial 127.0.0.1)
	s := startServer(t, cfg)

	far := []struct {
		payload string
		exp     int64 // as refreshed reports it
	}{
		{`{"sub":"svc","cities":["ff"],"publish":["ff"],"exp":9999999999}`, 9999999999},
		{`{"sub":"svc","cities":["ff"],"publish":["ff"],"exp":9223372037,"iat":1700000000}`, 9223372037}, // 2262-04-11, one second past int64 nanoseconds
		{`{"sub":"svc","cities":["ff"],"publish":["ff"],"exp":253402300799.5,"nbf":1700000000}`, 253402300799},
		{`{"sub":"svc","cities":["ff"],"publish":["ff"],"exp":1e300}`, auth.MaxClaimSeconds},
		{`{"sub":"svc","cities":["ff"],"publish":["ff"],"exp":18446744073709551617}`, auth.MaxClaimSeconds},
	}
	var conns []client
	for _, f := range far {
		tok := hs256Raw(t, f.payload)
		via := map[string]client{
			"query":    mustDialAuth(t, wsURL(s, "cities=ff&token="+url.QueryEscape(tok)), nil),
			"header":   mustDialAuth(t, wsURL(s, "cities=ff"), bearer(tok)),
			"protocol": mustDialAuth(t, wsURL(s, "cities=ff"), nil, "metrocast", "bearer."+tok),
			"message":  mustDialAuth(t, wsURL(s, ""), nil),
		}
		send(t, via["message"], `{"type":"auth","token":"`+tok+`","cityId":"ff"}`)
		for way, c := range via {
			readType(t, c, "subscribed")
			readType(t, c, "initial_data")
			send(t, c, `{"type":"refresh","token":"`+tok+`"}`)
			m := readType(t, c, "refreshed")
			var v struct{ Exp, CloseAt int64 }
			if err := json.Unmarshal(m.Raw, &v); err != nil || v.Exp != f.exp || v.CloseAt != f.exp {
				t.Fatalf("%s via %s: %s, want exp and closeAt %d (grace under a second)", f.payload, way, m.Raw, f.exp)
			}
			conns = append(conns, c)
		}
	}
	for _, f := range far {
		p := dialIngestLoopback(t, s)
		p.Write(t, `{"auth":"`+hs256Raw(t, f.payload)+`"}`)
		p.Publish(t, dataLine("ff", "data_update", `{"x":1}`))
	}
	for _, c := range conns {
		for range far { // one per producer
			readType(t, c, "data_update")
		}
	}
	// A token that expires now, on the same loop: once it is closed past
	// its grace, housekeeping has checked every far-future connection
	// after that moment too.
	short := mustDialAuth(t, wsURL(s, "cities=ff"), bearer(hs256(t, claims("soon", 0, "ff"))))
	readType(t, short, "subscribed")
	readType(t, short, "initial_data")
	m := read(t, short)
	if m.Type == "token_expiring" { // unless the first look was past the grace already
		m = read(t, short)
	}
	if m.Type != "auth_error" || m.Code != auth.CodeExpired {
		t.Fatalf("%s, want token_expired", m.Raw)
	}
	for _, c := range conns {
		send(t, c, `{"type":"ping"}`)
		readType(t, c, "pong") // not token_expiring, not auth_error
	}
	if n := s.Stats().Closes[CloseTokenExpired.String()]; n != 1 {
		t.Fatalf("token_expired closes %d, want 1", n)
	}
}
