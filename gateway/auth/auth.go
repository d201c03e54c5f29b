package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/metrocast/metrocast/codec"
)

// Claims are the JWT claims metrocast reads. sub and exp are required; nbf
// and iat are honoured with Config.Leeway; aud and iss are checked when
// Config.Audience / Issuer are set.
type Claims struct {
	jwt.RegisteredClaims
	// Cities a WebSocket client may subscribe to; ["*"] for every city.
	Cities []string `json:"cities,omitempty"`
	// Publish lists the cities a producer may publish to on the ingest
	// port (when it requires a token); ["*"] for every city.
	Publish []string `json:"publish,omitempty"`

	// badTime says which time claim is not a number, badType which other
	// claim is not of its type (UnmarshalJSON).
	badTime, badType string
}

// UnmarshalJSON reads the claims as golang-jwt would, but for exp, nbf and
// iat, which must be JSON numbers (RFC 7519 §2, NumericDate): golang-jwt
// also takes a string holding a number ("exp":"9999999999"), and turns
// a time past the int64 range of seconds into a time in the past. A claim
// of another type is recorded, and refused by Validate once the signature
// is known to be good (invalid_claims), so that a forged token learns
// nothing more than invalid_token. So is any other claim of the wrong type
// ("cities":"nairobi", "sub":5, "aud":{}), which encoding/json would make
// a malformed token, with a message naming Go's types.
func (c *Claims) UnmarshalJSON(b []byte) error {
	type plain Claims // the same fields, without this method
	v := struct {
		*plain
		// Shallower than RegisteredClaims' fields of the same names,
		// so these take exp, nbf and iat.
		Exp timeClaim `json:"exp"`
		Nbf timeClaim `json:"nbf"`
		Iat timeClaim `json:"iat"`
	}{plain: (*plain)(c)}
	if err := json.Unmarshal(b, &v); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te):
			// encoding/json decoded the other claims.
			name := te.Field[strings.LastIndexByte(te.Field, '.')+1:]
			kind, _, _ := strings.Cut(te.Value, " ") // "number 1e30"
			want, ok := claimTypes[name]
			if !ok {
				want = "of another type"
			}
			c.badType = fmt.Sprintf("%s must be %s (found a JSON %s)", name, want, kind)
		case errors.Is(err, jwt.ErrInvalidType):
			// ClaimStrings' own error: aud, the one claim of that type.
			c.badType = "aud must be a string or an array of strings"
		default:
			return err
		}
	}
	c.ExpiresAt, c.NotBefore, c.IssuedAt = v.Exp.at, v.Nbf.at, v.Iat.at
	for _, tc := range [...]struct {
		name string
		bad  string
	}{{"exp", v.Exp.bad}, {"nbf", v.Nbf.bad}, {"iat", v.Iat.bad}} {
		if tc.bad != "" {
			c.badTime = tc.name + " is " + tc.bad
			break
		}
	}
	return nil
}

// claimTypes says what each claim decoded into a Go type must be, for
// Claims.badType.
var claimTypes = map[string]string{
	"sub": "a string", "iss": "a string", "jti": "a string",
	"cities": "an array of city names", "publish": "an array of city names",
}

// timeClaim is a NumericDate claim as read from a token. bad names the
// claim's JSON type when it is not a number (at is then nil).
type timeClaim struct {
	at  *jwt.NumericDate
	bad string
}

// MaxClaimSeconds bounds the time claims: year 9999, far enough to mean
// "never" and near enough that time.Time arithmetic on it cannot
// overflow. Further times (and their negatives) are taken as this bound.
const MaxClaimSeconds = 253402300799

func (tc *timeClaim) UnmarshalJSON(b []byte) error {
	switch b[0] {
	case '"':
		tc.bad = "a string"
	case 't', 'f':
		tc.bad = "a boolean"
	case 'n':
		tc.bad = "null"
	case '{':
		tc.bad = "an object"
	case '[':
		tc.bad = "an array"
	}
	if tc.bad != "" {
		return nil
	}
	// A JSON number (the decoder checked its syntax). ParseFloat fails
	// only past ±1.8e308, with ±Inf, which the bound below takes in.
	f, _ := strconv.ParseFloat(string(b), 64)
	f = max(-MaxClaimSeconds, min(f, MaxClaimSeconds))
	sec, frac := math.Modf(f)
	tc.at = jwt.NewNumericDate(time.Unix(int64(sec), int64(frac*1e9)))
	return nil
}

