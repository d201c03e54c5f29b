package gateway

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
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
// and iat are honoured with Config.AuthLeeway; aud and iss are checked when
// Config.AuthAudience / AuthIssuer are set.
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

// maxClaimSeconds bounds the time claims: year 9999, far enough to mean
// "never" and near enough that time.Time arithmetic on it cannot
// overflow. Further times (and their negatives) are taken as this bound.
const maxClaimSeconds = 253402300799

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
	f = max(-maxClaimSeconds, min(f, maxClaimSeconds))
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

// maxTokenBytes bounds a token before any parsing: real ones are well under
// 2 KiB, and a JWT is decoded (base64, JSON) before its signature is known to
// be good.
const maxTokenBytes = 8 << 10

// Auth error codes, sent in auth_error messages and HTTP 401 bodies.
const (
	authInvalidToken  = "invalid_token"       // malformed, bad signature, unknown key, refused algorithm
	authExpired       = "token_expired"       // exp passed (beyond the leeway)
	authNotYetValid   = "token_not_yet_valid" // nbf or iat in the future (beyond the leeway)
	authInvalidClaims = "invalid_claims"      // aud, iss, sub or cities wrong or missing
	authRequired      = "auth_required"       // a message other than auth before the token
	authTimeout       = "auth_timeout"        // no token within Config.AuthTimeout
	authSubMismatch   = "sub_mismatch"        // a refresh for another subject
	authRevoked       = "token_revoked"       // its sub or jti is in auth_revoked_file (revoke.go)
)

// authError is a refused token: code says which auth_error it is.
type authError struct {
	code string
	err  error
}

func (e *authError) Error() string { return e.err.Error() }
func (e *authError) Unwrap() error { return e.err }

// authCodeOf returns the auth_error code of an error from the
// authenticator: an *authError's, however wrapped, or invalid_token for
// any other error, so that a new kind of failure refuses the token rather
// than panics a loop.
func authCodeOf(err error) string {
	if ae, ok := errors.AsType[*authError](err); ok {
		return ae.code
	}
	return authInvalidToken
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
		return authInvalidClaims
	case errors.Is(err, jwt.ErrTokenExpired):
		return authExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return authNotYetValid
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable),
		errors.Is(err, jwt.ErrTokenMalformed):
		return authInvalidToken
	case errors.Is(err, jwt.ErrTokenInvalidClaims):
		return authInvalidClaims
	}
	return authInvalidToken
}

// grant is what an accepted token allows. It is immutable and kept by the
// connections it authenticated, so it is small: a subject, the token's id,
// an expiry and the cities as one string.
type grant struct {
	sub string
	jti string // the token's id; "" without one
	// exp is the token's expiry in Unix seconds (at most year 9999: see
	// maxClaimSeconds); 0 never expires. Seconds, not nanoseconds, which
	// run out in 2262: "never expires" tokens say 9999999999 (2286).
	exp int64
	// cities is the allowed cities joined with commas; unused with all.
	cities string
	all    bool
}

// anonymous is the grant of every client of an insecure node.
var anonymous = &grant{sub: "anonymous", all: true}

func newGrant(c *Claims, cities []string) *grant {
	g := &grant{sub: c.Subject, jti: c.ID, exp: c.ExpiresAt.Unix()}
	if slices.Contains(cities, AnyCity) {
		g.all = true
	} else {
		g.cities = strings.Join(cities, ",")
	}
	return g
}

// deadlines returns the token's expiry and the connection's close time, in
// Unix seconds; both 0 for a grant that never expires.
func (g *grant) deadlines(cfg *Config) (exp, closeAt int64) {
	if g.exp == 0 {
		return 0, 0
	}
	return g.exp, g.expPlus(cfg.TokenGrace).Unix()
}

// expPlus returns the moment d after the token's expiry (d < 0: before).
// time.Time arithmetic holds any exp up to year 9999.
func (g *grant) expPlus(d time.Duration) time.Time {
	return time.Unix(g.exp, 0).Add(d)
}

