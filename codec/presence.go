package codec

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// A presence share is one node's watchers of one city, as nodes exchange
// them in cluster mode (the value of the node's key in the presence
// bucket): {"users":["alice","bob"],"more":2}. Users are JWT subjects, each
// once; more counts the node's watchers the share leaves out to stay
// within its bounds.
const (
	// MaxShareUsers bounds the users one share lists.
	MaxShareUsers = 1000
	// MaxShareUserLen bounds a listed user's length in bytes; longer
	// subjects are counted in more.
	MaxShareUserLen = 256
	// MaxShareBytes bounds an encoded share.
	MaxShareBytes = 64 << 10
	// maxShareMore bounds more, so that sums over nodes cannot overflow.
	maxShareMore = 1 << 30
)

// ErrPresenceShare is wrapped by ParsePresenceShare's errors.
var ErrPresenceShare = errors.New("invalid presence share")

// AppendPresenceShare appends the share of users (listed in the order
// given) and more, listing users while the bounds allow and counting the
// rest in more.
func AppendPresenceShare(dst []byte, users []string, more int) []byte {
	start := len(dst)
	dst = append(dst, `{"users":[`...)
	listed := 0
	for _, u := range users {
		// Room for the name's worst-case escaping, the comma and the tail.
		if listed == MaxShareUsers || u == "" || len(u) > MaxShareUserLen ||
			len(dst)-start+6*len(u)+3+len(`],"more":`)+10+1 > MaxShareBytes {
			more++
			continue
		}
		if listed > 0 {
			dst = append(dst, ',')
		}
		dst = AppendString(dst, u)
		listed++
	}
	dst = append(dst, `],"more":`...)
	dst = strconv.AppendInt(dst, int64(min(more, maxShareMore)), 10)
	return append(dst, '}')
}

// ParsePresenceShare parses a share: at most MaxShareBytes, a JSON object
// with "users" (at most MaxShareUsers distinct, non-empty names of at most
// MaxShareUserLen bytes) and "more" (≥ 0). The names are copies.
func ParsePresenceShare(b []byte) (users []string, more int, err error) {
	if len(b) > MaxShareBytes {
		return nil, 0, fmt.Errorf("%w: %d bytes, more than %d", ErrPresenceShare, len(b), MaxShareBytes)
	}
	var j struct {
		Users []string `json:"users"`
		More  int      `json:"more"`
	}
	if !utf8.Valid(b) || !isObject(b) || api.Unmarshal(b, &j) != nil {
		return nil, 0, fmt.Errorf("%w: cannot parse JSON object", ErrPresenceShare)
	}
	if len(j.Users) > MaxShareUsers {
		return nil, 0, fmt.Errorf("%w: %d users, more than %d", ErrPresenceShare, len(j.Users), MaxShareUsers)
	}
	if j.More < 0 || j.More > maxShareMore {
		return nil, 0, fmt.Errorf("%w: more (%d) out of [0, %d]", ErrPresenceShare, j.More, maxShareMore)
	}
	seen := make(map[string]struct{}, len(j.Users))
	for _, u := range j.Users {
		if u == "" || len(u) > MaxShareUserLen {
			return nil, 0, fmt.Errorf("%w: user names must be 1-%d bytes", ErrPresenceShare, MaxShareUserLen)
		}
		if _, dup := seen[u]; dup {
			return nil, 0, fmt.Errorf("%w: user %q listed twice", ErrPresenceShare, u)
		}
		seen[u] = struct{}{}
	}
	return j.Users, j.More, nil
}

// isObject reports whether b's first non-space byte opens an object (sonic
// takes null for an empty struct).
func isObject(b []byte) bool {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		}
		return c == '{'
	}
	return false
}
