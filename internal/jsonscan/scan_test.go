package jsonscan

import (
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
