package gateway

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
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
		"HS256":       mint(t, jwt.SigningMethodHS256, sg.hmac, "", c),
		"HS512":       mint(t, jwt.SigningMethodHS512, sg.hmac, "", c),
		"RS256":       mint(t, jwt.SigningMethodRS256, sg.rsa, "rsa", c),
		"RS256 nokid": mint(t, jwt.SigningMethodRS256, sg.rsa, "", c),
		"ES256":       mint(t, jwt.SigningMethodES256, sg.ec, "ec", c),
		"EdDSA":       mint(t, jwt.SigningMethodEdDSA, sg.ed, "ed", c),
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
		if p := cl.c.Subprotocol(); p != "metrocast" {
			t.Fatalf("%s: subprotocol %q, want metrocast", name, p)
		}
		readType(t, cl, "subscribed")
		// The original dashboards' first message.
		cl = mustDialAuth(t, wsURL(s, ""), nil)
		send(t, cl, `{"type":"auth","token":"`+tok+`","cityId":"nairobi"}`)
		if m := readType(t, cl, "subscribed"); len(m.Cities) != 1 || m.Cities[0].City != "nairobi" {
			t.Fatalf("%s: %s", name, m.raw)
		}
		readType(t, cl, "initial_data")
	}
	if st := s.Stats(); st.AuthFailures != 0 {
		t.Fatalf("AuthFailures = %d", st.AuthFailures)
	}
}

