package codec

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/bytedance/sonic"
)

// TestSonicJIT fails when sonic silently falls back to encoding/json, as it
// does on a Go version or an architecture it does not support: everything
// would still work, several times slower. BenchmarkParseIngest shows the
// JIT path at work.
func TestSonicJIT(t *testing.T) {
	if sonic.APIKind != sonic.UseSonicJSON {
		t.Fatal("sonic fell back to encoding/json (unsupported Go version or GOARCH): " +
			"upgrade github.com/bytedance/sonic or build with a Go version it supports")
	}
}

func TestAppendString(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		got := AppendString([]byte("prefix:"), in)
		if !strings.HasPrefix(string(got), "prefix:") {
			t.Fatalf("AppendString(%q) overwrote dst: %q", in, got)
		}
		got = got[len("prefix:"):]
		if string(got) != want {
			t.Fatalf("AppendString(%q) = %s, want %s", in, got, want)
		}
		// encoding/json reads it back as the input, with each invalid
		// byte turned into U+FFFD.
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("AppendString(%q) = %s: not a JSON string: %v", in, got, err)
		}
		if wantBack := string([]rune(in)); back != wantBack {
			t.Fatalf("AppendString(%q) decodes to %q, want %q", in, back, wantBack)
		}
		if !utf8.Valid(got) {
			t.Fatalf("AppendString(%q) = %q is not UTF-8", in, got)
		}
	}
	f("", `""`)
	f("paris", `"paris"`)
	f(`say "hi"`, `"say \"hi\""`)
	f(`C:\dir\`, `"C:\\dir\\"`)
	f("a\nb\rc\td", `"a\nb\rc\td"`)
	f("\x00\x01\x08\x0b\x0c\x1f", `"\u0000\u0001\u0008\u000b\u000c\u001f"`)
	f("\x7f", "\"\x7f\"")   // DEL needs no escape
	f(" /<>&'", `" /<>&'"`) // no HTML escaping
	f("é€𝄞", `"é€𝄞"`)
	f("\u2028\u2029", "\"\u2028\u2029\"")
	f("\ufffd", "\"\ufffd\"")
	// Invalid UTF-8: one U+FFFD per bad byte.
	f("\xff", "\"\ufffd\"")
	f("a\xffb", "\"a\ufffdb\"")
	f("\xc3", "\"\ufffd\"")                               // cut rune
	f("\xc3\"", "\"\ufffd\\\"\"")                         // cut rune before a quote
	f("\xe2\x82", "\"\ufffd\ufffd\"")                     // cut rune
	f("\xc0\xaf", "\"\ufffd\ufffd\"")                     // overlong '/'
	f("\xed\xa0\x80", "\"\ufffd\ufffd\ufffd\"")           // UTF-16 surrogate
	f("\xf4\x90\x80\x80", "\"\ufffd\ufffd\ufffd\ufffd\"") // above U+10FFFF
	f("ok\x80\\", "\"ok\ufffd\\\\\"")
}

// FuzzAppendString checks that any string comes out as one JSON string
// that encoding/json and sonic both read back as the input (invalid UTF-8
// becoming U+FFFD), appended behind a fuzzed prefix of dst.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "paris", `"\`, "\x00\x1f\x7f", "é€𝄞", "\u2028", "\xff", "a\xc3", "\xed\xa0\x80", "\\u0000", "</script>"} {
		f.Add(s, uint16(len(s)))
	}
	f.Fuzz(func(t *testing.T, s string, split uint16) {
		// The dst prefix is a fuzzed part of s itself.
		k := int(split) % (len(s) + 1)
		got := AppendString([]byte(s[:k]), s)
		if string(got[:k]) != s[:k] {
			t.Fatalf("AppendString overwrote dst")
		}
		enc := got[k:]
		if !json.Valid(enc) || !utf8.Valid(enc) {
			t.Fatalf("AppendString(%q) = %q: not valid JSON in UTF-8", s, enc)
		}
		want := s
		if !utf8.ValidString(s) {
			want = string([]rune(s))
		}
		var back string
		if err := json.Unmarshal(enc, &back); err != nil || back != want {
			t.Fatalf("AppendString(%q) = %s decodes to %q, %v; want %q", s, enc, back, err, want)
		}
		var sback string
		if err := api.Unmarshal(enc, &sback); err != nil || sback != want {
			t.Fatalf("AppendString(%q) = %s: sonic decodes %q, %v; want %q", s, enc, sback, err, want)
		}
	})
}
