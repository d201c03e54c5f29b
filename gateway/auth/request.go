package auth

import (
	"net"
	"net/http"
	"strings"
)

// BearerToken returns the token of r's Authorization: Bearer header. The
// scheme's case does not matter (RFC 9110 §11.1), as on the WebSocket
// port (codec.ParseRequest): some clients send "bearer".
func BearerToken(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

// Loopback reports whether a listener's address a is a loopback one. Its
// peers are the node's neighbours: the ingest port asks them no producer
// token, and the admin port no admin token unless it has one.
func Loopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
