package gateway

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/golang-jwt/jwt/v5"
)

func TestParseRevocations(t *testing.T) {
	r, err := parseRevocations([]byte("# leaked\r\nsub alice\n\njti 3f2b 9c\nsub bob\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		sub, jti string
		want     bool
	}{
		{"alice", "", true}, {"bob", "x", true}, {"carol", "3f2b 9c", true},
		{"carol", "3f2b", false}, {"carol", "", false}, {"", "", false},
	} {
		if got := r.revokes(c.sub, c.jti); got != c.want {
			t.Errorf("revokes(%q, %q) = %v, want %v", c.sub, c.jti, got, c.want)
		}
	}
	if r, err := parseRevocations(nil); err != nil || !r.empty() {
		t.Fatalf("empty file: %v %v", r, err)
	}
	for _, bad := range []string{
		"alice",
		"sub",
		"sub ",
		"SUB alice",
		" sub alice",
		"sub\talice",
		"kid k1",
		"sub " + strings.Repeat("x", maxRevokedIDLen+1),
		"sub ok\n\xff",
		strings.Repeat("sub x\n", maxRevokedBytes/6+1),
		strings.Repeat("#", maxRevokedBytes+1),
	} {
		if _, err := parseRevocations([]byte(bad)); !errors.Is(err, errRevocations) {
			name := bad
			if len(name) > 40 {
				name = name[:40] + "…"
			}
			t.Errorf("parseRevocations(%q): %v, want errRevocations", name, err)
		}
	}
	var many strings.Builder
	for i := range maxRevokedEntries + 1 {
		fmt.Fprintf(&many, "jti %d\n", i)
	}
	if _, err := parseRevocations([]byte(many.String())); err == nil || !strings.Contains(err.Error(), "entries") {
		t.Fatalf("%d entries: %v", maxRevokedEntries+1, err)
	}
}

// FuzzParseRevocations: whatever parses revokes exactly its lines' values.
func FuzzParseRevocations(f *testing.F) {
	for _, s := range []string{"sub alice\njti x\n", "# c\n\nsub a b\r\n", "sub", "jti \n", "\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRevocations(b)
		if err != nil {
			if !errors.Is(err, errRevocations) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		n := 0
		for _, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSuffix(line, "\r")
			if strings.TrimSpace(line) == "" || line[0] == '#' {
				continue
			}
			n++
			kind, id, _ := strings.Cut(line, " ")
			if kind == "sub" && !r.revokes(id, "") || kind == "jti" && !r.revokes("\x00none", id) {
				t.Fatalf("line %q parsed but not revoked", line)
			}
		}
		if len(r.subs)+len(r.jtis) > n {
			t.Fatalf("%d entries from %d lines", len(r.subs)+len(r.jtis), n)
		}
	})
}

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
	p.write(t, `{"auth":"`+hs256(t, publishClaims("alice", time.Hour, "*"))+`"}`)
	p.publish(t, dataLine("rv", "data_update", `{"x":1}`))

	if err := revoke("sub alice\njti b1\n"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []client{alice, bob} {
		m := read(t, c)
		if m.Type == "data_update" { // published before the reload
			m = read(t, c)
		}
		if m.Type != "auth_error" || m.Code != authRevoked {
			t.Fatalf("got %s, want auth_error %s", m.raw, authRevoked)
		}
		expectClose(t, c, ws.StatusCode(4001))
	}
	// bob's other token (another jti) is untouched.
	send(t, bobOther, `{"type":"ping"}`)
	if m := read(t, bobOther); m.Type == "data_update" {
		readType(t, bobOther, "pong")
	} else if m.Type != "pong" {
		t.Fatalf("got %s, want pong", m.raw)
	}
	// The producer is cut off at its next line.
	p.write(t, dataLine("rv", "data_update", `{"x":2}`))
	p.expectDropped(t, "revoked")
	// Refused from now on, at the upgrade and in a refresh.
	if c, resp, _ := dialAuth(t, wsURL(s, "cities=rv"), bearer(withID("alice", "a9"))); c != nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("a revoked subject's new token: %v %v, want 401", c, resp)
	}
	send(t, bobOther, `{"type":"refresh","token":"`+withID("bob", "b1")+`"}`)
	if m := readType(t, bobOther, "auth_error"); m.Code != authRevoked {
		t.Fatalf("refresh with a revoked token: %s", m.raw)
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
	b, err := c.next(clusterTimeout)
	if err != nil {
		t.Fatalf("no auth_error after the file changed: %v", err)
	}
	if m, _ := parseMsg(b); m.Type != "auth_error" || m.Code != authRevoked {
		t.Fatalf("got %s, want auth_error %s", b, authRevoked)
	}

	sg := getSigners(t)
	tok := mint(t, jwt.SigningMethodRS256, sg.rsa2, "rsa-2", claims("frank", time.Hour, "*"))
	writePublicPEM(t, filepath.Join(keys, "rsa-2.pem"), sg.rsa2.Public())
	waitFor(t, clusterTimeout, func() bool {
		c, _, _ := dialAuth(t, wsURL(s, "cities=aw"), bearer(tok))
		if c != nil {
			c.close()
		}
		return c != nil
	})
}
