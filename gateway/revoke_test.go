package gateway

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/golang-jwt/jwt/v5"

	"github.com/metrocast/metrocast/gateway/auth"
)

// TestRevocation: a reload with a revocation list closes the connections
// and producers holding a revoked token and refuses it from then on;
// others carry on. A broken list keeps the old one.
func TestRevocation(t *testing.T) {
	t.Parallel()
	cfg, _ := authConfig(t)
	list := filepath.Join(t.TempDir(), "revoked")
	if err := os.WriteFile(list, []byte("# none yet\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.AuthRevokedFile = list
	cfg.IngestAddr = "0.0.0.0:0" // producers need tokens
	s := startServer(t, cfg)
	revoke := func(text string) error {
		t.Helper()
		if err := os.WriteFile(list, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return s.ReloadKeys()
	}
	withID := func(sub, jti string) string {
		c := claims(sub, time.Hour, "*")
		c.ID = jti
		return hs256(t, c)
	}
	open := func(tok string) client {
		t.Helper()
		c := mustDialAuth(t, wsURL(s, "cities=rv"), bearer(tok))
		readType(t, c, "subscribed")
		readType(t, c, "initial_data")
		return c
	}
	alice, bob, bobOther := open(withID("alice", "a1")), open(withID("bob", "b1")), open(withID("bob", "b2"))
	p := dialIngestLoopback(t, s)
	p.Write(t, `{"auth":"`+hs256(t, publishClaims("alice", time.Hour, "*"))+`"}`)
	p.Publish(t, dataLine("rv", "data_update", `{"x":1}`))

	if err := revoke("sub alice\njti b1\n"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []client{alice, bob} {
		m := read(t, c)
		if m.Type == "data_update" { // published before the reload
			m = read(t, c)
		}
		if m.Type != "auth_error" || m.Code != auth.CodeRevoked {
			t.Fatalf("got %s, want auth_error %s", m.Raw, auth.CodeRevoked)
		}
		expectClose(t, c, ws.StatusCode(4001))
	}
	// bob's other token (another jti) is untouched.
	send(t, bobOther, `{"type":"ping"}`)
	if m := read(t, bobOther); m.Type == "data_update" {
		readType(t, bobOther, "pong")
	} else if m.Type != "pong" {
		t.Fatalf("got %s, want pong", m.Raw)
	}
	// The producer is cut off at its next line.
	p.Write(t, dataLine("rv", "data_update", `{"x":2}`))
	expectDropped(t, p, "revoked")
	// Refused from now on, at the upgrade and in a refresh.
	if c, resp, _ := dialAuth(t, wsURL(s, "cities=rv"), bearer(withID("alice", "a9"))); c != nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("a revoked subject's new token: %v %v, want 401", c, resp)
	}
	send(t, bobOther, `{"type":"refresh","token":"`+withID("bob", "b1")+`"}`)
	if m := readType(t, bobOther, "auth_error"); m.Code != auth.CodeRevoked {
		t.Fatalf("refresh with a revoked token: %s", m.Raw)
	}

	// A broken list fails the reload and keeps the one in force.
	if err := revoke("sub carol\nbogus\n"); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("broken list: %v, want an error naming line 2", err)
	}
	if c, _, _ := dialAuth(t, wsURL(s, "cities=rv"), bearer(withID("alice", "a10"))); c != nil {
		t.Fatal("alice admitted after a failed reload")
	}
	// Lifting the revocation lets alice back in.
	if err := revoke(""); err != nil {
		t.Fatal(err)
	}
	open(withID("alice", "a11"))
}

// TestAuthFileWatch: with auth_reload_interval a changed revocation file
// applies without a signal, and so does a new key file.
func TestAuthFileWatch(t *testing.T) {
	t.Parallel()
	cfg, keys := authConfig(t)
	list := filepath.Join(t.TempDir(), "revoked")
	if err := os.WriteFile(list, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.AuthRevokedFile = list
	cfg.AuthReloadInterval = time.Second
	s := startServer(t, cfg)
	c := mustDialAuth(t, wsURL(s, "cities=aw"), bearer(hs256(t, claims("eve", time.Hour, "*"))))
	readType(t, c, "subscribed")
	readType(t, c, "initial_data")
	if err := os.WriteFile(list, []byte("sub eve\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := c.Next(longTimeout)
	if err != nil {
		t.Fatalf("no auth_error after the file changed: %v", err)
	}
	if m, _ := parseMsg(b); m.Type != "auth_error" || m.Code != auth.CodeRevoked {
		t.Fatalf("got %s, want auth_error %s", b, auth.CodeRevoked)
	}

	sg := getSigners(t)
	tok := mint(t, jwt.SigningMethodRS256, sg.RSA2, "rsa-2", claims("frank", time.Hour, "*"))
	writePublicPEM(t, filepath.Join(keys, "rsa-2.pem"), sg.RSA2.Public())
	waitFor(t, longTimeout, func() bool {
		c, _, _ := dialAuth(t, wsURL(s, "cities=aw"), bearer(tok))
		if c != nil {
			c.Close()
		}
		return c != nil
	})
}

// TestRevokeAPI: POST /api/revoke on the admin port (behind the admin
// token) revokes a subject or a token at once: holders get auth_error and
// 4001 without waiting for a tick, producers are cut off at their next
// line, new tokens are refused until the expiry, and then admitted again.
func TestRevokeAPI(t *testing.T) {
	t.Parallel()
	cfg, _ := authConfig(t)
	file, admin := writeAdminToken(t)
	cfg.AdminTokenFile = file
	cfg.IngestAddr = "0.0.0.0:0" // producers need tokens
	s := startServer(t, cfg)
	withID := func(sub, jti string) string {
		c := claims(sub, time.Hour, "*")
		c.ID = jti
		return hs256(t, c)
	}
	open := func(tok string) client {
		t.Helper()
		c := mustDialAuth(t, wsURL(s, "cities=ra"), bearer(tok))
		readType(t, c, "subscribed")
		readType(t, c, "initial_data")
		return c
	}
	revoke := func(tok, body string) (int, string) {
		t.Helper()
		code, _, b := adminDo(t, s, http.MethodPost, "/api/revoke", tok, body)
		return code, string(b)
	}
	alice, bob, bobOther := open(withID("alice", "a1")), open(withID("bob", "b1")), open(withID("bob", "b2"))
	p := dialIngestLoopback(t, s)
	p.Write(t, `{"auth":"`+hs256(t, publishClaims("alice", time.Hour, "*"))+`"}`)
	p.Publish(t, dataLine("ra", "data_update", `{"x":1}`))
	readType(t, alice, "data_update")
	readType(t, bob, "data_update")
	readType(t, bobOther, "data_update")

	if code, body := revoke("", `{"sub":"alice","ttl":"1h"}`); code != http.StatusUnauthorized {
		t.Fatalf("without the admin token: %d %s", code, body)
	}
	if code, body := revoke(admin, `{"sub":"alice","ttl":"1h"}`); code != http.StatusOK || !strings.Contains(body, `"sub":"alice"`) {
		t.Fatalf("revoke sub alice: %d %s", code, body)
	}
	exp := time.Now().Add(time.Hour).Unix()
	if code, body := revoke(admin, fmt.Sprintf(`{"jti":"b1","exp":%d}`, exp)); code != http.StatusOK {
		t.Fatalf("revoke jti b1: %d %s", code, body)
	}
	for _, c := range []client{alice, bob} {
		if m := readType(t, c, "auth_error"); m.Code != auth.CodeRevoked {
			t.Fatalf("got %s, want auth_error %s", m.Raw, auth.CodeRevoked)
		}
		expectClose(t, c, ws.StatusCode(4001))
	}
	send(t, bobOther, `{"type":"ping"}`)
	readType(t, bobOther, "pong")
	p.Write(t, dataLine("ra", "data_update", `{"x":2}`))
	expectDropped(t, p, "revoked")
	if c, resp, _ := dialAuth(t, wsURL(s, "cities=ra"), bearer(withID("alice", "a2"))); c != nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a revoked subject's new token: %v %v, want 401", c, resp)
	}
	if st := s.Stats(); st.Revocations != 2 {
		t.Fatalf("Revocations %d, want 2", st.Revocations)
	}

	// Until the expiry only.
	if code, body := revoke(admin, `{"sub":"carol","ttl":"300ms"}`); code != http.StatusOK {
		t.Fatalf("revoke carol: %d %s", code, body)
	}
	if c, _, _ := dialAuth(t, wsURL(s, "cities=ra"), bearer(withID("carol", "c1"))); c != nil {
		t.Fatal("carol admitted while revoked")
	}
	waitFor(t, readTimeout, func() bool {
		c, _, _ := dialAuth(t, wsURL(s, "cities=ra"), bearer(withID("carol", "c2")))
		if c != nil {
			c.Close()
		}
		return c != nil
	})

	for _, bad := range []struct{ body, want string }{
		{`{"sub":"x"}`, "one of exp"},
		{`{"ttl":"1h"}`, "one of sub and jti"},
		{`{"sub":"x","jti":"y","ttl":"1h"}`, "one of sub and jti"},
		{`{"sub":"","ttl":"1h"}`, "sub must be"},
		{`{"sub":"x","ttl":"1h","exp":1}`, "one of exp"},
		{`{"sub":"x","ttl":"-1h"}`, "ttl must be"},
		{`{"sub":"x","ttl":"9000h"}`, "ttl must be"},
		{`{"sub":"x","exp":1}`, "exp must be"},
		{`{"sub":"x","exp":"9999999999"}`, "exp"},
		{`{"sub":"x","ttl":"1h","who":"me"}`, "unknown field"},
		{`{"sub":"x","ttl":"1h"}{}`, "one JSON object"},
		{`not json`, "invalid revocation"},
	} {
		if code, body := revoke(admin, bad.body); code != http.StatusBadRequest || !strings.Contains(body, bad.want) {
			t.Errorf("%s: %d %q, want 400 about %q", bad.body, code, body, bad.want)
		}
	}
}

// TestRevokeAPIInsecure: an insecure node has no token to revoke.
func TestRevokeAPIInsecure(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	if code, _, body := adminDo(t, s, http.MethodPost, "/api/revoke", "", `{"sub":"x","ttl":"1h"}`); code != http.StatusConflict {
		t.Fatalf("%d %s, want 409", code, body)
	}
}
