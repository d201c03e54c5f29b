package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"

	"github.com/metrocast/metrocast/codec"
	"github.com/metrocast/metrocast/gateway/auth"
)

// MaxPublishBody bounds a POST /api/publish body. Lines are stored as
// they are read, one at a time; what the bound limits is the answers held
// for the response (an ack is ~30 bytes per line).
const MaxPublishBody = 64 << 20

// Publish is HTTP ingest (POST /api/publish), for producers that cannot hold a TCP
// connection: the body is one JSON frame or NDJSON, with the schema of the
// TCP port, and the response body is the answers the TCP port would send
// (application/x-ndjson). 200: every line was stored; 400: some line failed
// (the lines that have an ack were stored: do not resend them); 413: the
// body is over MaxPublishBody (the lines answered were stored); 503: the
// node is stopping, or every line that failed did so for a fault of the
// store (a BusError, answered with "retry"; resend those, after
// Retry-After).
//
// The admin port decides who may publish without a token: admin is true
// on an open port or for a request with the admin token. Any other
// request carries, on a node with keys, a producer token (as on the TCP
// port: its "publish" claim names the cities) as Authorization: Bearer;
// without one refuse answers it (401). Runs on net/http's goroutines.
func (in *Server) Publish(w http.ResponseWriter, r *http.Request, admin bool, refuse func(http.ResponseWriter, *http.Request, string)) {
	if !in.enter() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	defer in.leave()
	pc := &producerConn{in: in, addr: r.RemoteAddr}
	if !admin {
		tok, ok := auth.BearerToken(r)
		var g *auth.Grant
		err := errors.New("no token")
		if ok && in.cfg.Auth != nil {
			g, err = in.cfg.Auth.ProducerGrant(tok)
		}
		if err != nil {
			in.authFailures.Add(1)
			refuse(w, r, "a producer token or the admin token is required: Authorization: Bearer <jwt>")
			return
		}
		pc.grant, pc.sub = g, g.Sub()
	}
	body := http.MaxBytesReader(w, r.Body, MaxPublishBody)
	rc := http.NewResponseController(w)
	lr := newLineReader(body, in.cfg.MaxLineBytes, in.cfg.Live().LineTimeout, rc.SetReadDeadline)
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
