package codec

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// What metrocast accepts as JSON from producers. The bytes a producer sends
// are spliced raw into the frames every client decodes, and merged into the
// city state: whatever is accepted must be read the same way by the merge
// (EachMember), by encoding/json (Go clients), by browsers' JSON.parse and by
// Python's json. So "valid" is RFC 8259 JSON narrowed to what all of them
// agree on, as I-JSON (RFC 7493) narrows it:
//
//   - UTF-8 only, inside and outside strings;
//   - escapes are the eight of RFC 8259 and \uXXXX, and a \u escape of a
//     UTF-16 surrogate must be half of a pair: a lone one decodes to U+FFFD
//     in Go and to a lone surrogate in JavaScript;
//   - numbers must fit a float64 (1e400 does not: encoding/json refuses it,
//     JavaScript reads Infinity);
//   - arrays and objects nest at most MaxJSONDepth deep.
//
// sonic's own validation cannot be the definition: it checks escapes only
// in the last 32 bytes of its input (its SIMD loops skip over them), so
// whether a bad escape is refused depends on the length of what follows.
// CheckJSON and EachMember are one scanner, so what the first accepts the
// second splits.

// MaxJSONDepth bounds the nesting of arrays and objects in an ingest line,
// the line's own object included. Far deeper than any dashboard needs, far
// below what the clients' parsers allow (Python's recursion limit is 1000).
const MaxJSONDepth = 128

// ErrJSON is wrapped by the errors of CheckJSON and EachMember.
var ErrJSON = errors.New("cannot parse JSON")

// CheckJSON returns nil if b holds exactly one JSON value (whitespace
// around it allowed) that every client reads the same (see above), or an
// error wrapping ErrJSON that says what is wrong and at which byte.
func CheckJSON(b []byte) error {
	s := scanner{b: b}
	if err := s.value(0); err != nil {
		return err
	}
	s.space()
	if s.i < len(b) {
		return s.fail("unexpected data after the value")
	}
	return nil
}

// EachMember calls fn for each member of the JSON object obj, in order, with
// the member's name (unescaped) and its raw value; a name that occurs twice
// is passed twice. It checks obj as CheckJSON does, and calls fn only once
// the whole of obj is known to be valid. The name and the value alias obj
// (the name when it has no escapes), so obj must not change while they are
// in use. It allocates only for names with escapes.
func EachMember(obj []byte, fn func(name string, val []byte)) error {
	if err := CheckJSON(obj); err != nil {
		return err
	}
	s := scanner{b: obj}
	s.space()
	if s.i == len(obj) || obj[s.i] != '{' {
		return fmt.Errorf("%w: not an object", ErrJSON)
	}
	return s.object(0, fn)
}

// scanner is a recursive-descent JSON checker over b; i is the next byte.
type scanner struct {
	b []byte
	i int
}

// fail returns the error for the byte at s.i.
func (s *scanner) fail(what string) error {
	if s.i >= len(s.b) {
		return fmt.Errorf("%w: unexpected end of input", ErrJSON)
	}
	if c := s.b[s.i]; c >= utf8.RuneSelf {
		if r, n := utf8.DecodeRune(s.b[s.i:]); r == utf8.RuneError && n <= 1 {
			return fmt.Errorf("%w: not valid UTF-8 at byte %d", ErrJSON, s.i)
		}
	}
	return fmt.Errorf("%w: %s at byte %d", ErrJSON, what, s.i)
}

func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// value checks one value after optional whitespace; depth is the nesting
// of the arrays and objects around it.
func (s *scanner) value(depth int) error {
	s.space()
	if s.i >= len(s.b) {
		return s.fail("")
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.object(depth, nil)
	case c == '[':
		return s.array(depth)
	case c == '"':
		_, err := s.str()
		return err
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return s.fail("unexpected character")
}

func (s *scanner) literal(lit string) error {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return s.fail("unexpected character")
	}
	s.i += len(lit)
	return nil
}

// object checks the object at s.i; with fn (EachMember, on checked input),
// it passes each member.
func (s *scanner) object(depth int, fn func(name string, val []byte)) error {
	if depth++; depth > MaxJSONDepth {
		return s.fail(fmt.Sprintf("arrays and objects nested deeper than %d", MaxJSONDepth))
	}
	s.i++ // {
	s.space()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return nil
	}
	for {
		s.space()
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return s.fail("expected a member name")
		}
		name := s.i + 1
		escaped, err := s.str()
		if err != nil {
			return err
		}
		nameEnd := s.i - 1
		s.space()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return s.fail("expected ':'")
		}
		s.i++
		s.space()
		vstart := s.i
		if err := s.value(depth); err != nil {
			return err
		}
		if fn != nil {
			fn(memberName(s.b[name:nameEnd], escaped), s.b[vstart:s.i])
		}
		s.space()
		if s.i >= len(s.b) {
			return s.fail("")
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return s.fail("expected ',' or '}'")
		}
	}
}

