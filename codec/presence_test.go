package codec

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestPresenceShareRoundTrip(t *testing.T) {
	f := func(users []string, more int, wantUsers []string, wantMore int) {
		t.Helper()
		b := AppendPresenceShare(nil, users, more)
		if len(b) > MaxShareBytes || !json.Valid(b) {
			t.Fatalf("AppendPresenceShare(%d users, %d) = %d bytes, valid %v", len(users), more, len(b), json.Valid(b))
		}
		got, gotMore, err := ParsePresenceShare(b)
		if err != nil || !slices.Equal(got, wantUsers) || gotMore != wantMore {
			t.Fatalf("round trip of %d users, %d more = %d users, %d more, %v; want %d, %d",
				len(users), more, len(got), gotMore, err, len(wantUsers), wantMore)
		}
	}
	f(nil, 0, nil, 0)
	f([]string{"alice", "bob"}, 0, []string{"alice", "bob"}, 0)
	f([]string{`q"uote`, "tab\t", "é"}, 3, []string{`q"uote`, "tab\t", "é"}, 3)

	many := make([]string, MaxShareUsers+5)
	for i := range many {
		many[i] = "user-" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + strings.Repeat("0", i/26)
	}
	f(many, 1, many[:MaxShareUsers], 6)

	// Names too long or empty are counted, not listed.
	long := strings.Repeat("l", MaxShareUserLen+1)
	f([]string{"a", long, "", "b"}, 0, []string{"a", "b"}, 2)

	// The byte bound: names that escape to 6 bytes each fill 64 KiB first.
	ctl := make([]string, MaxShareUsers)
	for i := range ctl {
		ctl[i] = strings.Repeat("\x01", 250) + strings.Repeat("z", i/100) + string(rune('a'+i%26)) + string(rune('a'+i/26%26))
	}
	b := AppendPresenceShare(nil, ctl, 0)
	got, more, err := ParsePresenceShare(b)
	if err != nil || len(got) == 0 || len(got)+more != len(ctl) || len(b) > MaxShareBytes {
		t.Fatalf("byte bound: %d listed + %d more of %d in %d bytes, %v", len(got), more, len(ctl), len(b), err)
	}
}

func TestParsePresenceShareMalformed(t *testing.T) {
	var sb strings.Builder
	sb.WriteString(`{"users":[`)
	for i := range MaxShareUsers + 1 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`"u` + strings.Repeat("1", i/10) + string(rune('0'+i%10)) + `"`)
	}
	sb.WriteString(`]}`)
	for _, bad := range []string{
		``,
		`null`,
		`[]`,
		`"users"`,
		`{"users":"alice"}`,
		`{"users":[1]}`,
		`{"users":[""]}`,
		`{"users":["a","a"]}`,
		`{"users":["` + strings.Repeat("x", MaxShareUserLen+1) + `"]}`,
		`{"users":[],"more":-1}`,
		`{"users":[],"more":2147483648}`,
		`{"users":[],"more":1.5}`,
		`{"users":["a"]`,
		`{"users":["u0"`,
		sb.String(),
		"{\"users\":[\"\xff\"]}",
		`{"users":[]} ` + strings.Repeat(" ", MaxShareBytes),
	} {
		if users, more, err := ParsePresenceShare([]byte(bad)); !errors.Is(err, ErrPresenceShare) {
			name := bad
			if len(name) > 80 {
				name = name[:80] + "…"
			}
			t.Errorf("ParsePresenceShare(%q) = %d users, %d more, %v; want ErrPresenceShare", name, len(users), more, err)
		}
	}
	for _, ok := range []string{`{}`, ` {"users":[],"more":0} `, `{"more":4,"users":["a"],"node":"x"}`} {
		if _, _, err := ParsePresenceShare([]byte(ok)); err != nil {
			t.Errorf("ParsePresenceShare(%q): %v", ok, err)
		}
	}
}

// FuzzParsePresenceShare: whatever is accepted is within the bounds, and
// encodes again to a share that parses to the same users and more.
func FuzzParsePresenceShare(f *testing.F) {
	for _, s := range []string{
		`{"users":["alice","bob"],"more":2}`,
		`{"users":[],"more":0}`,
		`{"users":["a","a"]}`,
		`{"users":["\u00e9\n"],"more":1}`,
		`null`,
		`{"users":[1]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		users, more, err := ParsePresenceShare(b)
		if err != nil {
			if !errors.Is(err, ErrPresenceShare) {
				t.Fatalf("ParsePresenceShare(%q): unexpected error %v", b, err)
			}
			return
		}
		if len(users) > MaxShareUsers || more < 0 {
			t.Fatalf("ParsePresenceShare(%q) = %d users, %d more", b, len(users), more)
		}
		again, againMore, err := ParsePresenceShare(AppendPresenceShare(nil, users, more))
		if err != nil || !slices.Equal(again, users) || againMore != more {
			t.Fatalf("re-encoding %q: %q %d %v", b, again, againMore, err)
		}
	})
}
