package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/metrocast/metrocast/gateway/auth"
)

func TestTokenCommand(t *testing.T) {
	dir := t.TempDir()
	secret := []byte("token-command-secret-token-command-secret")
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, append(secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "ed.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}

	f := func(args string, key any, alg string, check func(*auth.Claims)) {
		t.Helper()
		var out bytes.Buffer
		if err := runToken(strings.Fields(args), &out); err != nil {
			t.Fatalf("token %s: %v", args, err)
		}
		var c auth.Claims
		tok, err := jwt.ParseWithClaims(strings.TrimSpace(out.String()), &c,
			func(*jwt.Token) (any, error) { return key, nil }, jwt.WithValidMethods([]string{alg}))
		if err != nil || !tok.Valid {
			t.Fatalf("token %s: %q does not verify: %v", args, out.String(), err)
		}
		check(&c)
	}
	f("-auth-hmac-secret-file "+secretFile+" -sub alice -cities nairobi,lagos -ttl 1h", secret, "HS256", func(c *auth.Claims) {
		if c.Subject != "alice" || !slices.Equal(c.Cities, []string{"nairobi", "lagos"}) || c.Publish != nil {
			t.Fatalf("claims %+v", c)
		}
		if d := time.Until(c.ExpiresAt.Time); d < 59*time.Minute || d > time.Hour {
			t.Fatalf("exp in %s, want 1h", d)
		}
	})
	f("-auth-hmac-secret-file "+secretFile+" -alg HS512 -sub p -publish * -aud dash -iss me -jti t-1", secret, "HS512", func(c *auth.Claims) {
		if !slices.Equal(c.Publish, []string{"*"}) || c.Issuer != "me" || !slices.Equal(c.Audience, jwt.ClaimStrings{"dash"}) || c.ID != "t-1" {
			t.Fatalf("claims %+v", c)
		}
	})
	f("-key "+keyFile+" -kid ed -sub bob -cities *", pub, "EdDSA", func(c *auth.Claims) {
		if c.Subject != "bob" {
			t.Fatalf("claims %+v", c)
		}
	})
	t.Setenv("METROCAST_AUTH_HMAC_SECRET", string(secret))
	f("-sub env -cities a", secret, "HS256", func(*auth.Claims) {})

	bad := func(args, want string) {
		t.Helper()
		err := runToken(strings.Fields(args), new(bytes.Buffer))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("token %s: %v, want an error about %q", args, err, want)
		}
	}
	bad("-cities a", "-sub")
	bad("-sub a", "-cities")
	bad("-sub a -cities Nairobi", "invalid city")
	bad("-sub a -cities a -ttl -1s", "-ttl")
	bad("-sub a -cities a -alg RS256", "-alg")
	bad("-sub a -cities a -key "+secretFile, "PEM")
	bad("-sub a -cities a extra", "unexpected argument")
}