// badTokens returns tokens that must never authenticate on a server with
// authConfig's keys, by the auth_error code they earn.
func badTokens(t testing.TB) map[string]struct{ tok, code string } {
	sg := getSigners(t)
	good := claims("mallory", time.Hour, "nairobi")
	expired := claims("mallory", -time.Hour, "nairobi")
	notYet := claims("mallory", 2*time.Hour, "nairobi")
	notYet.NotBefore = jwt.NewNumericDate(time.Now().Add(time.Hour))
	future := claims("mallory", 2*time.Hour, "nairobi")
	future.IssuedAt = jwt.NewNumericDate(time.Now().Add(time.Hour))
	noExp := claims("mallory", time.Hour, "nairobi")
	noExp.ExpiresAt = nil
	noSub := claims("", time.Hour, "nairobi")
	noCities := claims("mallory", time.Hour)
	badCity := claims("mallory", time.Hour, "Nairobi!")

	rsaPub, err := x509.MarshalPKIXPublicKey(sg.rsa.Public())
	if err != nil {
		t.Fatal(err)
	}
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaPub})

	hs := mint(t, jwt.SigningMethodHS256, sg.hmac, "", good)
	parts := strings.Split(hs, ".")
	// Claims swapped for others under the same signature.
	forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"mallory","exp":9999999999,"cities":["*"]}`)) + "." + parts[2]
	// Well signed, with time claims of the wrong type or out of range.
	now := time.Now().Unix()
	timed := func(times string) string {
		return hs256Raw(t, `{"sub":"mallory","cities":["nairobi"],`+times+`}`)
	}
	exp := fmt.Sprintf(`"exp":%d`, now+3600)

	return map[string]struct{ tok, code string }{
		"expired":          {hs256(t, expired), authExpired},
		"not yet valid":    {hs256(t, notYet), authNotYetValid},
		"issued in future": {hs256(t, future), authNotYetValid},
		"no exp":           {hs256(t, noExp), authInvalidClaims},
		"no sub":           {hs256(t, noSub), authInvalidClaims},
		"no cities":        {hs256(t, noCities), authInvalidClaims},
		"bad city":         {hs256(t, badCity), authInvalidClaims},
		"wrong secret":     {mint(t, jwt.SigningMethodHS256, sg.hmac2, "", good), authInvalidToken},
		"wrong rsa key":    {mint(t, jwt.SigningMethodRS256, sg.rsa2, "rsa", good), authInvalidToken},
		"unknown kid":      {mint(t, jwt.SigningMethodRS256, sg.rsa, "nope", good), authInvalidToken},
		"alg none":         {mint(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", good), authInvalidToken},
		"alg none kid":     {mint(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "rsa", good), authInvalidToken},
		// HS-vs-RS confusion: HMAC with the RSA public key as the secret.
		"hs with rsa pem":     {mint(t, jwt.SigningMethodHS256, rsaPEM, "rsa", good), authInvalidToken},
		"hs with rsa pem nok": {mint(t, jwt.SigningMethodHS256, rsaPEM, "", good), authInvalidToken},
		"hs with rsa der":     {mint(t, jwt.SigningMethodHS256, rsaPub, "rsa", good), authInvalidToken},
		// A key used with another algorithm than its own.
		"rs512 for ec kid": {mint(t, jwt.SigningMethodRS512, sg.rsa, "ec", good), authInvalidToken},
		"ps256":            {mint(t, jwt.SigningMethodPS256, sg.rsa, "rsa", good), authInvalidToken},
		"forged claims":    {forged, authInvalidToken},
		"garbage":          {"not.a.jwt", authInvalidToken},
		// RFC 7519: a NumericDate is a JSON number, nothing else.
		"exp string":         {timed(`"exp":"9999999999"`), authInvalidClaims},
		"exp string now":     {timed(fmt.Sprintf(`"exp":"%d"`, now+3600)), authInvalidClaims},
		"exp bool":           {timed(`"exp":true`), authInvalidClaims},
		"exp null":           {timed(`"exp":null`), authInvalidClaims},
		"exp object":         {timed(`"exp":{"n":9999999999}`), authInvalidClaims},
		"exp array":          {timed(`"exp":[9999999999]`), authInvalidClaims},
		"nbf string":         {timed(exp + `,"nbf":"0"`), authInvalidClaims},
		"nbf bool":           {timed(exp + `,"nbf":false`), authInvalidClaims},
		"iat string":         {timed(exp + fmt.Sprintf(`,"iat":"%d"`, now)), authInvalidClaims},
		"iat object":         {timed(exp + `,"iat":{}`), authInvalidClaims},
		"nbf string expired": {timed(fmt.Sprintf(`"exp":%d,"nbf":"0"`, now-3600)), authInvalidClaims},
		// Far from now, either way: no wrap-around into the other side.
		"exp -1e300":     {timed(`"exp":-1e300`), authExpired},
		"exp 0":          {timed(`"exp":0`), authExpired},
		"exp min int64":  {timed(`"exp":-9223372036854775808`), authExpired},
		"nbf far future": {timed(`"exp":99999999999,"nbf":9999999999`), authNotYetValid},
		"nbf 1e300":      {timed(`"exp":1e300,"nbf":1e300`), authNotYetValid},
		"iat 2^63":       {timed(`"exp":1e400,"iat":9223372036854775808`), authNotYetValid},
		"iat far future": {timed(`"exp":99999999999,"iat":9999999999`), authNotYetValid},
		"too long":       {hs + strings.Repeat("A", maxTokenBytes), authInvalidToken},
		// Other claims of the wrong type: invalid_claims once the
		// signature is good, invalid_token when it is not.
		"sub number":           {hs256Raw(t, `{"sub":5,`+exp+`,"cities":["nairobi"]}`), authInvalidClaims},
		"cities string":        {hs256Raw(t, `{"sub":"mallory",`+exp+`,"cities":"nairobi"}`), authInvalidClaims},
		"cities numbers":       {hs256Raw(t, `{"sub":"mallory",`+exp+`,"cities":[1]}`), authInvalidClaims},
		"cities nested":        {hs256Raw(t, `{"sub":"mallory",`+exp+`,"cities":[["nairobi"]]}`), authInvalidClaims},
		"publish object":       {hs256Raw(t, `{"sub":"mallory",`+exp+`,"cities":["nairobi"],"publish":{}}`), authInvalidClaims},
		"jti number":           {hs256Raw(t, `{"sub":"mallory",`+exp+`,"cities":["nairobi"],"jti":7}`), authInvalidClaims},
		"aud object":           {hs256Raw(t, `{"sub":"mallory",`+exp+`,"cities":["nairobi"],"aud":{"x":1}}`), authInvalidClaims},
		"forged cities string": {parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"mallory",`+exp+`,"cities":"*"}`)) + "." + parts[2], authInvalidToken},
	}
}

