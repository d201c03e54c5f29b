package auth

import (
	"log/slog"
	"time"
)

// Config is where an Authenticator finds its keys and how it checks
// tokens: the node's auth_* settings (gateway.Config names each one's key
// and default). Zero fields mean none, or no check, as stated.
type Config struct {
	// HMACSecret is an HMAC secret (HS256/384/512 tokens without a kid),
	// at least 32 bytes. Empty: none.
	HMACSecret string
	// HMACSecretFile holds an HMAC secret (surrounding white space
	// trimmed); Reload reads it again. Empty: none.
	HMACSecretFile string
	// Keys lists PEM public keys (one per file, whose name without
	// extension is the kid), JWKS files (*.json) and directories holding
	// them; Reload reads them again. Empty: none.
	Keys []string
	// JWKSURL lists JWK set URLs of identity providers: https, or http to
	// a loopback host (CheckJWKSURL). Empty: none.
	JWKSURL []string
	// JWKSRefresh is the longest a JWKS URL's keys are kept before it is
	// fetched again (see jwks.go); it must be set when JWKSURL is.
	JWKSRefresh time.Duration
	// Audience, when set, must be among a token's aud.
	Audience string
	// Issuer, when set, must be a token's iss.
	Issuer string
	// Leeway is the clock skew allowed when checking exp, nbf and iat.
	Leeway time.Duration
	// RevokedFile lists revoked subjects and token ids (see revoke.go),
	// read again by Reload. Empty: none.
	RevokedFile string
	// ReloadInterval, when set, has WatchFiles look at the files this often
	// and Reload when one changed. Zero: Reload is called from outside
	// only.
	ReloadInterval time.Duration
	// Logger receives the warnings (a JWKS URL that fails, a key skipped)
	// and the reloads. Default slog.Default().
	Logger *slog.Logger
}
