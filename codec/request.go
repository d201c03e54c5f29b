package codec

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Plain HTTP requests on the WebSocket port, beside the upgrade
// (upgrade.go): a Server-Sent Events stream and a city's history. The
// gateway tells them apart by the request line (RequestTarget) once the
// head is whole (RequestEnd), and parses the head in place, once.
const (
	// SSEPath serves a Server-Sent Events stream of the cities on its URL.
	SSEPath = "/sse"
	// HistoryPath serves the frames a node holds for one city, as NDJSON.
	HistoryPath = "/history"
)

// RequestTarget returns the method and the path (the target without its
// query) of the request line that starts head. The slices alias head; it
// allocates nothing. ok is false when the first line is not three words.
func RequestTarget(head []byte) (method, path []byte, ok bool) {
	line, _, _ := bytes.Cut(head, []byte("\r\n"))
	method, rest, ok1 := bytes.Cut(line, []byte(" "))
	target, _, ok2 := bytes.Cut(rest, []byte(" "))
	if !ok1 || !ok2 || len(method) == 0 || len(target) == 0 {
		return nil, nil, false
	}
	path, _, _ = bytes.Cut(target, []byte("?"))
	return method, path, true
}

// Request is a GET of SSEPath or HistoryPath, or its CORS preflight.
type Request struct {
	// Method is GET, or OPTIONS for a CORS preflight (nothing but Path,
	// Origin and ForwardedFor is parsed then).
	Method string
	// Path is SSEPath or HistoryPath.
	Path string

	// Cities, Since and Epoch are a stream's subscription, from the URL as
	// for a WebSocket (see Upgrade). A Last-Event-ID header replaces Since
	// and Epoch: it is where the stream the client had stopped, newer than
	// its URL.
	Cities []string
	Since  map[string]uint64
	Epoch  uint64
	// Filter is a stream's types= and minSeverity=, as a subscribe
	// message's filters; HasFilter when either is on the URL.
	Filter    Filter
	HasFilter bool
	// LastEventID is set when the request carried a Last-Event-ID header
	// (a resume, by a browser's EventSource or by hand).
	LastEventID bool

	// City is a history request's city=; its since= is Since[City] and
	// its epoch= Epoch.
	City string

	// Token is the bearer token: from "Authorization: Bearer", else from
	// ?token=. Empty when absent.
	Token string
	// Origin is the Origin header; empty when absent.
	Origin string
	// ForwardedFor is the X-Forwarded-For header, its lines joined with
	// commas; empty when absent. See ClientAddr.
	ForwardedFor string
}

