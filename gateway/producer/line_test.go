package producer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/metrocast/metrocast/codec"
)

func TestMaxIDLenMatchesCodec(t *testing.T) {
	if MaxIDLen != codec.MaxIDLen {
		t.Fatalf("producer.MaxIDLen is %d, codec.MaxIDLen is %d", MaxIDLen, codec.MaxIDLen)
	}
}

func TestParseLine(t *testing.T) {
	newID := func() string { return "gen-1" }
	f := func(in, want string, wantErr error) {
		t.Helper()
		fr, err := parseLine([]byte(in), 300, newID)
		if wantErr != nil {
			if !errors.Is(err, wantErr) {
				t.Fatalf("parseLine(%q): err %v, want %v", in, err, wantErr)
			}
			return
		}
		if err != nil {
			t.Fatalf("parseLine(%q): %s", in, err)
		}
		got := string(appendFrame(nil, &fr))
		if got != want+"\n" {
			t.Fatalf("parseLine(%q) writes %q, want %q", in, got, want+"\n")
		}
		if fr.size() != len(want) {
			t.Fatalf("parseLine(%q): size %d, want %d", in, fr.size(), len(want))
		}
	}
	// An id is inserted when there is none.
	f(`{"city":"a"}`, `{"id":"gen-1","city":"a"}`, nil)
	f(`{}`, `{"id":"gen-1"}`, nil)
	f("{ \t}", "{\"id\":\"gen-1\" \t}", nil)
	f("  {\"city\":\"a\"}\r\n", `{"id":"gen-1","city":"a"}`, nil)
	f(`{ "data":{"id":1}}`, `{"id":"gen-1", "data":{"id":1}}`, nil) // nested ids do not count
	// The caller's id is kept.
	f(`{"id":"x","city":"a"}`, `{"id":"x","city":"a"}`, nil)
	f(`{"city":"a","id":"x"}`, `{"city":"a","id":"x"}`, nil)
	f(`{"ID":"x"}`, `{"ID":"x"}`, nil) // the gateway matches keys case-insensitively too
	f(`{"id":"`+strings.Repeat("x", MaxIDLen)+`"}`, `{"id":"`+strings.Repeat("x", MaxIDLen)+`"}`, nil)
	// Refused before sending.
	f(``, "", ErrInvalidLine)
	f(" \r\n", "", ErrInvalidLine)
	f("{\"a\":1}\n{\"b\":2}", "", ErrInvalidLine)
	f(`[1]`, "", ErrInvalidLine)
	f(`"s"`, "", ErrInvalidLine)
	f(`{"city":"a"`, "", ErrInvalidLine)
	f(`{"city":"a"} x`, "", ErrInvalidLine)
	f(`{"id":""}`, "", ErrInvalidLine)
	f(`{"id":null}`, "", ErrInvalidLine)
	f(`{"id":7}`, "", ErrInvalidLine)
	f(`{"id":"`+strings.Repeat("x", MaxIDLen+1)+`"}`, "", ErrInvalidLine)
	f(`{"d":"`+strings.Repeat("x", 294)+`"}`, "", ErrLineTooLong)
	f(`{"d":"`+strings.Repeat("x", 280)+`"}`, "", ErrLineTooLong) // fits only without the inserted id
	f(`{"id":"x","d":"`+strings.Repeat("x", 283)+`"}`, `{"id":"x","d":"`+strings.Repeat("x", 283)+`"}`, nil)
}

func TestParseResponse(t *testing.T) {
	f := func(in string, wantAck string, wantSeq uint64, wantErr string, wantLine int, ok bool) {
		t.Helper()
		r, err := parseResponse([]byte(in))
		if (err == nil) != ok {
			t.Fatalf("parseResponse(%q): err %v, want ok=%v", in, err, ok)
		}
		if !ok {
			return
		}
		var ack, msg string
		if r.Ack != nil {
			ack = *r.Ack
		}
		if r.Error != nil {
			msg = *r.Error
		}
		if ack != wantAck || r.Seq != wantSeq || msg != wantErr || r.Line != wantLine {
			t.Fatalf("parseResponse(%q) = %q %d %q %d", in, ack, r.Seq, msg, r.Line)
		}
	}
	f(`{"ack":"a-1","seq":42}`, "a-1", 42, "", 0, true)
	f(`{"ack":"\u00e9","seq":1}`, "é", 1, "", 0, true)
	f(`{"error":"missing \"city\"","line":3}`, "", 0, `missing "city"`, 3, true)
	f(`{"error":"too many producer connections","line":0}`, "", 0, "too many producer connections", 0, true)
	f(`{"seq":1}`, "", 0, "", 0, false)
	f(`{"ack":"a","error":"b"}`, "", 0, "", 0, false)
	f(`nonsense`, "", 0, "", 0, false)
}

