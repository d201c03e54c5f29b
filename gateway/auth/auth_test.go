package auth

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
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"

	"github.com/metrocast/metrocast/gateway/auth/authtest"
)

// FuzzClientToken feeds the token verifier random strings and good tokens
// tampered in one byte of one decoded part, re-encoded so that they stay
// well-formed: nothing but the good tokens themselves may authenticate.
func FuzzClientToken(f *testing.F) {
	cfg := testConfig(f)
	a, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	sg := authtest.Signers(f)
	// Fixed times: the fuzzing workers run this function again, and an
	// HMAC token minted in another second by the coordinator (its seeds)
	// would be a good token that is not in the worker's list.
	c := authtest.NewClaims("fuzz", 0, "*")
	c.IssuedAt = jwt.NewNumericDate(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC))
	c.ExpiresAt = jwt.NewNumericDate(time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC))
	good := []string{
		authtest.Mint(f, jwt.SigningMethodHS256, sg.HMAC, "", c),
		authtest.Mint(f, jwt.SigningMethodHS384, sg.HMAC, "", c),
		authtest.Mint(f, jwt.SigningMethodRS256, sg.RSA, "rsa", c),
		authtest.Mint(f, jwt.SigningMethodES256, sg.EC, "ec", c),
		authtest.Mint(f, jwt.SigningMethodEdDSA, sg.Ed, "ed", c),
	}
	isGood := map[string]bool{}
	for i, tok := range good {
		if _, err := a.ClientGrant(tok); err != nil {
			f.Fatalf("good token %d refused: %s", i, err)
		}
		isGood[tok] = true
		f.Add([]byte(tok), uint8(i), uint8(i), uint16(i*13), uint8(1<<i))
	}
	for _, bt := range authtest.BadTokens(f) {
		f.Add([]byte(bt.Tok), uint8(0), uint8(1), uint16(7), uint8(0x20))
	}
	f.Fuzz(func(t *testing.T, raw []byte, which, part uint8, pos uint16, mask uint8) {
		check := func(tok string) {
			if g, err := a.ClientGrant(tok); err == nil && !isGood[tok] {
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
	cfg := testConfig(f)
	a, err := New(cfg)
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
		tok := authtest.HS256Raw(t, payload)
		g, err := a.ClientGrant(tok)

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
		leeway := cfg.Leeway.Seconds()
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
			if !errors.As(err, &ae) || ae.code != CodeInvalidClaims {
				t.Fatalf("%s: %v, want invalid_claims", payload, err)
			}
		case valid && err != nil:
			t.Fatalf("%s: refused: %v", payload, err)
		case !valid && err == nil:
			t.Fatalf("%s: accepted", payload)
		case valid:
			want := int64(max(-MaxClaimSeconds, min(math.Floor(secs["exp"]), MaxClaimSeconds)))
			if e, closeAt := g.Deadlines(grace); e != want || closeAt != want+int64(grace/time.Second) {
				t.Fatalf("%s: deadlines %d %d, want exp %d", payload, e, closeAt, want)
			}
			if !g.ExpPlus(grace).After(time.Now()) {
				t.Fatalf("%s: accepted, yet past its grace", payload)
			}
		}
	})
}

// TestJWKS loads keys from a JWK set, as an identity provider publishes it,
// and checks what is taken, skipped and refused.
func TestJWKS(t *testing.T) {
	t.Parallel()
	sg := authtest.Signers(t)
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
		jwk(sg.RSA.Public(), "r1", "RS256", "sig"),
		jwk(sg.EC.Public(), "e1", "", ""),
		jwk(sg.Ed.Public(), "d1", "EdDSA", ""),
		jwk(sg.HMAC, "h1", "HS256", ""),
		jwk(sg.RSA2.Public(), "r2", "PS256", ""),        // not verified here: skipped
		jwk(sg.RSA2.Public(), "enc", "RSA-OAEP", "enc"), // not for signatures: skipped
		map[string]any{"kty": "XYZ", "kid": "future"},   // unknown type: skipped
	)
	cfg := Config{Keys: []string{good}}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := a.keys.Load().Kids(); !slices.Equal(got, []string{"r1", "e1", "d1", "h1"}) {
		t.Fatalf("kids %q", got)
	}
	c := authtest.NewClaims("jw", time.Hour, "*")
	for _, tok := range []string{
		authtest.Mint(t, jwt.SigningMethodRS256, sg.RSA, "r1", c),
		authtest.Mint(t, jwt.SigningMethodES256, sg.EC, "e1", c),
		authtest.Mint(t, jwt.SigningMethodEdDSA, sg.Ed, "d1", c),
		authtest.Mint(t, jwt.SigningMethodHS256, sg.HMAC, "h1", c),
	} {
		if _, err := a.ClientGrant(tok); err != nil {
			t.Fatalf("%s: %v", tok, err)
		}
	}
	for _, tok := range []string{
		authtest.Mint(t, jwt.SigningMethodRS512, sg.RSA, "r1", c), // r1 is pinned to RS256
		authtest.Mint(t, jwt.SigningMethodHS384, sg.HMAC, "h1", c),
		authtest.Mint(t, jwt.SigningMethodPS256, sg.RSA2, "r2", c),
	} {
		if _, err := a.ClientGrant(tok); err == nil {
			t.Fatalf("%s authenticated", tok)
		}
	}

	bad := func(want string, keys ...any) {
		t.Helper()
		cfg := Config{Keys: []string{write("bad.json", keys...)}}
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%v, want an error about %q", err, want)
		}
	}
	bad("private key material", jwk(sg.EC, "priv", "", ""))
	bad("no kid", jwk(sg.EC.Public(), "", "", ""))
	bad("used twice", jwk(sg.EC.Public(), "x", "", ""), jwk(sg.Ed.Public(), "x", "", ""))
	bad("HMAC secret of 5 bytes", jwk([]byte("short"), "s", "", ""))
	bad("no key configured", jwk(sg.RSA2.Public(), "only-ps", "PS256", ""))
}

