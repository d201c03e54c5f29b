package auth

import (
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/metrocast/metrocast/gateway/auth/authtest"
)

// BenchmarkClientGrant verifies a client token per algorithm: the cost an
// event loop pays per authenticated handshake or auth message.
func BenchmarkClientGrant(b *testing.B) {
	cfg := testConfig(b)
	a, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	sg := authtest.Signers(b)
	c := authtest.NewClaims("bench", time.Hour, "nairobi", "lagos")
	for _, bc := range []struct {
		name string
		tok  string
	}{
		{"HS256", authtest.Mint(b, jwt.SigningMethodHS256, sg.HMAC, "", c)},
		{"RS256", authtest.Mint(b, jwt.SigningMethodRS256, sg.RSA, "rsa", c)},
		{"ES256", authtest.Mint(b, jwt.SigningMethodES256, sg.EC, "ec", c)},
		{"EdDSA", authtest.Mint(b, jwt.SigningMethodEdDSA, sg.Ed, "ed", c)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.tok)))
			for b.Loop() {
				if _, err := a.ClientGrant(bc.tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