func TestBackoff(t *testing.T) {
	o := Options{ReconnectMin: 100, ReconnectMax: 1000}.withDefaults()
	f := func(failures int, lo, hi int64) {
		t.Helper()
		for range 100 {
			if d := o.backoff(failures); int64(d) < lo || int64(d) > hi {
				t.Fatalf("backoff(%d) = %d, want [%d, %d]", failures, d, lo, hi)
			}
		}
	}
	f(1, 50, 100)
	f(2, 100, 200)
	f(4, 400, 800)
	f(5, 500, 1000)
	f(1000, 500, 1000)
}

// FuzzParseLine checks that whatever parseLine accepts is written as one
// line of valid JSON whose "id" is the one the producer expects an ack for.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{`{}`, `{"city":"a","data":{"id":1}}`, `{"id":"x"}`, ` { "a" : [ ] } `, `{"ID":"y","id":"z"}`, "{\"a\":\"\xff\"}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		fr, err := parseLine(line, 512, func() string { return "gen-1" })
		if err != nil {
			return
		}
		out := appendFrame(nil, &fr)
		if bytes.IndexByte(out, '\n') != len(out)-1 {
			t.Fatalf("%q is not one line", out)
		}
		if len(out)-1 != fr.size() || fr.size() > 512 {
			t.Fatalf("%q: size %d, limit 512", out, fr.size())
		}
		if !json.Valid(out) {
			t.Fatalf("%q is not valid JSON", out)
		}
		var p idProbe
		var id string
		if err := json.Unmarshal(out, &p); err != nil || json.Unmarshal(p.ID, &id) != nil || id != fr.id || id == "" {
			t.Fatalf("%q: id %q, want %q", out, p.ID, fr.id)
		}
	})
}

// splitReader returns data in two reads split at off.
func splitReader(data []byte, off int) io.Reader {
	off = min(max(off, 0), len(data))
	return io.MultiReader(bytes.NewReader(data[:off]), bytes.NewReader(data[off:]))
}

// FuzzReadAnswer feeds answer bytes split at a fuzzed offset through a small
// buffer and checks readAnswer yields the same lines as splitting the whole
// input, with over-long lines flagged rather than buffered.
func FuzzReadAnswer(f *testing.F) {
	f.Add([]byte("{\"ack\":\"a\",\"seq\":1}\n{\"error\":\"x\",\"line\":2}\n"), 5)
	f.Add(append(bytes.Repeat([]byte("y"), maxAnswerBytes+10), "\nz\n"...), 70000)
	f.Add([]byte("\n\nunterminated"), 1)
	f.Fuzz(func(t *testing.T, data []byte, off int) {
		br := bufio.NewReaderSize(splitReader(data, off), 16)
		want := bytes.SplitAfter(data, []byte("\n"))
		var buf []byte
		for i, w := range want {
			if len(w) == 0 {
				break
			}
			line, tooLong, err := readAnswer(br, buf[:0])
			buf = line
			if w[len(w)-1] != '\n' {
				if err == nil {
					t.Fatalf("line %d %q is unterminated, want an error", i, w)
				}
				return
			}
			if err != nil {
				t.Fatalf("line %d: %s", i, err)
			}
			w = w[:len(w)-1]
			if tooLong != (len(w) > maxAnswerBytes) {
				t.Fatalf("line %d (%d bytes): tooLong %v", i, len(w), tooLong)
			}
			if !tooLong && !bytes.Equal(line, w) {
				t.Fatalf("line %d = %q, want %q", i, line, w)
			}
		}
		if _, _, err := readAnswer(br, nil); err == nil {
			t.Fatal("read past the end")
		}
	})
}