// errTimeClaimType is an exp, nbf or iat claim that is not a JSON number;
// errClaimType another claim of the wrong type.
var (
	errTimeClaimType = errors.New("invalid time claim")
	errClaimType     = errors.New("invalid claim type")
)

// Validate checks what the registered claims do not: golang-jwt calls it
// after exp, nbf, iat, aud and iss, once the signature is verified.
func (c *Claims) Validate() error {
	if c.badTime != "" {
		return fmt.Errorf("%w: %s, not a number of seconds", errTimeClaimType, c.badTime)
	}
	if c.badType != "" {
		return fmt.Errorf("%w: %s", errClaimType, c.badType)
	}
	if c.Subject == "" {
		return fmt.Errorf("%w: sub", jwt.ErrTokenRequiredClaimMissing)
	}
	for _, list := range [][]string{c.Cities, c.Publish} {
		for _, city := range list {
			if city != "*" && !codec.ValidCity(city) {
				return fmt.Errorf("invalid city %.70q in the token", city)
			}
		}
	}
	return nil
}

// AnyCity in a token's cities or publish list grants every city.
const AnyCity = "*"

// MaxTokenBytes bounds a token before any parsing: real ones are well under
// 2 KiB, and a JWT is decoded (base64, JSON) before its signature is known to
// be good.
const MaxTokenBytes = 8 << 10

// Auth error codes, sent in auth_error messages and HTTP 401 bodies.
const (
	CodeInvalidToken  = "invalid_token"       // malformed, bad signature, unknown key, refused algorithm
	CodeExpired       = "token_expired"       // exp passed (beyond the leeway)
	CodeNotYetValid   = "token_not_yet_valid" // nbf or iat in the future (beyond the leeway)
	CodeInvalidClaims = "invalid_claims"      // aud, iss, sub or cities wrong or missing
	CodeRequired      = "auth_required"       // a message other than auth before the token
	CodeTimeout       = "auth_timeout"        // no token within the node's auth_timeout
	CodeSubMismatch   = "sub_mismatch"        // a refresh for another subject
	CodeRevoked       = "token_revoked"       // its sub or jti is in auth_revoked_file (revoke.go)
)

// authError is a refused token: code says which auth_error it is.
type authError struct {
	code string
	err  error
}

func (e *authError) Error() string { return e.err.Error() }

func (e *authError) Unwrap() error { return e.err }

// CodeOf returns the auth_error code of an error from the
// Authenticator: an *authError's, however wrapped, or invalid_token for
// any other error, so that a new kind of failure refuses the token rather
// than panics a loop.
func CodeOf(err error) string {
	if ae, ok := errors.AsType[*authError](err); ok {
		return ae.code
	}
	return CodeInvalidToken
}

func authErrorf(code, format string, args ...any) *authError {
	return &authError{code: code, err: fmt.Errorf(format, args...)}
}

// authCode classifies a golang-jwt error.
func authCode(err error) string {
	switch {
	case errors.Is(err, errTimeClaimType):
		// Before the time checks: a time claim of the wrong type is
		// invalid whatever the others say.
		return CodeInvalidClaims
	case errors.Is(err, jwt.ErrTokenExpired):
		return CodeExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return CodeNotYetValid
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable),
		errors.Is(err, jwt.ErrTokenMalformed):
		return CodeInvalidToken
	case errors.Is(err, jwt.ErrTokenInvalidClaims):
		return CodeInvalidClaims
	}
	return CodeInvalidToken
}

// Grant is what an accepted token allows. It is immutable and kept by the
// connections it authenticated, so it is small: a subject, the token's id,
// an expiry and the cities as one string.
type Grant struct {
	sub string
	jti string // the token's id; "" without one
	// exp is the token's expiry in Unix seconds (at most year 9999: see
	// MaxClaimSeconds); 0 never expires. Seconds, not nanoseconds, which
	// run out in 2262: "never expires" tokens say 9999999999 (2286).
	exp int64
	// cities is the allowed cities joined with commas; unused with all.
	cities string
	all    bool
}

