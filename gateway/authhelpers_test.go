package gateway

import (
	"testing"

	"github.com/metrocast/metrocast/gateway/auth/authtest"
)

// The keys, key files and tokens of the auth tests are authtest's, which
// gateway/auth's own tests share.
var (
	getSigners     = authtest.Signers
	writePublicPEM = authtest.WritePublicPEM
	claims         = authtest.NewClaims
	mint           = authtest.Mint
	hs256Raw       = authtest.HS256Raw
	hs256          = authtest.HS256
	badTokens      = authtest.BadTokens
)

// authConfig returns a Config whose keys are the test signers'
// (authtest.KeyFiles), and the directory of their PEM files.
func authConfig(t testing.TB) (Config, string) {
	t.Helper()
	secret, keys := authtest.KeyFiles(t)
	return Config{AuthHMACSecretFile: secret, AuthKeys: []string{keys}}, keys
}
