package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/metrocast/metrocast/codec"
	"github.com/metrocast/metrocast/gateway/auth"
)

// maxPublishBody bounds a POST /api/publish body. Lines are published as
// they are read, one at a time; what the bound limits is the answers held
// for the response (an ack is ~30 bytes per line).
const maxPublishBody = 64 << 20

// servePublish is HTTP ingest, for producers that cannot hold a TCP
// connection: the body is one JSON frame or NDJSON, with the schema of the
// TCP port, and the response body is the answers the TCP port would send
// (application/x-ndjson). 200: every line was stored; 400: some line failed
// (the lines that have an ack were stored: do not resend them); 413: the
// body is over maxPublishBody (the lines answered were stored); 503: the
// node is stopping, or every line that failed did so for a fault of the
// cluster bus (answered with "retry"; resend those, after Retry-After).
//
// On an admin port that is not open (see admin), the request carries the
// admin token, or, on a node with keys, a producer token (as on the TCP
// port: its "publish" claim names the cities), as Authorization: Bearer;
// 401 without either.
func (s *Server) servePublish(a *admin, w http.ResponseWriter, r *http.Request) {
	in := s.ingest
	if !in.enter() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	defer in.leave()
	pc := &producerConn{in: in, addr: r.RemoteAddr}
	if !a.open && !a.isAdmin(r) {
		tok, ok := bearerToken(r)
		var g *auth.Grant
		err := errors.New("no token")
		if ok && s.auth != nil {
			g, err = s.auth.ProducerGrant(tok)
		}
		if err != nil {
			in.authFailures.Add(1)
			a.refuse(w, r, "a producer token or the admin token is required: Authorization: Bearer <jwt>")
			return
		}
		pc.grant, pc.sub = g, g.Sub()
	}
	body := http.MaxBytesReader(w, r.Body, maxPublishBody)
	rc := http.NewResponseController(w)
	lr := newLineReader(body, s.cfg.IngestMaxLineBytes, s.live.Load().IngestLineTimeout, rc.SetReadDeadline)
	var out bytes.Buffer
	failed, retry, err := in.serveLines(pc, lr, &out, nil)
	code := http.StatusOK
	var tooBig *http.MaxBytesError
	switch {
	case errors.Is(err, errLineTimeout):
		code = http.StatusRequestTimeout
	case errors.As(err, &tooBig):
		code = http.StatusRequestEntityTooLarge
		out.Write(codec.AppendIngestError(nil, fmt.Sprintf("body larger than %d bytes", tooBig.Limit), 0))
	case err != nil:
		// The client went away mid-body; it will not read this.
		code = http.StatusBadRequest
	case failed > retry:
		code = http.StatusBadRequest
	case failed > 0:
		code = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "1")
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(code)
	_, _ = w.Write(out.Bytes())
}

// isLoopback reports whether a listener's address a is a loopback one.
func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
