package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// demoSecret is where `make run` keeps the secret of its demo tokens:
// loadtest mints with it when it exists and no token is given, so that it
// runs against the node beside it as it is.
const demoSecret = "bin/demo-hmac-secret"

// resolveTokens sets the client token (sent on the URL and in the auth
// message) and the producer token (sent first on the ingest connection):
// -token-file or METROCAST_TOKEN (and METROCAST_INGEST_TOKEN, as for
// metrocast push), else both minted with an HMAC secret (the producer's
// only for an ingest port beyond loopback): the
// -auth-hmac-secret-file, else the demo secret when it exists, else
// METROCAST_AUTH_HMAC_SECRET. Without any, no token is sent (an -insecure
// node).
func (o *options) resolveTokens(secretGiven bool) error {
	o.IngestToken = os.Getenv("METROCAST_INGEST_TOKEN")
	switch {
	case o.TokenFile != "":
		b, err := os.ReadFile(o.TokenFile)
		if err != nil {
			return fmt.Errorf("-token-file: %w", err)
		}
		o.Token = string(bytes.TrimSpace(b))
		return nil
	case os.Getenv("METROCAST_TOKEN") != "":
		o.Token = os.Getenv("METROCAST_TOKEN")
		return nil
	}
	var secret []byte
	switch {
	case secretGiven:
		b, err := os.ReadFile(o.SecretFile)
		if err != nil {
			return fmt.Errorf("-auth-hmac-secret-file: %w", err)
		}
		secret = bytes.TrimSpace(b)
	case os.Getenv("METROCAST_AUTH_HMAC_SECRET") != "":
		secret = []byte(os.Getenv("METROCAST_AUTH_HMAC_SECRET"))
	default:
		b, err := os.ReadFile(demoSecret)
		if err != nil {
			return nil // no token
		}
		secret = bytes.TrimSpace(b)
	}
	if len(secret) == 0 {
		return errors.New("-auth-hmac-secret-file: the secret is empty")
	}
	// One token for the clients (every city) and the publisher (every
	// city), valid for as long as the run may take.
	now := time.Now()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub":     "loadtest",
		"cities":  []string{"*"},
		"publish": []string{"*"},
		"iat":     now.Unix(),
		"exp":     now.Add(o.limit() + time.Minute).Unix(),
	}).SignedString(secret)
	if err != nil {
		return fmt.Errorf("cannot mint a token: %w", err)
	}
	o.Token = tok
	if o.IngestToken == "" && !loopback(o.Ingest) {
		// A loopback ingest port takes no token (its producers are
		// trusted neighbours): an auth line there would be a bad frame.
		o.IngestToken = tok
	}
	return nil
}

// loopback reports whether addr (host:port) names this host.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
