package gateway

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// signers are the private keys the auth tests sign with, generated once
// (an RSA key takes a while).
type signers struct {
	hmac []byte
	rsa  *rsa.PrivateKey
	ec   *ecdsa.PrivateKey
	ed   ed25519.PrivateKey
	// other keys of the same types, never configured on a server.
	rsa2  *rsa.PrivateKey
	hmac2 []byte
}

var (
	signersOnce sync.Once
	testSigners *signers
)

func getSigners(t testing.TB) *signers {
	t.Helper()
	signersOnce.Do(func() {
		s := &signers{hmac: []byte("0123456789abcdef0123456789abcdef-test"), hmac2: []byte("another-secret-another-secret-another")}
		var err error
		if s.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if s.rsa2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if s.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
		if _, s.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
			panic(err)
		}
		testSigners = s
	})
	return testSigners
}

// writePublicPEM writes pub as a PKIX PEM file.
func writePublicPEM(t testing.TB, path string, pub any) {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// authConfig returns a Config whose keys are the test signers: the HMAC
// secret in a file, and a directory with rsa.pem, ec.pem and ed.pem (kids
// "rsa", "ec", "ed").
func authConfig(t testing.TB) (Config, string) {
	t.Helper()
	sg := getSigners(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "hmac.secret")
	if err := os.WriteFile(secret, append(sg.hmac, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(dir, "keys")
	if err := os.Mkdir(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	writePublicPEM(t, filepath.Join(keys, "rsa.pem"), sg.rsa.Public())
	writePublicPEM(t, filepath.Join(keys, "ec.pem"), sg.ec.Public())
	writePublicPEM(t, filepath.Join(keys, "ed.pem"), sg.ed.Public())
	return Config{AuthHMACSecretFile: secret, AuthKeys: []string{keys}}, keys
}

// claims returns claims for sub valid from now for ttl.
func claims(sub string, ttl time.Duration, cities ...string) Claims {
	now := time.Now()
	return Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   sub,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Cities: cities,
	}
}

// mint signs c with key under method, with kid in the header when set.
func mint(t testing.TB, method jwt.SigningMethod, key any, kid string, c Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, &c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("cannot sign a test token: %s", err)
	}
	return s
}

// hs256Raw signs the claims payload as it is, byte for byte, with the
// test secret (HS256): for claims no Claims value would marshal to.
func hs256Raw(t testing.TB, payload string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(payload))
	sig, err := jwt.SigningMethodHS256.Sign(signing, getSigners(t).hmac)
	if err != nil {
		t.Fatalf("cannot sign a test token: %s", err)
	}
	return signing + "." + enc.EncodeToString(sig)
}

// hs256 mints an HS256 token with the test secret.
func hs256(t testing.TB, c Claims) string {
	return mint(t, jwt.SigningMethodHS256, getSigners(t).hmac, "", c)
}

// dialAuth opens a gorilla connection with extra request headers and
// subprotocols. On a refused upgrade it returns the HTTP response (body
// read into the error text) and a nil client.
func dialAuth(t testing.TB, url string, h http.Header, protocols ...string) (*gorillaClient, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: readTimeout, Subprotocols: protocols}
	c, resp, err := d.Dial(url, h)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			err = errors.New(string(body))
		}
		return nil, resp, err
	}
	t.Cleanup(func() { _ = c.Close() })
	return &gorillaClient{c}, resp, nil
}

// mustDialAuth is dialAuth that fails the test unless the upgrade succeeds.
func mustDialAuth(t testing.TB, url string, h http.Header, protocols ...string) *gorillaClient {
	t.Helper()
	c, resp, err := dialAuth(t, url, h, protocols...)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("cannot dial %s: %d %s", url, status, err)
	}
	return c
}

// bearer returns an Authorization header for tok.
func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