// ParseRequest parses a whole request head (as delimited by RequestEnd)
// whose path is SSEPath or HistoryPath. An error is an *HTTPError to answer
// with (400, 405 or 505); the Request then holds whatever was parsed
// before it (Origin in particular, for CORS).
func ParseRequest(head []byte) (Request, error) {
	var (
		req                 Request
		headerToken, lastID string
		hasLastID, hasHost  bool
	)
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	if hasCTL(line) {
		return req, badRequest(fmt.Sprintf("control character in request line %q", clip(line)))
	}
	method, target, version, err := requestLine(line)
	if err != nil {
		return req, err
	}
	req.Method = method
	for rest = bytes.TrimSuffix(rest, []byte("\r\n")); len(rest) > 0; {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		if hasCTL(line) {
			// A bare CR or LF, or a NUL, is not in a field value (RFC
			// 9110 §5.5): Origin is written back (CORS), and a bare
			// line break there would split the response's head.
			return req, badRequest(fmt.Sprintf("control character in header line %q", clip(line)))
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(k) == 0 || bytes.ContainsAny(k, " \t") {
			// Line folding (obsolete, RFC 9112 §5.2) and a space before
			// the colon (§5.1) are refused as well.
			return req, badRequest(fmt.Sprintf("malformed header line %q", clip(line)))
		}
		v = bytes.TrimSpace(v)
		switch {
		case headerIs(k, "Host"):
			if hasHost {
				return req, badRequest("more than one Host header") // RFC 9112 §3.2
			}
			hasHost = true
		case headerIs(k, "Authorization"):
			if scheme, tok, ok := bytes.Cut(v, []byte(" ")); ok && headerIs(scheme, "Bearer") {
				headerToken = string(bytes.TrimSpace(tok))
			}
		case headerIs(k, "Origin"):
			req.Origin = string(v)
		case headerIs(k, "X-Forwarded-For"):
			if req.ForwardedFor != "" {
				req.ForwardedFor += ","
			}
			req.ForwardedFor += string(v)
		case headerIs(k, "Last-Event-ID"):
			lastID, hasLastID = string(v), true
		}
	}
	if version == "HTTP/1.1" && !hasHost {
		return req, badRequest("missing Host header") // RFC 9112 §3.2
	}
	path, query, _ := strings.Cut(target, "?")
	if path != SSEPath && path != HistoryPath {
		return req, &HTTPError{Status: http.StatusNotFound, Message: "not found"}
	}
	req.Path = path
	if method == http.MethodOptions {
		return req, nil
	}
	vals, err := url.ParseQuery(query)
	if err != nil {
		return req, badRequest("cannot parse query: " + err.Error())
	}
	if path == SSEPath {
		err = req.streamQuery(vals)
	} else {
		err = req.historyQuery(vals)
	}
	if err != nil {
		return req, badRequest(err.Error())
	}
	if headerToken != "" {
		req.Token = headerToken
	}
	if hasLastID && path == SSEPath {
		epoch, since, err := ParseEventID(lastID)
		if err != nil {
			return req, badRequest("Last-Event-ID: " + err.Error())
		}
		req.Epoch, req.Since, req.LastEventID = epoch, since, true
	}
	return req, nil
}

// hasCTL reports whether b holds a control character other than a
// horizontal tab (RFC 9110 §5.5, §5.6.2): a bare CR or LF, a NUL, DEL.
func hasCTL(b []byte) bool {
	for _, c := range b {
		if c < ' ' && c != '\t' || c == 0x7f {
			return true
		}
	}
	return false
}

// headerIs reports whether the header (or scheme) name k is name, in any
// case. It allocates nothing.
func headerIs(k []byte, name string) bool {
	return len(k) == len(name) && strings.EqualFold(string(k), name)
}

// requestLine splits "METHOD TARGET VERSION" and checks the method (GET or
// OPTIONS: 405) and the version (HTTP/1.0 or 1.1: 505).
func requestLine(line []byte) (method, target, version string, err error) {
	m, rest, ok1 := bytes.Cut(line, []byte(" "))
	t, v, ok2 := bytes.Cut(rest, []byte(" "))
	if !ok1 || !ok2 || len(m) == 0 || len(t) == 0 || t[0] != '/' || bytes.IndexByte(v, ' ') >= 0 {
		return "", "", "", badRequest(fmt.Sprintf("malformed request line %q", clip(line)))
	}
	method, target, version = string(m), string(t), string(v)
	switch {
	case version != "HTTP/1.1" && version != "HTTP/1.0":
		if strings.HasPrefix(version, "HTTP/") {
			return method, target, version, &HTTPError{Status: http.StatusHTTPVersionNotSupported, Message: "HTTP/1.1 only"}
		}
		return method, target, version, badRequest(fmt.Sprintf("malformed request line %q", clip(line)))
	case method != http.MethodGet && method != http.MethodOptions:
		return method, target, version, &HTTPError{Status: http.StatusMethodNotAllowed,
			Header: "Allow: GET, OPTIONS\r\n", Message: "method " + method + " not allowed: GET only"}
	}
	return method, target, version, nil
}

// streamQuery reads an SSE URL: the subscription as for a WebSocket URL,
// and a filter.
func (req *Request) streamQuery(vals url.Values) error {
	up, err := parseValues(vals)
	if err != nil {
		return err
	}
	req.Cities, req.Since, req.Epoch, req.Token = up.Cities, up.Since, up.Epoch, up.Token
	for _, v := range vals["types"] {
		for t := range strings.SplitSeq(v, ",") {
			k, ok := filterKind(t)
			if !ok {
				return fmt.Errorf("unknown type %q in types (data_update, alerts)", t)
			}
			req.Filter.Kinds |= k
			req.HasFilter = true
		}
	}
	if s := vals.Get("minSeverity"); s != "" {
		sev, ok := ParseSeverity(s)
		if !ok {
			return fmt.Errorf("unknown minSeverity %q (info, warning, critical)", s)
		}
		req.Filter.MinSeverity = sev
		req.HasFilter = true
	}
	return nil
}

// historyQuery reads a history URL: city (required), since and epoch.
func (req *Request) historyQuery(vals url.Values) error {
	req.City = vals.Get("city")
	if !ValidCity(req.City) {
		return fmt.Errorf("city=%q: want one city id (1-64 of a-z 0-9 - _)", req.City)
	}
	var since uint64
	if s := vals.Get("since"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return fmt.Errorf("cannot parse since %q: want the last seq you have", s)
		}
		since = n
	}
	req.Since = map[string]uint64{req.City: since}
	if s := vals.Get("epoch"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return fmt.Errorf("cannot parse epoch %q: %w", s, err)
		}
		req.Epoch = n
	}
	req.Token = vals.Get("token")
	return nil
}

func badRequest(msg string) *HTTPError {
	return &HTTPError{Status: http.StatusBadRequest, Message: msg}
}

// clip shortens b for an error message.
func clip(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// AppendResponse appends e as an HTTP response that ends the connection,
// with extra header lines (each ending in "\r\n", CORS for instance)
// after e's own.
func (e *HTTPError) AppendResponse(dst []byte, extra string) []byte {
	return AppendHTTPError(dst, e.Status, e.Header+extra, e.Message)
}
