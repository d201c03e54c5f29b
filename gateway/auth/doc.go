// Package auth verifies the JWTs of metrocast's clients and producers and
// says what each may do: the core asks it "may this token see this city"
// (Authenticator.ClientGrant, then Grant.Allows) and a producer's "may it
// publish there" (ProducerGrant). It holds the keys (key files, HMAC
// secrets, JWKS URLs refreshed in the background), the revocations (a
// file, and timed ones from Revoke), and a per-loop cache of verified
// tokens (TokenCache). It knows nothing of connections: what an event loop
// calls (ClientGrant, TokenCache.Grant, KeySet.Revokes) never waits.
//
// Files: auth.go (claims, grants, verification, the token cache), keys.go
// (key files and the key set in force), jwks.go (JWKS URLs), revoke.go
// (revocation lists, timed revocations, POST /api/revoke's body),
// readfile.go (bounded reads of the operator's files), config.go.
package auth