// TestAuthRejectsAtUpgrade checks that a bad token in the upgrade request is
// answered 401 with its code, and never upgrades.
func TestAuthRejectsAtUpgrade(t *testing.T) {
	t.Parallel()
	cfg, _ := authConfig(t)
	cfg.MaxHeaderBytes = 4 * maxTokenBytes // room for the token that is too long
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
				u += "&token=" + url.QueryEscape(bt.tok)
			case "header":
				h = bearer(bt.tok)
			case "protocol":
				proto = []string{"metrocast", "bearer." + bt.tok}
			}
			c, resp, err := dialAuth(t, u, h, proto...)
			if c != nil {
				t.Fatalf("%s via %s: upgraded", name, way)
			}
			if resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("%s via %s: %v, want 401", name, way, err)
			}
			if !strings.HasPrefix(err.Error(), bt.code+":") || resp.Header.Get("WWW-Authenticate") == "" {
				t.Fatalf("%s via %s: body %q, headers %v; want code %s", name, way, err, resp.Header, bt.code)
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
			t.Fatalf("%s: %s, want code %s", first, m.raw, code)
		}
		expectClose(t, c, StatusAuthFailed)
	}
	for name, bt := range badTokens(t) {
		t.Run(name, func(t *testing.T) {
			refuse(t, `{"type":"auth","token":"`+bt.tok+`","cityId":"nairobi"}`, bt.code)
		})
	}
	refuse(t, `{"type":"subscribe","cities":["nairobi"]}`, authRequired)
	refuse(t, `{"type":"ping"}`, authRequired)
	refuse(t, `{"type":"auth","cityId":"nairobi"}`, authRequired)
	refuse(t, `{"type":"refresh","token":"x"}`, authRequired)

	// A bad message before auth is only an error.
	c := mustDialAuth(t, wsURL(s, ""), nil)
	send(t, c, `{`)
	readType(t, c, "error")
	send(t, c, `{"type":"auth","token":"`+hs256(t, claims("bob", time.Hour, "*"))+`"}`)
	if m := readType(t, c, "subscribed"); len(m.Cities) != 0 {
		t.Fatalf("auth without cityId: %s", m.raw)
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
	if m := readType(t, c, "auth_error"); m.Code != authTimeout {
		t.Fatalf("%s, want auth_timeout", m.raw)
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
		t.Fatalf("%s, want forbidden fa-lagos", m.raw)
	}
	if m := readType(t, c, "subscribed"); len(m.Cities) != 1 || m.Cities[0].City != "fa-nairobi" {
		t.Fatalf("%s, want fa-nairobi only", m.raw)
	}
	readType(t, c, "initial_data")
	// By message, again and again: the connection stays.
	for range 2 * 10 {
		send(t, c, `{"type":"subscribe","cities":["fa-lagos"]}`)
		if m := readType(t, c, "error"); m.Code != "forbidden" || m.City != "fa-lagos" {
			t.Fatalf("%s, want forbidden fa-lagos", m.raw)
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
	p.publish(t, dataLine("fa-lagos", "data_update", `{"x":1}`))
	seq := p.publish(t, dataLine("fa-nairobi", "data_update", `{"x":2}`))
	if m := readType(t, c, "data_update"); m.City != "fa-nairobi" || m.Seq != seq {
		t.Fatalf("%s, want fa-nairobi seq %d", m.raw, seq)
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
	old := mint(t, jwt.SigningMethodRS256, sg.rsa, "rsa", c)
	next := mint(t, jwt.SigningMethodRS256, sg.rsa2, "rsa-2", c)
	ok := func(tok string, want bool) {
		t.Helper()
		cl, resp, err := dialAuth(t, wsURL(s, "cities=rot"), bearer(tok))
		if got := cl != nil; got != want {
			t.Fatalf("upgraded %v, want %v (%v %v)", got, want, resp, err)
		}
	}
	ok(old, true)
	ok(next, false)
	writePublicPEM(t, filepath.Join(keys, "rsa-2.pem"), sg.rsa2.Public())
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
	if err := os.Truncate(cfg.AuthRevokedFile, maxRevokedBytes+1); err != nil {
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
		if err := json.Unmarshal(m.raw, &v); err != nil || v.Exp != exp.Unix() || v.CloseAt != v.Exp+2 {
			t.Fatalf("%s, want exp %d and closeAt 2 s later", m.raw, exp.Unix())
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
		t.Fatalf("%s, want forbidden te-b", m.raw)
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
	if m := readType(t, other, "auth_error"); m.Code != authSubMismatch {
		t.Fatalf("%s, want sub_mismatch", m.raw)
	}
	expectClose(t, other, StatusAuthFailed)
	send(t, stale, `{"type":"refresh","token":"`+hs256(t, claims("erin", -time.Hour, "te-a"))+`"}`)
	if m := readType(t, stale, "auth_error"); m.Code != authExpired {
		t.Fatalf("%s, want token_expired", m.raw)
	}
	expectClose(t, stale, StatusAuthFailed)

	// Without a refresh: closed at exp + grace.
	if m := readType(t, never, "auth_error"); m.Code != authExpired {
		t.Fatalf("%s, want token_expired", m.raw)
	}
	expectClose(t, never, StatusAuthFailed)
	if time.Now().Before(short.ExpiresAt.Add(cfg.TokenGrace)) {
		t.Fatalf("closed before exp + grace")
	}
	waitCloses(t, s, CloseTokenExpired, 2) // never, and stale's expired refresh

	// The refreshed connections live on and get their cities only.
	p.publish(t, dataLine("te-b", "data_update", `{"b":1}`))
	seqA := p.publish(t, dataLine("te-a", "data_update", `{"a":1}`))
	for _, c := range []client{before, after} {
		if m := readType(t, c, "data_update"); m.City != "te-a" || m.Seq != seqA {
			t.Fatalf("%s, want te-a seq %d", m.raw, seqA)
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
		{`{"sub":"svc","cities":["ff"],"publish":["ff"],"exp":1e300}`, maxClaimSeconds},
		{`{"sub":"svc","cities":["ff"],"publish":["ff"],"exp":18446744073709551617}`, maxClaimSeconds},
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
			if err := json.Unmarshal(m.raw, &v); err != nil || v.Exp != f.exp || v.CloseAt != f.exp {
				t.Fatalf("%s via %s: %s, want exp and closeAt %d (grace under a second)", f.payload, way, m.raw, f.exp)
			}
			conns = append(conns, c)
		}
	}
	for _, f := range far {
		p := dialIngestLoopback(t, s)
		p.write(t, `{"auth":"`+hs256Raw(t, f.payload)+`"}`)
		p.publish(t, dataLine("ff", "data_update", `{"x":1}`))
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
	if m.Type != "auth_error" || m.Code != authExpired {
		t.Fatalf("%s, want token_expired", m.raw)
	}
	for _, c := range conns {
		send(t, c, `{"type":"ping"}`)
		readType(t, c, "pong") // not token_expiring, not auth_error
	}
	if n := s.Stats().Closes[CloseTokenExpired.String()]; n != 1 {
		t.Fatalf("token_expired closes %d, want 1", n)
	}
}

// FuzzClientToken feeds the token verifier random strings and good tokens
// tampered in one byte of one decoded part, re-encoded so that they stay
// well-formed: nothing but the good tokens themselves may authenticate.
func FuzzClientToken(f *testing.F) {
	cfg, _ := authConfig(f)
	cfg = cfg.WithDefaults()
	a, err := newAuthenticator(&cfg)
	if err != nil {
		f.Fatal(err)
	}
	sg := getSigners(f)
	// Fixed times: the fuzzing workers run this function again, and an
	// HMAC token minted in another second by the coordinator (its seeds)
	// would be a good token that is not in the worker's list.
	c := claims("fuzz", 0, "*")
	c.IssuedAt = jwt.NewNumericDate(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC))
	c.ExpiresAt = jwt.NewNumericDate(time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC))
	good := []string{
		mint(f, jwt.SigningMethodHS256, sg.hmac, "", c),
		mint(f, jwt.SigningMethodHS384, sg.hmac, "", c),
		mint(f, jwt.SigningMethodRS256, sg.rsa, "rsa", c),
		mint(f, jwt.SigningMethodES256, sg.ec, "ec", c),
		mint(f, jwt.SigningMethodEdDSA, sg.ed, "ed", c),
	}
	isGood := map[string]bool{}
	for i, tok := range good {
		if _, err := a.clientGrant(tok); err != nil {
			f.Fatalf("good token %d refused: %s", i, err)
		}
		isGood[tok] = true
		f.Add([]byte(tok), uint8(i), uint8(i), uint16(i*13), uint8(1<<i))
	}
	for _, bt := range badTokens(f) {
		f.Add([]byte(bt.tok), uint8(0), uint8(1), uint16(7), uint8(0x20))
	}
	f.Fuzz(func(t *testing.T, raw []byte, which, part uint8, pos uint16, mask uint8) {
		check := func(tok string) {
			if g, err := a.clientGrant(tok); err == nil && !isGood[tok] {
				t.Fatalf("token %q authenticated as %+v", tok, g)
			}
		}
		check(string(raw))
		if mask == 0 {
			return
		}
		parts := strings.Split(good[int(which)%len(good)], ".")
		i := int(part) % 3
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil || len(b) == 0 {
			t.Fatalf("cannot decode part %d: %v", i, err)
		}
		b[int(pos)%len(b)] ^= mask
		parts[i] = base64.RawURLEncoding.EncodeToString(b)
		check(strings.Join(parts, "."))
	})
}

// FuzzTokenTimeClaims signs claim sets whose exp, nbf and iat are fuzzed
// JSON values (absent when empty) and checks the verdict against RFC 7519
// read directly: a token is accepted only if each time claim present is a
// JSON number, exp is present and not past, nbf and iat not in the
// future; a time claim of another type is invalid_claims; and an
// accepted token's grant expires when its exp says, whatever its size.
func FuzzTokenTimeClaims(f *testing.F) {
	cfg, _ := authConfig(f)
	cfg = cfg.WithDefaults()
	a, err := newAuthenticator(&cfg)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Now().Unix()
	for _, seed := range [][3]string{
		{fmt.Sprint(now + 3600), "", fmt.Sprint(now)},
		{"9999999999", "", ""},
		{`"9999999999"`, "", ""},
		{fmt.Sprint(now + 3600), `"0"`, ""},
		{fmt.Sprint(now + 3600), "", `"1"`},
		{"true", "false", "null"},
		{"{}", "[]", `{"a":1}`},
		{"1e300", "-1e300", "1e400"},
		{"9223372036854775807", "9223372036854775808", "-9223372036854775809"},
		{"18446744073709551616", "0", "-0"},
		{"9223372037.5", "1.5e9", "0.0001"},
		{"", "", ""},
		{"1e", "+1", "0x10"},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	f.Fuzz(func(t *testing.T, exp, nbf, iat string) {
		payload := `{"sub":"fuzz","cities":["*"]`
		for _, c := range [...][2]string{{"exp", exp}, {"nbf", nbf}, {"iat", iat}} {
			if c[1] != "" {
				payload += `,"` + c[0] + `":` + c[1]
			}
		}
		payload += "}"
		tok := hs256Raw(t, payload)
		g, err := a.clientGrant(tok)

		// The verdict from the payload itself.
		var raw map[string]any
		dec := json.NewDecoder(strings.NewReader(payload))
		dec.UseNumber()
		if dec.Decode(&raw) != nil || dec.More() {
			if err == nil {
				t.Fatalf("%s: not JSON, yet accepted", payload)
			}
			return
		}
		leeway := cfg.AuthLeeway.Seconds()
		clock := float64(time.Now().Unix())
		valid, badType := true, false
		secs := map[string]float64{}
		for _, name := range []string{"exp", "nbf", "iat"} {
			v, ok := raw[name]
			if !ok {
				continue
			}
			n, isNum := v.(json.Number)
			if !isNum {
				badType = true
				continue
			}
			fl, _ := strconv.ParseFloat(string(n), 64) // ±Inf past the float64 range
			secs[name] = fl
		}
		if _, ok := secs["exp"]; !ok {
			valid = false
		}
		// One second of slack either side of each bound: the verifier
		// read the clock at another moment.
		if e, ok := secs["exp"]; ok && e < clock-leeway-1 {
			valid = false
		}
		if nb, ok := secs["nbf"]; ok && nb > clock+leeway+1 {
			valid = false
		}
		if ia, ok := secs["iat"]; ok && ia > clock+leeway+1 {
			valid = false
		}
		borderline := func(name string, bound float64) bool {
			v, ok := secs[name]
			return ok && v > bound-2 && v < bound+2
		}
		if borderline("exp", clock-leeway) || borderline("nbf", clock+leeway) || borderline("iat", clock+leeway) {
			return // the verdict depends on the instant
		}
		switch {
		case badType:
			var ae *authError
			if !errors.As(err, &ae) || ae.code != authInvalidClaims {
				t.Fatalf("%s: %v, want invalid_claims", payload, err)
			}
		case valid && err != nil:
			t.Fatalf("%s: refused: %v", payload, err)
		case !valid && err == nil:
			t.Fatalf("%s: accepted", payload)
		case valid:
			want := int64(max(-maxClaimSeconds, min(math.Floor(secs["exp"]), maxClaimSeconds)))
			if e, closeAt := g.deadlines(&cfg); e != want || closeAt != want+int64(cfg.TokenGrace/time.Second) {
				t.Fatalf("%s: deadlines %d %d, want exp %d", payload, e, closeAt, want)
			}
			if !g.expPlus(cfg.TokenGrace).After(time.Now()) {
				t.Fatalf("%s: accepted, yet past its grace", payload)
			}
		}
	})
}

// TestJWKS loads keys from a JWK set, as an identity provider publishes it,
// and checks what is taken, skipped and refused.
func TestJWKS(t *testing.T) {
	t.Parallel()
	sg := getSigners(t)
	dir := t.TempDir()
	jwk := func(k any, kid, alg, use string) map[string]any {
		b, err := jose.JSONWebKey{Key: k, KeyID: kid, Algorithm: alg, Use: use}.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	write := func(name string, keys ...any) string {
		b, err := json.Marshal(map[string]any{"keys": keys})
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("idp.json",
		jwk(sg.rsa.Public(), "r1", "RS256", "sig"),
		jwk(sg.ec.Public(), "e1", "", ""),
		jwk(sg.ed.Public(), "d1", "EdDSA", ""),
		jwk(sg.hmac, "h1", "HS256", ""),
		jwk(sg.rsa2.Public(), "r2", "PS256", ""),        // not verified here: skipped
		jwk(sg.rsa2.Public(), "enc", "RSA-OAEP", "enc"), // not for signatures: skipped
		map[string]any{"kty": "XYZ", "kid": "future"},   // unknown type: skipped
	)
	cfg := Config{AuthKeys: []string{good}}.WithDefaults()
	a, err := newAuthenticator(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := a.keys.Load().kids(); !slices.Equal(got, []string{"r1", "e1", "d1", "h1"}) {
		t.Fatalf("kids %q", got)
	}
	c := claims("jw", time.Hour, "*")
	for _, tok := range []string{
		mint(t, jwt.SigningMethodRS256, sg.rsa, "r1", c),
		mint(t, jwt.SigningMethodES256, sg.ec, "e1", c),
		mint(t, jwt.SigningMethodEdDSA, sg.ed, "d1", c),
		mint(t, jwt.SigningMethodHS256, sg.hmac, "h1", c),
	} {
		if _, err := a.clientGrant(tok); err != nil {
			t.Fatalf("%s: %v", tok, err)
		}
	}
	for _, tok := range []string{
		mint(t, jwt.SigningMethodRS512, sg.rsa, "r1", c), // r1 is pinned to RS256
		mint(t, jwt.SigningMethodHS384, sg.hmac, "h1", c),
		mint(t, jwt.SigningMethodPS256, sg.rsa2, "r2", c),
	} {
		if _, err := a.clientGrant(tok); err == nil {
			t.Fatalf("%s authenticated", tok)
		}
	}

	bad := func(want string, keys ...any) {
		t.Helper()
		cfg := Config{AuthKeys: []string{write("bad.json", keys...)}}.WithDefaults()
		if _, err := newAuthenticator(&cfg); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%v, want an error about %q", err, want)
		}
	}
	bad("private key material", jwk(sg.ec, "priv", "", ""))
	bad("no kid", jwk(sg.ec.Public(), "", "", ""))
	bad("used twice", jwk(sg.ec.Public(), "x", "", ""), jwk(sg.ed.Public(), "x", "", ""))
	bad("HMAC secret of 5 bytes", jwk([]byte("short"), "s", "", ""))
	bad("no key configured", jwk(sg.rsa2.Public(), "only-ps", "PS256", ""))
}

// TestPEMKeys checks what a PEM key file may hold.
func TestPEMKeys(t *testing.T) {
	t.Parallel()
	sg := getSigners(t)
	pemOf := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	pkix := func(k any) []byte {
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pemOf("PUBLIC KEY", der)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, sg.ec.Public(), sg.ec)
	if err != nil {
		t.Fatal(err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ecPriv, err := x509.MarshalECPrivateKey(sg.ec)
	if err != nil {
		t.Fatal(err)
	}
	f := func(content []byte, want string) {
		t.Helper()
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "k1.pem"), content, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := Config{AuthKeys: []string{dir}}.WithDefaults()
		a, err := newAuthenticator(&cfg)
		switch {
		case want == "" && err != nil:
			t.Fatalf("%s", err)
		case want == "" && !slices.Equal(a.keys.Load().kids(), []string{"k1"}):
			t.Fatalf("kids %q, want k1", a.keys.Load().kids())
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Fatalf("%v, want an error about %q", err, want)
		}
	}
	f(pkix(sg.rsa.Public()), "")
	f(pemOf("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&sg.rsa.PublicKey)), "")
	f(pkix(sg.ed.Public()), "")
	f(pemOf("CERTIFICATE", cert), "")
	f(pkix(small.Public()), "RSA key of 1024 bits")
	f(pemOf("EC PRIVATE KEY", ecPriv), "public keys only")
	f(append(pkix(sg.rsa.Public()), pkix(sg.ed.Public())...), "more than one PEM block")
	f([]byte("not pem"), "no PEM block")
}

// TestAuthCodeOf checks the classification the upgrade and the auth
// message use: an *authError however wrapped gives its code, and any other
// error (a key source's own, say) refuses the token instead of panicking
// the loop, as a type assertion did.
func TestAuthCodeOf(t *testing.T) {
	f := func(err error, want string) {
		t.Helper()
		if got := authCodeOf(err); got != want {
			t.Fatalf("authCodeOf(%v) = %s, want %s", err, got, want)
		}
	}
	f(authErrorf(authRevoked, "revoked"), authRevoked)
	f(fmt.Errorf("jwks: %w", authErrorf(authExpired, "expired")), authExpired)
	f(errors.Join(errors.New("other"), authErrorf(authInvalidClaims, "claims")), authInvalidClaims)
	f(errors.New("a key source's own error"), authInvalidToken)
}

// TestTokenCache: a loop verifies a client token once and then finds its
// grant in its cache; a cached token that has expired since, or that new
// revocations cover, is verified again and refused; the cache stays
// bounded.
func TestTokenCache(t *testing.T) {
	cfg, _ := authConfig(t)
	cfg = cfg.WithDefaults()
	a, err := newAuthenticator(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	var tc tokenCache
	tok := hs256(t, claims("cached", time.Hour, "tc"))
	g1, err := tc.grant(a, tok)
	if err != nil {
		t.Fatal(err)
	}
	if g2, err := tc.grant(a, tok); err != nil || g2 != g1 {
		t.Fatalf("second look: %p %v, want the cached grant %p", g2, err, g1)
	}
	// Past its exp plus the leeway, as the cache sees it: verified again
	// (still good here: a new grant).
	tc.grants[tok] = cachedGrant{g1, time.Now().Add(-time.Second)}
	if g3, err := tc.grant(a, tok); err != nil || g3 == g1 {
		t.Fatalf("after the cached expiry: %p %v, want a new grant", g3, err)
	}
	// A token the parser refuses is not cached.
	old := hs256(t, claims("old", -time.Hour, "tc"))
	for range 2 {
		if _, err := tc.grant(a, old); authCodeOf(err) != authExpired {
			t.Fatalf("expired token: %v, want %s", err, authExpired)
		}
	}
	if _, ok := tc.grants[old]; ok {
		t.Fatal("an expired token was cached")
	}
	// Revoking the subject makes new keys: the cache starts over.
	if err := a.revoke(revocation{kind: "sub", id: "cached", until: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.grant(a, tok); authCodeOf(err) != authRevoked {
		t.Fatalf("revoked token: %v, want %s", err, authRevoked)
	}
	for i := range tokenCacheSize + 10 {
		if _, err := tc.grant(a, hs256(t, claims("u"+strconv.Itoa(i), time.Hour, "tc"))); err != nil {
			t.Fatal(err)
		}
		if len(tc.grants) > tokenCacheSize {
			t.Fatalf("%d tokens cached, over %d", len(tc.grants), tokenCacheSize)
		}
	}
}