// Anonymous is the grant of every client of an insecure node.
var Anonymous = &Grant{sub: "anonymous", all: true}

func newGrant(c *Claims, cities []string) *Grant {
	g := &Grant{sub: c.Subject, jti: c.ID, exp: c.ExpiresAt.Unix()}
	if slices.Contains(cities, AnyCity) {
		g.all = true
	} else {
		g.cities = strings.Join(cities, ",")
	}
	return g
}

// Deadlines returns the token's expiry and the close time of a connection
// that holds it, grace after it, in Unix seconds; both 0 for a grant that
// never expires.
func (g *Grant) Deadlines(grace time.Duration) (exp, closeAt int64) {
	if g.exp == 0 {
		return 0, 0
	}
	return g.exp, g.ExpPlus(grace).Unix()
}

// ExpPlus returns the moment d after the token's expiry (d < 0: before).
// time.Time arithmetic holds any exp up to year 9999.
func (g *Grant) ExpPlus(d time.Duration) time.Time {
	return time.Unix(g.exp, 0).Add(d)
}

// Allows reports whether the grant covers city. It allocates nothing.
func (g *Grant) Allows(city string) bool {
	if g.all {
		return true
	}
	for rest := g.cities; rest != ""; {
		name, tail, _ := strings.Cut(rest, ",")
		if name == city {
			return true
		}
		rest = tail
	}
	return false
}

// Sub is the token's subject.
func (g *Grant) Sub() string { return g.sub }

// JTI is the token's id; "" without one.
func (g *Grant) JTI() string { return g.jti }

// Exp is the token's expiry in Unix seconds; 0: it never expires.
func (g *Grant) Exp() int64 { return g.exp }

// Authenticator verifies tokens against the key set in force, which it
// builds from its sources (keys.go): the node's key files, the JWKS URLs
// (jwks.go), the revocation file and the timed revocations (revoke.go).
// It is safe for concurrent use; a change of a source swaps the key set
// atomically.
type Authenticator struct {
	cfg  *Config
	keys atomic.Pointer[KeySet]

	// mu serialises the building of key sets and guards the sources.
	mu      sync.Mutex
	local   keyList     // the node's key files, as last read
	revoked revocations // auth_revoked_file, as last read
	// stamp is the files' filesStamp taken before local and revoked were
	// read from them: WatchFiles reloads when the files differ from it.
	stamp string
	timed *timedRevocations
	jwks  []*jwksSource // one per Config.JWKSURL

	client *http.Client // fetches the JWKS URLs
	// refetch asks WatchJWKS to fetch the JWKS URLs again (capacity 1): a
	// token named an unknown kid, or the keys were reloaded.
	refetch     chan struct{}
	fetches     atomic.Uint64 // JWKS fetches made
	fetchErrors atomic.Uint64 // JWKS fetches that failed (the last good keys stay)
}

// New reads the key files of cfg and fetches its JWKS URLs (call it off
// the event loops). It fails when that leaves no key: a JWKS URL that
// cannot be fetched is logged and tried again later if another key is
// configured.
func New(cfg Config) (*Authenticator, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	stamp := cfg.filesStamp()
	local, revoked, err := readLocalKeys(&cfg)
	if err != nil {
		return nil, err
	}
	a := &Authenticator{cfg: &cfg, local: local, revoked: revoked, stamp: stamp, refetch: make(chan struct{}, 1)}
	errs := a.startJWKS()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.setKeysLocked(); err != nil {
		if len(errs) > 0 {
			return nil, fmt.Errorf("%w, and no JWKS URL could be fetched: %w", err, errors.Join(errs...))
		}
		return nil, err
	}
	return a, nil
}

// Keys returns the key set in force: the keys and the revocations a token
// is checked against. A new one is built whenever a source changes, so a
// holder compares pointers to notice a change. Safe for concurrent use.
func (a *Authenticator) Keys() *KeySet { return a.keys.Load() }