func (s *scanner) array(depth int) error {
	if depth++; depth > MaxJSONDepth {
		return s.fail(fmt.Sprintf("arrays and objects nested deeper than %d", MaxJSONDepth))
	}
	s.i++ // [
	s.space()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return nil
	}
	for {
		if err := s.value(depth); err != nil {
			return err
		}
		s.space()
		if s.i >= len(s.b) {
			return s.fail("")
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		default:
			return s.fail("expected ',' or ']'")
		}
	}
}

// str checks the string at s.i (its opening quote) and moves past its
// closing quote. escaped tells whether it holds any escape.
func (s *scanner) str() (escaped bool, err error) {
	s.i++ // "
	for s.i < len(s.b) {
		c := s.b[s.i]
		if plain[c] {
			s.i++
			continue
		}
		switch {
		case c == '"':
			s.i++
			return escaped, nil
		case c == '\\':
			escaped = true
			if err := s.escape(); err != nil {
				return escaped, err
			}
		case c < 0x20:
			return escaped, s.fail("control character in a string")
		default:
			r, n := utf8.DecodeRune(s.b[s.i:])
			if r == utf8.RuneError && n <= 1 {
				return escaped, s.fail("")
			}
			s.i += n
		}
	}
	return escaped, s.fail("")
}

// plain marks the bytes that stand for themselves in a string: ASCII but
// control characters, '"' and '\\'.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// escape checks the escape at s.i (its backslash) and moves past it.
func (s *scanner) escape() error {
	if s.i+1 >= len(s.b) {
		s.i = len(s.b)
		return s.fail("")
	}
	switch s.b[s.i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.i += 2
		return nil
	case 'u':
	default:
		return s.fail("invalid escape")
	}
	r, ok := hex4(s.b[s.i+2:])
	if !ok {
		return s.fail("invalid \\u escape")
	}
	switch {
	case utf16.IsSurrogate(r) && r < 0xdc00:
		// A high surrogate: a low one must follow.
		if lo, ok := hex4(s.b[min(s.i+8, len(s.b)):]); ok && s.b[s.i+6] == '\\' && s.b[s.i+7] == 'u' &&
			utf16.DecodeRune(r, lo) != utf8.RuneError {
			s.i += 12
			return nil
		}
		return s.fail("unpaired UTF-16 surrogate escape")
	case utf16.IsSurrogate(r):
		return s.fail("unpaired UTF-16 surrogate escape")
	}
	s.i += 6
	return nil
}

// hex4 decodes the four hex digits at the start of b.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// number checks the number at s.i and moves past it. It must also fit a
// float64: one whose integer digits and exponent may pass 10^308 is parsed
// to know (a rare case; strconv is exact at the boundary, and it is what
// encoding/json uses).
func (s *scanner) number() error {
	start := s.i
	if s.b[s.i] == '-' {
		s.i++
	}
	intStart := s.i
	switch {
	case s.i < len(s.b) && s.b[s.i] == '0':
		s.i++
	case s.i < len(s.b) && s.b[s.i] >= '1' && s.b[s.i] <= '9':
		s.digits()
	default:
		return s.fail("invalid number")
	}
	magnitude := s.i - intStart // decimal digits before the point
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if s.digits() == 0 {
			return s.fail("invalid number")
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		neg := false
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			neg = s.b[s.i] == '-'
			s.i++
		}
		expStart := s.i
		if s.digits() == 0 {
			return s.fail("invalid number")
		}
		if !neg {
			exp := 0
			for _, c := range s.b[expStart:s.i] {
				if exp = exp*10 + int(c-'0'); exp > 1000 {
					break
				}
			}
			magnitude += exp
		}
	}
	if magnitude > 308 {
		if _, err := strconv.ParseFloat(string(s.b[start:s.i]), 64); err != nil {
			s.i = start
			return s.fail("number out of the range of a float64")
		}
	}
	return nil
}

// digits moves past a run of decimal digits and returns its length.
func (s *scanner) digits() int {
	start := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	return s.i - start
}

// memberName returns the member name whose raw (checked) bytes between the
// quotes are raw: raw itself without escapes, else unescaped.
func memberName(raw []byte, escaped bool) string {
	if !escaped {
		return unsafe.String(unsafe.SliceData(raw), len(raw))
	}
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		switch raw[i+1] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, _ := hex4(raw[i+2:])
			i += 6
			if utf16.IsSurrogate(r) {
				lo, _ := hex4(raw[i+2:])
				r = utf16.DecodeRune(r, lo)
				i += 6
			}
			out = utf8.AppendRune(out, r)
			continue
		default: // " \ /
			out = append(out, raw[i+1])
		}
		i += 2
	}
	return string(out)
}
