package codec

import (
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCheckJSON(t *testing.T) {
	ok := func(in string) {
		t.Helper()
		if err := CheckJSON([]byte(in)); err != nil {
			t.Fatalf("CheckJSON(%q) = %v, want nil", in, err)
		}
		var v any
		if err := json.Unmarshal([]byte(in), &v); err != nil {
			t.Fatalf("CheckJSON accepts %q, which encoding/json refuses: %v", in, err)
		}
	}
	ok(`{}`)
	ok(` [ ] `)
	ok("\t\r\n{\"a\" : [ 1 , -2.5e-3 , true , false , null , \"x\" , { } ] }\n")
	ok(`"\"\\\/\b\f\n\r\t\u0000\u00e9\uFFFF\ud83d\ude00"`)
	ok(`"é€𝄞` + "\u2028\x7f" + `"`)
	ok(`0`)
	ok(`-0.0e+0`)
	ok(`1E2`)
	ok(`1.7976931348623157e308`)  // the largest float64
	ok(`-1.7976931348623158e308`) // rounds to it
	ok(`1e-400`)                  // underflows to 0, as encoding/json reads it
	ok(`0e99999999999999999999`)
	ok(`0.000001e310`)
	ok(strings.Repeat("9", 308))
	ok(strings.Repeat("[", MaxJSONDepth) + strings.Repeat("]", MaxJSONDepth))
	ok(`{"a":1,"a":2}`) // last wins everywhere

	bad := func(in, want string) {
		t.Helper()
		err := CheckJSON([]byte(in))
		if !errors.Is(err, ErrJSON) || !strings.Contains(err.Error(), want) {
			t.Fatalf("CheckJSON(%q) = %v, want an error mentioning %q", in, err, want)
		}
	}
	bad(``, "unexpected end of input")
	bad(`   `, "unexpected end of input")
	bad(`{`, "unexpected end of input")
	bad(`{"a"`, "unexpected end of input")
	bad(`{"a":`, "unexpected end of input")
	bad(`{"a":1`, "unexpected end of input")
	bad(`[1`, "unexpected end of input")
	bad(`"abc`, "unexpected end of input")
	bad(`"abc\`, "unexpected end of input")
	bad(`"\u12`, "invalid \\u escape at byte 1")
	bad(`{} {}`, "unexpected data after the value at byte 3")
	bad(`{},`, "unexpected data after the value")
	bad(`{"a":1,}`, "expected a member name at byte 7")
	bad(`{a:1}`, "expected a member name")
	bad(`{"a" 1}`, "expected ':'")
	bad(`{"a":1 "b":2}`, "expected ',' or '}'")
	bad(`[1 2]`, "expected ',' or ']'")
	bad(`[1,]`, "unexpected character at byte 3")
	bad(`tru`, "unexpected character")
	bad(`nul`, "unexpected character")
	bad(`NaN`, "unexpected character")
	bad(`Infinity`, "unexpected character")
	bad(`'a'`, "unexpected character")
	bad(`01`, "unexpected data after the value at byte 1")
	bad(`-`, "unexpected end of input")
	bad(`-a`, "invalid number at byte 1")
	bad(`+1`, "unexpected character")
	bad(`1.`, "unexpected end of input")
	bad(`1.e5`, "invalid number at byte 2")
	bad(`.5`, "unexpected character")
	bad(`1e`, "unexpected end of input")
	bad(`1e+`, "unexpected end of input")
	bad(`0x10`, "unexpected data after the value")
	bad(`1e309`, "number out of the range of a float64 at byte 0")
	bad(`[1,-1e400]`, "number out of the range of a float64 at byte 3")
	bad(`1.7976931348623159e308`, "float64")
	bad(strings.Repeat("9", 309), "float64")
	bad(`1e99999999999999999999`, "float64")
	bad(`"\x"`, "invalid escape at byte 1")
	bad(`"\0"`, "invalid escape")
	bad(`"\U00e9"`, "invalid escape")
	bad(`"\u00g9"`, "invalid \\u escape")
	bad(`"\ud800"`, "unpaired UTF-16 surrogate escape at byte 1")
	bad(`"\udfff"`, "unpaired UTF-16 surrogate escape")
	bad(`"\ud800\ud800"`, "unpaired UTF-16 surrogate escape")
	bad(`"\ud800\n"`, "unpaired UTF-16 surrogate escape")
	bad(`"\ud800\u00"`, "unpaired UTF-16 surrogate escape")
	bad(`"\ude00\ud83d"`, "unpaired UTF-16 surrogate escape")
	bad("\"a\x00\"", "control character in a string at byte 2")
	bad("\"\x1f\"", "control character in a string")
	bad("\"\t\"", "control character in a string")
	bad("\"\xff\"", "not valid UTF-8 at byte 1")
	bad("\"\xc3\"", "not valid UTF-8")
	bad("\"\xed\xa0\x80\"", "not valid UTF-8") // an encoded surrogate
	bad("\"\xc0\xaf\"", "not valid UTF-8")     // overlong
	bad("{}\xc3", "not valid UTF-8 at byte 2")
	bad("\xef\xbb\xbf{}", "unexpected character at byte 0") // no byte order mark
	bad(strings.Repeat("[", MaxJSONDepth+1)+strings.Repeat("]", MaxJSONDepth+1), "nested deeper than 128 at byte 128")
	bad(strings.Repeat(`{"a":`, MaxJSONDepth+1), "nested deeper than 128")

	// sonic's strict mode lets these through when 32 bytes or more follow
	// the bad escape (it checks escapes only in its scalar tail).
	long := strings.Repeat("b", 40)
	bad(`{"a\0":1,"`+long+`":2}`, "invalid escape at byte 3")
	bad(`["\0`+long+`"]`, "invalid escape")
}

func TestEachMember(t *testing.T) {
	type member struct{ name, val string }
	f := func(obj string, want ...member) {
		t.Helper()
		var got []member
		err := EachMember([]byte(obj), func(k string, v []byte) { got = append(got, member{k, string(v)}) })
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("EachMember(%s) = %q, %v; want %q", obj, got, err, want)
		}
	}
	f(`{}`)
	f(` { } `)
	f(`{"temp":21.5,"aqi":[1,2],"s":"x","o":{"a":null}}`,
		member{"temp", `21.5`}, member{"aqi", `[1,2]`}, member{"s", `"x"`}, member{"o", `{"a":null}`})
	f(` { "a" : 1 , "b" : { "c" : [ ] } } `, member{"a", `1`}, member{"b", `{ "c" : [ ] }`})
	f(`{"a":1,"a":2}`, member{"a", `1`}, member{"a", `2`})
	f(`{"\u00e9\"\\\/\b\f\n\r\t\ud83d\ude00x":true}`, member{"é\"\\/\b\f\n\r\t😀x", `true`})
	f(`{"\u0000":"\u0000"}`, member{"\x00", `"\u0000"`})

	bad := func(obj string) {
		t.Helper()
		called := false
		if err := EachMember([]byte(obj), func(string, []byte) { called = true }); !errors.Is(err, ErrJSON) || called {
			t.Fatalf("EachMember(%q) = %v (called: %v), want ErrJSON and no call", obj, err, called)
		}
	}
	bad(``)
	bad(`[]`)
	bad(`"{}"`)
	bad(`null`)
	bad(`{"a":}`)
	bad(`{"a":1,}`)
	bad(`{"a":1} x`)
	bad(`{"a":1,"b":1e400}`) // fails after a good member: nothing is passed
	bad("{\"a\":\"\xff\"}")
}

// surrogateEscape finds a \u escape of a UTF-16 surrogate (roughly: an
// escaped backslash before it fools it, which only makes the fuzz test
// laxer).
var surrogateEscape = regexp.MustCompile(`\\u[dD][89a-fA-F][0-9a-fA-F]{2}`)

// FuzzCheckJSON holds CheckJSON to encoding/json, input split at a fuzzed
// offset (the first part alone, then the whole): what it accepts,
// encoding/json decodes; what it refuses and encoding/json decodes is one
// of the documented narrowings (invalid UTF-8, which encoding/json turns
// into U+FFFD; a lone surrogate escape; nesting past MaxJSONDepth). On an object, EachMember passes the members encoding/json
// sees, the last of a repeated name winning.
func FuzzCheckJSON(f *testing.F) {
	for i, s := range []string{
		`{"a":1,"b":[true,null,"x\u00e9\ud83d\ude00"],"c":{"d":-1.5e-3}}`,
		`{"a\0":1,"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb":2}`,
		`{"v":1e400}`, `[1.7976931348623157e308]`, `"\ud800"`, `"\udc00\ud800"`,
		`{"a":1,"a":2}`, `{"\u0061":1,"a":2}`, `01`, `[1,]`, "\"\xff\"", `"\x"`,
		strings.Repeat("[", MaxJSONDepth+1) + strings.Repeat("]", MaxJSONDepth+1),
	} {
		f.Add([]byte(s), uint16(i*7))
	}
	check := func(t *testing.T, b []byte) {
		err := CheckJSON(b)
		var v any
		jerr := json.Unmarshal(b, &v)
		switch {
		case err == nil && jerr != nil:
			t.Fatalf("CheckJSON accepts %q, which encoding/json refuses: %v", b, jerr)
		case err != nil && !errors.Is(err, ErrJSON):
			t.Fatalf("CheckJSON(%q) = %v, not an ErrJSON", b, err)
		case err != nil && jerr == nil:
			if !(strings.Contains(err.Error(), "UTF-8") && !utf8.Valid(b)) &&
				!(strings.Contains(err.Error(), "surrogate") && surrogateEscape.Match(b)) &&
				!(strings.Contains(err.Error(), "nested deeper") && depth(v) > MaxJSONDepth) {
				t.Fatalf("CheckJSON(%q) = %v, but encoding/json reads it", b, err)
			}
		case err == nil && depth(v) > MaxJSONDepth:
			t.Fatalf("CheckJSON accepts %q, nested %d deep", b, depth(v))
		}
		want, isObj := v.(map[string]any)
		got := map[string]any{}
		merr := EachMember(b, func(k string, val []byte) {
			var x any
			if err := json.Unmarshal(val, &x); err != nil {
				t.Fatalf("EachMember(%q): member %q = %q: %v", b, k, val, err)
			}
			got[k] = x
		})
		if (merr == nil) != (err == nil && isObj) {
			t.Fatalf("EachMember(%q) = %v; CheckJSON %v, an object: %v", b, merr, err, isObj)
		}
		if merr == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("EachMember(%q) = %v, encoding/json reads %v", b, got, want)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, split uint16) {
		k := int(split) % (len(b) + 1)
		check(t, append([]byte(nil), b[:k]...))
		check(t, b)
	})
}

// depth returns the nesting of arrays and objects in v (a value decoded by
// encoding/json).
func depth(v any) int {
	d := 0
	switch v := v.(type) {
	case []any:
		for _, x := range v {
			d = max(d, depth(x))
		}
		return d + 1
	case map[string]any:
		for _, x := range v {
			d = max(d, depth(x))
		}
		return d + 1
	}
	return 0
}
