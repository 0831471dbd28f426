package jsonscan

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSkipAcceptsExactlyValidJSON(t *testing.T) {
	good := []string{`{}`, `[]`, `"s"`, `0`, `-0.5e+10`, `true`, `null`, ` {"a" : [1, {"b":"\u00e9\n"}], "c":false} `, `"\ud83d\ude00"`, `{"":""}`, `[[[]]]`}
	bad := map[string]error{
		`{"a":`:     ErrTruncated,
		`{"a":"x`:   ErrTruncated,
		`[1,2`:      ErrTruncated,
		`tru`:       ErrTruncated,
		`{"a" "b"}`: ErrSyntax,
		`{"a":1,}`:  ErrSyntax,
		`[1,]`:      ErrSyntax,
		`[,1]`:      ErrSyntax,
		`{"a":1]`:   ErrSyntax,
		`01`:        ErrSyntax,
		`1.`:        ErrSyntax,
		`-`:         ErrTruncated,
		`"\x"`:      ErrSyntax,
		`"\u12g4"`:  ErrSyntax,
		"\"a\tb\"":  ErrSyntax,
		"\"\xff\"":  ErrInvalidUTF8,
		"\"\xc3\"":  ErrInvalidUTF8,
		`nul`:       ErrTruncated,
		`nulx`:      ErrSyntax,
		strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1): ErrTooDeep,
	}
	for _, g := range good {
		var s Scanner
		s.Reset([]byte(g))
		if _, err := s.Skip(); err != nil {
			t.Errorf("%q: %v", g, err)
		} else if err := s.End(); err != nil {
			t.Errorf("%q end: %v", g, err)
		}
	}
	for in, want := range bad {
		var s Scanner
		s.Reset([]byte(in))
		_, err := s.Skip()
		if err == nil {
			err = s.End()
		}
		if !errors.Is(err, want) {
			t.Errorf("%q: got %v, want %v", in, err, want)
		}
		var se *SyntaxError
		if err != nil && !errors.As(err, &se) {
			t.Errorf("%q: not a *SyntaxError", in)
		}
	}
}

func TestAppendUnescapedMatchesEncodingJSON(t *testing.T) {
	for _, lit := range []string{`"plain"`, `"a\"b\\c\/d"`, `"\b\f\n\r\t"`, `"\u00e9\u4e2d"`, `"\ud83d\ude00"`, `"\ud800x"`, `"x\udc00"`} {
		var want string
		if err := json.Unmarshal([]byte(lit), &want); err != nil {
			t.Fatal(err)
		}
		got := string(AppendUnescaped(nil, []byte(lit[1:len(lit)-1])))
		if got != want {
			t.Errorf("%s: got %q, want %q", lit, got, want)
		}
	}
}

func TestAppendQuotedRoundTrips(t *testing.T) {
	for _, s := range []string{"", "a\"b", "\\", "\x00\x1f", "é"} {
		var back string
		if err := json.Unmarshal(AppendQuoted(nil, []byte(s)), &back); err != nil || back != s {
			t.Errorf("%q: %q %v", s, back, err)
		}
	}
}

// FuzzSkip compares the scanner with encoding/json: whatever one accepts,
// the other must (encoding/json tolerates invalid UTF-8, the scanner does not).
func FuzzSkip(f *testing.F) {
	for _, s := range []string{`{"a":[1,2,{"b":null}]}`, `"\ud83d"`, `1e5`, `[`, `{"a":"\u0000"}`, "\"\xff\"", `  true `, `{"a":1}{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var s Scanner
		s.Reset(in)
		_, err := s.Skip()
		if err == nil {
			err = s.End()
		}
		valid := json.Valid(in)
		if err == nil && !valid {
			t.Fatalf("scanner accepted invalid JSON %q", in)
		}
		if err != nil && valid && utf8.Valid(in) && !errors.Is(err, ErrTooDeep) {
			t.Fatalf("scanner rejected valid JSON %q: %v", in, err)
		}
	})
}

// FuzzSkipValue checks the fast skipper against the token-by-token one:
// whenever SkipValue accepts, skipSlow accepts the same bytes.
func FuzzSkipValue(f *testing.F) {
	for _, s := range []string{`{"a":[1,2,{"b":null}]}`, `"\ud83d"`, `1e5`, `[`, `{"a":"\u0000"}`, "\"\xff\"", `  true `, `{"a":1}{`, ` [ { "a" : { } , "b" : [ ] } ] `, `-0.1E-7`, `{"a":1]`, `[1}`, `false`, `"é"`, `12345678,`, `0123`, `1.5e3`, `7E+2`, `100701}`, `"plain text","x"`} {
		f.Add([]byte(s), uint8(0))
	}
	f.Fuzz(func(t *testing.T, in []byte, depth uint8) {
		var s Scanner
		s.Reset(in)
		s.depth = int(depth % (MaxDepth + 1))
		start, end, ok := SkipValue(in, 0, s.depth)
		raw, err := s.skipSlow()
		if ok && (err != nil || start != end-len(raw) || end != s.pos) {
			t.Fatalf("%q at depth %d: SkipValue [%d:%d] ok, slow %q %v", in, depth, start, end, raw, err)
		}
		if !ok && err == nil {
			t.Fatalf("%q at depth %d: SkipValue rejects what the slow path accepts", in, depth)
		}
		// ValueEnd (no leading whitespace) agrees with SkipValue.
		if len(in) > 0 && in[0] > ' ' {
			if got := ValueEnd(in, 0, s.depth); (got >= 0) != ok || (ok && got != end) {
				t.Fatalf("%q at depth %d: ValueEnd %d, SkipValue [%d:%d] %v", in, depth, got, start, end, ok)
			}
		}
	})
}

// TestPlainRunMatchesByteLoop checks the SWAR scan against the byte table
// for every byte at every position of a word.
func TestPlainRunMatchesByteLoop(t *testing.T) {
	for c := 0; c < 256; c++ {
		for at := 0; at < 16; at++ {
			d := []byte(strings.Repeat("a", 16))
			d[at] = byte(c)
			for from := 0; from <= at; from++ {
				want := from
				for want < len(d) && strClass[d[want]] == 0 {
					want++
				}
				if got := plainRun(d, from); got != want {
					t.Fatalf("byte %#x at %d from %d: got %d, want %d", c, at, from, got, want)
				}
			}
		}
	}
}

// TestDigitRunMatchesByteLoop checks the SWAR digit count against a byte
// loop for every byte value at every position of a word of digits.
func TestDigitRunMatchesByteLoop(t *testing.T) {
	// Any byte at any position, and any second byte after it (what follows
	// the first non-digit must not change the count).
	for c := 0; c < 256; c++ {
		for at := 0; at < 8; at++ {
			for c2 := 0; c2 < 256; c2++ {
				d := []byte("12345678")
				d[at] = byte(c)
				d[7-(7-at)/2] = byte(c2)
				want := 0
				for want < 8 && d[want] >= '0' && d[want] <= '9' {
					want++
				}
				if got := DigitRun(binary.LittleEndian.Uint64(d)); got != want {
					t.Fatalf("%q: got %d, want %d", d, got, want)
				}
			}
		}
	}
}
