// Package jsonscan is a small, allocation-free JSON scanner for the hot path.
// It walks a document in place: callers read object keys and string values
// as sub-slices of the input and skip (while validating) what they do not
// need. It validates strictly (RFC 8259 grammar, UTF-8 in strings, a depth
// limit) so that nothing malformed is passed through by a "keep".
package jsonscan

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"unicode/utf8"
)

// MaxDepth bounds nesting so a hostile document cannot exhaust the stack.
const MaxDepth = 64

// Sentinel errors; a *SyntaxError wraps one of them.
var (
	ErrSyntax      = errors.New("invalid JSON")
	ErrTruncated   = errors.New("truncated JSON")
	ErrInvalidUTF8 = errors.New("invalid UTF-8 in string")
	ErrTooDeep     = errors.New("JSON nested too deeply")
)

// SyntaxError says where the document is malformed (a byte offset, never the
// bytes themselves, which may be personal data).
type SyntaxError struct {
	Offset int
	Err    error
}

func (e *SyntaxError) Error() string { return fmt.Sprintf("%v at byte %d", e.Err, e.Offset) }
func (e *SyntaxError) Unwrap() error { return e.Err }

// Kind is the type of the next value.
type Kind uint8

const (
	Invalid Kind = iota
	Object
	Array
	String
	Number
	True
	False
	Null
)

func (k Kind) String() string {
	return [...]string{"invalid", "object", "array", "string", "number", "true", "false", "null"}[k]
}

// Scanner reads one JSON document. The zero value is not usable; use Reset.
type Scanner struct {
	data  []byte
	pos   int
	depth int
}

// Reset points s at data.
func (s *Scanner) Reset(data []byte) { s.data, s.pos, s.depth = data, 0, 0 }

// Pos returns the current byte offset.
func (s *Scanner) Pos() int { return s.pos }

func (s *Scanner) fail(err error) error { return &SyntaxError{Offset: s.pos, Err: err} }