// JWKSFetches returns how many fetches of the JWKS URLs were made, and how
// many of them failed (the URL's last good keys stayed in force). Safe for
// concurrent use.
func (a *Authenticator) JWKSFetches() (fetches, failed uint64) {
	return a.fetches.Load(), a.fetchErrors.Load()
}

// Reload reads the key files again (Config.HMACSecretFile, Config.Keys)
// and the revocation list (Config.RevokedFile) and swaps them in one step:
// tokens signed with a new key are accepted from then on, tokens of a
// removed key are refused, and the new key set revokes what the list
// names. On error the old set stays. It also has the JWKS URLs fetched
// again, in the background (WatchJWKS). Safe for concurrent use.
func (a *Authenticator) Reload() error {
	stamp := a.cfg.filesStamp()
	local, revoked, err := readLocalKeys(a.cfg)
	if err != nil {
		return err
	}
	a.mu.Lock()
	oldLocal, oldRevoked := a.local, a.revoked
	a.local, a.revoked = local, revoked
	if err := a.setKeysLocked(); err != nil {
		a.local, a.revoked = oldLocal, oldRevoked
		a.mu.Unlock()
		return err
	}
	a.stamp = stamp
	ks := a.keys.Load()
	a.mu.Unlock()
	a.refetchJWKS()
	a.cfg.Logger.Info("auth keys reloaded", "keys", len(ks.keys), "kids", ks.Kids(),
		"revoked", ks.RevocationsAt(time.Now().UnixNano()))
	return nil
}

// verify checks token's signature and claims and returns them. The error is
// an *authError. It may run on an event loop: it costs one signature check
// (HS256 a few µs; RS256, ES256, EdDSA tens of µs) and a few allocations.
func (a *Authenticator) verify(token string) (*Claims, error) {
	if len(token) > MaxTokenBytes {
		return nil, authErrorf(CodeInvalidToken, "token longer than %d bytes", MaxTokenBytes)
	}
	ks := a.keys.Load()
	c := new(Claims)
	if t, err := ks.parser.ParseWithClaims(token, c, ks.keyFor); err != nil {
		if t != nil && ks.unknownKid(t) {
			// Perhaps a key new at a JWKS URL (of an algorithm no key
			// in force has, even): have them fetched again.
			a.refetchJWKS()
		}
		return nil, &authError{code: authCode(err), err: err}
	}
	if ks.Revokes(c.Subject, c.ID, time.Now().UnixNano()) {
		return nil, authErrorf(CodeRevoked, "the token was revoked")
	}
	return c, nil
}

// ClientGrant verifies a WebSocket client's token.
func (a *Authenticator) ClientGrant(token string) (*Grant, error) {
	g, _, err := a.clientGrantUntil(token)
	return g, err
}

// clientGrantUntil is ClientGrant that also returns the moment the token
// stops being valid: its exp plus Leeway.
func (a *Authenticator) clientGrantUntil(token string) (*Grant, time.Time, error) {
	c, err := a.verify(token)
	if err != nil {
		return nil, time.Time{}, err
	}
	if len(c.Cities) == 0 {
		return nil, time.Time{}, authErrorf(CodeInvalidClaims, "the token grants no cities (claim \"cities\")")
	}
	return newGrant(c, c.Cities), c.ExpiresAt.Add(a.cfg.Leeway), nil
}

// TokenCache holds the grants of the client tokens an event loop verified,
// so that a token it sees again (a fleet of wallboards sharing one, a
// client reconnecting) costs a map lookup instead of a JWT verification,
// which is about a third of the CPU of a connect that verifies one
// (gateway's BenchmarkConnect: 46–49 µs a connect with a token each,
// 32–35 with a token shared). Only success is remembered: a token that has expired
// since, or is revoked, or that the keys in force did not verify, is
// verified again and refused as it would be. Owned by its loop: not safe
// for concurrent use.
type TokenCache struct {
	ks     *KeySet // the keys the grants were verified with
	grants map[string]cachedGrant
}

type cachedGrant struct {
	g     *Grant
	until time.Time // exp + Leeway
}

// tokenCacheSize bounds a loop's cache (a token is a few hundred bytes):
// when full it starts over.
const tokenCacheSize = 1024

