package auth

import (
	"bytes"
	"cmp"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
)

// key is one verification key and the algorithms it may verify.
type key struct {
	kid  string // "" for the HMAC secret of HMACSecret(File)
	algs []string
	key  any // []byte, *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

// KeySet is the keys in force, a parser that accepts exactly their
// algorithms, and the revoked tokens. Immutable once built; the
// Authenticator builds a new one whenever a source changes.
type KeySet struct {
	keys    []key
	parser  *jwt.Parser
	revoked revocations // auth_revoked_file's
	// timed are the revocations of POST /api/revoke (and in cluster mode
	// of every node's), each until its expiry; nil: none.
	timed *timedRevocations
}

// Kids returns the ids of the set's keys, the node's own first (the HMAC
// secret, which has none, as "(hmac secret)"), then each JWKS URL's.
func (ks *KeySet) Kids() []string {
	kids := make([]string, 0, len(ks.keys))
	for _, k := range ks.keys {
		kids = append(kids, cmp.Or(k.kid, "(hmac secret)"))
	}
	return kids
}

// Revokes reports whether a token of subject sub and id jti is revoked at
// now (Unix nanoseconds).
func (ks *KeySet) Revokes(sub, jti string, now int64) bool {
	return ks.revoked.revokes(sub, jti) || ks.timed.revokes(sub, jti, now)
}

// RevocationsAt counts the revocations in force at now (Unix nanoseconds).
func (ks *KeySet) RevocationsAt(now int64) int {
	n := len(ks.revoked.subs) + len(ks.revoked.jtis)
	if t := ks.timed; t != nil {
		for _, m := range [...]map[string]int64{t.subs, t.jtis} {
			for _, until := range m {
				if until > now {
					n++
				}
			}
		}
	}
	return n
}

// RevokesAny reports whether the set revokes anything.
func (ks *KeySet) RevokesAny() bool { return !ks.revoked.empty() || ks.timed.size() > 0 }

// keyList collects verification keys, each with the algorithms it may
// verify.
type keyList []key

// add checks k and appends it; src names where it came from in errors. A
// JWK whose "alg" this node does not verify is skipped.
func (l *keyList) add(k key, src string) error {
	algs, err := algsFor(k.key)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	if len(k.algs) > 0 { // a JWK's "alg" narrows its key to one algorithm
		if !slices.Contains(algs, k.algs[0]) {
			// One we do not verify (PS256, RSA-OAEP…): skipped, as
			// RFC 7517 §5 asks of what is not understood.
			return nil
		}
		algs = k.algs
	}
	k.algs = algs
	if l.has(k.kid) {
		return fmt.Errorf("%s: key id %q is used twice", src, k.kid)
	}
	*l = append(*l, k)
	return nil
}

func (l keyList) has(kid string) bool {
	return slices.ContainsFunc(l, func(k key) bool { return k.kid == kid })
}

// readLocalKeys reads the keys of the node's own files (and
// HMACSecret) and the revocation file. Errors name the config key and
// file. No key is not an error here: they may all come from JWKS URLs.
func readLocalKeys(cfg *Config) (keyList, revocations, error) {
	var ks keyList
	if cfg.HMACSecret != "" && cfg.HMACSecretFile != "" {
		return nil, revocations{}, errors.New("auth_hmac_secret and auth_hmac_secret_file are exclusive")
	}
	if cfg.HMACSecret != "" {
		if err := ks.add(key{key: []byte(cfg.HMACSecret)}, "auth_hmac_secret"); err != nil {
			return nil, revocations{}, err
		}
	}
	if f := cfg.HMACSecretFile; f != "" {
		b, err := ReadFile(f, MaxSecretFileBytes)
		if err != nil {
			return nil, revocations{}, fmt.Errorf("auth_hmac_secret_file %s: %w", f, err)
		}
		if err := ks.add(key{key: bytes.TrimSpace(b)}, "auth_hmac_secret_file "+f); err != nil {
			return nil, revocations{}, err
		}
	}
	for _, p := range cfg.Keys {
		files, err := keyFiles(p)
		if err != nil {
			return nil, revocations{}, fmt.Errorf("auth_keys: %w", err)
		}
		for _, f := range files {
			keys, err := readKeyFile(f)
			if err != nil {
				return nil, revocations{}, fmt.Errorf("auth_keys: %s: %w", f, err)
			}
			for _, k := range keys {
				if err := ks.add(k, "auth_keys "+f); err != nil {
					return nil, revocations{}, err
				}
			}
		}
	}
	revoked, err := loadRevocations(cfg)
	if err != nil {
		return nil, revocations{}, err
	}
	return ks, revoked, nil
}

// newKeySet returns a key set of keys (not empty) whose parser accepts
// exactly their algorithms and checks the claims cfg asks for.
func newKeySet(cfg *Config, keys []key, revoked revocations, timed *timedRevocations) *KeySet {
	var methods []string
	for _, k := range keys {
		for _, a := range k.algs {
			if !slices.Contains(methods, a) {
				methods = append(methods, a)
			}
		}
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		// One encoding per token: a token that differs from a good one in
		// base64 padding bits is not the same token.
		jwt.WithStrictDecoding(),
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	return &KeySet{keys: keys, parser: jwt.NewParser(opts...), revoked: revoked, timed: timed}
}

// keyFiles expands p: a directory gives its *.pem and *.json files (sorted),
// a file gives itself.
func keyFiles(p string) ([]string, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []string{p}, nil
	}
	entries, err := os.ReadDir(p)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		if ext := filepath.Ext(e.Name()); !e.IsDir() && (ext == ".pem" || ext == ".json") {
			files = append(files, filepath.Join(p, e.Name()))
		}
	}
	return files, nil
}