// allows reports whether the grant covers city. It allocates nothing.
func (g *grant) allows(city string) bool {
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

// authenticator verifies tokens against the key set in force, which it
// builds from its sources (keys.go): the node's key files, the JWKS URLs
// (jwks.go), the revocation file and the timed revocations (revoke.go).
// It is safe for concurrent use; a change of a source swaps the key set
// atomically.
type authenticator struct {
	cfg  *Config
	keys atomic.Pointer[keySet]

	// mu serialises the building of key sets and guards the sources.
	mu      sync.Mutex
	local   keyList     // the node's key files, as last read
	revoked revocations // auth_revoked_file, as last read
	timed   *timedRevocations
	jwks    []*jwksSource // one per Config.AuthJWKSURL

	client *http.Client // fetches the JWKS URLs
	// refetch asks watchJWKS to fetch the JWKS URLs again (capacity 1): a
	// token named an unknown kid, or the keys were reloaded.
	refetch     chan struct{}
	fetches     atomic.Uint64 // JWKS fetches made
	fetchErrors atomic.Uint64 // JWKS fetches that failed (the last good keys stay)
}

// newAuthenticator reads the node's key files and fetches its JWKS URLs
// (off the event loops: they do not run yet). It fails when that leaves
// no key: a JWKS URL that cannot be fetched is logged and tried again
// later if another key is configured.
func newAuthenticator(cfg *Config) (*authenticator, error) {
	local, revoked, err := readLocalKeys(cfg)
	if err != nil {
		return nil, err
	}
	a := &authenticator{cfg: cfg, local: local, revoked: revoked, refetch: make(chan struct{}, 1)}
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

// verify checks token's signature and claims and returns them. The error is
// an *authError. It runs on an event loop: it costs one signature check
// (HS256 a few µs; RS256, ES256, EdDSA tens of µs) and a few allocations.
func (a *authenticator) verify(token string) (*Claims, error) {
	if len(token) > maxTokenBytes {
		return nil, authErrorf(authInvalidToken, "token longer than %d bytes", maxTokenBytes)
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
	if ks.revokes(c.Subject, c.ID, time.Now().UnixNano()) {
		return nil, authErrorf(authRevoked, "the token was revoked")
	}
	return c, nil
}

// clientGrant verifies a WebSocket client's token.
func (a *authenticator) clientGrant(token string) (*grant, error) {
	g, _, err := a.clientGrantUntil(token)
	return g, err
}

// clientGrantUntil is clientGrant that also returns the moment the token
// stops being valid: its exp plus AuthLeeway.
func (a *authenticator) clientGrantUntil(token string) (*grant, time.Time, error) {
	c, err := a.verify(token)
	if err != nil {
		return nil, time.Time{}, err
	}
	if len(c.Cities) == 0 {
		return nil, time.Time{}, authErrorf(authInvalidClaims, "the token grants no cities (claim \"cities\")")
	}
	return newGrant(c, c.Cities), c.ExpiresAt.Add(a.cfg.AuthLeeway), nil
}

// tokenCache holds the grants of the client tokens an event loop verified,
// so that a token it sees again (a fleet of wallboards sharing one, a
// client reconnecting) costs a map lookup instead of a JWT verification,
// a tenth of the CPU of an authenticated connect (BenchmarkConnect).
// Only success is remembered: a token that has expired since, or is
// revoked, or that the keys in force did not verify, is verified again
// and refused as it would be. Owned by its loop.
type tokenCache struct {
	ks     *keySet // the keys the grants were verified with
	grants map[string]cachedGrant
}

type cachedGrant struct {
	g     *grant
	until time.Time // exp + AuthLeeway
}

// tokenCacheSize bounds a loop's cache (a token is a few hundred bytes):
// when full it starts over.
const tokenCacheSize = 1024

// grant returns token's grant as clientGrant does. Runs on the loop.
func (tc *tokenCache) grant(a *authenticator, token string) (*grant, error) {
	if ks := a.keys.Load(); ks != tc.ks {
		// New keys or revocations: what they verify may differ.
		clear(tc.grants)
		tc.ks = ks
	}
	now := time.Now()
	if e, ok := tc.grants[token]; ok && now.Before(e.until) && !tc.ks.revokes(e.g.sub, e.g.jti, now.UnixNano()) {
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

// producerGrant verifies a producer's token.
func (a *authenticator) producerGrant(token string) (*grant, error) {
	c, err := a.verify(token)
	if err != nil {
		return nil, err
	}
	if len(c.Publish) == 0 {
		return nil, authErrorf(authInvalidClaims, "the token grants no publishing (claim \"publish\")")
	}
	return newGrant(c, c.Publish), nil
}

// keyFor picks the key for a token: the one named by its kid, or, without a
// kid, every key that may verify its algorithm. A key verifies only the
// algorithms of its type (HMAC secrets HS*, RSA keys RS*, EC keys the ES* of
// their curve, Ed25519 keys EdDSA, narrowed further by a JWK's "alg"), so a
// token signed with HS256 using an RSA public key as the secret, or with
// alg "none", finds no key.
func (ks *keySet) keyFor(t *jwt.Token) (any, error) {
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
func (ks *keySet) unknownKid(t *jwt.Token) bool {
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

// ReloadKeys reads the key files again (Config.AuthHMACSecretFile,
// Config.AuthKeys) and the revocation list (Config.AuthRevokedFile) and
// swaps them in one step: tokens signed with a new key are accepted from
// then on, tokens of a removed key are refused (connections already open
// keep their grant until it expires), and connections and producers
// holding a revoked token are closed. On error the old set stays. It also
// has the JWKS URLs fetched again, in the background. The binary calls it
// on SIGHUP. Safe for concurrent use.
func (s *Server) ReloadKeys() error {
	if s.auth == nil {
		return errors.New("no keys to reload: the node runs insecure")
	}
	a := s.auth
	local, revoked, err := readLocalKeys(&s.cfg)
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
	ks := a.keys.Load()
	a.mu.Unlock()
	a.refetchJWKS()
	s.cfg.Logger.Info("auth keys reloaded", "keys", len(ks.keys), "kids", ks.kids(),
		"revoked", ks.revocationsAt(time.Now().UnixNano()))
	return nil
}
