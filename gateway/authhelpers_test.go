package gateway

import (
	"errors"
	"io"
	"net/http"
	"testing"

	"github.com/gorilla/websocket"

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

// dialAuth opens a gorilla connection with extra request headers and
// subprotocols. On a refused upgrade it returns the HTTP response (body
// read into the error text) and a nil client.
func dialAuth(t testing.TB, url string, h http.Header, protocols ...string) (*gorillaClient, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: readTimeout, Subprotocols: protocols}
	c, resp, err := d.Dial(url, h)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			err = errors.New(string(body))
		}
		return nil, resp, err
	}
	t.Cleanup(func() { _ = c.Close() })
	return &gorillaClient{c}, resp, nil
}

// mustDialAuth is dialAuth that fails the test unless the upgrade succeeds.
func mustDialAuth(t testing.TB, url string, h http.Header, protocols ...string) *gorillaClient {
	t.Helper()
	c, resp, err := dialAuth(t, url, h, protocols...)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("cannot dial %s: %d %s", url, status, err)
	}
	return c
}

// bearer returns an Authorization header for tok.
func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
