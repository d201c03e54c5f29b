package gateway

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
	kid  string // "" for the HMAC secret of AuthHMACSecret(File)
	algs []string
	key  any // []byte, *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

// keySet is the keys in force, a parser that accepts exactly their
// algorithms, and the revoked tokens. Immutable once built.
type keySet struct {
	keys    []key
	parser  *jwt.Parser
	revoked revocations
}

func (ks *keySet) kids() []string {
	kids := make([]string, 0, len(ks.keys))
	for _, k := range ks.keys {
		kids = append(kids, cmp.Or(k.kid, "(hmac secret)"))
	}
	return kids
}

// hasKeys reports whether c names any key.
func (c *Config) hasKeys() bool {
	return c.AuthHMACSecret != "" || c.AuthHMACSecretFile != "" || len(c.AuthKeys) > 0
}

// loadKeys reads every configured key. Errors name the config key and file.
func loadKeys(cfg *Config) (*keySet, error) {
	ks := &keySet{}
	add := func(k key, src string) error {
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
		for _, o := range ks.keys {
			if o.kid == k.kid {
				return fmt.Errorf("%s: key id %q is used twice", src, k.kid)
			}
		}
		ks.keys = append(ks.keys, k)
		return nil
	}
	if cfg.AuthHMACSecret != "" && cfg.AuthHMACSecretFile != "" {
		return nil, errors.New("auth_hmac_secret and auth_hmac_secret_file are exclusive")
	}
	if cfg.AuthHMACSecret != "" {
		if err := add(key{key: []byte(cfg.AuthHMACSecret)}, "auth_hmac_secret"); err != nil {
			return nil, err
		}
	}
	if f := cfg.AuthHMACSecretFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("auth_hmac_secret_file: %w", err)
		}
		if err := add(key{key: bytes.TrimSpace(b)}, "auth_hmac_secret_file "+f); err != nil {
			return nil, err
		}
	}
	for _, p := range cfg.AuthKeys {
		files, err := keyFiles(p)
		if err != nil {
			return nil, fmt.Errorf("auth_keys: %w", err)
		}
		for _, f := range files {
			keys, err := readKeyFile(f)
			if err != nil {
				return nil, fmt.Errorf("auth_keys: %s: %w", f, err)
			}
			for _, k := range keys {
				if err := add(k, "auth_keys "+f); err != nil {
					return nil, err
				}
			}
		}
	}
	if len(ks.keys) == 0 {
		return nil, errors.New("auth: no key configured (auth_hmac_secret, auth_hmac_secret_file or auth_keys)")
	}
	var methods []string
	for _, k := range ks.keys {
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
		jwt.WithLeeway(cfg.AuthLeeway),
		// One encoding per token: a token that differs from a good one in
		// base64 padding bits is not the same token.
		jwt.WithStrictDecoding(),
	}
	if cfg.AuthAudience != "" {
		opts = append(opts, jwt.WithAudience(cfg.AuthAudience))
	}
	if cfg.AuthIssuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.AuthIssuer))
	}
	ks.parser = jwt.NewParser(opts...)
	var err error
	if ks.revoked, err = loadRevocations(cfg); err != nil {
		return nil, err
	}
	return ks, nil
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
	b, err := os.ReadFile(f)
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