// Grant returns token's grant as ClientGrant does. Runs on the loop.
func (tc *TokenCache) Grant(a *Authenticator, token string) (*Grant, error) {
	if ks := a.keys.Load(); ks != tc.ks {
		// New keys or revocations: what they verify may differ.
		clear(tc.grants)
		tc.ks = ks
	}
	now := time.Now()
	if e, ok := tc.grants[token]; ok && now.Before(e.until) && !tc.ks.Revokes(e.g.sub, e.g.jti, now.UnixNano()) {
		return e.g, nil
	}
	g, until, err := a.clientGrantUntil(token)
	if err != nil {
		delete(tc.grants, token)
		return nil, err
	}
	if tc.grants == nil || len(tc.grants) >= tokenCacheSize {
		tc.grants = make(map[string]cachedGrant)
	}
	// A copy: token may alias the connection's read buffer.
	tc.grants[strings.Clone(token)] = cachedGrant{g, until}
	return g, nil
}

// ProducerGrant verifies a producer's token.
func (a *Authenticator) ProducerGrant(token string) (*Grant, error) {
	c, err := a.verify(token)
	if err != nil {
		return nil, err
	}
	if len(c.Publish) == 0 {
		return nil, authErrorf(CodeInvalidClaims, "the token grants no publishing (claim \"publish\")")
	}
	return newGrant(c, c.Publish), nil
}

// keyFor picks the key for a token: the one named by its kid, or, without a
// kid, every key that may verify its algorithm. A key verifies only the
// algorithms of its type (HMAC secrets HS*, RSA keys RS*, EC keys the ES* of
// their curve, Ed25519 keys EdDSA, narrowed further by a JWK's "alg"), so a
// token signed with HS256 using an RSA public key as the secret, or with
// alg "none", finds no key.
func (ks *KeySet) keyFor(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if raw, ok := t.Header["kid"]; ok {
		kid, ok := raw.(string)
		if !ok {
			return nil, errors.New("kid is not a string")
		}
		for i := range ks.keys {
			if k := &ks.keys[i]; k.kid == kid {
				if !slices.Contains(k.algs, alg) {
					return nil, fmt.Errorf("algorithm %.20q is not allowed for key %q", alg, kid)
				}
				return k.key, nil
			}
		}
		return nil, fmt.Errorf("unknown key id %.64q", kid)
	}
	var set jwt.VerificationKeySet
	for i := range ks.keys {
		if k := &ks.keys[i]; slices.Contains(k.algs, alg) {
			set.Keys = append(set.Keys, k.key)
		}
	}
	switch len(set.Keys) {
	case 0:
		return nil, fmt.Errorf("no key for algorithm %.20q", alg)
	case 1:
		return set.Keys[0], nil
	}
	return set, nil
}

// unknownKid reports whether t names a kid that no key of ks has.
func (ks *KeySet) unknownKid(t *jwt.Token) bool {
	kid, ok := t.Header["kid"].(string)
	return ok && !keyList(ks.keys).has(kid)
}

// algsFor returns the algorithms a key of this type may verify.
func algsFor(key any) ([]string, error) {
	switch k := key.(type) {
	case []byte:
		if len(k) < minHMACBytes {
			return nil, fmt.Errorf("HMAC secret of %d bytes, want at least %d", len(k), minHMACBytes)
		}
		return []string{"HS256", "HS384", "HS512"}, nil
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("RSA key of %d bits, want at least %d", k.N.BitLen(), minRSABits)
		}
		return []string{"RS256", "RS384", "RS512"}, nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return []string{"ES256"}, nil
		case elliptic.P384():
			return []string{"ES384"}, nil
		case elliptic.P521():
			return []string{"ES512"}, nil
		}
		return nil, fmt.Errorf("unsupported EC curve %s", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return []string{"EdDSA"}, nil
	}
	return nil, fmt.Errorf("unsupported key type %T", key)
}

// Key strength floors: RFC 7518 §3.2 asks an HMAC key as long as the hash
// (32 bytes for HS256); 2048-bit RSA is the usual minimum.
const (
	minHMACBytes = 32
	minRSABits   = 2048
)