// readKeyFile reads a JWKS (*.json) or one PEM public key, whose kid is the
// file name without its extension.
func readKeyFile(f string) ([]key, error) {
	b, err := ReadFile(f, maxJWKSBytes)
	if err != nil {
		return nil, err
	}
	if filepath.Ext(f) == ".json" {
		return parseJWKS(b)
	}
	k, err := parsePEM(b)
	if err != nil {
		return nil, err
	}
	return []key{{kid: strings.TrimSuffix(filepath.Base(f), filepath.Ext(f)), key: k}}, nil
}

// parsePEM reads exactly one public key: PKIX "PUBLIC KEY", PKCS #1 "RSA
// PUBLIC KEY" or the key of a "CERTIFICATE".
func parsePEM(b []byte) (any, error) {
	block, rest := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, errors.New("more than one PEM block: give one key per file (its name is the kid)")
	}
	switch block.Type {
	case "PUBLIC KEY":
		return x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		return x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		return c.PublicKey, nil
	}
	if strings.Contains(block.Type, "PRIVATE") {
		return nil, fmt.Errorf("a %s: give the gateway public keys only", block.Type)
	}
	return nil, fmt.Errorf("unsupported PEM block %q", block.Type)
}

// parseJWKS reads a JWK set with go-jose, which checks the key material (EC
// points on their curve, RSA sizes, x5c against the key). Keys of a type it
// does not know, or not for signatures, are skipped as RFC 7517 §5 asks;
// asymmetric private keys are refused: they have no business on a gateway.
func parseJWKS(b []byte) ([]key, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("cannot parse JWKS: %w", err)
	}
	var keys []key
	for i, raw := range set.Keys {
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(raw); err != nil {
			if errors.Is(err, jose.ErrUnsupportedKeyType) {
				continue
			}
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		if jwk.Use != "" && jwk.Use != "sig" {
			continue
		}
		_, symmetric := jwk.Key.([]byte)
		if !symmetric && !jwk.IsPublic() {
			return nil, fmt.Errorf("key %d (%q) holds private key material: give the gateway public keys only", i, jwk.KeyID)
		}
		if jwk.KeyID == "" {
			return nil, fmt.Errorf("key %d has no kid", i)
		}
		k := key{kid: jwk.KeyID, key: jwk.Key}
		if jwk.Algorithm != "" {
			k.algs = []string{jwk.Algorithm}
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// errNoKeys: the sources hold no key at all.
var errNoKeys = errors.New("auth: no key configured (auth_hmac_secret, auth_hmac_secret_file, auth_keys or auth_jwks_url)")

// setKeysLocked builds a key set from the sources and puts it in force:
// the node's own keys, then each JWKS URL's in order. A kid that an
// earlier source holds already is skipped (and logged): the node's files
// win over a URL, a URL over the next. Without any key it changes nothing
// and returns errNoKeys. a.mu is held.
func (a *Authenticator) setKeysLocked() error {
	keys := slices.Clone(a.local)
	for _, src := range a.jwks {
		for _, k := range src.keys {
			if keys.has(k.kid) {
				a.cfg.Logger.Warn("a JWKS URL repeats a key id held already; its key is skipped", "url", src.url, "kid", k.kid)
				continue
			}
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return errNoKeys
	}
	a.keys.Store(newKeySet(a.cfg, keys, a.revoked, a.timed))
	return nil
}
