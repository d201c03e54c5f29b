// Package authtest holds the keys, key files and tokens that the tests of
// gateway/auth and of the gateway sign and verify with, so that both
// suites mint their tokens one way. Only tests import it. It does not
// import gateway/auth, whose own tests import it: its Claims are the
// claims as a token carries them, and its codes the wire's.
package authtest

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
)

// Keys are the private keys the tests sign with.
type Keys struct {
	HMAC []byte
	RSA  *rsa.PrivateKey
	EC   *ecdsa.PrivateKey
	Ed   ed25519.PrivateKey
	// Other keys of the same types, never configured on a server.
	RSA2  *rsa.PrivateKey
	HMAC2 []byte
}

var (
	signersOnce sync.Once
	signers     *Keys
)

// Signers returns the test keys, generated once per test binary (an RSA
// key takes a while).
func Signers(t testing.TB) *Keys {
	t.Helper()
	signersOnce.Do(func() {
		s := &Keys{HMAC: []byte("0123456789abcdef0123456789abcdef-test"), HMAC2: []byte("another-secret-another-secret-another")}
		var err error
		if s.RSA, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if s.RSA2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if s.EC, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
		if _, s.Ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
			panic(err)
		}
		signers = s
	})
	return signers
}

// WritePublicPEM writes pub as a PKIX PEM file.
func WritePublicPEM(t testing.TB, path string, pub any) {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// KeyFiles writes the test signers' verification keys under a temporary
// directory: the HMAC secret in a file, and a directory with rsa.pem,
// ec.pem and ed.pem (kids "rsa", "ec", "ed").
func KeyFiles(t testing.TB) (secretFile, keyDir string) {
	t.Helper()
	sg := Signers(t)
	dir := t.TempDir()
	secretFile = filepath.Join(dir, "hmac.secret")
	if err := os.WriteFile(secretFile, append(sg.HMAC, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	keyDir = filepath.Join(dir, "keys")
	if err := os.Mkdir(keyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	WritePublicPEM(t, filepath.Join(keyDir, "rsa.pem"), sg.RSA.Public())
	WritePublicPEM(t, filepath.Join(keyDir, "ec.pem"), sg.EC.Public())
	WritePublicPEM(t, filepath.Join(keyDir, "ed.pem"), sg.Ed.Public())
	return secretFile, keyDir
}

// Claims are a token's claims as metrocast reads them (auth.Claims).
type Claims struct {
	jwt.RegisteredClaims
	Cities  []string `json:"cities,omitempty"`
	Publish []string `json:"publish,omitempty"`
}

// NewClaims returns claims for sub valid from now for ttl.
func NewClaims(sub string, ttl time.Duration, cities ...string) Claims {
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

// Mint signs c with key under method, with kid in the header when set.
func Mint(t testing.TB, method jwt.SigningMethod, key any, kid string, c Claims) string {
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

// HS256Raw signs the claims payload as it is, byte for byte, with the
// test secret (HS256): for claims no Claims value would marshal to.
func HS256Raw(t testing.TB, payload string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(payload))
	sig, err := jwt.SigningMethodHS256.Sign(signing, Signers(t).HMAC)
	if err != nil {
		t.Fatalf("cannot sign a test token: %s", err)
	}
	return signing + "." + enc.EncodeToString(sig)
}

// HS256 mints an HS256 token with the test secret.
func HS256(t testing.TB, c Claims) string {
	return Mint(t, jwt.SigningMethodHS256, Signers(t).HMAC, "", c)
}

// IDPKeys are the test signers' public keys as an identity provider
// publishes them.
func IDPKeys(t testing.TB) (rsaK1, ecK2 jose.JSONWebKey) {
	sg := Signers(t)
	return jose.JSONWebKey{Key: sg.RSA.Public(), KeyID: "k1", Algorithm: "RS256", Use: "sig"},
		jose.JSONWebKey{Key: sg.EC.Public(), KeyID: "k2", Algorithm: "ES256", Use: "sig"}
}

// Bad is a token that must never authenticate, and the auth_error code it
// earns.
type Bad struct{ Tok, Code string }

// The auth_error codes of BadTokens (auth.CodeExpired and so on).
const (
	codeInvalidToken  = "invalid_token"
	codeExpired       = "token_expired"
	codeNotYetValid   = "token_not_yet_valid"
	codeInvalidClaims = "invalid_claims"
)

// BadTokens returns tokens that must never authenticate against the keys
// of KeyFiles, by name.
func BadTokens(t testing.TB) map[string]Bad {
	sg := Signers(t)
	good := NewClaims("mallory", time.Hour, "nairobi")
	expired := NewClaims("mallory", -time.Hour, "nairobi")
	notYet := NewClaims("mallory", 2*time.Hour, "nairobi")
	notYet.NotBefore = jwt.NewNumericDate(time.Now().Add(time.Hour))
	future := NewClaims("mallory", 2*time.Hour, "nairobi")
	future.IssuedAt = jwt.NewNumericDate(time.Now().Add(time.Hour))
	noExp := NewClaims("mallory", time.Hour, "nairobi")
	noExp.ExpiresAt = nil
	noSub := NewClaims("", time.Hour, "nairobi")
	noCities := NewClaims("mallory", time.Hour)
	badCity := NewClaims("mallory", time.Hour, "Nairobi!")

	rsaPub, err := x509.MarshalPKIXPublicKey(sg.RSA.Public())
	if err != nil {
		t.Fatal(err)
	}
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaPub})

	hs := Mint(t, jwt.SigningMethodHS256, sg.HMAC, "", good)
	parts := strings.Split(hs, ".")
	// Claims swapped for others under the same signature.
	forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"mallory","exp":9999999999,"cities":["*"]}`)) + "." + parts[2]
	// Well signed, with time claims of the wrong type or out of range.
	now := time.Now().Unix()
	timed := func(times string) string {
		return HS256Raw(t, `{"sub":"mallory","cities":["nairobi"],`+times+`}`)
	}
	exp := fmt.Sprintf(`"exp":%d`, now+3600)

	return map[string]Bad{
		"expired":          {HS256(t, expired), codeExpired},
		"not yet valid":    {HS256(t, notYet), codeNotYetValid},
		"issued in future": {HS256(t, future), codeNotYetValid},
		"no exp":           {HS256(t, noExp), codeInvalidClaims},
		"no sub":           {HS256(t, noSub), codeInvalidClaims},
		"no cities":        {HS256(t, noCities), codeInvalidClaims},
		"bad city":         {HS256(t, badCity), codeInvalidClaims},
		"wrong secret":     {Mint(t, jwt.SigningMethodHS256, sg.HMAC2, "", good), codeInvalidToken},
		"wrong rsa key":    {Mint(t, jwt.SigningMethodRS256, sg.RSA2, "rsa", good), codeInvalidToken},
		"unknown kid":      {Mint(t, jwt.SigningMethodRS256, sg.RSA, "nope", good), codeInvalidToken},
		"alg none":         {Mint(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", good), codeInvalidToken},
		"alg none kid":     {Mint(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "rsa", good), codeInvalidToken},
		// HS-vs-RS confusion: HMAC with the RSA public key as the secret.
		"hs with rsa pem":     {Mint(t, jwt.SigningMethodHS256, rsaPEM, "rsa", good), codeInvalidToken},
		"hs with rsa pem nok": {Mint(t, jwt.SigningMethodHS256, rsaPEM, "", good), codeInvalidToken},
		"hs with rsa der":     {Mint(t, jwt.SigningMethodHS256, rsaPub, "rsa", good), codeInvalidToken},
		// A key used with another algorithm than its own.
		"rs512 for ec kid": {Mint(t, jwt.SigningMethodRS512, sg.RSA, "ec", good), codeInvalidToken},
		"ps256":            {Mint(t, jwt.SigningMethodPS256, sg.RSA, "rsa", good), codeInvalidToken},
		"forged claims":    {forged, codeInvalidToken},
		"garbage":          {"not.a.jwt", codeInvalidToken},
		// RFC 7519: a NumericDate is a JSON number, nothing else.
		"exp string":         {timed(`"exp":"9999999999"`), codeInvalidClaims},
		"exp string now":     {timed(fmt.Sprintf(`"exp":"%d"`, now+3600)), codeInvalidClaims},
		"exp bool":           {timed(`"exp":true`), codeInvalidClaims},
		"exp null":           {timed(`"exp":null`), codeInvalidClaims},
		"exp object":         {timed(`"exp":{"n":9999999999}`), codeInvalidClaims},
		"exp array":          {timed(`"exp":[9999999999]`), codeInvalidClaims},
		"nbf string":         {timed(exp + `,"nbf":"0"`), codeInvalidClaims},
		"nbf bool":           {timed(exp + `,"nbf":false`), codeInvalidClaims},
		"iat string":         {timed(exp + fmt.Sprintf(`,"iat":"%d"`, now)), codeInvalidClaims},
		"iat object":         {timed(exp + `,"iat":{}`), codeInvalidClaims},
		"nbf string expired": {timed(fmt.Sprintf(`"exp":%d,"nbf":"0"`, now-3600)), codeInvalidClaims},
		// Far from now, either way: no wrap-around into the other side.
		"exp -1e300":     {timed(`"exp":-1e300`), codeExpired},
		"exp 0":          {timed(`"exp":0`), codeExpired},
		"exp min int64":  {timed(`"exp":-9223372036854775808`), codeExpired},
		"nbf far future": {timed(`"exp":99999999999,"nbf":9999999999`), codeNotYetValid},
		"nbf 1e300":      {timed(`"exp":1e300,"nbf":1e300`), codeNotYetValid},
		"iat 2^63":       {timed(`"exp":1e400,"iat":9223372036854775808`), codeNotYetValid},
		"iat far future": {timed(`"exp":99999999999,"iat":9999999999`), codeNotYetValid},
		"too long":       {hs + strings.Repeat("A", 8<<10), codeInvalidToken}, // past auth.MaxTokenBytes
		// Other claims of the wrong type: invalid_claims once the
		// signature is good, invalid_token when it is not.
		"sub number":           {HS256Raw(t, `{"sub":5,`+exp+`,"cities":["nairobi"]}`), codeInvalidClaims},
		"cities string":        {HS256Raw(t, `{"sub":"mallory",`+exp+`,"cities":"nairobi"}`), codeInvalidClaims},
		"cities numbers":       {HS256Raw(t, `{"sub":"mallory",`+exp+`,"cities":[1]}`), codeInvalidClaims},
		"cities nested":        {HS256Raw(t, `{"sub":"mallory",`+exp+`,"cities":[["nairobi"]]}`), codeInvalidClaims},
		"publish object":       {HS256Raw(t, `{"sub":"mallory",`+exp+`,"cities":["nairobi"],"publish":{}}`), codeInvalidClaims},
		"jti number":           {HS256Raw(t, `{"sub":"mallory",`+exp+`,"cities":["nairobi"],"jti":7}`), codeInvalidClaims},
		"aud object":           {HS256Raw(t, `{"sub":"mallory",`+exp+`,"cities":["nairobi"],"aud":{"x":1}}`), codeInvalidClaims},
		"forged cities string": {parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"mallory",`+exp+`,"cities":"*"}`)) + "." + parts[2], codeInvalidToken},
	}
}
