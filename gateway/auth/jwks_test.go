package auth

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/metrocast/metrocast/gateway/auth/authtest"
)

// TestParseRemoteJWKS: what a JWKS URL may serve.
func TestParseRemoteJWKS(t *testing.T) {
	sg := authtest.Signers(t)
	set := func(keys ...jose.JSONWebKey) []byte {
		b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	k1, k2 := authtest.IDPKeys(t)
	if keys, err := parseRemoteJWKS(set(k1, k2)); err != nil || len(keys) != 2 || keys[0].algs[0] != "RS256" {
		t.Fatalf("good set: %v %v", keys, err)
	}
	bad := func(b []byte, want string) {
		t.Helper()
		if _, err := parseRemoteJWKS(b); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%.80s: %v, want an error about %q", b, err, want)
		}
	}
	bad(set(k1, jose.JSONWebKey{Key: sg.HMAC, KeyID: "h", Algorithm: "HS256"}), "symmetric")
	bad(set(), "no signing key")
	bad(set(jose.JSONWebKey{Key: sg.RSA2.Public(), KeyID: "ps", Algorithm: "PS256"}), "no signing key")
	bad(set(k1, k1), "used twice")
	bad(set(jose.JSONWebKey{Key: sg.EC, KeyID: "priv"}), "private key")
	bad([]byte(`{"keys":`), "cannot parse")
	bad([]byte(`<html>`), "cannot parse")
}

func TestCheckJWKSURL(t *testing.T) {
	f := func(u string, ok bool) {
		t.Helper()
		if err := CheckJWKSURL(u); (err == nil) != ok {
			t.Errorf("CheckJWKSURL(%q) = %v, want ok %v", u, err, ok)
		}
	}
	f("https://idp.example/.well-known/jwks.json", true)
	f("http://127.0.0.1:8080/jwks", true)
	f("http://[::1]/jwks", true)
	f("http://localhost/jwks", true)
	f("http://idp.example/jwks", false)
	f("http://10.0.0.1/jwks", false)
	f("ftp://idp.example/jwks", false)
	f("https:///jwks", false)
	f("idp.example/jwks", false)
	f("://", false)
}

func TestCacheMaxAge(t *testing.T) {
	f := func(h string, want time.Duration, wantOK bool) {
		t.Helper()
		if d, ok := cacheMaxAge(h); d != want || ok != wantOK {
			t.Errorf("cacheMaxAge(%q) = %s %v, want %s %v", h, d, ok, want, wantOK)
		}
	}
	f("", 0, false)
	f("public", 0, false)
	f("max-age=60", time.Minute, true)
	f("public, max-age=300, must-revalidate", 5*time.Minute, true)
	f(`Max-Age="90"`, 90*time.Second, true)
	f("no-store", 0, true)
	f("private, no-cache", 0, true)
	f("s-maxage=60", 0, false)
	// Malformed: ignored.
	f("max-age", 0, false)
	f("max-age=", 0, false)
	f("max-age=-1", 0, false)
	f("max-age=1e3", 0, false)
	f("max-age=99999999999999999999", 0, false)
	f("max-age=abc, max-age=7", 7*time.Second, true)
}

func FuzzCacheMaxAge(f *testing.F) {
	for _, s := range []string{"max-age=60", "public, max-age=300", "no-store", `max-age="5"`, ",,=,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		d, ok := cacheMaxAge(h)
		if d < 0 || !ok && d != 0 || d > (1<<32)*time.Second {
			t.Fatalf("cacheMaxAge(%q) = %s %v", h, d, ok)
		}
	})
}

func TestRefreshAfter(t *testing.T) {
	a := &Authenticator{cfg: &Config{JWKSRefresh: 5 * time.Minute}}
	f := func(maxAge time.Duration, ok bool, want time.Duration) {
		t.Helper()
		if got := a.refreshAfter(maxAge, ok); got != want {
			t.Errorf("refreshAfter(%s, %v) = %s, want %s", maxAge, ok, got, want)
		}
	}
	f(0, false, 5*time.Minute)
	f(time.Minute, true, time.Minute)
	f(0, true, 30*time.Second)           // no-store: the floor
	f(time.Second, true, 30*time.Second) // the floor
	f(time.Hour, true, 5*time.Minute)    // at most the refresh
}
