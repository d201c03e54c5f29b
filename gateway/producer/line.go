package producer

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// MaxIDLen is the longest "id" the gateway accepts (codec.MaxIDLen).
const MaxIDLen = 128

// frame is a validated message, ready to be appended to a connection's
// output.
type frame struct {
	// body is the JSON object without surrounding whitespace or newline. It
	// aliases the caller's line until appendFrame copies it.
	body []byte
	// id is the message id: the caller's, or the generated one when insert
	// is set.
	id string
	// insert says body has no "id" member: appendFrame writes `"id":"<id>"`
	// right after its opening brace, followed by a comma when comma is set
	// (body is not an empty object).
	insert, comma bool
}

// size is the length of the line appendFrame writes, without its newline.
func (f *frame) size() int {
	n := len(f.body)
	if f.insert {
		n += len(`"id":""`) + len(f.id)
		if f.comma {
			n++
		}
	}
	return n
}

// appendFrame appends f and its newline to dst.
func appendFrame(dst []byte, f *frame) []byte {
	if !f.insert {
		dst = append(dst, f.body...)
		return append(dst, '\n')
	}
	// Generated ids are [0-9A-Za-z-] only, so they need no escaping.
	dst = append(dst, `{"id":"`...)
	dst = append(dst, f.id...)
	dst = append(dst, '"')
	if f.comma {
		dst = append(dst, ',')
	}
	dst = append(dst, f.body[1:]...)
	return append(dst, '\n')
}

// idProbe finds the member the gateway takes as the message id. Like the
// gateway's decoder, encoding/json matches keys case-insensitively and lets
// the last duplicate win, so both agree on which member that is.
type idProbe struct {
	ID json.RawMessage `json:"id"`
}

// parseLine validates one caller line and works out its id. newID is called
// only when the line has none. The returned frame aliases line.
//
// Every line the producer writes carries a non-empty id, so the gateway
// answers every line (an ack or an error) and answers can be matched to
// messages in order. That is why an empty or null "id", which the gateway
// would take as "no id" and leave unanswered, is refused here.
func parseLine(line []byte, maxBytes int, newID func() string) (frame, error) {
	var f frame
	body := bytes.TrimSpace(line)
	if len(body) == 0 {
		return f, fmt.Errorf("%w: empty line", ErrInvalidLine)
	}
	if bytes.IndexByte(body, '\n') >= 0 {
		return f, fmt.Errorf("%w: more than one line", ErrInvalidLine)
	}
	if body[0] != '{' {
		return f, fmt.Errorf("%w: not a JSON object", ErrInvalidLine)
	}
	// Refuse oversized lines before paying for a parse.
	if len(body) > maxBytes {
		return f, fmt.Errorf("%w: %d bytes, the limit is %d", ErrLineTooLong, len(body), maxBytes)
	}
	var probe idProbe
	if err := json.Unmarshal(body, &probe); err != nil {
		return f, fmt.Errorf("%w: cannot parse JSON object: %w", ErrInvalidLine, err)
	}
	f.body = body
	if probe.ID == nil {
		f.id, f.insert = newID(), true
		f.comma = bytes.TrimLeft(body[1:], " \t\r")[0] != '}'
		if n := f.size(); n > maxBytes {
			return f, fmt.Errorf("%w: %d bytes with the inserted id, the limit is %d", ErrLineTooLong, n, maxBytes)
		}
		return f, nil
	}
	if bytes.Equal(probe.ID, []byte("null")) {
		return f, fmt.Errorf("%w: \"id\" is null (omit it to get a generated id)", ErrInvalidLine)
	}
	if err := json.Unmarshal(probe.ID, &f.id); err != nil {
		return f, fmt.Errorf("%w: \"id\" must be a string", ErrInvalidLine)
	}
	if f.id == "" {
		return f, fmt.Errorf("%w: \"id\" is empty (omit it to get a generated id)", ErrInvalidLine)
	}
	if len(f.id) > MaxIDLen {
		return f, fmt.Errorf("%w: \"id\" is longer than %d bytes", ErrInvalidLine, MaxIDLen)
	}
	return f, nil
}

// response is one answer line from the gateway.
type response struct {
	Ack   *string `json:"ack"`
	Seq   uint64  `json:"seq"`
	Error *string `json:"error"`
	Line  int     `json:"line"`
	// Retry, on an error, says the line was fine and the gateway's cluster
	// bus failed to store it: retryNotStored or retryMaybeStored.
	Retry string `json:"retry"`
}

// The gateway's "retry" values (codec.RetryNotStored, RetryMaybeStored).
const (
	retryNotStored   = "not_stored"
	retryMaybeStored = "maybe_stored"
)

// parseResponse parses one answer line (without its newline).
func parseResponse(line []byte) (response, error) {
	var r response
	if err := json.Unmarshal(line, &r); err != nil {
		return r, fmt.Errorf("cannot parse answer %.200q: %w", line, err)
	}
	if (r.Ack == nil) == (r.Error == nil) {
		return r, fmt.Errorf("answer %.200q has neither or both of \"ack\" and \"error\"", line)
	}
	return r, nil
}
