package gateway

import (
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// BenchmarkClientGrant verifies a client token per algorithm: the cost an
// event loop pays per authenticated handshake or auth message.
func BenchmarkClientGrant(b *testing.B) {
	cfg, _ := authConfig(b)
	cfg = cfg.WithDefaults()
	a, err := newAuthenticator(&cfg)
	if err != nil {
		b.Fatal(err)
	}
	sg := getSigners(b)
	c := claims("bench", time.Hour, "nairobi", "lagos")
	for _, bc := range []struct {
		name string
		tok  string
	}{
		{"HS256", mint(b, jwt.SigningMethodHS256, sg.hmac, "", c)},
		{"RS256", mint(b, jwt.SigningMethodRS256, sg.rsa, "rsa", c)},
		{"ES256", mint(b, jwt.SigningMethodES256, sg.ec, "ec", c)},
		{"EdDSA", mint(b, jwt.SigningMethodEdDSA, sg.ed, "ed", c)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.tok)))
			for b.Loop() {
				if _, err := a.clientGrant(bc.tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
