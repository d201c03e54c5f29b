package main

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/metrocast/metrocast/gateway/auth"
)

// runToken implements `metrocast token`: it mints a token for tests and
// demos, signed with the HMAC secret a node verifies with, or with a private
// key whose public half the node has.
func runToken(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	var (
		sub     = fs.String("sub", "", "subject (user id); required")
		cities  listFlag
		publish listFlag
		ttl     = fs.Duration("ttl", time.Hour, "lifetime: exp = now + ttl")
		aud     = fs.String("aud", "", "audience claim (a node with -auth-audience wants it)")
		iss     = fs.String("iss", "", "issuer claim (a node with -auth-issuer wants it)")
		jti     = fs.String("jti", "", "token id claim, so that this token alone can be revoked (auth_revoked_file: jti <id>)")
		kid     = fs.String("kid", "", "key id in the header: the name of the node's PEM file, or a JWKS kid")
		alg     = fs.String("alg", "HS256", "HMAC algorithm with a secret: HS256, HS384 or HS512")
		secretF = fs.String("auth-hmac-secret-file", "", "file holding the HMAC secret (else METROCAST_AUTH_HMAC_SECRET)")
		keyF    = fs.String("key", "", "PEM private key (RSA: RS256, EC: ES256/384/512, Ed25519: EdDSA) instead of a secret")
	)
	fs.Var(&cities, "cities", "comma-separated cities a WebSocket client may follow, or * for all")
	fs.Var(&publish, "publish", "comma-separated cities a producer may publish to, or * for all")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: metrocast token -sub NAME (-cities LIST | -publish LIST) [flags]

Prints a signed JWT for a metrocast node, e.g.
  metrocast token -sub alice -cities nairobi,lagos -ttl 1h

flags:
`)
		printFlags(fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return &usageError{fmt.Sprintf("token: unexpected argument %q (flags only; metrocast token -h lists them)", fs.Arg(0))}
	case *sub == "":
		return errors.New("token: -sub is required")
	case len(cities) == 0 && len(publish) == 0:
		return errors.New("token: give -cities (for a client) or -publish (for a producer)")
	case *ttl <= 0:
		return fmt.Errorf("token: -ttl (%s) must be > 0", *ttl)
	}
	method, key, err := signingKey(*keyF, *secretF, *alg)
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	now := time.Now()
	c := auth.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   *sub,
			Issuer:    *iss,
			ID:        *jti,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(*ttl)),
		},
		Cities:  cities,
		Publish: publish,
	}
	if *aud != "" {
		c.Audience = jwt.ClaimStrings{*aud}
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("token: %w", err)
	}
	t := jwt.NewWithClaims(method, &c)
	if *kid != "" {
		t.Header["kid"] = *kid
	}
	s, err := t.SignedString(key)
	if err != nil {
		return fmt.Errorf("token: cannot sign: %w", err)
	}
	_, err = fmt.Fprintln(stdout, s)
	return err
}

// signingKey loads the private key or the HMAC secret and picks the method.
func signingKey(keyFile, secretFile, alg string) (jwt.SigningMethod, any, error) {
	if keyFile != "" {
		b, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, nil, err
		}
		block, _ := pem.Decode(b)
		if block == nil {
			return nil, nil, fmt.Errorf("%s: no PEM block", keyFile)
		}
		var k crypto.PrivateKey
		switch block.Type {
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", keyFile, err)
		}
		switch k := k.(type) {
		case *rsa.PrivateKey:
			return jwt.SigningMethodRS256, k, nil
		case *ecdsa.PrivateKey:
			switch k.Curve.Params().BitSize {
			case 256:
				return jwt.SigningMethodES256, k, nil
			case 384:
				return jwt.SigningMethodES384, k, nil
			case 521:
				return jwt.SigningMethodES512, k, nil
			}
		case ed25519.PrivateKey:
			return jwt.SigningMethodEdDSA, k, nil
		}
		return nil, nil, fmt.Errorf("%s: unsupported key type %T", keyFile, k)
	}
	var secret []byte
	switch {
	case secretFile != "":
		b, err := os.ReadFile(secretFile)
		if err != nil {
			return nil, nil, err
		}
		secret = bytes.TrimSpace(b)
	case os.Getenv("METROCAST_AUTH_HMAC_SECRET") != "":
		secret = []byte(os.Getenv("METROCAST_AUTH_HMAC_SECRET"))
	default:
		return nil, nil, errors.New("no key: give -key, -auth-hmac-secret-file or METROCAST_AUTH_HMAC_SECRET")
	}
	switch alg {
	case "HS256":
		return jwt.SigningMethodHS256, secret, nil
	case "HS384":
		return jwt.SigningMethodHS384, secret, nil
	case "HS512":
		return jwt.SigningMethodHS512, secret, nil
	}
	return nil, nil, fmt.Errorf("-alg %q: want HS256, HS384 or HS512", alg)
}
