package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"

	"github.com/metrocast/metrocast/codec"
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
// node is stopping.
func (s *Server) servePublish(w http.ResponseWriter, r *http.Request) {
	in := s.ingest
	if !in.enter() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	defer in.leave()
	body := http.MaxBytesReader(w, r.Body, maxPublishBody)
	var out bytes.Buffer
	failed, err := in.serveLines(newLineReader(body, s.cfg.IngestMaxLineBytes), &out, nil)
	code := http.StatusOK
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		code = http.StatusRequestEntityTooLarge
		out.Write(codec.AppendIngestError(nil, fmt.Sprintf("body larger than %d bytes", tooBig.Limit), 0))
	case err != nil:
		// The client went away mid-body; it will not read this.
		code = http.StatusBadRequest
	case failed > 0:
		code = http.StatusBadRequest
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(code)
	_, _ = w.Write(out.Bytes())
}