// TestPEMKeys checks what a PEM key file may hold.
func TestPEMKeys(t *testing.T) {
	t.Parallel()
	sg := authtest.Signers(t)
	pemOf := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	pkix := func(k any) []byte {
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pemOf("PUBLIC KEY", der)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, sg.EC.Public(), sg.EC)
	if err != nil {
		t.Fatal(err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ecPriv, err := x509.MarshalECPrivateKey(sg.EC)
	if err != nil {
		t.Fatal(err)
	}
	f := func(content []byte, want string) {
		t.Helper()
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "k1.pem"), content, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := Config{Keys: []string{dir}}
		a, err := New(cfg)
		switch {
		case want == "" && err != nil:
			t.Fatalf("%s", err)
		case want == "" && !slices.Equal(a.keys.Load().Kids(), []string{"k1"}):
			t.Fatalf("kids %q, want k1", a.keys.Load().Kids())
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Fatalf("%v, want an error about %q", err, want)
		}
	}
	f(pkix(sg.RSA.Public()), "")
	f(pemOf("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&sg.RSA.PublicKey)), "")
	f(pkix(sg.Ed.Public()), "")
	f(pemOf("CERTIFICATE", cert), "")
	f(pkix(small.Public()), "RSA key of 1024 bits")
	f(pemOf("EC PRIVATE KEY", ecPriv), "public keys only")
	f(append(pkix(sg.RSA.Public()), pkix(sg.Ed.Public())...), "more than one PEM block")
	f([]byte("not pem"), "no PEM block")
}

// TestAuthCodeOf checks the classification the upgrade and the auth
// message use: an *authError however wrapped gives its code, and any other
// error (a key source's own, say) refuses the token instead of panicking
// the loop, as a type assertion did.
func TestAuthCodeOf(t *testing.T) {
	f := func(err error, want string) {
		t.Helper()
		if got := CodeOf(err); got != want {
			t.Fatalf("CodeOf(%v) = %s, want %s", err, got, want)
		}
	}
	f(authErrorf(CodeRevoked, "revoked"), CodeRevoked)
	f(fmt.Errorf("jwks: %w", authErrorf(CodeExpired, "expired")), CodeExpired)
	f(errors.Join(errors.New("other"), authErrorf(CodeInvalidClaims, "claims")), CodeInvalidClaims)
	f(errors.New("a key source's own error"), CodeInvalidToken)
}

// TestTokenCache: a loop verifies a client token once and then finds its
// grant in its cache; a cached token that has expired since, or that new
// revocations cover, is verified again and refused; the cache stays
// bounded.
func TestTokenCache(t *testing.T) {
	cfg := testConfig(t)
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var tc TokenCache
	tok := authtest.HS256(t, authtest.NewClaims("cached", time.Hour, "tc"))
	g1, err := tc.Grant(a, tok)
	if err != nil {
		t.Fatal(err)
	}
	if g2, err := tc.Grant(a, tok); err != nil || g2 != g1 {
		t.Fatalf("second look: %p %v, want the cached grant %p", g2, err, g1)
	}
	// Past its exp plus the leeway, as the cache sees it: verified again
	// (still good here: a new grant).
	tc.grants[tok] = cachedGrant{g1, time.Now().Add(-time.Second)}
	if g3, err := tc.Grant(a, tok); err != nil || g3 == g1 {
		t.Fatalf("after the cached expiry: %p %v, want a new grant", g3, err)
	}
	// A token the parser refuses is not cached.
	old := authtest.HS256(t, authtest.NewClaims("old", -time.Hour, "tc"))
	for range 2 {
		if _, err := tc.Grant(a, old); CodeOf(err) != CodeExpired {
			t.Fatalf("expired token: %v, want %s", err, CodeExpired)
		}
	}
	if _, ok := tc.grants[old]; ok {
		t.Fatal("an expired token was cached")
	}
	// Revoking the subject makes new keys: the cache starts over.
	if err := a.Revoke(Revocation{Kind: "sub", ID: "cached", Until: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.Grant(a, tok); CodeOf(err) != CodeRevoked {
		t.Fatalf("revoked token: %v, want %s", err, CodeRevoked)
	}
	for i := range tokenCacheSize + 10 {
		if _, err := tc.Grant(a, authtest.HS256(t, authtest.NewClaims("u"+strconv.Itoa(i), time.Hour, "tc"))); err != nil {
			t.Fatal(err)
		}
		if len(tc.grants) > tokenCacheSize {
			t.Fatalf("%d tokens cached, over %d", len(tc.grants), tokenCacheSize)
		}
	}
}

// testConfig returns a Config whose keys are the test signers'
// (authtest.KeyFiles), with the node's default leeway.
func testConfig(t testing.TB) Config {
	t.Helper()
	secret, keys := authtest.KeyFiles(t)
	return Config{HMACSecretFile: secret, Keys: []string{keys}, Leeway: 10 * time.Second}
}

// grace is the node's default token_grace: how long after its token's exp
// a connection is closed.
const grace = 30 * time.Second