func (s *Scanner) ws() {
	// Fast path: machine-written JSON rarely has whitespace between tokens.
	if s.pos < len(s.data) && s.data[s.pos] > ' ' {
		return
	}
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// Peek skips whitespace and returns the kind of the next value.
func (s *Scanner) Peek() Kind {
	s.ws()
	if s.pos >= len(s.data) {
		return Invalid
	}
	switch c := s.data[s.pos]; {
	case c == '{':
		return Object
	case c == '[':
		return Array
	case c == '"':
		return String
	case c == '-' || (c >= '0' && c <= '9'):
		return Number
	case c == 't':
		return True
	case c == 'f':
		return False
	case c == 'n':
		return Null
	}
	return Invalid
}

// End checks that only whitespace remains.
func (s *Scanner) End() error {
	s.ws()
	if s.pos != len(s.data) {
		return s.fail(ErrSyntax)
	}
	return nil
}

// BeginObject consumes '{'.
func (s *Scanner) BeginObject() error { return s.begin('{') }

// BeginArray consumes '['.
func (s *Scanner) BeginArray() error { return s.begin('[') }

func (s *Scanner) begin(c byte) error {
	s.ws()
	if s.pos >= len(s.data) {
		return s.fail(ErrTruncated)
	}
	if s.data[s.pos] != c {
		return s.fail(ErrSyntax)
	}
	s.depth++
	if s.depth > MaxDepth {
		return s.fail(ErrTooDeep)
	}
	s.pos++
	return nil
}

// NextMember reports whether another member follows in the current object,
// consuming the separating comma, or consumes the closing brace and returns
// false. first must be true before the first member.
func (s *Scanner) NextMember(first bool) (bool, error) { return s.next(first, '}') }

// NextElement is NextMember for arrays.
func (s *Scanner) NextElement(first bool) (bool, error) { return s.next(first, ']') }

func (s *Scanner) next(first bool, closer byte) (bool, error) {
	if s.pos < len(s.data) && !first && s.data[s.pos] == ',' {
		s.pos++
		return true, nil
	}
	s.ws()
	if s.pos >= len(s.data) {
		return false, s.fail(ErrTruncated)
	}
	switch c := s.data[s.pos]; {
	case c == closer:
		s.pos++
		s.depth--
		return false, nil
	case c == ',' && !first:
		s.pos++
		return true, nil
	case first && c != '}' && c != ']' && c != ',':
		return true, nil
	}
	return false, s.fail(ErrSyntax)
}

// NextKey is NextMember and Key in one call, the hot loop over an object's
// members: it returns the next member's key (still escaped; escaped says
// whether it holds escapes), or more == false after the closing brace.
func (s *Scanner) NextKey(first bool) (key []byte, escaped, more bool, err error) {
	d, p := s.data, s.pos
	if !first && p < len(d) && d[p] == ',' {
		p++
	}
	if (!first && p > s.pos) || first {
		// Fast path: a plain key right here, followed by a colon.
		if p < len(d) && d[p] == '"' {
			if i := plainRun(d, p+1); i+1 < len(d) && d[i] == '"' && d[i+1] == ':' {
				s.pos = i + 2
				return d[p+1 : i], false, true, nil
			}
		}
	}
	more, err = s.NextMember(first)
	if err != nil || !more {
		return nil, false, false, err
	}
	key, escaped, err = s.Key()
	return key, escaped, err == nil, err
}

// Key reads an object key and the colon after it. raw is the key between
// its quotes, still escaped; escaped reports whether it holds backslashes.
func (s *Scanner) Key() (raw []byte, escaped bool, err error) {
	raw, escaped, err = s.String()
	if err != nil {
		return nil, false, err
	}
	if s.pos < len(s.data) && s.data[s.pos] == ':' {
		s.pos++
		return raw, escaped, nil
	}
	s.ws()
	if s.pos >= len(s.data) {
		return nil, false, s.fail(ErrTruncated)
	}
	if s.data[s.pos] != ':' {
		return nil, false, s.fail(ErrSyntax)
	}
	s.pos++
	return raw, escaped, nil
}

// strClass marks bytes that end the fast path inside a string.
var strClass = func() (t [256]byte) {
	for c := 0; c < 0x20; c++ {
		t[c] = 1
	}
	t['"'], t['\\'] = 1, 1
	for c := 0x80; c < 0x100; c++ {
		t[c] = 1
	}
	return t
}()

// String reads a string value; raw is the text between the quotes, still
// escaped (escaped reports whether it holds escapes). Escapes and UTF-8 are
// validated.
func (s *Scanner) String() (raw []byte, escaped bool, err error) {
	// Fast path, small enough to inline: a string without escapes or
	// non-ASCII, the common case in telemetry.
	if p := s.pos; p < len(s.data) && s.data[p] == '"' {
		if i := plainRun(s.data, p+1); i < len(s.data) && s.data[i] == '"' {
			s.pos = i + 1
			return s.data[p+1 : i], false, nil
		}
	}
	return s.stringSlow()
}

func (s *Scanner) stringSlow() (raw []byte, escaped bool, err error) {
	s.ws()
	if s.pos >= len(s.data) {
		return nil, false, s.fail(ErrTruncated)
	}
	if s.data[s.pos] != '"' {
		return nil, false, s.fail(ErrSyntax)
	}
	s.pos++
	start := s.pos
	d := s.data
	for {
		i := plainRun(d, s.pos)
		s.pos = i
		if i >= len(d) {
			return nil, false, s.fail(ErrTruncated)
		}
		switch c := d[i]; {
		case c == '"':
			s.pos++
			return d[start:i], escaped, nil
		case c == '\\':
			escaped = true
			if i+1 >= len(d) {
				return nil, false, s.fail(ErrTruncated)
			}
			switch d[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.pos = i + 2
			case 'u':
				if i+6 > len(d) {
					return nil, false, s.fail(ErrTruncated)
				}
				for _, h := range d[i+2 : i+6] {
					if unhex(h) < 0 {
						return nil, false, s.fail(ErrSyntax)
					}
				}
				s.pos = i + 6
			default:
				return nil, false, s.fail(ErrSyntax)
			}
		case c < 0x20:
			return nil, false, s.fail(ErrSyntax)
		default: // non-ASCII
			r, n := utf8.DecodeRune(d[i:])
			if r == utf8.RuneError && n <= 1 {
				return nil, false, s.fail(ErrInvalidUTF8)
			}
			s.pos = i + n
		}
	}
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// plainRun returns the index of the first byte at or after i that may end
// the fast path of a string (a control byte, '"', '\\' or non-ASCII),
// testing eight bytes at a time (SWAR), then byte by byte near the end. The classic "has less than n" trick flags a byte
// exactly when it is the first match; later flags may be false, so only
// the lowest one is used.
func plainRun(d []byte, i int) int {
	for i+8 <= len(d) {
		if t := StopMask(binary.LittleEndian.Uint64(d[i:])); t != 0 {
			return i + bits.TrailingZeros64(t)/8
		}
		i += 8
	}
	for i < len(d) && strClass[d[i]] == 0 {
		i++
	}
	return i
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// Number reads a number and returns its literal text.
func (s *Scanner) Number() ([]byte, error) {
	s.ws()
	d, start, i := s.data, s.pos, s.pos
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i >= len(d):
		s.pos = i
		return nil, s.fail(ErrTruncated)
	case d[i] == '0':
		i++
	case d[i] >= '1' && d[i] <= '9':
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	default:
		s.pos = i
		return nil, s.fail(ErrSyntax)
	}
	if i < len(d) && d[i] == '.' {
		i++
		j := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		if i == j {
			s.pos = i
			return nil, s.fail(ErrSyntax)
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		j := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		if i == j {
			s.pos = i
			return nil, s.fail(ErrSyntax)
		}
	}
	s.pos = i
	return d[start:i], nil
}

func (s *Scanner) literal(lit string) error {
	if len(s.data)-s.pos < len(lit) {
		if string(s.data[s.pos:]) == lit[:len(s.data)-s.pos] {
			s.pos = len(s.data)
			return s.fail(ErrTruncated)
		}
		return s.fail(ErrSyntax)
	}
	if string(s.data[s.pos:s.pos+len(lit)]) != lit {
		return s.fail(ErrSyntax)
	}
	s.pos += len(lit)
	return nil
}

// Skip reads and validates the next value and returns its raw bytes.
func (s *Scanner) Skip() ([]byte, error) {
	if start, end, ok := SkipValue(s.data, s.pos, s.depth); ok {
		s.pos = end
		return s.data[start:end], nil
	}
	return s.skipSlow()
}

// skipSlow is Skip token by token; it finds the error SkipValue does not
// describe.
func (s *Scanner) skipSlow() ([]byte, error) {
	k := s.Peek()
	start := s.pos
	var err error
	switch k {
	case Object:
		err = s.skipContainer(true)
	case Array:
		err = s.skipContainer(false)
	case String:
		_, _, err = s.String()
	case Number:
		_, err = s.Number()
	case True:
		err = s.literal("true")
	case False:
		err = s.literal("false")
	case Null:
		err = s.literal("null")
	default:
		if s.pos >= len(s.data) {
			return nil, s.fail(ErrTruncated)
		}
		return nil, s.fail(ErrSyntax)
	}
	if err != nil {
		return nil, err
	}
	return s.data[start:s.pos], nil
}

func (s *Scanner) skipContainer(object bool) error {
	var err error
	if object {
		err = s.BeginObject()
	} else {
		err = s.BeginArray()
	}
	if err != nil {
		return err
	}
	for first := true; ; first = false {
		var more bool
		if object {
			more, err = s.NextMember(first)
		} else {
			more, err = s.NextElement(first)
		}
		if err != nil || !more {
			return err
		}
		if object {
			if _, _, err := s.Key(); err != nil {
				return err
			}
		}
		if _, err := s.skipSlow(); err != nil {
			return err
		}
	}
}

// AppendUnescaped appends the decoded form of an escaped string body (as
// returned by String or Key) to dst. The body must have been validated by
// the scanner.
func AppendUnescaped(dst, raw []byte) []byte {
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		i++
		switch raw[i] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := rune(hex4(raw[i+1:]))
			i += 4
			if utf16IsHigh(r) && i+6 < len(raw) && raw[i+1] == '\\' && raw[i+2] == 'u' {
				lo := rune(hex4(raw[i+3:]))
				if lo >= 0xDC00 && lo < 0xE000 {
					r = 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00)
					i += 6
				}
			}
			if r >= 0xD800 && r < 0xE000 {
				r = utf8.RuneError
			}
			dst = utf8.AppendRune(dst, r)
		default: // '"', '\\', '/'
			dst = append(dst, raw[i])
		}
	}
	return dst
}

func utf16IsHigh(r rune) bool { return r >= 0xD800 && r < 0xDC00 }

func hex4(b []byte) int {
	return unhex(b[0])<<12 | unhex(b[1])<<8 | unhex(b[2])<<4 | unhex(b[3])
}

// AppendQuoted appends s as a JSON string literal, escaping what JSON needs.
func AppendQuoted(dst, s []byte) []byte {
	dst = append(dst, '"')
	dst = AppendEscaped(dst, s)
	return append(dst, '"')
}

// AppendEscaped appends s escaped for the inside of a JSON string.
func AppendEscaped(dst, s []byte) []byte {
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, `\u00`...)
			dst = append(dst, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&15])
		default:
			dst = append(dst, c)
		}
	}
	return dst
}
