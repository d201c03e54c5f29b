package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/metrocast/metrocast/gateway/auth"
)

// The node's side of auth (gateway/auth verifies the tokens): its
// settings, reloading the keys, and revoking tokens at once, on every node
// of a cluster.

// authConfig is the node's auth_* settings, as gateway/auth takes them.
func (c *Config) authConfig() auth.Config {
	return auth.Config{
		HMACSecret:     c.AuthHMACSecret,
		HMACSecretFile: c.AuthHMACSecretFile,
		Keys:           c.AuthKeys,
		JWKSURL:        c.AuthJWKSURL,
		JWKSRefresh:    c.AuthJWKSRefresh,
		Audience:       c.AuthAudience,
		Issuer:         c.AuthIssuer,
		Leeway:         c.AuthLeeway,
		RevokedFile:    c.AuthRevokedFile,
		ReloadInterval: c.AuthReloadInterval,
		Logger:         c.Logger,
	}
}

// hasKeys reports whether c names any key.
func (c *Config) hasKeys() bool {
	return c.AuthHMACSecret != "" || c.AuthHMACSecretFile != "" || len(c.AuthKeys) > 0 || len(c.AuthJWKSURL) > 0
}

// ReloadKeys reads the key files again (Config.AuthHMACSecretFile,
// Config.AuthKeys) and the revocation list (Config.AuthRevokedFile) and
// swaps them in one step (auth.Authenticator.Reload): tokens signed with a
// new key are accepted from then on, tokens of a removed key are refused
// (connections already open keep their grant until it expires), and
// connections and producers holding a revoked token are closed. On error
// the old set stays. It also has the JWKS URLs fetched again, in the
// background. The binary calls it on SIGHUP. Safe for concurrent use.
func (s *Server) ReloadKeys() error {
	if s.auth == nil {
		return errors.New("no keys to reload: the node runs insecure")
	}
	return s.auth.Reload()
}

// errNotShared: a revocation holds on this node, but the cluster did not
// take it.
var errNotShared = errors.New("revoked on this node only")

// Revoke refuses every token of subject id (kind "sub"), or the token
// whose jti is id (kind "jti"), until until: from now on such a token is
// refused (token_revoked), connections holding one are sent auth_error and
// closed (4001) at once, and producers holding one at their next line. In
// cluster mode it is put in the revocation bucket, which every node
// follows; an error wrapping errNotShared says that failed and only this
// node revokes. Safe for concurrent use.
func (s *Server) Revoke(kind, id string, until time.Time) error {
	if s.auth == nil {
		return errors.New("the node runs insecure: it checks no token")
	}
	r := auth.Revocation{Kind: kind, ID: id, Until: until}
	if err := s.auth.Revoke(r); err != nil {
		return err
	}
	s.housekeepAll()
	s.cfg.Logger.Info("token revoked", kind, id, "until", until.UTC().Format(time.RFC3339))
	if err := s.bus.Revoke(r); err != nil {
		return fmt.Errorf("%w: cannot share it with the cluster: %w", errNotShared, err)
	}
	return nil
}

// maxRevokeBody bounds a POST /api/revoke body.
const maxRevokeBody = 8 << 10

// serveRevoke is POST /api/revoke: Server.Revoke with the body's
// revocation (auth.ParseRevokeRequest). 200 and the revocation as JSON; 400 for
// a bad body; 409 on an insecure node; 503 when the cluster could not take
// it (this node revokes it all the same: retry).
func (s *Server) serveRevoke(w http.ResponseWriter, r *http.Request) {
	if s.auth == nil {
		http.Error(w, "the node runs insecure: it checks no token", http.StatusConflict)
		return
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRevokeBody))
	if err != nil {
		http.Error(w, fmt.Sprintf("cannot read the body (at most %d bytes): %s", maxRevokeBody, err), http.StatusBadRequest)
		return
	}
	rv, err := auth.ParseRevokeRequest(b, time.Now())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := s.Revoke(rv.Kind, rv.ID, rv.Until); err != nil {
		// errNotShared, or auth's "too many timed revocations".
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{rv.Kind: rv.ID, "exp": rv.Until.Unix(), "cluster": s.shared})
}
